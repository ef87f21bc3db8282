"""The encoder contract: what an encoder may be, and the errors for one that breaks it.

An encoder is a ``torch.nn.Module`` that maps images x of shape (N, C, H, W), float32 in
[0, 1] (after its declared preprocessing, if any), to

- a tensor of features (N, d), or (N, ...) which is flattened to (N, d), or
- a pair ``(mu, logvar)`` of tensors, whose ``mu`` is the representation,

through ``encode(x)`` if it has one, else ``forward(x)``. The output must be finite and
floating point on every batch. A *robrep learner* additionally has ``config_class`` (a
dataclass with a ``shape`` field) and ``loss(x)`` or ``fit(images, seed=...)``: robrep
trains those; everything else is benchmarked as it is.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn


class ContractError(ValueError):
    """An encoder does not keep the contract (wrong type, output, shape, or non-finite values)."""


class LearnerError(RuntimeError):
    """A learner failed somewhere on its path (building, training, encoding, probing, attacking).

    The message names the learner, where it comes from and what it was doing."""

    def __init__(self, label: str, message: str, source: str = "", stage: str = ""):
        self.label, self.source, self.stage = label, source, stage
        if source.startswith(f"{label} ("):  # "module:attr (its distribution)": the label says the first part
            source = source[len(label) + 2:-1]
        where = f" ({source})" if source else ""
        super().__init__(f"learner {label!r}{where} {message}")


def is_learner(obj) -> bool:
    """A robrep learner (class or instance): it has ``config_class``, a dataclass with a ``shape`` field."""
    cfg = getattr(obj if isinstance(obj, type) else type(obj), "config_class", None)
    return cfg is not None and dataclasses.is_dataclass(cfg) and "shape" in {f.name for f in dataclasses.fields(cfg)}


def output_method(cls: type) -> str | None:
    """``"encode"`` or ``"forward"``: the method that gives a module class's representation (None: neither)."""
    if callable(getattr(cls, "encode", None)):
        return "encode"
    if getattr(cls, "forward", nn.Module.forward) is not nn.Module.forward:
        return "forward"
    return None


def check_learner_class(obj: type) -> None:
    """A robrep learner class can be built from its config and trained."""
    cfg = getattr(obj, "config_class", None)
    if not isinstance(obj, type) or not issubclass(obj, nn.Module):
        raise ContractError(f"a learner with a config_class must be a torch.nn.Module subclass, got {obj!r}")
    if cfg is None or not dataclasses.is_dataclass(cfg) or "shape" not in {f.name for f in dataclasses.fields(cfg)}:
        raise ContractError(f"{obj.__name__}.config_class must be a dataclass with a 'shape' field")
    if not callable(getattr(obj, "encode", None)):
        raise ContractError(f"{obj.__name__} has no encode(x) method")
    if not (callable(getattr(obj, "loss", None)) or callable(getattr(obj, "fit", None))):
        raise ContractError(f"{obj.__name__} needs loss(x) (gradient training) or fit(images, seed=...)")
    if not callable(getattr(obj, "fit", None)):
        missing = {"epochs", "batch_size", "lr"} - {f.name for f in dataclasses.fields(cfg)}
        if missing:
            raise ContractError(f"{obj.__name__} is trained by gradient, so {cfg.__name__} needs the field(s) "
                                f"{', '.join(sorted(missing))}")


def check_entry_point(obj) -> None:
    """What a ``robrep.encoders`` entry point may name: a robrep learner class, any ``nn.Module`` class or
    instance with ``encode`` or ``forward``, or a factory (a callable returning such a module; what it
    returns is checked when it is called)."""
    if getattr(obj, "config_class", None) is not None:
        check_learner_class(obj)
    elif isinstance(obj, type):
        if not issubclass(obj, nn.Module):
            raise ContractError(f"a robrep.encoders entry point must be a torch.nn.Module (class or instance) "
                                f"or a factory returning one, got the class {obj.__name__}")
        if output_method(obj) is None:
            raise ContractError(f"{obj.__name__} has neither encode(x) nor forward(x)")
    elif isinstance(obj, nn.Module):
        if output_method(type(obj)) is None:
            raise ContractError(f"{type(obj).__name__} has neither encode(x) nor forward(x)")
    elif not callable(obj):
        raise ContractError(f"a robrep.encoders entry point must be a torch.nn.Module (class or instance) "
                            f"or a factory returning one, got {type(obj).__name__} {obj!r}")


# The largest representation probed: a probe's exact fit (robrep.probes) grows with features x classes x images, and
# grows badly when the features outnumber what the images determine (a 16 x 14 x 14 feature map on mnist5k: over two
# minutes on two cores, where a pooled ResNet's 1,000 features on 28,000 images take about one).
MAX_FEATURES = 2048


@torch.no_grad()
def check_encoder(encoder, x: torch.Tensor) -> int:
    """Run ``encoder`` (a ``robrep.encoders.Encoder``) on a probe batch; returns the feature dimension d.

    A robrep learner must also return ``(mu, logvar)`` of the same shape (its training relies on it)."""
    n = x.shape[0]
    try:
        d = encoder(x).shape[1]
    except ContractError:
        raise
    except Exception as e:
        raise ContractError(f"encoder {encoder.name!r} failed on a probe batch of shape {tuple(x.shape)}: "
                            f"{type(e).__name__}: {e}") from e
    if d > MAX_FEATURES:
        raise ContractError(
            f"encoder {encoder.name!r} gives {d:,} features per image (its output, flattened); robrep fits every "
            f"probe to its optimum and takes representations of at most {MAX_FEATURES:,} features (a pooled "
            "ResNet-50's 2,048): pool or project the output first, e.g. end the encoder with "
            "nn.AdaptiveAvgPool2d(1) or a smaller feature map")
    if is_learner(encoder.module):
        out = encoder.module.encode(x)
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and out[1].shape == out[0].shape == (n, d)):
            raise ContractError(f"encoder {encoder.name!r}: a robrep learner's encode(x) must return mu and logvar "
                                f"of shape (N, d) = ({n}, d)")
        if not torch.isfinite(out[1]).all():
            raise ContractError(f"encoder {encoder.name!r}: encode(x) returned a non-finite logvar on a probe batch")
    return d

"""``Encoder``: any encoder as the harness sees it, x in [0, 1] -> features (N, d).

It wraps a robrep learner or any ``nn.Module`` (see ``contract``): applies the preprocessing
the encoder declared (per-channel mean and std, as foolbox's ``preprocessing``), calls
``encode`` or ``forward``, takes ``mu`` of a ``(mu, logvar)`` pair, flattens, and refuses
non-finite features on every batch. Attacks, probes and bounds all stay in [0, 1] pixel
space; only the wrapped module sees normalised inputs.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from robrep.data.base import PIXELS
from robrep.encoders.contract import ContractError, output_method

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
PRESETS = {"imagenet": IMAGENET}


def _floats(value, what: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ContractError(f"preprocessing {what} must be a number or a list of numbers (one per channel), "
                            f"got {value!r}") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise ContractError(f"preprocessing {what} must hold finite numbers, got {value!r}")
    return out


@dataclass(frozen=True)
class Preprocessing:
    """The encoder sees ``(x - mean) / std`` for x in [0, 1]; mean and std have one value, or one per channel."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if any(s <= 0 for s in self.std):
            raise ContractError(f"preprocessing std must be positive, got {self.std}")

    @classmethod
    def parse(cls, value) -> "Preprocessing | None":
        """From a preset name (``"imagenet"``), ``"mean=0.5,0.5,0.5 std=0.2,0.2,0.2"`` (``;`` also separates),
        a mapping with ``mean`` and ``std``, or None / ``"none"`` (no preprocessing)."""
        if value is None or isinstance(value, Preprocessing):
            return value
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in ("", "none"):
                return None
            if text.lower() in PRESETS:
                value = PRESETS[text.lower()]
            else:
                parts = dict(p.split("=", 1) for p in re.split(r"[;\s]+(?=\w+=)", text) if "=" in p)
                if not parts:
                    raise ContractError(f"preprocessing {value!r}: expected a preset ({', '.join(PRESETS)}), "
                                        "'none', or 'mean=M1,M2,M3 std=S1,S2,S3'")
                value = {k.strip(): v.strip(" ;") for k, v in parts.items()}
        if not isinstance(value, Mapping):
            raise ContractError(f"preprocessing must be a preset name, 'mean=... std=...' or a mapping with mean and "
                                f"std, got {type(value).__name__}")
        if set(value) != {"mean", "std"}:
            raise ContractError(f"preprocessing takes exactly the keys mean and std, got {', '.join(map(str, value))}")
        return cls(_floats(value["mean"], "mean"), _floats(value["std"], "std"))

    def as_dict(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}


def declared_preprocessing(module: nn.Module) -> Preprocessing | None:
    """The preprocessing a module declares itself, as a mapping attribute ``preprocessing`` with mean and std
    (a submodule of that name is not a declaration)."""
    value = getattr(module, "preprocessing", None)
    return Preprocessing.parse(value) if isinstance(value, Mapping) else None


def _describe(out) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, Sequence) and not isinstance(out, str):
        return f"a {type(out).__name__} of {len(out)}: " + ", ".join(_describe(o) if isinstance(o, torch.Tensor)
                                                                     else type(o).__name__ for o in out[:4])
    return type(out).__name__


class Encoder(nn.Module):
    """Any encoder, frozen behind one interface: ``encoder(x)`` gives features (N, d), float32.

    ``module``: a robrep learner or any ``nn.Module`` with ``encode(x)`` or ``forward(x)`` returning
    a tensor or a ``(mu, logvar)`` pair. ``preprocessing``: what the module expects its inputs
    normalised with (see ``Preprocessing.parse``; default: what the module declares, else none).
    ``name`` labels it in results and errors. Python API::

        df = robrep.bench(learners=[robrep.Encoder(resnet, preprocessing="imagenet", name="resnet18")])
    """

    # the inputs robrep feeds every encoder: pixels in [0, 1] (a declared preprocessing is applied inside). Attacks,
    # their checks and the image grid read the bounds here, on the attacked model, never write them themselves.
    bounds: tuple[float, float] = PIXELS

    def __init__(self, module: nn.Module, *, preprocessing=None, name: str | None = None, source: str = ""):
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ContractError(f"an encoder must be a torch.nn.Module, got {type(module).__name__}")
        method = output_method(type(module))
        if method is None:
            raise ContractError(f"{type(module).__name__} has neither encode(x) nor forward(x)")
        own = getattr(module, "name", None)
        self.name = name or (own if isinstance(own, str) and own else type(module).__name__)
        self.module, self.output, self.source = module, method, source
        self.preprocessing = Preprocessing.parse(preprocessing) or declared_preprocessing(module)
        p = self.preprocessing
        # not in the state dict: the hash of the weights covers the preprocessing explicitly (see weights())
        self.register_buffer("_mean", torch.tensor(p.mean).view(1, -1, 1, 1) if p else None, persistent=False)
        self.register_buffer("_std", torch.tensor(p.std).view(1, -1, 1, 1) if p else None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._mean is not None:
            k = max(self._mean.shape[1], self._std.shape[1])
            if k not in (1, x.shape[1]):
                raise ContractError(f"encoder {self.name!r}: its preprocessing has {k} values per channel, "
                                    f"but the inputs have {x.shape[1]} channel(s)")
            x = (x - self._mean) / self._std
        out = self.module.encode(x) if self.output == "encode" else self.module(x)
        return self._features(out, x.shape[0])

    def _features(self, out, n: int) -> torch.Tensor:
        if isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(o, torch.Tensor) for o in out):
            out = out[0]  # (mu, logvar): the representation is the mean
        if not isinstance(out, torch.Tensor):
            raise ContractError(f"encoder {self.name!r}: {self.output}(x) must return a tensor (N, ...) or a "
                                f"(mu, logvar) pair of tensors, got {_describe(out)}")
        if out.dim() < 2 or out.shape[0] != n:
            raise ContractError(f"encoder {self.name!r}: {self.output}(x) must return features of shape (N, d) = "
                                f"({n}, d) (or (N, ...), flattened), got {tuple(out.shape)}")
        if not out.is_floating_point():
            raise ContractError(f"encoder {self.name!r}: features must be floating point, got {out.dtype}")
        if not torch.isfinite(out).all():
            raise ContractError(f"encoder {self.name!r}: {self.output}(x) returned non-finite values on a batch of "
                                f"{n} input(s)")
        return out.flatten(1).float()

    def weights(self) -> dict[str, torch.Tensor]:
        """What identifies this encoder: the module's state dict, plus the preprocessing when one is declared
        (as ``robrep.preprocessing.mean`` / ``.std``), so the same weights seen through a different
        normalisation are a different encoder. ``encoder_sha256`` is the SHA-256 of this as safetensors."""
        state = {k: v for k, v in self.module.state_dict().items() if isinstance(v, torch.Tensor)}
        if self.preprocessing is not None:
            state["robrep.preprocessing.mean"] = torch.tensor(self.preprocessing.mean)
            state["robrep.preprocessing.std"] = torch.tensor(self.preprocessing.std)
        return state

    def sha256(self) -> str:
        """``encoder_sha256``: the SHA-256 of ``weights()`` as safetensors."""
        from robrep.checkpoint import state_bytes
        from robrep.io import sha256_bytes

        return sha256_bytes(state_bytes(self.weights()))


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradient to the parameters: the representation is fixed from here on."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def as_encoder(obj) -> Encoder:
    """``obj`` if it already is an ``Encoder``, else ``Encoder(obj)``."""
    return obj if isinstance(obj, Encoder) else Encoder(obj)

"""Third-party learners, data sets and attacks through Python entry points.

A distribution declares, in its pyproject.toml::

    [project.entry-points."robrep.encoders"]
    pca = "robrep_pca:PCAEncoder"          # a learner class (see README: "Your own encoder")
    [project.entry-points."robrep.datasets"]
    mydata = "mypkg.data:load"             # fn(root=None, download=False, **options) -> robrep.Dataset
    [project.entry-points."robrep.attacks"]
    myattack = "mypkg.attacks:make"        # fn(n_classes, *, steps, restarts, norm) -> robrep.attacks.Attack

Entry points are loaded lazily (the first time a registry is searched), through the same
registries as the built-ins. A plugin that fails to import is recorded with its error and
skipped; a name that is already taken is rejected (the built-in or first one wins) with a
warning naming the distribution. ``ROBREP_DISABLE_PLUGINS=1`` turns plugin loading off.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib.metadata import entry_points

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginFailure:
    group: str
    name: str
    distribution: str
    error: str


_FAILURES: list[PluginFailure] = []


class ContractError(ValueError):
    """An encoder (usually a plugin's) does not keep the encode(x) -> (mu, logvar) contract."""


def failures() -> list[PluginFailure]:
    """Plugins that failed to load or were rejected, with their errors."""
    return list(_FAILURES)


def report_failure(registry, name: str, error: str) -> None:
    """Record (and log) a plugin of ``registry`` that broke its contract after loading."""
    source = registry._origin.get(name, "an unknown distribution")
    log.warning("%s plugin %r from %s skipped: %s", registry.kind, name, source, error)
    _FAILURES.append(PluginFailure(registry.group, name, source, error))


def _distribution(ep) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def load_plugins(registry) -> None:
    """Register every entry point of ``registry.group`` that loads and whose name is free."""
    if os.environ.get("ROBREP_DISABLE_PLUGINS", "") not in ("", "0"):
        return
    global _FAILURES
    _FAILURES = [f for f in _FAILURES if f.group != registry.group]
    for ep in sorted(entry_points(group=registry.group), key=lambda e: e.name):
        source = _distribution(ep)
        if ep.name in registry._entries:
            msg = f"duplicate {registry.kind} name {ep.name!r} from {source} rejected: {registry._origin[ep.name]} has it"
            log.warning(msg)
            _FAILURES.append(PluginFailure(registry.group, ep.name, source, msg))
            continue
        try:
            obj = ep.load()
            if registry.group == "robrep.encoders":
                _check_learner_class(obj)
        except Exception as e:  # a broken plugin must never take the run down
            msg = f"{type(e).__name__}: {e}"
            log.warning("%s plugin %r from %s failed to load and is skipped: %s", registry.kind, ep.name, source, msg)
            _FAILURES.append(PluginFailure(registry.group, ep.name, source, msg))
            continue
        if registry.group == "robrep.encoders" and not getattr(obj, "name", None):
            obj.name = ep.name
        registry.register(ep.name, obj, origin=source)


def _check_learner_class(obj) -> None:
    import dataclasses

    if not isinstance(obj, type) or not issubclass(obj, torch.nn.Module):
        raise ContractError(f"a robrep.encoders entry point must be a torch.nn.Module subclass, got {obj!r}")
    cfg = getattr(obj, "config_class", None)
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


@torch.no_grad()
def check_encoder(learner, x: torch.Tensor, name: str = "") -> int:
    """Check encode(x) -> (mu, logvar), each (N, d) and finite, on a probe batch; returns d."""
    name = name or getattr(learner, "name", type(learner).__name__)
    try:
        out = learner.encode(x)
    except Exception as e:
        raise ContractError(f"encoder {name!r} failed on a probe batch of shape {tuple(x.shape)}: "
                            f"{type(e).__name__}: {e}") from e
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        raise ContractError(f"encoder {name!r}: encode(x) must return a pair of tensors (mu, logvar), got {type(out)}")
    mu, logvar = out
    n = x.shape[0]
    if mu.dim() != 2 or mu.shape[0] != n or logvar.shape != mu.shape:
        raise ContractError(f"encoder {name!r}: encode(x) must return mu and logvar of shape (N, d) = ({n}, d), "
                            f"got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    if not (torch.isfinite(mu).all() and torch.isfinite(logvar).all()):
        raise ContractError(f"encoder {name!r}: encode(x) returned non-finite values on a probe batch")
    return mu.shape[1]

"""Third-party learners, data sets and attacks through Python entry points.

A distribution declares, in its pyproject.toml::

    [project.entry-points."robrep.encoders"]
    pca = "robrep_pca:PCAEncoder"          # a robrep learner class: robrep trains it
    rf = "mypkg.nets:RandomFeatures"       # any nn.Module (class, instance) or a factory: benchmarked as it is
    [project.entry-points."robrep.datasets"]
    mydata = "mypkg.data:load"             # fn(root=None, download=False, **options) -> robrep.Dataset
    [project.entry-points."robrep.attacks"]
    myattack = "mypkg.attacks:make"        # fn(n_classes, *, steps, restarts, norm) -> robrep.attacks.Attack

Entry points are loaded lazily (the first time a registry is searched), through the same
registries as the built-ins; what an encoder entry point may be is ``robrep.encoders.contract``.
A plugin that fails to import is recorded with its error and skipped; a name that is already taken is
rejected (the built-in or first one wins) with a warning naming the distribution. ``ROBREP_DISABLE_PLUGINS=1`` turns plugin loading off.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib.metadata import entry_points

from robrep.encoders.contract import ContractError, check_entry_point  # up: a leaf (torch only); the encoder contract
from robrep.provenance import refresh

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PluginFailure:
    group: str
    name: str
    distribution: str
    error: str


_FAILURES: list[PluginFailure] = []


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
    refresh()  # installed distributions may have changed since they were last read
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
                check_entry_point(obj)
        except Exception as e:  # a broken plugin must never take the run down
            msg = f"{type(e).__name__}: {e}"
            log.warning("%s plugin %r from %s failed to load and is skipped: %s", registry.kind, ep.name, source, msg)
            _FAILURES.append(PluginFailure(registry.group, ep.name, source, msg))
            continue
        if registry.group == "robrep.encoders" and getattr(obj, "config_class", None) is not None \
                and not getattr(obj, "name", None):
            obj.name = ep.name  # a robrep learner's checkpoints record it, and reload through it
        registry.register(ep.name, obj, origin=source, target=ep.value)


__all__ = ["ContractError", "PluginFailure", "failures", "load_plugins", "report_failure"]

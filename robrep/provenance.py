"""Where an encoder's code comes from: its distribution and version, and a digest of its source.

Recorded in result rows (the ``source`` column) and in checkpoints, and part of the
checkpoint cache key, so that a plugin whose code changed is never served a checkpoint
trained with the old code.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import inspect
from typing import Any


@functools.lru_cache(maxsize=None)
def _packages() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def refresh() -> None:
    """Forget the installed distributions read so far (after installing or removing one)."""
    _packages.cache_clear()


def distribution_of(module_name: str) -> str:
    """``"name version"`` of the installed distribution that holds module ``module_name``, or ``""``."""
    top = (module_name or "").split(".")[0]
    if top == "robrep":  # the running robrep, also when it is not installed (a source checkout)
        from robrep._version import __version__

        return f"robrep {__version__}"
    for dist in _packages().get(top, []):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover (a stale record)
            continue
    return ""


def source_digest(obj: Any) -> str:
    """SHA-256 of the source file that defines ``obj`` (a class or function), or ``""`` if it has none."""
    try:
        path = inspect.getsourcefile(obj if inspect.isclass(obj) or inspect.isroutine(obj) else type(obj))
        with open(path, "rb") as fh:  # type: ignore[arg-type]
            return hashlib.sha256(fh.read()).hexdigest()
    except (TypeError, OSError):
        return ""


def qualified_name(obj: Any) -> str:
    """``module.QualName`` of a class or function (of the object's class otherwise)."""
    target = obj if inspect.isclass(obj) or inspect.isroutine(obj) else type(obj)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__name__)}"


def code_identity(obj: Any, package: str = "") -> dict[str, str]:
    """What a trained checkpoint of ``obj`` (a learner class) depends on besides its config: robrep's
    version, the learner's distribution and version, and the SHA-256 of the file that defines it."""
    from robrep._version import __version__

    module = getattr(obj, "__module__", "")
    return {"robrep": __version__, "package": package or distribution_of(module), "source_sha256": source_digest(obj)}


def machine(device: str = "cpu") -> str:
    """What computed a row: the accelerator's name, or the CPU model, core count and the vector instructions
    torch's CPU kernels use on it (``AVX2``, ``AVX512``: two machines with the same CPU model name can differ
    there, and then train other encoders from the same seed), and the OS."""
    import os
    import platform

    import torch

    if str(device).startswith("cuda") and torch.cuda.is_available():
        what = torch.cuda.get_device_name(torch.device(device))
    else:
        what = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as fh:
                what = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
        what = f"{what} x{os.cpu_count()}"
        capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
        if capability is not None:
            what = f"{what} {capability()}"
    return f"{what}; {platform.system()} {platform.machine()}"

"""How many CPU threads torch uses: chosen deliberately, and a warning when they would compete.

torch's default, one thread per core, is right on an idle machine and a trap on a shared one: two
processes with two threads each on two cores ran a three-suite VAE bench about 14x slower than one
thread each (``benchmarks/protocol_cost.py --part threads`` measures it). The default here is the
cores this process may use (at most torch's own default, the physical cores), shared among the ranks
of this machine when distributed (torchrun's LOCAL_WORLD_SIZE), unless ``OMP_NUM_THREADS`` or
``--threads`` says otherwise. The count is not lowered behind the user's back when the machine is
busy, since the thread count changes a trained encoder's bits (rows record it, ``threads``): a busy
machine gets a warning that says what to do.
"""
from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


def default_threads() -> int:
    """OMP_NUM_THREADS if set, else this process's share, among the ranks on this machine, of the cores it may
    use (at most torch's own default, one per physical core: hyperthreads do not count)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    local = os.environ.get("LOCAL_WORLD_SIZE", "1")
    return max(1, min(cores(), torch.get_num_threads()) // max(1, int(local) if local.isdigit() else 1))


def use_threads(threads: int | None = None) -> int:
    """Set torch's thread count (``threads``, or ``default_threads()``) and warn if other processes already keep
    the cores busy (1-minute load average); returns the count."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        from robrep.validate import ConfigError

        raise ConfigError(f"threads must be an integer >= 1, got {threads!r}")
    n = threads or default_threads()
    torch.set_num_threads(n)
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover (not Unix)
        return n
    if n > 1 and load >= 1.0 + cores() - n:
        log.warning("the 1-minute load average is %.1f on %d cores: %d threads will compete with other processes "
                    "(measured up to 14x slower); --threads 1 (or OMP_NUM_THREADS=1) avoids that, and changes the "
                    "trained bits", load, cores(), n)
    return n

"""Torch's global random state, left as the caller had it.

robrep seeds its own work (training, probes, attacks; the attack libraries draw random starts from
torch's global generator), so ``bench``, ``train`` and ``verify`` run inside ``kept_random_state``:
whatever they draw, the caller's CPU generator (and the CUDA generator of the device in use) is
restored afterwards, so code around a benchmark sees the random numbers it would have seen without it.
"""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def kept_random_state(device: str | torch.device | None = None):
    """Run the block, then put torch's global generators back as they were (CPU, and ``device``'s if CUDA)."""
    device = torch.device(device or "cpu")
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" and torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        yield


__all__ = ["kept_random_state"]

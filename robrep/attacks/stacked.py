"""Stacked cells: the tasks of one encoder attacked in one pass of the attack, each as if it ran alone.

On a GPU one cell of a small encoder (500 points through an MLP) is a few small kernels per step, and the
device mostly waits on their launches. The tasks of one encoder (CelebA's 17 attributes, ColorMNIST's digit
and colour) attack the same encoder at the same radii with the same seed, each through its own probe:
``run_stacked`` stacks their points into one batch per radius, so that each step is one encoder pass for all
of them, and gives each cell what it would have had alone:

- its own random starts, drawn from its own generator in its own order (``Streams``, ``at``);
- its own probe on its rows (``Stacked``), and its own ``Observer``, which records its rows' queries only and
  counts only the calls that held one of them (the calls it would have made alone);
- its own radius loop (``robrep.attacks.base.RadiusLoop``): its points still robust, its cascade prior, the
  guards and the evidence on its own model.

What can differ is the last bits of a logit (matrix kernels block by batch size), as between any two batch
sizes; decisions on the decision boundary are re-computed on the input alone (``decide``).
``tests/attacks/test_stacked.py`` checks the masks, the evidence and the rows against one cell at a time.

An attack can be stacked (``stackable = True``) when it names each query's rows to the model
(``robrep.attacks.observer.expect``), draws its random starts through ``at(generator, rows)``, and treats its
rows independently (its objective a sum over them): robrep's PGD.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robrep.attacks.base import Attack, AttackResult, RadiusLoop

MAX_ROWS = 4096  # rows of one stacked pass at most (whole cells' parts), where the encoder's activations are small
STACK_BYTES = 2 ** 30  # ... and where they are not: the activations one pass keeps, at most this or one cell's part's


class Streams:
    """One random generator per cell of a stacked batch: ``at(streams, rows)`` gives each cell's rows their
    own generator, in the cells' order, so a draw for the rows is the draw each cell would make alone."""

    def __init__(self, generators: list[torch.Generator], segment: torch.Tensor):
        self.generators, self.segment = generators, segment.cpu()

    def pieces(self, rows: torch.Tensor) -> list[tuple[torch.Generator, int]]:
        counts = _cell_counts(self.segment[rows.cpu()], len(self.generators))
        return [(g, n) for g, n in zip(self.generators, counts) if n]


def _cell_counts(seg: torch.Tensor, n_cells: int) -> list[int]:
    """How many of the stacked rows (``seg``: each row's cell) each cell has, the rows being in the order of their
    cells (refused otherwise: each cell's rows are then one slice); one transfer from the rows' device."""
    out_of_order = (seg[1:] < seg[:-1]).any().view(1) if len(seg) > 1 else seg.new_zeros(1, dtype=torch.bool)
    *counts, unordered = torch.cat([torch.bincount(seg, minlength=n_cells), out_of_order.long()]).tolist()
    if unordered:
        raise RuntimeError("a stacked attack must keep its rows in the order of their cells")
    return counts


def at(generator, rows: torch.Tensor):
    """What an attack draws the random starts of its rows ``rows`` (indices into the points it was given) from:
    ``generator`` itself, or, for stacked cells (``Streams``), each cell's rows with their cell's generator."""
    return generator.pieces(rows) if isinstance(generator, Streams) else generator


class Stacked(nn.Module):
    """The model a stacked attack is given: the shared encoder once on every query, then each cell's probe on its
    rows, its logits padded to the widest probe with -inf (never the argmax, no gradient, no margin). Each query
    must be named by the attack (``expect``: which stacked row each query perturbs), its rows in the order of
    their cells (checked); each cell's ``Observer`` records its rows of the call."""

    takes_hints = True  # ``expect``: it needs them

    def __init__(self, encoder: nn.Module, probes: list[nn.Module], observers: list, sizes: list[int]):
        super().__init__()
        self.encoder, self.probes, self.observers = encoder, probes, observers
        self.widths = [p.out_features for p in probes]
        self.width = max(self.widths)
        self.offsets = torch.tensor([0, *sizes[:-1]]).cumsum(0).tolist()
        self.segment = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))  # each row's cell
        self._segment: torch.Tensor | None = None  # the same, on the queries' device
        self._rows: torch.Tensor | None = None

    @property
    def bounds(self) -> tuple[float, float]:
        return self.encoder.bounds

    def expect(self, rows: torch.Tensor) -> None:
        self._rows = rows

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        rows, self._rows = self._rows, None
        if rows is None or len(rows) != len(q):
            raise RuntimeError("a stacked attack must name the rows of every query (robrep.attacks.observer.expect)")
        z = self.encoder(q)
        if self._segment is None or self._segment.device != rows.device:
            self._segment = self.segment.to(rows.device)
        pieces, s = [], 0
        for i, n in enumerate(_cell_counts(self._segment[rows], len(self.probes))):  # one slice per cell
            if not n:
                continue
            logits = self.probes[i](z[s:s + n])
            self.observers[i].expect(rows[s:s + n] - self.offsets[i])
            self.observers[i].record(q[s:s + n], logits)
            pad = self.width - self.widths[i]
            pieces.append(F.pad(logits, (0, pad), value=float("-inf")) if pad else logits)
            s += n
        return torch.cat(pieces)


@dataclass
class Cell:
    """One cell to stack: its model (a ``robrep.probes.ProbedEncoder``), points, labels and cascade prior."""

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    prior: AttackResult | None = None


def can_stack(attack: Attack, models: list[nn.Module]) -> bool:
    """Whether cells of these ``models`` can run as one stacked pass of ``attack``: a stackable attack, more than
    one cell, one encoder (the same module) behind every cell's probe, and linear probes."""
    if not getattr(attack, "stackable", False) or len(models) < 2:
        return False
    encoder = getattr(models[0], "encoder", None)
    return encoder is not None and all(
        getattr(m, "encoder", None) is encoder and isinstance(getattr(m, "probe", None), nn.Linear) for m in models)


def _scaled(progress, n: int):
    """``progress`` for a stacked pass: each unit of work the attack reports is one for each of its ``n`` cells."""
    return lambda units: progress(units * n)


@torch.no_grad()
def run_stacked(attack: Attack, cells: list[Cell], radii: list[float], seed: int, progress=None,
                batch_size: int = 1000, max_rows: int | None = None) -> list[AttackResult]:
    """``[attack.run(c.model, c.x, c.y, radii, seed, prior=c.prior) for c in cells]``, in one pass per radius
    and part (module docstring). ``batch_size``: each cell's part size, as ``Attack.run``'s; ``max_rows``: the most
    rows one stacked pass holds (the cells' parts beyond it go to the next pass: memory, e.g. CelebA's 17 tasks of
    1,000 images each; default ``stack_rows``: what the encoder's activations allow). Each result's
    ``wall_seconds`` is its share of the whole (the cells' seconds add up to it)."""
    if not can_stack(attack, [c.model for c in cells]):
        raise ValueError(f"{attack.qualname} cannot stack these cells (a stackable attack, and one encoder behind "
                         "every cell's linear probe)")
    t0 = time.perf_counter()
    loops = [RadiusLoop(attack, c.model, c.x, c.y, radii, seed, c.prior, batch_size) for c in cells]
    encoder = cells[0].model.encoder
    if max_rows is None:
        max_rows = stack_rows(encoder, cells[0].x, batch_size)
    for eps in loops[0].radii:
        parts = [loop.begin(eps) for loop in loops]
        for k in range(max(map(len, parts))):
            for group in _groups([(loop, p[k]) for loop, p in zip(loops, parts) if k < len(p)], max_rows):
                _attack_group(attack, encoder, group, eps, progress if k == 0 else None)
        if eps > 0 and progress:
            progress(attack.units([eps]) * sum(1 for p in parts if not p))
        for loop in loops:
            loop.end(eps)
    results = [loop.result() for loop in loops]
    share = (time.perf_counter() - t0) / len(results)
    for res in results:  # each cell's share of the pass, so that the cells' seconds add up to it
        res.wall_seconds = share
    return results


def stack_rows(encoder: nn.Module, x: torch.Tensor, batch_size: int) -> int:
    """The most rows one stacked pass of ``encoder`` holds: ``MAX_ROWS``, or fewer where its activations kept for
    the input gradient are large, so that a pass keeps at most ``STACK_BYTES`` of them, or as many as one cell's
    part (``batch_size`` rows) keeps if that is more: stacking never needs much more memory than a cell alone
    (a ResNet-18 on 64 x 64 images keeps about 18 MiB per row: 4,096 rows would be 72 GiB). Measured on rows
    of ``x`` (two forward passes of one and three rows: what a row adds, the weights left out)."""
    if not len(x):
        return MAX_ROWS
    one, three = (_saved_bytes(encoder, x[:1].expand(n, *x.shape[1:])) for n in (1, 3))
    per_row = max((three - one) / 2, 1.0)
    return int(min(MAX_ROWS, max(batch_size, STACK_BYTES // per_row)))


def _saved_bytes(encoder: nn.Module, x: torch.Tensor) -> int:
    """Bytes of the memory autograd keeps for the input gradient of ``encoder`` on ``x`` (a tensor two layers
    keep counted once)."""
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        encoder(x.detach().clone().requires_grad_(True))
    return sum(kept.values())


def _groups(parts: list, max_rows: int) -> list[list]:
    """The (loop, part) pairs of one step of the radius, in order, in consecutive groups of at most ``max_rows``
    rows (a part larger than that alone)."""
    groups, rows = [[]], 0
    for loop, part in parts:
        if groups[-1] and rows + len(part) > max_rows:
            groups.append([])
            rows = 0
        groups[-1].append((loop, part))
        rows += len(part)
    return groups


def _attack_group(attack: Attack, encoder: nn.Module, group: list, eps: float, progress) -> None:
    """One stacked pass of ``attack`` over a group of cells' parts at radius ``eps``, each part settled by its
    cell's loop."""
    observers = [loop.observer(part, eps) for loop, part in group]
    sizes = [len(part) for _, part in group]
    model = Stacked(encoder, [loop.model.probe for loop, _ in group], observers, sizes).eval()
    streams = Streams([loop.gen for loop, _ in group], model.segment)
    x = torch.cat([loop.x[part] for loop, part in group])
    y = torch.cat([loop.y[part] for loop, part in group])
    tick = _scaled(progress, len(group)) if progress else None
    out = attack.perturb(model, x, y, eps, streams, tick)
    info = out[2] if len(out) > 2 else {}
    for (loop, part), observer, s, n in zip(group, observers, model.offsets, sizes):
        own = {**info, "restart": info["restart"][s:s + n]} if "restart" in info else info
        loop.settle(part, eps, observer, (out[0][s:s + n], out[1][s:s + n], own))

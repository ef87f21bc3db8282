"""The Observer: the model an attack is given, which matches every query to the attacked point it perturbs.

What it records per point (how far the attack's queries went, when the point was first misclassified inside
its ball) is the evidence ``robrep.checks`` turns into checks that can fail, whatever the attack claims.
"""
from __future__ import annotations

import torch
from torch import nn

from robrep.attacks.geometry import ball_slack, distance

CANDIDATES = 8  # the Observer confirms a query's point among this many nearest on block means first
BLOCKS = 64  # the Observer's block means
TRIANGLE_TOL = 1e-4  # relative slack of the triangle-inequality bounds (float32 rounding of the norms)
DIRECT = 1 << 22  # the Observer measures a query's distance to every point when queries x points x size is at most this


class Observer(nn.Module):
    """The model an attack sees: returns the model's logits unchanged, and matches every queried input to
    the attacked point it is a perturbation of (the point whose ball holds it: ``match``), recording per
    point the furthest query (as a fraction of the radius, queries past the ball count as 1) and the model
    call at which a query inside the ball was first misclassified, and that query.
    ``benchmarks/observer_overhead.py`` measures what it costs an attack."""

    takes_hints = True  # ``expect``

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str):
        super().__init__()
        self.model, self.x, self.y, self.eps, self.norm = model, x, y, eps, norm
        self.bounds = getattr(model, "bounds", None)  # the attack reads the model's input bounds through it
        self.keys = self.fingerprint(x).double()
        self.key_norms = (self.keys * self.keys).sum(1)
        self.block = max(1, x[0].numel() // BLOCKS)
        self.reach = torch.zeros(len(x), device=x.device)
        self.first_break = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        self.found = x.clone()  # the first query inside the ball that was misclassified, per point
        self.calls = 0
        self._last: torch.Tensor | None = None  # the points the last query batch was matched to
        self._last_x: torch.Tensor | None = None  # their rows of x, when every query matched its guess
        self._kept: torch.Tensor | None = None  # those of them whose query was not misclassified in the ball
        self._expected: torch.Tensor | None = None  # the points the attack says its next query perturbs (``expect``)
        self._pairwise: torch.Tensor | None = None  # distances between attacked points, rows filled on need
        self._nearest: torch.Tensor | None = None  # each point's distance to its nearest other one

    @staticmethod
    def fingerprint(x: torch.Tensor) -> torch.Tensor:
        """Means over ``BLOCKS`` disjoint, equal blocks of the flattened input (the remainder left out): a
        perturbation moves each block mean by at most its L-inf size, and their L2 distance times
        sqrt(block size) by at most its L2 size, so distances on them are lower bounds (``distance_bound``)."""
        flat = x.flatten(1).double()
        size = flat.shape[1] // BLOCKS
        return flat if size <= 1 else flat[:, :BLOCKS * size].view(len(flat), BLOCKS, size).mean(2)

    def distance_bound(self, fp: torch.Tensor) -> torch.Tensor:
        """(n_queries, N): a lower bound on each query's distance to each point in the attack's norm, from
        the L2 distance of block means (one matrix product): times sqrt(block size) for L2; over sqrt(number
        of blocks) for L-inf (each block mean moves by at most the L-inf size)."""
        fp = fp.double()  # float64: the expanded square cancels, and a bound must not exceed the distance
        d2 = ((fp * fp).sum(1, keepdim=True) - 2 * fp @ self.keys.T + self.key_norms).clamp_min(0)
        scale = self.block if self.norm == "l2" else 1.0 / self.keys.shape[1]
        return ((d2 * scale).sqrt() * (1 - 1e-6)).float()

    def match(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each query: the attacked point it perturbs, and the distance to it in the attack's norm.

        A query is a perturbation of the point whose ball it lies in. Cheapest first: the guessed point (``_guess``:
        the one the attack named, the one at the same index, or the same subset as in the last call); then
        (when queries x points x input size is at most ``DIRECT``, the nearest of all points, measured); else
        the nearest on block means; then the ``CANDIDATES`` nearest; then, for a query still outside the
        ball of its match, every point the block-mean bound (``distance_bound``) does not rule out, until one holds
        it. So the match is exact for a query inside some point's ball, however the perturbation moves block
        means (a dense, coherent FGSM step on coloured digits can land nearer other digits' block means than
        its own). A query past its guess's ball but nearer to the guess than the guess's nearest other point less
        the radius lies in no ball (the triangle inequality) and stays with its guess, the point the attack was
        perturbing; any other query past every ball (FAB, DeepFool) goes to the nearest in the attack's norm of
        the ``CANDIDATES``."""
        slack = self.eps + ball_slack(self.eps)
        n = len(self.x)
        guess, xs = self._guess(q)
        if guess is not None:
            best = guess.clone()
            xs = self.x[best] if xs is None else xs
            dist = distance(q, xs, self.norm)
        else:
            best = torch.zeros(len(q), dtype=torch.long, device=q.device)
            dist = torch.full((len(q),), float("inf"), device=q.device)
        self._last, self._last_x = best, None  # (best is updated in place below)
        rest = (dist > slack).nonzero().squeeze(1)
        if len(rest) and guess is not None and n > 1:
            rest = rest[~self._in_no_ball(best[rest], dist[rest], slack)]
        if not len(rest):
            self._last_x = xs  # every query matched its guess: the next call on the same points reuses their rows
            return best, dist
        if len(rest) * n * q[0].numel() <= DIRECT:  # few enough to measure every distance: the nearest point
            d = distance(q[rest, None], self.x[None], self.norm, 2)
            near, dn = d.argmin(1), d.amin(1)
            take = dn < dist[rest]
            best[rest[take]], dist[rest[take]] = near[take], dn[take]
            return best, dist
        bound = self.distance_bound(self.fingerprint(q[rest]))
        first = bound.argmin(1)
        d = distance(q[rest], self.x[first], self.norm)
        take = d < dist[rest]
        best[rest[take]], dist[rest[take]] = first[take], d[take]
        rest_i = (dist[rest] > slack).nonzero().squeeze(1)  # rows of ``bound`` still outside their ball
        k = min(CANDIDATES, n)
        if not len(rest_i) or k < 2:
            return best, dist
        rows = rest[rest_i]
        cand = bound[rest_i].topk(k, dim=1, largest=False).indices
        d = distance(q[rows, None], self.x[cand], self.norm, 2)
        pick = d.argmin(1, keepdim=True)
        b, dk = cand.gather(1, pick).squeeze(1), d.gather(1, pick).squeeze(1)
        take = dk < dist[rows]
        best[rows[take]], dist[rows[take]] = b[take], dk[take]
        self._search(q, rows, rest_i, bound, best, dist, slack)
        return best, dist

    def _guess(self, q: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The points the queries most likely perturb, and their rows of x where at hand (None, None: no guess).
        What the attack said (``expect``); else the points in order (a query of the whole batch); else the last
        call's points (an attack's next step on the points left), or those less the ones it broke."""
        expected, self._expected = self._expected, None
        if expected is not None and len(expected) == len(q):
            if self._last is not None and len(self._last) == len(q) and torch.equal(self._last, expected):
                return self._last, self._last_x  # the same points as the last call: their rows are at hand
            return expected, None
        if len(q) == len(self.x):
            return torch.arange(len(q), device=q.device), self.x
        if self._last is not None and len(self._last) == len(q):
            return self._last, self._last_x
        if self._kept is not None and len(self._kept) == len(q):
            return self._kept, None
        return None, None

    def _search(self, q, rows, rest_i, bound, best, dist, slack) -> None:
        """For each query ``rows`` (its block-mean bounds ``bound[rest_i]``) still outside its match's ball: every
        point the bounds allow, nearest block-mean bound first, 64 at a time, until one's ball holds it (``best``
        and ``dist`` updated in place). Two lower bounds on a query's distance to a point rule points out: the
        block-mean bound, and the triangle inequality through its best match so far (the point's distance to that
        match less the query's; ``_distances_from``): a query past its own point's ball (FAB, DeepFool) is
        usually shown to lie in no ball without measuring any other point."""
        tol = TRIANGLE_TOL
        far = dist[rows] > slack
        rows, rest_i = rows[far], rest_i[far]
        if not len(rows):
            return
        allowed = bound[rest_i] <= slack
        through = self._distances_from(best[rows]) * (1 - tol) - (dist[rows] * (1 + tol))[:, None]
        allowed &= through <= slack
        for r, i, ok in zip(rows.tolist(), rest_i.tolist(), allowed):
            if not ok.any():
                continue
            allowed_r = ok.nonzero().squeeze(1)
            allowed_r = allowed_r[bound[i, allowed_r].argsort()]
            for s in range(0, len(allowed_r), 64):
                c = allowed_r[s:s + 64]
                dc = distance(q[r], self.x[c], self.norm)
                j = int(dc.argmin())
                if dc[j] <= slack:
                    best[r], dist[r] = c[j], dc[j]
                    break

    def _in_no_ball(self, guess: torch.Tensor, dist: torch.Tensor, slack: float) -> torch.Tensor:
        """Whether queries at ``dist`` from their ``guess`` (past its ball) lie in no ball: nearer to the guess than
        its nearest other point less the radius (the triangle inequality). They stay with their guess, measured
        (FAB's and DeepFool's queries past the ball)."""
        return dist * (1 + TRIANGLE_TOL) < self._nearest_other()[guess] * (1 - TRIANGLE_TOL) - slack

    def _nearest_other(self) -> torch.Tensor:
        """(N,): each attacked point's distance to the nearest other one, in the attack's norm (measured once)."""
        if self._nearest is None:
            d = self._distances_from(torch.arange(len(self.x), device=self.x.device)).clone()
            d.fill_diagonal_(float("inf"))
            self._nearest = d.amin(1)
        return self._nearest

    def _distances_from(self, points: torch.Tensor) -> torch.Tensor:
        """(len(points), N): the distances in the attack's norm from each of ``points`` (indices) to every attacked
        point, measured once per point on first need and kept."""
        if self._pairwise is None:
            self._pairwise = torch.full((len(self.x), len(self.x)), float("nan"), device=self.x.device)
        need = points.unique()
        need = need[self._pairwise[need, 0].isnan()]
        chunk = max(1, DIRECT // (len(self.x) * self.x[0].numel()))  # points measured against all at once
        for s in range(0, len(need), chunk):
            c = need[s:s + chunk]
            d = distance(self.x[c, None], self.x[None], self.norm, 2)
            self._pairwise[c] = d
        return self._pairwise[points]

    def expect(self, points: torch.Tensor) -> None:
        """Say which attacked point each row of the next query perturbs (an attack with several rows per point,
        or one that queries a subset of its rows). Only a guess, checked as the others: a row outside its
        point's ball is matched by the search, so a wrong hint costs time and never changes the evidence."""
        self._expected = points

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        out = self.model(q)
        self.record(q, out)
        return out

    def record(self, q: torch.Tensor, logits: torch.Tensor) -> None:
        """Count one model call, the queries ``q`` and the logits the model gave them (``forward``; stacked
        cells, ``robrep.attacks.stacked``, call it with each cell's rows of a shared call)."""
        self.calls += 1
        with torch.no_grad():
            if len(q) and q.shape[1:] == self.x.shape[1:]:
                self._observe(q.detach().to(self.x.dtype), logits.detach())

    def _observe(self, q: torch.Tensor, logits: torch.Tensor) -> None:
        j, dist = self.match(q)
        inside = dist <= self.eps + ball_slack(self.eps)
        reach = torch.where(inside, dist / self.eps, torch.ones_like(dist))  # past the ball (FAB, DeepFool): 1
        self.reach.scatter_reduce_(0, j, reach, reduce="amax")
        wrong = inside & (logits.argmax(1) != self.y[j])
        self._kept = j[~wrong]
        broke = wrong & (self.first_break[j] < 0)
        if broke.any():
            self.first_break[j[broke]] = self.calls
            self.found[j[broke]] = q[broke]


def expect(model: nn.Module, points: torch.Tensor) -> None:
    """Tell the model, where it takes the hint (an ``Observer``, stacked cells: ``robrep.attacks.stacked``), which
    attacked point each row of the next query perturbs (``Observer.expect``); any other model is left alone."""
    if getattr(model, "takes_hints", False):
        model.expect(points)

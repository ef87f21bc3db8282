"""The part every attack shares: the radius loop, reuse across radii, guards, evidence, the result.

An attack writes ``perturb``: one radius, given the points still robust at radius ``eps``, return
which it broke and the inputs it ended with (the adversarial example for a broken point, its last
or best iterate for the others). The base class and its radius loop (``RadiusLoop``) own the rest:

- radius 0 is evaluated without attacking (it is the clean accuracy);
- radii are visited in increasing order and a point broken at radius r counts as broken at
  every larger radius (its adversarial input lies in the larger ball too), so it is never
  attacked again;
- each radius is attacked with its own seed, derived from the bench's seed and the radius's
  value (``radius_seed``), so adding a radius larger than the others leaves their numbers as they
  were (one inside the grid can only lower the larger radii's numbers: the points it breaks have
  adversarial examples inside the larger balls too);
- **guards**: an adversarial input only counts once it is checked here: finite, inside [0, 1],
  inside the ball (with a slack relative to the radius, ``ball_slack``), and misclassified when the
  decision is re-computed (on the input alone where it lies on the decision boundary, ``decide``, so
  no decision depends on the batch it was computed in). A returned input that fails (a library bug, a
  leaky projection) is rejected and counted in ``rejected``; attacks with restarts check inline
  (``admissible``), so a later restart attacks a point whose example was rejected again;
- **evidence** (``robrep.checks`` turns it into checks that can fail): the model an attack is given
  is wrapped in an ``Observer``, which matches every input the attack queries to the attacked point
  it perturbs. It records how far each point's queries went (a point the attack never moved away from
  is seen as such, whatever the attack claims) and when in the attack each point was first
  misclassified inside the ball (points first broken late mean more budget would change the answer).
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from robrep.attacks.geometry import admissible, bounds_of
from robrep.attacks.observer import Observer
from robrep.rows.layout import radius_grid  # the radii in the order attacks visit them and rows store them

Progress = Callable[[int], None]  # called with a number of work units done
LATE = 0.8  # a point first broken after this fraction of the attack's model calls was broken late
REACH = 0.5  # a robust point counts as explored if some query reached this fraction of the radius
TIE_TOL = 1e-4  # top two logits this close (relative to the top one, at least 1): decided on the input alone


def radius_seed(seed: int, eps: float) -> int:
    """The seed of the attack at radius ``eps``: a function of the bench's seed and the radius's value only."""
    return int.from_bytes(hashlib.sha256(f"{int(seed)}/{float(eps)!r}".encode()).digest()[:8], "little") >> 1


@torch.no_grad()
def decide(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(decisions, ties), each (N,): the argmax of ``model``'s logits on x, as a function of each input alone,
    and which inputs were ties (top two logits within ``TIE_TOL``).

    The last bits of a logit depend on the batch it is computed in (matrix kernels block by batch size),
    which can flip the argmax of an input on the decision boundary, where attacks leave their examples.
    So a tie is re-computed on its input alone: every decision here, at attack time, in the checks and in
    ``robrep verify``, is the same whatever else was in the batch."""
    if not len(x):
        empty = torch.zeros(0, dtype=torch.long, device=x.device)
        return empty, empty.bool()
    logits = torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    pred = logits.argmax(1)
    if logits.shape[1] < 2:
        return pred, torch.zeros_like(pred, dtype=torch.bool)
    top = logits.float().topk(2, dim=1).values
    tie = top[:, 0] - top[:, 1] <= TIE_TOL * top[:, 0].abs().clamp_min(1.0)
    for i in tie.nonzero().squeeze(1).tolist():
        pred[i] = model(x[i:i + 1]).argmax(1)[0]
    return pred, tie


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Decisions (argmax of the logits) of ``model`` on x, each independent of the batch (``decide``). (N,)"""
    return decide(model, x, batch_size)[0]


@dataclass
class Evidence:
    """What the observer saw at one radius, over the points attacked there (robrep.checks judges it)."""

    n_attacked: int = 0
    n_robust: int = 0  # attacked and still robust
    n_explored: int = 0  # of those, the ones some query reached REACH of the radius
    n_late: int = 0  # first misclassified in the last (1 - LATE) of the attack's model calls
    n_last_restart: int | None = None  # first broken in the last restart (attacks that report restarts)
    measured_late: bool = True  # False for single-step attacks (there is no "later")

    def add(self, other: "Evidence") -> None:
        for f in ("n_attacked", "n_robust", "n_explored", "n_late"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        if other.n_last_restart is not None:
            self.n_last_restart = (self.n_last_restart or 0) + other.n_last_restart


@dataclass
class AttackResult:
    """Per radius: which points are robust and the inputs that were evaluated (x_adv, or x itself if robust)."""

    radii: list[float]
    clean_correct: torch.Tensor  # (N,) bool
    robust: dict[float, torch.Tensor] = field(default_factory=dict)  # radius -> (N,) bool
    x_adv: dict[float, torch.Tensor] = field(default_factory=dict)  # radius -> (N, C, H, W)
    attacked: dict[float, int] = field(default_factory=dict)  # radius -> points actually attacked
    rejected: dict[float, int] = field(default_factory=dict)  # radius -> returned inputs the guards rejected
    evidence: dict[float, Evidence] = field(default_factory=dict)  # radius -> what the observer saw
    # radius -> (N,) bool: broken at this radius, but only late (in the last fifth of the attack's model calls or
    # in its last restart); the worst case asks whether some attack broke such a point early
    late: dict[float, torch.Tensor] = field(default_factory=dict)
    seeds: dict[float, int] = field(default_factory=dict)  # radius -> the seed its attack ran with
    wall_seconds: float = 0.0

    def accuracy(self, radius: float) -> float:
        return self.robust[radius].float().mean().item()


class Attack:
    """Base class. Subclasses set ``name``, ``norm``, ``suite`` and implement ``perturb``."""

    name = "attack"
    norm = "linf"
    suite = "native"
    kind = "iterative"  # iterative | single-step | black-box | minimal (for the consistency warnings)
    includes_black_box = False  # an ensemble with a black-box part (AutoAttack): not a pure gradient attack
    reuse = True  # attack only the points not broken at a smaller radius

    @property
    def qualname(self) -> str:
        """``suite/name``: how warnings, progress and a cascade's stages name the attack."""
        return f"{self.suite}/{self.name}"

    def settings(self) -> dict:
        """The attack's full configuration, recorded in every result row."""
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    def budget(self) -> dict:
        """The budget columns of its rows: ``steps``, ``restarts`` (re-seeded runs x the attack's own
        restarts, e.g. APGD's n_restarts) and ``step_size``, each None where the attack has none."""
        settings = self.settings()
        kwargs = settings.get("kwargs", {})
        has_restarts = "restarts" in settings or "n_restarts" in kwargs
        return {
            "steps": settings.get("steps", kwargs.get("steps")),
            "restarts": settings.get("restarts", 1) * kwargs.get("n_restarts", 1) if has_restarts else None,
            "step_size": f"{settings['rel_stepsize']} * radius / steps" if "rel_stepsize" in settings else None,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"

    def units(self, radii: list[float]) -> int:
        """Work units reported through ``progress`` for a whole run (for progress bars)."""
        return sum(1 for r in radii if r > 0)

    def perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, generator: torch.Generator,
        progress: Progress | None = None,
    ) -> tuple:
        """Attack the (correctly classified) points x at radius eps. Returns (broken (n,) bool, x_adv (n, ...)),
        optionally with a third element ``{"restart": (n,) long, the restart that broke each point or -1,
        "restarts": int}``. ``x_adv`` holds the adversarial example of a broken point and the last (or best)
        iterate of the others."""
        raise NotImplementedError

    def admissible(self, x: torch.Tensor, x_adv: torch.Tensor, eps: float,
                   bounds: tuple[float, float]) -> torch.Tensor:
        """(n,) bool: x_adv is finite, inside ``bounds`` and inside the ball of radius eps around x (the guards)."""
        return admissible(x, x_adv, eps, self.norm, bounds)

    @torch.no_grad()
    def validate(self, model, x, y, x_adv, eps, batch_size: int = 1000) -> tuple[torch.Tensor, ...]:
        """(valid, fooled, tie): the guards on a returned input, whether it is misclassified (re-computed on
        its own, ``decide``), and whether it lies on the decision boundary (top two logits tied)."""
        pred, tie = decide(model, x_adv, batch_size)
        return self.admissible(x, x_adv, eps, bounds_of(model)), pred != y, tie

    def restarted(self, model, x, y, eps, generator, progress, restarts: int, call, grad: bool = True) -> tuple:
        """Run ``call(x, y, seed) -> x_adv`` ``restarts`` times with new seeds, each time on the points no
        earlier run broke with an admissible input (a rejected example is attacked again). ``grad``: whether the
        call runs with gradients on (False for library attacks that switch them on themselves where they need
        them, so that what they do elsewhere builds no autograd graph)."""
        broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        restart = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        x_adv = x.clone()
        for k in range(restarts):
            idx = (~broken).nonzero().squeeze(1)
            if len(idx):
                seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
                torch.manual_seed(seed)  # libraries draw random starts from torch's global generator
                with torch.set_grad_enabled(grad):
                    adv = call(x[idx], y[idx], seed).detach().to(x.dtype)
                won = (predict(model, adv) != y[idx]) & self.admissible(x[idx], adv, eps, bounds_of(model))
                broken[idx[won]] = True
                restart[idx[won]] = k
                x_adv[idx] = adv  # the example of a broken point, the last iterate of the others
            if progress:
                progress(1)
        return broken, x_adv, {"restart": restart, "restarts": restarts}

    @torch.no_grad()
    def run(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, radii: list[float], seed: int,
        progress: Progress | None = None, batch_size: int = 1000, prior: AttackResult | None = None,
    ) -> AttackResult:
        """Attack (x, y) at every radius. ``prior``: the result of the attacks before this one in a cascade
        (``robrep.attacks.cascade``); only the points still robust against them are attacked, and the result
        is the cascade's so far (its robust points and, for the points earlier attacks broke, their lateness;
        their adversarial inputs are not carried: ``x_adv`` holds x for them)."""
        loop = RadiusLoop(self, model, x, y, radii, seed, prior, batch_size)
        for eps in loop.radii:
            parts = loop.begin(eps)
            for s, part in enumerate(parts):
                self._attack_part(loop, part, eps, progress if s == 0 else None)
            if not parts and eps > 0 and progress:
                progress(self.units([eps]))
            loop.end(eps)
        return loop.result()

    def _attack_part(self, loop: RadiusLoop, part: torch.Tensor, eps: float, progress: Progress | None) -> None:
        """Attack one part of a radius's points (an Observer between the attack and the model) and settle it."""
        observer = loop.observer(part, eps)
        loop.settle(part, eps, observer, self.perturb(observer, loop.x[part], loop.y[part], eps, loop.gen, progress))


class RadiusLoop:
    """One cell's way through its radii (``Attack.run``; ``robrep.attacks.stacked`` steps several cells at once):
    radius 0 evaluated without attacking, each larger radius attacking only the points still robust (under the
    cascade's ``prior`` too) with its own seed, in parts of ``batch_size`` points, every returned input checked
    by the guards and every query seen by an ``Observer`` (the evidence)."""

    def __init__(self, attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, radii: list[float],
                 seed: int, prior: AttackResult | None = None, batch_size: int = 1000):
        if any(r < 0 for r in radii):
            raise ValueError(f"attack radii must be >= 0, got {radii}")
        self.attack, self.model, self.x, self.y, self.seed = attack, model, x, y, seed
        self.prior, self.batch_size = prior, batch_size
        self.t0 = time.perf_counter()
        model.eval()
        self.radii = radius_grid(radii)
        self.res = AttackResult(self.radii, clean_correct=predict(model, x, batch_size) == y)
        self.robust, self.x_adv = self.res.clean_correct.clone(), x.clone()
        self.gen: torch.Generator | None = None
        self.evidence: Evidence | None = None

    def begin(self, eps: float) -> list[torch.Tensor]:
        """Start radius ``eps``: the parts (index tensors, at most ``batch_size`` points each) to attack, in order,
        each attacked from ``gen`` (this radius's seed) one after the other; none at radius 0."""
        res, robust, prior = self.res, self.robust, self.prior
        res.attacked[eps] = res.rejected[eps] = 0
        res.late[eps] = torch.zeros_like(robust)
        if prior is not None:
            robust &= prior.robust[eps].to(robust.device)
            res.late[eps] |= prior.late[eps].to(robust.device)
        if eps == 0:
            return []
        # only points not yet broken at a smaller radius (unless the attack opts out of reuse)
        fresh = res.clean_correct if prior is None else res.clean_correct & prior.robust[eps].to(robust.device)
        idx = (robust if self.attack.reuse else fresh).nonzero().squeeze(1)
        res.seeds[eps] = radius_seed(self.seed, eps)
        self.gen = torch.Generator().manual_seed(res.seeds[eps])
        self.evidence = Evidence(measured_late=self.attack.kind != "single-step")
        res.attacked[eps] = len(idx)
        return [idx[s:s + self.batch_size] for s in range(0, len(idx), self.batch_size)]

    def observer(self, part: torch.Tensor, eps: float) -> Observer:
        """The model the attack is given for ``part``: an Observer of this cell's model on its points."""
        return Observer(self.model, self.x[part], self.y[part], eps, self.attack.norm).eval()

    def settle(self, part: torch.Tensor, eps: float, observer: Observer, out: tuple) -> None:
        """Take what the attack returned for ``part`` (``Attack.perturb``'s tuple): the guards decide which
        points fell, its ``observer``'s record gives the evidence."""
        attack, model, x, y, res = self.attack, self.model, self.x, self.y, self.res
        robust, x_adv, evidence = self.robust, self.x_adv, self.evidence
        xs, ys = x[part], y[part]
        broken, adv = out[0], out[1].to(x.dtype)
        info = out[2] if len(out) > 2 else {}
        valid, fooled, tie = attack.validate(model, xs, ys, adv, eps)
        # claimed, but not confirmed: outside the guards, or correctly classified (a tie the attack decided
        # otherwise in its own batch is not a rejection; the point just stays robust)
        res.rejected[eps] += int((broken & ~(valid & (fooled | tie))).sum())
        # a point falls only to a checked input; keep the smallest-radius example
        newly = fooled & valid & robust[part]
        robust[part[newly]] = False
        x_adv[part[newly]] = adv[newly]
        # a misclassified input the attack queried but did not return (it returned its last iterate) counts too
        missed = robust[part] & (observer.first_break >= 0)
        if missed.any():
            ok, wrong, _ = attack.validate(model, xs[missed], ys[missed], observer.found[missed], eps)
            take = missed.nonzero().squeeze(1)[ok & wrong]
            robust[part[take]] = False
            x_adv[part[take]] = observer.found[take]
        still = robust[part]
        seen = observer.first_break >= 0
        late = seen & (observer.first_break > LATE * observer.calls)
        part_evidence = Evidence(
            n_attacked=len(part), n_robust=int(still.sum()), n_explored=int((observer.reach[still] >= REACH).sum()),
            n_late=int((late & ~still).sum()))
        last = torch.zeros_like(late)
        if info.get("restarts", 1) > 1:
            last = info["restart"].to(late.device) == info["restarts"] - 1
            part_evidence.n_last_restart = int(last.sum())
        if evidence.measured_late:
            res.late[eps][part] = (late | last) & ~still
        evidence.add(part_evidence)

    def end(self, eps: float) -> None:
        """Close radius ``eps``: its robust points and inputs, and its evidence."""
        if eps > 0:
            self.res.evidence[eps] = self.evidence
        self.res.robust[eps] = self.robust.clone()
        self.res.x_adv[eps] = self.x_adv.clone()

    def result(self) -> AttackResult:
        self.res.wall_seconds = time.perf_counter() - self.t0
        return self.res

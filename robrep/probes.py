"""Frozen encoders and linear probes on their representation (the paper's evaluation protocol: freeze, then probe)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from robrep.encoders.adapter import as_encoder, freeze

log = logging.getLogger(__name__)


@torch.no_grad()
def features(encoder: nn.Module, images: torch.Tensor, batch_size: int = 1000, device=None) -> torch.Tensor:
    """The representation (an encoder's mean mu(x), or its output; see ``robrep.encoders.Encoder``) of uint8
    (N, C, H, W) images, computed in batches. (N, d) float32 on ``device``."""
    encoder = as_encoder(encoder)
    if device is None:
        tensors = [*encoder.parameters(), *encoder.buffers()]
        device = tensors[0].device if tensors else torch.device("cpu")
    out = [encoder(images[i:i + batch_size].to(device).float().div_(255.0))
           for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out)


PROBE_BITS = 10  # a probe's weights are rounded to 2^-10 of the largest weight of their tensor
NEWTON_MAX = 2048  # probes with at most this many parameters: Newton's method with the exact Hessian; larger: Newton-CG
# How ``train_probe`` fits, recorded with every saved probe: a probe fitted another way is never reused. The text
# is an identifier of saved probes (its date included): changing it makes every run fit its probes again.
PROBE_FIT = (f"float64 to the optimum (Newton: exact Hessian up to {NEWTON_MAX} parameters, conjugate gradients on "
             f"Hessian products above), L2 1e-4 on raw W and b, rounded to 2^-{PROBE_BITS} (robrep 2026-12-04)")


def train_probe(
    feats: torch.Tensor, labels: torch.Tensor, n_classes: int, *, weight_decay: float = 1e-4, max_iter: int = 3000,
    solver: str = "auto",
) -> nn.Linear:
    """Multinomial logistic regression on fixed features (binary tasks as 2 classes), no adversarial training.

    The mean cross-entropy plus a small L2 penalty on W and b (a strictly convex objective with one minimum),
    minimised in float64 on standardised features (for conditioning; the objective is the raw one), then rounded
    (``round_probe``) and returned in float32. ``solver``: ``"newton"`` (exact Hessian, line search; converges to
    a gradient of 1e-12 in about ten iterations), ``"newton-cg"`` (the same Newton steps, each solved by
    preconditioned conjugate gradients on Hessian-vector products, which cost about a gradient each: for large
    probes, where a Hessian of ((d + 1) x classes)^2 entries costs too much), ``"lbfgs"`` (full-batch L-BFGS, up
    to ``max_iter`` iterations: robrep's earlier fit), or ``"auto"``: Newton up to ``NEWTON_MAX``
    parameters, Newton-CG above. All reach the same minimum, Newton's methods more tightly and many times faster
    (``benchmarks/probe_fit.py``). Features computed on another
    machine or with another number of threads differ in their last float32 bits; the float64 fit moves far less
    than the rounding grain, so the same probe comes back, byte for byte (tests/harness/test_reproduce.py).
    """
    weight, bias = fit_probe(feats, labels, n_classes, weight_decay=weight_decay, max_iter=max_iter, solver=solver)
    probe = nn.Linear(weight.shape[1], n_classes).to(device=weight.device, dtype=torch.float64)
    with torch.no_grad():
        probe.weight.copy_(weight)
        probe.bias.copy_(bias)
    return round_probe(probe).float().eval()


SOLVERS = ("auto", "newton", "newton-cg", "lbfgs")


def fit_probe(
    feats: torch.Tensor, labels: torch.Tensor, n_classes: int, *, weight_decay: float = 1e-4, max_iter: int = 3000,
    solver: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The minimiser (W (classes, d), b (classes,)), float64 and unrounded, of ``train_probe``'s objective."""
    if solver not in SOLVERS:
        raise ValueError(f"probe solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if feats.dim() != 2 or len(feats) != len(labels) or not len(feats):
        raise ValueError(f"a probe needs features (N, d) and N labels, N > 0; got {tuple(feats.shape)} and "
                         f"{tuple(labels.shape)}")
    device = feats.device
    raw, labels = feats.detach().double(), labels.to(device)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must lie in [0, {n_classes}), got [{labels.min()}, {labels.max()}]")
    # standardised features (better conditioned): a change of variables only, the penalty is on the raw weights and
    # bias, so the objective is the raw one (a penalty on the standardised weights would be far weaker on a
    # representation of small variance, and the probe far less smooth). A constant feature is left as it is.
    std = raw.std(0) if len(raw) > 1 else torch.zeros(raw.shape[1], dtype=raw.dtype, device=device)
    constant = ~(std > 1e-12)
    mean = torch.where(constant, torch.zeros_like(std), raw.mean(0))
    scale = torch.where(constant, torch.ones_like(std), std)
    feats = (raw - mean) / scale
    if solver == "auto":
        solver = "newton" if (feats.shape[1] + 1) * n_classes <= NEWTON_MAX else "newton-cg"
    fit = {"newton": _newton, "newton-cg": _newton_cg, "lbfgs": _lbfgs}[solver]
    w_s, b_s = fit(feats, labels, n_classes, mean, scale, weight_decay, max_iter)
    weight = w_s / scale  # W x + b on the raw features: W = W_s / scale, b = b_s - W mean
    return weight, b_s - weight @ mean


def _penalty(mean, scale, weight_decay):
    """G with 1/2 sum_c theta_c^T G theta_c the penalty 1/2 lambda ||W, b||^2 on the raw weights, for theta_c =
    [W_s,c, b_s,c] on standardised features: G = lambda A^T A, A the map from theta_c to the raw [W_c, b_c]. (k, k)"""
    d = len(mean)
    a = torch.zeros(d + 1, d + 1, dtype=mean.dtype, device=mean.device)
    a[:d, :d] = torch.diag(1 / scale)
    a[d, :d] = -mean / scale
    a[d, d] = 1
    return weight_decay * (a.T @ a)


def _penalty_product(mean, scale, weight_decay):
    """theta -> theta G (``_penalty``'s G) in O(classes x k) instead of O(classes x k^2): G = lambda A^T A with A
    diagonal plus one row (the bias's), so A v and A^T u take one pass each. theta (C, k) -> (C, k)"""
    ratio = mean / scale  # (d,)

    def product(th):
        w, b = th[:, :-1], th[:, -1:]
        u_b = b - w @ ratio[:, None]  # the raw bias of theta, (C, 1)
        return weight_decay * torch.cat([w / scale.pow(2) - u_b * ratio, u_b], 1)

    return product


def _newton_steps(theta, labels, onehot, g_pen, logits, back, direction, max_iter):
    """The Newton iterations both Newton fits share: the gradient of the mean cross-entropy plus the penalty
    1/2 sum_c theta_c^T G theta_c, a step from ``direction(p, grad)``, a backtracking line search; until the
    largest gradient entry is at most 1e-12 or float64 resolves no further decrease. ``logits(theta)`` (N, C) and
    ``back(r)`` (the pull-back of r (N, C) onto theta) define the features."""

    pen = g_pen if callable(g_pen) else (lambda th: th @ g_pen)  # theta -> theta G

    def objective(th):
        return F.cross_entropy(logits(th), labels) + 0.5 * (pen(th) * th).sum()

    value = objective(theta)
    t0 = time.perf_counter()
    for it in range(min(max_iter, 100)):
        p = logits(theta).softmax(1)  # (N, C)
        grad = back(p - onehot) + pen(theta)  # (C, k)
        largest, seconds = grad.abs().max().item(), time.perf_counter() - t0
        log.log(logging.INFO if seconds > 5 else logging.DEBUG, "probe fit (%d parameters): Newton step %d, "
                "largest gradient %.2e, %.0f s", theta.numel(), it, largest, seconds)
        if largest <= 1e-12:
            break
        step = direction(p, grad)
        if step is None:  # the solver's bound on its work is spent: the best point so far, said out loud
            log.warning("probe fit (%d parameters) stopped at its bound on work after %d Newton steps, %.0f s, "
                        "largest gradient %.2e (the optimum's is 0)", theta.numel(), it, seconds, largest)
            break
        slope = (grad * step).sum()  # the decrease a full step promises, to first order (> 0)
        if not slope > 1e-30:
            break
        t = 1.0
        while True:  # backtracking: a full Newton step near the optimum, shorter ones far from it
            new = theta - t * step
            new_value = objective(new)
            if new_value <= value - 1e-4 * t * slope or t < 1e-8:
                break
            t *= 0.5
        if not new_value < value and t < 1e-8:  # no decrease left at float64 resolution
            break
        theta, value = new, new_value
    return theta


def _newton(feats, labels, n_classes, mean, scale, weight_decay, max_iter):
    """Newton's method on theta = [W_s, b_s] (classes, d + 1) over the features with a column of ones: gradient and
    Hessian of the mean cross-entropy in closed form, the penalty 1/2 lambda sum_c theta_c^T G theta_c with G =
    A^T A (A maps theta_c to the raw [W_c, b_c]), a Cholesky solve and a backtracking line search."""
    n, d = feats.shape
    k, c = d + 1, n_classes
    phi = torch.cat([feats, torch.ones(n, 1, dtype=feats.dtype, device=feats.device)], 1)  # (N, k)
    g_pen = _penalty(mean, scale, weight_decay)  # (k, k)
    onehot = F.one_hot(labels, c).to(feats.dtype)
    theta = torch.zeros(c, k, dtype=feats.dtype, device=feats.device)
    rows = max(1, (1 << 23) // (c * k))  # Hessian rows per chunk: about 64 MB of float64 at a time

    def logits(th):  # (N, C)
        return phi @ th.T

    def back(r):  # r (N, C) -> its pull-back onto theta, (C, k)
        return r.T @ phi / n

    def direction(p, grad):  # the Newton step: the exact Hessian, a Cholesky solve
        hess = torch.zeros(c * k, c * k, dtype=feats.dtype, device=feats.device)
        for s in range(0, n, rows):  # sum_i (diag(p_i) - p_i p_i^T) (x) phi_i phi_i^T, in chunks of rows
            ps, fs = p[s:s + rows], phi[s:s + rows]
            m = (ps[:, :, None] * fs[:, None, :]).reshape(len(ps), c * k)
            hess -= m.T @ m
            hess += torch.block_diag(*torch.einsum("nc,ni,nj->cij", ps, fs, fs))
        hess /= n
        hess += torch.block_diag(*[g_pen] * c)
        chol, info = torch.linalg.cholesky_ex(hess)
        return (torch.cholesky_solve(grad.reshape(-1, 1), chol) if info == 0
                else torch.linalg.lstsq(hess, grad.reshape(-1, 1)).solution).reshape(c, k)

    theta = _newton_steps(theta, labels, onehot, g_pen, logits, back, direction, max_iter)
    return theta[:, :d], theta[:, d]


HVP_MAX = 20_000  # Hessian-vector products one Newton-CG fit may spend in all (its bound on work)


def _newton_cg(feats, labels, n_classes, mean, scale, weight_decay, max_iter, cg_max=500):
    """Newton's method without the Hessian: each step solves H s = g by conjugate gradients preconditioned with the
    Hessian's diagonal, to a relative residual of min(0.5, sqrt(|g|)) (a truncated Newton method: superlinear
    near the minimum), from Hessian-vector products of two passes over the features each; a backtracking line
    search as in ``_newton``. theta = [W_s, b_s] (classes, d + 1), the bias kept apart from the features."""
    n, d = feats.shape
    k, c = d + 1, n_classes
    pen = _penalty_product(mean, scale, weight_decay)  # theta -> theta G, without G's k x k entries
    pen_diag = weight_decay * torch.cat([(1 + mean.pow(2)) / scale.pow(2), mean.new_ones(1)])  # G's diagonal
    onehot = F.one_hot(labels, c).to(feats.dtype)
    theta = torch.zeros(c, k, dtype=feats.dtype, device=feats.device)
    rows = max(1, (1 << 23) // d)  # rows of squared features at a time: about 64 MB of float64
    spent = [0]  # Hessian-vector products so far

    def logits(th):  # (N, C)
        return torch.addmm(th[:, d], feats, th[:, :d].T)

    def back(r):  # r (N, C) -> its pull-back onto theta, (C, k)
        return torch.cat([r.T @ feats, r.sum(0)[:, None]], 1) / n

    def direction(p, grad):  # the Newton step by preconditioned conjugate gradients
        w = p * (1 - p)  # the Hessian's diagonal: sum_i p_ic (1 - p_ic) phi_ij^2 / N, plus the penalty's
        diag = torch.cat([sum(w[s:s + rows].T @ feats[s:s + rows].pow(2) for s in range(0, n, rows)),
                          w.sum(0)[:, None]], 1) / n + pen_diag

        if spent[0] >= HVP_MAX:
            return None

        def hvp(v):  # H v: (diag(p_i) - p_i p_i^T) applied to phi_i . v_c, pulled back, plus the penalty
            spent[0] += 1
            r = p * logits(v)
            return back(r - p * r.sum(1, keepdim=True)) + pen(v)

        g_norm = grad.norm()
        tol = min(0.5, g_norm.sqrt().item()) * g_norm
        step, res = torch.zeros_like(grad), grad.clone()
        z = res / diag
        q, rz = z.clone(), (res * z).sum()
        for _ in range(min(cg_max, HVP_MAX - spent[0])):
            hq = hvp(q)
            alpha = rz / (q * hq).sum()
            step += alpha * q
            res -= alpha * hq
            if res.norm() <= tol:
                break
            z = res / diag
            rz, rz_old = (res * z).sum(), rz
            q = z + (rz / rz_old) * q
        return step

    theta = _newton_steps(theta, labels, onehot, pen, logits, back, direction, max_iter)
    return theta[:, :d], theta[:, d]


def _lbfgs(feats, labels, n_classes, mean, scale, weight_decay, max_iter):
    """Full-batch L-BFGS (strong Wolfe line search) on the standardised weights and bias."""
    probe = nn.Linear(feats.shape[1], n_classes).to(device=feats.device, dtype=torch.float64)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1, max_iter=max_iter, tolerance_grad=1e-12,
                            tolerance_change=1e-16, history_size=50, line_search_fn="strong_wolfe")

    def closure():  # the bias is penalised too: softmax is shift invariant, so only then is the optimum unique
        opt.zero_grad()
        weight = probe.weight / scale
        bias = probe.bias - weight @ mean
        loss = F.cross_entropy(probe(feats), labels) + 0.5 * weight_decay * (weight.pow(2).sum() + bias.pow(2).sum())
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return probe.weight.detach(), probe.bias.detach()


# How ``train_adversarial_probe`` trains, recorded with every adversarial probe (as PROBE_FIT for the standard one).
ADVERSARIAL = {"steps": 10, "epochs": 20, "batch_size": 128, "lr": 1e-2}
PROBE_FIT_ADVERSARIAL = (f"adversarial: from the standard probe, Adam (lr {ADVERSARIAL['lr']:g}) on the cross-entropy of "
                         f"PGD inputs ({ADVERSARIAL['steps']} steps of 2.5 radius / steps from a random start, maximising "
                         f"the cross-entropy through the frozen encoder), {ADVERSARIAL['epochs']} epochs of minibatches "
                         f"of {ADVERSARIAL['batch_size']}, L2 1e-4, rounded to 2^-{PROBE_BITS} (robrep 2026-12-05)")


def train_adversarial_probe(encoder: nn.Module, images: torch.Tensor, labels: torch.Tensor, start: nn.Linear, *,
                            eps: float, norm: str, seed: int, weight_decay: float = 1e-4) -> nn.Linear:
    """A linear probe trained on attacked inputs, as RobustSSL's adversarial linear finetuning (ALF): the encoder
    stays frozen; each minibatch is attacked through probe∘encoder by PGD at radius ``eps`` (``robrep.ascent``,
    ``ADVERSARIAL`` steps) and the probe takes an Adam step on the attacked inputs' cross-entropy. It starts from
    ``start`` (the standard probe) and is rounded as the standard one. ``images``: uint8 (N, C, H, W) on the
    encoder's device; ``labels`` (N,). Seeded: the same bytes on the same machine and thread count."""
    from robrep.ascent import ascent

    encoder = as_encoder(encoder)
    device = images.device
    probe = nn.Linear(start.in_features, start.out_features).to(device)
    with torch.no_grad():
        probe.weight.copy_(start.weight.float())
        probe.bias.copy_(start.bias.float())
    opt = torch.optim.Adam(probe.parameters(), lr=ADVERSARIAL["lr"])
    gen = torch.Generator().manual_seed(seed)
    bounds = encoder.bounds
    n, size = images.shape[0], ADVERSARIAL["batch_size"]
    for _ in range(ADVERSARIAL["epochs"]):
        order = torch.randperm(n, generator=gen).to(device)
        for i in range(0, n, size):
            batch = order[i:i + size]
            x, y = images[batch].float().div_(255.0), labels[batch]
            x_adv = ascent(lambda v: F.cross_entropy(probe(encoder(v)), y, reduction="none"), x, eps,
                           ADVERSARIAL["steps"], bounds, norm=norm, generator=gen)
            with torch.no_grad():
                z = encoder(x_adv)
            loss = F.cross_entropy(probe(z), y) + weight_decay * (probe.weight.pow(2).sum() + probe.bias.pow(2).sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return round_probe(probe.requires_grad_(False).eval())


@torch.no_grad()
def round_probe(probe: nn.Linear, bits: int = PROBE_BITS) -> nn.Linear:
    """Each parameter rounded to a power-of-two grain, 2^-bits of its largest magnitude (exact in float32);
    frozen."""
    for p in probe.parameters():
        top = p.abs().max().item()
        if top > 0:
            grain = 2.0 ** (torch.tensor(top).log2().floor().item() - bits)
            p.copy_(torch.round(p / grain) * grain)
        p.requires_grad_(False)
    return probe


def save_probe(probe: nn.Linear, path) -> str:
    """Write ``probe`` as safetensors (atomically); returns the SHA-256 of the bytes written."""
    from robrep.checkpoint import state_bytes
    from robrep.io import atomic_write, sha256_bytes

    data = state_bytes(probe)
    atomic_write(Path(path), data)
    return sha256_bytes(data)


def load_probe(data: bytes) -> nn.Linear:
    """A probe from the safetensors bytes ``save_probe`` wrote: frozen, eval mode, on the CPU."""
    from safetensors.torch import load as st_load

    state = st_load(data)
    probe = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
    probe.load_state_dict(state)
    for p in probe.parameters():
        p.requires_grad_(False)
    return probe.eval()


# What a probe was fitted for and what it is: written next to its weights, so any process that attacks with
# it (a resumed run, another rank) uses the same bytes and the same recorded facts.
PROBE_FACTS = ("encoder_sha256", "dataset", "task", "label_fraction", "seed", "fit", "probe_sha256", "n_probe_labels",
               "probe_train_accuracy")
ASKED = PROBE_FACTS[:6]  # what a probe must have been fitted for (and how) to be reused; an adversarial one: "probe"


def probe_file(out, run: str, dataset: str, task: str, label_fraction: float, probe: str = "standard") -> Path:
    """Where a bench saves the probe of a run's task in its output folder ``out`` (its record: ``record_path``);
    ``probe``: the rows' probe mode (``robrep.rows.layout.probe_mode``)."""
    suffix = "" if label_fraction == 1 else f"-labels{label_fraction:g}"
    if probe != "standard":
        suffix += "-" + probe.replace(" ", "-").replace("/", "_")
    return Path(out) / "probes" / run / f"{dataset}-{task}{suffix}.safetensors"


def record_path(path) -> Path:
    return Path(path).with_suffix(".json")


def write_probe_record(path, facts: dict) -> None:
    """Record (atomically) what the probe at ``path`` was fitted for and what it is (``PROBE_FACTS``)."""
    import json

    from robrep.io import atomic_write

    atomic_write(record_path(path), json.dumps({k: facts[k] for k in (*PROBE_FACTS, "probe") if k in facts},
                                               sort_keys=True).encode())


def read_probe(path, asked: dict) -> tuple[nn.Linear, dict] | None:
    """The probe saved at ``path`` and its record, if the record says it was fitted for ``asked`` (encoder
    SHA-256, data set, task, label fraction, seed) and the file's bytes have the SHA-256 it records;
    otherwise None (the probe must be fitted)."""
    import json

    from robrep.io import sha256_bytes

    path = Path(path)
    try:
        facts = json.loads(record_path(path).read_text(encoding="utf-8"))
        data = path.read_bytes()
    except (OSError, ValueError):
        return None
    if not isinstance(facts, dict) or any(facts.get(k) != asked[k] for k in (*ASKED, "probe") if k in asked):
        return None
    if sha256_bytes(data) != facts.get("probe_sha256"):
        return None
    return load_probe(data), facts


class ProbedEncoder(nn.Module):
    """x -> W f(x) + b, f(x) the encoder's representation: the composition that is attacked.
    Returns (N, n_classes) logits. ``encoder``: a ``robrep.encoders.Encoder``, or any module it wraps."""

    def __init__(self, encoder: nn.Module, probe: nn.Linear):
        super().__init__()
        self.encoder, self.probe = freeze(as_encoder(encoder)), probe.eval()

    @property
    def bounds(self) -> tuple[float, float]:
        """The inputs' bounds, the encoder's (``robrep.encoders.Encoder.bounds``)."""
        return self.encoder.bounds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.encoder(x))

    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        from robrep.attacks.base import predict

        return predict(self.eval(), x, batch_size)

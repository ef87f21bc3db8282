"""Certified lower bounds on robust accuracy: interval bound propagation (IBP) and CROWN (a backward linear
relaxation, Zhang et al. 2018) of probe∘encoder over an L-inf or L2 ball intersected with the input bounds.

A point is certified when the lower bound of every margin ``logit_y - logit_j`` (j != y) over the whole ball is
positive: no perturbation in the ball can change the probe's decision, whatever any attack does. The certified
share is a lower bound on robust accuracy, as an attack's robust share is an upper bound.

The network is read as a chain of layers (``chain``): every affine layer (Linear, Conv2d, average pooling, batch
norm in eval mode, flatten, the encoder's preprocessing) becomes one dense matrix, found by applying the layer
to the basis of its input space, and every elementwise activation must be one the certifier relaxes
(``robrep.certify.relax``: ReLU, LeakyReLU, Softplus, ELU with alpha <= 1, Sigmoid, Tanh). The representation is
the encoder's ``mu`` (the first half of a robrep encoder's head); the probe and the margins are folded into the
last matrix. A network with any other layer (a residual block, a max pooling) is refused with
``NotCertifiable``, never given a number.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from robrep.rows.layout import CERTIFY_METHODS
from robrep.certify.patches import crown_patches, largest_window, patchable
from robrep.certify.relax import Activation, activation_of, relax

AFFINE = (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.Flatten,
          nn.Unflatten, nn.Identity)
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.Softplus, nn.ELU, nn.Sigmoid, nn.Tanh)  # robrep.certify.relax
METHODS = CERTIFY_METHODS  # (their names live with the row layout: torch-free, for the command line)


class NotCertifiable(ValueError):
    """The network has a layer the certifier has no sound bound for; the message names it."""


@dataclass
class Affine:
    weight: torch.Tensor  # (out, in), float64
    bias: torch.Tensor  # (out,)
    conv: nn.Conv2d | None = None  # the convolution it is, where it is one alone (not folded with another map)
    in_shape: tuple[int, ...] = ()  # its input's (C, H, W), with ``conv``

    def back(self, a: torch.Tensor) -> torch.Tensor:
        """``a @ weight`` for a (..., out): a convolution's transpose where the map is one (the dense product's
        numbers, at the cost of the convolution, not of its dense matrix), else the product."""
        if self.conv is None:
            return a @ self.weight
        c = self.conv
        rows = a.reshape(-1, *self._out_shape())
        back = nn.functional.conv_transpose2d(rows, c.weight, stride=c.stride, padding=c.padding,
                                              dilation=c.dilation, groups=c.groups,
                                              output_padding=self._output_padding())
        return back.reshape(*a.shape[:-1], -1)

    def _out_shape(self) -> tuple[int, ...]:
        return self.conv.out_channels, *self._spatial_out()

    def _spatial_out(self) -> tuple[int, int]:
        c = self.conv
        return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in
                     zip(self.in_shape[1:], c.padding, c.dilation, c.kernel_size, c.stride))

    def _output_padding(self) -> tuple[int, int]:
        """What the transpose adds at the far edge to give back the input's size (rows a stride skipped)."""
        c = self.conv
        return tuple(n - ((o - 1) * s - 2 * p + d * (k - 1) + 1) for n, o, p, d, k, s in
                     zip(self.in_shape[1:], self._spatial_out(), c.padding, c.dilation, c.kernel_size, c.stride))


def _dense(layer: nn.Module, shape: tuple[int, ...]) -> tuple[Affine, tuple[int, ...]]:
    """The affine map ``layer`` computes on inputs of ``shape`` (without the batch), as a dense matrix."""
    n = int(torch.tensor(shape).prod())
    with torch.no_grad():
        zero = layer(torch.zeros(1, *shape, dtype=torch.float64))
        basis = layer(torch.eye(n, dtype=torch.float64).reshape(n, *shape))
    out_shape = tuple(zero.shape[1:])
    weight = (basis - zero).reshape(n, -1).T
    return Affine(weight.contiguous(), zero.reshape(-1)), out_shape


def _layers_of(encoder: nn.Module) -> list[nn.Module]:
    """The encoder as a list of layers: a robrep learner's encoder net (body, then the mu half of its head), a
    plain ``nn.Sequential``; anything else is refused."""
    from robrep.encoders import Encoder

    layers: list[nn.Module] = []
    if isinstance(encoder, Encoder):
        if encoder._mean is not None:
            mean, std = encoder._mean.double(), encoder._std.double()
            layers.append(_Preprocess(mean, std))
        encoder = encoder.module
    net = getattr(encoder, "encoder", None)
    if isinstance(getattr(net, "body", None), nn.Sequential) and isinstance(getattr(net, "head", None), nn.Linear):
        half = net.head.out_features // 2
        head = nn.Linear(net.head.in_features, half).double()
        with torch.no_grad():
            head.weight.copy_(net.head.weight[:half])
            head.bias.copy_(net.head.bias[:half])
        return layers + list(net.body) + [head]
    if isinstance(encoder, nn.Sequential):
        return layers + list(encoder)
    raise NotCertifiable(f"{type(encoder).__name__} is neither a robrep learner's encoder net nor an nn.Sequential: "
                         "the certifier cannot read it as a chain of layers")


class _Preprocess(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x):
        return (x - self.mean) / self.std


def chain(model: nn.Module, shape: tuple[int, ...], with_probe: bool = True) -> list[Affine | Activation]:
    """probe∘encoder (a ``robrep.probes.ProbedEncoder``; without the probe: its encoder's mu) as alternating dense
    affine maps and activations, the consecutive affine maps multiplied together. ``shape``: one input's
    (C, H, W)."""
    layers = _layers_of(model.encoder) + ([model.probe] if with_probe else [])
    out: list[Affine | Activation] = []
    for layer in layers:
        layer = copy.deepcopy(layer).double().eval()  # the model itself stays as it is
        act = activation_of(layer)
        if act is not None:
            out.append(act)
            continue
        if not isinstance(layer, (*AFFINE, _Preprocess)):
            raise NotCertifiable(f"no sound bound for layer {type(layer).__name__}"
                                 + (" with these settings (ELU: alpha <= 1; Softplus: its default threshold)"
                                    if isinstance(layer, ACTIVATIONS) else "")
                                 + f": the certifier knows {', '.join(t.__name__ for t in AFFINE + ACTIVATIONS)}")
        in_shape = shape
        dense, shape = _dense(layer, shape)
        if out and isinstance(out[-1], Affine):  # fold consecutive affine maps into one
            prev = out.pop()
            dense = Affine(dense.weight @ prev.weight, dense.weight @ prev.bias + dense.bias)
        elif isinstance(layer, nn.Conv2d) and layer.padding_mode == "zeros" and isinstance(layer.padding, tuple):
            dense = Affine(dense.weight, dense.bias, conv=_plain_conv(layer), in_shape=in_shape)
        out.append(dense)
    return out


def _plain_conv(layer: nn.Conv2d) -> nn.Conv2d:
    """``layer`` as a plain float64 ``nn.Conv2d`` (its weights and settings; robrep's fast convolutions subclass
    it)."""
    conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                     layer.dilation, layer.groups, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(layer.weight)
    return conv.requires_grad_(False)


def margins(last: Affine, y: torch.Tensor) -> Affine:
    """The last affine map turned into every margin logit_y - logit_j per point: weight (N, K, in) with K the
    classes (the row j = y is 0: no margin against itself)."""
    w, b = last.weight, last.bias
    return Affine(w[y][:, None, :] - w[None, :, :], b[y][:, None] - b[None, :])


def _concretize(a: torch.Tensor, c: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, x0: torch.Tensor,
                eps: float, norm: str) -> torch.Tensor:
    """The lower bound of a x + c over the input domain: the box [lo, hi] (L-inf ball and input bounds
    together) or, under L2, the ball around x0 (its intersection with the bounds only helps; ignoring it is
    sound). ``a``: (N, K, D), per point its rows."""
    if norm == "linf":
        return (a.clamp(min=0) @ lo[:, :, None]).squeeze(-1) + (a.clamp(max=0) @ hi[:, :, None]).squeeze(-1) + c
    return (a @ x0[:, :, None]).squeeze(-1) - eps * a.norm(dim=-1) + c


def _backward(ops, a: torch.Tensor, c: torch.Tensor, bounds: list, alphas: dict | None = None,
              betas: dict | None = None, seen: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Carry the linear function a z_k + c of the last affine map's output back to the input through ``ops``
    (the chain before it), relaxing each activation by the bounds of its input (CROWN), for a lower bound.
    a: (N, K, width). ``alphas`` (alpha-CROWN): per activation index, the lower relaxation's slopes (N, K, width)
    in [slope, 1] for its unstable units, in place of CROWN's choice. ``betas`` (beta-CROWN, Wang et al. 2021):
    per activation index, beta * s (N, K, width) for units split to s z >= 0 (s = +1 active, -1 inactive; 0
    elsewhere), beta >= 0: the term -beta s z added to the function is <= 0 on the split domain, so the bound
    stays a lower bound there and beta can tighten it. ``seen``: filled with each activation's output
    coefficients (before relaxing), for choosing what to split."""
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        if isinstance(op, Affine):
            c = c + a @ op.bias
            a = op.back(a)
        else:
            lo, hi = bounds[i]
            if seen is not None:
                seen[i] = a
            up_slope, up_bias, low_slope, low_bias = relax(lo, hi, op)
            positive, negative = a.clamp(min=0), a.clamp(max=0)
            low = low_slope[:, None, :]
            if alphas is not None and i in alphas:
                unstable = ((lo < 0) & (hi > 0))[:, None, :]
                low = torch.where(unstable, alphas[i], low)  # the caller keeps them within [slope, 1]
            # a lower bound takes the lower relaxation where a > 0 and the upper one where a < 0
            c = c + (negative * up_bias[:, None, :]).sum(-1) + (positive * low_bias[:, None, :]).sum(-1)
            a = positive * low + negative * up_slope[:, None, :]
            if betas is not None and i in betas:
                a = a - betas[i]
    return a, c


# alpha-CROWN's optimisation of the lower relaxations' slopes (Xu et al., Fast and Complete, ICLR 2021): Adam
# steps on the bound itself; every step's bound is sound, the best one per entry is kept
ALPHA_STEPS, ALPHA_LR = 20, 0.1


# elements of the largest tensor one alpha-CROWN pass holds (points x rows x width): the points are optimised in
# chunks of this size (each point's slopes are its own, so the chunks give what one pass would)
ALPHA_ELEMENTS = 4_000_000


def _sliced(bounds: list, part: slice) -> list:
    """Per-point activation bounds (``_activation_bounds``) of the points ``part``."""
    return [None if b is None else (b[0][part], b[1][part]) for b in bounds]


def _optimised(ops, a: torch.Tensor, c: torch.Tensor, bounds: list, dom: "_Domain") -> torch.Tensor:
    """The lower bound of a z + c over the domain, with alpha-CROWN's slopes (at least as tight as CROWN's,
    which is its starting point); in chunks of points (``ALPHA_ELEMENTS``)."""
    widest = max([a.shape[-1], dom.x0.shape[1]] + [op.weight.shape[0] for op in ops if isinstance(op, Affine)])
    step = max(1, ALPHA_ELEMENTS // (a.shape[1] * widest))
    if len(a) <= step:
        return _optimised_chunk(ops, a, c, bounds, dom)
    parts = []
    for i in range(0, len(a), step):
        part = slice(i, i + step)
        parts.append(_optimised_chunk(ops, a[part], c[part], _sliced(bounds, part), dom.part(part)))
    return torch.cat(parts)


def _optimised_chunk(ops, a: torch.Tensor, c: torch.Tensor, bounds: list, dom: "_Domain") -> torch.Tensor:
    with torch.no_grad():
        best = dom.lower(*_backward(ops, a, c, bounds))
    alphas = {}
    for i, op in enumerate(ops):
        if isinstance(op, Activation) and op.piecewise_linear:  # the others keep CROWN's lines
            lo, hi = bounds[i]
            if ((lo < 0) & (hi > 0)).any():
                alphas[i] = relax(lo, hi, op)[2][:, None, :].expand(-1, a.shape[1], -1).clone()
    if not alphas:
        return best
    with torch.enable_grad():
        for t in alphas.values():
            t.requires_grad_(True)
        opt = torch.optim.Adam(list(alphas.values()), lr=ALPHA_LR)
        for _ in range(ALPHA_STEPS):
            value = dom.lower(*_backward(ops, a, c, bounds, alphas))
            best = torch.maximum(best, value.detach())
            opt.zero_grad()
            (-value.sum()).backward()
            opt.step()
            with torch.no_grad():  # projected: back into [slope, 1], where every relaxation is sound
                for i, t in alphas.items():
                    t.clamp_(ops[i].slope, 1.0)
        with torch.no_grad():
            best = torch.maximum(best, dom.lower(*_backward(ops, a, c, bounds, alphas)))
    return best


def _check(method: str, norm: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be linf or l2, got {norm!r}")


@dataclass
class _Domain:
    """The input domain: the ball of radius ``eps`` around x0 (flattened, float64) within the input bounds."""
    x0: torch.Tensor
    lo: torch.Tensor  # the ball's box within the bounds
    hi: torch.Tensor
    eps: float
    norm: str

    @classmethod
    def of(cls, x: torch.Tensor, eps: float, norm: str, bounds: tuple[float, float]) -> "_Domain":
        x0 = x.flatten(1).double()
        return cls(x0, (x0 - eps).clamp(min=bounds[0]), (x0 + eps).clamp(max=bounds[1]), eps, norm)

    def lower(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return _concretize(a, c, self.lo, self.hi, self.x0, self.eps, self.norm)

    def part(self, points: slice) -> "_Domain":
        return _Domain(self.x0[points], self.lo[points], self.hi[points], self.eps, self.norm)


def _tightened(ops, op: Affine, lo: torch.Tensor, hi: torch.Tensor, layer_bounds: list, dom: "_Domain"):
    """alpha-CROWN's bounds of op's output (the input of an activation) where CROWN's straddle zero: only those
    units' bounds shape the relaxation (a stable unit stays stable). Per point its unstable units, padded to the
    batch's largest count by repeating one of them; both sides at once (rows w and -w)."""
    unstable = (lo < 0) & (hi > 0)
    k = int(unstable.sum(1).max())
    if k == 0:
        return lo, hi
    # per point the indices of its unstable units first (a stable sort keeps their order), then the rest
    order = torch.argsort((~unstable).to(torch.int8), dim=1, stable=True)[:, :k]
    real = torch.gather(unstable, 1, order)
    order = torch.where(real, order, order[:, :1])  # padding: the point's first unstable unit again
    w, b = op.weight[order], op.bias[order]  # (N, k, in), (N, k)
    low = _optimised(ops, torch.cat([w, -w], 1), torch.cat([b, -b], 1), layer_bounds, dom)
    lo = lo.scatter(1, order, torch.maximum(torch.gather(lo, 1, order), low[:, :k]))
    hi = hi.scatter(1, order, torch.minimum(torch.gather(hi, 1, order), -low[:, k:]))
    return lo, hi


def _activation_bounds(ops, dom: _Domain, method: str) -> tuple[list, torch.Tensor, torch.Tensor]:
    """The bounds of every activation's input (IBP, or CROWN layer by layer), and of the last affine map's input."""
    layer_bounds: list = [None] * len(ops)
    lo, hi = dom.lo, dom.hi
    for i, op in enumerate(ops[:-1]):
        if isinstance(op, Activation):
            layer_bounds[i] = (lo, hi)
            lo, hi = op(lo), op(hi)  # every activation here is nondecreasing
        elif method == "ibp" or i == 0:  # interval arithmetic: exact for the first affine map over a box
            centre, radius = (lo + hi) / 2, (hi - lo) / 2
            mid, spread = centre @ op.weight.T + op.bias, radius @ op.weight.abs().T
            lo, hi = mid - spread, mid + spread
            if method != "ibp" and i == 0 and dom.norm == "l2":  # the ball is tighter than its bounding box
                lo = torch.max(lo, dom.x0 @ op.weight.T + op.bias - dom.eps * op.weight.norm(dim=1))
                hi = torch.min(hi, dom.x0 @ op.weight.T + op.bias + dom.eps * op.weight.norm(dim=1))
        else:
            lo, hi = _crown_bounds(ops[:i], op, layer_bounds, dom)
            if method == "alpha-crown":
                lo, hi = _tightened(ops[:i], op, lo, hi, layer_bounds, dom)
    return layer_bounds, lo, hi


# elements of the largest tensor one CROWN pass over an affine map's outputs holds (points x its outputs x the
# widest layer before it): its points are bounded in chunks of this size (each point's bounds are its own)
CROWN_ELEMENTS = 40_000_000


def _crown_bounds(ops, op: Affine, layer_bounds: list, dom: "_Domain") -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN's lower and upper bounds of every output of ``op`` (after ``ops``), in chunks of points: a
    convolution after convolutions in patches (``robrep.certify.patches``, the same numbers), else row by row."""
    n = len(dom.x0)
    patched = patchable(ops, op)
    if patched:
        step = max(1, CROWN_ELEMENTS // (2 * op.weight.shape[0] * largest_window(ops, op)))
    else:
        widest = max([dom.x0.shape[1]] + [o.weight.shape[0] for o in ops if isinstance(o, Affine)])
        step = max(1, CROWN_ELEMENTS // (op.weight.shape[0] * widest))
    los, his = [], []
    for s in range(0, n, step):
        part = slice(s, s + step)
        m, sub, bounds = len(range(n)[part]), dom.part(part), _sliced(layer_bounds, part)
        if patched:
            lo, hi = crown_patches(ops, op, bounds, sub)
        else:
            eye = op.weight.expand(m, *op.weight.shape)
            lo = sub.lower(*_backward(ops, eye, op.bias.expand(m, -1), bounds))
            hi = -sub.lower(*_backward(ops, -eye, -op.bias.expand(m, -1), bounds))
        los.append(lo)
        his.append(hi)
    return torch.cat(los), torch.cat(his)


def _lower(ops, spec: Affine, dom: _Domain, method: str, found: tuple | None = None) -> torch.Tensor:
    """Per point, lower bounds over the domain of ``spec`` (weight (N, K, width), bias (N, K)), an affine map that
    takes the place of the chain's last one (the margins, or the representation's coordinates). ``found``: what
    ``_activation_bounds`` gave for these ops, domain and method, where the caller has it already."""
    layer_bounds, lo, hi = found if found is not None else _activation_bounds(ops, dom, method)
    if method == "ibp":
        centre, radius = (lo + hi) / 2, (hi - lo) / 2
        return ((spec.weight @ centre[:, :, None]).squeeze(-1) + spec.bias
                - (spec.weight.abs() @ radius[:, :, None]).squeeze(-1))
    if method == "alpha-crown":
        return _optimised(ops[:-1], spec.weight, spec.bias, layer_bounds, dom)
    return dom.lower(*_backward(ops[:-1], spec.weight, spec.bias, layer_bounds))


def lower_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
                  method: str = "crown", bounds: tuple[float, float] | None = None, ops: list | None = None
                  ) -> torch.Tensor:
    """Per point and class j, a lower bound of logit_y - logit_j over the ball of radius ``eps`` around x (and
    the input bounds), (N, K); +inf at j = y. ``method``: ``ibp``, ``crown`` or ``alpha-crown``. ``ops``: the
    model's ``chain``, where the caller has built it already (it is the same for every batch and radius)."""
    _check(method, norm)
    ops = ops if ops is not None else chain(model, tuple(x.shape[1:]))
    dom = _Domain.of(x, eps, norm, bounds if bounds is not None else model.bounds)
    return _lower(ops, margins(ops[-1], y), dom, method).scatter(1, y[:, None], float("inf"))


def representation_bounds(model: nn.Module, x: torch.Tensor, eps: float, norm: str = "linf",
                          method: str = "crown") -> tuple[torch.Tensor, torch.Tensor]:
    """Per point and coordinate of the representation (the encoder's mu; ``model``: a ProbedEncoder, whose
    probe is not used), lower and upper bounds over the ball: (N, d) each."""
    _check(method, norm)
    ops = chain(model, tuple(x.shape[1:]), with_probe=False)
    dom = _Domain.of(x, eps, norm, model.bounds)
    last, n = ops[-1], len(x)
    up = Affine(last.weight.expand(n, *last.weight.shape), last.bias.expand(n, -1))
    down = Affine(-up.weight, -up.bias)
    found = _activation_bounds(ops, dom, method)  # the same for both sides
    return _lower(ops, up, dom, method, found), -_lower(ops, down, dom, method, found)


def shift_upper_bound(model: nn.Module, x: torch.Tensor, eps: float, norm: str = "linf",
                      method: str = "crown") -> torch.Tensor:
    """Per point, an upper bound on max ||mu(x + d) - mu(x)||_2 over the ball: the task-free quantity the Smooth
    Encoder controls (from ``representation_bounds``)."""
    lo, hi = representation_bounds(model, x, eps, norm, method)
    with torch.no_grad():
        mu = model.encoder(x).double()
    return torch.maximum(hi - mu, mu - lo).clamp(min=0).norm(dim=1)


def shift_attacked(model: nn.Module, x: torch.Tensor, eps: float, norm: str = "linf", steps: int = 100,
                   restarts: int = 5, seed: int = 0) -> torch.Tensor:
    """Per point, the largest ||mu(x + d) - mu(x)||_2 that PGD finds in the ball (``robrep.ascent``, ``restarts``
    random starts of ``steps`` steps): a lower bound on the largest shift, beside ``shift_upper_bound``."""
    from robrep.ascent import ascent

    encoder = model.encoder
    with torch.no_grad():
        mu = encoder(x)
    gen = torch.Generator().manual_seed(seed)
    best = torch.zeros(len(x), dtype=torch.float64)

    def shift(v):
        return (encoder(v) - mu).norm(dim=1)

    for _ in range(restarts):
        x_b = ascent(shift, x, eps, steps, model.bounds, norm=norm, generator=gen)
        with torch.no_grad():
            best = torch.maximum(best, shift(x_b).double().cpu())
    return best


def certified(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
              method: str = "crown", batch_size: int = 100, ops: list | None = None) -> torch.Tensor:
    """Per point: certified robust at radius ``eps`` (every margin's lower bound positive; a point the probe
    misclassifies unperturbed is never certified; at radius 0, exactly the points it classifies right). (N,)
    bool. ``ops``: the model's ``chain``, where the caller has it (see ``lower_margins``)."""
    model = model.eval()
    with torch.no_grad():
        right = model(x).argmax(1) == y
    ops = ops if ops is not None else chain(model, tuple(x.shape[1:]))  # refuses what it cannot bound, always
    if eps == 0 or not right.any():
        return right
    out = []
    for i in range(0, len(x), batch_size):
        low = lower_margins(model, x[i:i + batch_size], y[i:i + batch_size], eps, norm, method, ops=ops)
        out.append((low > 0).all(1))
    return torch.cat(out) & right

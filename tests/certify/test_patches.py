"""CROWN in patches (``robrep.certify.patches``) gives the bounds of the dense rows: on convolutions with strides,
paddings, even and odd kernels, input sizes that leave an edge, several input channels, three convolutions deep,
smooth activations, L-inf and L2 balls; and a network where it does not apply is bounded row by row."""
import pytest
import torch
from torch import nn

from robrep.certify import bounds
from robrep.certify.patches import patchable
from robrep.encoders import Encoder
from robrep.probes import ProbedEncoder

NETS = {
    "stride2-pad1": ((1, 12, 12), lambda: [nn.Conv2d(1, 3, 4, 2, 1), nn.ReLU(), nn.Conv2d(3, 5, 4, 2, 1), nn.ReLU()]),
    "odd-edges": ((2, 11, 9), lambda: [nn.Conv2d(2, 3, 3, 2, 0), nn.ReLU(), nn.Conv2d(3, 4, 2, 1, 2), nn.ReLU()]),
    "three-deep": ((3, 13, 13), lambda: [nn.Conv2d(3, 4, 3, 1, 1), nn.LeakyReLU(0.1), nn.Conv2d(4, 4, 3, 2, 1),
                                         nn.Softplus(), nn.Conv2d(4, 3, 5, 3, 2), nn.Tanh()]),
}


def _model(name: str, seed: int = 0):
    torch.manual_seed(seed)
    shape, layers = NETS[name]
    body = layers()
    with torch.no_grad():
        sizes = nn.Sequential(*body)(torch.zeros(1, *shape)).numel()
    return ProbedEncoder(Encoder(nn.Sequential(*body, nn.Flatten(), nn.Linear(sizes, 6))), nn.Linear(6, 4)), shape


@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("norm,eps", [("linf", 0.03), ("linf", 0.2), ("l2", 0.4)])
def test_every_convolution_is_bounded_in_patches_as_by_its_dense_rows(name, norm, eps, monkeypatch):
    model, shape = _model(name)
    x = torch.rand(5, *shape)
    ops = bounds.chain(model, shape)
    dom = bounds._Domain.of(x, eps, norm, (0.0, 1.0))
    layer_bounds, _, _ = bounds._activation_bounds(ops, dom, "crown")
    convs = [i for i, op in enumerate(ops) if isinstance(op, bounds.Affine) and i > 0 and patchable(ops[:i], op)]
    assert len(convs) == len([op for op in ops if isinstance(op, bounds.Affine) and op.conv is not None]) - 1
    for i in convs:
        patched = bounds._crown_bounds(ops[:i], ops[i], layer_bounds, dom)
        monkeypatch.setattr(bounds, "patchable", lambda *_: False)
        dense = bounds._crown_bounds(ops[:i], ops[i], layer_bounds, dom)
        monkeypatch.undo()
        for p, d in zip(patched, dense):
            assert torch.allclose(p, d, atol=1e-9, rtol=1e-9)
        assert (patched[0] <= patched[1] + 1e-12).all()
    # the whole certificate too, and in chunks of a point each
    y = model(x).argmax(1)
    whole = bounds.lower_margins(model, x, y, eps, norm, "crown")
    monkeypatch.setattr(bounds, "CROWN_ELEMENTS", 1)
    assert torch.allclose(bounds.lower_margins(model, x, y, eps, norm, "crown"), whole, atol=1e-9)


def test_a_network_with_a_dense_map_between_its_convolutions_is_bounded_row_by_row():
    torch.manual_seed(1)
    body = [nn.Conv2d(1, 2, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 32), nn.ReLU(),
            nn.Unflatten(1, (2, 4, 4)), nn.Conv2d(2, 3, 3, 1, 1), nn.ReLU()]
    model = ProbedEncoder(Encoder(nn.Sequential(*body, nn.Flatten(), nn.Linear(48, 5))), nn.Linear(5, 3))
    ops = bounds.chain(model, (1, 8, 8))
    assert not any(patchable(ops[:i], op) for i, op in enumerate(ops) if isinstance(op, bounds.Affine) and i > 0)
    x = torch.rand(4, 1, 8, 8)
    y = model(x).argmax(1)
    low = bounds.lower_margins(model, x, y, 0.05, "linf", "crown")
    signs = torch.randint(0, 2, (64, 1, 1, 8, 8)) * 2 - 1  # corners of the ball: no bound above a margin there
    with torch.no_grad():
        logits = model((x[None] + 0.05 * signs).clamp(0, 1).flatten(0, 1)).view(64, len(x), -1)
    margins = logits.gather(2, y[None, :, None].expand(64, -1, 1)) - logits
    finite = torch.isfinite(low)
    assert (low[finite] <= margins.amin(0)[finite] + 1e-9).all()

"""InputGradConv2d: the same forward and training as nn.Conv2d, and the same input gradient (to float32
rounding) when its weights are frozen, for the shapes robrep's ConvNets and others use."""
import pytest
import torch
from torch import nn

from robrep.fastconv import FOLD_MAX, InputGradConv2d
from robrep.nets import ConvEncoder


@pytest.mark.parametrize("cin,k,stride,padding,size", [(1, 4, 2, 1, 28), (3, 4, 2, 1, 64), (3, 3, 1, 1, 15),
                                                       (2, 5, 3, 2, 17), (1, 3, 2, 0, 28)])
def test_the_input_gradient_equals_nn_conv2d_when_frozen(cin, k, stride, padding, size):
    gen = torch.Generator().manual_seed(cin * 100 + k)
    ref = nn.Conv2d(cin, 8, k, stride=stride, padding=padding)
    fast = InputGradConv2d(cin, 8, k, stride=stride, padding=padding)
    fast.load_state_dict(ref.state_dict())
    assert cin * k * k <= FOLD_MAX
    for m in (ref, fast):
        m.requires_grad_(False)
    x = torch.rand(6, cin, size, size, generator=gen)
    w = torch.randn_like(ref(x))
    grads = []
    for m in (ref, fast):
        xi = x.clone().requires_grad_(True)
        out = m(xi)
        grads.append(torch.autograd.grad((out * w).sum(), xi)[0])
        assert torch.equal(out, ref(x))  # the forward pass is nn.Conv2d's, bit for bit
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_with_trainable_weights_it_is_nn_conv2d():
    torch.manual_seed(0)
    ref = nn.Conv2d(1, 4, 4, stride=2, padding=1)
    fast = InputGradConv2d(1, 4, 4, stride=2, padding=1)
    fast.load_state_dict(ref.state_dict())
    x = torch.rand(3, 1, 12, 12, requires_grad=True)
    g_ref = torch.autograd.grad(ref(x).square().sum(), [x, ref.weight])
    g_fast = torch.autograd.grad(fast(x).square().sum(), [x, fast.weight])
    assert all(torch.equal(a, b) for a, b in zip(g_ref, g_fast))  # the same bits: training is unchanged


def test_the_convnet_encoder_uses_it_and_loads_plain_conv_checkpoints():
    enc = ConvEncoder((1, 28, 28), 8)
    assert any(isinstance(m, InputGradConv2d) for m in enc.modules())
    plain = {k: v.clone() for k, v in enc.state_dict().items()}
    again = ConvEncoder((1, 28, 28), 8)
    again.load_state_dict(plain)  # the same keys as nn.Conv2d: old checkpoints load
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(again(x)[0], enc(x)[0])

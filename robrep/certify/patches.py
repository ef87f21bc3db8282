"""CROWN's bounds of a convolution's outputs, carried back in patches.

An output unit of a convolution depends only on a window of its input (the kernel's receptive field), and on a
larger window of every layer before it. Carrying each unit's row back as a dense vector over a whole layer
(``robrep.certify.bounds._backward``) spends almost all its work on zeros: for the mnist5k ConvNet's second
convolution, 512 of every 6,272 entries are not zero. Here each row stays the size of its window. Through an
activation the row is multiplied by the relaxation's slopes in the window (the same lines CROWN uses); through a
convolution it becomes the transposed convolution of the window, a window as many times larger as the stride
(plus the kernel); at the input the window is bounded over the box or the ball. The numbers are those of the
dense rows (tested against them on convolutions with strides, paddings, and sizes that leave edges), at the cost
of the windows.

It applies where every affine map before (and including) the bounded one is a plain convolution
(``patchable``): the first layers of a ConvNet, which hold most of its units.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robrep.certify.relax import Activation, relax


@dataclass(frozen=True)
class Window:
    """Where each output unit's row lies in a layer: at grid position (p, q) the window of ``kernel`` entries
    starting at (p * stride - pad, q * stride - pad); entries outside the layer are zero padding."""
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    grid: tuple[int, int]

    def back(self, conv) -> "Window":
        """The window in the input of convolution ``conv`` of this window of its output."""
        return Window(tuple((k - 1) * s + kc for k, s, kc in zip(self.kernel, conv.stride, conv.kernel_size)),
                      tuple(a * b for a, b in zip(self.stride, conv.stride)),
                      tuple(p * s + pc for p, s, pc in zip(self.pad, conv.stride, conv.padding)), self.grid)

    def of(self, t: torch.Tensor) -> torch.Tensor:
        """t (M, C, H, W) -> its windows (M, P * Q, C, KH, KW), zero outside t."""
        (kh, kw), (sh, sw), (ph, pw), (p, q) = self.kernel, self.stride, self.pad, self.grid
        h, w = t.shape[-2:]
        t = F.pad(t, (pw, max(0, (q - 1) * sw - pw + kw - w), ph, max(0, (p - 1) * sh - ph + kh - h)))
        u = t.unfold(2, kh, sh).unfold(3, kw, sw)[:, :, :p, :q]  # (M, C, P, Q, KH, KW)
        return u.permute(0, 2, 3, 1, 4, 5).reshape(len(t), p * q, t.shape[1], kh, kw)


def patchable(ops, op) -> bool:
    """Whether ``op``'s outputs can be bounded in patches: it and every affine map of ``ops`` before it a plain
    convolution (no groups, no dilation), with activations between them."""
    maps = [o for o in [*ops, op] if not isinstance(o, Activation)]
    return bool(ops) and all(o.conv is not None and o.conv.groups == 1 and tuple(o.conv.dilation) == (1, 1)
                             for o in maps)


def largest_window(ops, op) -> int:
    """Entries of the largest window a row of ``op`` holds on its way back (for chunking points)."""
    window, largest = Window(op.conv.kernel_size, op.conv.stride, op.conv.padding, (1, 1)), 0
    channels = op.conv.in_channels
    for o in reversed(ops):
        if not isinstance(o, Activation):
            window, channels = window.back(o.conv), o.conv.in_channels
        largest = max(largest, channels * window.kernel[0] * window.kernel[1])
    return max(largest, op.conv.in_channels * op.conv.kernel_size[0] * op.conv.kernel_size[1])


def crown_patches(ops, op, layer_bounds: list, dom) -> tuple[torch.Tensor, torch.Tensor]:
    """CROWN's lower and upper bounds of every output of convolution ``op`` (after ``ops``, see ``patchable``)
    for the points of ``dom`` (a ``robrep.certify.bounds._Domain``): (N, its outputs) each, in the dense order."""
    conv = op.conv
    o, p, q = op._out_shape()
    window = Window(tuple(conv.kernel_size), tuple(conv.stride), tuple(conv.padding), (p, q))
    rows = torch.cat([conv.weight, -conv.weight])  # both sides at once: the lower bound of -z is -(upper of z)
    bias = op.bias.view(o, p * q)
    lower = _back(ops, rows[None, :, None], torch.cat([bias, -bias])[None], window, layer_bounds, dom)
    n = len(lower)
    return lower[:, :o].reshape(n, -1), -lower[:, o:].reshape(n, -1)


def _back(ops, a: torch.Tensor, c: torch.Tensor, window: Window, bounds: list, dom) -> torch.Tensor:
    """The lower bound over the domain of rows ``a`` (M or 1, R, P * Q, C, KH, KW: per output channel and grid
    position, its window of the last op's output) plus ``c`` (M or 1, R, P * Q), carried back through ``ops``."""
    m = len(dom.x0)
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        if isinstance(op, Activation):
            lo, hi = bounds[i]
            shape = ops[i - 1]._out_shape()
            up_slope, up_bias, low_slope, low_bias = (window.of(t.view(m, *shape))[:, None]
                                                       for t in relax(lo, hi, op))
            positive, negative = a.clamp(min=0), a.clamp(max=0)
            c = c + (negative * up_bias + positive * low_bias).sum((-3, -2, -1))
            a = positive * low_slope + negative * up_slope
        else:
            c = c + (a * window.of(op.bias.view(1, *op._out_shape()))[:, None]).sum((-3, -2, -1))
            flat = a.reshape(-1, *a.shape[-3:])
            back = F.conv_transpose2d(flat, op.conv.weight, stride=op.conv.stride)
            a = back.reshape(*a.shape[:3], *back.shape[1:])
            window = window.back(op.conv)
    shape = ops[0].in_shape
    if dom.norm == "linf":
        lo, hi = (window.of(t.view(m, *shape))[:, None] for t in (dom.lo, dom.hi))
        return c + (a.clamp(min=0) * lo + a.clamp(max=0) * hi).sum((-3, -2, -1))
    x0 = window.of(dom.x0.view(m, *shape))[:, None]
    inside = window.of(torch.ones(1, *shape, dtype=a.dtype, device=a.device))[:, None]  # the padding is no input
    return c + (a * x0).sum((-3, -2, -1)) - dom.eps * (a * inside).flatten(-3).norm(dim=-1)

"""A Conv2d whose input gradient is fast when its weights are frozen: the attacks' case.

An attack on a frozen ConvNet asks every step for the gradient with respect to the input only. For that,
``torch``'s generic convolution backward is slow on the CPU: on robrep's 28x28 ConvNet (500 points, one
thread) it took 36 ms for the first layer (one input channel) and 58 ms for the second, against 16 ms and
25 ms for their forward passes. ``InputGradConv2d`` keeps the forward pass exactly as ``nn.Conv2d`` computes
it (the same logits, bit for bit, and the same training: with trainable weights it is ``nn.Conv2d``), and
computes the input gradient itself where the layer has few input taps (``in_channels x kernel area`` at most
``FOLD_MAX``: a grayscale or RGB first layer): one matrix product with the weights and ``F.fold`` (the
transpose of the convolution's unfold), 8 ms instead of 36 there. Wider layers keep torch's backward: a
transposed convolution on channels-last tensors was faster by itself but slowed the ReLU backward around it
by more than it saved, and unfold-and-multiply was 3x slower.

Gradients agree with ``nn.Conv2d``'s to float32 rounding (``tests/learners/test_fastconv.py``);
``benchmarks/pgd_core.py`` measures the PGD step with and without it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FOLD_MAX = 64  # in_channels * kernel area up to which the input gradient is a matrix product and a fold


class _InputGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, conv: "InputGradConv2d"):
        ctx.conv, ctx.in_size = conv, x.shape[-2:]
        return F.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    @staticmethod
    def backward(ctx, g):
        conv = ctx.conv
        cout = conv.weight.shape[0]
        cols = conv.weight.reshape(cout, -1).T @ g.reshape(len(g), cout, -1)  # (N, in_channels * kernel area, L)
        return F.fold(cols, tuple(ctx.in_size), conv.kernel_size, dilation=conv.dilation, padding=conv.padding,
                      stride=conv.stride), None


class InputGradConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters, same state dict) with a fast input gradient when its weights are frozen."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frozen = not self.weight.requires_grad and (self.bias is None or not self.bias.requires_grad)
        few_taps = self.in_channels * self.kernel_size[0] * self.kernel_size[1] <= FOLD_MAX
        plain = self.groups == 1 and self.padding_mode == "zeros" and isinstance(self.padding, tuple)
        fast = x.requires_grad and frozen and few_taps and plain and x.dim() == 4 and x.device.type == "cpu"
        return _InputGrad.apply(x, self) if fast else super().forward(x)

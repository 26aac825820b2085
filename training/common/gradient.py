"""Shared pieces of the /explain gradient graphs (see DESIGN.md, "Gradient graphs for IG").

torch.onnx.export cannot export torch.autograd.grad inside forward. The route that works: trace
torch.func.grad with make_fx (symbolic shapes), export that graph with the dynamo exporter, and translate
aten.convolution_backward (only the input gradient is needed) as ConvTranspose. It rests on private torch
APIs: every task's gradient graph has a test comparing it with autograd.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class MatmulLinear(nn.Module):
    """nn.Linear as matmul + bias: F.linear's traced backward fixes the batch and sequence sizes."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(x, self.weight.t())
        return y if self.bias is None else y + self.bias


def with_matmul_linears(net: nn.Module) -> nn.Module:
    net = copy.deepcopy(net)
    for child in list(net.modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, nn.Linear):
                setattr(child, attr, MatmulLinear(sub))
    return net


def convolution_backward_translation():
    """aten.convolution_backward -> ConvTranspose for the input gradient (stride 1, one group: our convs)."""
    from onnxscript import opset18 as op

    def convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
                             output_padding, groups, output_mask):
        grad_input = op.ConvTranspose(grad_output, weight, dilations=dilation, pads=padding + padding,
                                      strides=stride, group=groups)
        # Weight and bias gradients are never asked for (output_mask is [True, False, False]); the exporter
        # wants three values, and the unused ones are pruned.
        return grad_input, grad_input, grad_input

    return convolution_backward


def export_traced(function, inputs: tuple, path, names: list[str], outputs: list[str], dynamic: tuple) -> None:
    """Trace `function` (torch.func.grad inside) with symbolic shapes and export the traced graph as one file."""
    from torch.fx.experimental.proxy_tensor import make_fx

    traced = make_fx(function, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs)
    traced.eval()  # the traced graph has no dropout left; this only quiets the exporter's warning
    torch.onnx.export(traced, inputs, path, dynamo=True, external_data=False, input_names=names,
                      output_names=outputs, dynamic_shapes=dynamic, verbose=False,
                      custom_translation_table={torch.ops.aten.convolution_backward.default:
                                                convolution_backward_translation()})

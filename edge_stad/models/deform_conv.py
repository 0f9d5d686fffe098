"""Modulated deformable 3x3 convolution (DCNv2) in plain PyTorch.

Checkpoint-compatible with the reference ``DCN`` module (``weight``, ``bias`` and a
``conv_offset_mask`` conv predicting 2*k*k offsets and k*k masks), with DCNv2's
sampling: tap ``t = i*kw + j`` reads ``(y + i*dil + dy_t, x + j*dil + dx_t)`` with
``dy_t = offset[2t]``, ``dx_t = offset[2t+1]``, bilinearly, corners outside the image
reading 0; each sample is multiplied by ``sigmoid(mask_t)`` before the convolution.
This is also the semantics of ONNX ``DeformConv`` (opset 19).
"""
import math

import torch
from torch import nn


def modulated_deform_conv2d(x, offset, mask, weight, bias=None, stride=1, padding=1, dilation=1):
    """``x (B,C,H,W)``, ``offset (B,2T,Ho,Wo)``, ``mask (B,T,Ho,Wo)`` in [0,1], ``weight (O,C,kh,kw)``."""
    b, c, h, w = x.shape
    out_ch, _, kh, kw = weight.shape
    taps = kh * kw
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    dev, dt = x.device, x.dtype
    ky = (torch.arange(kh, device=dev, dtype=dt) * dilation).repeat_interleave(kw).view(1, taps, 1, 1)
    kx = (torch.arange(kw, device=dev, dtype=dt) * dilation).repeat(kh).view(1, taps, 1, 1)
    base_y = (torch.arange(ho, device=dev, dtype=dt) * stride - padding).view(1, 1, ho, 1)
    base_x = (torch.arange(wo, device=dev, dtype=dt) * stride - padding).view(1, 1, 1, wo)
    offset = offset.reshape(b, taps, 2, ho, wo)
    py = base_y + ky + offset[:, :, 0]
    px = base_x + kx + offset[:, :, 1]
    y0, x0 = torch.floor(py), torch.floor(px)
    ly, lx = py - y0, px - x0
    flat = x.reshape(b, c, h * w)
    sampled = 0
    for cy, cx, weight_corner in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                                  (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
        inside = (cy >= 0) & (cy <= h - 1) & (cx >= 0) & (cx <= w - 1)
        index = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long().reshape(b, 1, -1).expand(b, c, -1)
        values = flat.gather(2, index).reshape(b, c, taps, ho, wo)
        sampled = sampled + values * (weight_corner * inside).unsqueeze(1)
    columns = sampled * mask.reshape(b, 1, taps, ho, wo)
    out = torch.einsum("bcthw,oct->bohw", columns, weight.reshape(out_ch, c, taps))
    if bias is not None:
        out = out + bias.view(1, out_ch, 1, 1)
    return out


if hasattr(torch, "library") and hasattr(torch.library, "custom_op"):  # torch >= 2.4
    @torch.library.custom_op("edge_stad::deform_conv2d", mutates_args=())
    def deform_conv2d_op(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor, stride: int, padding: int, dilation: int) -> torch.Tensor:
        """The same function as one opaque op, so that ONNX export can emit a single ``DeformConv``."""
        return modulated_deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation)

    @deform_conv2d_op.register_fake
    def _(x, offset, mask, weight, bias, stride, padding, dilation):
        return x.new_empty(x.shape[0], weight.shape[0], offset.shape[2], offset.shape[3])
else:
    deform_conv2d_op = None


class ModulatedDeformConv2d(nn.Module):
    """Drop-in for the reference ``DCN(in, out, 3x3, s1, p1, dil 1, deformable_groups 1)``."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, dilation=1):
        super().__init__()
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        taps = kernel_size * kernel_size
        self.conv_offset_mask = nn.Conv2d(in_channels, 3 * taps, kernel_size, stride, padding, dilation)
        # DCNv2's init: uniform weights, zero bias, zero offsets (so it starts as a conv with mask 0.5).
        bound = 1.0 / math.sqrt(in_channels * taps)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x):
        om = self.conv_offset_mask(x)
        taps = self.weight.shape[2] * self.weight.shape[3]
        exporting = deform_conv2d_op is not None and torch.onnx.is_in_onnx_export()
        deform = deform_conv2d_op if exporting else modulated_deform_conv2d
        return deform(x, om[:, :2 * taps], torch.sigmoid(om[:, 2 * taps:]), self.weight, self.bias,
                      self.stride, self.padding, self.dilation)

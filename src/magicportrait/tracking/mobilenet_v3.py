"""MobileNetV3 "minimal" backbones with TensorFlow "SAME" padding, in timm's ``features_only`` key layout
(``conv_stem``, ``bn1``, ``blocks.<stage>.<i>.*``), written here so that SMIRK's encoder loads without timm.

"minimal" means 3x3 depthwise kernels everywhere, ReLU only, no squeeze-excite; "tf" means batch-norm eps 1e-3 and
TF's SAME padding: a stride-2 convolution pads ``max((ceil(i / s) - 1) * s + k - i, 0)`` in total, the smaller half
on the top / left (for an even size, k = 3, s = 2: 0 before and 1 after); stride-1 3x3 convolutions pad 1 on each
side. Only the last feature map is computed (stride 32), as SMIRK uses only that one.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
Block = tuple[str, int, int | None, int]
"""(kind, out channels, expanded channels, stride): kind ``ds`` depthwise-separable, ``ir`` inverted residual,
``cn`` the final 1x1 convolution."""

ARCHITECTURES: dict[str, list[list[Block]]] = {
    "small": [
        [("ds", 16, None, 2)],
        [("ir", 24, 72, 2), ("ir", 24, 88, 1)],
        [("ir", 40, 96, 2), ("ir", 40, 240, 1), ("ir", 40, 240, 1)],
        [("ir", 48, 120, 1), ("ir", 48, 144, 1)],
        [("ir", 96, 288, 2), ("ir", 96, 576, 1), ("ir", 96, 576, 1)],
        [("cn", 576, None, 1)],
    ],
    "large": [
        [("ds", 16, None, 1)],
        [("ir", 24, 64, 2), ("ir", 24, 72, 1)],
        [("ir", 40, 72, 2), ("ir", 40, 120, 1), ("ir", 40, 120, 1)],
        [("ir", 80, 240, 2), ("ir", 80, 200, 1), ("ir", 80, 184, 1), ("ir", 80, 184, 1)],
        [("ir", 112, 480, 1), ("ir", 112, 672, 1)],
        [("ir", 160, 672, 2), ("ir", 160, 960, 1), ("ir", 160, 960, 1)],
        [("cn", 960, None, 1)],
    ],
}
"""timm's ``tf_mobilenetv3_small_minimal_100`` and ``tf_mobilenetv3_large_minimal_100`` block tables."""
STEM_CHANNELS = 16


class SameConv2d(nn.Conv2d):
    """A convolution without bias; strided ones pad as TensorFlow's SAME does (asymmetrically, at run time)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1) -> None:
        padding = (kernel_size - 1) // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, groups=groups,
                         bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            x = F.pad(x, [*_same_padding(x.shape[-1], self.kernel_size[1], self.stride[1]),
                          *_same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])])
        return super().forward(x)


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class DepthwiseSeparable(nn.Module):
    """dw 3x3 -> BN -> ReLU -> pw 1x1 -> BN, plus the input when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = SameConv2d(in_channels, in_channels, 3, stride, groups=in_channels)
        self.bn1 = _norm(in_channels)
        self.conv_pw = SameConv2d(in_channels, out_channels, 1)
        self.bn2 = _norm(out_channels)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv_pw(F.relu(self.bn1(self.conv_dw(x)))))
        return out + x if self.skip else out


class InvertedResidual(nn.Module):
    """pw 1x1 expand -> BN -> ReLU -> dw 3x3 -> BN -> ReLU -> pw 1x1 project -> BN, plus the input when the shape
    is kept."""

    def __init__(self, in_channels: int, out_channels: int, expanded: int, stride: int) -> None:
        super().__init__()
        self.conv_pw = SameConv2d(in_channels, expanded, 1)
        self.bn1 = _norm(expanded)
        self.conv_dw = SameConv2d(expanded, expanded, 3, stride, groups=expanded)
        self.bn2 = _norm(expanded)
        self.conv_pwl = SameConv2d(expanded, out_channels, 1)
        self.bn3 = _norm(out_channels)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv_pw(x)))
        out = self.bn3(self.conv_pwl(F.relu(self.bn2(self.conv_dw(out)))))
        return out + x if self.skip else out


class ConvBnRelu(nn.Module):
    """The final 1x1 convolution -> BN -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = SameConv2d(in_channels, out_channels, 1)
        self.bn1 = _norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv(x)))


class MobileNetV3Features(nn.Module):
    """`(B, 3, H, W)` -> the last feature map `(B, C, H/32, W/32)` of a "minimal" MobileNetV3."""

    def __init__(self, variant: Literal["small", "large"]) -> None:
        super().__init__()
        self.conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2)
        self.bn1 = _norm(STEM_CHANNELS)
        channels, stages = STEM_CHANNELS, []
        for stage in ARCHITECTURES[variant]:
            blocks = []
            for kind, out_channels, expanded, stride in stage:
                if kind == "ds":
                    blocks.append(DepthwiseSeparable(channels, out_channels, stride))
                elif kind == "ir":
                    blocks.append(InvertedResidual(channels, out_channels, expanded, stride))
                else:
                    blocks.append(ConvBnRelu(channels, out_channels))
                channels = out_channels
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(F.relu(self.bn1(self.conv_stem(x))))

"""RepDistiller's MobileNetV2 (`mobile_half`: expansion 6, width 0.5), the student of its
cross-architecture pairs. MobileNetV2 definitions differ between distillation codebases (mdistiller
issues #4 and #18: the same name, other networks); this is RepDistiller's, built so that its checkpoints
load key for key (`classifier.0` is our `fc`, renamed by `published`).

As RepDistiller's code runs it: a 3x3 stride-2 stem (32 x width channels, BatchNorm, ReLU); seven
stages of inverted residual blocks (expansion t, width c x width, n blocks, first stride s:
(1, 16, 1, 1), (t, 24, 2, 1), (t, 32, 3, 2), (t, 64, 4, 2), (t, 96, 3, 1), (t, 160, 3, 2),
(t, 320, 1, 1)), each block a 1x1 expansion (even at t = 1), a 3x3 depthwise convolution and a
linear 1x1 projection, each with BatchNorm, ReLU after the first two, and the input added when the
shapes allow; a 1x1 convolution to 1,280 channels with BatchNorm and ReLU; 2x2 average pooling
(ceil mode) and the classifier. Its intermediate features (`is_feat`) are the stem's output and
stages 2, 3, 5 and 7's; it has no pre-activation variant (`preact` gives the same features).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import reference_init

STAGES = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2), (None, 96, 3, 1),
          (None, 160, 3, 2), (None, 320, 1, 1))  # (expansion: None = the network's, width, blocks, stride)
FEATURE_STAGES = (1, 2, 4, 6)  # the stages after which RepDistiller reads a feature


def _conv_bn(inp: int, out: int, kernel: int, stride: int, groups: int = 1, relu: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(inp, out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(out)]
    return layers + [nn.ReLU(inplace=True)] if relu else layers


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expansion: int):
        super().__init__()
        hidden = inp * expansion
        self.residual = stride == 1 and inp == out
        self.conv = nn.Sequential(*_conv_bn(inp, hidden, 1, 1), *_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                                  *_conv_bn(hidden, out, 1, 1, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int = 3, expansion: int = 6, width: float = 0.5):
        super().__init__()
        channels = int(32 * width)
        self.conv1 = nn.Sequential(*_conv_bn(in_channels, channels, 3, 2))
        blocks = []
        for t, c, n, s in STAGES:
            out = int(c * width)
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, expansion if t is None else t))
                channels = out
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = int(1280 * width) if width > 1.0 else 1280
        self.conv2 = nn.Sequential(*_conv_bn(channels, self.feature_dim, 1, 1))
        self.fc = nn.Linear(self.feature_dim, num_classes)
        reference_init(self)

    def forward_stages(self, x: torch.Tensor, preact: bool = False):
        """`[stem, stages 2, 3, 5, 7, pooled], logits`, as RepDistiller's `is_feat` (no pre-activation)."""
        out = self.conv1(x)
        feats = [out]
        for i, stage in enumerate(self.blocks):
            out = stage(out)
            if i in FEATURE_STAGES:
                feats.append(out)
        pooled = torch.flatten(F.avg_pool2d(self.conv2(out), 2, ceil_mode=True), 1)
        return feats + [pooled], self.fc(pooled)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))

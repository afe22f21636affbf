"""The VGG family of RepDistiller's CIFAR benchmark (vgg8, 11, 13, 16, 19, each with BatchNorm and no
fully connected layers but the classifier), built so that RepDistiller's checkpoints load key for key
(`block<i>.<j>` and `fc`, which RepDistiller calls `classifier`: `published` renames it).

As RepDistiller's code runs it: each block is 3x3 convolutions (with bias) each followed by BatchNorm
and ReLU, except that a block ends at its last BatchNorm, so that its pre-activation can be read;
2x2 max-pooling follows blocks 0, 1 and 2 (after block 3 only for 64-pixel inputs), then global
average pooling of block 4's rectified output feeds the classifier.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import reference_init

# convolution widths per block (RepDistiller's configurations S, A, B, D and E)
LAYOUTS = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def _block(widths: tuple[int, ...], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, kernel_size=3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])  # the block's output is its last BatchNorm's: the pre-activation


class VGG(nn.Module):
    def __init__(self, layout: tuple[tuple[int, ...], ...], num_classes: int, in_channels: int = 3):
        super().__init__()
        widths = [in_channels] + [block[-1] for block in layout]
        for i, block in enumerate(layout):
            setattr(self, f"block{i}", _block(block, widths[i]))
        self.feature_dim = layout[-1][-1]
        self.fc = nn.Linear(self.feature_dim, num_classes)
        reference_init(self)

    def forward_stages(self, x: torch.Tensor, preact: bool = False):
        """`[block 0, blocks 1-4 (post- or pre-activation), pooled], logits`, as RepDistiller's `is_feat`."""
        size = x.shape[2]
        out = F.relu(self.block0(x))
        feats = [out]
        for i in range(1, 5):
            pool = i <= 3 or size == 64  # the pool before block i: after blocks 0-2, and 3 at 64 pixels
            pre = getattr(self, f"block{i}")(F.max_pool2d(out, 2, 2) if pool else out)
            out = F.relu(pre)
            feats.append(pre if preact else out)
        pooled = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)
        return feats + [pooled], self.fc(pooled)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))

"""RepDistiller's ShuffleNets, students of its cross-architecture pairs: ShuffleV1 (groups 3, stages
of 240, 480 and 960 channels with 4, 8 and 4 blocks) and ShuffleV2 (size 1: 116, 232 and 464 channels
with 3, 7 and 3 blocks after each stage's down-sampling block, then 1,024). Built so that RepDistiller's
checkpoints load key for key (`linear` is our `fc`, renamed by `published`); PyTorch's default
initialisation, as RepDistiller's.

As RepDistiller's code runs them, both start with a 1x1 convolution to 24 channels (BatchNorm, ReLU,
no pooling) and end with 4x4 average pooling; their `is_feat` features are the stem's output and each
stage's (post-activation, or the last block's pre-activation), then the pooled feature.
- V1 block: grouped 1x1 (one group where the input has the stem's 24 channels), channel shuffle,
  3x3 depthwise (stride 2 in a stage's first block), grouped 1x1, each with BatchNorm, ReLU after the
  first; the input is added, or in a stride-2 block its 3x3 average pool concatenated, before the ReLU.
- V2 block: the channels split in halves; the second goes through 1x1, 3x3 depthwise and 1x1 with
  BatchNorm (ReLU after the first and the last), is concatenated to the first, and the whole is
  shuffled; a stage's down-sampling block runs both halves' branches on the whole input at stride 2.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _conv(inp: int, out: int, kernel: int = 1, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, kernel, stride, kernel // 2, groups=groups, bias=False)


class V1Block(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, groups: int):
        super().__init__()
        mid, self.stride = out // 4, stride
        self.groups = 1 if inp == 24 else groups
        self.conv1, self.bn1 = _conv(inp, mid, groups=self.groups), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = _conv(mid, mid, 3, stride, groups=mid), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = _conv(mid, out, groups=groups), nn.BatchNorm2d(out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(output, pre-activation)`."""
        out = shuffle(F.relu(self.bn1(self.conv1(x))), self.groups)
        out = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(out)))))
        pre = torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1) if self.stride == 2 else out + x
        return F.relu(pre), pre


class V2Block(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1, self.bn1 = _conv(half, half), nn.BatchNorm2d(half)
        self.conv2, self.bn2 = _conv(half, half, 3, groups=half), nn.BatchNorm2d(half)
        self.conv3, self.bn3 = _conv(half, half), nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(output, pre-activation)`; the pre-activation is not shuffled, as RepDistiller's."""
        kept, x2 = x[:, :x.shape[1] // 2], x[:, x.shape[1] // 2:]
        branch = self.bn3(self.conv3(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x2)))))))
        return shuffle(torch.cat([kept, F.relu(branch)], 1), 2), torch.cat([kept, branch], 1)


class V2Down(nn.Module):
    def __init__(self, inp: int, out: int):
        super().__init__()
        mid = out // 2
        self.conv1, self.bn1 = _conv(inp, inp, 3, 2, groups=inp), nn.BatchNorm2d(inp)
        self.conv2, self.bn2 = _conv(inp, mid), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = _conv(inp, mid), nn.BatchNorm2d(mid)
        self.conv4, self.bn4 = _conv(mid, mid, 3, 2, groups=mid), nn.BatchNorm2d(mid)
        self.conv5, self.bn5 = _conv(mid, mid), nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        out = shuffle(torch.cat([left, F.relu(self.bn5(self.conv5(right)))], 1), 2)
        return out, out


class ShuffleNet(nn.Module):
    """V1 (`groups` set) or V2: `widths` per stage (V2: and the last 1x1's), `blocks` per stage."""

    def __init__(self, widths: tuple[int, ...], blocks: tuple[int, ...], num_classes: int, in_channels: int = 3,
                 groups: int | None = None):
        super().__init__()
        self.conv1, self.bn1 = _conv(in_channels, 24), nn.BatchNorm2d(24)
        inp, self.v2 = 24, groups is None
        for i, (width, n) in enumerate(zip(widths, blocks), start=1):
            if self.v2:
                layers = [V2Down(inp, width)] + [V2Block(width) for _ in range(n)]
            else:  # a stride-2 block concatenates its input: its branch makes the rest
                layers = [V1Block(inp if j == 0 else width, width - (inp if j == 0 else 0), 2 if j == 0 else 1, groups)
                          for j in range(n)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            inp = width
        if self.v2:
            self.conv2, self.bn2 = _conv(inp, widths[-1]), nn.BatchNorm2d(widths[-1])
        self.feature_dim = widths[-1]
        self.fc = nn.Linear(self.feature_dim, num_classes)

    def forward_stages(self, x: torch.Tensor, preact: bool = False):
        """`[stem, stages 1-3 (post-, or the last block's pre-activation), pooled], logits`, as `is_feat`."""
        out = F.relu(self.bn1(self.conv1(x)))
        feats = [out]
        for layer in (self.layer1, self.layer2, self.layer3):
            for block in layer:
                out, pre = block(out)
            feats.append(pre if preact else out)
        if self.v2:
            out = F.relu(self.bn2(self.conv2(out)))
        pooled = torch.flatten(F.avg_pool2d(out, 4), 1)
        return feats + [pooled], self.fc(pooled)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def shuffle_v1(num_classes: int, in_channels: int = 3) -> ShuffleNet:
    return ShuffleNet((240, 480, 960), (4, 8, 4), num_classes, in_channels, groups=3)


def shuffle_v2(num_classes: int, in_channels: int = 3) -> ShuffleNet:
    return ShuffleNet((116, 232, 464, 1024), (3, 7, 3), num_classes, in_channels)

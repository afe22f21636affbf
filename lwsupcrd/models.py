"""Backbones for CIFAR-sized images and the wrapper that adds the projection head.

Every backbone exposes `forward_features(x) -> (N, feature_dim)`, a linear head `fc`, the
attribute `feature_dim`, and `forward_stages(x, preact=False) -> (features, logits)`: the
intermediate features as RepDistiller's `is_feat=True` returns them (the stem's output, each
stage's output, post- or pre-activation, then the pooled feature), computed by the same
operations as `forward`. `create_model` is the one registry.
"""
from __future__ import annotations

import functools

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from .mobilenet import MobileNetV2
from .shufflenet import shuffle_v1, shuffle_v2
from .vgg import LAYOUTS as VGG_LAYOUTS, VGG


def _last_block(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A torchvision BasicBlock or Bottleneck as its forward computes it: `(output, pre-activation)`,
    the pre-activation being the residual sum before the final ReLU."""
    identity = x if block.downsample is None else block.downsample(x)
    out = F.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    if isinstance(block, Bottleneck):
        out = block.bn3(block.conv3(F.relu(out)))
    pre = out + identity
    return F.relu(pre), pre


def _stage(layer: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for block in layer[:-1]:
        x = block(x)
    return _last_block(layer[-1], x)


class CifarResNet(ResNet):
    """torchvision's ResNet with the CIFAR stem: 3x3 stride-1 first conv, no max-pool."""

    def __init__(self, block, layers, num_classes: int, in_channels: int = 3):
        super().__init__(block, layers, num_classes=num_classes)
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()
        self.feature_dim = 512 * block.expansion

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)  # (N, feature_dim)

    def forward_stages(self, x: torch.Tensor, preact: bool = False):
        return _stages(self, (self.layer1, self.layer2, self.layer3, self.layer4), x, preact)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


class SmallCifarResNet(nn.Module):
    """The three-stage CIFAR ResNets of He et al. (resnet20 ... resnet110, and the x4 variants
    used in the CRD benchmark), assembled from torchvision's BasicBlock."""

    def __init__(self, blocks_per_stage: int, widths: tuple[int, int, int, int], num_classes: int,
                 in_channels: int = 3):
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_stage(widths[1], blocks_per_stage, stride=1)
        self.layer2 = self._make_stage(widths[2], blocks_per_stage, stride=2)
        self.layer3 = self._make_stage(widths[3], blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = widths[3]
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return torch.flatten(self.avgpool(x), 1)

    def forward_stages(self, x: torch.Tensor, preact: bool = False):
        return _stages(self, (self.layer1, self.layer2, self.layer3), x, preact)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def _stages(net: nn.Module, layers, x: torch.Tensor, preact: bool):
    """`[stem, stage 1, ..., stage n, pooled], logits` of a post-activation ResNet."""
    out = net.relu(net.bn1(net.conv1(x)))
    feats = [out]
    for layer in layers:
        out, pre = _stage(layer, out)
        feats.append(pre if preact else out)
    pooled = torch.flatten(net.avgpool(out), 1)
    return feats + [pooled], net.fc(pooled)


class WideBasicBlock(nn.Module):
    """Pre-activation block of Zagoruyko & Komodakis' wide ResNets."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + residual


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"wide ResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        stages, in_planes = [], widths[0]
        for planes, stride in zip(widths[1:], (1, 2, 2)):
            stages.append(nn.Sequential(*[WideBasicBlock(in_planes if i == 0 else planes, planes,
                                                         stride if i == 0 else 1) for i in range(n)]))
            in_planes = planes
        self.block1, self.block2, self.block3 = stages
        self.bn = nn.BatchNorm2d(widths[3])
        self.feature_dim = widths[3]
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = F.relu(self.bn(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward_stages(self, x: torch.Tensor, preact: bool = False):
        """RepDistiller's wide ResNet features: the last stage's output is taken before the final
        BatchNorm and ReLU; pre-activation, each stage's output through the next BatchNorm."""
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        pooled = torch.flatten(F.adaptive_avg_pool2d(F.relu(self.bn(f3)), 1), 1)
        if preact:
            f1, f2, f3 = self.block2[0].bn1(f1), self.block3[0].bn1(f2), self.bn(f3)
        return [f0, f1, f2, f3, pooled], self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


def _small(blocks: int, widths=(16, 16, 32, 64)) -> Callable[..., nn.Module]:
    return lambda num_classes, in_channels: SmallCifarResNet(blocks, widths, num_classes, in_channels)


_X4 = (32, 64, 128, 256)

MODEL_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "resnet18": lambda nc, ic: CifarResNet(BasicBlock, [2, 2, 2, 2], nc, ic),
    "resnet34": lambda nc, ic: CifarResNet(BasicBlock, [3, 4, 6, 3], nc, ic),
    "resnet50": lambda nc, ic: CifarResNet(Bottleneck, [3, 4, 6, 3], nc, ic),
    "resnet101": lambda nc, ic: CifarResNet(Bottleneck, [3, 4, 23, 3], nc, ic),
    "resnet8": _small(1),
    "resnet14": _small(2),
    "resnet20": _small(3),
    "resnet32": _small(5),
    "resnet44": _small(7),
    "resnet56": _small(9),
    "resnet110": _small(18),
    "resnet8x4": _small(1, _X4),
    "resnet32x4": _small(5, _X4),
    "wrn_16_1": lambda nc, ic: WideResNet(16, 1, nc, ic),
    "wrn_16_2": lambda nc, ic: WideResNet(16, 2, nc, ic),
    "wrn_40_1": lambda nc, ic: WideResNet(40, 1, nc, ic),
    "wrn_40_2": lambda nc, ic: WideResNet(40, 2, nc, ic),
    **{name: (lambda layout: lambda nc, ic: VGG(layout, nc, ic))(layout) for name, layout in VGG_LAYOUTS.items()},
    "MobileNetV2": lambda nc, ic: MobileNetV2(nc, ic),  # RepDistiller's (mobile_half)
    "ShuffleV1": shuffle_v1,
    "ShuffleV2": shuffle_v2,
    "ResNet50": lambda nc, ic: CifarResNet(Bottleneck, [3, 4, 6, 3], nc, ic),  # RepDistiller's name of resnet50
}


def create_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build a backbone with its linear head by registry name."""
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODEL_REGISTRY))}")
    if num_classes < 1 or in_channels < 1:
        raise ValueError(f"num_classes and in_channels must be >= 1, got {num_classes}, {in_channels}")
    return MODEL_REGISTRY[name](num_classes, in_channels)


@functools.lru_cache(maxsize=None)
@torch.no_grad()
def stage_channels(name: str, in_channels: int = 3) -> tuple[int, ...]:
    """The channels of a network's intermediate features (its `forward_stages`, RepDistiller's is_feat
    list), read from one 32x32 image; the global random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        net = create_model(name, 10, in_channels).eval()
        return tuple(f.shape[1] for f in net.forward_stages(torch.zeros(1, in_channels, 32, 32))[0])


# the projection head's form: "linear" (features -> proj_dim, then L2 norm); "mlp" (features -> each
# width of `proj_hidden` with a ReLU after it -> proj_dim, then L2 norm; SupContrast's single hidden
# layer of the feature width when `proj_hidden` is not given). The original work's heads are MLPs:
# the student's features -> 128 -> 64, the teacher's -> 512 -> 128 -> 64 (`protocol.head_config`).
PROJECTION_HEADS = ("linear", "mlp")


class ModelWrapper(nn.Module):
    """Backbone + projection head (see PROJECTION_HEADS; L2-normalised output) + linear classifier.

    `forward(x)` returns `(features, projections, logits)`: the penultimate features (N, F),
    the unit-norm projections (N, proj_dim) and the class logits (N, num_classes).
    """

    def __init__(self, arch: str, num_classes: int, proj_dim: int = 64, proj_hidden=None,
                 in_channels: int = 3, proj_head: str = "mlp"):
        super().__init__()
        if proj_head not in PROJECTION_HEADS:
            raise ValueError(f"unknown projection head {proj_head!r}; choose from {', '.join(PROJECTION_HEADS)}")
        self.arch = arch
        self.backbone = create_model(arch, num_classes, in_channels)
        self.feature_dim = self.backbone.feature_dim
        if proj_head == "linear":
            self.projection = nn.Sequential(nn.Linear(self.feature_dim, proj_dim))
        else:
            widths = [self.feature_dim, *(proj_hidden or [self.feature_dim])]
            layers = []
            for a, b in zip(widths, widths[1:]):
                layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
            self.projection = nn.Sequential(*layers, nn.Linear(widths[-1], proj_dim))

    @classmethod
    def from_config(cls, cfg: dict) -> "ModelWrapper":
        """The network a run's config describes: its arch, classes, projection head, input channels.
        A config without `proj_head` predates the key and had the MLP head."""
        return cls(cfg["arch"], cfg["num_classes"], proj_dim=cfg.get("proj_dim", 64), proj_hidden=cfg.get("proj_hidden"),
                   in_channels=cfg.get("in_channels", 3), proj_head=cfg.get("proj_head", "mlp"))

    @property
    def classifier(self) -> nn.Linear:
        return self.backbone.fc

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(features), dim=1)

    def forward(self, x: torch.Tensor):
        features = self.backbone.forward_features(x)
        return features, self.project(features), self.backbone.fc(features)

    def stages(self, x: torch.Tensor, preact: bool = False):
        """`(features, projections, logits, stage_features)`: `forward`'s outputs and the backbone's
        intermediate features (`forward_stages`), from one pass."""
        feats, logits = self.backbone.forward_stages(x, preact)
        return feats[-1], self.project(feats[-1]), logits, feats

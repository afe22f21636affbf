"""The small trained modules some distillation terms put between the two networks (FitNet's hint
regressor, CC's embeddings, VID's variational regressors, AB's connectors, FT's paraphraser and
translator, ReviewKD's attention-based fusion), and the shapes of the networks' intermediate
features they are built from. Each is saved in its run's checkpoint and resume state; their layers
are indexed as the references', so that their state dicts load key for key."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class HintRegressor(nn.Module):
    """FitNet's regressor from the student's hint map to the teacher's shape: a convolution chosen by
    the spatial sizes (stride 2 to halve, a transposed one to double, else a size-fitting kernel),
    then BatchNorm and, unless `relu` is False (AB's connector, onto pre-activations), ReLU."""

    def __init__(self, s_shape: torch.Size, t_shape: torch.Size, relu: bool = True):
        super().__init__()
        (_, s_c, s_h, s_w), (_, t_c, t_h, t_w) = s_shape, t_shape
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_c, t_c, 3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, 4, stride=2, padding=1)
        elif s_h >= t_h:
            self.conv = nn.Conv2d(s_c, t_c, (1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise ValueError(f"no hint regressor from a {s_h}x{s_w} map to a {t_h}x{t_w} one")
        self.bn = nn.BatchNorm2d(t_c)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))) if self.relu else self.bn(self.conv(x))


@torch.no_grad()
def stage_shapes(model, train) -> list[torch.Size]:
    """The shapes of the model's intermediate features (RepDistiller's is_feat list) on two images."""
    was_training = model.training
    x = torch.zeros(2, *train.images.shape[1:], device=train.images.device)
    shapes = [f.shape for f in model.eval().backbone.forward_stages(x)[0]]
    model.train(was_training)
    return shapes


def hint_regressor(student, teacher, train, layer: int) -> HintRegressor:
    """FitNet's regressor from the student's feature `layer` to the teacher's."""
    return HintRegressor(stage_shapes(student, train)[layer], stage_shapes(teacher, train)[layer]).to(
        train.images.device)


def linear_embeddings(student, teacher, train, dim: int) -> nn.ModuleList:
    """CC's two linear embeddings of the pooled features to `dim` (RepDistiller's LinearEmbed, to its
    feat_dim 128), both trained."""
    dims = [stage_shapes(m, train)[-1][1] for m in (student, teacher)]
    return nn.ModuleList([nn.Linear(d, dim) for d in dims]).to(train.images.device)


def vid_regressors(student, teacher, train) -> nn.ModuleList:
    """VID's regressor per stage between the stem and the pooling (RepDistiller's VIDLoss(s, t, t))."""
    pairs = zip(stage_shapes(student, train)[1:-1], stage_shapes(teacher, train)[1:-1], strict=True)
    return nn.ModuleList([VIDRegressor(s[1], t[1], t[1]) for s, t in pairs]).to(train.images.device)


class VIDRegressor(nn.Module):
    """VID's regressor of one stage (Ahn et al., CVPR 2019, as RepDistiller builds it): three 1x1
    convolutions without bias, ReLU between them, from the student's channels through the teacher's
    to the teacher's, and the per-channel scale s of the predicted variance, initialised so that
    log(1 + exp(s)) + 1e-5 = 5."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, init_variance: float = 5.0,
                 eps: float = 1e-5):
        super().__init__()
        self.regressor = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.ReLU(),
                                       nn.Conv2d(mid_channels, mid_channels, 1, bias=False), nn.ReLU(),
                                       nn.Conv2d(mid_channels, out_channels, 1, bias=False))
        self.log_scale = nn.Parameter(torch.full((out_channels,), math.log(math.exp(init_variance - eps) - 1.0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.regressor(x)


def ab_connectors(student, teacher, train) -> nn.ModuleList:
    """AB's connector per stage between the stem and the pooling (RepDistiller's Connector): the
    identity where the shapes agree, else FitNet's regressor without its ReLU."""
    pairs = zip(stage_shapes(student, train)[1:-1], stage_shapes(teacher, train)[1:-1], strict=True)
    return nn.ModuleList([nn.Identity() if s[1:3] == t[1:3] else HintRegressor(s, t, relu=False)
                          for s, t in pairs]).to(train.images.device)


def _encoder(channels: list[int], norm: bool, transposed: bool = False) -> nn.Sequential:
    """3x3 convolutions (stride 1, padding 1) through `channels`, each followed by BatchNorm (or an
    identity, so that the layers keep RepDistiller's indices) and LeakyReLU(0.1)."""
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers = []
    for c_in, c_out in zip(channels[:-1], channels[1:]):
        layers += [conv(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out) if norm else nn.Identity(), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """FT's paraphraser of the teacher's last stage (Kim et al., NeurIPS 2018, as RepDistiller builds
    it, without BatchNorm): an encoder from C to the factor's int(C k) channels, and a decoder back,
    trained to reconstruct the teacher's map in the initialisation and frozen afterwards."""

    def __init__(self, channels: int, k: float = 0.5):
        super().__init__()
        factor = int(channels * k)
        self.encoder = _encoder([channels, channels, factor, factor], norm=False)
        self.decoder = _encoder([factor, factor, channels, channels], norm=False, transposed=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # the factor
        return self.encoder(x)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class Translator(nn.Module):
    """FT's translator of the student's last stage to the teacher's factor: RepDistiller's encoder
    with BatchNorm, from the student's C_S channels to int(C_T k)."""

    def __init__(self, s_channels: int, t_channels: int, k: float = 0.5):
        super().__init__()
        factor = int(t_channels * k)
        self.encoder = _encoder([s_channels, s_channels, factor, factor], norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def paraphraser(student, teacher, train) -> nn.ModuleDict:
    """FT's initialisation modules: the paraphraser of the teacher's last stage (its feat[-2])."""
    return nn.ModuleDict(dict(paraphraser=Paraphraser(stage_shapes(teacher, train)[-2][1]))).to(train.images.device)


def factor_modules(student, teacher, train) -> nn.ModuleDict:
    """FT's distillation modules: the translator, trained, and the paraphraser, read from the
    initialisation and frozen (it is in eval mode there too; it has no BatchNorm)."""
    s, t = stage_shapes(student, train)[-2][1], stage_shapes(teacher, train)[-2][1]
    modules = nn.ModuleDict(dict(translator=Translator(s, t), paraphraser=Paraphraser(t)))
    modules["paraphraser"].requires_grad_(False)
    return modules.to(train.images.device)


class ABF(nn.Module):
    """ReviewKD's attention-based fusion of one level (Chen et al., CVPR 2021, as mdistiller builds
    it): a 1x1 convolution of the student's map to `mid` channels (BatchNorm); where `fuse`, a blend
    with the deeper level's residual (nearest-upsampled to `shape`) by a two-channel sigmoid
    attention; then, at the teacher's `out_shape`, a 3x3 convolution to its channels (BatchNorm)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, 1, 1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(mid_channels * 2, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x, residual=None, shape=None, out_shape=None):
        n, _, h, w = x.shape
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, (shape, shape), mode="nearest")
            z = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * z[:, 0].view(n, 1, h, w) + residual * z[:, 1].view(n, 1, h, w)
        if x.shape[-1] != out_shape:
            x = F.interpolate(x, (out_shape, out_shape), mode="nearest")
        return self.conv2(x), x


class ReviewFusion(nn.Module):
    """ReviewKD's review path: one `ABF` per level of the student, from the pooled feature (as a 1x1
    map) down to the first stage, each fusing the deeper level's residual; the outputs come back
    shallow to deep, at the teacher's channels and sizes. The ABFs are indexed deepest first, as in
    mdistiller's `abfs`, so that its state dict loads key for key; the middle width is
    min(512, the pooled feature's channels)."""

    def __init__(self, in_channels: list[int], out_channels: list[int], shapes: list[int], out_shapes: list[int]):
        super().__init__()
        mid = min(512, in_channels[-1])
        abfs = [ABF(c, mid, out_channels[i], i < len(in_channels) - 1) for i, c in enumerate(in_channels)]
        self.abfs = nn.ModuleList(abfs[::-1])
        self.shapes, self.out_shapes = list(shapes), list(out_shapes)  # deepest first, as mdistiller's config

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        x = maps[::-1]
        out, residual = self.abfs[0](x[0], out_shape=self.out_shapes[0])
        results = [out]
        for f, abf, shape, out_shape in zip(x[1:], self.abfs[1:], self.shapes[1:], self.out_shapes[1:], strict=True):
            out, residual = abf(f, residual, shape, out_shape)
            results.insert(0, out)
        return results


def review_fusion(student, teacher, train) -> ReviewFusion:
    """ReviewKD's modules for this pair, their channels and sizes read from both networks' stages
    after the stem (the pooled feature a 1x1 map): what dvlab-research/ReviewKD's `build_review_kd`
    writes out per architecture and mdistiller's config states for resnet32x4 -> resnet8x4."""
    s, t = stage_shapes(student, train)[1:], stage_shapes(teacher, train)[1:]

    def sizes(shapes):  # deepest first
        return [x[2] if len(x) == 4 else 1 for x in reversed(shapes)]

    return ReviewFusion([x[1] for x in s], [x[1] for x in t], sizes(s), sizes(t)).to(train.images.device)

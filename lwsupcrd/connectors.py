"""The small trained modules some distillation terms put between the two networks (FitNet's hint
regressor, VID's variational regressors), and the shapes of the networks' intermediate features
they are built from. Each is trained with the student and saved in its checkpoint and resume state."""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class HintRegressor(nn.Module):
    """FitNet's regressor from the student's hint map to the teacher's shape: a convolution chosen by
    the spatial sizes (stride 2 to halve, a transposed one to double, else a size-fitting kernel),
    then BatchNorm and ReLU (the teacher's hint is post-activation)."""

    def __init__(self, s_shape: torch.Size, t_shape: torch.Size):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


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

"""The small trained modules some distillation terms put between the two networks (FitNet's hint
regressor), and the shapes of the networks' intermediate features they are built from. Each is
trained with the student and saved in its checkpoint and resume state."""
from __future__ import annotations

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
def stage_shape(model, train, index: int) -> torch.Size:
    was_training = model.training
    x = torch.zeros(2, *train.images.shape[1:], device=train.images.device)
    shape = model.eval().backbone.forward_stages(x)[0][index].shape
    model.train(was_training)
    return shape

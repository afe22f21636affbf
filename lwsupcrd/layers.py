"""What RepDistiller's network families share: their weight initialisation."""
from __future__ import annotations

import math

import torch.nn as nn


def reference_init(net: nn.Module) -> None:
    """RepDistiller's initialisation of its VGG, MobileNetV2 and ShuffleNets: convolutions N(0, 2 / (k x k x
    out channels)) with zero bias, BatchNorm weight 1 and bias 0, linear layers N(0, 0.01) with zero bias."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)

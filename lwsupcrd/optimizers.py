"""What each run optimises, and how: the main optimiser's parameters and its schedule, and the
parameters the original work trains with optimisers of their own."""
from __future__ import annotations

import torch
import torch.nn as nn

from .methods import initialisation_of, trains_teacher_head
from .models import ModelWrapper


def side_groups(cfg: dict, model: ModelWrapper, teacher: ModelWrapper | None) -> list[tuple[list, float]]:
    """Parameters the original trains with optimisers of their own (Adam, constant learning rate):
    the online classifier (`online_classifier`, at `online_lr`) and the teacher's head (at the
    student's lr x `teacher_head_lr_scale`). Without those settings they join the main optimiser."""
    groups = []
    if cfg.get("online_classifier"):
        groups.append((list(model.classifier.parameters()), cfg["online_lr"]))
    if trains_teacher_head(cfg) and cfg.get("teacher_head_lr_scale"):
        groups.append((list(teacher.projection.parameters()), cfg["lr"] * cfg["teacher_head_lr_scale"]))
    return groups


def trainable_parameters(cfg: dict, model: ModelWrapper, teacher: ModelWrapper | None,
                         extras: nn.Module | None = None) -> list[nn.Parameter]:
    """The main optimiser's parameters (`side_groups` have their own). An initialisation trains its
    modules and, if it says so, the student's feature modules (RepDistiller's get_feat_modules)."""
    init = initialisation_of(cfg)
    if init is not None:
        head = {id(p) for p in model.classifier.parameters()}
        params = [p for p in model.backbone.parameters() if id(p) not in head] if init.trains_student else []
    else:
        params = list(model.projection.parameters()) if cfg["method"] == "projection" else list(model.parameters())
    if trains_teacher_head(cfg):
        params += list(teacher.projection.parameters())
    if extras is not None:  # a method's regressor, embedding or prototypes (its memories are buffers)
        params += [p for p in extras.parameters() if p.requires_grad]  # FT's paraphraser is frozen
    side = {id(p) for params_, _ in side_groups(cfg, model, teacher) for p in params_}
    return [p for p in params if id(p) not in side]


def build_optimizer(cfg: dict, params, fused: bool = False) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.9),
                               weight_decay=cfg["weight_decay"], nesterov=False, fused=fused or None)
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], fused=fused or None)
    raise ValueError(f"unknown optimizer {cfg['optimizer']!r}; choose sgd or adam")


def build_scheduler(cfg: dict, optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg["epochs"])
    if cfg["schedule"] == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    if cfg["schedule"] == "step":  # the references' lr x lr_decay at each milestone epoch
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, cfg["lr_milestones"], gamma=cfg["lr_decay"])
    raise ValueError(f"unknown schedule {cfg['schedule']!r}; choose cosine, constant or step")

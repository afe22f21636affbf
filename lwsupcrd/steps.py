"""One training step per method of the original protocol, as a pure-ish function of a
`StepContext` and a `Batch` that returns a `StepResult`: the loss to back-propagate, its named
parts (the columns of the training log), accuracy counts, what the memory bank should store, and
LW-SupCRD's weight samples. Each is a row's `step` in `methods.METHODS`, where the standard
protocol's step (`methods.standard_step`) is too."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from .data import DatasetInfo, Split, normalize
from .distributed import gather, gather_with_grad
from .losses import crd_loss, lw_supcrd_loss, lw_weights, supcon_loss
from .original_losses import cosine_prototype_loss, instance_crd_loss, lw_supcrd_anchor_loss
from .memory_bank import MomentumMemoryBank
from .models import ModelWrapper

# torch.compile modes; "reduce-overhead" adds CUDA graphs on a GPU
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class Batch:
    """This rank's shard of a global batch, its views already augmented on the device."""

    x: torch.Tensor  # (views * b, C, H, W) normalised: all first views, then all second views
    labels: torch.Tensor  # (b,)
    slots: torch.Tensor  # (b,) position in the training set: instance id and memory-bank slot


@dataclass
class Networks:
    """The network calls the steps make, each compiled by torch.compile when asked for."""

    forward: Callable  # x -> (features, projections, logits) of the trained model
    logits: Callable  # x -> logits
    features: Callable  # x -> backbone features
    teacher_features: Callable | None

    @classmethod
    def of(cls, model: ModelWrapper, teacher: ModelWrapper | None, compile_mode: str | None) -> "Networks":
        calls = (model, model.backbone, model.backbone.forward_features,
                 teacher.backbone.forward_features if teacher is not None else None)
        if compile_mode is not None:
            if compile_mode not in COMPILE_MODES:
                raise ValueError(f"unknown compile mode {compile_mode!r}; choose from {', '.join(COMPILE_MODES)}")
            # compiled lazily at first call, each call its own graph: a step compiles only what it uses
            calls = tuple(torch.compile(f, mode=compile_mode) if f is not None else None for f in calls)
        return cls(*calls)


@dataclass
class StepContext:
    cfg: dict
    nets: Networks
    model: ModelWrapper
    teacher: ModelWrapper | None
    bank: MomentumMemoryBank | None
    extras: torch.nn.Module | None = None  # a standard method's extra modules and state (`methods.TERMS`)
    epoch: int = 0  # the epoch in progress, from 0


@dataclass
class StepResult:
    """What one training step produced: the loss to back-propagate, its named parts (the columns of
    the training log), accuracy counts, what the memory bank should store, and weight samples."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]
    correct: torch.Tensor | None = None
    seen: int = 0
    bank_update: tuple[torch.Tensor, torch.Tensor] | None = None  # (slots, keys) of the global batch
    weights: dict[str, torch.Tensor] = field(default_factory=dict)  # LW-SupCRD weight samples (see WEIGHT_STATS)


def step_ce(ctx, batch):
    logits = ctx.nets.logits(batch.x)
    loss = F.cross_entropy(logits.float(), batch.labels)
    return StepResult(loss, {"ce": loss}, (logits.argmax(1) == batch.labels).sum(), len(batch.labels))


def step_undistilled(ctx, batch):
    labels = batch.labels.repeat(len(batch.x) // len(batch.labels))  # one view (the original's) or both
    logits = ctx.nets.logits(batch.x)
    loss = F.cross_entropy(logits.float(), labels)
    return StepResult(loss, {"ce": loss}, (logits.argmax(1) == labels).sum(), len(labels))


def step_projection(ctx, batch):
    """The teacher's head on its frozen backbone: SupCon over both views (ours), or the original's
    cosine-prototype classifier on the first view (the prototypes are the run's extras). With
    `teacher_bn_drift` the backbone runs in train mode, so its BatchNorm statistics move, as the
    original's do."""
    with torch.no_grad():
        features = ctx.nets.features(batch.x)
    labels = batch.labels.repeat(len(batch.x) // len(batch.labels))
    if ctx.cfg.get("head_pretraining") == "cosine_prototype":
        loss = cosine_prototype_loss(ctx.model.projection(features.clone()), ctx.extras.weight, labels,
                                     ctx.cfg["temperature"])
        return StepResult(loss, {"cosine_ce": loss})
    z = gather_with_grad(ctx.model.project(features.clone()))
    loss = supcon_loss(z, gather(labels), ctx.cfg["temperature"], validate=False)
    return StepResult(loss, {"supcon": loss})


def online_classifier(ctx, batch, result: StepResult) -> StepResult:
    """The original's measurement: a linear classifier (the student's own head, with its own optimiser)
    trained at every step on the detached features of the first view, from a second forward pass of
    the student in train mode. Its cross-entropy joins the loss; no gradient reaches the backbone."""
    first = batch.x[:len(batch.labels)]
    with torch.no_grad():
        features = ctx.nets.features(first)
    logits = ctx.model.classifier(features.clone())
    ce = F.cross_entropy(logits.float(), batch.labels)
    result.loss = result.loss + ce
    result.parts["online_ce"] = ce
    result.correct, result.seen = (logits.argmax(1) == batch.labels).sum(), len(batch.labels)
    return result


def step_supcon(ctx, batch):
    _, z, _ = ctx.nets.forward(batch.x)
    loss = supcon_loss(gather_with_grad(z), gather(batch.labels.repeat(2)), ctx.cfg["temperature"], validate=False)
    return StepResult(loss, {"supcon": loss})


def _teacher_keys(ctx, x):
    """The teacher's keys (its head keeps training) and its logits (float32, constants)."""
    with torch.inference_mode():
        features = ctx.nets.teacher_features(x)
        logits = ctx.teacher.classifier(features).float()
    t = ctx.teacher.project(features.clone())
    return t, logits.clone()


# sampled per step: at most this many anchors, and this many keys per anchor, evenly spaced
WEIGHT_SAMPLE = 64


@torch.no_grad()
def weight_samples(cfg: dict, probs: torch.Tensor, labels: torch.Tensor, key_labels: torch.Tensor) -> dict:
    """LW-SupCRD's weights this step, for the per-epoch diagnostics: q_i, beta_i, w_pull_i for an
    evenly spaced sample of anchors, and w_push and the margin log(w_push / w_pull) over a grid of
    anchor-key pairs (NaN where the key is not a negative). No host synchronisation."""
    rows = torch.arange(0, len(labels), max(1, len(labels) // WEIGHT_SAMPLE), device=labels.device)
    cols = torch.arange(0, len(key_labels), max(1, len(key_labels) // WEIGHT_SAMPLE), device=labels.device)
    q, w_pull, beta_i, log_push = lw_weights(probs[rows], labels[rows], key_labels[cols], cfg["alpha"], cfg["beta"],
                                             cfg["adaptive_beta"], cfg.get("logit_weighting", True))
    negative = labels[rows][:, None] != key_labels[cols][None, :]
    nan = torch.full_like(log_push, float("nan"))
    return {"q": q, "beta_i": beta_i, "w_pull": w_pull,
            "w_push": torch.where(negative, log_push.exp(), nan).flatten(),
            "margin": torch.where(negative, log_push - torch.log(w_pull)[:, None], nan).flatten(),
            "teacher_wrong": (probs[rows].argmax(1) != labels[rows]).float()}


def weight_summary(samples: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Mean, 5th and 95th percentile of each weight over an epoch's samples (the teacher's error: its mean)."""
    out = {}
    for key, parts in samples.items():
        x = torch.cat(parts).double()  # float32 sums put a constant's mean outside its own percentiles
        x = x[~torch.isnan(x)]
        if not len(x):
            continue
        if key == "teacher_wrong":
            out["w.teacher_wrong"] = float(x.mean())
            continue
        lo, hi = torch.quantile(x, torch.tensor([0.05, 0.95], dtype=x.dtype, device=x.device)).tolist()
        out.update({f"w.{key}_mean": float(x.mean()), f"w.{key}_p05": lo, f"w.{key}_p95": hi})
    return out


def contrast(ctx, z_local, t_local, logits_local, batch, loss_name, class_aware: bool = False):
    """The contrastive term of a distillation step over every rank's anchors and keys (and the
    bank's): (loss, what the bank should store after the step, LW-SupCRD's weight samples).
    `z_local` holds one or two views of this rank's images, in the batch's layout; `class_aware`
    leaves same-class keys out of the InfoNCE form's negatives. The run's config chooses the form:
    `crd_form` "instance" (the original's) or "ours" (our InfoNCE form); `lw_form` "anchor" (the original's,
    with `own_key`) or "per_positive" (ours); `bank_form` "port" (the bank written before the loss
    with each key's teacher logits, as the original's port) or "ours" (the mean of the views' keys
    after the step). Without `logit_weighting`, the anchor form reads a one-hot teacher."""
    cfg = ctx.cfg
    views = len(z_local) // len(batch.labels)
    z, t = gather_with_grad(z_local), gather_with_grad(t_local)  # every rank's anchors and keys
    labels, slots = gather(batch.labels.repeat(views)), gather(batch.slots.repeat(views))
    logits = gather(logits_local.float())
    probs = torch.softmax(logits, dim=1)
    port = ctx.bank is not None and cfg.get("bank_form") == "port"
    if port:  # every rank's last view, in slot order
        b = len(batch.labels)
        ctx.bank.update_last_view(gather(batch.slots), gather(t_local[-b:].detach()), gather(logits_local[-b:].float()))
    bank_keys = bank_labels = bank_ids = bank_probs = None
    if ctx.bank is not None:
        bank_keys, bank_labels, bank_ids = ctx.bank.sample(cfg["bank_negatives"])
        if port:
            bank_probs = torch.softmax(ctx.bank.logits[bank_ids], dim=1)
    weights = {}
    if loss_name == "crd" and cfg.get("crd_form") == "instance":
        loss = instance_crd_loss(z, t, cfg["temperature"], validate=False, bank_keys=bank_keys,
                                 instance_ids=slots, bank_ids=bank_ids)
    elif loss_name == "crd":
        loss = crd_loss(z, t, slots, cfg["temperature"], bank_keys, bank_ids, validate=False,
                        labels=labels if class_aware else None, bank_labels=bank_labels if class_aware else None)
    elif cfg.get("lw_form") == "anchor":
        weighted = cfg.get("logit_weighting", True)
        if not weighted:  # a one-hot teacher: w_pull = alpha, w_push = beta (the controls' strengths)
            probs = F.one_hot(labels, probs.shape[1]).to(probs.dtype)
            bank_probs = None if bank_probs is None else F.one_hot(bank_labels, probs.shape[1]).to(probs.dtype)
        loss = lw_supcrd_anchor_loss(z, t, labels, probs, cfg["alpha"], cfg["beta"], cfg["temperature"],
                                     cfg["adaptive_beta"], cfg.get("own_key", True), bank_keys, bank_labels,
                                     bank_probs, validate=False)
    else:
        loss = lw_supcrd_loss(z, t, labels, probs, cfg["alpha"], cfg["beta"], cfg["temperature"],
                              cfg["adaptive_beta"], bank_keys, bank_labels, validate=False,
                              alpha_mode=cfg.get("alpha_mode", "weight"),
                              logit_weighting=cfg.get("logit_weighting", True))
    if loss_name != "crd":
        key_labels = labels if bank_labels is None else torch.cat([labels, bank_labels])
        weights = weight_samples(cfg, probs, labels, key_labels)
    update = None
    if ctx.bank is not None and not port:  # the mean of the views' keys, for every image of the global batch
        b = len(batch.slots)
        keys = t_local if views == 1 else (t_local[:b] + t_local[b:]) / 2
        update = (gather(batch.slots), gather(keys.detach()))
    return loss, update, weights


def _distill(ctx, batch, loss_name):
    _, z_local, _ = ctx.nets.forward(batch.x)
    t_local, logits = _teacher_keys(ctx, batch.x)
    loss, update, weights = contrast(ctx, z_local, t_local, logits, batch, loss_name,
                                     class_aware=ctx.cfg.get("class_aware", False))
    return StepResult(loss, {loss_name: loss}, bank_update=update, weights=weights)


def with_online_classifier(step: Callable) -> Callable:
    """`step`, followed by the original's online classifier when the run's config asks for it."""
    @functools.wraps(step)
    def run(ctx, batch):
        result = step(ctx, batch)
        return online_classifier(ctx, batch, result) if ctx.cfg.get("online_classifier") else result
    return run


def step_crd(ctx, batch):
    return _distill(ctx, batch, "crd")


def step_lwsupcrd(ctx, batch):
    return _distill(ctx, batch, "lw_supcrd")


@torch.no_grad()
def teacher_bank_keys(teacher: ModelWrapper, train: Split, info: DatasetInfo, channels_last: bool = False,
                      batch_size: int = 1024) -> torch.Tensor:
    """The teacher's keys of every un-augmented training image (eval mode), in slot order."""
    was_training = teacher.training
    teacher.eval()
    keys = []
    for start in range(0, len(train), batch_size):
        x = normalize(train.images[start:start + batch_size], info)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        keys.append(teacher.project(teacher.backbone.forward_features(x)).float())
    teacher.train(was_training)
    return torch.cat(keys)

"""The distillation terms a standard method combines with cross-entropy and KD (`methods.STANDARD`
names one per row): what each reads of the two networks, the extra modules and state it keeps, its
loss, and, for RepDistiller's two-stage methods (AB, FT, FSP), the initialisation that runs before
distillation (`Init`). The losses themselves are `distill_losses.py`'s pure functions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import torch.nn.functional as F

from .connectors import (ab_connectors, factor_modules, hint_regressor, linear_embeddings, paraphraser, review_fusion,
                         vid_regressors)
from .distill_losses import (ab_loss, attention_loss, correlation_loss, dist_loss, dkd_loss, factor_loss, fsp_loss,
                             hcl_loss, hint_loss, nst_loss, pkt_loss, rkd_loss, similarity_loss, standardize_logits, vid_loss)
from .distributed import gather, gather_with_grad
from .losses import kd_loss
from .nce_memory import ContrastMemories
from .pairs import FT_INIT_LR_STUDENTS
from .steps import contrast

@dataclass
class Outputs:
    """What one step's networks produced for a term to read (one augmented view)."""

    logits: torch.Tensor  # (B, C) student
    embedding: torch.Tensor  # (B, P) the student's head on its pooled feature, unit norm
    stages: list[torch.Tensor] | None  # the student's intermediate features (RepDistiller's is_feat)
    teacher_logits: torch.Tensor | None
    teacher_pooled: torch.Tensor | None  # (B, F_T)
    teacher_stages: list[torch.Tensor] | None


@dataclass(frozen=True)
class Init:
    """A two-stage method's initialisation (RepDistiller's `helper/pretrain.py::init`), a stage of
    its own before the distillation: `loss(ctx, batch)` its objective; `build(student, teacher,
    train)` the modules it trains, or None; `trains_student` whether the student's feature modules
    train too (its classifier and head get no gradient); `lr(student_arch, lr)` its constant learning
    rate. Its run keeps the student and those modules; the distillation run starts from both."""

    loss: Callable
    build: Callable | None = None
    trains_student: bool = False
    lr: Callable = lambda student, lr: lr


@dataclass(frozen=True)
class Term:
    """A distillation term: `reads` "logits", "embeddings" or "stages"; `build(cfg, student,
    teacher, train)` makes the extra modules and state it keeps (trained with the student and saved
    in its checkpoint and resume state), or None; `loss(ctx, batch, out)` gives
    `(L_term, bank update, weight samples)`."""

    reads: str
    loss: Callable
    build: Callable | None = None
    trains_teacher_head: bool = False
    init: Init | None = None  # the initialisation stage run before the distillation, if any
    teacher_preact: bool = False  # "stages" read from the teacher before their last ReLU (RepDistiller's preact)
    equal_channels: bool = False  # defined only where every stage has the same channels in both networks




# ---------------------------------------------------------------- the terms
def _nce_crd(ctx, batch, out):
    """Published CRD: NCE against two memories, both directions (`nce_memory.ContrastMemories`)."""
    v_student = gather_with_grad(out.embedding)
    v_teacher = gather_with_grad(ctx.teacher.project(out.teacher_pooled.clone()))  # the teacher's embed trains
    labels, slots = gather(batch.labels), gather(batch.slots)
    return ctx.extras.loss(v_student, v_teacher, ctx.extras.sample(labels, slots)), None, {}


def _build_memories(cfg, student, teacher, train):
    return ContrastMemories(train.labels, cfg["proj_dim"], cfg["nce_negatives"], cfg["temperature"],
                            cfg["nce_momentum"], seed=cfg["seed"], device=train.labels.device)


def _infonce(ctx, batch, out):
    t = ctx.teacher.project(out.teacher_pooled.clone())
    return contrast(ctx, out.embedding, t, out.teacher_logits, batch, "crd",
                    class_aware=ctx.cfg.get("class_aware", False))


def _lwsupcrd(ctx, batch, out):
    t = ctx.teacher.project(out.teacher_pooled.clone())
    return contrast(ctx, out.embedding, t, out.teacher_logits, batch, "lw_supcrd")


def _standardized(ctx, out):  # logit standardization's plug-in, where the run asks for it
    if ctx.cfg.get("logit_stand"):
        return standardize_logits(out.logits), standardize_logits(out.teacher_logits)
    return out.logits, out.teacher_logits


def _dkd(ctx, batch, out):
    ramp = min((ctx.epoch + 1) / ctx.cfg["dkd_warmup"], 1.0)  # mdistiller's warm-up, epochs counted from 1
    t = ctx.cfg.get("term_temperature", ctx.cfg["kd_temperature"])  # logit standardization's own T
    return ramp * dkd_loss(*_standardized(ctx, out), batch.labels, ctx.cfg["dkd_alpha"], ctx.cfg["dkd_beta"], t), None, {}


def _kd_term(ctx, batch, out):  # KD as a term, at its own temperature (logit standardization's KD)
    return kd_loss(*_standardized(ctx, out), ctx.cfg["term_temperature"], validate=False), None, {}


def _hint(ctx, batch, out):
    layer = ctx.cfg["hint_layer"]
    return hint_loss(ctx.extras(out.stages[layer]), out.teacher_stages[layer]), None, {}


def _attention(ctx, batch, out):
    return attention_loss(out.stages[1:-1], out.teacher_stages[1:-1], ctx.cfg["at_p"]), None, {}


def _similarity(ctx, batch, out):
    return similarity_loss(out.stages[-2], out.teacher_stages[-2]), None, {}  # the last stage's output


def _pooled(loss):  # a relation between the pooled features (RepDistiller's feat[-1])
    return lambda ctx, batch, out: (loss(out.stages[-1], out.teacher_stages[-1]), None, {})


def _correlation(ctx, batch, out):
    return correlation_loss(ctx.extras[0](out.stages[-1]), ctx.extras[1](out.teacher_stages[-1])), None, {}


def _vid(ctx, batch, out):
    return vid_loss(out.stages[1:-1], out.teacher_stages[1:-1], list(ctx.extras),
                    [r.log_scale for r in ctx.extras]), None, {}


def _teacher_stages(ctx, x, preact=False):
    with torch.inference_mode():
        feats = ctx.teacher.stages(x, preact)[3]
    return [f.clone() for f in feats]


def _ab_init(ctx, batch):  # the connectors' images of the student's pre-activations against the teacher's
    s = ctx.model.stages(batch.x, preact=True)[3][1:-1]
    return ab_loss([c(f) for c, f in zip(ctx.extras, s, strict=True)], _teacher_stages(ctx, batch.x, True)[1:-1])


def _ft_init(ctx, batch):  # the paraphraser reconstructs the teacher's last stage (MSE)
    f_t = _teacher_stages(ctx, batch.x)[-2]
    return F.mse_loss(ctx.extras["paraphraser"].reconstruct(f_t), f_t)


def _fsp_init(ctx, batch):
    return fsp_loss(ctx.model.stages(batch.x)[3][:-1], _teacher_stages(ctx, batch.x)[:-1])


def _factor(ctx, batch, out):  # the translated student factor against the frozen paraphraser's teacher factor
    return factor_loss(ctx.extras["translator"](out.stages[-2]), ctx.extras["paraphraser"](out.teacher_stages[-2])), \
        None, {}


def _review(ctx, batch, out):  # the review path's outputs against the teacher's pre-activations (mdistiller)
    maps, t = out.stages[1:-1] + [out.stages[-1][:, :, None, None]], out.teacher_stages[1:-1]
    ramp = min((ctx.epoch + 1) / ctx.cfg["review_warmup"], 1.0)  # epochs counted from 1, as DKD's
    return ramp * hcl_loss(ctx.extras(maps), t + [out.teacher_stages[-1][:, :, None, None]]), None, {}


def _after_init(ctx, batch, out):  # AB and FSP distil in their initialisation only (RepDistiller: loss_kd = 0)
    return out.logits.new_zeros(()), None, {}


TERMS: dict[str, Term] = {
    "nce": Term("embeddings", _nce_crd, _build_memories, trains_teacher_head=True),
    "infonce": Term("embeddings", _infonce, trains_teacher_head=True),
    "lwsupcrd": Term("embeddings", _lwsupcrd, trains_teacher_head=True),
    "dkd": Term("logits", _dkd),
    "kd": Term("logits", _kd_term),
    "dist": Term("logits", lambda ctx, batch, out: (dist_loss(out.logits, out.teacher_logits, ctx.cfg["dist_tau"]),
                                                    None, {})),
    "hint": Term("stages", _hint, lambda cfg, s, t, train: hint_regressor(s, t, train, cfg["hint_layer"])),
    "attention": Term("stages", _attention),
    "similarity": Term("stages", _similarity),
    "correlation": Term("stages", _correlation, lambda cfg, s, t, train: linear_embeddings(s, t, train, cfg["proj_dim"])),
    "rkd": Term("stages", _pooled(rkd_loss)),
    "vid": Term("stages", _vid, lambda cfg, s, t, train: vid_regressors(s, t, train)),
    "pkt": Term("stages", _pooled(pkt_loss)),
    "nst": Term("stages", lambda ctx, batch, out: (nst_loss(out.stages[1:-1], out.teacher_stages[1:-1]), None, {})),
    "abound": Term("logits", _after_init, init=Init(_ab_init, ab_connectors, trains_student=True)),
    "factor": Term("stages", _factor, lambda cfg, s, t, train: factor_modules(s, t, train),
                   init=Init(_ft_init, paraphraser, lr=lambda student, lr: 0.01 if student in FT_INIT_LR_STUDENTS else lr)),
    "fsp": Term("logits", _after_init, init=Init(_fsp_init, trains_student=True), equal_channels=True),
    "review": Term("stages", _review, lambda cfg, s, t, train: review_fusion(s, t, train), teacher_preact=True),
}

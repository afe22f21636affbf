"""Both protocols' methods, in one registry, `METHODS`: every way a run trains is a `Method` row.

- The standard protocol's rows are the benchmark table's (a run's `recipe`): the loss weights, the
  distillation term and its settings, the published numbers set beside it. Their step is
  `standard_step`: gamma CE + a KD + b L_term (`losses.student_objective`) on one augmented view,
  with each term a `Term` (the features it reads, the extra modules and state it keeps, its loss).
- The original protocol's rows (protocol "lwsupcrd", a run's `method`) carry their own `step`
  (`steps.py`), their views per image and whether they read the frozen teacher.
- The teachers' rows ("ce", "published") serve both protocols.

Runs, training, the table and the report ask `METHODS` (through `method_of`); nothing else lists
methods. `docs/adding-a-method.md` says how to add one to either protocol.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from .distill_losses import (attention_loss, correlation_loss, dist_loss, dkd_loss, hint_loss, nst_loss, pkt_loss,
                             rkd_loss, similarity_loss, standardize_logits, vid_loss)
from .connectors import hint_regressor, linear_embeddings, vid_regressors
from .distributed import gather, gather_with_grad
from .losses import kd_loss, onehot_teacher_beta, student_objective
from .nce_memory import ContrastMemories
from .pairs import DIST, LOGIT_STANDARDIZATION, MDISTILLER, REPDISTILLER, dkd_beta, logit_standardization, published_row
from .steps import (StepResult, contrast, step_ce, step_crd, step_lwsupcrd, step_projection, step_supcon,
                    step_undistilled, with_online_classifier)

# RepDistiller's 13 pairs in its README's order: Table 1, same architecture; Table 2, different ones
# LW-SupCRD's defaults: the run every sweep of the original protocol passes through
SWEEP_CENTRE = dict(alpha=1.0, beta=10.0, temperature=0.07)


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
class Term:
    """A distillation term: `reads` "logits", "embeddings" or "stages"; `build(cfg, student,
    teacher, train)` makes the extra modules and state it keeps (trained with the student and saved
    in its checkpoint and resume state), or None; `loss(ctx, batch, out)` gives
    `(L_term, bank update, weight samples)`."""

    reads: str
    loss: Callable
    build: Callable | None = None
    trains_teacher_head: bool = False


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    protocol: str = "standard"  # standard (a run's `recipe`) | lwsupcrd (the original's; a run's `method`) | both
    step: Callable | None = None  # one training step (`steps.py`); None: `standard_step`
    views: int = 1  # augmented views per image (a run's `views` wins)
    teacher: bool = False  # an original-protocol row that reads the frozen teacher and trains its head
    gamma: float = 1.0  # cross-entropy
    kd_weight: float = 0.0  # a
    term: str | None = None  # a key of TERMS
    term_weight: float = 0.0  # b
    params: dict = field(default_factory=dict)  # the term's settings
    published: dict = field(default_factory=dict)  # pair -> top-1 (%) as published
    source: str = ""  # where the weights and the published numbers were read
    ours: str = ""  # how this differs from the reference, or why it is ours

    def config(self, pair: str, epochs: int) -> dict:
        """The keys of a run's config for this method with this pair and epoch budget."""
        params = {k: (v(pair) if callable(v) else v.get(pair, v["default"]) if isinstance(v, dict) else v)
                  for k, v in self.params.items()}
        if "dkd_warmup" in params:  # 20 of the references' 240 epochs, in proportion to this budget
            params["dkd_warmup"] = max(1, round(epochs * params["dkd_warmup"] / 240))
        return {**dict(recipe=self.name, gamma=self.gamma, kd_weight=self.kd_weight, distill=self.term or "none",
                       distill_weight=self.term_weight), **params}  # a param may set b per pair

    @property
    def key(self) -> str:  # in `METHODS`: the name, an original-protocol row's after its protocol
        return f"{self.protocol}/{self.name}" if self.protocol == "lwsupcrd" else self.name

    @property
    def needs_teacher(self) -> bool:
        if self.protocol != "standard":
            return self.teacher
        return bool(self.kd_weight) or self.term is not None

    @property
    def trains_teacher_head(self) -> bool:
        if self.protocol != "standard":
            return self.teacher
        return self.term is not None and TERMS[self.term].trains_teacher_head


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
}

# ---------------------------------------------------------------- the methods, in the table's order
_NCE = dict(nce_negatives=16384, nce_momentum=0.5)  # RepDistiller's nce_k, nce_m (nce_t: `temperature`)
_BANK = dict(bank_negatives=16384, bank_momentum=0.5, bank_init="random")
_LW = dict(alpha=SWEEP_CENTRE["alpha"], beta=SWEEP_CENTRE["beta"], adaptive_beta=True, alpha_mode="weight",
           logit_weighting=True)
_RD = dict(source=REPDISTILLER)
_STANDARD = [
    Method("vanilla", "Student (vanilla)", published=published_row(73.26, 71.98, 69.06, 69.06, 71.14, 72.50, 70.36,
                                                                    64.60, 64.60, 70.36, 70.50, 71.82, 70.50), **_RD),
    Method("kd", "KD", gamma=0.1, kd_weight=0.9, published=published_row(74.92, 73.54, 70.66, 70.67, 73.08, 73.33, 72.98,
                                                                         67.37, 67.35, 73.81, 74.07, 74.45, 74.83), **_RD),
    Method("fitnet", "FitNet", term="hint", term_weight=100.0, params=dict(hint_layer=2),
           published=published_row(73.58, 72.24, 69.21, 68.99, 71.06, 73.50, 71.02,
                                    64.14, 63.16, 70.69, 73.59, 73.54, 73.73), **_RD),
    Method("at", "AT", term="attention", term_weight=1000.0, params=dict(at_p=2),
           published=published_row(74.08, 72.77, 70.55, 70.22, 72.31, 73.44, 71.43,
                                    59.40, 58.58, 71.84, 71.73, 72.73, 73.32), **_RD),
    Method("sp", "SP", term="similarity", term_weight=3000.0,
           published=published_row(73.83, 72.43, 69.67, 70.04, 72.69, 72.94, 72.68,
                                    66.30, 68.08, 73.34, 73.48, 74.56, 74.52), **_RD),
    Method("cc", "CC", term="correlation", term_weight=0.02,
           published=published_row(73.56, 72.21, 69.63, 69.48, 71.48, 72.97, 70.71,
                                    64.86, 65.43, 70.25, 71.14, 71.29, 71.38), **_RD),
    Method("vid", "VID", term="vid", term_weight=1.0,
           published=published_row(74.11, 73.30, 70.38, 70.16, 72.61, 73.09, 71.23,
                                    65.56, 67.57, 70.30, 73.38, 73.40, 73.61), **_RD),
    Method("rkd", "RKD", term="rkd", term_weight=1.0,
           published=published_row(73.35, 72.22, 69.61, 69.25, 71.82, 71.90, 71.48,
                                    64.52, 64.43, 71.50, 72.28, 73.21, 72.21), **_RD),
    Method("pkt", "PKT", term="pkt", term_weight=30000.0,
           published=published_row(74.54, 73.45, 70.34, 70.25, 72.61, 73.64, 72.88,
                                    67.13, 66.52, 73.01, 74.10, 74.69, 73.89), **_RD),
    Method("nst", "NST", term="nst", term_weight=50.0,
           published=published_row(73.68, 72.24, 69.60, 69.53, 71.96, 73.30, 71.53,
                                    58.16, 64.96, 71.28, 74.12, 74.68, 74.89), **_RD),
    Method("crd", "CRD", term="nce", term_weight=0.8, params=_NCE,
           published=published_row(75.48, 74.14, 71.16, 71.46, 73.48, 75.51, 73.94,
                                    69.73, 69.11, 74.30, 75.11, 75.65, 76.05), **_RD),
    Method("crd_kd", "CRD+KD", kd_weight=1.0, term="nce", term_weight=0.8, params=_NCE, **_RD),
    Method("dkd", "DKD", term="dkd", term_weight=1.0, source=MDISTILLER,
           params=dict(dkd_alpha=1.0, dkd_beta=lambda pair: dkd_beta(pair)[0], dkd_warmup=20),
           published=published_row(76.23, 74.81, 71.97, None, 74.11, 76.32, 74.68,
                                    69.71, 70.35, None, 76.45, None, 76.70)),
    Method("kd_ls", "KD+LS (logit standardization)", gamma=0.1, term="kd", term_weight=9.0,
           params=dict(logit_stand=True, term_temperature=lambda pair: float(logit_standardization(pair)[0][0]),
                       distill_weight=lambda pair: float(logit_standardization(pair)[0][1])),
           published=published_row(76.11, 74.37, 71.43, 71.48, 74.17, 76.62, 74.36,
                                    68.61, 69.02, None, None, 75.56, None), source=LOGIT_STANDARDIZATION),
    Method("dkd_ls", "DKD+LS (logit standardization)", term="dkd", term_weight=1.0,
           params=dict(logit_stand=True, term_temperature=lambda pair: float(logit_standardization(pair, True)[0][0]),
                       dkd_alpha=lambda pair: float(logit_standardization(pair, True)[0][1]),
                       dkd_beta=lambda pair: logit_standardization(pair, True)[0][1] * logit_standardization(pair, True)[0][2],
                       dkd_warmup=20),
           published=published_row(76.39, 74.89, 72.32, 71.85, 74.29, 77.01, 74.81,
                                    69.98, 70.45, None, None, 77.37, None), source=LOGIT_STANDARDIZATION),
    Method("dist", "DIST", term="dist", term_weight=2.0, params=dict(dist_tau=4.0), source=DIST,
           published=published_row(None, 74.43, 71.75, None, None, 76.31, None,
                                   None, 68.66, None, 76.34, 77.35, None)),
    Method("crd_infonce", "CRD, InfoNCE form (ours)", term="infonce", term_weight=0.8, params=_BANK,
           ours="one-direction InfoNCE against the teacher key of the same crop, negatives from a momentum bank "
                "shared by the batch, same-class images among them"),
    Method("crd_infonce_classaware", "CRD, InfoNCE form, class-aware (ours)", term="infonce", term_weight=0.8,
           params=dict(_BANK, class_aware=True), ours="the InfoNCE form without same-class negatives"),
    Method("lwsupcrd", "LW-SupCRD", term="lwsupcrd", term_weight=0.8, params=dict(_BANK, **_LW),
           ours="takes CRD's weights"),
    Method("lwsupcrd_kd", "LW-SupCRD+KD", kd_weight=1.0, term="lwsupcrd", term_weight=0.8, params=dict(_BANK, **_LW),
           ours="takes CRD+KD's weights"),
    Method("supcrd_unweighted", "SupCRD, unweighted (control)", term="lwsupcrd", term_weight=0.8,
           params=dict(_BANK, **dict(_LW, alpha=1.0, beta=1.0, adaptive_beta=False, logit_weighting=False)),
           ours="LW-SupCRD with alpha = beta = 1 and no teacher probabilities"),
    Method("supcrd_onehot", "SupCRD at a one-hot teacher's weights (control)", term="lwsupcrd", term_weight=0.8,
           params=dict(_BANK, **dict(_LW, beta=onehot_teacher_beta(_LW["beta"]), adaptive_beta=False,
                                     logit_weighting=False)),
           ours="LW-SupCRD's push strength for a one-hot teacher, without its probabilities"),
]
_TEACHERS = [
    Method("ce", "Teacher (cross-entropy)", protocol="both", step=step_ce),
    Method("published", "Teacher read from a file (not trained)", protocol="both"),
]
_OL = dict(protocol="lwsupcrd", views=2)  # the original's contrastive runs see two views of each image
_ORIGINAL = [
    Method("projection", "Teacher's projection head", step=step_projection, **_OL),
    Method("undistilled", "Undistilled student", step=step_undistilled, **_OL),
    Method("supcon", "SupCon", step=with_online_classifier(step_supcon), **_OL),
    Method("crd", "CRD (the original's instance form, or our in-batch InfoNCE)", step=with_online_classifier(step_crd),
           teacher=True, **_OL),
    Method("lwsupcrd", "LW-SupCRD", step=with_online_classifier(step_lwsupcrd), teacher=True, **_OL),
]
METHODS: dict[str, Method] = {m.key: m for m in _STANDARD + _TEACHERS + _ORIGINAL}
STANDARD: dict[str, Method] = {m.name: m for m in _STANDARD}  # the benchmark table's rows, in order


def method_key(cfg: dict) -> str:
    """The `METHODS` key a run's config names: its `recipe` (standard) or `method` (teacher, original)."""
    method = cfg["method"]
    if method == "standard":
        return cfg["recipe"]
    return method if method in ("ce", "published") else f"lwsupcrd/{method}"


def method_of(cfg: dict) -> Method:
    if method_key(cfg) not in METHODS:
        raise ValueError(f"unknown method {method_key(cfg)!r}; the registry holds {', '.join(METHODS)}")
    return METHODS[method_key(cfg)]


def needs_teacher(cfg: dict) -> bool:
    return method_of(cfg).needs_teacher


def trains_teacher_head(cfg: dict) -> bool:
    """Whether the step trains the teacher's projection head with the student."""
    return method_of(cfg).trains_teacher_head


def step_of(cfg: dict) -> Callable:
    """The run's training step (a teacher read from a file has none)."""
    method = method_of(cfg)
    if method.name == "published":
        raise ValueError(f"{method.label}: nothing to train")
    return method.step or standard_step


def build_extras(cfg: dict, student, teacher, train) -> nn.Module | None:
    """The method's extra modules and state for this run, or None: the original's class prototypes
    for its head pre-training (bias-free, as its `Linear(64, classes, bias=False)`), or a standard
    method's term's."""
    if cfg["method"] == "projection" and cfg.get("head_pretraining") == "cosine_prototype":
        return nn.Linear(student.projection[-1].out_features, cfg["num_classes"], bias=False)
    method = method_of(cfg)
    term = TERMS[method.term] if method.term else None
    return term.build(cfg, student, teacher, train) if term is not None and term.build else None


def standard_step(ctx, batch):
    """gamma CE + a KD + b L_term on one view; the term's features are read as `TERMS` says."""
    cfg, method = ctx.cfg, method_of(ctx.cfg)
    term = TERMS[method.term] if method.term else None
    stages = t_stages = t_pooled = t_logits = None
    if term is not None and term.reads == "stages":
        _, embedding, logits, stages = ctx.model.stages(batch.x)
    else:
        _, embedding, logits = ctx.nets.forward(batch.x)
    if ctx.teacher is not None:
        with torch.inference_mode():
            if term is not None and term.reads == "stages":
                _, _, t_logits, t_stages = ctx.teacher.stages(batch.x)
                t_pooled = t_stages[-1]
            else:
                t_pooled = ctx.nets.teacher_features(batch.x)
                t_logits = ctx.teacher.classifier(t_pooled)
        # clones outside inference mode: tensors autograd may read (the teacher's head trains on t_pooled)
        t_logits, t_pooled = t_logits.float().clone(), t_pooled.clone()
        t_stages = None if t_stages is None else [f.clone() for f in t_stages]
    distill, update, weights = None, None, {}
    if term is not None:
        out = Outputs(logits, embedding, stages, t_logits, t_pooled, t_stages)
        distill, update, weights = term.loss(ctx, batch, out)
    loss, parts = student_objective(logits, batch.labels, t_logits, distill, cfg["gamma"], cfg["kd_weight"],
                                    cfg["distill_weight"], cfg["kd_temperature"], validate=False)
    return StepResult(loss, parts, (logits.argmax(1) == batch.labels).sum(), len(batch.labels),
                      bank_update=update, weights=weights)


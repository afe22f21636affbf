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

from .losses import onehot_teacher_beta, student_objective
from .pairs import (LOGIT_STANDARDIZATION, MDISTILLER, REPDISTILLER, REVIEWKD, dkd_beta, logit_standardization,
                    published_row, reviewkd_weight)
from .steps import (StepResult, step_ce, step_crd, step_lwsupcrd, step_projection, step_supcon,
                    step_undistilled, with_online_classifier)
from .terms import TERMS, Outputs

# LW-SupCRD's defaults: the run every sweep of the original protocol passes through
SWEEP_CENTRE = dict(alpha=1.0, beta=10.0, temperature=0.07)


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
        for key in ("dkd_warmup", "review_warmup"):  # 20 of the references' 240 epochs, in proportion to this budget
            if key in params:
                params[key] = max(1, round(epochs * params[key] / 240))
        return {**dict(recipe=self.name, gamma=self.gamma, kd_weight=self.kd_weight, distill=self.term or "none",
                       distill_weight=self.term_weight), **params}  # a param may set b per pair

    @property
    def key(self) -> str:  # in `METHODS`: the name, an original-protocol row's after its protocol
        return f"{self.protocol}/{self.name}" if self.protocol == "lwsupcrd" else self.name

    @property
    def init(self):  # the `terms.Init` its term runs before distilling, or None
        return TERMS[self.term].init if self.protocol == "standard" and self.term else None

    def undefined_for(self, teacher_channels: tuple, student_channels: tuple) -> str | None:
        """Why the method is not defined for networks with these stage channels, or None (FSP needs equal ones)."""
        if self.term and TERMS[self.term].equal_channels and teacher_channels[:-1] != student_channels[:-1]:
            return f"{self.label} needs equal channels at every stage (teacher {teacher_channels[:-1]}, " \
                   f"student {student_channels[:-1]}), as its reference requires"
        return None

    @property
    def needs_teacher(self) -> bool:
        if self.protocol != "standard":
            return self.teacher
        return bool(self.kd_weight) or self.term is not None

    @property
    def trains_teacher_head(self) -> bool:
        if self.protocol != "standard":  # the teachers and the initialisation ("both") train no teacher head
            return self.teacher and self.protocol == "lwsupcrd"
        return self.term is not None and TERMS[self.term].trains_teacher_head


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
    Method("ab", "AB", term="abound", term_weight=1.0,
           published=published_row(72.50, 72.38, 69.47, 69.53, 70.98, 73.17, 70.94,
                                    66.06, 67.20, 70.65, 73.55, 74.31, 73.34), **_RD),
    Method("ft", "FT", term="factor", term_weight=200.0,
           published=published_row(73.25, 71.59, 69.84, 70.22, 72.37, 72.86, 70.58,
                                    61.78, 60.99, 70.29, 71.75, 72.50, 72.03), **_RD),
    Method("fsp", "FSP", term="fsp", term_weight=50.0,
           published=published_row(72.91, None, 69.95, 70.11, 71.89, 72.62, 70.23,
                                    None, None, None, None, None, None), **_RD),
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
    Method("reviewkd", "ReviewKD", term="review", term_weight=5.0, source=REVIEWKD,
           params=dict(distill_weight=lambda pair: reviewkd_weight(pair)[0], review_warmup=20)),
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
    Method("dist", "DIST", term="dist", term_weight=2.0, params=dict(dist_tau=4.0),
           source="DIST README, commit 2418f18 (Huang et al., NeurIPS 2022), mean ± sd of its runs (the sd not shown "
                  "here); weights from its CIFAR config (hunto/image_classification_sota 6f7a70a, dist_cifar.yaml: "
                  "CE 1, DIST 2, tau 4)",
           published=published_row(None, 74.43, 71.75, None, None, 76.31, None,
                                   None, 68.66, None, 76.34, 77.35, None)),
    Method("crd_infonce", "CRD, InfoNCE form (ours)", term="infonce", term_weight=0.8, params=_BANK,
           ours="one-direction InfoNCE against the teacher key of the same crop, negatives from a momentum bank "
                "shared by the batch, same-class images among them"),
    Method("crd_infonce_classaware", "CRD, InfoNCE form, class-aware (ours)", term="infonce", term_weight=0.8,
           params=dict(_BANK, class_aware=True), ours="the InfoNCE form without same-class negatives"),
    Method("lwsupcrd", "LW-SupCRD", term="lwsupcrd", term_weight=0.8, params=dict(_BANK, **_LW),
           ours="takes CRD's weights; the per-positive form (one term per positive, `losses.lw_supcrd_loss`)"),
    Method("lwsupcrd_anchor", "LW-SupCRD, the original's anchor form", term="lwsupcrd", term_weight=0.8,
           params=dict(_BANK, **_LW, lw_form="anchor", own_key=True),
           ours="takes CRD's weights; the original code's form: one term per anchor, all its positives together, "
                "its own teacher key among them (`original_losses.lw_supcrd_anchor_loss`)"),
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


def step_init(ctx, batch):
    """One step of a two-stage method's initialisation (`terms.Init`): its objective alone."""
    loss = initialisation_of(ctx.cfg).loss(ctx, batch)
    return StepResult(loss, {"init": loss}, None, 0)


_TEACHERS = [
    Method("ce", "Teacher (cross-entropy)", protocol="both", step=step_ce),
    Method("published", "Teacher read from a file (not trained)", protocol="both"),
    Method("initialisation", "A two-stage method's initialisation (its run's `recipe`)", protocol="both",
           step=step_init, teacher=True),
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
    """The `METHODS` key a run's config names: its `recipe` (standard) or `method` (teacher,
    initialisation, original)."""
    method = cfg["method"]
    if method == "standard":
        return cfg["recipe"]
    return method if method in {m.name for m in _TEACHERS} else f"lwsupcrd/{method}"


def method_of(cfg: dict) -> Method:
    if method_key(cfg) not in METHODS:
        raise ValueError(f"unknown method {method_key(cfg)!r}; the registry holds {', '.join(METHODS)}")
    return METHODS[method_key(cfg)]


def needs_teacher(cfg: dict) -> bool:
    return method_of(cfg).needs_teacher


def initialisation_of(cfg: dict):
    """The `terms.Init` an initialisation run trains (its `recipe`'s term's), or None for any other run."""
    return STANDARD[cfg["recipe"]].init if cfg["method"] == "initialisation" else None


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
    init = initialisation_of(cfg)
    if init is not None:
        return init.build(student, teacher, train) if init.build else None
    method = method_of(cfg)
    term = TERMS[method.term] if method.term else None
    return term.build(cfg, student, teacher, train) if term is not None and term.build else None


def start_from_initialisation(name: str, student, extras: nn.Module | None, init_student, init_state: dict) -> None:
    """A two-stage method's distillation starts from its initialisation's student and from those of its
    modules that carry the same names (FT's paraphraser); the rest start fresh. An initialisation
    module with no place among them is an error, never dropped in silence."""
    student.load_state_dict(init_student.state_dict())
    if extras is not None:
        kept = extras.load_state_dict(init_state, strict=False)
        if kept.unexpected_keys:
            raise RuntimeError(f"[{name}] its initialisation holds modules it has no place for: "
                               f"{kept.unexpected_keys[:4]}")


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
                _, _, t_logits, t_stages = ctx.teacher.stages(batch.x, preact=term.teacher_preact)
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


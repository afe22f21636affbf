"""The experiment, stated once: presets, sweep grids and their centre, and every run of the
protocol with its stage, the teacher it is distilled against and the control it is compared with.

Run names follow the original work: `teacher_<t>_<d>`, `teacher_<t>_<d>_with_projection`,
`student_<what>_<s>_<d>`; with `--seeds`, each name ends in `_seed<k>`.
"""
from __future__ import annotations

from .comparisons import STANDARD as STANDARD_FAMILY, compared
from .data import DATASETS
from .models import stage_channels
from .losses import onehot_teacher_beta
from .methods import STANDARD, SWEEP_CENTRE  # noqa: F401 (SWEEP_CENTRE: stated with the methods)
from .pairs import PAIRS, student_lr
from .runs import Run

STAGES = ("teacher", "projection", "baselines", "lwsupcrd", "bank_ablation")
ABLATION_SCHEDULE = dict(weight_decay=1e-4, schedule="cosine")  # the original's memory-bank ablation

_PAPER_GRID = dict(alpha_sweep=(1.0, 2.0, 5.0, 10.0), beta_sweep=(1.0, 5.0, 10.0, 12.0), tau_sweep=(0.05, 0.07),
                   alpha_modes=("weight",))
# The original work as its code runs it (reducereX/ATML_Proj; docs/method.md has each choice, where it
# was read, and ours). Each is a setting: `--set lw_form=per_positive` and the like switch one back.
ORIGINAL = dict(
    accuracy="online",  # its online linear classifier, read after the last epoch (ours: "probe", beside it always)
    online_lr=1e-3,  # that classifier's own Adam
    proj_head="original",  # MLP heads: student F->128->64, teacher F->512->128->64 (ours: "linear")
    head_pretraining="cosine_prototype",  # the teacher head's pre-training (ours: "supcon")
    teacher_bn_drift=True,  # the teacher stays in train mode during that pre-training (a quirk)
    teacher_head_lr_scale=0.1,  # the teacher head's own Adam at lr/10 (ours: None, in the student's optimiser)
    color_jitter=0.2,  # ColorJitter(0.2, 0.2, 0.2) on both views (ours: 0)
    lw_form="anchor",  # one term per anchor (ours: "per_positive")
    own_key=True,  # the anchor's own teacher key among its positives (the 12-22 notebook; the port: False)
    crd_form="instance",  # its baseline CRD (ours: "ours", our InfoNCE form)
    undistilled_views=1,  # the undistilled student trains on one view (ours: 2)
    bank_form="port",  # the bank as the later port runs it (ours: "ours")
)
# the head widths of the original's MLP heads, by role
ORIGINAL_HEADS = {"teacher": [512, 128], "student": [128]}
# Each preset is a complete set of defaults; flags and `--set key=value` override single keys.
PRESETS: dict[str, dict] = {
    # the original protocol: CIFAR-100, ResNet-50 -> ResNet-18
    "paper": dict(dataset="cifar100", teacher_arch="resnet50", student_arch="resnet18", train_subset=None,
                  teacher_epochs=200, teacher_lr=0.1, projection_epochs=10, student_epochs=50, batch_size=128,
                  student_batch_size=None, student_lr=1e-3, student_weight_decay=0.0, student_schedule="constant",
                  bank_negatives=4096, bank_init_pair=True, probe_epochs=30, bank_ablation=True, seed=42,
                  seeds=None, shared_teacher=False, **_PAPER_GRID, **ORIGINAL),
    # CPU-sized: small CIFAR ResNets, a class-balanced subset, few epochs, the main comparison only
    "quick": dict(dataset="cifar100", teacher_arch="resnet20", student_arch="resnet8", train_subset=12_000,
                  teacher_epochs=12, teacher_lr=0.1, projection_epochs=2, student_epochs=4, batch_size=128,
                  student_batch_size=None, student_lr=2e-3, student_weight_decay=0.0, student_schedule="constant",
                  bank_negatives=4096, bank_init_pair=True, probe_epochs=15, bank_ablation=False, seed=0,
                  seeds=None, shared_teacher=False, alpha_sweep=(1.0, 5.0), beta_sweep=(), tau_sweep=(), alpha_modes=("weight",), **ORIGINAL),
    # real images on 2 CPU cores within 2 hours: every comparison the evidence needs, five seeds, one
    # teacher (and its head) shared by every seed; every student shares the bank ablation's schedule,
    # so the bank run's matched control is the main LW-SupCRD run. The teacher and its head train on
    # the whole training split; the students and their probes on a class-balanced 7,500 per seed.
    "evidence": dict(dataset="fashion-mnist", teacher_arch="resnet20", student_arch="resnet8", train_subset=7_500,
                     teacher_train_subset=None, teacher_epochs=5, teacher_lr=0.1, projection_epochs=2, student_epochs=8, batch_size=128,
                     student_batch_size=64, student_lr=5e-3, student_weight_decay=1e-4, student_schedule="cosine",
                     bank_negatives=4096, bank_init_pair=False, probe_epochs=15, bank_ablation=False, seed=0,
                     seeds=(0, 1, 2, 3, 4), shared_teacher=True, alpha_sweep=(1.0,), beta_sweep=(), tau_sweep=(),
                     alpha_modes=("weight",), **ORIGINAL),
    # seconds: every run of the protocol on a tiny budget, for tests
    "smoke": dict(dataset="cifar100", teacher_arch="resnet8", student_arch="resnet8", train_subset=1000,
                  teacher_epochs=1, teacher_lr=0.05, projection_epochs=1, student_epochs=1, batch_size=32,
                  student_batch_size=None, student_lr=1e-3, student_weight_decay=0.0, student_schedule="constant",
                  bank_negatives=64, bank_init_pair=True, probe_epochs=2, bank_ablation=True, seed=0, seeds=None,
                  shared_teacher=False, **_PAPER_GRID, **ORIGINAL),
}


def fmt(x: float) -> str:
    return repr(float(x))


def _lw(student: dict, alpha: float, beta: float, tau: float, alpha_mode: str = "weight", **extra) -> dict:
    """An LW-SupCRD run's config; the "logit" reading of alpha exists in the per-positive form only."""
    cfg = dict(student, method="lwsupcrd", alpha=alpha, beta=beta, temperature=tau, adaptive_beta=True,
               alpha_mode=alpha_mode, logit_weighting=True, **extra)
    if alpha_mode == "logit":
        cfg["lw_form"] = "per_positive"
    return cfg


def head_config(head: str, role: str) -> dict:
    """A run's projection-head keys for the preset's `proj_head` ("original", "linear" or "mlp")."""
    if head == "original":
        return dict(proj_head="mlp", proj_hidden=ORIGINAL_HEADS[role])
    return dict(proj_head=head)


def _sweep_grid(settings: dict) -> list[tuple[float, float, float, str]]:
    """(alpha, beta, tau, alpha_mode) of every LW-SupCRD sweep run, the centre first, no repeats."""
    c = SWEEP_CENTRE
    grid = [(c["alpha"], c["beta"], c["temperature"], "weight")]
    for mode in settings["alpha_modes"]:
        grid += [(a, c["beta"], c["temperature"], mode) for a in settings["alpha_sweep"]]
    grid += [(c["alpha"], b, c["temperature"], "weight") for b in settings["beta_sweep"]]
    grid += [(c["alpha"], c["beta"], tau, "weight") for tau in settings["tau_sweep"]]
    return list(dict.fromkeys(grid))


def _teacher_runs(settings: dict, common: dict) -> list[Run]:
    """The teacher (trained, or read from `teacher_checkpoint` with its own head) and its projection
    head's pre-training, on the teacher's training split."""
    d, t = settings["dataset"], settings["teacher_arch"]
    head = head_config(settings["proj_head"], "teacher")
    checkpoint = settings.get("teacher_checkpoint")
    if checkpoint:  # a published teacher (the original's: detectors' resnet50_cifar100)
        teacher = Run(f"teacher_{t}_{d}_published", "teacher", dict(
            common, **head, method="published", arch=t, epochs=0, checkpoint=checkpoint["path"],
            checkpoint_sha256=checkpoint["sha256"]))
    else:
        teacher = Run(f"teacher_{t}_{d}", "teacher", dict(
            common, **head, method="ce", arch=t, epochs=settings["teacher_epochs"], optimizer="sgd",
            lr=settings["teacher_lr"], momentum=0.9, weight_decay=5e-4, schedule="cosine",
            train_subset=settings.get("teacher_train_subset", settings["train_subset"])))
    cosine = settings["head_pretraining"] == "cosine_prototype"
    projection = Run(f"{teacher.name}_with_projection", "projection", dict(
        common, **head, method="projection", arch=t, train_subset=settings.get("teacher_train_subset",
                                                                               settings["train_subset"]),
        epochs=settings["projection_epochs"], optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant",
        temperature=SWEEP_CENTRE["temperature"], head_pretraining=settings["head_pretraining"],
        views=1 if cosine else 2, teacher_bn_drift=settings["teacher_bn_drift"],
        color_jitter=settings["color_jitter"]), (teacher.name,))
    return [teacher, projection]


def build_runs(settings: dict) -> list[Run]:
    """Every run of the protocol for these settings, each after the runs it needs."""
    d, s = settings["dataset"], settings["student_arch"]
    info = DATASETS[d]
    common = dict(dataset=d, num_classes=info.num_classes, in_channels=info.channels,
                  train_subset=settings["train_subset"], batch_size=settings["batch_size"],
                  seed=settings["seed"], proj_dim=64, probe_epochs=settings["probe_epochs"])
    runs = _teacher_runs(settings, common)
    proj = runs[-1].name
    c = SWEEP_CENTRE
    plain = dict(common, **head_config(settings["proj_head"], "student"), arch=s, epochs=settings["student_epochs"],
                 optimizer="adam", lr=settings["student_lr"],
                 batch_size=settings.get("student_batch_size") or settings["batch_size"],
                 weight_decay=settings["student_weight_decay"], schedule=settings["student_schedule"],
                 color_jitter=settings["color_jitter"])
    # every contrastive student is read by the online classifier, when that is the measurement
    student = dict(plain, online_classifier=settings["accuracy"] == "online", online_lr=settings["online_lr"])
    teacher_side = dict(teacher_head_lr_scale=settings["teacher_head_lr_scale"], lw_form=settings["lw_form"],
                        own_key=settings["own_key"], crd_form=settings["crd_form"])

    def distilled(name, stage, cfg, **kw):
        return Run(name, stage, {**teacher_side, **cfg}, (proj,), teacher=proj, **kw)

    runs += [
        Run(f"student_undistilled_{s}_{d}", "baselines",
            dict(plain, method="undistilled", views=settings["undistilled_views"])),
        Run(f"student_baseline_supcon_{s}_{d}", "baselines", dict(student, method="supcon",
                                                                  temperature=c["temperature"])),
        distilled(f"student_baseline_crd_{s}_{d}", "baselines", dict(student, method="crd",
                                                                      temperature=c["temperature"])),
    ]
    if settings["crd_form"] == "ours":  # the published CRD's negatives are of other classes only
        runs.append(distilled(f"student_baseline_crd_classaware_{s}_{d}", "baselines",
                              dict(student, method="crd", temperature=c["temperature"], class_aware=True)))
    runs += [
        # class-level contrast against teacher keys with constant weights: what the logit weighting adds to
        distilled(f"student_supcrd_unweighted_{s}_{d}", "baselines",
                  dict(_lw(student, 1.0, 1.0, c["temperature"]), adaptive_beta=False, logit_weighting=False)),
        # LW-SupCRD's own weights for a one-hot teacher: its strength without the teacher's probabilities
        distilled(f"student_supcrd_onehot_{s}_{d}", "baselines",
                  dict(_lw(student, c["alpha"], onehot_teacher_beta(c["beta"]), c["temperature"]),
                       adaptive_beta=False, logit_weighting=False)),
    ]
    centre_name = ""
    for a, b, tau, mode in _sweep_grid(settings):
        name = f"student_alpha_{fmt(a)}_beta_{fmt(b)}_temp_{fmt(tau)}{'_logit' if mode == 'logit' else ''}_{s}_{d}"
        centre = (a, b, tau) == (c["alpha"], c["beta"], c["temperature"])
        centre_name = centre_name or name
        runs.append(distilled(name, "lwsupcrd", _lw(student, a, b, tau, mode), centre=centre))
    other_form = "per_positive" if settings["lw_form"] == "anchor" else "anchor"  # the other form, at the centre
    runs.append(distilled(f"student_lwsupcrd_{other_form.replace('_', '')}_{s}_{d}", "lwsupcrd",
                          dict(_lw(student, c["alpha"], c["beta"], c["temperature"]), lw_form=other_form),
                          control=centre_name))
    return runs + _bank_runs(settings, student, distilled, centre_name)


def _bank_runs(settings: dict, student: dict, distilled, centre_name: str) -> list[Run]:
    """The memory-bank ablation: each bank run beside its matched control (the same run without the
    bank: the sweeps' centre when it shares the ablation's schedule)."""
    d, s, c = settings["dataset"], settings["student_arch"], SWEEP_CENTRE
    k = settings["bank_negatives"]
    bank = dict(bank_negatives=k, bank_momentum=0.5, bank_init="random", bank_form=settings["bank_form"])
    ablation = {**student, **ABLATION_SCHEDULE}
    shares_schedule = ablation == student
    lw_nobank = f"student_lwsupcrd_nobank_{s}_{d}"
    runs = []
    if settings["bank_ablation"]:
        crd_nobank = f"student_baseline_crd_nobank_{s}_{d}"
        runs += [
            distilled(crd_nobank, "bank_ablation", dict(ablation, method="crd", temperature=c["temperature"])),
            distilled(f"student_baseline_crd_bank{k}_{s}_{d}", "bank_ablation",
                      dict(ablation, method="crd", temperature=c["temperature"], **bank), control=crd_nobank),
        ]
    if settings["bank_ablation"] or not shares_schedule:
        runs.append(distilled(lw_nobank, "bank_ablation", _lw(ablation, c["alpha"], c["beta"], c["temperature"])))
    lw_bank = f"student_lwsupcrd_bank{k}_{s}_{d}"
    runs.append(distilled(lw_bank, "bank_ablation", _lw(ablation, c["alpha"], c["beta"], c["temperature"], **bank),
                          control=centre_name if shares_schedule and not settings["bank_ablation"] else lw_nobank))
    if settings["bank_init_pair"]:
        runs.append(distilled(f"student_lwsupcrd_bank{k}_teacherinit_{s}_{d}", "bank_ablation",
                              _lw(ablation, c["alpha"], c["beta"], c["temperature"], **dict(bank, bank_init="teacher")),
                              control=lw_bank))
    return runs


def build_study_runs(settings: dict, seeds: list[int] | None) -> list[Run]:
    """One chain of runs per seed (names end in `_seed<k>`), or the plain chain without seeds. With
    `shared_teacher` (as the literature does), the teacher (and its projection head, in the original
    protocol) is trained once, with the first seed, and every seed's students are distilled from it."""
    build = build_standard_runs if settings.get("protocol") == "standard" else build_runs
    if not seeds:
        return build(settings)
    shared = {r.name: r for r in build({**settings, "seed": seeds[0]}) if r.stage in ("teacher", "projection")} \
        if settings.get("shared_teacher") else {}

    def seeded(name, seed):
        return f"{name}_seed{seed}" if name and name not in shared else name

    runs = list(shared.values())
    for seed in seeds:
        for r in build({**settings, "seed": seed}):
            if r.name in shared:
                continue
            runs.append(Run(seeded(r.name, seed), r.stage, r.cfg, tuple(seeded(d, seed) for d in r.requires),
                            base=r.name, teacher=seeded(r.teacher, seed), control=seeded(r.control, seed),
                            centre=r.centre, init=seeded(r.init, seed)))
    return runs


# ---------------------------------------------------------------- the standard protocol
# CRD's CIFAR-100 benchmark (Tian et al., ICLR 2020, code: RepDistiller): cross-entropy plus a
# distillation term on one augmented view, scored by the student's own classifier at the last epoch.
STANDARD_STAGES = ("teacher", "initialisation", "distillation")
STANDARD_PAIRS = PAIRS
_REFERENCE_RECIPE = dict(batch_size=64, lr=0.05, lr_milestones=(150, 180, 210), lr_decay=0.1, weight_decay=5e-4,
                         kd_temperature=4.0, embed_dim=128, teacher_checkpoint=None, seed=0, seeds=None,
                         teacher_train_subset=None, teacher_lr_milestones=(150, 180, 210), shared_teacher=True,
                         score_every=1)  # the test split after every k-th epoch and the last (0: the last only)


def scored_epoch(cfg: dict, epoch: int) -> bool:
    """Whether the test split is scored after `epoch` (counted from 1): every `score_every`-th and the last."""
    every = cfg.get("score_every", 0)
    return epoch == cfg["epochs"] or (every > 0 and epoch % every == 0)


def scaled_milestones(epochs: int) -> tuple[int, ...]:
    """The references' decay epochs (150, 180, 210 of 240) at the same fractions of `epochs`."""
    return tuple(max(1, round(epochs * m / 240)) for m in (150, 180, 210))


STANDARD_PRESETS: dict[str, dict] = {
    # the references' recipe; CRD's bank draws 16384 negatives per anchor (its NCE memory)
    "paper": dict(_REFERENCE_RECIPE, dataset="cifar100", teacher_arch="resnet32x4", student_arch="resnet8x4",
                  train_subset=None, teacher_epochs=240, student_epochs=240, bank_negatives=16384),
    # seconds: every method of the protocol on a tiny budget, for tests
    "smoke": dict(_REFERENCE_RECIPE, dataset="cifar100", teacher_arch="resnet14", student_arch="resnet8",
                  train_subset=1000, teacher_epochs=2, student_epochs=2, batch_size=32, lr_milestones=(1,),
                  teacher_lr_milestones=(1,), bank_negatives=64),
    # real images on 2 CPU cores (Fashion-MNIST): one teacher on the whole training split, students on
    # a class-balanced subset drawn per seed, where the teacher is clearly better than a vanilla student;
    # the methods the declared family compares (`comparisons.STANDARD`), five seeds each, within 2 hours
    "evidence": dict(_REFERENCE_RECIPE, dataset="fashion-mnist", teacher_arch="resnet20", student_arch="resnet8",
                     train_subset=2000, teacher_epochs=8, teacher_lr_milestones=scaled_milestones(8),
                     student_epochs=30, lr_milestones=scaled_milestones(30), bank_negatives=1024, seeds=(0, 1, 2, 3, 4),
                     score_every=5, methods="family"),
}


def build_standard_runs(settings: dict) -> list[Run]:
    """The standard protocol's runs for one teacher-student pair: the teacher (trained with the
    recipe, or read from `teacher_checkpoint`), then one student per standard method of `methods.STANDARD`
    (with `methods="family"`, those the declared family compares, in the table's order)."""
    d, t, s = settings["dataset"], settings["teacher_arch"], settings["student_arch"]
    info = DATASETS[d]
    c = SWEEP_CENTRE
    common = dict(protocol="standard", dataset=d, num_classes=info.num_classes, in_channels=info.channels,
                  train_subset=settings["train_subset"], batch_size=settings["batch_size"], seed=settings["seed"],
                  proj_dim=settings["embed_dim"], proj_head="linear", optimizer="sgd", lr=settings["lr"],
                  momentum=0.9, weight_decay=settings["weight_decay"], schedule="step",
                  lr_milestones=list(settings["lr_milestones"]), lr_decay=settings["lr_decay"])
    checkpoint = settings.get("teacher_checkpoint")
    if checkpoint:
        teacher = Run(f"std_teacher_{t}_{d}_published", "teacher",
                      dict(common, method="published", arch=t, epochs=0, checkpoint=checkpoint["path"],
                           checkpoint_sha256=checkpoint["sha256"]))
    else:
        teacher = Run(f"std_teacher_{t}_{d}", "teacher", dict(
            common, method="ce", arch=t, epochs=settings["teacher_epochs"], train_subset=settings["teacher_train_subset"],
            lr_milestones=list(settings["teacher_lr_milestones"])))
    student = dict(common, arch=s, epochs=settings["student_epochs"], method="standard",
                   kd_temperature=settings["kd_temperature"], temperature=c["temperature"],
                   score_every=settings["score_every"],  # RepDistiller's lr for MobileNetV2/ShuffleNet students
                   lr=student_lr(s, settings["lr"]) if settings["lr"] == _REFERENCE_RECIPE["lr"] else settings["lr"])
    runs = [teacher]
    for name, method in _methods(settings).items():
        cfg = dict(student, **method.config(f"{t}-{s}", settings["student_epochs"]))
        for key in ("bank_negatives", "nce_negatives"):  # the preset's number of negatives
            if key in cfg:
                cfg[key] = settings["bank_negatives"]
        if method.init is not None:  # RepDistiller's init: 30 of 240 epochs, constant lr, before distilling
            unscored = {k: v for k, v in cfg.items() if k != "score_every"}
            init = Run(f"std_{name}_init_{s}_from_{t}_{d}", "initialisation", dict(
                unscored, method="initialisation", epochs=max(1, round(settings["student_epochs"] * 30 / 240)),
                lr=method.init.lr(s, cfg["lr"]), schedule="constant"), (teacher.name,), teacher=teacher.name)
            runs += [init, Run(f"std_{name}_{s}_from_{t}_{d}", "distillation", cfg, (teacher.name, init.name),
                               teacher=teacher.name, init=init.name)]
        elif method.needs_teacher:
            runs.append(Run(f"std_{name}_{s}_from_{t}_{d}", "distillation", cfg, (teacher.name,), teacher=teacher.name))
        else:
            runs.append(Run(f"std_{name}_{s}_{d}", "distillation", cfg))
    return runs


def _methods(settings: dict) -> dict:
    """The standard methods the settings run (with `methods="family"`, those the declared family
    compares), in the table's order, less those not defined for the pair (`left_out`)."""
    family = compared(STANDARD_FAMILY) if settings.get("methods") == "family" else STANDARD
    return {n: m for n, m in STANDARD.items() if n in family and n not in left_out(settings)}


def left_out(settings: dict) -> dict[str, str]:
    """The standard methods not defined for the settings' pair, each with why (`Method.undefined_for`)."""
    if settings.get("protocol") != "standard":
        return {}
    channels = [stage_channels(settings[k], DATASETS[settings["dataset"]].channels) for k in ("teacher_arch", "student_arch")]
    return {n: why for n, m in STANDARD.items() if (why := m.undefined_for(*channels))}

"""The study's options, declared once: the preset (`protocol.PRESETS`) with overrides from the
command line, `--set KEY=VALUE`, or the notebook's parameters cell; parsed, type-checked and
validated before any work, each bad value named in one line."""
from __future__ import annotations

import argparse
import copy
import math
import json
import os
import shlex
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from .data import DATASETS, dataset_info
from .files import check_writable, file_sha256
from .published import hub_path
from . import scalars
from .machine import cpp_compiler, gpu_build_problem, resolve_device
from .models import MODEL_REGISTRY, PROJECTION_HEADS
from .protocol import PRESETS, STAGES, STANDARD_PRESETS, STANDARD_STAGES, SWEEP_CENTRE, build_study_runs
from .runs import Run, selects
from .steps import COMPILE_MODES


def option(default, help: str = "", **flag):
    """One option, declared once: its default, its help, and how its command-line flag parses
    (argparse keywords; `flag=` renames the flag). The flags are built from these declarations."""
    return field(default=default, metadata={"help": help, **flag})


PROTOCOLS = {"lwsupcrd": (PRESETS, STAGES), "standard": (STANDARD_PRESETS, STANDARD_STAGES)}


@dataclass
class StudyConfig:
    protocol: str = option("lwsupcrd", "lwsupcrd: the original study (contrastive students, linear probe); "
                           "standard: CRD's CIFAR-100 benchmark (CE + KD + distillation, the student's own "
                           "classifier)", choices=sorted(PROTOCOLS))
    preset: str = option("paper", "the protocol's size (see protocol.PRESETS and STANDARD_PRESETS)",
                         choices=sorted(set(PRESETS) | set(STANDARD_PRESETS)))
    pair: str | None = option(None, "TEACHER-STUDENT architectures, e.g. resnet32x4-resnet8x4 (default: the "
                              "preset's)", metavar="T-S")
    teacher_checkpoint: str | None = option(None, "read the teacher from this file instead of training it: a "
                                            "RepDistiller checkpoint, the detectors/timm CIFAR-100 ResNet-50 the "
                                            "original work uses, or one of ours; hub:NAME downloads a hub teacher "
                                            "once (hub:edadaltocg/resnet50_cifar100, the original's)",
                                            metavar="PATH")
    dataset: str | None = option(None, "default: the preset's", choices=sorted(DATASETS))
    data_dir: str = option("data", "where the dataset lives (or is downloaded to)")
    out_dir: str = option(".", "root of pth_models/, json_results/, plots/")
    device: str = option("auto", "", choices=["auto", "cpu", "cuda"])
    teacher_arch: str | None = option(None, "default: the preset's", choices=sorted(MODEL_REGISTRY))
    student_arch: str | None = option(None, "default: the preset's", choices=sorted(MODEL_REGISTRY))
    epochs: int | None = option(None, "student epochs (default: the preset's)", type=int)
    batch_size: int | None = option(None, "default: the preset's", type=int)
    seed: int | None = option(None, "one chain of runs with this seed (default: the preset's)", type=int)
    seeds: list[int] | None = option(None, "one chain of runs per seed; results give mean ± std", type=int,
                                     nargs="+")
    overrides: tuple[str, ...] = option((), "override one preset value, e.g. --set bank_negatives=1024 "
                                        "(type-checked; repeatable)", flag="--set", action="append",
                                        metavar="KEY=VALUE")
    force_retrain: bool | list[str] = option(False, "retrain even when a matching checkpoint exists: every run, or "
                                             "WHAT = stages and run-name patterns, comma-separated (e.g. "
                                             "bank_ablation,student_alpha_*); --no-force-retrain undoes it",
                                             nargs="?", const=True, metavar="WHAT")
    force_retrain_bank_ablation: bool = option(False, "retrain the memory-bank ablation runs (the original's flag)",
                                               action=argparse.BooleanOptionalAction)
    retrain_other_code: bool = option(False, "retrain exactly the cached runs whose checkpoint records other code "
                                      "than this (listed at the start of every study)", action="store_true")
    force_analysis: bool = option(False, "recompute metrics and figures of cached runs", action="store_true")
    sync_bn: bool = option(False, "SyncBatchNorm across torchrun processes (CUDA only)", action="store_true")
    cpu_bf16: bool = option(False, "bf16 autocast on the CPU (faster only where the CPU has bf16 units)",
                            action="store_true")
    compile: str | None = option(None, "run the networks through torch.compile (default mode if none is named; "
                                 "reduce-overhead adds CUDA graphs on a GPU)", nargs="?", const="default",
                                 choices=COMPILE_MODES)
    only: list[str] | None = option(None, "run just these and what they need: WHAT = stages and run-name "
                                    "patterns, comma-separated (e.g. bank_ablation or student_alpha_*)",
                                    metavar="WHAT")
    tensorboard: bool = option(False, "write each run's per-epoch scalars for TensorBoard under "
                               "<out-dir>/tensorboard/<run>-<id>/ (needs the tensorboard package)", action="store_true")
    list_runs: bool = option(False, "print the runs in order and exit", flag="--list", action="store_true")
    progress: bool = True  # not a flag: progress bars unless $TQDM_DISABLE

    def seed_list(self) -> list[int] | None:
        """The seeds of a multi-seed study (run names end in `_seed<k>`), or None for one plain chain:
        --seeds, else one chain for an explicit --seed, else the preset's seeds (if it has any)."""
        if self.seeds:
            return list(self.seeds)
        seeds = self.presets()[self.preset]["seeds"] if self.seed is None else None
        return list(seeds) if seeds else None

    def forces(self, run: Run, other_code: dict | None = None) -> bool:
        """Whether to retrain `run` whatever is cached. --force-retrain: every run, or stages and
        run-name patterns (matched with and without the seed suffix); --force-retrain-bank-ablation:
        the bank stage; --retrain-other-code: the runs in `other_code` (cached, trained by other code)."""
        if self.force_retrain is True or (self.force_retrain_bank_ablation and run.bank_ablation):
            return True
        return bool(self.retrain_other_code and run.name in (other_code or {})) or \
            any(selects(p, run) for p in (self.force_retrain or []))

    def presets(self) -> dict[str, dict]:  # of its protocol
        return PROTOCOLS[self.protocol][0]

    def settings(self) -> dict:
        """The preset with the overrides applied: what every run is built from (plain JSON values)."""
        s = {**self.presets()[self.preset],
             **dict(parse_override(self.preset, text, self.protocol) for text in self.overrides)}
        if self.pair:
            s["teacher_arch"], _, s["student_arch"] = self.pair.partition("-")
        if self.teacher_checkpoint:
            hub = self.teacher_checkpoint.startswith("hub:")
            path = hub_path(self.teacher_checkpoint[4:], self.out_dir) if hub else Path(self.teacher_checkpoint).resolve()
            s["teacher_checkpoint"] = {"path": str(path), "sha256": file_sha256(path) if path.is_file() else None}
        for key in ("dataset", "teacher_arch", "student_arch", "batch_size"):
            if getattr(self, key) is not None:
                s[key] = getattr(self, key)
        if self.epochs is not None:
            s["student_epochs"] = self.epochs
        seeds = self.seed_list()
        s["seed"] = seeds[0] if seeds else (self.seed if self.seed is not None else s["seed"])
        s["preset"], s["protocol"] = self.preset, self.protocol
        s["seeds"] = seeds or [s["seed"]]
        s["sweep_centre"] = SWEEP_CENTRE
        return json.loads(json.dumps(s))


NULLABLE = ("teacher_head_lr_scale",)  # settings whose `none` means "ours" (see RULES)


def parse_override(preset: str, text: str, protocol: str = "lwsupcrd") -> tuple[str, object]:
    """`KEY=VALUE` against the preset's value of KEY: same type (a list for a sweep, `none` for an
    optional number); anything else is one ValueError naming the key and what it takes."""
    key, sep, raw = text.partition("=")
    defaults = PROTOCOLS[protocol][0][preset]
    flags = ("seed", "seeds", "teacher_checkpoint")  # set by their own flags
    if not sep or key not in defaults or key in flags:
        choices = ", ".join(k for k in defaults if k not in flags)
        raise ValueError(f"--set {text!r}: expected KEY=VALUE with KEY one of {choices}")
    default = defaults[key]
    try:
        if key in NULLABLE and raw.lower() == "none":
            return key, None
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return key, raw.lower() in ("true", "1")
        if isinstance(default, tuple):
            cast = float if key.endswith("sweep") else int if key == "lr_milestones" else str
            if key.endswith("sweep") and raw.lower() == "none":
                return key, ()
            values = [x.strip() for x in raw.split(",")]
            if not all(values):
                raise ValueError
            return key, tuple(cast(x) for x in values)
        if default is None or isinstance(default, int):
            return key, None if raw.lower() == "none" and default is None else int(raw)
        return key, type(default)(raw)
    except ValueError:
        kind = ("true or false" if isinstance(default, bool) else "a comma-separated list of values" + (
                " (none: no sweep)" if key.endswith("sweep") else "") if isinstance(default, tuple) else "an integer or none" if default is None else
                {int: "an integer", float: "a number"}.get(type(default), "a string"))
        raise ValueError(f"--set {key}={raw!r}: {key} takes {kind} (preset {preset}: {default!r})") from None


# ---------------------------------------------------------------- command line
class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one line (and exit code 2), not argparse's usage block before it."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (python desupcon.py --help lists every option)\n")


def in_notebook() -> bool:
    return "ipykernel" in sys.modules and "IPython" in sys.modules


def given_flags() -> list[str]:
    """sys.argv, or inside a Jupyter kernel (whose sys.argv is the kernel's) $LWSUPCRD_ARGS."""
    return shlex.split(os.environ.get("LWSUPCRD_ARGS", "")) if in_notebook() else sys.argv[1:]


def flags_line() -> str:
    flags = shlex.join(given_flags()) or "none"
    return f"flags: {flags} (from $LWSUPCRD_ARGS, over the parameters cell)" if in_notebook() else f"flags: {flags}"


def parse_args(argv: list[str] | None, defaults: StudyConfig) -> StudyConfig:
    """Parse desupcon.py's flags (`argv`, else `given_flags()`) over `defaults` (its parameters)."""
    if argv is None:
        argv = given_flags()
    p = OneLineParser(prog="desupcon.py", description="Run the LW-SupCRD study.")
    for f in fields(StudyConfig):
        if "help" not in f.metadata:
            continue
        spec = dict(f.metadata)
        name = spec.pop("flag", "--" + f.name.replace("_", "-"))
        default = getattr(defaults, f.name)
        if f.name == "only":
            default = ",".join(default or []) or None
        elif f.name == "overrides":
            default = []  # the command line's; the defaults' own are kept below
        p.add_argument(name, dest=f.name, default=default, **spec)
    p.add_argument("--no-force-retrain", dest="force_retrain", action="store_false")
    a = p.parse_args(argv)
    cfg = copy.copy(defaults)
    for key, value in vars(a).items():
        setattr(cfg, key, value)
    cfg.only = [x.strip() for x in a.only.split(",") if x.strip()] if a.only is not None else None
    if cfg.only == []:
        p.error(f"--only {a.only!r} names nothing; give stages or run-name patterns, comma-separated (--list)")
    if cfg.seeds and len(set(cfg.seeds)) != len(cfg.seeds):
        p.error(f"--seeds must be distinct, got {cfg.seeds}")
    if isinstance(cfg.force_retrain, str):
        cfg.force_retrain = [x.strip() for x in cfg.force_retrain.split(",") if x.strip()]
    cfg.overrides = (*defaults.overrides, *a.overrides)
    try:
        [parse_override(cfg.preset, text, cfg.protocol) for text in cfg.overrides]  # each named at once if wrong
    except ValueError as err:
        p.error(str(err))
    cfg.progress = not os.environ.get("TQDM_DISABLE")
    return cfg


SEED_RANGE = (0, 2**32 - 1)  # what every generator the study seeds accepts


def _one_of(choices):
    return lambda v: v in choices, "one of " + ", ".join(map(str, choices))


def _at_least(low, optional: bool = False):
    return (lambda v: (optional and v is None) or (v is not None and v >= low),
            f"an integer >= {low}" + (" or none" if optional else ""))


_POSITIVE = (lambda v: 0 < v < math.inf, "a finite number > 0")
_NON_NEGATIVE = (lambda v: v >= 0, "a number >= 0")
_SEED = (lambda v: SEED_RANGE[0] <= v <= SEED_RANGE[1], f"an integer in [{SEED_RANGE[0]}, {SEED_RANGE[1]}]")
# each setting's allowed values: (check, what it takes); every setting of every preset has a rule (a test checks)
RULES = {
    "protocol": _one_of(sorted(PROTOCOLS)), "preset": (lambda v: True, "a preset"),
    "dataset": _one_of(sorted(DATASETS)), "teacher_arch": _one_of(sorted(MODEL_REGISTRY)),
    "student_arch": _one_of(sorted(MODEL_REGISTRY)), "proj_head": _one_of(("original", *PROJECTION_HEADS)),
    "train_subset": _at_least(2, optional=True), "teacher_train_subset": _at_least(2, optional=True),
    "teacher_epochs": _at_least(1), "projection_epochs": _at_least(1), "student_epochs": _at_least(1),
    "probe_epochs": _at_least(1), "batch_size": _at_least(2), "student_batch_size": _at_least(2, optional=True),
    "teacher_lr": _POSITIVE, "student_lr": _POSITIVE, "lr": _POSITIVE, "student_weight_decay": _NON_NEGATIVE,
    "weight_decay": _NON_NEGATIVE, "student_schedule": _one_of(("constant", "cosine")),
    "bank_negatives": (lambda v: v >= 1, "an integer >= 1 (the bank runs need negatives; bank_ablation=false "
                       "drops the bank stage)"),
    "bank_init_pair": _one_of((True, False)), "bank_ablation": _one_of((True, False)),
    "alpha_sweep": (lambda v: all(x > 0 for x in v), "alpha values > 0"),
    "beta_sweep": (lambda v: all(x >= 0 for x in v), "beta values >= 0"),
    "tau_sweep": (lambda v: all(x > 0 for x in v), "temperatures > 0"),
    "alpha_modes": (lambda v: len(v) > 0 and len(set(v)) == len(v) and set(v) <= {"weight", "logit"},
                    "one or both of weight, logit, each once"),
    "lr_milestones": (lambda v: all(x >= 1 for x in v) and list(v) == sorted(set(v)),
                      "increasing epoch numbers >= 1"),
    "lr_decay": (lambda v: 0 < v <= 1, "a number in (0, 1]"), "kd_temperature": _POSITIVE,
    "embed_dim": _at_least(1), "teacher_checkpoint": (lambda v: True, "a file"),
    "teacher_lr_milestones": (lambda v: all(x >= 1 for x in v) and list(v) == sorted(set(v)),
                              "increasing epoch numbers >= 1"),
    "shared_teacher": _one_of((True, False)), "score_every": _at_least(0), "methods": _one_of(("family", "all")),
    "seed": _SEED, "seeds": (lambda v: all(_SEED[0](x) for x in v), f"seeds, each {_SEED[1]}"),
    "sweep_centre": (lambda v: True, "the protocol's"),
    # the original's choices and ours (protocol.ORIGINAL)
    "accuracy": _one_of(("online", "probe")), "online_lr": _POSITIVE,
    "head_pretraining": _one_of(("cosine_prototype", "supcon")), "teacher_bn_drift": _one_of((True, False)),
    "teacher_head_lr_scale": (lambda v: v is None or v > 0, "a number > 0, or none (the student's optimiser)"),
    "color_jitter": (lambda v: 0 <= v < 1, "a number in [0, 1)"), "lw_form": _one_of(("anchor", "per_positive")),
    "own_key": _one_of((True, False)), "crd_form": _one_of(("instance", "ours")),
    "undistilled_views": _one_of((1, 2)), "bank_form": _one_of(("port", "ours")),
}


def check_settings(s: dict) -> None:
    """Every setting against its rule (RULES), before any data is read: one ValueError line naming
    the first bad value and what it takes."""
    for key, value in s.items():
        check, takes = RULES[key]
        if not check(value):
            raise ValueError(f"{key}={value!r} is not allowed: {key} takes {takes}")


def validate(cfg: StudyConfig) -> list[Run]:
    """Check everything that can be checked before any work; raise ValueError with one line."""
    presets, stages = PROTOCOLS[cfg.protocol]
    if cfg.preset not in presets:
        raise ValueError(f"unknown preset {cfg.preset!r} for the {cfg.protocol} protocol; choose from "
                         f"{', '.join(presets)}")
    if cfg.pair is not None and (cfg.pair.count("-") != 1 or not all(p in MODEL_REGISTRY for p in cfg.pair.split("-"))):
        raise ValueError(f"--pair {cfg.pair!r}: expected TEACHER-STUDENT, each one of {', '.join(sorted(MODEL_REGISTRY))}")
    for seed in (cfg.seeds or []) + ([cfg.seed] if cfg.seed is not None else []):
        if not _SEED[0](seed):
            raise ValueError(f"seed {seed} is out of range: a seed is {_SEED[1]}")
    s = cfg.settings()
    check_settings(s)
    if cfg.teacher_checkpoint:
        _check_teacher_file(cfg, s)
    dataset_info(s["dataset"])
    for key in ("teacher_arch", "student_arch"):
        if s[key] not in MODEL_REGISTRY:
            raise ValueError(f"unknown {key.replace('_', ' ')} {s[key]!r}; choose from {', '.join(sorted(MODEL_REGISTRY))}")
    if s["student_epochs"] < 1:
        raise ValueError(f"epochs must be >= 1, got {s['student_epochs']}")
    train_size = s["train_subset"] or DATASETS[s["dataset"]].train_size
    for key in ("batch_size", "student_batch_size"):
        if s.get(key) is not None and s[key] < 2:
            raise ValueError(f"{key.replace('_', ' ')} must be >= 2 (contrastive losses need pairs), got {s[key]}")
        if s.get(key) is not None and s[key] > train_size:
            raise ValueError(f"{key.replace('_', ' ')} {s[key]} exceeds the training set ({train_size} images)")
    if s["bank_negatives"] > train_size:
        raise ValueError(f"bank negatives {s['bank_negatives']} exceed the bank size (one slot per training "
                         f"image: {train_size})")
    if cfg.sync_bn and not (torch.cuda.is_available() and cfg.device != "cpu"):
        raise ValueError("--sync-bn needs CUDA (torch's SyncBatchNorm does not run on the CPU)")
    if cfg.compile and resolve_device(cfg.device).type == "cpu" and cpp_compiler() is None:
        raise ValueError("--compile on the CPU needs a C++ compiler (g++) on PATH; install one or drop --compile")
    if cfg.tensorboard and not scalars.available():
        raise ValueError(scalars.MISSING)
    if cfg.device != "cpu" and (problem := gpu_build_problem()):
        raise ValueError(problem)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available; use --device cpu or auto")
    runs = build_study_runs(s, cfg.seed_list())
    checks = (("temperature", "temperature (tau) must be > 0", lambda v: v > 0), ("alpha", "alpha must be > 0", lambda v: v > 0),
              ("beta", "beta must be >= 0", lambda v: v >= 0), ("lr", "learning rate must be > 0", lambda v: v > 0))
    for r, (key, what, ok) in ((r, check) for r in runs for check in checks):
        if key in r.cfg and not ok(r.cfg[key]):  # NaN fails every check
            raise ValueError(f"{r.name}: {what}, got {r.cfg[key]}")
    patterns = {"--only": cfg.only or [],
                "--force-retrain": cfg.force_retrain if isinstance(cfg.force_retrain, (list, tuple)) else []}
    for flag, given in patterns.items():
        for pattern in given:
            if not any(selects(pattern, r) for r in runs):
                raise ValueError(f"{flag} {pattern!r} names no stage ({', '.join(stages)}) and matches no run of "
                                 f"this preset (--list prints its {len(runs)} runs)")
    check_writable(Path(cfg.out_dir))
    return runs


def _check_teacher_file(cfg: StudyConfig, s: dict) -> None:
    """A teacher file must exist and fit the teacher's architecture before anything trains."""
    from .checkpoint import CheckpointError
    from .published import load_teacher_file

    path = s["teacher_checkpoint"]["path"]
    if s["teacher_checkpoint"]["sha256"] is None and cfg.teacher_checkpoint.startswith("hub:"):
        from .published import fetch_hub_teacher

        try:
            fetch_hub_teacher(cfg.teacher_checkpoint[4:], cfg.out_dir)
        except OSError as err:
            raise ValueError(str(err)) from None
        s["teacher_checkpoint"] = cfg.settings()["teacher_checkpoint"]
    if s["teacher_checkpoint"]["sha256"] is None:
        raise ValueError(f"--teacher-checkpoint {path}: no such file")
    try:
        load_teacher_file(path, s["teacher_arch"], DATASETS[s["dataset"]].num_classes, DATASETS[s["dataset"]].channels)
    except CheckpointError as err:
        raise ValueError(str(err)) from None

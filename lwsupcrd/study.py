"""The study: presets, the registry of runs in dependency order, and the runner that trains a
run or reuses its cached checkpoint.

Run names follow the original work: `teacher_<t>_<d>`, `teacher_<t>_<d>_with_projection`,
`student_<what>_<s>_<d>`.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed
from .checkpoint import CheckpointError, environment, load_checkpoint, save_checkpoint, weights_sha256, write_json
from .data import DATASETS, DataError, Split, balanced_subset, dataset_info, load_split
from .locks import file_lock
from .models import MODEL_REGISTRY, ModelWrapper
from .probe import embed, linear_probe
from .train import COMPILE_MODES, check_frozen, fit, frozen_snapshot

# ---------------------------------------------------------------- presets
# Each preset is a complete set of defaults; CLI flags override single keys.
PRESETS: dict[str, dict] = {
    # the original protocol: CIFAR-100, ResNet-50 -> ResNet-18
    "paper": dict(dataset="cifar100", teacher_arch="resnet50", student_arch="resnet18", train_subset=None,
                  teacher_epochs=200, teacher_lr=0.1, projection_epochs=10, student_epochs=50, batch_size=128,
                  student_lr=1e-3, bank_negatives=4096, probe_epochs=30, sweeps=True, bank_ablation=True),
    # CPU-sized: small CIFAR ResNets, a class-balanced subset, few epochs, the main comparison only
    "quick": dict(dataset="cifar100", teacher_arch="resnet20", student_arch="resnet8", train_subset=12_000,
                  teacher_epochs=12, teacher_lr=0.1, projection_epochs=2, student_epochs=4, batch_size=128,
                  student_lr=2e-3, bank_negatives=4096, probe_epochs=15, sweeps=False, bank_ablation=False),
    # seconds: every run of the protocol on a tiny budget, for tests
    "smoke": dict(dataset="cifar100", teacher_arch="resnet8", student_arch="resnet8", train_subset=1000,
                  teacher_epochs=1, teacher_lr=0.05, projection_epochs=1, student_epochs=1, batch_size=32,
                  student_lr=1e-3, bank_negatives=64, probe_epochs=2, sweeps=True, bank_ablation=True),
}
ALPHAS, BETAS, TAUS = (1.0, 2.0, 5.0, 10.0), (1.0, 5.0, 10.0, 12.0), (0.05, 0.07)
DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_TAU = 1.0, 10.0, 0.07


@dataclass
class Run:
    name: str
    stage: str
    cfg: dict
    requires: tuple[str, ...] = ()
    base: str = ""  # the run's name without its seed suffix

    def __post_init__(self):
        self.base = self.base or self.name

    @property
    def bank_ablation(self) -> bool:
        return self.stage == "bank_ablation"


@dataclass
class StudyConfig:
    preset: str = "paper"
    dataset: str | None = None
    data_dir: str = "data"
    out_dir: str = "."
    device: str = "auto"
    teacher_arch: str | None = None
    student_arch: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    seeds: list[int] | None = None
    force_retrain: bool = False
    force_retrain_bank_ablation: bool = False
    force_analysis: bool = False
    sync_bn: bool = False
    cpu_bf16: bool = False
    compile: str | None = None
    only: list[str] | None = None
    list_runs: bool = False
    progress: bool = True

    def settings(self) -> dict:
        """The preset with the overrides applied: what every run is built from."""
        s = dict(PRESETS[self.preset])
        for key in ("dataset", "teacher_arch", "student_arch", "batch_size"):
            if getattr(self, key) is not None:
                s[key] = getattr(self, key)
        if self.epochs is not None:
            s["student_epochs"] = self.epochs
        s["seed"] = self.seed
        s["preset"] = self.preset
        s["seeds"] = list(self.seeds) if self.seeds else [self.seed]
        return s


def fmt(x: float) -> str:
    return repr(float(x))


def build_runs(settings: dict) -> list[Run]:
    """Every run of the protocol for these settings, each after the runs it needs."""
    d, t, s = settings["dataset"], settings["teacher_arch"], settings["student_arch"]
    info = DATASETS[d]
    common = dict(dataset=d, num_classes=info.num_classes, in_channels=info.channels,
                  train_subset=settings["train_subset"], batch_size=settings["batch_size"],
                  seed=settings["seed"], proj_dim=64, probe_epochs=settings["probe_epochs"])
    teacher_name = f"teacher_{t}_{d}"
    proj_name = f"{teacher_name}_with_projection"
    runs = [
        Run(teacher_name, "teacher", dict(common, method="ce", arch=t, epochs=settings["teacher_epochs"],
                                          optimizer="sgd", lr=settings["teacher_lr"], momentum=0.9,
                                          weight_decay=5e-4, schedule="cosine")),
        Run(proj_name, "projection", dict(common, method="projection", arch=t, epochs=settings["projection_epochs"],
                                          optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant",
                                          temperature=DEFAULT_TAU), (teacher_name,)),
    ]
    student = dict(common, arch=s, epochs=settings["student_epochs"], optimizer="adam", lr=settings["student_lr"],
                   weight_decay=0.0, schedule="constant")

    def lw(alpha, beta, tau, **extra):
        return dict(student, method="lwsupcrd", alpha=alpha, beta=beta, temperature=tau, adaptive_beta=True, **extra)

    runs += [
        Run(f"student_undistilled_{s}_{d}", "baselines", dict(student, method="undistilled")),
        Run(f"student_baseline_supcon_{s}_{d}", "baselines", dict(student, method="supcon", temperature=DEFAULT_TAU)),
        Run(f"student_baseline_crd_{s}_{d}", "baselines", dict(student, method="crd", temperature=DEFAULT_TAU),
            (proj_name,)),
    ]
    grid = [(DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_TAU)]
    if settings["sweeps"]:
        grid = ([(a, DEFAULT_BETA, DEFAULT_TAU) for a in ALPHAS] + [(DEFAULT_ALPHA, b, DEFAULT_TAU) for b in BETAS]
                + [(DEFAULT_ALPHA, DEFAULT_BETA, tau) for tau in TAUS])
    seen = set()
    for a, b, tau in grid:
        name = f"student_alpha_{fmt(a)}_beta_{fmt(b)}_temp_{fmt(tau)}_{s}_{d}"
        if name not in seen:
            seen.add(name)
            runs.append(Run(name, "lwsupcrd", lw(a, b, tau), (proj_name,)))
    k = settings["bank_negatives"]
    ablation = dict(weight_decay=1e-4, schedule="cosine")
    bank = dict(bank_negatives=k, bank_momentum=0.5)
    if settings["bank_ablation"]:
        runs += [
            Run(f"student_baseline_crd_nobank_{s}_{d}", "bank_ablation",
                dict(student, method="crd", temperature=DEFAULT_TAU, **ablation), (proj_name,)),
            Run(f"student_baseline_crd_bank{k}_{s}_{d}", "bank_ablation",
                dict(student, method="crd", temperature=DEFAULT_TAU, **ablation, **bank), (proj_name,)),
            Run(f"student_lwsupcrd_nobank_{s}_{d}", "bank_ablation",
                lw(DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_TAU, **ablation), (proj_name,)),
        ]
    runs.append(Run(f"student_lwsupcrd_bank{k}_{s}_{d}", "bank_ablation",
                    lw(DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_TAU, **ablation, **bank), (proj_name,)))
    return runs


def build_study_runs(settings: dict, seeds: list[int] | None) -> list[Run]:
    """One chain of runs per seed (names end in `_seed<k>`), or the plain chain without --seeds."""
    if not seeds:
        return build_runs(settings)
    runs = []
    for seed in seeds:
        for r in build_runs({**settings, "seed": seed}):
            runs.append(Run(f"{r.name}_seed{seed}", r.stage, r.cfg, tuple(f"{d}_seed{seed}" for d in r.requires),
                            base=r.name))
    return runs


# ---------------------------------------------------------------- command line
def in_notebook() -> bool:
    return "ipykernel" in sys.modules and "IPython" in sys.modules


def parse_args(argv: list[str] | None, defaults: StudyConfig) -> StudyConfig:
    """Parse desupcon.py's flags over `defaults` (the script's parameter block). Inside a Jupyter
    kernel sys.argv belongs to the kernel: flags then come from $LWSUPCRD_ARGS only."""
    if argv is None:
        argv = shlex.split(os.environ.get("LWSUPCRD_ARGS", "")) if in_notebook() else sys.argv[1:]
    p = argparse.ArgumentParser(prog="desupcon.py", description="Run the LW-SupCRD study.")
    p.add_argument("--preset", choices=sorted(PRESETS), default=defaults.preset)
    p.add_argument("--dataset", choices=sorted(DATASETS), default=defaults.dataset)
    p.add_argument("--data-dir", default=defaults.data_dir)
    p.add_argument("--out-dir", default=defaults.out_dir, help="root of pth_models/, json_results/, plots/")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=defaults.device)
    p.add_argument("--teacher-arch", choices=sorted(MODEL_REGISTRY), default=defaults.teacher_arch)
    p.add_argument("--student-arch", choices=sorted(MODEL_REGISTRY), default=defaults.student_arch)
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="student epochs")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--seed", type=int, default=defaults.seed)
    p.add_argument("--seeds", type=int, nargs="+", default=defaults.seeds,
                   help="run every selected experiment once per seed; results give mean ± std")
    p.add_argument("--force-retrain", action="store_true", default=defaults.force_retrain)
    p.add_argument("--force-retrain-bank-ablation", action="store_true",
                   default=defaults.force_retrain_bank_ablation)
    p.add_argument("--force-analysis", action="store_true", default=defaults.force_analysis,
                   help="recompute metrics and figures of cached runs")
    p.add_argument("--sync-bn", action="store_true", default=defaults.sync_bn,
                   help="SyncBatchNorm across torchrun processes (CUDA only)")
    p.add_argument("--cpu-bf16", action="store_true", default=defaults.cpu_bf16,
                   help="bf16 autocast on the CPU (faster where the CPU has bf16 units; see bench/RESULTS.md)")
    p.add_argument("--compile", nargs="?", const="default", choices=COMPILE_MODES, default=defaults.compile,
                   help="run the networks through torch.compile (default mode if none is named; "
                        "reduce-overhead adds CUDA graphs on a GPU)")
    p.add_argument("--only", default=",".join(defaults.only or []) or None, help="NAME[,NAME...]")
    p.add_argument("--list", dest="list_runs", action="store_true", help="print the runs in order and exit")
    a = p.parse_args(argv)
    cfg = copy.copy(defaults)
    for key, value in vars(a).items():
        setattr(cfg, key, value)
    cfg.only = [x.strip() for x in a.only.split(",") if x.strip()] if a.only else None
    if cfg.seeds:
        if len(set(cfg.seeds)) != len(cfg.seeds):
            p.error(f"--seeds must be distinct, got {cfg.seeds}")
        cfg.seed = cfg.seeds[0]
    cfg.progress = not os.environ.get("TQDM_DISABLE")
    return cfg


def validate(cfg: StudyConfig) -> list[Run]:
    """Check everything that can be checked before any work; raise ValueError with one line."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown preset {cfg.preset!r}; choose from {', '.join(PRESETS)}")
    s = cfg.settings()
    dataset_info(s["dataset"])
    for key in ("teacher_arch", "student_arch"):
        if s[key] not in MODEL_REGISTRY:
            raise ValueError(f"unknown {key.replace('_', ' ')} {s[key]!r}; choose from {', '.join(sorted(MODEL_REGISTRY))}")
    if s["batch_size"] < 2:
        raise ValueError(f"batch size must be >= 2 (contrastive losses need pairs), got {s['batch_size']}")
    if s["student_epochs"] < 1:
        raise ValueError(f"epochs must be >= 1, got {s['student_epochs']}")
    train_size = s["train_subset"] or DATASETS[s["dataset"]].train_size
    if s["batch_size"] > train_size:
        raise ValueError(f"batch size {s['batch_size']} exceeds the training set ({train_size} images)")
    if s["bank_negatives"] > train_size:
        raise ValueError(f"bank negatives {s['bank_negatives']} exceed the bank size (one slot per training "
                         f"image: {train_size})")
    if cfg.sync_bn and not (torch.cuda.is_available() and cfg.device != "cpu"):
        raise ValueError("--sync-bn needs CUDA (torch's SyncBatchNorm does not run on the CPU)")
    if cfg.compile and resolve_device(cfg.device).type == "cpu" and cpp_compiler() is None:
        raise ValueError("--compile on the CPU needs a C++ compiler (g++) on PATH; install one or drop --compile")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available; use --device cpu or auto")
    runs = build_study_runs(s, cfg.seeds)
    for r in runs:
        c = r.cfg
        if "temperature" in c and not c["temperature"] > 0:
            raise ValueError(f"{r.name}: temperature (tau) must be > 0, got {c['temperature']}")
        if "alpha" in c and not c["alpha"] > 0:
            raise ValueError(f"{r.name}: alpha must be > 0, got {c['alpha']}")
        if "beta" in c and not c["beta"] >= 0:
            raise ValueError(f"{r.name}: beta must be >= 0, got {c['beta']}")
        if not c["lr"] > 0:
            raise ValueError(f"{r.name}: learning rate must be > 0, got {c['lr']}")
    names = [r.name for r in runs] + [r.base for r in runs]
    for name in cfg.only or []:
        if name not in names:
            raise ValueError(f"unknown run {name!r}; --list prints the {len(names)} runs of this preset")
    out = Path(cfg.out_dir)
    try:
        for sub in ("pth_models", "json_results/training_logs", "plots"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        probe = out / "json_results" / f".write_test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"out-dir {out} is not writable: {err.strerror or err}") from None
    return runs


# ---------------------------------------------------------------- the runner
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_cpu_threads() -> int:
    """Set and return the threads for torch's CPU kernels: one per usable core, shared among the processes of this
    machine. torch's default counts the host's physical cores, which oversubscribes a container
    limited by CPU affinity or a cgroup quota. OMP_NUM_THREADS, when set, wins (torchrun sets it)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    usable = min(torch.get_num_threads(), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            usable = min(usable, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    threads = max(1, usable // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    torch.set_num_threads(threads)
    return threads


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile would use for CPU kernels, or None when there is none."""
    try:
        from torch._inductor import config
        cxx = config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else (config.cpp.cxx,)
    except (ImportError, AttributeError):
        cxx = ("g++",)
    return next((path for path in (shutil.which(c) for c in cxx if c) if path), None)


def config_diff(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


class Study:
    """Trains or loads each run, evaluates it with the linear probe, and keeps the results file."""

    def __init__(self, cfg: StudyConfig, runs: list[Run] | None = None):
        self.cfg = cfg
        self.settings = cfg.settings()
        self.runs = {r.name: r for r in (runs or build_study_runs(self.settings, cfg.seeds))}
        self.info = dataset_info(self.settings["dataset"])
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.out_dir)
        self.models_dir = self.out / "pth_models"
        self.logs_dir = self.out / "json_results" / "training_logs"
        self.plots_dir = self.out / "plots"
        self.results_path = (self.out / "json_results" /
                             f"comprehensive_results_{self.settings['student_arch']}_{self.settings['dataset']}.json")
        self.models: dict[str, ModelWrapper] = {}
        self.fingerprints: dict[str, str] = {}
        self.results = self._read_results()
        self.touched: set[str] = set()
        self.train: Split | None = None
        self.test: Split | None = None

    def load_data(self) -> None:
        s = self.settings
        train = load_split(s["dataset"], self.cfg.data_dir, "train")
        if s["train_subset"]:
            train = balanced_subset(train, s["train_subset"], s["seed"])
        test = load_split(s["dataset"], self.cfg.data_dir, "test")
        for split in (train, test):
            if split.images.shape[1:] != (self.info.channels, self.info.size, self.info.size):
                raise DataError(f"{s['dataset']} images have shape {tuple(split.images.shape[1:])}, expected "
                                f"{(self.info.channels, self.info.size, self.info.size)}")
        if s["batch_size"] > len(train):
            raise ValueError(f"batch size {s['batch_size']} exceeds the training set ({len(train)} images)")
        if s["bank_negatives"] > len(train):
            raise ValueError(f"bank negatives {s['bank_negatives']} exceed the bank size (one slot per training "
                             f"image: {len(train)})")
        self.train, self.test = train.to(self.device), test.to(self.device)

    def order(self) -> list[str]:
        """The selected runs and, before them, what they need."""
        only = set(self.cfg.only or [])
        wanted = [n for n, r in self.runs.items() if not only or n in only or r.base in only]
        ordered: list[str] = []

        def visit(name):
            for dep in self.runs[name].requires:
                visit(dep)
            if name not in ordered:
                ordered.append(name)

        for name in wanted:
            visit(name)
        return ordered

    def run_config(self, run: Run) -> dict:
        cfg = dict(run.cfg, train_size=len(self.train), channels_last=self.device.type == "cuda")
        if self.device.type == "cpu" and self.cfg.cpu_bf16:
            cfg["amp"] = True
        if run.requires:
            cfg["requires"] = {dep: self.fingerprints[dep] for dep in run.requires}
        return cfg

    def forced(self, run: Run) -> bool:
        return self.cfg.force_retrain or (self.cfg.force_retrain_bank_ablation and run.bank_ablation)

    def run_all(self, names: list[str]) -> None:
        """Run these in order, but skip past a run another process holds and come back to it, so
        that several processes sharing the out-dir work through the study together."""
        pending = [n for n in names if n not in self.models]
        while pending:
            progressed = False
            for name in list(pending):
                if self.run(name, wait=False) is not None:
                    pending.remove(name)
                    progressed = True
            if pending and not progressed:
                time.sleep(0.5)

    def run(self, name: str, wait: bool = True) -> ModelWrapper | None:
        """Load or train one run (and, first, what it needs); evaluate; record; return the model.

        The run's lock file is held from the cache check until its checkpoint is written; with
        wait=False a run locked by another process returns None instead of waiting."""
        if name in self.models:
            return self.models[name]
        run = self.runs[name]
        for dep in run.requires:
            self.run(dep)
        ddp = distributed.current()
        if ddp.world_size > 1 and not ddp.main:  # rank 0 holds the lock for the whole group
            return self._run_locked(run)
        with file_lock(self.models_dir / f".{name}.lock", blocking=wait or ddp.world_size > 1) as locked:
            if not locked:
                return None
            return self._run_locked(run)

    def _run_locked(self, run: Run) -> ModelWrapper:
        name = run.name
        cfg = self.run_config(run)
        path = self.models_dir / f"{name}.pth"
        model, ckpt, why = None, None, "no checkpoint"
        if self.forced(run):
            why = "forced"
        elif path.exists():
            try:
                ckpt = load_checkpoint(path, map_location=self.device)
            except CheckpointError as err:
                why = f"{err}; retraining"
                print(why)
            else:
                diff = config_diff(ckpt["config"], cfg)
                if not diff:
                    model = self._model(cfg)
                    model.load_state_dict(ckpt["state_dict"])
                    why = "cached"
                else:
                    why = "config changed (" + "; ".join(diff) + ")"
                    ckpt = None
        cached = model is not None
        ddp = distributed.current()
        if distributed.broadcast(cached) != cached:
            raise RuntimeError(f"[{name}] rank {ddp.rank} disagrees with rank 0 about the cached checkpoint {path}")
        if not cached:
            print(f"== {name}: training ({why})")
            print("   config: " + json.dumps(cfg, sort_keys=True))
            model, ckpt = self._train(run, cfg, path)
        self.models[name] = model
        self.fingerprints[name] = ckpt["weights_sha256"]
        if not ddp.main:
            distributed.barrier()  # rank 0 evaluates, analyses and records
            return model
        entry = {"stage": run.stage, "base": run.base, "config": cfg, "metrics": ckpt["metrics"], "cached": cached,
                 "checkpoint": str(path.relative_to(self.out)) if path.is_relative_to(self.out) else str(path),
                 "environment": ckpt.get("environment", {})}
        previous = self._read_results()["runs"].get(name) or self.results["runs"].get(name, {})
        if cached and previous.get("config") == cfg and "analysis" in previous:
            entry["analysis"] = previous["analysis"]
        self.results["runs"][name] = entry
        self.touched.add(name)
        self.analyze(run, model, cached)
        self.save_results()
        summary = ", ".join(f"{k} {v:.2f}" for k, v in ckpt["metrics"].items()
                            if isinstance(v, float) and k.endswith("acc"))
        print(f"== {name}: {'cached' if cached else 'trained in %.1fs' % ckpt['metrics'].get('train_seconds', 0)}"
              + (f"; {summary}" if summary else ""))
        distributed.barrier()
        return model

    def _read_results(self) -> dict:
        """The results file on disk if it belongs to these settings, else an empty one (a file for
        other settings, or an unreadable one, is replaced at the next save)."""
        try:
            data = json.loads(self.results_path.read_text())
            if data.get("settings") == self.settings:
                return data
        except FileNotFoundError:
            pass
        except (OSError, json.JSONDecodeError):
            print(f"results file {self.results_path} is unreadable; starting a new one")
        return {"settings": self.settings, "runs": {}}

    def save_results(self) -> None:
        """Merge this process's entries into the file on disk (other processes may share it)."""
        from .report import aggregate

        with file_lock(self.results_path.with_name("." + self.results_path.name + ".lock")):
            merged = self._read_results()
            merged["runs"].update({n: self.results["runs"][n] for n in self.touched})
            merged["environment"] = environment()
            merged["aggregates"] = aggregate(merged)
            write_json(self.results_path, merged)
        self.results = merged

    def _model(self, cfg: dict) -> ModelWrapper:
        torch.manual_seed(cfg["seed"])
        model = ModelWrapper.from_config(cfg).to(self.device)
        if cfg.get("channels_last"):
            model = model.to(memory_format=torch.channels_last)
        if self.cfg.sync_bn and distributed.current().world_size > 1:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def _train(self, run: Run, cfg: dict, path: Path):
        model = self._model(cfg)
        teacher = None
        proj_name = next((d for d in run.requires if d.endswith("_with_projection")), None)
        if cfg["method"] == "projection":
            model.load_state_dict(self.models[run.requires[0]].state_dict())
        elif proj_name is not None:
            teacher = self._model(self.runs[proj_name].cfg | {"channels_last": cfg.get("channels_last")})
            teacher.load_state_dict(self.models[proj_name].state_dict())
            teacher.requires_grad_(False)
            teacher.projection.requires_grad_(True)
            frozen = frozen_snapshot(teacher.backbone)
        log_path = self.logs_dir / f"{run.name}.json"
        env = {**environment(), "device": str(self.device), "compile": self.cfg.compile}
        log = {"run": run.name, "config": cfg, "environment": env, "epochs": []}

        def on_epoch(row):
            log["epochs"].append(row)
            write_json(log_path, log)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "lr", "epoch_seconds"))
            print(f"   epoch {row['epoch']}/{cfg['epochs']}: {shown} ({row['epoch_seconds']:.1f}s)")

        start = time.perf_counter()
        history = fit(run.name, cfg, model, self.train, self.info, self.device, teacher=teacher,
                      resume_path=path.with_suffix(".resume.pth"), on_epoch=on_epoch, progress=self.cfg.progress,
                      compile_mode=self.cfg.compile)
        log["epochs"] = history
        train_seconds = time.perf_counter() - start
        if teacher is not None:
            check_frozen(run.name, frozen, teacher.backbone)
        if not distributed.current().main:
            return model, {"weights_sha256": weights_sha256(model.state_dict()), "metrics": {}}
        metrics = {"train_seconds": train_seconds, **self.evaluate(run, cfg, model)}
        ckpt = save_checkpoint(path, model.state_dict(), cfg, metrics, env=env)
        log["metrics"] = metrics
        write_json(log_path, log)
        path.with_suffix(".resume.pth").unlink(missing_ok=True)
        return model, ckpt

    def evaluate(self, run: Run, cfg: dict, model: ModelWrapper) -> dict:
        if run.stage == "projection":
            return {}
        cl = bool(cfg.get("channels_last"))
        start = time.perf_counter()
        train_f, _, _ = embed(model, self.train.images, self.info, channels_last=cl)
        test_f, _, test_logits = embed(model, self.test.images, self.info, channels_last=cl)
        embedded = time.perf_counter()
        metrics = linear_probe(train_f, self.train.labels, test_f, self.test.labels, self.info.num_classes,
                               epochs=cfg["probe_epochs"], seed=cfg["seed"])
        metrics["embed_seconds"], metrics["probe_seconds"] = embedded - start, time.perf_counter() - embedded
        if cfg["method"] in ("ce", "undistilled"):
            metrics["head_test_acc"] = float((test_logits.argmax(1) == self.test.labels).float().mean()) * 100
        return metrics

    def figure_paths(self, name: str) -> dict[str, Path]:
        return {"tsne": self.plots_dir / f"tsne_{name}.png", "hypersphere": self.plots_dir / f"{name}_hypersphere.html",
                "alignment": self.plots_dir / f"{name}_alignment.png", "curves": self.plots_dir / f"{name}_curves.png"}

    def analyze(self, run: Run, model: ModelWrapper, cached: bool) -> None:
        """Geometry metrics into the results entry and the run's figures; skipped for a cached run
        whose metrics and figures exist, unless forced."""
        from . import analysis, plots

        entry = self.results["runs"][run.name]
        figures = self.figure_paths(run.name)
        log_path = self.logs_dir / f"{run.name}.json"
        if not log_path.exists():
            figures.pop("curves")
        if (cached and "analysis" in entry and not self.cfg.force_analysis and not self.forced(run)
                and all(p.exists() for p in figures.values())):
            return
        start = time.perf_counter()
        cfg = entry["config"]
        metrics, spaces = analysis.analyze(model, cfg["method"], self.test, self.info, cfg["seed"],
                                           channels_last=bool(cfg.get("channels_last")))
        shown = spaces[metrics["figure_space"]]
        names = self.test.class_names
        metrics["tsne"] = plots.tsne_figure(shown, names, run.name, figures["tsne"], cfg["seed"])
        metrics["hypersphere"] = plots.hypersphere_page(shown, names, run.name, figures["hypersphere"], cfg["seed"])
        plots.alignment_figure(shown, names, run.name, figures["alignment"], cfg["seed"])
        if "curves" in figures:
            plots.curves_figure(json.loads(log_path.read_text()), figures["curves"])
        metrics["figures"] = {k: str(p.relative_to(self.out)) if p.is_relative_to(self.out) else str(p)
                              for k, p in figures.items()}
        metrics["seconds"] = time.perf_counter() - start
        entry["analysis"] = metrics

    def finish(self) -> str:
        """Study-level figures and the report, from the results file alone."""
        from . import plots
        from .report import write_report

        if not distributed.current().main:
            return ""
        self.save_results()
        plots.study_figures(self.results, self.plots_dir)
        return write_report(self.results_path).read_text()


def estimate_cpu_hours(study: Study) -> float:
    """Time one training step of the teacher and of a distilled student here, and extrapolate."""
    s = study.settings
    steps = len(study.train) // s["batch_size"]
    x = torch.randn(8, study.info.channels, study.info.size, study.info.size)
    seconds = 0.0
    for arch, epochs, views in ((s["teacher_arch"], s["teacher_epochs"], 1), (s["student_arch"], s["student_epochs"], 3)):
        model = ModelWrapper(arch, study.info.num_classes, in_channels=study.info.channels)
        start = time.perf_counter()
        model(x)[2].sum().backward()
        per_image = (time.perf_counter() - start) / len(x)
        n_runs = 1 if views == 1 else sum(r.stage not in ("teacher", "projection") for r in study.runs.values())
        seconds += per_image * views * s["batch_size"] * steps * epochs * n_runs
    return seconds / 3600

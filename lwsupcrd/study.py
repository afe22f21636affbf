"""The runner: for each run of the protocol, the cache decision (a checkpoint whose config
matches), the lock that lets several processes share a study, training, evaluation by linear
probe, the geometry analysis, and the results file."""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import time
from pathlib import Path

import torch

from . import distributed
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint, weights_sha256
from .files import environment, write_json
from .data import DataError, Split, balanced_subset, dataset_info, load_split, normalize
from .locks import file_lock
from .machine import resolve_device
from .models import ModelWrapper
from .options import StudyConfig
from .probe import embed, linear_probe
from .protocol import Run, build_study_runs
from .published import REFERENCE_NORMALIZATION, load_teacher_file
from .analysis import analyze_run, figure_paths
from .train import check_frozen, fit, frozen_snapshot


def config_diff(old: dict, new: dict) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


class Study:
    """Trains or loads each run, evaluates it with the linear probe, and keeps the results file."""

    def __init__(self, cfg: StudyConfig, runs: list[Run] | None = None):
        self.cfg = cfg
        self.settings = cfg.settings()
        self.runs = {r.name: r for r in (runs or build_study_runs(self.settings, cfg.seed_list()))}
        self.info = dataset_info(self.settings["dataset"])
        self.standard = self.settings.get("protocol") == "standard"
        if self.standard and self.info.name == "cifar100":  # the published teachers' preprocessing
            self.info = dataclasses.replace(self.info, mean=REFERENCE_NORMALIZATION[0], std=REFERENCE_NORMALIZATION[1])
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.out_dir)
        self.models_dir = self.out / "pth_models"
        self.logs_dir = self.out / "json_results" / "training_logs"
        self.plots_dir = self.out / "plots"
        stem = (f"standard_results_{self.settings['teacher_arch']}-{self.settings['student_arch']}" if self.standard
                else f"comprehensive_results_{self.settings['student_arch']}")
        self.results_path = self.out / "json_results" / f"{stem}_{self.settings['dataset']}.json"
        self.models: dict[str, ModelWrapper] = {}
        self.fingerprints: dict[str, str] = {}
        self.results = self._read_results()
        self.touched: set[str] = set()
        self.full_train: Split | None = None
        self.splits: dict[tuple, Split] = {}
        self.train: Split | None = None  # the first seed's
        self.test: Split | None = None

    def load_data(self) -> None:
        """Both splits, checked; each seed's training subset is drawn from the full split by `split_of`."""
        s = self.settings
        full = load_split(s["dataset"], self.cfg.data_dir, "train")
        test = load_split(s["dataset"], self.cfg.data_dir, "test")
        for split in (full, test):
            if split.images.shape[1:] != (self.info.channels, self.info.size, self.info.size):
                raise DataError(f"{s['dataset']} images have shape {tuple(split.images.shape[1:])}, expected "
                                f"{(self.info.channels, self.info.size, self.info.size)}")
        train_size = min(len(full), s["train_subset"] or len(full))
        if s["batch_size"] > train_size:
            raise ValueError(f"batch size {s['batch_size']} exceeds the training set ({train_size} images)")
        if s["bank_negatives"] > train_size:
            raise ValueError(f"bank negatives {s['bank_negatives']} exceed the bank size (one slot per training "
                             f"image: {train_size})")
        self.full_train, self.test = full, test.to(self.device)
        self.train = self.split_of(s["seed"])

    def split_of(self, seed: int, subset: int | None | str = "students") -> Split:
        """The training split of this seed: with a subset size (default: the students'
        `train_subset`), a class-balanced subset drawn with the seed, so that the spread over
        seeds includes the choice of images; None: the whole split."""
        n = self.settings["train_subset"] if subset == "students" else subset
        if (seed, n) not in self.splits:
            split = balanced_subset(self.full_train, n, seed) if n else self.full_train
            self.splits[seed, n] = split.to(self.device)
        return self.splits[seed, n]

    def measure_floors(self) -> dict:
        """What a linear probe reads without any training, per seed's split and with the students'
        probe protocol: raw pixels, and a randomly initialised student. Every row is read against them."""
        s = self.settings
        floors = self.results.setdefault("floors", {})
        if self.standard:  # scored by the student's own classifier, not a probe
            return floors
        for seed in s["seeds"]:
            train = self.split_of(seed)
            if str(seed) in floors and floors[str(seed)].get("train_size") == len(train):
                continue
            probe = dict(num_classes=self.info.num_classes, epochs=s["probe_epochs"], seed=seed)
            pixels = linear_probe(normalize(train.images, self.info).flatten(1), train.labels,
                                  normalize(self.test.images, self.info).flatten(1), self.test.labels, **probe)
            torch.manual_seed(seed)
            student = ModelWrapper(s["student_arch"], self.info.num_classes, in_channels=self.info.channels,
                                   proj_head=s["proj_head"]).to(self.device)
            train_f = embed(student, train.images, self.info)[0]
            random_init = linear_probe(train_f, train.labels, embed(student, self.test.images, self.info)[0],
                                       self.test.labels, **probe)
            floors[str(seed)] = {"train_size": len(train), "raw_pixels": pixels["probe_test_acc"],
                                 "random_student": random_init["probe_test_acc"]}
        if distributed.current().main:
            self.save_results()
        return floors

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
        train = self.split_of(run.cfg["seed"], run.cfg["train_subset"])
        cfg = dict(run.cfg, train_size=len(train), channels_last=self.device.type == "cuda")
        if self.device.type == "cpu" and self.cfg.cpu_bf16:
            cfg["amp"] = True
        if run.requires:
            cfg["requires"] = {dep: self.fingerprints[dep] for dep in run.requires}
        return cfg

    def forced(self, run: Run) -> bool:
        """FORCE_RETRAIN: True for every run, or a list of stages and run-name patterns (matched
        against the name with and without its seed suffix); FORCE_RETRAIN_BANK_ABLATION: the bank stage."""
        what = self.cfg.force_retrain
        if what is True or (self.cfg.force_retrain_bank_ablation and run.bank_ablation):
            return True
        return any(p == run.stage or fnmatch.fnmatch(run.name, p) or fnmatch.fnmatch(run.base, p)
                   for p in (what or []))

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
        entry = {"stage": run.stage, "base": run.base, "teacher": run.teacher, "control": run.control,
                 "centre": run.centre, "config": cfg, "metrics": ckpt["metrics"], "cached": cached,
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
            merged.setdefault("floors", {}).update(self.results.get("floors", {}))
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
        if cfg["method"] == "published":
            return self._read_teacher(run, cfg, path, model)
        teacher = None
        if cfg["method"] == "projection":
            model.load_state_dict(self.models[run.requires[0]].state_dict())
        elif run.teacher is not None:
            teacher = self._model(self.runs[run.teacher].cfg | {"channels_last": cfg.get("channels_last")})
            teacher.load_state_dict(self.models[run.teacher].state_dict())
            teacher.requires_grad_(False)
            teacher.projection.requires_grad_(True)
            frozen = frozen_snapshot(teacher.backbone)
        log_path = self.logs_dir / f"{run.name}.json"
        env = {**environment(), "device": str(self.device), "compile": self.cfg.compile}
        log = {"run": run.name, "config": cfg, "environment": env, "epochs": []}

        def on_epoch(row):
            log["epochs"].append(row)
            write_json(log_path, log)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                              if k not in ("epoch", "lr", "epoch_seconds") and not k.startswith("w."))
            if "w.q_mean" in row:
                shown += (f", teacher q {row['w.q_mean']:.3f} [{row['w.q_p05']:.3f}, {row['w.q_p95']:.3f}], "
                          f"margin {row['w.margin_mean']:.2f}")
            print(f"   epoch {row['epoch']}/{cfg['epochs']}: {shown} ({row['epoch_seconds']:.1f}s)")

        start = time.perf_counter()
        train = self.split_of(cfg["seed"], cfg["train_subset"])
        history = fit(run.name, cfg, model, train, self.info, self.device, teacher=teacher,
                      resume_path=path.with_suffix(".resume.pth"), on_epoch=on_epoch, progress=self.cfg.progress,
                      compile_mode=self.cfg.compile)
        log["epochs"] = history
        train_seconds = time.perf_counter() - start
        if teacher is not None:
            check_frozen(run.name, frozen, teacher.backbone)
        if not distributed.current().main:
            return model, {"weights_sha256": weights_sha256(model.state_dict()), "metrics": {}}
        weights = {k: v for k, v in history[-1].items() if k.startswith("w.")}  # the last epoch's, for the report
        metrics = {"train_seconds": train_seconds, **self.evaluate(run, cfg, model), **weights}
        # the teacher's head as the run left it, so the teacher side can be analysed too
        extra = {"teacher_projection": teacher.projection.state_dict()} if teacher is not None else None
        ckpt = save_checkpoint(path, model.state_dict(), cfg, metrics, env=env, extra=extra)
        log["metrics"] = metrics
        write_json(log_path, log)
        path.with_suffix(".resume.pth").unlink(missing_ok=True)
        return model, ckpt

    def _read_teacher(self, run: Run, cfg: dict, path: Path, model: ModelWrapper):
        """A teacher read from a file instead of trained; its test accuracy is measured here, before
        any student trains."""
        backbone = load_teacher_file(cfg["checkpoint"], cfg["arch"], cfg["num_classes"])
        model.backbone.load_state_dict(backbone.state_dict())
        metrics = self.evaluate(run, cfg, model)
        print(f"   teacher read from {cfg['checkpoint']}: test top-1 {metrics['test_acc']:.2f}%")
        env = {**environment(), "device": str(self.device)}
        return model, save_checkpoint(path, model.state_dict(), cfg, metrics, env=env)

    def evaluate(self, run: Run, cfg: dict, model: ModelWrapper) -> dict:
        if run.stage == "projection":
            return {}
        cl = bool(cfg.get("channels_last"))
        if cfg.get("protocol") == "standard":  # top-1 of the model's own classifier, float32, last epoch
            logits = embed(model, self.test.images, self.info, channels_last=cl, amp=False)[2]
            return {"test_acc": float((logits.argmax(1) == self.test.labels).float().mean()) * 100}
        train = self.split_of(cfg["seed"], cfg["train_subset"])
        start = time.perf_counter()
        train_f, _, _ = embed(model, train.images, self.info, channels_last=cl)
        test_f, _, test_logits = embed(model, self.test.images, self.info, channels_last=cl)
        embedded = time.perf_counter()
        metrics = linear_probe(train_f, train.labels, test_f, self.test.labels, self.info.num_classes,
                               epochs=cfg["probe_epochs"], seed=cfg["seed"])
        metrics["embed_seconds"], metrics["probe_seconds"] = embedded - start, time.perf_counter() - embedded
        if cfg["method"] in ("ce", "undistilled"):
            metrics["head_test_acc"] = float((test_logits.argmax(1) == self.test.labels).float().mean()) * 100
        return metrics

    def figure_paths(self, name: str) -> dict[str, Path]:
        return figure_paths(self.plots_dir, name)

    def analyze(self, run: Run, model: ModelWrapper, cached: bool) -> None:
        """Geometry metrics into the results entry and the run's figures (`analysis.analyze_run`);
        the standard protocol scores the classifier only."""
        if run.cfg.get("protocol") != "standard":
            analyze_run(self, run, model, cached)

    def finish(self) -> tuple[str, list[Path]]:
        """Study-level figures and the report, from the results file alone: `(report text, figures)`."""
        from .analysis import study_figures
        from .report import write_report

        if not distributed.current().main:
            return "", []
        self.save_results()
        figures = study_figures(self.results, self.plots_dir)
        return write_report(self.results_path).read_text(), figures



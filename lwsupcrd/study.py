"""The runner: for each run of the protocol, the cache decision (`cache.py`: files named by the
run's id), the lock that lets several processes share a study, training, evaluation by linear
probe, the geometry analysis, and the results file. A study's results file is named by a hash of
its settings, so each study keeps its own; an earlier file is replaced only when asked
(`--force-retrain`)."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from . import distributed
from .cache import RunFiles, other_code_notice, other_config_note, read_cached, recorded_code, short_hash
from .checkpoint import load_checkpoint, save_checkpoint, weights_sha256
from .code import code_version
from .files import environment, load_results, remove_stale_temps, write_json
from .groups import aggregate
from .data import DataError, Split, balanced_subset, dataset_info, load_split
from .locks import file_lock, holder
from .machine import resolve_device
from .models import ModelWrapper
from .options import StudyConfig
from .probe import probe_floors, score
from .protocol import build_study_runs, head_config, scored_epoch
from .runs import Run, dependency_order
from .published import REFERENCE_NORMALIZATION, load_teacher_file
from .scalars import epoch_scalars
from .analysis import analyze_run
from .methods import build_extras, start_from_initialisation
from .train import check_frozen, epoch_line, fit, frozen_snapshot


class StudyError(RuntimeError):
    """Something in the out-dir stops the study before it can train; the message says what to do."""


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
        self.plots_dir = self.out / "plots"
        stem = (f"standard_results_{self.settings['teacher_arch']}-{self.settings['student_arch']}" if self.standard
                else f"comprehensive_results_{self.settings['student_arch']}")
        self.settings_id = short_hash(self.settings)
        self.results_path = self.out / "json_results" / f"{stem}_{self.settings['dataset']}_{self.settings_id}.json"
        self.study_plots_dir = self.plots_dir / self.results_path.stem
        self.models: dict[str, ModelWrapper] = {}
        self.fingerprints: dict[str, str] = {}
        self.files = RunFiles(self.out, self.runs, self._base_config)
        self.code = code_version()
        self.other_code: dict[str, dict] = {}  # cached runs trained by other code: name -> their version
        self.results = load_results(self.results_path, self.settings)
        for tmp in remove_stale_temps(self.files.models_dir, self.files.logs_dir, self.results_path.parent, self.plots_dir):
            print(f"removed {tmp}, left by a killed writer")
        self.touched: set[str] = set()
        self.full_train = self.train = self.test = None  # the splits: all training images, the first seed's, test
        self.splits: dict[tuple, Split] = {}

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
        for key in ("batch_size", "student_batch_size"):
            if (s.get(key) or 0) > train_size:
                raise ValueError(f"{key.replace('_', ' ')} {s[key]} exceeds the training split this study draws "
                                 f"({train_size} images of {full.source})")
        if s["bank_negatives"] > train_size:
            raise ValueError(f"bank negatives {s['bank_negatives']} exceed the bank size (one slot per training "
                             f"image: {train_size})")
        print(f"data: {s['dataset']} from {full.source} ({len(full)} training, {len(test)} test images)")
        self.full_train, self.test = full, test.to(self.device)
        self.train = self.split_of(s["seed"])

    def split_of(self, seed: int, subset: int | None | str = "students") -> Split:
        """The training split of this seed: with a subset size (default: the students' `train_subset`), a
        class-balanced subset drawn with the seed (the spread over seeds includes the images); None: all."""
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
            torch.manual_seed(seed)
            student = ModelWrapper(s["student_arch"], self.info.num_classes, in_channels=self.info.channels,
                                   **head_config(s["proj_head"], "student")).to(self.device)
            floors[str(seed)] = probe_floors(student, train, self.test, self.info, s["probe_epochs"], seed)
        if distributed.current().main:
            self.save_results()
        return floors

    def order(self) -> list[str]:
        """The selected runs (--only) and, before them, what they need."""
        return dependency_order(self.runs, self.cfg.only)

    def run_config(self, run: Run) -> dict:
        """The run's config as trained here: the protocol's, the data's size, the device's layout and
        precision, and the weight checksums of the runs it needs (those must be loaded first)."""
        cfg = self._base_config(run)
        if run.requires:
            cfg["requires"] = {dep: self.fingerprints[dep] for dep in run.requires}
        return cfg

    def _base_config(self, run: Run) -> dict:
        train = self.split_of(run.cfg["seed"], run.cfg["train_subset"])
        cfg = dict(run.cfg, train_size=len(train), channels_last=self.device.type == "cuda")
        if self.device.type == "cpu" and self.cfg.cpu_bf16:
            cfg["amp"] = True
        return cfg

    def other_code_notice(self) -> str:
        """The cached runs of the selection that other code trained, from their checkpoints' headers,
        as one block (empty if none); with --retrain-other-code, exactly those are retrained."""
        self.other_code = {}
        for name in self.order():
            path = self.files.checkpoint(name)
            version = recorded_code(path) if path.is_file() and not self.forced(self.runs[name]) else None
            if version is not None and version.get("fingerprint") != self.code["fingerprint"]:
                self.other_code[name] = version
        return other_code_notice(self.other_code, self.code, self.cfg.retrain_other_code)

    def forced(self, run: Run) -> bool:
        return self.cfg.forces(run, self.other_code)

    def run_all(self, names: list[str]) -> None:
        """Run these in order, but skip past a run another process holds and come back to it, so
        that several processes sharing the out-dir work through the study together."""
        pending = [n for n in names if n not in self.models]
        said: set[str] = set()
        while pending:
            progressed = False
            for name in list(pending):
                if self.run(name, wait=False) is not None:
                    pending.remove(name)
                    progressed = True
            if pending and not progressed:
                if pending[0] not in said:
                    said.add(pending[0])
                    lock = self.files.lock(pending[0])
                    print(f"waiting for {pending[0]}: another process holds {lock} (pid {holder(lock)}); Ctrl-C "
                          f"stops waiting, every finished run is kept")
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
        with file_lock(self.files.lock(name), blocking=wait or ddp.world_size > 1) as locked:
            if not locked:
                return None
            return self._run_locked(run)

    def _run_locked(self, run: Run) -> ModelWrapper:
        name = run.name
        cfg = self.run_config(run)
        path = self.files.checkpoint(name)
        if path.is_dir():
            raise StudyError(f"{path} is a directory where {name}'s checkpoint should be; move it away and rerun "
                             f"(nothing was changed, every finished run is kept)")
        model, ckpt, why = self._cached(run, cfg, path)
        cached = model is not None
        ddp = distributed.current()
        if distributed.broadcast(cached) != cached:
            raise RuntimeError(f"[{name}] rank {ddp.rank} disagrees with rank 0 about the cached checkpoint {path}")
        if not cached:
            print(f"== {name}: training ({why})")
            print("   config: " + json.dumps(cfg, sort_keys=True))
            model, ckpt = self._train(run, cfg, path)
        elif why != "cached":  # the network is reused, its scores are not: probe settings changed, or a legacy file
            print(f"== {name}: {why}")
            ckpt = self._rescore(run, cfg, path, model, ckpt)
        self.models[name] = model
        self.fingerprints[name] = ckpt["weights_sha256"]
        if not ddp.main:
            distributed.barrier()  # rank 0 evaluates, analyses and records
            return model
        version = ckpt.get("environment", {}).get("code") or {}
        if cached and version.get("fingerprint") != self.code["fingerprint"]:
            self.other_code[name] = version
        entry = {"stage": run.stage, "base": run.base, "teacher": run.teacher, "control": run.control,
                 "centre": run.centre, "id": self.files.run_id(name), "config": cfg, "metrics": ckpt["metrics"],
                 "cached": cached, "code": version,
                 "checkpoint": str(path.relative_to(self.out)) if path.is_relative_to(self.out) else str(path),
                 "environment": ckpt.get("environment", {}), "curve": self.files.curve(name)}
        previous = load_results(self.results_path, self.settings)["runs"].get(name) or self.results["runs"].get(name, {})
        if cached and previous.get("config") == cfg and previous.get("id") == entry["id"] and "analysis" in previous:
            entry["analysis"] = previous["analysis"]
        self.results["runs"][name] = entry
        self.touched.add(name)
        analyze_run(self, run, model, cached)  # geometry into the entry, the run's figures
        self.save_results()
        summary = ", ".join(f"{k} {v:.2f}" for k, v in ckpt["metrics"].items()
                            if isinstance(v, float) and k.endswith("acc"))
        print(f"== {name}: {'cached' if cached else 'trained in %.1fs' % ckpt['metrics'].get('train_seconds', 0)}"
              + (f"; {summary}" if summary else ""))
        distributed.barrier()
        return model

    def _cached(self, run: Run, cfg: dict, path: Path) -> tuple[ModelWrapper | None, dict | None, str]:
        """`(model, checkpoint, why)`: `cache.read_cached` unless the run is forced; a checkpoint saved
        before run ids is read from its old name when none has the new one."""
        if self.forced(run):
            return None, None, "forced"
        legacy = self.files.legacy_checkpoint(run.name)
        if not path.exists() and legacy.is_file():
            path = legacy
        if not path.exists():
            return None, None, other_config_note(self.files, run.name, cfg)
        return read_cached(path, cfg, self._model, self.device)

    def _rescore(self, run: Run, cfg: dict, path: Path, model: ModelWrapper, ckpt: dict) -> dict:
        """Score a cached network again, its training metrics kept. A legacy file's run is saved under
        its id; the scores of a checkpoint for other probe settings go beside it, keyed by these
        settings (`RunFiles.scores`), so that the checkpoint itself is never rewritten."""
        training = {k: v for k, v in ckpt["metrics"].items()
                    if k in ("train_seconds", "best_test_acc", "best_epoch") or k.startswith("w.")}
        saved = None if ckpt["legacy"] else self.files.saved_scores(run.name, cfg, ckpt["weights_sha256"])
        metrics = saved or {**training, **self.evaluate(run, cfg, model)}
        if not ckpt["legacy"]:
            if saved is None:
                self.files.save_scores(run.name, cfg, ckpt["weights_sha256"], metrics)
            return {**ckpt, "config": cfg, "metrics": metrics}
        extra = {k: ckpt[k] for k in ("teacher_projection", "method_state") if k in ckpt}
        env = {**(ckpt.get("environment") or {})}
        env["code"] = {"fingerprint": None, "git": env.get("git_sha", "unknown")}
        return save_checkpoint(self.files.checkpoint(run.name), ckpt["state_dict"], cfg, metrics, env=env, extra=extra)

    def save_results(self) -> None:
        """Merge this process's entries into the file on disk (other processes may share it)."""
        with file_lock(self.results_path.with_name("." + self.results_path.name + ".lock")):
            merged = load_results(self.results_path, self.settings)
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
        log_path = self.files.log(run.name)
        env = {**environment(), "device": str(self.device), "compile": self.cfg.compile}
        log = {"run": run.name, "config": cfg, "environment": env, "epochs": []}
        train = self.split_of(cfg["seed"], cfg["train_subset"])
        scalars = epoch_scalars(self.cfg.tensorboard and distributed.current().main,
                                self.out / "tensorboard" / self.files.key(run.name), len(train.labels))

        def on_epoch(row):
            log["epochs"].append(row)
            write_json(log_path, log)
            print(epoch_line(row, cfg["epochs"]))
            scalars(row)

        start = time.perf_counter()
        extras = build_extras(cfg, model, teacher, train)  # a standard method's regressor or memories
        if run.init is not None:  # a two-stage method starts from its initialisation's student and modules
            modules = load_checkpoint(self.files.checkpoint(run.init)).get("method_state", {}) if extras is not None \
                else {}
            start_from_initialisation(run.name, model, extras, self.models[run.init], modules)
        score_epoch = (lambda e: self.evaluate(run, cfg, model) if scored_epoch(cfg, e) else None) if "score_every" \
            in cfg else None
        history = fit(run.name, cfg, model, train, self.info, self.device, teacher=teacher,
                      resume_path=path.with_suffix(".resume.pth"), on_epoch=on_epoch, progress=self.cfg.progress,
                      compile_mode=self.cfg.compile, extras=extras, score_epoch=score_epoch)
        log["epochs"] = history
        train_seconds = time.perf_counter() - start
        scalars.close()
        if teacher is not None:
            check_frozen(run.name, frozen, teacher.backbone)
        if not distributed.current().main:
            return model, {"weights_sha256": weights_sha256(model.state_dict()), "metrics": {}}
        weights = {k: v for k, v in history[-1].items() if k.startswith("w.")}  # the last epoch's, for the report
        metrics = {"train_seconds": train_seconds, **self.evaluate(run, cfg, model), **weights}
        if score_epoch is not None:  # the best scored epoch too, labelled as such: some papers report it
            best = max((row for row in history if "test_acc" in row), key=lambda row: row["test_acc"])
            metrics.update(best_test_acc=best["test_acc"], best_epoch=best["epoch"])
        # the teacher's head as the run left it, so the teacher side can be analysed too; the method's state
        extra = {"teacher_projection": teacher.projection.state_dict()} if teacher is not None else {}
        if extras is not None:
            extra["method_state"] = extras.state_dict()
        ckpt = save_checkpoint(path, model.state_dict(), cfg, metrics, env=env, extra=extra)
        log["metrics"] = metrics
        write_json(log_path, log)
        path.with_suffix(".resume.pth").unlink(missing_ok=True)
        return model, ckpt

    def _read_teacher(self, run: Run, cfg: dict, path: Path, model: ModelWrapper):
        """A teacher read from a file, not trained; its test accuracy is measured before any student trains."""
        backbone = load_teacher_file(cfg["checkpoint"], cfg["arch"], cfg["num_classes"], cfg.get("in_channels", 3))
        model.backbone.load_state_dict(backbone.state_dict())
        metrics = self.evaluate(run, cfg, model)
        top1 = metrics.get("test_acc", metrics.get("head_test_acc"))
        print(f"   teacher read from {cfg['checkpoint']}: test top-1 {top1:.2f}% (its own head)")
        env = {**environment(), "device": str(self.device)}
        return model, save_checkpoint(path, model.state_dict(), cfg, metrics, env=env)

    def evaluate(self, run: Run, cfg: dict, model: ModelWrapper) -> dict:
        if run.stage in ("projection", "initialisation"):  # no classifier of its own trained
            return {}
        return score(model, cfg, self.split_of(cfg["seed"], cfg["train_subset"]), self.test, self.info)

    def finish(self) -> tuple[str, list[Path]]:
        """Study-level figures and the report, from the results file alone: `(report text, figures)`."""
        from .overview import study_figures
        from .report import write_report

        if not distributed.current().main:
            return "", []
        self.save_results()
        figures = study_figures(self.results, self.study_plots_dir)
        return write_report(self.results_path).read_text(), figures



"""The run cache: where each run's files live, and whether a cached checkpoint can be reused.

A run's stored identity is its config. `pth_models/<name>-<id>.pth`, its resume state, lock and
training log carry `id`, a hash of everything that decides the network's weights (the run's
config, the data's size, the device's layout and precision, and the ids of the runs it is
distilled from), so two settings never share a file, and ids are known before anything is
loaded. Probe-only keys (`PROBE_KEYS`) are left out: changing them re-scores the cached network.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Callable

from .checkpoint import CheckpointError, load_checkpoint, safe_load
from .code import describe
from .files import write_json

PROBE_KEYS = ("probe_epochs",)  # change how a network is scored, not the network


def config_diff(old: dict, new: dict) -> list[str]:
    if not isinstance(old, dict):
        return [f"config: {type(old).__name__} -> dict"]
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def short_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def _without_probe(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in PROBE_KEYS}


class RunFiles:
    """Each run's files, named `<name>-<id>`; `base_config(run)` is the run's config as trained
    here, without the checksums of the runs it needs."""

    def __init__(self, out: Path, runs: dict, base_config: Callable[[object], dict]):
        self.models_dir, self.logs_dir = out / "pth_models", out / "json_results" / "training_logs"
        self.runs, self.base_config = runs, base_config
        self.ids: dict[str, str] = {}

    def run_id(self, name: str) -> str:
        if name not in self.ids:
            run = self.runs[name]
            cfg = _without_probe(self.base_config(run))
            cfg["requires"] = {dep: self.run_id(dep) for dep in run.requires}
            self.ids[name] = short_hash(cfg)
        return self.ids[name]

    def key(self, name: str) -> str:
        return f"{name}-{self.run_id(name)}"

    def checkpoint(self, name: str) -> Path:
        return self.models_dir / f"{self.key(name)}.pth"

    def legacy_checkpoint(self, name: str) -> Path:
        """Where the run's checkpoint lived before run ids: read when it fits, never written."""
        return self.models_dir / f"{name}.pth"

    def others(self, name: str) -> list[Path]:
        """The run's checkpoints for other configs, newest first."""
        pattern = re.compile(re.escape(name) + r"-[0-9a-f]{10}\.pth")
        found = [p for p in self.models_dir.glob(f"{name}-*.pth") if pattern.fullmatch(p.name)]
        return sorted((p for p in found if p != self.checkpoint(name)), key=lambda p: p.stat().st_mtime, reverse=True)

    def scores(self, name: str, cfg: dict) -> Path:
        """Where the run's scores under other probe settings (`cfg`'s) are kept, beside its checkpoint."""
        return self.models_dir / f"{self.key(name)}.scores-{short_hash(cfg)}.json"

    def saved_scores(self, name: str, cfg: dict, weights: str) -> dict | None:
        """The metrics saved for these settings and these weights, if a whole file holds them."""
        try:
            saved = json.loads(self.scores(name, cfg).read_text())
            if saved.get("config") == cfg and saved.get("weights_sha256") == weights:
                return saved["metrics"]
        except (OSError, ValueError, AttributeError, KeyError):
            pass
        return None

    def save_scores(self, name: str, cfg: dict, weights: str, metrics: dict) -> None:
        write_json(self.scores(name, cfg), {"config": cfg, "weights_sha256": weights, "metrics": metrics})

    def lock(self, name: str) -> Path:
        return self.models_dir / f".{self.key(name)}.lock"

    def log(self, name: str) -> Path:
        return self.logs_dir / f"{self.key(name)}.json"

    def curve(self, name: str) -> dict[str, list[float]]:
        """The run's per-epoch loss, cross-entropy and train/test accuracy from its training log (the
        overlaid curves of `overview`; None at an epoch where the test split was not scored); empty
        without a log."""
        try:
            rows = json.loads(self.log(name).read_text())["epochs"]
        except (OSError, ValueError, KeyError, TypeError):
            return {}
        curve = {k: [round(float(r[k]), 4) for r in rows] for k in ("loss", "ce", "train_acc")
                 if rows and all(k in r for r in rows)}
        if any("test_acc" in r for r in rows):
            curve["test_acc"] = [round(float(r["test_acc"]), 4) if "test_acc" in r else None for r in rows]
        return curve


def other_config_note(files: RunFiles, name: str, cfg: dict) -> str:
    """"no checkpoint", and how the newest checkpoint of the run with other settings differs."""
    for path in files.others(name):
        try:
            old = safe_load(path, mmap=True)["config"]
        except (CheckpointError, KeyError, TypeError):
            continue
        return f"no checkpoint for this config; {path.name} has other settings: " + "; ".join(config_diff(old, cfg))
    return "no checkpoint"


def recorded_code(path: Path) -> dict | None:
    """The code version a checkpoint records, read from its header (tensors are mapped, not read);
    None if the file cannot be read (the study names it when the run comes up)."""
    try:
        code = safe_load(path, mmap=True).get("environment", {}).get("code") or {}
    except (CheckpointError, AttributeError):
        return None
    return code if isinstance(code, dict) else None


def other_code_notice(other: dict[str, dict], code: dict, retrain: bool) -> str:
    """One block naming the cached runs that other code trained (empty if none)."""
    if not other:
        return ""
    lines = [f"{len(other)} cached run(s) were trained by other code than this process loaded ({describe(code)}):"]
    lines += [f"  {name}: {describe(version)}" for name, version in other.items()]
    lines.append("  retraining exactly these (--retrain-other-code)" if retrain else
                 "  reused as they are and marked in the report; --retrain-other-code retrains exactly these")
    return "\n".join(lines)


def read_cached(path: Path, cfg: dict, build_model: Callable[[dict], object], device) -> tuple:
    """`(model, checkpoint, why)`: the cached network if its file is whole, verified, made with this
    config up to the probe keys, and fits the network; else `(None, None, why it is trained)`.
    `why` is "cached" when the checkpoint's scores can be reused as they are."""
    try:
        ckpt = load_checkpoint(path, map_location=device)
    except CheckpointError as err:  # the study's "training (why)" line names it once
        return None, None, f"{err}; retraining"
    diff = config_diff(_without_probe(ckpt["config"]), _without_probe(cfg))
    if diff:
        return None, None, "config changed (" + "; ".join(diff) + ")"
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        why = f"{path}: its weights do not fit the network ({str(err).strip().splitlines()[0][:300]}); retraining"
        return None, None, why
    if ckpt["legacy"]:
        return model, ckpt, f"weights read from {path.name} (saved before run ids); scoring them again"
    if ckpt["config"] != cfg:
        return model, ckpt, "probe settings changed (" + "; ".join(config_diff(ckpt["config"], cfg)) + "); re-probing"
    return model, ckpt, "cached"

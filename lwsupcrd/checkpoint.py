"""Plain-data checkpoints, written atomically and loaded with `weights_only=True`.

A checkpoint is a dict of tensors and plain Python values:
`{"format", "state_dict", "config", "metrics", "environment", "weights_sha256"}`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import platform
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "lwsupcrd-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, truncated, tampered with, or not one of ours."""


def atomic_write(path: str | Path, write) -> None:
    """Call `write(tmp_path)` on a temporary file in the same folder, fsync it, then rename it onto
    `path`: a kill at any moment leaves either the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path: str | Path, obj: Any) -> None:
    text = json.dumps(_json_safe(obj), indent=2, allow_nan=False)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text + "\n"))


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        h.update(name.encode())
        if isinstance(t, torch.Tensor):
            h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(t).encode())
    return h.hexdigest()


def environment() -> dict[str, Any]:
    env = {"torch": str(torch.__version__), "python": platform.python_version(), "platform": platform.platform(),
           "cuda": str(torch.version.cuda), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    try:
        root = Path(__file__).resolve().parents[1]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
        if sha.returncode == 0:
            env["git_sha"] = sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return env


def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def plain(obj: Any) -> Any:
    """Only tensors and plain Python values go into a checkpoint: what weights_only can load."""
    if isinstance(obj, torch.Tensor) or obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, dict):
        return {plain(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj) if type(obj) in (list, tuple) else [plain(v) for v in obj]
    raise TypeError(f"{type(obj).__name__} cannot go into a checkpoint: store plain values")


def save_checkpoint(path: str | Path, state_dict: dict, config: dict, metrics: dict | None = None,
                    extra: dict | None = None, env: dict | None = None) -> dict:
    state_dict = _cpu(state_dict)
    for name, t in state_dict.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"refusing to save {path}: {name} holds non-finite values")
    ckpt = {"format": FORMAT, "state_dict": state_dict, "config": config, "metrics": metrics or {},
            "environment": env or environment(), "weights_sha256": weights_sha256(state_dict)}
    ckpt = plain({**ckpt, **(extra or {})})
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))
    return ckpt


def safe_load(path: str | Path, map_location="cpu") -> Any:
    """torch.load with weights_only=True; any failure becomes one CheckpointError naming the file."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if "Unsupported" in line or "unsupported" in line]
        raise CheckpointError(f"{path}: refused to load, it holds objects other than tensors and plain values"
                              f" ({lines[0] if lines else 'unsafe pickle'}); nothing in it was run") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, AttributeError) as err:
        line = str(err).strip().splitlines()
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({type(err).__name__}: "
                              f"{line[0] if line else ''})") from None


def load_checkpoint(path: str | Path, map_location="cpu", verify: bool = True) -> dict:
    """Load one of our checkpoints and check its format and, if `verify`, its weights' checksum."""
    ckpt = safe_load(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not an lwsupcrd checkpoint (no '{FORMAT}' format tag)")
    if verify and weights_sha256(ckpt["state_dict"]) != ckpt.get("weights_sha256"):
        raise CheckpointError(f"{path}: weights do not match their stored checksum (corrupt file)")
    return ckpt


def load_model(path: str | Path, map_location="cpu"):
    """Rebuild the ModelWrapper stored in a checkpoint: `model, ckpt = load_model('pth_models/x.pth')`."""
    from .models import ModelWrapper

    ckpt = load_checkpoint(path, map_location)
    model = ModelWrapper.from_config(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt

"""Plain-data checkpoints, written atomically and loaded with `weights_only=True`.

A checkpoint is a dict of tensors and plain Python values:
`{"format", "state_dict", "config", "metrics", "environment", "weights_sha256"}` (a distilled
student's also holds `teacher_projection`, the teacher's head as the run left it). The training
loop's resume state (`train.Loop.state`) is saved and loaded through `safe_load` too.
"""
from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .files import atomic_write, environment

FORMAT = "lwsupcrd-checkpoint-v1"


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable, truncated, tampered with, or not one of ours."""


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

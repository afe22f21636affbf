"""Plain-data checkpoints, written atomically and loaded with `weights_only=True`.

A checkpoint is a dict of tensors and plain Python values:
`{"format", "state_dict", "config", "metrics", "environment", "weights_sha256", "sha256"}` (a
distilled student's also holds `teacher_projection`, the teacher's head as the run left it).
`weights_sha256` identifies the weights (a distilled run's config names its teacher by it);
`sha256` covers everything else in the file too (config, metrics, environment), so nothing that
is reused can be edited unnoticed. The training loop's resume state (`train.Loop.state`) is
saved and loaded through `safe_load` too.
"""
from __future__ import annotations

import hashlib
import pickle
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .files import environment, save_torch

FORMAT = "lwsupcrd-checkpoint-v2"
LEGACY_FORMAT = "lwsupcrd-checkpoint-v1"  # its checksum covered the weights only


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


def content_sha256(obj: Any) -> str:
    """SHA-256 of a checkpoint's whole content: tensors by dtype, shape and bytes, plain values by
    type and exact repr, dicts in key order."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, torch.Tensor):
            h.update(b"T" + str(x.dtype).encode() + str(tuple(x.shape)).encode())
            h.update(x.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(b"{%d" % len(x))
            for k in sorted(x, key=repr):
                feed(k)
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(b"[%d" % len(x))
            for v in x:
                feed(v)
        else:
            h.update(type(x).__name__.encode() + b":" + repr(x).encode() + b";")

    feed(obj)
    return h.hexdigest()


def _non_finite(state: dict) -> str | None:
    for name, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


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


def seal(state: dict) -> dict:
    """A resume state with a checksum over everything it restores (`open_sealed` checks it); the
    state itself is saved as it is (a scheduler's Counter stays a Counter)."""
    return {**state, "sha256": content_sha256(state)}


def _first_non_finite(obj, where: str = "") -> str | None:
    if isinstance(obj, torch.Tensor):
        return where if obj.is_floating_point() and not bool(torch.isfinite(obj).all()) else None
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = _first_non_finite(v, f"{where}.{k}" if where else str(k))
        if found:
            return found
    return None


def open_sealed(path: str | Path) -> dict:
    """A resume state written by `seal`, read onto the CPU: its checksum must match and every
    floating-point value be finite, or one CheckpointError names the file and the fault."""
    state = safe_load(path, map_location="cpu")
    if not isinstance(state, dict) or not isinstance(state.get("sha256"), str):
        raise CheckpointError(f"{path}: a resume state without a checksum (written by older code, or not one)")
    body = {k: v for k, v in state.items() if k != "sha256"}
    if content_sha256(body) != state["sha256"]:
        raise CheckpointError(f"{path}: its checksum does not match, the file was damaged or changed")
    bad = _first_non_finite(body)
    if bad:
        raise CheckpointError(f"{path}: {bad} holds non-finite values")
    return body


def save_checkpoint(path: str | Path, state_dict: dict, config: dict, metrics: dict | None = None,
                    extra: dict | None = None, env: dict | None = None) -> dict:
    state_dict = _cpu(state_dict)
    bad = _non_finite(state_dict)
    if bad:
        raise CheckpointError(f"refusing to save {path}: {bad} holds non-finite values")
    ckpt = {"format": FORMAT, "state_dict": state_dict, "config": config, "metrics": metrics or {},
            "environment": env or environment(), "weights_sha256": weights_sha256(state_dict)}
    ckpt = plain({**ckpt, **_cpu(extra or {})})
    ckpt["sha256"] = content_sha256(ckpt)
    save_torch(path, ckpt)
    return ckpt


def safe_load(path: str | Path, map_location="cpu", mmap: bool = False) -> Any:
    """torch.load with weights_only=True; any failure, whatever its exception, becomes one
    CheckpointError naming the file. `mmap` maps the tensors instead of reading them (a header look)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a directory stands where a checkpoint file should be")
    if path.exists() and not path.is_file():  # a FIFO, socket or device: opening it could block forever
        raise CheckpointError(f"{path}: not a regular file (a pipe, socket or device stands where a checkpoint "
                              f"should be); move it away")
    try:
        with warnings.catch_warnings():  # a damaged header draws protocol warnings: the error below says it all
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if "Unsupported" in line or "unsupported" in line]
        if lines:
            raise CheckpointError(f"{path}: refused to load, it holds objects other than tensors and plain values"
                                  f" ({lines[0] if lines else 'unsafe pickle'}); nothing in it was run") from None
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint (UnpicklingError: "
                              f"{_first_line(err)})") from None
    except MemoryError:
        raise CheckpointError(f"{path}: unreadable checkpoint (it asks for more memory than there is)") from None
    except Exception as err:  # a damaged file can raise almost anything from the unpickler or the zip reader
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({type(err).__name__}: "
                              f"{_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else ""


def load_checkpoint(path: str | Path, map_location="cpu", verify: bool = True) -> dict:
    """Load one of our checkpoints and check its format, its checksum (everything in the file; a
    legacy v1 file: its weights) and that its weights are finite. A legacy file comes back with
    `legacy=True`: its config and metrics were never covered by a checksum."""
    ckpt = safe_load(path, map_location)
    fmt = ckpt.get("format") if isinstance(ckpt, dict) else None
    if fmt not in (FORMAT, LEGACY_FORMAT) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not an lwsupcrd checkpoint (no '{FORMAT}' format tag)")
    if not all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values()):
        raise CheckpointError(f"{path}: its state dict holds values other than tensors")
    if verify:
        if fmt == FORMAT and content_sha256({k: v for k, v in ckpt.items() if k != "sha256"}) != ckpt.get("sha256"):
            raise CheckpointError(f"{path}: content does not match its stored checksum (corrupt or edited file)")
        if weights_sha256(ckpt["state_dict"]) != ckpt.get("weights_sha256"):
            raise CheckpointError(f"{path}: weights do not match their stored checksum (corrupt file)")
    bad = _non_finite(ckpt["state_dict"])
    if bad:
        raise CheckpointError(f"{path}: {bad} holds non-finite values; such weights are never reused")
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("metrics", {}), dict):
        raise CheckpointError(f"{path}: its config or metrics are not dicts")
    ckpt["legacy"] = fmt == LEGACY_FORMAT
    return ckpt


def load_model(path: str | Path, map_location="cpu"):
    """Rebuild the ModelWrapper stored in a checkpoint: `model, ckpt = load_model('pth_models/x.pth')`."""
    from .models import ModelWrapper

    ckpt = load_checkpoint(path, map_location)
    model = ModelWrapper.from_config(ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])
    return model, ckpt


# ---------------------------------------------------------------- resume state
def rng_state(generator: torch.Generator) -> dict:
    np_state = np.random.get_state()
    state = {"python": random.getstate(), "torch": torch.get_rng_state(), "augment": generator.get_state(),
             "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                       "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"].cpu())  # generator states are CPU byte tensors, even a CUDA generator's
    generator.set_state(state["augment"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])

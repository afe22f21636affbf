"""Files every output goes through: written atomically (a kill leaves the old file or the new
one, never half of one) with the permissions the umask gives ordinary files, JSON made strict,
and the provenance (library versions, machine, code version) recorded beside every result."""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from .code import code_version


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() gives a new file: mkstemp's 0600 would hide outputs on a shared disk


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
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:  # name the file that could not be written
            raise OSError(err.errno, err.strerror or str(err), str(path)) from err
        raise


def save_torch(path: str | Path, obj: Any) -> None:
    """torch.save through atomic_write, via a Python file object: a full disk is then an OSError
    (ENOSPC) naming the file, not an opaque error from the zip writer."""
    def write(tmp):
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    atomic_write(path, write)


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


def environment() -> dict[str, Any]:
    env = {"torch": str(torch.__version__), "python": platform.python_version(), "platform": platform.platform(),
           "cuda": str(torch.version.cuda), "cpu_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    env["code"] = code_version()
    return env


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (a teacher file's identity in its run's config)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

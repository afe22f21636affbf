"""Files every output goes through: written atomically (a kill leaves the old file or the new
one, never half of one) with the permissions the umask gives ordinary files, JSON made strict,
and the provenance (library versions, machine, code version) recorded beside every result."""
from __future__ import annotations

import errno
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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX)
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


TEMP_SUFFIX = ".tmp"


def set_aside(path: str | Path) -> Path:
    """Rename a damaged file out of the way, never deleting it: `x.json` -> `x.damaged-<time>.json`."""
    import time

    path = Path(path)
    kept = path.with_name(f"{path.name.split('.')[0]}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
                          f"{''.join(path.suffixes)}")
    os.replace(path, kept)
    return kept


def remove_stale_temps(*folders: str | Path) -> list[Path]:
    """Remove the temporary files that killed writers left in `folders` (`atomic_write`'s, named with
    the writer's pid), unless that process still lives. Returns what was removed."""
    removed = []
    for tmp in (t for folder in folders for t in Path(folder).glob(f".*{TEMP_SUFFIX}")):
        parts = tmp.name.rsplit(".", 3)  # .<name>.<pid>.<random>.tmp
        pid = parts[1] if len(parts) == 4 and parts[1].isdigit() else None
        if pid is not None and _alive(int(pid)):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def save_torch(path: str | Path, obj: Any) -> None:
    """torch.save through atomic_write, via a Python file object: a full disk is then an OSError
    (ENOSPC) naming the file, not an opaque error from the zip writer."""
    def write(tmp):
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as err:  # torch's zip writer reports a short write (a full disk) this way
                raise OSError(errno.EIO, f"torch could not write it, the disk may be full ({_first(err)})") from None

    atomic_write(path, write)


def _first(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]


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


def check_writable(out: Path) -> None:
    """The out-dir (or, if it does not exist yet, the folder it will be made in) takes files; nothing
    is created here, so a study stopped by bad input leaves no empty folders."""
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"out-dir {out} is not writable: {existing} is not a folder")
    probe = existing / f".lwsupcrd-write-test.{os.getpid()}"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"out-dir {out} is not writable: {err.strerror or err}") from None
    for sub in ("pth_models", "json_results", "json_results/training_logs", "plots"):
        folder = out / sub
        if folder.exists() and not (folder.is_dir() and os.access(folder, os.R_OK | os.W_OK | os.X_OK)):
            raise ValueError(f"{folder} is not a folder this user can read and write (its permissions: "
                             f"{oct(folder.stat().st_mode & 0o777)}); fix them and rerun")


def read_results(path: str | Path) -> dict:
    """A results file, checked for its shape (settings and runs, each run an object); anything else
    is one ValueError line naming the file."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise ValueError(f"{path}: not a regular file")
    try:
        data = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (it is not UTF-8)") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err.msg}, line {err.lineno})") from None
    if not (isinstance(data, dict) and isinstance(data.get("settings"), dict) and isinstance(data.get("runs"), dict)
            and all(isinstance(e, dict) and isinstance(e.get("config"), dict) for e in data["runs"].values())):
        raise ValueError(f"{path}: not a results file (it needs an object with settings and runs, each run an "
                         f"object with its config)")
    return data


def load_results(path: Path, settings: dict) -> dict:
    """A study's results file if it is one and belongs to `settings`, else an empty one. A damaged
    file (not JSON, not UTF-8, not a results file's shape, other settings) is set aside under a
    `.damaged-<time>` name, never overwritten; a directory or pipe in its place is a ValueError."""
    empty = {"settings": settings, "runs": {}}
    if path.exists() and not path.is_file():
        raise ValueError(f"{path}: not a regular file where the results file should be; move it away and rerun "
                         f"(every finished run is kept)")
    if not path.exists():
        return empty
    try:
        data = read_results(path)
        if data["settings"] == settings:
            return data
        why = "for other settings"
    except ValueError as err:
        why = f"unusable ({str(err).split(': ', 1)[-1]})"
    except OSError as err:
        why = f"unreadable ({err.strerror or err})"
    kept = set_aside(path)
    print(f"results file {path} is {why}: kept as {kept.name}; starting a new one (every run is read again "
          f"from its checkpoint)")
    return empty


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

"""Advisory file locks (fcntl.flock) so that several processes sharing a filesystem can work
through one study: each run is trained by whoever locks it first; the others wait or move on.
The holder writes its pid into the lock file, so that a waiting process can say whom it waits for."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path


class LockError(OSError):
    """Something other than a lock file stands at a lock's path."""


def holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except (OSError, UnicodeDecodeError):
        return "?"


@contextmanager
def file_lock(path: str | Path, blocking: bool = True, say=print):
    """Yield True while holding the lock at `path`; with blocking=False, yield False at once if
    another process holds it. Before blocking, one line (through `say`) names the lock, its
    holder's pid and how to stop waiting."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not path.is_file():
        raise LockError(f"{path}: not a regular file where a lock file should be; move it away")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not blocking:
                yield False
                return
            say(f"waiting for {path}, held by pid {holder(path)} (Ctrl-C stops waiting; every finished run is kept)")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

"""The code version of a run: a fingerprint of the modules that compute a run's weights and
scores, taken from their source as this process imported it (not from the files on disk now,
nor from `git HEAD` at save time). A Jupyter kernel that imported yesterday's `losses.py` records
yesterday's fingerprint, whatever was committed since.

`lwsupcrd/__init__.py` installs the recorder before any submodule is imported."""
from __future__ import annotations

import hashlib
import importlib.abc
import subprocess
import sys
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# the modules whose code decides what a run computes: its weights and its scores
COMPUTE_MODULES = ("data", "distill_losses", "distributed", "losses", "memory_bank", "methods", "models",
                   "nce_memory", "optimizers", "original_losses", "probe", "published", "steps", "train", "vgg", "mobilenet", "layers", "shufflenet",
                   "pairs", "connectors", "terms")
_loaded: dict[str, bytes] = {}  # module -> its source, as imported
_git_at_import: dict[str, str] = {}


def _record(module: str) -> None:
    path = PACKAGE_DIR / f"{module}.py"
    if path.is_file():
        _loaded[module] = path.read_bytes()


class _SourceRecorder(importlib.abc.MetaPathFinder):
    """Reads a package module's source the moment Python imports (or reloads) it; finds nothing."""

    def find_spec(self, fullname, path, target=None):
        package, _, module = fullname.partition(".")
        if package == __package__ and module in COMPUTE_MODULES:
            _record(module)
        return None


def install() -> None:
    if not any(isinstance(f, _SourceRecorder) for f in sys.meta_path):
        sys.meta_path.insert(0, _SourceRecorder())
    _git_at_import.update(_git_tree())


def _git_blob_sha1(source: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(source) + source).hexdigest()


def _git_tree() -> dict[str, str]:
    """HEAD's commit and the blob of each compute module there, read when the package is imported."""
    try:
        run = dict(cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10)
        head = subprocess.run(["git", "rev-parse", "HEAD"], **run)
        tree = subprocess.run(["git", "ls-tree", "HEAD", "--", *(f"{m}.py" for m in COMPUTE_MODULES)], **run)
    except (OSError, subprocess.SubprocessError):
        return {}
    if head.returncode or tree.returncode:
        return {}
    blobs = {line.split()[3].removesuffix(".py"): line.split()[2] for line in tree.stdout.splitlines()}
    return {"HEAD": head.stdout.strip(), **blobs}


def code_version() -> dict[str, str]:
    """`{"fingerprint": 12 hex digits, "git": "<commit>" or "<commit>+modified" or "unknown"}`: the
    fingerprint is the SHA-256 of every compute module's source as imported (a module not imported
    yet is read now); `git` names the commit checked out when the package was imported, marked
    modified if any compute module differs from that commit's."""
    for module in COMPUTE_MODULES:
        if module not in _loaded:
            _record(module)
    digest = hashlib.sha256()
    for module in COMPUTE_MODULES:
        source = _loaded.get(module, b"")
        digest.update(module.encode() + b"\0" + hashlib.sha256(source).digest())
    head = _git_at_import.get("HEAD")
    if head is None:
        git = "unknown"
    else:
        modified = any(_git_blob_sha1(_loaded.get(m, b"")) != _git_at_import.get(m) for m in COMPUTE_MODULES)
        git = head[:7] + ("+modified" if modified else "")
    return {"fingerprint": digest.hexdigest()[:12], "git": git}


def describe(version: dict | None) -> str:
    """`3f2a9c1b0d4e (git cb7b9ea)`, or `unknown` for a run that recorded none."""
    if not version or "fingerprint" not in version:
        return "unknown (recorded before code versions)"
    return f"{version['fingerprint']} (git {version.get('git', 'unknown')})"


def code_of(entry: dict) -> str:
    """The code version a run was computed by, as it recorded it: the fingerprint of its modules,
    or for a run recorded before fingerprints, the git commit it noted."""
    version = entry.get("code") or entry.get("environment", {}).get("code") or {}
    if version.get("fingerprint"):
        return f"{version['fingerprint']} (git {version.get('git', 'unknown')})"
    git = version.get("git") or entry.get("environment", {}).get("git_sha")
    if not git:
        return "unknown"
    sha, _, state = git.partition("-")
    return f"git {sha[:7]}" + (f"-{state}" if state else "")


def versions_section(codes: dict[str, str], main: str) -> list[str]:
    """The report's "Code versions" section: each version (`code_of`) and the runs it computed; †
    marks, there and in every table, the runs of a version other than the most common one (`main`)."""
    from .groups import markdown_table

    by_version: dict[str, list[str]] = {}
    for name, version in sorted(codes.items()):
        by_version.setdefault(version, []).append(name)
    rows = [[f"`{v}`" + ("" if v == main else " †"), str(len(names)), ", ".join(f"`{n}`" for n in names)]
            for v, names in sorted(by_version.items(), key=lambda kv: (kv[0] != main, kv[0]))]
    note = ("Every run was computed by the same code." if len(by_version) == 1 else
            "The runs were computed by different code: † marks, in every table, the runs whose code differs "
            "from the most common version (rerun with `--retrain-other-code` to retrain exactly those).")
    return ["## Code versions", "", "The fingerprint of the modules that computed each run, as it recorded "
            "them (the git commit alone for runs recorded before fingerprints). " + note, "",
            markdown_table(["Code", "Runs", "Names"], rows), ""]

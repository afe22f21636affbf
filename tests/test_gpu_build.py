"""A GPU the installed torch cannot use is named before any work (issue "What a newcomer trips on"),
and the lock can be rewritten for a CUDA build that fits an older driver."""
import ctypes
import re
import subprocess
import sys

import pytest
import torch

from helpers import ROOT
from lwsupcrd import machine
from lwsupcrd.options import StudyConfig, parse_args, validate

sys.path.insert(0, str(ROOT / "scripts"))
from lock_for_cuda import lock_for_cuda  # noqa: E402


class FakeDriver:
    """libcuda.so.1 as ctypes sees it: a driver for CUDA 12.4 with `gpus` devices."""

    def __init__(self, gpus=1):
        self.gpus = gpus

    def cuDriverGetVersion(self, out):
        out._obj.value = 12040
        return 0

    def cuInit(self, flags):
        return 0

    def cuDeviceGetCount(self, out):
        out._obj.value = self.gpus
        return 0


@pytest.fixture
def old_driver(monkeypatch):
    """A GPU whose driver supports CUDA 12.4, and the lock's torch (built for 13.0) unable to use it."""
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeDriver())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")


def test_the_driver_is_asked_for_its_cuda_version(monkeypatch):
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeDriver())
    assert machine.driver_cuda() == "12.4"
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeDriver(gpus=0))
    assert machine.driver_cuda() is None

    def no_library(name):
        raise OSError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    assert machine.driver_cuda() is None


def test_a_gpu_the_build_cannot_use_stops_the_study_in_one_line(old_driver, tmp_path):
    cfg = parse_args(["--preset", "smoke", "--out-dir", str(tmp_path)], StudyConfig())
    with pytest.raises(ValueError) as err:
        validate(cfg)
    line = str(err.value)
    assert "\n" not in line and "CUDA 12.4" in line and "CUDA 13.0" in line and "--device cpu" in line
    assert not any(tmp_path.iterdir())  # no work started
    cfg = parse_args(["--preset", "smoke", "--out-dir", str(tmp_path), "--device", "cpu"], StudyConfig())
    assert validate(cfg)  # asked for the CPU explicitly: it runs there


def test_a_cpu_only_build_beside_a_gpu_is_named_as_such(old_driver, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in machine.gpu_build_problem()


def test_no_gpu_or_a_usable_one_is_no_problem(monkeypatch):
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeDriver(gpus=0))
    assert machine.gpu_build_problem() is None
    monkeypatch.setattr(ctypes, "CDLL", lambda name: FakeDriver())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert machine.gpu_build_problem() is None


def pins(text):
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, flags=re.M))


def test_the_lock_for_an_older_driver_keeps_every_other_version():
    lock = (ROOT / "requirements.lock").read_text()
    ours, theirs = pins(lock), pins(lock_for_cuda(lock, "12.6"))
    assert "--extra-index-url https://download.pytorch.org/whl/cu126" in lock_for_cuda(lock, "12.6")
    assert theirs["torch"] == ours["torch"] + "+cu126" and theirs["torchvision"] == ours["torchvision"] + "+cu126"
    kept = {k: v for k, v in ours.items() if not re.match(r"(nvidia|cuda)-", k) and k not in ("torch", "torchvision")}
    assert {k: theirs[k] for k in kept} == kept
    assert not any(re.match(r"(nvidia|cuda)-", k) for k in theirs)  # the CUDA 12.6 build brings its own
    with pytest.raises(ValueError, match="MAJOR.MINOR"):
        lock_for_cuda(lock, "cu126")


def test_the_lock_script_prints_one_line_for_a_bad_version():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "lock_for_cuda.py"), "twelve"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and out.stdout == ""

"""The machine a study runs on: the device, the CPU threads, the C++ compiler torch.compile needs
on a CPU, and an estimate of what the paper study would cost here."""
from __future__ import annotations

import ctypes
import os
import shutil
import time
from pathlib import Path

import torch

from .models import ModelWrapper, create_model
from .protocol import scored_epoch


# ---------------------------------------------------------------- the runner
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def driver_cuda() -> str | None:
    """The CUDA version the NVIDIA driver supports ("12.4"), when the driver is installed and sees a GPU;
    else None. Asked of the driver library itself, so that no torch build is involved."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    version, count = ctypes.c_int(0), ctypes.c_int(0)
    if cuda.cuDriverGetVersion(ctypes.byref(version)) != 0 or version.value <= 0:
        return None
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def gpu_build_problem() -> str | None:
    """One line when a GPU is present but the installed torch cannot use it (a build for a newer CUDA than
    the driver supports, or a CPU-only build); None when torch can use it or there is no GPU."""
    if torch.cuda.is_available():
        return None
    driver = driver_cuda()
    if driver is None:
        return None
    build = f"is built for CUDA {torch.version.cuda}" if torch.version.cuda else "is a CPU-only build"
    return (f"a GPU is present (its driver supports CUDA {driver}) but the installed torch {torch.__version__} "
            f"{build} and cannot use it; install the build for this driver (docs/usage.md, \"A GPU with an older "
            f"driver\") or pass --device cpu to run on the CPU anyway")


def set_cpu_threads() -> int:
    """Set and return the threads for torch's CPU kernels: one per usable core, shared among the processes of this
    machine. torch's default counts the host's physical cores, which oversubscribes a container
    limited by CPU affinity or a cgroup quota. OMP_NUM_THREADS, when set, wins (torchrun sets it)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads()
    usable = min(torch.get_num_threads(), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            usable = min(usable, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    threads = max(1, usable // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    torch.set_num_threads(threads)
    return threads


def cpp_compiler() -> str | None:
    """The C++ compiler torch.compile would use for CPU kernels, or None when there is none."""
    try:
        from torch._inductor import config
        cxx = config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else (config.cpp.cxx,)
    except (ImportError, AttributeError):
        cxx = ("g++",)
    return next((path for path in (shutil.which(c) for c in cxx if c) if path), None)


def estimate_hours(study) -> float:
    """The study's training time on its device, computed (not measured): one timed training step of
    the teacher and of a distilled student (three views: two for the student, one for the teacher's
    keys), at the run's batch on a GPU (8 images on a CPU), extrapolated over every run's epochs."""
    s = study.settings
    steps = len(study.train) // s["batch_size"]
    batch = s["batch_size"] if study.device.type == "cuda" else 8
    x = torch.randn(batch, study.info.channels, study.info.size, study.info.size, device=study.device)
    seconds = 0.0
    for arch, epochs, views in ((s["teacher_arch"], s["teacher_epochs"], 1), (s["student_arch"], s["student_epochs"], 3)):
        model = ModelWrapper(arch, study.info.num_classes, in_channels=study.info.channels).to(study.device)
        for _ in range(2):  # the first step warms up
            start = time.perf_counter()
            model(x)[2].sum().backward()
            if study.device.type == "cuda":
                torch.cuda.synchronize()
            per_image = (time.perf_counter() - start) / len(x)
        n_runs = 1 if views == 1 else sum(r.stage not in ("teacher", "projection") for r in study.runs.values())
        seconds += per_image * views * s["batch_size"] * steps * epochs * n_runs
    return seconds / 3600


def forward_flops(arch: str, num_classes: int, in_channels: int, size: int) -> int:
    """Floating-point operations of one forward pass of one image (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(arch, num_classes, in_channels).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, in_channels, size, size))
    return counter.get_total_flops()


def standard_estimate(study) -> list[str]:
    """Each run's time on this device: its FLOPs (epochs x images x (3 x the trained network's
    forward + the frozen teacher's forward)) over the FLOP rate measured on one training step of
    the student with its teacher here (at the run's batch on a GPU; 16 images on a CPU)."""
    s, info = study.settings, study.info
    batch = s["batch_size"] if study.device.type == "cuda" else 16
    f = {a: forward_flops(a, info.num_classes, info.channels, info.size) for a in (s["teacher_arch"], s["student_arch"])}
    student = create_model(s["student_arch"], info.num_classes, info.channels).to(study.device)
    teacher = create_model(s["teacher_arch"], info.num_classes, info.channels).to(study.device).eval()
    x = torch.randn(batch, info.channels, info.size, info.size, device=study.device)
    for timed in (False, True):  # the first step warms up
        start = time.perf_counter()
        with torch.no_grad():
            teacher(x)
        student(x).sum().backward()
        if study.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    rate = batch * (3 * f[s["student_arch"]] + f[s["teacher_arch"]]) / seconds
    lines = [f"time estimate on {study.device} ({rate / 1e9:.3g} GFLOP/s measured on one step of the student "
             f"with its teacher, batch {batch}; computed, not measured):"]
    hours = 0.0
    for run in study.runs.values():
        c = run.cfg
        if c["method"] == "published":
            continue
        n = len(study.split_of(c["seed"], c["train_subset"]))  # the teacher's split may be larger
        per_image = 3 * f[c["arch"]] + (f[s["teacher_arch"]] if run.teacher else 0)
        scored = sum(scored_epoch(c, e) for e in range(1, c["epochs"] + 1)) if "score_every" in c else 0
        total = c["epochs"] * n * per_image + scored * len(study.test) * f[c["arch"]]
        hours += total / rate / 3600
        lines.append(f"  {run.name}: {total / 1e12:.4g} TFLOP, about {total / rate / 3600:.2g} h")
    lines.append(f"  the whole study: about {hours:.2g} h")
    return lines

"""The CUDA branch end to end on synthetic CIFAR-100-shaped data (nothing is downloaded): a few
steps of every method, eager and under the torch.compile modes, each checked for finite losses,
a frozen teacher backbone and a resume that continues where it stopped. One JSON line per check.

    python bench/gpu_check.py            # on a GPU: resnet50 -> resnet18, batch 128
    python bench/gpu_check.py --dry      # on the CPU with the CUDA settings forced on, tiny networks

`bench/gpu.sh` runs this, then the throughput benchmark.
"""
import argparse
import contextlib
import copy
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lwsupcrd.checkpoint import weights_sha256  # noqa: E402
from lwsupcrd.data import DATASETS, Split  # noqa: E402
from lwsupcrd.models import ModelWrapper  # noqa: E402
from lwsupcrd.methods import METHODS as REGISTRY, needs_teacher  # noqa: E402
from lwsupcrd.train import Execution, TrainingInterrupted, check_frozen, fit, frozen_snapshot  # noqa: E402

METHODS = {
    "ce": dict(method="ce", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, schedule="cosine"),
    "projection": dict(method="projection"),
    "undistilled": dict(method="undistilled"),
    "supcon": dict(method="supcon"),
    "crd": dict(method="crd"),
    "crd_bank": dict(method="crd", bank_momentum=0.5),
    "lwsupcrd": dict(method="lwsupcrd", alpha=1.0, beta=10.0, adaptive_beta=True),
    "lwsupcrd_bank": dict(method="lwsupcrd", alpha=1.0, beta=10.0, adaptive_beta=True, bank_momentum=0.5),
    # the standard protocol's richest student: CE + KD + LW-SupCRD with the bank, one view, SGD, step schedule
    "standard_lwsupcrd_kd": dict(REGISTRY["lwsupcrd_kd"].config("", 1), method="standard", optimizer="sgd", lr=0.05,
                                 momentum=0.9, weight_decay=5e-4, schedule="step", lr_milestones=[1], lr_decay=0.1,
                                 kd_temperature=4.0, bank_momentum=0.5),
}
# compiling costs minutes on a GPU: the compile modes run for the teacher's step and the richest student step
COMPILED = ("ce", "lwsupcrd_bank")
SIZES = {  # teacher, student, images, batch, bank negatives
    "gpu": ("resnet50", "resnet18", 1024, 128, 512),
    "dry": ("resnet8", "resnet8", 96, 16, 32),
}


def synthetic(n: int) -> Split:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return Split(images, torch.arange(n) % 100, torch.arange(n), [str(i) for i in range(100)])


def build(name: str, size: tuple, device: torch.device):
    teacher_arch, student_arch, _, batch, bank = size
    cfg = dict(num_classes=100, in_channels=3, epochs=2, batch_size=batch, seed=0, amp=True, channels_last=True,
               optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant", temperature=0.07,
               arch=teacher_arch if name in ("ce", "projection") else student_arch)
    cfg.update(METHODS[name])
    if "bank_momentum" in cfg:
        cfg["bank_negatives"] = bank
    torch.manual_seed(0)
    student = ModelWrapper.from_config(cfg).to(device, memory_format=torch.channels_last)
    teacher = None
    if needs_teacher(cfg):
        teacher = ModelWrapper.from_config(dict(cfg, arch=teacher_arch)).to(device, memory_format=torch.channels_last)
        teacher.requires_grad_(False)
        teacher.projection.requires_grad_(True)
    return cfg, student, teacher


def stop_after_first_epoch(row):
    raise KeyboardInterrupt


def check(name: str, mode: str | None, size: tuple, train: Split, device: torch.device, execution) -> dict:
    """Two epochs straight; then one epoch, a stop, and a resume; compare."""
    cfg, student, teacher = build(name, size, device)
    info = DATASETS["cifar100"]
    row = dict(kind="check", method=name, compile=mode or "eager", device=str(device))
    start = time.perf_counter()
    try:
        s, t = copy.deepcopy(student), copy.deepcopy(teacher)
        fixed = t.backbone if t is not None else s.backbone if name == "projection" else None  # must not move
        frozen = frozen_snapshot(fixed) if fixed is not None else None
        history = fit(name, cfg, s, train, info, device, teacher=t, progress=False, compile_mode=mode,
                      execution=execution(mode))
        if fixed is not None:
            check_frozen(name, frozen, fixed)
        with tempfile.TemporaryDirectory() as tmp:
            resume = Path(tmp) / "resume.pth"
            s1, t1 = copy.deepcopy(student), copy.deepcopy(teacher)
            try:
                fit(name, cfg, s1, train, info, device, teacher=t1, progress=False, compile_mode=mode,
                    execution=execution(mode), resume_path=resume, on_epoch=stop_after_first_epoch)
            except TrainingInterrupted:
                pass
            s2, t2 = copy.deepcopy(student), copy.deepcopy(teacher)
            resumed = fit(name, cfg, s2, train, info, device, teacher=t2, progress=False, compile_mode=mode,
                          execution=execution(mode), resume_path=resume)
        losses = [r["loss"] for r in history]
        row.update(losses=losses, finite=all(torch.isfinite(torch.tensor(losses)).tolist()),
                   resumed_epochs=len(resumed),
                   resume_bit_exact=weights_sha256(s2.state_dict()) == weights_sha256(s.state_dict()),
                   images_per_second=round(history[-1]["images_per_second"], 1))
        # on a GPU, kernels may reduce in another order after a resume: exactness is reported, not required
        row["ok"] = row["finite"] and len(resumed) == cfg["epochs"]
    except Exception as err:  # a failing check is a finding to report, not the end of the script
        row.update(ok=False, error=f"{type(err).__name__}: {err}", where=traceback.format_exc(limit=-3)[-1500:])
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry", action="store_true", help="run on the CPU with the CUDA settings forced on, tiny sizes")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--compile-modes", default="default,reduce-overhead",
                   help=f"torch.compile modes checked for {', '.join(COMPILED)} (empty: eager only)")
    a = p.parse_args()
    if a.dry:
        device = torch.device("cpu")

        def execution(mode):  # the GPU's settings, with the CPU as the device
            return Execution(fused_optimizer=True, step_checks=False, mark_cudagraph_steps=True)
    else:
        if not torch.cuda.is_available():
            print("error: no CUDA device here; run `bash bench/gpu.sh --dry` to check the script on the CPU",
                  file=sys.stderr)
            return 2
        device = torch.device("cuda")

        def execution(mode):
            return Execution.for_device(device, mode)
    unknown = [m for m in a.methods.split(",") if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    size = SIZES["dry" if a.dry else "gpu"]
    train = synthetic(size[2]).to(device)
    modes = [m for m in a.compile_modes.split(",") if m]
    rows = []
    for name in a.methods.split(","):
        for mode in [None] + (modes if name in COMPILED else []):
            with contextlib.redirect_stdout(sys.stderr):  # the loop's own lines stay off the JSON stream
                rows.append(check(name, mode, size, train, device, execution))
            print(json.dumps(rows[-1]), flush=True)
    failed = [f"{r['method']}/{r['compile']}" for r in rows if not r["ok"]]
    print(json.dumps(dict(kind="summary", checks=len(rows), failed=failed,
                          gpu=torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                          torch=str(torch.__version__))), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

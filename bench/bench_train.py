"""Training-loop throughput (not a test): our loop against a plain reference loop, on synthetic
uint8 data of a dataset's shape and a randomly initialised teacher, so nothing is downloaded.

    python bench/bench_train.py                           # CPU default: resnet20 -> resnet8, batch 128
    python bench/bench_train.py --teacher resnet50 --student resnet18 --device cuda --images 50000

For each method it prints one JSON line (images/s, seconds per epoch of the full split, peak
memory), measured over the second epoch of a `--images`-sized split (the first is warm-up and,
for the compiled variants, compilation). "teacher" times the teacher's own cross-entropy training.
The reference loop does the same step the common way: per-image torchvision transforms in a
DataLoader, float32, contiguous layout, the teacher under no_grad.
"""
import argparse
import json
import platform
import sys
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from lwsupcrd.data import DATASETS, Split  # noqa: E402
from lwsupcrd.models import ModelWrapper  # noqa: E402
from lwsupcrd.train import fit  # noqa: E402
from reference_loop import reference_fit  # noqa: E402

METHODS = {
    "teacher": dict(method="ce"),  # the teacher's own cross-entropy training, one view
    "undistilled": dict(method="undistilled"),
    "supcon": dict(method="supcon"),
    "crd": dict(method="crd"),
    "crd_bank": dict(method="crd", bank_negatives=4096, bank_momentum=0.5),
    "lwsupcrd": dict(method="lwsupcrd", alpha=1.0, beta=10.0, adaptive_beta=True),
    "lwsupcrd_bank": dict(method="lwsupcrd", alpha=1.0, beta=10.0, adaptive_beta=True, bank_negatives=4096,
                          bank_momentum=0.5),
}


# our loop's variants: (bf16 autocast, channels_last, torch.compile mode)
VARIANTS = {
    "fp32": (False, False, None),
    "channels_last": (False, True, None),
    "bf16": (True, False, None),
    "compile": (False, False, "default"),
    "cuda": (True, True, None),  # what the study does on a GPU
    "cuda_compile": (True, True, "default"),
    "cuda_graphs": (True, True, "reduce-overhead"),
}


def peak_memory_mb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(info, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, info.channels, info.size, info.size), generator=gen, dtype=torch.uint8)
    labels = torch.arange(n) % info.num_classes
    return Split(images, labels, torch.arange(n), [str(i) for i in range(info.num_classes)])


def config(args, name, amp, channels_last):
    arch = args.teacher if name == "teacher" else args.student
    info = DATASETS[args.dataset]
    method = dict(METHODS[name])
    if "bank_negatives" in method:
        method["bank_negatives"] = args.bank_negatives
    return dict(method, arch=arch, num_classes=info.num_classes, in_channels=info.channels, epochs=2,
                batch_size=args.batch_size, optimizer="adam", lr=1e-3, weight_decay=0.0, schedule="constant",
                temperature=0.07, seed=0, amp=amp, channels_last=channels_last)


def models(args, cfg, device):
    """The trained network and, for the distillation methods, a frozen teacher with a trainable head."""
    student = ModelWrapper.from_config(cfg).to(device)
    teacher = None
    if cfg["method"] in ("crd", "lwsupcrd"):
        teacher = ModelWrapper.from_config(dict(cfg, arch=args.teacher)).to(device)
        teacher.requires_grad_(False)
        teacher.projection.requires_grad_(True)
    if cfg["channels_last"]:
        student, teacher = (m.to(memory_format=torch.channels_last) if m is not None else None
                            for m in (student, teacher))
    return teacher, student


def ours(args, name, info, train, device, amp, channels_last, compile_mode):
    cfg = config(args, name, amp, channels_last)
    teacher, student = models(args, cfg, device)
    rows = fit(name, cfg, student, train, info, device, teacher=teacher, progress=False, compile_mode=compile_mode)
    return rows[-1]["images_per_second"]


def reference(args, name, info, train, device, workers):
    """The plain loop (bench/reference_loop.py) on the same runs, a second epoch's images/s."""
    cfg = config(args, name, amp=False, channels_last=False)
    teacher, student = models(args, cfg, device)
    rows = reference_fit(name, cfg, student, train, info, device, teacher=teacher, progress=False, workers=workers)
    return rows[-1]["images_per_second"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="cifar100", choices=sorted(DATASETS))
    p.add_argument("--teacher", default="resnet20")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=4224, help="size of the synthetic training split (>= the 4,096 bank negatives)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bank-negatives", type=int, default=4096, help="negatives drawn from the bank per step")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    p.add_argument("--variants", default=None,
                   help=f"our loop's variants to time, from {', '.join(VARIANTS)} "
                        "(default: fp32,channels_last,bf16 on the CPU; cuda,cuda_compile,cuda_graphs on CUDA)")
    p.add_argument("--no-reference", action="store_true", help="skip the reference loop")
    a = p.parse_args()
    device = torch.device(a.device)
    info = DATASETS[a.dataset]
    train = synthetic(info, a.images)
    common = dict(dataset=a.dataset, teacher=a.teacher, student=a.student, batch_size=a.batch_size, images=a.images,
                  device=str(device), gpu=torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                  threads=torch.get_num_threads(), torch=str(torch.__version__), machine=platform.machine(),
                  date=str(date.today()))
    default = "cuda,cuda_compile,cuda_graphs" if device.type == "cuda" else "fp32,channels_last,bf16"
    chosen = (a.variants or default).split(",")
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    dev_train = train.to(device)
    for name in a.methods.split(","):
        line = dict(kind="throughput", method=name, **common)
        for variant in chosen:
            amp, cl, mode = VARIANTS[variant]
            torch.manual_seed(0)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rate = ours(a, name, info, dev_train, device, amp, cl, mode)
            line[f"ours_{variant}_img_s"] = round(rate, 1)
            line[f"ours_{variant}_s_per_epoch"] = round(info.train_size / rate, 2)
            line[f"ours_{variant}_peak_memory_mb"] = round(peak_memory_mb(device), 1)
        if not a.no_reference:
            torch.manual_seed(0)
            ref = reference(a, name, info, train, device, a.workers)
            line["reference_img_s"] = round(ref, 1)
            line["reference_s_per_epoch"] = round(info.train_size / ref, 2)
            best = max(v for k, v in line.items() if k.startswith("ours_") and k.endswith("_img_s"))
            line["speedup_best_vs_reference"] = round(best / ref, 2)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

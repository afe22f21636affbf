"""Training-loop throughput (not a test): our loop against a plain reference loop, on synthetic
uint8 data of a dataset's shape and a randomly initialised teacher, so nothing is downloaded.

    python bench/bench_train.py                           # CPU default: resnet20 -> resnet8, batch 128
    python bench/bench_train.py --teacher resnet50 --student resnet18 --device cuda --images 50000

For each method it prints one JSON line (images/s, seconds per epoch of the full split, peak
memory), measured over the second epoch of a `--images`-sized split (the first is warm-up).
The reference loop does the same step the common way: per-image torchvision transforms in a
DataLoader, float32, contiguous layout, the teacher under no_grad.
"""
import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lwsupcrd.data import DATASETS, Split  # noqa: E402
from lwsupcrd.losses import crd_loss, lw_supcrd_loss, supcon_loss  # noqa: E402
from lwsupcrd.memory_bank import MomentumMemoryBank  # noqa: E402
from lwsupcrd.models import ModelWrapper  # noqa: E402
from lwsupcrd.train import fit  # noqa: E402

METHODS = {
    "undistilled": dict(method="undistilled"),
    "supcon": dict(method="supcon"),
    "crd": dict(method="crd"),
    "crd_bank": dict(method="crd", bank_negatives=4096, bank_momentum=0.5),
    "lwsupcrd": dict(method="lwsupcrd", alpha=1.0, beta=10.0, adaptive_beta=True),
    "lwsupcrd_bank": dict(method="lwsupcrd", alpha=1.0, beta=10.0, adaptive_beta=True, bank_negatives=4096,
                          bank_momentum=0.5),
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


def ours(args, name, info, train, device, amp, channels_last):
    teacher = ModelWrapper(args.teacher, info.num_classes, in_channels=info.channels).to(device)
    student = ModelWrapper(args.student, info.num_classes, in_channels=info.channels).to(device)
    if channels_last:
        teacher, student = teacher.to(memory_format=torch.channels_last), student.to(memory_format=torch.channels_last)
    teacher.requires_grad_(False)
    teacher.projection.requires_grad_(True)
    cfg = dict(METHODS[name], arch=args.student, epochs=2, batch_size=args.batch_size, optimizer="adam", lr=1e-3,
               weight_decay=0.0, schedule="constant", temperature=0.07, seed=0, amp=amp, channels_last=channels_last)
    rows = fit(name, cfg, student, train, info, device, teacher=teacher, progress=False)
    return rows[-1]["images_per_second"]


def reference(args, name, info, train, device, workers):
    """The common loop: PIL images, torchvision transforms per image in DataLoader workers."""
    from PIL import Image
    from torchvision import transforms

    spec = METHODS[name]
    mode = "L" if info.channels == 1 else "RGB"
    tf = transforms.Compose([transforms.RandomCrop(info.size, padding=4), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(info.mean, info.std)])
    arrays = train.images.permute(0, 2, 3, 1).numpy()

    class TwoViews(torch.utils.data.Dataset):
        def __len__(self):
            return len(arrays)

        def __getitem__(self, i):
            img = Image.fromarray(arrays[i].squeeze(-1) if info.channels == 1 else arrays[i], mode)
            return tf(img), tf(img), int(train.labels[i]), i

    loader = torch.utils.data.DataLoader(TwoViews(), batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=workers, persistent_workers=workers > 0)
    teacher = ModelWrapper(args.teacher, info.num_classes, in_channels=info.channels).to(device).eval()
    student = ModelWrapper(args.student, info.num_classes, in_channels=info.channels).to(device)
    params = list(student.parameters()) + list(teacher.projection.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    bank = None
    if spec.get("bank_negatives"):
        bank = MomentumMemoryBank(len(train), 64, train.labels, momentum=0.5, device=device)
    rate = 0.0
    for epoch in range(2):
        start = time.perf_counter()
        seen = 0
        for v1, v2, y, idx in loader:
            x = torch.cat([v1, v2]).to(device)
            y2, idx2 = torch.cat([y, y]).to(device), torch.cat([idx, idx]).to(device)
            if spec["method"] == "undistilled":
                loss = torch.nn.functional.cross_entropy(student(x)[2], y2)
            else:
                _, z, _ = student(x)
                if spec["method"] == "supcon":
                    loss = supcon_loss(z, y2)
                else:
                    with torch.no_grad():
                        f = teacher.backbone.forward_features(x)
                        probs = torch.softmax(teacher.classifier(f), 1)
                    t = teacher.project(f)
                    kw = {}
                    if bank is not None:
                        keys, labels, ids = bank.sample(4096)
                        kw = dict(bank_keys=keys, bank_ids=ids) if spec["method"] == "crd" else dict(
                            bank_keys=keys, bank_labels=labels)
                    loss = (crd_loss(z, t, idx2, **kw) if spec["method"] == "crd"
                            else lw_supcrd_loss(z, t, y2, probs, **kw))
                    if bank is not None:
                        b = len(y)
                        bank.update(idx.to(device), ((t[:b] + t[b:]) / 2).detach())
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = seen / (time.perf_counter() - start)
    return rate


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="cifar100", choices=sorted(DATASETS))
    p.add_argument("--teacher", default="resnet20")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=4224, help="size of the synthetic training split (>= the 4,096 bank negatives)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    p.add_argument("--variants", default="fp32,channels_last,bf16", help="our loop's CPU variants to time")
    a = p.parse_args()
    device = torch.device(a.device)
    info = DATASETS[a.dataset]
    train = synthetic(info, a.images)
    common = dict(dataset=a.dataset, teacher=a.teacher, student=a.student, batch_size=a.batch_size,
                  device=str(device), gpu=torch.cuda.get_device_name(0) if device.type == "cuda" else None,
                  threads=torch.get_num_threads(), torch=str(torch.__version__), machine=platform.machine(),
                  date=str(date.today()))
    variants = {"fp32": (False, False), "channels_last": (False, True), "bf16": (True, False)}
    if device.type == "cuda":
        variants = {"cuda_default": (True, True)}
    else:
        variants = {k: v for k, v in variants.items() if k in a.variants.split(",")}
    for name in a.methods.split(","):
        line = dict(method=name, **common)
        dev_train = train.to(device)
        for variant, (amp, cl) in variants.items():
            torch.manual_seed(0)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rate = ours(a, name, info, dev_train, device, amp, cl)
            line[f"ours_{variant}_img_s"] = round(rate, 1)
            line[f"ours_{variant}_s_per_epoch"] = round(info.train_size / rate, 1)
        line["peak_memory_mb"] = round(peak_memory_mb(device), 1)
        torch.manual_seed(0)
        ref = reference(a, name, info, train, device, a.workers)
        line["reference_img_s"] = round(ref, 1)
        line["reference_s_per_epoch"] = round(info.train_size / ref, 1)
        best = max(v for k, v in line.items() if k.startswith("ours_") and k.endswith("_img_s"))
        line["speedup_best_vs_reference"] = round(best / ref, 2)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()

"""Milliseconds per forward+backward of each loss on the CPU (not a test).

    python bench/bench_losses.py [--anchors 256 --bank 4096 --dim 64 --classes 100 --repeats 20]

Prints one JSON line per loss and the ratio of LW-SupCRD + bank to CRD + bank.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lwsupcrd.losses import crd_loss, lw_supcrd_loss, supcon_loss  # noqa: E402


def time_ms(fn, repeats):
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--anchors", type=int, default=256)
    p.add_argument("--bank", type=int, default=4096)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--classes", type=int, default=100)
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    gen = torch.Generator().manual_seed(0)
    z = F.normalize(torch.randn(a.anchors, a.dim, generator=gen), dim=1).requires_grad_()
    t = F.normalize(torch.randn(a.anchors, a.dim, generator=gen), dim=1).requires_grad_()
    labels = torch.randint(0, a.classes, (a.anchors,), generator=gen)
    ids = torch.arange(a.anchors) % (a.anchors // 2)
    probs = torch.softmax(torch.randn(a.anchors, a.classes, generator=gen), 1)
    bank = F.normalize(torch.randn(a.bank, a.dim, generator=gen), dim=1)
    bank_labels = torch.randint(0, a.classes, (a.bank,), generator=gen)
    bank_ids = torch.randperm(50_000, generator=gen)[: a.bank]

    cases = {
        "supcon": lambda: supcon_loss(torch.cat([z, t]), torch.cat([labels, labels])),
        "crd": lambda: crd_loss(z, t, ids),
        "crd_bank": lambda: crd_loss(z, t, ids, bank_keys=bank, bank_ids=bank_ids),
        "lw_supcrd": lambda: lw_supcrd_loss(z, t, labels, probs),
        "lw_supcrd_bank": lambda: lw_supcrd_loss(z, t, labels, probs, bank_keys=bank, bank_labels=bank_labels),
    }
    results = {}
    for name, loss in cases.items():
        results[name] = time_ms(lambda: loss().backward(), a.repeats)
        print(json.dumps({"loss": name, "ms_fwd_bwd": round(results[name], 3), "anchors": a.anchors,
                          "bank": a.bank if "bank" in name else 0, "dim": a.dim, "classes": a.classes,
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "machine": platform.machine()}))
    print(json.dumps({"ratio_lw_supcrd_bank_over_crd_bank": round(results["lw_supcrd_bank"] / results["crd_bank"], 2),
                      "target": "<= 3"}))


if __name__ == "__main__":
    main()

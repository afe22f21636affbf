"""Seconds for the full analysis of one run at CIFAR-100 test size (not a test).

    python bench/bench_analysis.py [--n 10000 --dim 512 --classes 100]

Embeddings are synthetic (class centroids plus noise, unit norm), so no model or data is needed;
the metrics and every figure are computed exactly as for a real run.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lwsupcrd import plots  # noqa: E402
from lwsupcrd.analysis import Embeddings, geometry  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--classes", type=int, default=100)
    a = p.parse_args()
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(a.n) % a.classes
    centres = torch.randn(a.classes, a.dim, generator=gen)
    clean = F.normalize(centres[labels] + torch.randn(a.n, a.dim, generator=gen), dim=1)
    views = [F.normalize(clean + 0.2 * torch.randn(a.n, a.dim, generator=gen), dim=1) for _ in range(2)]
    e = Embeddings("features", clean, views[0], views[1], labels)
    names = [f"class {i}" for i in range(a.classes)]
    timings = {}
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        for name, fn in (("metrics", lambda: geometry(e)),
                         ("tsne", lambda: plots.tsne_figure(e, names, "bench", out / "tsne.png", 0)),
                         ("hypersphere", lambda: plots.hypersphere_page(e, names, "bench", out / "h.html", 0)),
                         ("alignment_figure", lambda: plots.alignment_figure(e, names, "bench", out / "a.png", 0))):
            start = time.perf_counter()
            fn()
            timings[name] = round(time.perf_counter() - start, 2)
    print(json.dumps({"n": a.n, "dim": a.dim, "threads": torch.get_num_threads(), "seconds": timings,
                      "total_seconds": round(sum(timings.values()), 2), "target_seconds": 120}))


if __name__ == "__main__":
    main()

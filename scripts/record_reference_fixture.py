"""Record tests/fixtures/repdistiller_reference.pt from RepDistiller's own model definitions.

    python scripts/record_reference_fixture.py PATH/TO/RepDistiller [--commit SHA]

Run once, outside the project's tests: it imports the reference's `models` package from the given
checkout (which never enters this repository) and stores plain data only: every state-dict key and
shape of each architecture in `lwsupcrd.published.PUBLISHED_ARCHS`, and, for the smallest network of
each family, an input and the reference's eval-mode logits and intermediate features (`is_feat=True`,
post- and pre-activation) under `synthetic_state` weights.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lwsupcrd.files import atomic_write  # noqa: E402
from lwsupcrd.published import PUBLISHED_ARCHS, synthetic_state  # noqa: E402

SMALLEST = ("resnet8", "resnet8x4", "wrn_16_1", "vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet50")  # one per family
NUM_CLASSES = 100
STRIDE = 97  # one value in 97 of each intermediate feature map


def stage_sample(feature: torch.Tensor) -> dict:
    """A feature map kept small: its shape, mean, and every STRIDE-th value (the fixture stays < 1 MB)."""
    return {"shape": list(feature.shape), "mean": feature.mean(), "values": feature.flatten()[::STRIDE].clone()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reference", type=Path, help="a checkout of HobbitLong/RepDistiller")
    p.add_argument("--commit", default="", help="the checkout's commit, recorded with the fixture")
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "repdistiller_reference.pt")
    a = p.parse_args()
    sys.path.insert(0, str(a.reference))
    from models import model_dict  # the reference's registry

    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 32)
    fixture = {"source": {"repo": "HobbitLong/RepDistiller", "commit": a.commit, "torch": str(torch.__version__)},
               "num_classes": NUM_CLASSES, "input": x, "archs": {}, "logits": {}, "stages": {}}
    for arch in PUBLISHED_ARCHS:
        net = model_dict[arch](num_classes=NUM_CLASSES)
        keys = [(k, tuple(v.shape)) for k, v in net.state_dict().items()]
        fixture["archs"][arch] = [[k, list(s)] for k, s in keys]
        if arch in SMALLEST:
            net.load_state_dict(synthetic_state(keys))
            with torch.no_grad():
                fixture["logits"][arch] = net.eval()(x)
                fixture["stages"][arch] = {kind: [stage_sample(f) for f in net(x, is_feat=True, preact=kind == "pre")[0]]
                                           for kind in ("post", "pre")}
        print(f"{arch}: {len(keys)} tensors, {sum(v.numel() for v in net.state_dict().values())} values")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(a.out, lambda tmp: torch.save(fixture, tmp))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

"""Record tests/fixtures/repdistiller_connectors.pt: RepDistiller's modules of its two-stage methods
(AB's Connector, FT's Paraphraser and Translator), as its own code builds and runs them.

    python scripts/record_connector_fixture.py PATH/TO/RepDistiller [--commit SHA]

Run once, outside the project's tests: it imports the reference's `models.util` from the given
checkout (which never enters this repository) and stores plain data only: each module's seeded
state dict, a float64 input and its outputs in training mode (BatchNorm on the batch, as in the
initialisation and the distillation), and the input's gradient of the outputs' sum. AB's connector
has one stage whose shapes agree (the identity) and one where they differ (a regressor without ReLU).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lwsupcrd.files import save_torch  # noqa: E402


def run(module, inputs, outputs_of):
    module = module.double().train()
    inputs = [x.clone().requires_grad_() for x in inputs]
    outs = outputs_of(module, inputs)
    grads = torch.autograd.grad(sum(o.sum() for o in outs), inputs)
    return {"state": {k: v.detach().clone() for k, v in module.state_dict().items()},
            "inputs": [x.detach() for x in inputs], "outputs": [o.detach() for o in outs],
            "grads": [g.detach() for g in grads]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("reference")
    parser.add_argument("--commit", default="b84f547")
    args = parser.parse_args()
    sys.path.insert(0, args.reference)
    from models.util import Connector, Paraphraser, Translator

    g = torch.Generator().manual_seed(0)
    s_maps = [torch.randn(4, 8, 8, 8, generator=g, dtype=torch.float64),
              torch.randn(4, 6, 8, 8, generator=g, dtype=torch.float64)]
    t_shapes = [torch.Size([4, 8, 8, 8]), torch.Size([4, 10, 4, 4])]
    t_map = torch.randn(4, 12, 4, 4, generator=g, dtype=torch.float64)
    torch.manual_seed(1)
    fixture = {"commit": args.commit,
               "connector": run(Connector([m.shape for m in s_maps], t_shapes), s_maps, lambda m, x: m(x)),
               "paraphraser": run(Paraphraser(t_map.shape), [t_map], lambda m, x: list(m(x[0]))),
               "translator": run(Translator(s_maps[1].shape, t_map.shape), [s_maps[1]], lambda m, x: [m(x[0])])}
    save_torch(ROOT / "tests" / "fixtures" / "repdistiller_connectors.pt", fixture)
    print({k: [tuple(o.shape) for o in v["outputs"]] for k, v in fixture.items() if k != "commit"})


if __name__ == "__main__":
    main()

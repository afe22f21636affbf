"""Record tests/fixtures/repdistiller_crd.pt: two steps of RepDistiller's own `CRDLoss` on small inputs.

    python scripts/record_crd_fixture.py PATH/TO/RepDistiller [--commit SHA]

Run once, outside the project's tests: it imports the reference's `crd` package from the given
checkout (which never enters this repository) and stores plain data only: the inputs (student and
teacher features, dataset indices, the sampled contrast indices), the reference's embedding
weights and initial memories, and after each step its loss, its two Z constants, its memories and
(first step) the gradients of the loss with respect to both features. The reference's sampler
runs on CUDA only; the contrast indices are passed in, so it is never called.
"""
from __future__ import annotations

import argparse
import sys
from argparse import Namespace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lwsupcrd.files import save_torch  # noqa: E402

N_DATA, K, BATCH, S_DIM, T_DIM, FEAT_DIM, CLASSES = 40, 6, 5, 8, 12, 6, 4


def contrast_indices(labels: torch.Tensor, slots: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """RepDistiller's 'exact' mode: the image's own index, then K images of other classes."""
    rows = []
    for y, slot in zip(labels.tolist(), slots.tolist()):
        others = torch.nonzero(torch.arange(N_DATA) % CLASSES != y).flatten()
        rows.append(torch.cat([torch.tensor([slot]), others[torch.randperm(len(others), generator=g)[:K]]]))
    return torch.stack(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reference", type=Path, help="a checkout of HobbitLong/RepDistiller")
    p.add_argument("--commit", default="", help="the checkout's commit, recorded with the fixture")
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "repdistiller_crd.pt")
    a = p.parse_args()
    sys.path.insert(0, str(a.reference))
    from crd import memory
    from crd.criterion import CRDLoss

    memory.AliasMethod.cuda = lambda self: None  # its sampler moves to CUDA; ours passes the indices in
    torch.manual_seed(0)
    crd = CRDLoss(Namespace(s_dim=S_DIM, t_dim=T_DIM, feat_dim=FEAT_DIM, nce_k=K, nce_t=0.07, nce_m=0.5,
                            n_data=N_DATA)).double()
    fixture = {"source": {"repo": "HobbitLong/RepDistiller", "commit": a.commit, "torch": str(torch.__version__)},
               "n_data": N_DATA, "k": K, "temperature": 0.07, "momentum": 0.5, "classes": CLASSES,
               "labels": torch.arange(N_DATA) % CLASSES,
               "embed_s": {k: v.clone() for k, v in crd.embed_s.state_dict().items()},
               "embed_t": {k: v.clone() for k, v in crd.embed_t.state_dict().items()},
               "memory_student": crd.contrast.memory_v1.clone(), "memory_teacher": crd.contrast.memory_v2.clone(),
               "steps": []}
    g = torch.Generator().manual_seed(1)
    for step in range(2):
        slots = torch.randperm(N_DATA, generator=g)[:BATCH]
        f_s = torch.randn(BATCH, S_DIM, generator=g, dtype=torch.float64, requires_grad=True)
        f_t = torch.randn(BATCH, T_DIM, generator=g, dtype=torch.float64, requires_grad=True)
        idx = contrast_indices(slots % CLASSES, slots, g)
        loss = crd(f_s, f_t, slots, idx)
        loss.backward()
        fixture["steps"].append({"slots": slots, "f_s": f_s.detach(), "f_t": f_t.detach(), "indices": idx,
                                 "loss": loss.detach(), "z": crd.contrast.params[2:4].clone(),
                                 "grad_f_s": f_s.grad.clone(), "grad_f_t": f_t.grad.clone(),
                                 "memory_student": crd.contrast.memory_v1.clone(),
                                 "memory_teacher": crd.contrast.memory_v2.clone()})
        crd.zero_grad()
        print(f"step {step + 1}: loss {float(loss):.6f}, Z {crd.contrast.params[2:4].tolist()}")
    save_torch(a.out, fixture)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

"""Record tests/fixtures/repdistiller_relation.pt: RepDistiller's own PKT, RKD, NST, CC and VID losses,
and the objectives of its two-stage methods (AB, FT, FSP), on small float64 inputs, with their gradients.

    python scripts/record_relation_fixture.py PATH/TO/RepDistiller [--commit SHA]

Run once, outside the project's tests: it imports the reference's `distiller_zoo` from the given
checkout (which never enters this repository) and stores plain data only: the inputs, each loss and
the gradients with respect to the student's inputs (and, for CC, whose teacher embedding trains, the
teacher's). The inputs are shaped as `train_student.py` passes them: pooled features (PKT, RKD), the
linear embeddings of both networks (CC), the stage outputs between the stem and the pooling (NST,
VID), with one student map larger and one smaller than the teacher's, so that both pooling paths
run. VID's regressors are initialised by the reference (seeded) and stored with their gradients.
AB's inputs are the connector's outputs against the teacher's pre-activations (three stages); FT's
the translated and the paraphrased maps; FSP's the feature maps before the pooling, with equal
channels (the reference refuses others) and one pair of sizes that differ.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lwsupcrd.files import save_torch  # noqa: E402

BATCH = 6


def leaf(*shape, g):
    return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()


def record(loss_fn, student, teacher) -> dict:
    loss = loss_fn(student, teacher)
    loss = sum(loss) if isinstance(loss, list) else loss
    inputs = [x for x in (*(student if isinstance(student, list) else [student]),
                          *(teacher if isinstance(teacher, list) else [teacher])) if x.requires_grad]
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)

    def plain(x):
        return [t.detach().clone() for t in x] if isinstance(x, list) else x.detach().clone()

    return {"student": plain(student), "teacher": plain(teacher), "loss": loss.detach(),
            "grads": [None if gr is None else gr.clone() for gr in grads]}


def record_vid(vid_loss, student: list, teacher: list) -> dict:
    """RepDistiller's VIDLoss(s, t, t) per stage, summed as its train_student.py sums them."""
    torch.manual_seed(1)
    criteria = [vid_loss(s.shape[1], t.shape[1], t.shape[1]).double() for s, t in zip(student, teacher)]
    student = [x.detach().clone().requires_grad_() for x in student]
    loss = sum(c(s, t) for c, s, t in zip(criteria, student, teacher))
    params = [p for c in criteria for p in c.parameters()]
    grads = torch.autograd.grad(loss, student + params)
    return {"student": [x.detach() for x in student], "teacher": teacher, "loss": loss.detach(),
            "state": [{k: v.detach().clone() for k, v in c.state_dict().items()} for c in criteria],
            "grads": [g.clone() for g in grads[:len(student)]], "param_grads": [g.clone() for g in grads[len(student):]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reference", type=Path, help="a checkout of HobbitLong/RepDistiller")
    p.add_argument("--commit", default="", help="the checkout's commit, recorded with the fixture")
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "repdistiller_relation.pt")
    a = p.parse_args()
    sys.path.insert(0, str(a.reference))
    from distiller_zoo import FSP, PKT, ABLoss, Correlation, FactorTransfer, NSTLoss, RKDLoss, VIDLoss

    g = torch.Generator().manual_seed(0)
    fixture = {"source": {"repo": "HobbitLong/RepDistiller", "commit": a.commit, "torch": str(torch.__version__)}}
    fixture["pkt"] = record(PKT(), leaf(BATCH, 8, g=g), leaf(BATCH, 12, g=g).detach())
    fixture["rkd"] = record(RKDLoss(w_d=25, w_a=50), leaf(BATCH, 8, g=g), leaf(BATCH, 12, g=g).detach())
    fixture["cc"] = record(Correlation(), leaf(BATCH, 5, g=g), leaf(BATCH, 5, g=g))
    student = [leaf(BATCH, 3, 8, 8, g=g), leaf(BATCH, 5, 4, 4, g=g)]
    teacher = [leaf(BATCH, 6, 4, 4, g=g).detach(), leaf(BATCH, 7, 8, 8, g=g).detach()]
    fixture["nst"] = record(NSTLoss(), student, teacher)
    fixture["vid"] = record_vid(VIDLoss, student, teacher)
    ab_s = [leaf(BATCH, c, h, h, g=g) for c, h in ((4, 8), (5, 4), (6, 2))]
    fixture["ab"] = record(ABLoss(3), ab_s, [torch.randn(x.shape, generator=g, dtype=torch.float64) for x in ab_s])
    fixture["ft"] = record(FactorTransfer(), leaf(BATCH, 4, 8, 8, g=g), leaf(BATCH, 4, 4, 4, g=g).detach())
    fsp_s = [leaf(BATCH, c, h, h, g=g) for c, h in ((3, 8), (4, 8), (5, 4))]
    fsp_t = [leaf(BATCH, c, h, h, g=g).detach() for c, h in ((3, 8), (4, 4), (5, 4))]
    fixture["fsp"] = record(FSP([x.shape for x in fsp_s], [x.shape for x in fsp_t]), fsp_s, fsp_t)
    for name in ("pkt", "rkd", "cc", "nst", "vid", "ab", "ft", "fsp"):
        print(f"{name}: loss {float(fixture[name]['loss']):.10g}")
    save_torch(a.out, fixture)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

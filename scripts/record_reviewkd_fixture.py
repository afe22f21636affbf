"""Record tests/fixtures/reviewkd.pt: mdistiller's ReviewKD (its `forward_train`: the ABF review path
and the hierarchical context loss), on small float64 features, with its gradients.

    python scripts/record_reviewkd_fixture.py PATH/TO/DIR  [--commit SHA]

PATH/TO/DIR holds a package `md` with mdistiller's `mdistiller/distillers/_base.py` and `ReviewKD.py`
(copied from its checkout, never into this repository). Run once, outside the project's tests. The
student and the teacher are stand-ins that return fixed features in mdistiller's layout (`feats`
with the stem's map first, `preact_feats`, `pooled_feat`); the config is mdistiller's for these
shapes. Stored, as plain data: the features, the ABFs' seeded state dict (training mode), the
distillation loss at two epochs (inside and after the warm-up), and the gradients of the loss at
the later epoch with respect to the student's features and every ABF parameter.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lwsupcrd.files import save_torch  # noqa: E402

B = 4
STUDENT = [(6, 16), (8, 16), (12, 8), (16, 4)]  # (channels, size) of the stem's map and three stages
TEACHER = [(6, 16), (10, 16), (14, 8), (20, 4)]


class Fixed(nn.Module):
    def __init__(self, features):
        super().__init__()
        self.features = features

    def forward(self, image):
        return torch.zeros(image.shape[0], 5, dtype=torch.float64), self.features


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("reference")
    parser.add_argument("--commit", default="a08d46f")
    args = parser.parse_args()
    sys.path.insert(0, args.reference)
    from md.ReviewKD import ReviewKD

    g = torch.Generator().manual_seed(0)

    def maps(spec):
        return [torch.randn(B, c, h, h, generator=g, dtype=torch.float64) for c, h in spec]

    s_feats = [x.requires_grad_() for x in maps(STUDENT)]
    s_pooled = torch.randn(B, STUDENT[-1][0], generator=g, dtype=torch.float64).requires_grad_()
    t_pre, t_pooled = maps(TEACHER), torch.randn(B, TEACHER[-1][0], generator=g, dtype=torch.float64)
    student = Fixed({"feats": s_feats, "preact_feats": s_feats, "pooled_feat": s_pooled})
    teacher = Fixed({"feats": t_pre, "preact_feats": t_pre, "pooled_feat": t_pooled})
    cfg = SimpleNamespace(REVIEWKD=SimpleNamespace(
        SHAPES=[1] + [h for _, h in STUDENT[1:]][::-1], OUT_SHAPES=[1] + [h for _, h in TEACHER[1:]][::-1],
        IN_CHANNELS=[c for c, _ in STUDENT[1:]] + [STUDENT[-1][0]],
        OUT_CHANNELS=[c for c, _ in TEACHER[1:]] + [TEACHER[-1][0]],
        CE_WEIGHT=1.0, REVIEWKD_WEIGHT=5.0, WARMUP_EPOCHS=20, STU_PREACT=False, MAX_MID_CHANNEL=512))
    torch.manual_seed(1)
    distiller = ReviewKD(student, teacher, cfg).double().train()
    image, target = torch.zeros(B, 3, 8, 8), torch.zeros(B, dtype=torch.long)
    early = distiller.forward_train(image, target, epoch=5)[1]["loss_kd"]
    late = distiller.forward_train(image, target, epoch=25)[1]["loss_kd"]
    params = list(distiller.abfs.parameters())
    grads = torch.autograd.grad(late, s_feats[1:] + [s_pooled] + params)
    fixture = {"commit": args.commit, "config": vars(cfg.REVIEWKD), "student": [x.detach() for x in s_feats[1:]],
               "student_pooled": s_pooled.detach(), "teacher": t_pre[1:], "teacher_pooled": t_pooled,
               "state": {k: v.detach().clone() for k, v in distiller.abfs.state_dict().items()},
               "loss_epoch5": early.detach(), "loss_epoch25": late.detach(),
               "grads": [x.detach() for x in grads[:len(s_feats)]],
               "param_grads": {n: gr.detach() for (n, _), gr in zip(distiller.abfs.named_parameters(), grads[len(s_feats):])}}
    save_torch(ROOT / "tests" / "fixtures" / "reviewkd.pt", fixture)
    print(float(early), float(late), fixture["config"])


if __name__ == "__main__":
    main()

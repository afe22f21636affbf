"""Record tests/fixtures/logit_methods.pt: DIST's loss (hunto/image_classification_sota, the code
DIST_KD's README points to) and logit standardization's KD and DKD losses
(sunshangquan/logit-standardization-KD), each its authors' own function, on small float64 logits,
with the gradients with respect to the student's logits.

    python scripts/record_logit_fixture.py --dist PATH/lib/models/losses/dist_kd.py \
        --ls PATH/mdistiller/distillers [--dist-commit SHA] [--ls-commit SHA]

Run once, outside the project's tests: it loads the two references' files from the given paths
(they never enter this repository) and stores plain data only. The settings are those the
references run on CIFAR-100: DIST at tau 4 (beta = gamma = 1); KD with logit standardization at
T 2 (its weight is applied outside the function); DKD with it at alpha 9, beta 72, T 2.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lwsupcrd.files import save_torch  # noqa: E402

BATCH, CLASSES = 6, 5


def load(path: Path, name: str, package: str | None = None):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if package:
        module.__package__ = package
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def record(loss_fn, student: torch.Tensor, teacher: torch.Tensor, **kw) -> dict:
    student = student.clone().requires_grad_()
    loss = loss_fn(student, teacher, **kw)
    (grad,) = torch.autograd.grad(loss, [student])
    return {"student": student.detach(), "teacher": teacher, "loss": loss.detach(), "grad": grad, **kw}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dist", type=Path, required=True, help="image_classification_sota's lib/models/losses/dist_kd.py")
    p.add_argument("--ls", type=Path, required=True, help="logit-standardization-KD's mdistiller/distillers folder")
    p.add_argument("--dist-commit", default="")
    p.add_argument("--ls-commit", default="")
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "logit_methods.pt")
    a = p.parse_args()
    dist = load(a.dist, "dist_reference")
    sys.modules["ls_reference"] = types.ModuleType("ls_reference")
    sys.modules["ls_reference"].__path__ = [str(a.ls)]
    load(a.ls / "_base.py", "ls_reference._base", "ls_reference")
    kd = load(a.ls / "KD.py", "ls_reference.KD", "ls_reference")
    dkd = load(a.ls / "DKD.py", "ls_reference.DKD", "ls_reference")

    g = torch.Generator().manual_seed(0)
    logits = [3 * torch.randn(BATCH, CLASSES, generator=g, dtype=torch.float64) for _ in range(2)]
    labels = torch.randint(0, CLASSES, (BATCH,), generator=g)
    fixture = {"source": {"dist": {"repo": "hunto/image_classification_sota", "commit": a.dist_commit},
                          "ls": {"repo": "sunshangquan/logit-standardization-KD", "commit": a.ls_commit},
                          "torch": str(torch.__version__)}}
    fixture["dist"] = record(dist.DIST(beta=1, gamma=1, tau=4.0), *logits)
    fixture["kd_ls"] = record(lambda s, t: kd.kd_loss(s, t, 2.0, True), *logits)
    fixture["dkd_ls"] = record(lambda s, t: dkd.dkd_loss(s, t, labels, 9.0, 72.0, 2.0, True), *logits)
    fixture["dkd_ls"]["labels"] = labels
    fixture["kd_plain"] = record(lambda s, t: kd.kd_loss(s, t, 4.0, False), *logits)
    for name in ("dist", "kd_ls", "dkd_ls", "kd_plain"):
        print(f"{name}: loss {float(fixture[name]['loss']):.10g}")
    save_torch(a.out, fixture)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

"""Record tests/fixtures/original_lwsupcrd.pt from the original work's own code, once.

    python scripts/record_original_fixture.py NOTEBOOK PORT [--notebook-commit SHA] [--port-commit SHA]

NOTEBOOK is `With Cosine Projection Head/desupcon_modified.ipynb` of reducereX/ATML_Proj (commit
6f2838b, the newest readable notebook); PORT a file holding the memory bank class and the loss
function of reducereX/mdistiller's `mdistiller/distillers/SFWSupCon.py` (the later port, read from
the public code index: `MomentumMemoryBank` and `_sfwsupcon_loss_with_bank`). Neither enters this
repository: the notebook's cells that define the losses and the head's pre-training are executed
from the given file, the port's from its own.

Recorded, in float64 where the original code allows it (plain data only):
- `lw`: the notebook's `LogitWeightedSupCRDLoss` (positives include the anchor's own teacher key)
  on a two-view batch at fixed beta, alpha 1 and 2: loss and gradients with respect to both
  projections (its adaptive beta, beta (1 - q), is not the final beta / (q + 0.5) of the README
  and the port, recorded below);
- `crd`: the notebook's `BaseCRDLoss` on the same batch;
- `port`: the port's loss without a bank (positives without the own key) and with a bank, after
  the port's bank update: the bank before and after the update, the sampled slots, loss, gradients;
- `cosine`: one step of the notebook's `train_projection_head_cosine_probe` (float32, as it runs)
  on given 2048-d features: the seed its head and prototypes were made with, the loss, the
  gradients of the head's weights, and a BatchNorm's running mean before and after (the original
  leaves the teacher in train mode there).
"""
from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lwsupcrd.files import save_torch  # noqa: E402

B, CLASSES, DIM, N_DATA, K = 6, 4, 8, 30, 10  # two views: 2B anchors
HEAD_SEED, COSINE_BATCH, COSINE_CLASSES = 7, 8, 100


def notebook_cell(path: Path, marker: str) -> str:
    cells = json.loads(path.read_text())["cells"]
    found = ["".join(c["source"]) for c in cells if c["cell_type"] == "code" and marker in "".join(c["source"])]
    if len(found) != 1:
        raise SystemExit(f"{path}: expected one code cell defining {marker!r}, found {len(found)}")
    return found[0]


def two_view_batch(g: torch.Generator) -> dict:
    labels = torch.tensor([0, 1, 1, 2, 3, 0])
    return {"labels": torch.cat([labels, labels]),
            "z": torch.randn(2 * B, DIM, generator=g, dtype=torch.float64),
            "t": torch.randn(2 * B, DIM, generator=g, dtype=torch.float64),
            "teacher_logits": 2 * torch.randn(2 * B, CLASSES, generator=g, dtype=torch.float64)}


def loss_and_grads(fn, batch: dict) -> dict:
    z = batch["z"].clone().requires_grad_(True)
    t = batch["t"].clone().requires_grad_(True)
    loss = fn(z, t)
    loss.backward()
    return {"loss": loss.detach(), "grad_z": z.grad.clone(), "grad_t": t.grad.clone()}


def record_notebook(notebook: Path, batch: dict) -> tuple[dict, dict]:
    ns = {"torch": torch, "nn": nn, "F": F, "device": torch.device("cpu"), "print": lambda *a, **k: None}
    exec(notebook_cell(notebook, "class LogitWeightedSupCRDLoss"), ns)
    lw = {}
    for alpha in (1.0, 2.0):  # fixed beta: the notebook's adaptive beta is beta (1 - q), not the final beta / (q + 0.5)
        crit = ns["LogitWeightedSupCRDLoss"](alpha=alpha, beta=10.0, temperature=0.07, adaptive_beta=False)
        lw[f"alpha{alpha:g}"] = dict(
            loss_and_grads(lambda z, t: crit(z, t, batch["teacher_logits"], batch["labels"]), batch),
            alpha=alpha, beta=10.0, temperature=0.07)
    crd = loss_and_grads(lambda z, t: ns["BaseCRDLoss"](temperature=0.07)(z, t, batch["labels"]), batch)
    return lw, dict(crd, temperature=0.07)


def record_port(port: Path, batch: dict, g: torch.Generator) -> dict:
    ns: dict = {"__name__": "sfw_port"}
    exec(compile(port.read_text(), str(port), "exec"), ns)
    loss_fn, Bank = ns["_sfwsupcon_loss_with_bank"], ns["MomentumMemoryBank"]
    out = {"nobank": dict(loss_and_grads(lambda z, t: loss_fn(z, t, batch["teacher_logits"], batch["labels"], None,
                                                              alpha=1.0, beta=10.0, tau=0.07, adaptive_beta=True),
                                         batch), alpha=1.0, beta=10.0, temperature=0.07)}
    torch.manual_seed(3)
    bank = Bank(n_data=N_DATA, dim=DIM, K=K, momentum=0.5, num_classes=CLASSES).double()
    bank.memory_labels.copy_(torch.arange(N_DATA) % CLASSES)
    bank.memory_logits.copy_(torch.randn(N_DATA, CLASSES, generator=g, dtype=torch.float64))
    slots = torch.tensor([4, 9, 13, 18, 23, 28])  # slot % CLASSES is the class, as the labels above
    slots = slots - slots % CLASSES + batch["labels"][:B]
    before = {k: v.clone() for k, v in bank.state_dict().items() if k.startswith("memory")}
    drawn = []
    randperm = torch.randperm

    def recording_randperm(*args, **kwargs):
        drawn.append(randperm(*args, **kwargs))
        return drawn[-1]

    torch.randperm = recording_randperm
    try:
        bank(batch["t"], torch.cat([slots, slots]), batch["labels"], batch["teacher_logits"], update=True)
    finally:
        torch.randperm = randperm
    after = {k: v.clone() for k, v in bank.state_dict().items() if k.startswith("memory")}
    with_bank = loss_and_grads(lambda z, t: loss_fn(z, t, batch["teacher_logits"], batch["labels"], bank,
                                                    alpha=1.0, beta=10.0, tau=0.07, adaptive_beta=True), batch)
    out["bank"] = dict(with_bank, alpha=1.0, beta=10.0, temperature=0.07, momentum=0.5, slots=slots,
                       sampled=drawn[0][:K].clone(), before=before, after=after)
    return out


class FakeTeacher(nn.Module):
    """Stands in for the timm ResNet-50: 2048-d features through a BatchNorm, then `fc`."""

    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.register_buffer("features", features)
        self.bn = nn.BatchNorm1d(features.shape[1])
        self.fc = nn.Linear(features.shape[1], COSINE_CLASSES)

    def forward(self, x):
        return self.fc(self.bn(self.features[x.flatten().long()]))


def record_cosine(notebook: Path, g: torch.Generator) -> dict:
    features = torch.randn(COSINE_BATCH, 2048, generator=g)
    labels = torch.randint(0, COSINE_CLASSES, (COSINE_BATCH,), generator=g)
    teacher = FakeTeacher(features)
    teacher.bn.weight.data.uniform_(0.5, 1.5, generator=g)
    teacher.bn.bias.data.normal_(0, 0.1, generator=g)
    bn_mean_before = teacher.bn.running_mean.clone()
    with torch.no_grad():
        teacher.eval()
        bn_features = teacher.bn(features).clone()  # what the head sees in eval mode
    seen = {}

    class RecordingCE(nn.CrossEntropyLoss):
        def forward(self, logits, target):
            logits.retain_grad()
            seen["logits"], seen["loss"] = logits, super().forward(logits, target)
            return seen["loss"]

    fake_nn = types.SimpleNamespace(**{k: getattr(nn, k) for k in dir(nn) if not k.startswith("_")})
    fake_nn.CrossEntropyLoss = RecordingCE
    ns = {"torch": torch, "nn": fake_nn, "F": F, "print": lambda *a, **k: None,
          "tqdm": _Bar}
    exec(notebook_cell(notebook, "def train_projection_head_cosine_probe"), ns)
    x = torch.arange(COSINE_BATCH, dtype=torch.float32)[:, None]
    loader = [((x, x), labels)]
    torch.manual_seed(HEAD_SEED)
    ns["train_projection_head_cosine_probe"](teacher, loader, torch.device("cpu"), epochs=1, lr=1e-3,
                                             temperature=0.07)
    head = teacher.projection
    return {"seed": HEAD_SEED, "temperature": 0.07, "features": features, "labels": labels,
            "bn": {k: v for k, v in teacher.bn.state_dict().items()}, "bn_running_mean_before": bn_mean_before,
            "bn_weight": teacher.bn.weight.detach().clone(), "bn_bias": teacher.bn.bias.detach().clone(),
            "bn_features_eval": bn_features,
            "loss": seen["loss"].detach(), "grad_logits": seen["logits"].grad.clone(),
            "grad": {name: p.grad.clone() for name, p in head.named_parameters() if not name.startswith("0.")},
            "grad_first_norm": head[0].weight.grad.norm().detach(),
            "grad_first_sample": head[0].weight.grad[::37, ::101].clone()}


class _Bar:
    def __init__(self, it, **kwargs):
        self.it = it

    def __iter__(self):
        return iter(self.it)

    def set_postfix(self, *a, **k):
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("notebook", type=Path)
    p.add_argument("port", type=Path)
    p.add_argument("--notebook-commit", default="6f2838b")
    p.add_argument("--port-commit", default="826e52a50b592d65a0d877592e09bf3209fbf97a")
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "original_lwsupcrd.pt")
    a = p.parse_args()
    g = torch.Generator().manual_seed(0)
    batch = two_view_batch(g)
    lw, crd = record_notebook(a.notebook, batch)
    fixture = {"source": {"notebook": "reducereX/ATML_Proj " + a.notebook_commit
                          + " With Cosine Projection Head/desupcon_modified.ipynb",
                          "port": "reducereX/mdistiller " + a.port_commit + " mdistiller/distillers/SFWSupCon.py",
                          "torch": str(torch.__version__)},
               "batch": batch, "classes": CLASSES, "lw": lw, "crd": crd, "port": record_port(a.port, batch, g),
               "cosine": record_cosine(a.notebook, g)}
    for k, v in lw.items():
        print(f"notebook LW-SupCRD {k}: {float(v['loss']):.6f}")
    print(f"notebook CRD: {float(crd['loss']):.6f}; port: {float(fixture['port']['nobank']['loss']):.6f}, "
          f"with bank {float(fixture['port']['bank']['loss']):.6f}; cosine step {float(fixture['cosine']['loss']):.6f}")
    save_torch(a.out, fixture)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

"""One rank of the 2-process test (launched by torchrun from test_distributed.py): one
LW-SupCRD + bank step (or, with `standard`, the standard protocol's CE + KD + LW-SupCRD + bank
step) on a fixed global batch; writes what the test compares."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lwsupcrd.distributed import init_from_env  # noqa: E402
from lwsupcrd.memory_bank import MomentumMemoryBank  # noqa: E402
from lwsupcrd.train import fit  # noqa: E402

from ddp_setup import CFG, STANDARD_CFG, make_models, make_split  # noqa: E402


def main(out: Path, cfg: dict):
    ddp = init_from_env("cpu")
    torch.set_num_threads(1)
    train, info = make_split()
    student, teacher = make_models()
    bank = MomentumMemoryBank(len(train), 64, train.labels, momentum=cfg["bank_momentum"], seed=cfg["seed"])
    history = fit("ddp", cfg, student, train, info, torch.device("cpu"), teacher=teacher, progress=False, bank=bank,
                  resume_path=out / "ddp.resume.pth")
    torch.save({"loss": history[0]["loss"], "bank": bank.keys.clone(), "student": student.state_dict(),
                "world": ddp.world_size}, out / f"rank{ddp.rank}.pth")


if __name__ == "__main__":
    main(Path(sys.argv[1]), STANDARD_CFG if sys.argv[2:] == ["standard"] else CFG)

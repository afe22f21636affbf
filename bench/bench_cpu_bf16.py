"""Does bf16 autocast on the CPU keep accuracy? (not a test)

Trains the same student twice from the same teacher, once in float32 and once under bf16
autocast, and prints each one's time and linear-probe accuracy:

    python desupcon.py --preset quick --dataset fashion-mnist --data-dir D --out-dir OUT   # once
    python bench/bench_cpu_bf16.py --out-dir OUT --data-dir D [--run student_lwsupcrd_bank4096_resnet8_fashion-mnist]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lwsupcrd.checkpoint import load_checkpoint  # noqa: E402
from lwsupcrd.models import ModelWrapper  # noqa: E402
from lwsupcrd.options import StudyConfig  # noqa: E402
from lwsupcrd.study import Study  # noqa: E402
from lwsupcrd.train import fit  # noqa: E402
from lwsupcrd.probe import embed, linear_probe  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out-dir", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--run", default="student_lwsupcrd_bank4096_resnet8_fashion-mnist")
    a = p.parse_args()
    study = Study(StudyConfig(preset="quick", dataset="fashion-mnist", data_dir=a.data_dir, out_dir=a.out_dir,
                              device="cpu"))
    study.load_data()
    run = study.runs[a.run]
    cfg = load_checkpoint(study.files.checkpoint(a.run))["config"]
    proj = load_checkpoint(study.files.checkpoint(run.requires[0]))
    for amp in (False, True):
        teacher = ModelWrapper(proj["config"]["arch"], cfg["num_classes"], in_channels=cfg["in_channels"])
        teacher.load_state_dict(proj["state_dict"])
        teacher.requires_grad_(False)
        teacher.projection.requires_grad_(True)
        torch.manual_seed(cfg["seed"])
        student = ModelWrapper(cfg["arch"], cfg["num_classes"], in_channels=cfg["in_channels"])
        start = time.perf_counter()
        fit(a.run, dict(cfg, amp=amp), student, study.train, study.info, torch.device("cpu"), teacher=teacher,
            progress=False)
        seconds = time.perf_counter() - start
        tr, _, _ = embed(student, study.train.images, study.info)
        te, _, _ = embed(student, study.test.images, study.info)
        probe = linear_probe(tr, study.train.labels, te, study.test.labels, study.info.num_classes,
                             epochs=cfg["probe_epochs"], seed=cfg["seed"])
        print(json.dumps({"run": a.run, "bf16_autocast": amp, "train_seconds": round(seconds, 1),
                          **{k: round(v, 2) for k, v in probe.items()}, "threads": torch.get_num_threads(),
                          "torch": str(torch.__version__)}), flush=True)


if __name__ == "__main__":
    main()

"""The CUDA branch of the training loop, run on the CPU with every one of its settings forced on
(bf16 autocast, channels_last, fused optimizer, no per-step host checks, CUDA-graph step marks),
so that the device is the only difference left for the first GPU run."""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT
from lwsupcrd.checkpoint import weights_sha256
from lwsupcrd.data import DATASETS, Split
from lwsupcrd.models import ModelWrapper
from lwsupcrd.train import Execution, NonFiniteError, TrainingInterrupted, check_frozen, fit, frozen_snapshot

CUDA_ON_CPU = Execution(fused_optimizer=True, step_checks=False, mark_cudagraph_steps=True)
CPU = torch.device("cpu")


def cifar_shaped(n=96):
    info = DATASETS["cifar100"]
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return Split(images, torch.arange(n) % 8, torch.arange(n), [str(i) for i in range(100)]), info


def networks(method):
    """(cfg, student, teacher) as the study builds them on a GPU: channels_last, bf16 autocast."""
    cfg = dict(arch="resnet8", num_classes=100, epochs=2, batch_size=32, seed=0, amp=True, channels_last=True,
               temperature=0.07)
    if method == "ce":
        cfg.update(method="ce", optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine")
    else:
        cfg.update(method="lwsupcrd", optimizer="adam", lr=1e-3, weight_decay=1e-4, schedule="cosine", alpha=1.0,
                   beta=10.0, adaptive_beta=True, bank_negatives=48, bank_momentum=0.5)
    torch.manual_seed(0)
    student = ModelWrapper.from_config(cfg).to(memory_format=torch.channels_last)
    teacher = None
    if method != "ce":
        teacher = ModelWrapper.from_config(cfg).to(memory_format=torch.channels_last)
        teacher.requires_grad_(False)
        teacher.projection.requires_grad_(True)
    return cfg, student, teacher


def stop_after_first_epoch(row):
    raise KeyboardInterrupt


@pytest.mark.slow  # bf16 autocast on a CPU without bf16 units: a minute
@pytest.mark.parametrize("method", ["ce", "lwsupcrd_bank"])
def test_cuda_settings_on_cpu_train_finite_keep_teacher_frozen_and_resume_exactly(method, tmp_path):
    train, info = cifar_shaped()
    cfg, student, teacher = networks(method)
    s, t = copy.deepcopy(student), copy.deepcopy(teacher)
    frozen = frozen_snapshot(t.backbone) if t is not None else None
    history = fit("gpu-path", cfg, s, train, info, CPU, teacher=t, progress=False, execution=CUDA_ON_CPU)
    assert len(history) == 2
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in history)
    if t is not None:
        check_frozen("gpu-path", frozen, t.backbone)

    resume = tmp_path / "run.resume.pth"
    s1, t1 = copy.deepcopy(student), copy.deepcopy(teacher)
    with pytest.raises(TrainingInterrupted, match="epoch 1 is saved"):
        fit("gpu-path", cfg, s1, train, info, CPU, teacher=t1, progress=False, execution=CUDA_ON_CPU,
            resume_path=resume, on_epoch=stop_after_first_epoch)
    s2, t2 = copy.deepcopy(student), copy.deepcopy(teacher)  # what a new process would build
    resumed = fit("gpu-path", cfg, s2, train, info, CPU, teacher=t2, progress=False, execution=CUDA_ON_CPU,
                  resume_path=resume)
    assert weights_sha256(s2.state_dict()) == weights_sha256(s.state_dict())
    if t is not None:
        assert weights_sha256(t2.state_dict()) == weights_sha256(t.state_dict())
    assert [r["loss"] for r in resumed] == [r["loss"] for r in history]


def test_without_step_checks_a_nan_is_caught_at_the_epoch_end():
    train, info = cifar_shaped()
    cfg, student, teacher = networks("lwsupcrd_bank")
    with torch.no_grad():
        student.backbone.conv1.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match=r"\[gpu-path\] non-finite loss or gradient at epoch 1, step 1"):
        fit("gpu-path", dict(cfg, epochs=1), student, train, info, CPU, teacher=teacher, progress=False,
            execution=CUDA_ON_CPU)


def test_execution_for_each_device():
    assert Execution.for_device(CPU) == Execution(False, True, False)
    assert Execution.for_device(torch.device("cuda"), "reduce-overhead") == Execution(True, False, True)
    assert Execution.for_device(torch.device("cuda"), "default") == Execution(True, False, False)


@pytest.mark.slow
def test_gpu_check_script_dry_mode(tmp_path):
    """`bash bench/gpu.sh --dry`: the GPU check on the CPU, every method, then the benchmark path."""
    sys.path.insert(0, str(ROOT / "bench"))
    from gpu_check import METHODS

    res = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--dry"], capture_output=True, text=True,
                         timeout=900, cwd=tmp_path, env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable})
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    checks = [x for x in lines if x["kind"] == "check"]
    assert {x["method"] for x in checks} == set(METHODS)
    assert all(x["ok"] and x["finite"] and x["resume_bit_exact"] for x in checks), checks
    assert [x["failed"] for x in lines if x["kind"] == "summary"] == [[]]
    assert [x["method"] for x in lines if x["kind"] == "throughput"] == ["lwsupcrd_bank"]

"""The speed options change how a run executes, never what it computes."""
import copy
import os

import pytest
import torch

from lwsupcrd.data import DATASETS, Split
from lwsupcrd.models import ModelWrapper
from lwsupcrd.machine import set_cpu_threads
from lwsupcrd.options import StudyConfig, parse_args
from lwsupcrd.steps import COMPILE_MODES, Networks
from lwsupcrd.train import check_frozen, fit, frozen_snapshot


def tiny_distillation():
    info = DATASETS["fashion-mnist"]
    gen = torch.Generator().manual_seed(0)
    n = 64
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8)
    train = Split(images, torch.arange(n) % 10, torch.arange(n), [str(i) for i in range(10)])
    torch.manual_seed(0)
    teacher = ModelWrapper("resnet8", 10, in_channels=1)
    student = ModelWrapper("resnet8", 10, in_channels=1)
    teacher.requires_grad_(False)
    teacher.projection.requires_grad_(True)
    cfg = dict(method="lwsupcrd", arch="resnet8", epochs=1, batch_size=32, optimizer="adam", lr=1e-3,
               weight_decay=0.0, schedule="constant", temperature=0.07, seed=0, alpha=1.0, beta=10.0,
               adaptive_beta=True, bank_negatives=16, bank_momentum=0.5)
    return cfg, student, teacher, train, info


@pytest.mark.slow
def test_compiled_distillation_matches_eager():
    cfg, student, teacher, train, info = tiny_distillation()
    runs = {}
    from torch._dynamo.utils import counters

    counters.clear()
    for mode in (None, "default"):
        s, t = copy.deepcopy(student), copy.deepcopy(teacher)
        frozen = frozen_snapshot(t.backbone)
        history = fit("compile", cfg, s, train, info, torch.device("cpu"), teacher=t, progress=False,
                      compile_mode=mode)
        check_frozen("compile", frozen, t.backbone)  # inference_mode and eval hold under compile too
        runs[mode] = history[0]["loss"], s.state_dict()
    assert counters["stats"]["unique_graphs"] >= 2  # the student's forward and the teacher's were compiled
    (eager_loss, eager), (compiled_loss, compiled) = runs[None], runs["default"]
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-4)
    for name in ("backbone.bn1.running_mean", "backbone.bn1.running_var", "backbone.bn1.num_batches_tracked"):
        torch.testing.assert_close(compiled[name], eager[name], atol=1e-5, rtol=1e-4)  # BatchNorm updated alike
    assert not torch.equal(compiled["backbone.bn1.running_mean"], student.state_dict()["backbone.bn1.running_mean"])


def test_unknown_compile_mode_is_named():
    model = ModelWrapper("resnet8", 10)
    with pytest.raises(ValueError, match="unknown compile mode 'fast'; choose from default, reduce-overhead"):
        Networks.of(model, None, "fast")
    assert Networks.of(model, None, None).forward is model  # eager: the modules themselves


def test_compile_flag():
    assert parse_args([], StudyConfig()).compile is None
    assert parse_args(["--compile"], StudyConfig()).compile == "default"
    assert parse_args(["--compile", "reduce-overhead"], StudyConfig()).compile == "reduce-overhead"
    with pytest.raises(SystemExit):
        parse_args(["--compile", "fast"], StudyConfig())
    assert set(COMPILE_MODES) >= {"default", "reduce-overhead"}


def test_cpu_threads_split_usable_cores_between_local_processes(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
        alone = set_cpu_threads()
        assert 1 <= alone <= len(os.sched_getaffinity(0))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(alone + 1))
        assert set_cpu_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(alone)
        assert set_cpu_threads() == alone  # an explicit OMP_NUM_THREADS is the user's choice
    finally:
        torch.set_num_threads(before)


def test_batched_augmentation_equals_torchvision_per_image():
    """The device-side crop and flip give exactly what RandomCrop(padding=4) + RandomHorizontalFlip
    + ToTensor + Normalize give for the same offsets and flips, image by image."""
    import torchvision.transforms.functional as TF

    from lwsupcrd.data import crop_flip, crop_flip_params

    for name in ("cifar100", "fashion-mnist"):
        info = DATASETS[name]
        images = torch.randint(0, 256, (16, info.channels, info.size, info.size), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(1))
        params = crop_flip_params(16, torch.Generator().manual_seed(2), "cpu")
        ours = crop_flip(images, params, info)
        for i in range(16):
            top, left, flip = int(params[0][i]), int(params[1][i]), bool(params[2][i])
            img = TF.crop(TF.pad(images[i], [4]), top, left, info.size, info.size)
            if flip:
                img = TF.hflip(img)
            expected = TF.normalize(img.float() / 255, info.mean, info.std)
            torch.testing.assert_close(ours[i], expected, rtol=1e-6, atol=1e-6)
        assert params[0].min() >= 0 and params[0].max() <= 8  # RandomCrop's offsets: 0 .. 2 * padding


def test_reference_loop_trains_every_method():
    """The benchmarks' plain loop (bench/reference_loop.py) still runs the study's methods."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from reference_loop import reference_fit

    cfg, student, teacher, train, info = tiny_distillation()
    for method in ("ce", "undistilled", "supcon", "projection", "crd", "lwsupcrd"):
        rows = reference_fit("ref", dict(cfg, method=method), copy.deepcopy(student), train, info,
                             torch.device("cpu"), teacher=copy.deepcopy(teacher), workers=0)
        assert len(rows) == 1 and torch.isfinite(torch.tensor(rows[0]["loss"])), method


def test_compile_on_a_cpu_without_compiler_stops_before_work(tmp_path):
    from helpers import run_script

    res = run_script("--preset", "smoke", "--device", "cpu", "--compile", "--data-dir", tmp_path / "nodata",
                     "--out-dir", tmp_path / "out", env={"PATH": str(tmp_path)})
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: --compile on the CPU needs a C++ compiler (g++) on PATH; install one or drop --compile"]
    assert not (tmp_path / "out" / "pth_models").exists()

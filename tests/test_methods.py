"""Every method of the registry trains, and resumes bit-exactly after an interruption with its
extra modules and state (FitNet's regressor, CRD's memories and Z, the banks) restored."""
import pytest
import torch

from lwsupcrd.checkpoint import safe_load
from lwsupcrd.data import DATASETS, Split
from lwsupcrd.methods import STANDARD, TERMS, build_extras, method_of
from lwsupcrd.models import ModelWrapper
from lwsupcrd.options import StudyConfig
from lwsupcrd.protocol import build_standard_runs
from lwsupcrd.train import TrainingInterrupted, fit

INFO = DATASETS["cifar10"]


def tiny_split(n=64):
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8), torch.arange(n) % 10,
                 torch.arange(n), [str(i) for i in range(10)])


def config_of(name):
    settings = StudyConfig(protocol="standard", preset="smoke", pair="resnet8-resnet8").settings()
    settings.update(dataset="cifar10", bank_negatives=16)
    run = next(r for r in build_standard_runs(settings) if r.cfg["method"] == "standard" and r.cfg["recipe"] == name)
    return dict(run.cfg, epochs=2, batch_size=16, lr_milestones=[1], num_classes=10)


def networks(cfg, train):
    torch.manual_seed(0)
    student = ModelWrapper.from_config(cfg)
    teacher = ModelWrapper.from_config(dict(cfg, arch="resnet8")) if method_of(cfg).needs_teacher else None
    if teacher is not None:
        teacher.requires_grad_(False)
        teacher.projection.requires_grad_(True)
    return student, teacher, build_extras(cfg, student, teacher, train)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STANDARD))
def test_every_method_resumes_bit_exactly_with_its_extras(tmp_path, name):
    cfg, train = config_of(name), tiny_split()
    cpu = torch.device("cpu")
    student, teacher, extras = networks(cfg, train)
    straight = fit("run", cfg, student, train, INFO, cpu, teacher=teacher, progress=False, extras=extras)
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in straight)
    term = TERMS[method_of(cfg).term] if method_of(cfg).term else None
    assert (extras is not None) == (term is not None and term.build is not None)

    def stop_after_first(row):
        raise KeyboardInterrupt

    resume = tmp_path / "run.resume.pth"
    s2, t2, e2 = networks(cfg, train)
    with pytest.raises(TrainingInterrupted, match="epoch 1 is saved"):
        fit("run", cfg, s2, train, INFO, cpu, teacher=t2, resume_path=resume, on_epoch=stop_after_first,
            progress=False, extras=e2)
    state = safe_load(resume)
    assert ("extras" in state) == (extras is not None)
    s3, t3, e3 = networks(cfg, train)
    fit("run", cfg, s3, train, INFO, cpu, teacher=t3, resume_path=resume, progress=False, extras=e3)
    for k, v in student.state_dict().items():
        assert torch.equal(v, s3.state_dict()[k]), k
    if extras is not None:
        for k, v in extras.state_dict().items():
            assert torch.equal(v, e3.state_dict()[k]), k
    if teacher is not None:
        for k, v in teacher.projection.state_dict().items():
            assert torch.equal(v, t3.projection.state_dict()[k]), k


def test_crd_fixes_z_on_the_first_batch_and_keeps_it():
    cfg, train = config_of("crd"), tiny_split()
    student, teacher, extras = networks(cfg, train)
    assert (extras.z < 0).all()
    fit("run", dict(cfg, epochs=1), student, train, INFO, torch.device("cpu"), teacher=teacher, progress=False,
        extras=extras)
    z = extras.z.clone()
    assert (z > 0).all()
    fit("run", dict(cfg, epochs=1), student, train, INFO, torch.device("cpu"), teacher=teacher, progress=False,
        extras=extras)
    assert torch.equal(extras.z, z)


def test_both_protocols_runs_are_rows_of_the_one_registry():
    """Every run of every preset of either protocol names a row of `METHODS`, which gives its step,
    views and teacher; the original protocol's rows are its own, not the benchmark's."""
    from lwsupcrd.methods import METHODS, method_of, step_of
    from lwsupcrd.protocol import PRESETS, STANDARD_PRESETS, build_study_runs
    from lwsupcrd.steps import step_lwsupcrd, step_supcon

    for protocol, presets in (("lwsupcrd", PRESETS), ("standard", STANDARD_PRESETS)):
        for preset in presets:
            settings = StudyConfig(protocol=protocol, preset=preset).settings()
            for run in build_study_runs(settings, settings.get("seeds")):
                method = method_of(run.cfg)
                assert method is METHODS[method.key]
                assert method.protocol in (protocol, "both"), (run.name, method.key)
                if protocol == "lwsupcrd":
                    assert (run.teacher is not None) == method.needs_teacher, run.name
                if method.name != "published":
                    assert callable(step_of(run.cfg))
    original = method_of({"method": "lwsupcrd"})
    assert original.key == "lwsupcrd/lwsupcrd" and original is not STANDARD["lwsupcrd"] and original.views == 2
    assert original.trains_teacher_head and not method_of({"method": "supcon"}).needs_teacher
    assert step_of({"method": "standard", "recipe": "lwsupcrd"}).__name__ == "standard_step"
    assert original.step.__wrapped__ is step_lwsupcrd
    assert method_of({"method": "supcon"}).step.__wrapped__ is step_supcon
    with pytest.raises(ValueError, match="unknown method 'lwsupcrd/nope'"):
        method_of({"method": "nope"})

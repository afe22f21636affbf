"""Published teachers: our networks are RepDistiller's (keys, shapes, outputs), checked against a
fixture recorded once from the reference code (scripts/record_reference_fixture.py)."""
import pytest
import torch

from helpers import ROOT
from lwsupcrd.checkpoint import CheckpointError
from lwsupcrd.models import create_model
from lwsupcrd.published import PUBLISHED_ARCHS, load_published, reference_state, synthetic_state

FIXTURE = torch.load(ROOT / "tests" / "fixtures" / "repdistiller_reference.pt", weights_only=True)


def published_file(tmp_path, arch, state):
    """A checkpoint laid out as RepDistiller's train_teacher.py saves it."""
    path = tmp_path / f"{arch}_ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": state, "accuracy": torch.tensor(75.0),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.0005, "momentum": 0.9}]}}, path)
    return path


@pytest.mark.parametrize("arch", PUBLISHED_ARCHS)
def test_our_network_has_the_reference_keys_and_shapes(arch):
    ours = reference_state(arch, create_model(arch, FIXTURE["num_classes"]))
    assert [[k, list(v.shape)] for k, v in ours.items()] == FIXTURE["archs"][arch]


@pytest.mark.parametrize("arch", sorted(FIXTURE["logits"]))
def test_a_published_file_gives_the_reference_output(tmp_path, arch):
    keys = [(k, tuple(s)) for k, s in FIXTURE["archs"][arch]]
    model = load_published(published_file(tmp_path, arch, synthetic_state(keys)), arch).eval()
    with torch.no_grad():
        out = model(FIXTURE["input"])
    expected = FIXTURE["logits"][arch]
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert float(expected.std()) > 0.1  # the recorded outputs are not degenerate


def test_data_parallel_prefix_and_bare_state_dicts_load(tmp_path):
    state = reference_state("wrn_16_1", create_model("wrn_16_1", 100))
    path = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    model = load_published(path, "wrn_16_1")
    assert torch.equal(model.bn.weight, state["bn1.weight"])


def test_an_incompatible_file_is_refused_with_the_mismatching_keys(tmp_path):
    state = reference_state("resnet8x4", create_model("resnet8x4", 100))
    with pytest.raises(CheckpointError, match=r"does not fit resnet32x4 .*missing layer1\.1\.conv1\.weight"):
        load_published(published_file(tmp_path, "a", state), "resnet32x4")
    with pytest.raises(CheckpointError, match=r"shape fc\.weight \(100, 256\) \(expected \(10, 256\)\)"):
        load_published(published_file(tmp_path, "b", state), "resnet8x4", num_classes=10)
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"unexpected extra\.weight") as err:
        load_published(published_file(tmp_path, "c", state), "resnet8x4")
    assert "\n" not in str(err.value)


def test_a_file_with_pickled_objects_is_refused_without_running_it(tmp_path):
    import argparse

    path = tmp_path / "last.pth"  # RepDistiller's *_last.pth stores its argparse options
    torch.save({"opt": argparse.Namespace(model="resnet8"), "model": {}}, path)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_published(path, "resnet8")
    with pytest.raises(ValueError, match="no published checkpoints for 'resnet18'"):
        load_published(path, "resnet18")


def test_one_of_our_checkpoints_is_a_teacher_file_too(tmp_path):
    from lwsupcrd.checkpoint import save_checkpoint
    from lwsupcrd.models import ModelWrapper
    from lwsupcrd.published import load_teacher_file

    cfg = dict(arch="resnet8x4", num_classes=100, proj_head="linear", proj_dim=128)
    torch.manual_seed(1)
    ours = ModelWrapper.from_config(cfg)
    path = tmp_path / "teacher.pth"
    save_checkpoint(path, ours.state_dict(), cfg, {}, env={})
    loaded = load_teacher_file(path, "resnet8x4", 100)
    assert all(torch.equal(v, ours.backbone.state_dict()[k]) for k, v in loaded.state_dict().items())
    with pytest.raises(CheckpointError, match="holds a resnet8x4, not a resnet32x4"):
        load_teacher_file(path, "resnet32x4", 100)

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
    tolerance = 1e-4 * float(expected.abs().max())
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=tolerance)
    assert float(expected.std()) > 100 * tolerance  # the outputs spread far beyond the tolerance: a match means something


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


def legacy_file(tmp_path, name, state):
    """A teacher file as PyTorch 0.4.0 wrote RepDistiller's: the legacy (non-zip) serialisation, the
    weights under "model" beside the epoch, accuracy and optimizer state."""
    path = tmp_path / f"{name}.pth"
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.05, momentum=0.9)
    torch.save({"epoch": 240, "model": state, "accuracy": 79.42, "optimizer": optimizer.state_dict()}, path,
               _use_new_zipfile_serialization=False)
    assert not __import__("zipfile").is_zipfile(path)
    return path


@pytest.mark.parametrize("arch", ["resnet8", "wrn_16_1"])
def test_a_pytorch_040_file_without_num_batches_tracked_loads_as_with_them(tmp_path, arch):
    keys = [(k, tuple(s)) for k, s in FIXTURE["archs"][arch]]
    state = synthetic_state(keys)
    untracked = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert len(untracked) < len(state)
    with_keys = load_published(legacy_file(tmp_path, "with", state), arch).eval()
    without = load_published(legacy_file(tmp_path, "without", untracked), arch).eval()
    with torch.no_grad():
        torch.testing.assert_close(without(FIXTURE["input"]), with_keys(FIXTURE["input"]), rtol=0, atol=0)
        if arch in FIXTURE["logits"]:
            torch.testing.assert_close(without(FIXTURE["input"]), FIXTURE["logits"][arch], rtol=1e-4,
                                       atol=1e-4 * float(FIXTURE["logits"][arch].abs().max()))


def test_only_the_absence_of_every_num_batches_tracked_is_accepted(tmp_path):
    keys = [(k, tuple(s)) for k, s in FIXTURE["archs"]["resnet8"]]
    state = synthetic_state(keys)
    tracked = [k for k in state if k.endswith("num_batches_tracked")]
    some_missing = {k: v for k, v in state.items() if k != tracked[0]}
    with pytest.raises(CheckpointError, match=f"missing {tracked[0]}"):
        load_published(legacy_file(tmp_path, "some", some_missing), "resnet8")
    weight_missing = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked") and k != "fc.bias"}
    with pytest.raises(CheckpointError, match=r"missing fc\.bias"):
        load_published(legacy_file(tmp_path, "weight", weight_missing), "resnet8")


@pytest.mark.parametrize("arch", sorted(FIXTURE["stages"]))
@pytest.mark.parametrize("kind", ["post", "pre"])
def test_intermediate_features_are_the_references(tmp_path, arch, kind):
    """forward_stages gives what RepDistiller's is_feat=True gives (post- and pre-activation), and
    its logits are forward's, bit for bit."""
    keys = [(k, tuple(s)) for k, s in FIXTURE["archs"][arch]]
    model = load_published(published_file(tmp_path, arch, synthetic_state(keys)),
                           arch).eval()
    with torch.no_grad():
        feats, logits = model.forward_stages(FIXTURE["input"], preact=kind == "pre")
        assert torch.equal(logits, model(FIXTURE["input"]))
    expected = FIXTURE["stages"][arch][kind]
    assert len(feats) == len(expected)
    for ours, ref in zip(feats, expected):
        assert list(ours.shape) == ref["shape"]
        scale = 1e-4 * max(1.0, float(ref["values"].abs().max()))
        torch.testing.assert_close(ours.flatten()[::97], ref["values"], rtol=1e-4, atol=scale)
        torch.testing.assert_close(ours.mean(), ref["mean"], rtol=1e-4, atol=scale)

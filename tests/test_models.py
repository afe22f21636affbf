import pytest
import torch

from lwsupcrd.models import MODEL_REGISTRY, ModelWrapper, create_model

PARAMS_100 = {"resnet18": 11_220_132, "resnet50": 23_705_252, "resnet8": 83_892, "resnet20": 278_324,
              "resnet32x4": 7_433_860, "resnet8x4": 1_233_540, "wrn_40_2": 2_255_156, "wrn_16_2": 703_284}


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_every_model_shapes_and_gradients(name):
    torch.manual_seed(0)
    model = ModelWrapper(name, num_classes=10, proj_dim=16)
    x = torch.randn(2, 3, 32, 32)
    features, projections, logits = model(x)
    assert features.shape == (2, model.feature_dim)
    assert projections.shape == (2, 16) and torch.allclose(projections.norm(dim=1), torch.ones(2), atol=1e-5)
    assert logits.shape == (2, 10)
    (features.sum() + projections.sum() + logits.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name,count", sorted(PARAMS_100.items()))
def test_parameter_counts(name, count):
    assert sum(p.numel() for p in create_model(name, 100).parameters()) == count


def test_grayscale_input():
    model = ModelWrapper("resnet8", num_classes=10, in_channels=1)
    assert model(torch.randn(3, 1, 28, 28))[2].shape == (3, 10)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="resnet18.*") as err:
        create_model("resnet19", 10)
    assert "wrn_40_2" in str(err.value)


def test_wrapper_save_load_round_trip(tmp_path):
    a = ModelWrapper(num_classes=100, arch="resnet8").eval()
    torch.save(a.state_dict(), tmp_path / "m.pth")
    b = ModelWrapper(num_classes=100, arch="resnet8").eval()
    b.load_state_dict(torch.load(tmp_path / "m.pth", weights_only=True))
    x = torch.randn(4, 3, 32, 32)
    for u, v in zip(a(x), b(x)):
        assert torch.equal(u, v)


def test_load_model_rebuilds_the_network_its_config_describes(tmp_path):
    from lwsupcrd.checkpoint import load_model, save_checkpoint

    cfg = {"arch": "resnet8", "num_classes": 10, "proj_dim": 32, "in_channels": 1}
    model = ModelWrapper.from_config(cfg)
    save_checkpoint(tmp_path / "m.pth", model.state_dict(), cfg)
    loaded, ckpt = load_model(tmp_path / "m.pth")
    assert ckpt["config"] == cfg and loaded.projection[-1].out_features == 32
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("head,layers", [("linear", 1), ("mlp", 3)])
def test_projection_head_forms(head, layers):
    model = ModelWrapper.from_config({"arch": "resnet8", "num_classes": 10, "proj_head": head})
    assert len(model.projection) == layers and model.projection[-1].out_features == 64
    assert torch.allclose(model(torch.randn(2, 3, 32, 32))[1].norm(dim=1), torch.ones(2), atol=1e-5)
    with pytest.raises(ValueError, match="unknown projection head 'cosine'; choose from linear, mlp"):
        ModelWrapper("resnet8", 10, proj_head="cosine")

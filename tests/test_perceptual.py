"""Weights resolution for VGG19 (perceptual loss) and AlexNet (LPIPS): never downloads.

Real pretrained files cannot be fetched here, so randomly initialised torchvision state dicts
stand in for them: what is tested is that the file is found where torchvision keeps it,
loaded weight for weight, and reported.
"""

import pytest
import torch
from torchvision.models import alexnet

from raygan.platform.core import perceptual
from raygan.platform.core.losses import PerceptualLoss
from raygan.platform.core.metrics import LPIPSMetric, lpips_distance
from raygan.platform.core.perceptual import (
    ALEXNET_FILE, VGG19_FILE, WeightsNotFoundError, build_lpips, resolve_weights,
)


def _checkpoints(home):
    d = home / "hub" / "checkpoints"
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_random_spec_is_none():
    assert resolve_weights("random", VGG19_FILE, "VGG19") is None


def test_missing_explicit_path_names_it(tmp_path):
    missing = tmp_path / "nope" / "vgg.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        resolve_weights(str(missing), VGG19_FILE, "VGG19")
    with pytest.raises(FileNotFoundError, match=str(missing)):
        resolve_weights(f"file://{missing}", VGG19_FILE, "VGG19")


def test_remote_uri_is_refused():
    with pytest.raises(ValueError, match="never downloaded"):
        resolve_weights("https://download.pytorch.org/models/" + VGG19_FILE, VGG19_FILE, "VGG19")


def test_auto_without_cache_says_where_to_put_the_file(torch_home):
    expected = torch_home / "hub" / "checkpoints" / VGG19_FILE
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights("auto", VGG19_FILE, "VGG19 perceptual loss")
    msg = str(info.value)
    assert str(expected) in msg
    assert "train.perceptual_weights=<path" in msg and "train.perceptual_weights=random" in msg
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(WeightsNotFoundError):
        PerceptualLoss(layer=34, weights="auto")


def test_vgg19_from_hub_cache_is_loaded(torch_home):
    torch.manual_seed(1)
    reference = perceptual._vgg19_feature_stack()
    # torchvision's layout: "features.<index>.weight"
    state = {f"features.{k}": v for k, v in reference.state_dict().items()}
    path = _checkpoints(torch_home) / VGG19_FILE
    torch.save(state, path)
    assert resolve_weights("auto", VGG19_FILE, "VGG19") == str(path)

    loss = PerceptualLoss(layer=34, weights="auto")
    assert loss.init == f"pretrained:{path}"
    for k, v in loss.features.state_dict().items():
        assert torch.equal(v, reference.state_dict()[k]), k
    # an explicit path and a file:// URI give the same network
    assert PerceptualLoss(layer=35, weights=f"file://{path}").init == f"pretrained:{path}"


def test_vgg19_safetensors_and_mismatched_keys(tmp_path):
    from safetensors.torch import save_file

    reference = perceptual._vgg19_feature_stack()
    st = tmp_path / "vgg.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in reference.state_dict().items()}, str(st))
    assert PerceptualLoss(layer=3, weights=str(st)).init == f"pretrained:{st}"

    bad = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, bad)
    with pytest.raises(ValueError, match="features.0.weight"):
        PerceptualLoss(layer=3, weights=str(bad))

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        PerceptualLoss(layer=3, weights=str(garbage))


def test_lpips_absent_is_none(torch_home):
    assert build_lpips("off") is None
    assert build_lpips("auto") is None  # optional: skipped when its weights are absent
    assert not LPIPSMetric("auto").available
    # without weights the metric is a NaN per image (float64, the batch's length), on any device
    off = LPIPSMetric("off", device=torch.device("cpu"))
    nan = off(torch.rand(3, 3, 16, 16), torch.rand(3, 3, 16, 16))
    assert not off.available and nan.shape == (3,) and nan.dtype == torch.float64 and nan.isnan().all()
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_lpips(str(torch_home / "missing.pth"))


def test_lpips_from_hub_cache(torch_home):
    torch.manual_seed(2)
    net = alexnet(weights=None)
    state = {k: v for k, v in net.state_dict().items() if k.startswith("features.")}
    path = _checkpoints(torch_home) / ALEXNET_FILE
    torch.save(state, path)

    model = build_lpips("auto")
    assert model is not None and model.init == f"pretrained:{path}"
    # lpips' slices keep torchvision's indices: features.3 lives in slice2
    assert torch.equal(getattr(model.net.slice2, "3").weight, net.features[3].weight)
    assert torch.equal(getattr(model.net.slice5, "10").bias, net.features[10].bias)

    torch.manual_seed(0)
    a = torch.rand(2, 3, 64, 64)
    b = (a + 0.3 * torch.randn_like(a)).clamp(0, 1)
    diff = lpips_distance(model, a, b)
    # LPIPS v0.1 by hand on the torchvision AlexNet that was saved: [0, 1] -> [-1, 1], lpips'
    # scaling layer, the 5 ReLU outputs (features 1, 4, 7, 9, 11) unit-normalised over
    # channels, squared differences weighted by the shipped linear heads, spatial mean, sum
    shift = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)
    scale = torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)

    def taps(x):
        h, out = (x * 2 - 1 - shift) / scale, []
        for i, layer in enumerate(net.features[:12]):
            h = layer(h)
            if i in (1, 4, 7, 9, 11):
                out.append(h / (h.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def reference(x, y):
        with torch.no_grad():
            return sum(((fx - fy) ** 2 * lin.model[-1].weight).sum(1).mean((1, 2))
                       for fx, fy, lin in zip(taps(x), taps(y), model.lins)).double()

    assert diff.shape == (2,) and diff.dtype == torch.float64
    torch.testing.assert_close(diff, reference(a, b), rtol=1e-4, atol=1e-7)
    # one channel is replicated to three
    gray = lpips_distance(model, a[:, :1], b[:, :1])
    torch.testing.assert_close(gray, reference(a[:, :1].expand(-1, 3, -1, -1), b[:, :1].expand(-1, 3, -1, -1)),
                               rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(LPIPSMetric(str(path))(a, b), diff)
    # the default spec ("auto") finds the hub cache, and a device moves the model, not drops it
    assert LPIPSMetric().available
    torch.testing.assert_close(LPIPSMetric(str(path), device=torch.device("cpu"))(a, b), diff)

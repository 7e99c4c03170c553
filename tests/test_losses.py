"""gan_loss / tv_loss on known values; PerceptualLoss mechanics with random VGG19 weights."""

import math

import pytest
import torch
import torch.nn.functional as F

from raygan.platform.core.losses import PerceptualLoss, gan_loss, tv_loss


def test_lsgan_known_values():
    x = torch.tensor([0.0, 1.0, 2.0])
    assert gan_loss("lsgan", x, real=True).item() == pytest.approx((1 + 0 + 1) / 3)
    assert gan_loss("lsgan", x, real=False).item() == pytest.approx((0 + 1 + 4) / 3)
    # the generator pushes towards "real" with the same formula
    assert gan_loss("lsgan", x, real=True, for_discriminator=False).item() == pytest.approx(2 / 3)


@pytest.mark.parametrize("kind", ["vanilla", "bce"])
def test_bce_known_values(kind):
    x = torch.tensor([0.0, 2.0])
    sp = lambda v: math.log1p(math.exp(v))  # softplus
    assert gan_loss(kind, x, real=True).item() == pytest.approx((sp(0) + sp(-2)) / 2, rel=1e-6)
    assert gan_loss(kind, x, real=False).item() == pytest.approx((sp(0) + sp(2)) / 2, rel=1e-6)
    # non-saturating generator loss = BCE against 1
    assert gan_loss(kind, x, real=True, for_discriminator=False).item() == pytest.approx(
        (sp(0) + sp(-2)) / 2, rel=1e-6)


def test_hinge_known_values():
    x = torch.tensor([-2.0, 0.5, 3.0])
    assert gan_loss("hinge", x, real=True).item() == pytest.approx((3 + 0.5 + 0) / 3)
    assert gan_loss("hinge", x, real=False).item() == pytest.approx((0 + 1.5 + 4) / 3)
    assert gan_loss("hinge", x, real=True, for_discriminator=False).item() == pytest.approx(-0.5)


def test_multiscale_list_is_mean_of_scales():
    a, b = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 2, 2) * 3
    expected = (F.mse_loss(a, torch.ones_like(a)) + F.mse_loss(b, torch.ones_like(b))) / 2
    assert gan_loss("lsgan", [a, b], real=True).item() == pytest.approx(expected.item())


def test_unknown_kind_names_it():
    with pytest.raises(ValueError, match="wgan-gp"):
        gan_loss("wgan-gp", torch.zeros(1), real=True)


def test_gan_loss_gradient_flows():
    torch.manual_seed(0)
    x = (torch.randn(4, 1) * 2).requires_grad_()  # some logits beyond +-2
    gan_loss("lsgan", x, real=True, for_discriminator=False).backward()
    # d/dx mean((x - 1)^2) = 2 (x - 1) / n, for every logit
    torch.testing.assert_close(x.grad, 2 * (x.detach() - 1) / 4, rtol=1e-6, atol=0)


def test_tv_loss_known_values():
    img = torch.zeros(1, 1, 3, 3)
    assert tv_loss(img).item() == 0.0
    img[0, 0, :, 1] = 1.0  # vertical stripe: no vertical change, horizontal |diff| = 1 on 2 of 2 pairs per row
    assert tv_loss(img).item() == pytest.approx(1.0)
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    assert tv_loss(ramp).item() == pytest.approx(1.0)


def test_perceptual_loss_random_weights_mechanics():
    torch.manual_seed(0)
    loss = PerceptualLoss(layer=8, weights="random")  # conv3_1: quick, same code path as 34/35
    assert loss.init == "random"
    assert not any(p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.training  # stays in eval mode
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    y = torch.rand(2, 3, 32, 32, requires_grad=True)
    value = loss(x, y)
    value.backward()
    assert y.grad is None  # the target is detached
    # reference: L1 between torchvision VGG19 features[:9] (the same fixed-seed random
    # weights) of ImageNet-normalised inputs, and its gradient
    from raygan.platform.core.perceptual import _vgg19_feature_stack

    vgg = _vgg19_feature_stack()[:9].eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    xr = x.detach().clone().requires_grad_()
    ref = F.l1_loss(vgg((xr - mean) / std), vgg((y.detach() - mean) / std))
    ref.backward()
    assert value.dim() == 0
    torch.testing.assert_close(value, ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-9)


def test_perceptual_loss_gray_is_replicated_rgb():
    torch.manual_seed(0)
    loss = PerceptualLoss(layer=3, weights="random", criterion="mse")
    g1, g2 = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    a = loss(g1, g2)
    b = loss(g1.expand(-1, 3, -1, -1), g2.expand(-1, 3, -1, -1))
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_perceptual_layer_34_is_pre_relu_and_35_post_relu():
    torch.manual_seed(0)
    pre = PerceptualLoss(layer=34, weights="random")
    post = PerceptualLoss(layer=35, weights="random")
    assert isinstance(pre.features[-1], torch.nn.Conv2d)
    assert isinstance(post.features[-1], torch.nn.ReLU)
    assert len(pre.features) == 35 and len(post.features) == 36


def test_perceptual_bad_arguments():
    with pytest.raises(ValueError, match="criterion"):
        PerceptualLoss(layer=3, weights="random", criterion="l3")
    with pytest.raises(ValueError, match="layer"):
        PerceptualLoss(layer=99, weights="random")
    loss = PerceptualLoss(layer=1, weights="random")
    with pytest.raises(ValueError, match="1\\|3"):
        loss(torch.rand(1, 2, 8, 8), torch.rand(1, 2, 8, 8))


def test_random_vgg_is_deterministic_and_leaves_global_rng_alone():
    # not checkpointed: every worker and every resumed run must rebuild the same network
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = PerceptualLoss(layer=5, weights="random")
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(2)
    b = PerceptualLoss(layer=5, weights="random")
    for (k, v), w in zip(a.features.state_dict().items(), b.features.state_dict().values()):
        assert torch.equal(v, w), k


# ------------------------------------------------------------- multi-scale lists, by hand


_A = torch.tensor([-2.0, 0.5, 3.0])     # one scale's logits
_B = torch.tensor([[1.0, -0.5]])         # a second, coarser scale


@pytest.mark.parametrize("kind, real, for_discriminator, expected", [
    # hinge D on real: relu(1 - x) -> (3 + 0.5 + 0) / 3 and (0 + 1.5) / 2
    ("hinge", True, True, (3.5 / 3 + 0.75) / 2),
    # hinge D on fake: relu(1 + x) -> (0 + 1.5 + 4) / 3 and (2 + 0.5) / 2
    ("hinge", False, True, (5.5 / 3 + 1.25) / 2),
    # hinge G: -mean(x) per scale, whatever ``real`` says
    ("hinge", True, False, (-0.5 + -0.25) / 2),
    ("hinge", False, False, (-0.5 + -0.25) / 2),
    # lsgan fake: x^2 -> (4 + 0.25 + 9) / 3 and (1 + 0.25) / 2
    ("lsgan", False, True, (13.25 / 3 + 0.625) / 2),
])
def test_multiscale_lists_keep_real_and_the_side_of_each_scale(kind, real, for_discriminator, expected):
    value = gan_loss(kind, [_A, _B], real=real, for_discriminator=for_discriminator)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # a tuple is a list of scales too, and a one-element list is that scale's loss
    assert gan_loss(kind, (_A, _B), real, for_discriminator).item() == pytest.approx(expected, rel=1e-6)
    assert gan_loss(kind, [_A], real, for_discriminator).item() == pytest.approx(
        gan_loss(kind, _A, real, for_discriminator).item(), rel=1e-6)


def test_tv_loss_of_an_irregular_image_against_the_neighbour_differences():
    img = torch.tensor([[0.0, 1.0, 3.0],
                        [2.0, 2.0, 2.0],
                        [5.0, 0.0, 1.0]]).view(1, 1, 3, 3)
    # vertical neighbours: |2-0| |2-1| |2-3| |5-2| |0-2| |1-2| -> 10 / 6
    # horizontal neighbours: |1-0| |3-1| 0 0 |0-5| |1-0| -> 9 / 6
    assert tv_loss(img).item() == pytest.approx(10 / 6 + 9 / 6)
    assert tv_loss(img.transpose(2, 3)).item() == pytest.approx(10 / 6 + 9 / 6)
    # a taller image: only neighbours count, not the distance to the first row
    tall = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0]).view(1, 1, 5, 1).expand(2, 3, 5, 2)
    assert tv_loss(tall).item() == pytest.approx(1.0)


# ------------------------------------------------------ PerceptualLoss: weights, key, state


def test_default_weights_are_torchvisions_file_in_the_hub_cache(torch_home):
    from raygan.platform.core import perceptual

    reference = perceptual._vgg19_feature_stack(seed=7)[:4]  # not the "random" network
    ckpt = torch_home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    path = ckpt / perceptual.VGG19_FILE
    torch.save({f"features.{k}": v for k, v in reference.state_dict().items()}, path)

    loss = PerceptualLoss(layer=3)  # no weights given: "auto"
    assert loss.init == f"pretrained:{path}"
    for k, v in loss.features.state_dict().items():
        assert torch.equal(v, reference.state_dict()[k]), k


def test_weights_errors_name_the_config_key_the_user_sets(tmp_path, torch_home):
    missing = tmp_path / "vgg.pth"
    with pytest.raises(FileNotFoundError, match=r"^train\.perceptual_weights: VGG19 .*vgg\.pth"):
        PerceptualLoss(layer=3, weights=str(missing))
    # a caller with its own key (an evaluator's setting) sees that key, for paths and "auto"
    with pytest.raises(FileNotFoundError, match=r"^eval\.vgg_weights: VGG19 .*vgg\.pth"):
        PerceptualLoss(layer=3, weights=str(missing), key="eval.vgg_weights")
    with pytest.raises(FileNotFoundError,
                       match=r"set eval\.vgg_weights=<path to the file>, or eval\.vgg_weights=random"):
        PerceptualLoss(layer=3, weights="auto", key="eval.vgg_weights")


def test_only_the_vgg_weights_are_state_and_the_layer_is_recorded():
    loss = PerceptualLoss(layer=8, weights="random")
    assert loss.layer == 8
    # the ImageNet mean/std are constants, not state: checkpoints hold the VGG weights only
    assert sorted(loss.state_dict()) == sorted(f"features.{k}" for k in loss.features.state_dict())
    torch.testing.assert_close(loss.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(loss.std.flatten(), torch.tensor([0.229, 0.224, 0.225]))


def test_perceptual_mse_criterion_and_a_gray_batch():
    from raygan.platform.core.perceptual import _vgg19_feature_stack

    g = torch.Generator().manual_seed(3)
    loss = PerceptualLoss(layer=3, weights="random", criterion="mse")
    x, y = torch.rand(2, 1, 12, 12, generator=g), torch.rand(2, 1, 12, 12, generator=g)
    vgg = _vgg19_feature_stack()[:4].eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    rgb = lambda t: t.repeat(1, 3, 1, 1)  # noqa: E731
    with torch.no_grad():
        fx, fy = vgg((rgb(x) - mean) / std), vgg((rgb(y) - mean) / std)
    # mean squared feature difference over the whole batch, not the L1 distance
    torch.testing.assert_close(loss(x, y), ((fx - fy) ** 2).mean(), rtol=1e-5, atol=0)
    assert loss(x, y).item() != pytest.approx(F.l1_loss(fx, fy).item(), rel=1e-3)

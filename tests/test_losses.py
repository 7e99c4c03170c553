"""gan_loss / tv_loss on known values; PerceptualLoss mechanics with random VGG19 weights."""

import math

import pytest
import torch
import torch.nn.functional as F

from raygan.platform.losses import PerceptualLoss, gan_loss, tv_loss


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
    from raygan.platform.perceptual import _vgg19_feature_stack

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

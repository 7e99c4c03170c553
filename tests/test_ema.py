"""EMA of the generator: exactly the warm-up formula, and what validation scores."""
import copy

import torch

from raygan.platform.core import metrics as M
from test_engine import batch, tiny_cfg

from raygan.platform.engine import GANEngine


def test_ema_equals_the_warm_up_formula_after_k_updates():
    """e_0 = G_0; e_t = d_t e_{t-1} + (1 - d_t) G_t with d_t = min(decay, (1+t)/(10+t))."""
    torch.manual_seed(0)
    eng = GANEngine(tiny_cfg("train.ema_decay=0.3", "train.pretrain_steps=2"))
    expected = [p.detach().clone() for p in eng.generator.parameters()]
    decays = []
    for t in range(1, 7):  # pretraining and GAN steps alike
        eng.train_step(batch(t))
        d = min(0.3, (1 + t) / (10 + t))
        decays.append(d)
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, eng.generator.parameters())]
    assert decays == [2 / 11, 3 / 12, 0.3, 0.3, 0.3, 0.3]  # warm-up, then the decay cap
    assert eng.ema.updates == 6
    for e, p in zip(expected, eng.ema.model.parameters()):
        torch.testing.assert_close(p, e, rtol=0, atol=1e-6)
    # ...and it is not simply the generator
    assert any(not torch.allclose(p, q) for p, q in zip(eng.generator.parameters(), eng.ema.model.parameters()))


def test_validation_scores_the_ema_generator_when_enabled():
    torch.manual_seed(0)
    eng = GANEngine(tiny_cfg("train.ema_decay=0.9"))
    for t in range(3):
        eng.train_step(batch(t))
    val_batch = batch(99)
    with torch.no_grad():
        ema_out = eng.ema.model(val_batch["input"]).clamp(0, 1)
        g_out = eng.generator(val_batch["input"]).clamp(0, 1)
    expected = M.psnr(ema_out, val_batch["target"]).mean().item()
    assert M.psnr(g_out, val_batch["target"]).mean().item() != expected  # the two differ
    scored = eng.validate([copy.deepcopy(val_batch)])["metrics"]["psnr"]
    assert scored == expected

    plain = GANEngine(tiny_cfg("train.ema_decay=0"))
    assert plain.ema is None and plain.eval_generator() is plain.generator


def test_the_ema_copy_takes_no_gradients():
    """The EMA generator is a copy that no optimiser or backward pass touches."""
    eng = GANEngine(tiny_cfg("train.ema_decay=0.9"))
    assert eng.ema is not None and eng.ema.updates == 0
    assert not any(p.requires_grad for p in eng.ema.model.parameters())
    assert all(p.requires_grad for p in eng.generator.parameters())
    assert not eng.ema.model.training


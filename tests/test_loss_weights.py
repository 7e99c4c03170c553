"""Loss weights do what their keys say, through the path a sweep takes.

For every family: ``load_config(<family yaml>, ["loss.<key>=<value>", ...])`` -> the engine's
``build_family`` -> ``generator_loss``. With distinct, non-unit weights the generator loss
must equal the paper's formula over the family's logged (unweighted) terms, and changing one
key must change the loss by exactly that term's weighted contribution. A dropped or swapped
multiplier (DAGAN's beta for 1 - beta, a WCDGAN weight hidden by the all-1 defaults, face
SR's alpha on the wrong terms) fails here.
"""
from pathlib import Path

import pytest
import torch

from raygan.platform.core.config import load_config
from raygan.platform.engine import build_family

ROOT = Path(__file__).resolve().parent.parent
RANDOM = ["train.perceptual_weights=random", "train.lpips_weights=off"]


def _batch(n, c, size, scale=1, parsing=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(n, c, size, size, generator=g)
    x = target if scale == 1 else torch.nn.functional.avg_pool2d(target, scale)
    batch = {"input": (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1), "target": target}
    if parsing:
        batch["parsing"] = torch.rand(n, 11, size, size, generator=g)
    return batch


# family -> (yaml, tiny model overrides, batch, weights {key: value}, formula(loss_cfg, logs))
CASES = {
    "wcdgan": ("wcdgan.yaml",
               ["model.features=8", "model.blocks=1", "model.mixed_width=4", "model.d_features=8",
                "model.d_max_features=16", "model.d_fc=16", "model.d_pool=2", "data.patch=16"],
               lambda: _batch(2, 3, 16),
               {"pixel": 0.7, "perceptual": 0.3, "adversarial": 0.05, "tv": 0.2},
               lambda c, g: c.pixel * g["g_pixel"] + c.perceptual * g["g_perceptual"]
               + c.adversarial * g["g_adversarial"] + c.tv * g["g_tv"]),
    # the paper's beta * MSE + (1 - beta) * VGG + 1e-2 * adversarial, beta = loss.pixel
    "dagan": ("dagan.yaml",
              ["model.features=8", "model.modules=1", "model.groups=2", "model.d_features=8",
               "model.d_fc=16", "data.patch=16", "loss.vgg_layer=8"],
              lambda: _batch(2, 3, 16),
              {"pixel": 0.3, "perceptual": 0.7, "adversarial": 0.02},
              lambda c, g: c.pixel * g["g_pixel"] + c.perceptual * g["g_perceptual"]
              + c.adversarial * g["g_adversarial"]),
    # alpha * adversarial + beta * VGG (+ the optional pixel MSE)
    "dequantizer": ("dequantizer.yaml",
                    ["model.features=8", "model.res_blocks=1", "model.d_features=8", "model.d_fc=16",
                     "data.patch=16", "loss.vgg_layer=8"],
                    lambda: _batch(2, 3, 16),
                    {"adversarial": 0.003, "perceptual": 0.6, "pixel": 0.4},
                    lambda c, g: c.adversarial * g["g_adversarial"] + c.perceptual * g["g_perceptual"]
                    + c.pixel * g["g_pixel"]),
    # alpha * (coarse + prior + fine MSE) + beta * VGG + gamma * adversarial, alpha folded in
    "facesr": ("facesr_gan.yaml",
               ["model.nf=8", "model.n_blocks=1", "model.prior_nf=8", "model.prior_depth=2",
                "model.d_nf=8", "data.patch=32", "loss.vgg_layer=8"],
               lambda: _batch(2, 3, 32, scale=8, parsing=True),
               {"coarse": 0.5, "prior": 0.25, "fine": 2.0, "perceptual": 0.3, "adversarial": 0.01},
               lambda c, g: c.coarse * g["g_coarse"] + c.prior * g["g_prior"] + c.fine * g["g_fine"]
               + c.perceptual * g["g_perceptual"] + c.adversarial * g["g_adversarial"]),
    # alpha1 * L_cGAN^high + alpha2 * L_GAN^low + alpha3 * L_perc + alpha4 * L1
    "pan": ("pan_sr.yaml",
            ["model.ngf=4", "model.ndf=4", "model.num_downs=5", "model.d_layers=1",
             "loss.layer_weights=[5.0,1.5]", "data.patch=32"],
            lambda: _batch(2, 3, 32, scale=4),
            {"adversarial": 1.5, "adversarial_low": 3.0, "perceptual": 0.8, "pixel": 50.0},
            lambda c, g: c.adversarial * g["g_adversarial"] + c.adversarial_low * g["g_adversarial_low"]
            + c.perceptual * g["g_perceptual"] + c.pixel * g["g_pixel"]),
}

#: an older raygan's loss keys (a stored run's config) -> the same weights today
OLD_KEYS = {
    "wcdgan": ({"l1": 0.7}, {"pixel": 0.7}),
    "dagan": ({"content": "both", "beta": 0.3}, {"pixel": 0.3, "perceptual": 0.7}),
    "dequantizer": ({"content": 0.6}, {"perceptual": 0.6}),
    "facesr": ({"w_coarse": 0.5, "w_prior": 0.25, "w_fine": 2.0, "alpha": 2.0, "beta": 0.3, "gamma": 0.01},
               {"coarse": 1.0, "prior": 0.5, "fine": 4.0, "perceptual": 0.3, "adversarial": 0.01}),
    "pan": ({"high": 1.5, "low": 3.0, "l1": 50.0}, {"adversarial": 1.5, "adversarial_low": 3.0, "pixel": 50.0}),
}


def generator_loss(family_name, weights):
    yaml, tiny, make_batch, _, _ = CASES[family_name]
    cfg = load_config(ROOT / "models" / "configs" / yaml,
                      RANDOM + tiny + [f"loss.{k}={v}" for k, v in weights.items()])
    torch.manual_seed(0)  # the same G, D and VGG for every weight setting
    family = build_family(cfg)
    family.setup(torch.device("cpu"))
    G, D = family.build_generator(), family.build_discriminator()
    batch = make_batch()
    with torch.no_grad():
        loss, logs = family.generator_loss(D, family.generator_forward(G, batch), batch)
    return cfg.loss, float(loss), logs


@pytest.mark.parametrize("family_name", sorted(CASES))
def test_generator_loss_is_the_weighted_sum_of_its_terms(family_name):
    weights, formula = CASES[family_name][3], CASES[family_name][4]
    loss_cfg, loss, logs = generator_loss(family_name, weights)
    for key, value in weights.items():
        assert getattr(loss_cfg, key) == value  # the override reached the family's config
    assert loss == pytest.approx(formula(loss_cfg, logs), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("family_name", sorted(CASES))
def test_each_key_changes_the_loss_by_its_own_term(family_name):
    weights, formula = CASES[family_name][3], CASES[family_name][4]
    base_cfg, base, base_logs = generator_loss(family_name, weights)
    for key, value in weights.items():
        changed = dict(weights, **{key: round(value * 1.7 if value < 0.5 else value * 0.45, 6)})
        cfg, loss, logs = generator_loss(family_name, changed)
        assert {k: v for k, v in logs.items()} == pytest.approx(base_logs, rel=1e-6)  # same terms
        expected = formula(cfg, base_logs) - formula(base_cfg, base_logs)
        assert expected != 0, f"loss.{key} has no term in the formula"
        assert loss - base == pytest.approx(expected, rel=1e-4, abs=1e-6), f"loss.{key}"


@pytest.mark.parametrize("family_name", sorted(CASES))
def test_every_family_names_its_terms_from_one_vocabulary(family_name):
    """Each term is its weight key and its log key; loss.adversarial is the adversarial weight
    of every family, so one sweep key means one thing."""
    from raygan.models.base import LOSS_VOCABULARY
    from raygan.platform.core.registry import FAMILIES

    fam = FAMILIES.get(family_name)
    assert set(fam.loss_terms) <= set(LOSS_VOCABULARY) and "adversarial" in fam.loss_terms
    _, _, logs = generator_loss(family_name, CASES[family_name][3])
    assert set(logs) == {f"g_{t}" for t in fam.loss_terms}  # every term logged, unweighted


@pytest.mark.parametrize("family_name", sorted(OLD_KEYS))
def test_a_stored_config_with_old_loss_keys_loads_with_the_same_weights(family_name):
    """A checkpoint's or registered model's config written with the old keys builds the
    same weights; an old key beside its new name is an error naming both."""
    from raygan.platform.core.config import ConfigError, build_config, to_dict
    from raygan.platform.core.registry import FAMILIES

    old, new = OLD_KEYS[family_name]
    stored = to_dict(load_config(ROOT / "models" / "configs" / CASES[family_name][0], RANDOM))
    for key in new:
        stored["loss"].pop(key, None)
    translated = build_config(dict(stored, loss={**stored["loss"], **old}))
    for key, value in new.items():
        assert getattr(translated.loss, key) == pytest.approx(value), key
    renamed = FAMILIES.get(family_name).renamed_loss_keys
    for old_key, new_key in renamed.items():
        with pytest.raises(ConfigError, match=f"loss.{old_key} and loss.{new_key}"):
            build_config(dict(stored, loss={**stored["loss"], old_key: 1.0, new_key: 1.0}))


def test_content_loss_is_the_weighted_content_terms():
    """Pretraining uses the same weights as the adversarial phase (PAN's L1 at alpha4)."""
    _, _, logs = generator_loss("pan", CASES["pan"][3])
    yaml, tiny, make_batch, weights, _ = CASES["pan"]
    cfg = load_config(ROOT / "models" / "configs" / yaml, RANDOM + tiny + [f"loss.{k}={v}" for k, v in weights.items()])
    torch.manual_seed(0)
    family = build_family(cfg)
    G, batch = family.build_generator(), make_batch()
    with torch.no_grad():
        loss, content_logs = family.content_loss(family.generator_forward(G, batch), batch)
    assert set(content_logs) == {"g_pixel"}
    assert float(loss) == pytest.approx(50.0 * content_logs["g_pixel"], rel=1e-6)

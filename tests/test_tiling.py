"""Tiled restoration (raygan.platform.core.tiling, imported by serving as raygan.deploy.tiling):
seamless, equal to whole-image inference, and the generator only ever sees tile-sized inputs."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from raygan.deploy.tiling import TilePlan, restore_tiled, tile_starts
from raygan.platform.core.config import load_config, to_dict
from raygan.platform.engine import build_family
from raygan.platform.restorer import build_restorer
from test_engine import CONFIGS, TINY


@given(length=st.integers(1, 3000), tile=st.integers(8, 512), overlap=st.integers(0, 64))
@settings(max_examples=300, deadline=None)
def test_tiles_cover_every_pixel_with_the_overlap_and_stay_inside(length, tile, overlap):
    tile = min(tile, length)
    overlap = min(overlap, tile // 2)
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + tile == length
    assert all(0 <= s <= length - tile for s in starts)
    for a, b in zip(starts, starts[1:]):  # every consecutive pair, the last one included
        assert a < b, starts
        assert a + tile - b >= min(overlap, tile - 1), (a, b, starts)


def test_identity_tiles_blend_back_exactly_and_memory_is_bounded_by_the_tile():
    """A 2000x1500 photo in 256-px tiles through an identity 'generator': every output pixel
    is its input (blending weights sum to one; no seams), and no call saw more than one
    batch of tile-sized inputs."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    seen = []

    def identity(tiles):
        seen.append([t.shape for t in tiles])
        return [t.astype(np.float32) / 255.0 for t in tiles]

    out = restore_tiled(image, identity, tile=256, overlap=32, batch=4)
    assert np.array_equal(out, image)
    shapes = {s for call in seen for s in call}
    assert shapes == {(256, 256, 3)} and max(len(c) for c in seen) <= 4
    assert sum(len(c) for c in seen) == len(TilePlan(1500, 2000, 256, 32)) > 40


def _restorer(config, extra):
    cfg = load_config(CONFIGS / config, extra)
    torch.manual_seed(0)
    generator = build_family(cfg).build_generator()
    return build_restorer(to_dict(cfg), generator.state_dict())


@pytest.mark.parametrize("config,extra,tolerance", [
    # WCDGAN: convolutions only -> tiles equal the whole image (float rounding: 1 level)
    ("wcdgan.yaml", TINY, (1, 0.01)),
    # PAN x2 SR: a 5-level U-Net; its receptive field exceeds the overlap -> small differences
    ("pan_sr_cpu.yaml", ["model.ngf=4", "model.ndf=4", "model.num_downs=5", "data.scale=2",
                         "train.perceptual_weights=random"], (16, 0.05)),
])
def test_tiled_equals_whole_image_inference(config, extra, tolerance):
    """An image larger than several tiles, restored in 64-px tiles with a 16-px overlap,
    against the same generator on the whole image (max / mean absolute uint8 difference)."""
    from skimage import data

    restorer = _restorer(config, extra)
    scale = restorer.upscale()
    image = np.ascontiguousarray(data.astronaut()[100:260, 140:330])  # 160 x 190

    @torch.no_grad()
    def run(tiles):
        x = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255.0
        return list(restorer(x).permute(0, 2, 3, 1).numpy())

    whole = (np.clip(run([image])[0], 0, 1) * 255 + 0.5).astype(np.uint8)
    plan = TilePlan(160, 190, 64, 16, scale)
    assert len(plan) >= 9
    tiled = restore_tiled(image, run, tile=64, overlap=16, scale=scale)
    assert tiled.shape == whole.shape == (160 * scale, 190 * scale, 3)
    diff = np.abs(tiled.astype(int) - whole.astype(int))
    print(config, "tiled vs whole: max", diff.max(), "mean", diff.mean())
    assert diff.max() <= tolerance[0] and diff.mean() <= tolerance[1], (diff.max(), diff.mean())
    # and without an overlap the seams show (the check can fail)
    if tolerance[0] > 0:
        seams = np.abs(restore_tiled(image, run, tile=64, overlap=0, scale=scale).astype(int) - whole)
        assert seams.mean() > diff.mean()


def test_forward_passes_are_capped_in_pixels(tmp_path):
    """A replica's batch of tiles runs in forward passes of at most forward_pixels pixels
    (CPU default: one 128x128 tile; stacking bigger batches was slower per image on CPU),
    and the outputs come back in the order of the tiles."""
    from raygan.deploy.app import CPU_FORWARD_PIXELS, TaskModel
    from raygan.platform.checkpoint import save_checkpoint
    from raygan.platform.engine import GANEngine
    from test_engine import tiny_cfg

    cfg = tiny_cfg(f"workdir={tmp_path}")
    ck = save_checkpoint(tmp_path / "checkpoint_00000001", GANEngine(cfg),
                         {"step": 1, "config": to_dict(cfg), "family": cfg.family})
    ref = {"model": str(ck), "name": "tiny", "version": "1", "source": str(ck)}
    model = TaskModel("jpeg", ref, warm_size=16, device="cpu")
    assert model.forward_pixels == CPU_FORWARD_PIXELS == 128 * 128
    passes = []
    inner = model.restorer
    model.restorer = lambda x: passes.append(tuple(x.shape)) or inner(x)
    rng = np.random.default_rng(0)
    tiles = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(6)]
    tiles += [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
    outs = model.restore_batch(tiles)
    assert sorted(passes) == sorted([(4, 3, 64, 64), (2, 3, 64, 64), (1, 3, 128, 128), (1, 3, 128, 128)])
    alone = TaskModel("jpeg", ref, warm_size=16, device="cpu", forward_pixels=10 ** 9)
    for tile, out in zip(tiles, outs):
        assert np.allclose(out, alone.restore_batch([tile])[0], atol=1e-5)


def test_a_y_channel_generator_restores_luma_and_keeps_the_chroma(tmp_path):
    """A 1-channel (BT.601 Y) generator serving an RGB photo: RGB -> YCbCr, Y restored,
    the input's Cb/Cr kept, back to RGB. With a generator that starts as the identity
    (input skip, last conv at zero) the round trip must give the photo back."""
    from skimage import data

    from raygan.deploy.app import TaskModel
    from raygan.platform.checkpoint import save_checkpoint
    from raygan.platform.engine import GANEngine
    from test_engine import tiny_cfg

    cfg = tiny_cfg(f"workdir={tmp_path}", "data.channels=1", "model.global_residual=true",
                   "model.identity_init=true")
    ck = save_checkpoint(tmp_path / "checkpoint_00000001", GANEngine(cfg),
                         {"step": 1, "config": to_dict(cfg), "family": cfg.family})
    model = TaskModel("jpeg", {"model": str(ck), "name": "y", "version": "1", "source": str(ck)},
                      warm_size=16, device="cpu")
    assert model.channels == 1
    photo = np.ascontiguousarray(data.astronaut()[:48, :64])
    out = model.restore_batch([photo])[0]
    assert out.shape == (48, 64, 3)
    assert np.abs(out * 255 - photo).max() < 1.5


def test_serving_and_evaluation_share_one_tiling_core():
    """deploy.tiling is the ground floor's module re-exported (one implementation), and the
    float result (what evaluation scores) is the uint8 result before rounding."""
    import raygan.deploy.tiling as served
    import raygan.platform.core.tiling as core

    assert (served.TilePlan, served.restore_tiled, served.tile_starts) == (
        core.TilePlan, core.restore_tiled, core.tile_starts)
    rng = np.random.default_rng(1)
    image = rng.random((70, 90, 3)).astype(np.float32)
    plan = core.TilePlan(70, 90, 32, 8)
    for i, t in enumerate(plan.tiles(image)):
        plan.add(i, t * 0.5)
    out = plan.result_float()
    assert out.dtype == np.float32 and out.shape == (70, 90, 3)
    np.testing.assert_allclose(out, image * 0.5, atol=1e-6)  # weights sum to one everywhere
    np.testing.assert_array_equal(plan.result(), (out * 255 + 0.5).astype(np.uint8))


# ---------------------------------------------------------------- the blend, by hand
# The cross-fade of two tiles of 8 px with an overlap of 4 (fade 4): each ramp is
# (k + 0.5) / 4 over the 4 overlapped pixels, the two ramps sum to 1, a border is not faded.
FADE_IN = [0.125, 0.375, 0.625, 0.875]
FIRST = np.array([1, 1, 1, 1] + FADE_IN[::-1], dtype=np.float64)   # tile at 0, a tile after it
LAST = np.array(FADE_IN + [1, 1, 1, 1], dtype=np.float64)          # tile after another


def _blend_by_hand(height, width, starts_y, starts_x, wy, wx, values):
    """sum_t w_t v_t / sum_t w_t over the tiles, from the hand-written 1-D weights."""
    acc, norm = np.zeros((height, width)), np.zeros((height, width))
    for i, y in enumerate(starts_y):
        for j, x in enumerate(starts_x):
            w = wy[i][:, None] * wx[j][None, :]
            acc[y:y + 8, x:x + 8] += w * values[i][j]
            norm[y:y + 8, x:x + 8] += w
    return acc / norm


@pytest.mark.parametrize("height,width,starts_y,starts_x", [
    (8, 12, [0], [0, 4]),       # two tiles side by side
    (12, 12, [0, 4], [0, 4]),   # the second tile starts at the stride
    (9, 9, [0, 1], [0, 1]),     # the last tile starts at 1: length - tile
])
def test_overlapping_tiles_cross_fade_with_the_papers_ramp(height, width, starts_y, starts_x):
    """Tiles restored to different constants blend, pixel by pixel, into the linear cross-fade
    written out above (an identity generator cannot see the weights: they cancel)."""
    plan = TilePlan(height, width, tile=8, overlap=4)
    assert (plan.ys, plan.xs) == (starts_y, starts_x)
    values = [[0.2, 0.6], [0.9, 0.4]]
    for index, (y, x) in enumerate(plan.boxes):
        i, j = starts_y.index(y), starts_x.index(x)
        plan.add(index, np.full((8, 8, 1), values[i][j], dtype=np.float32))
    ramps = lambda starts: [np.ones(8)] if len(starts) == 1 else [FIRST, LAST]  # noqa: E731
    expected = _blend_by_hand(height, width, starts_y, starts_x, ramps(starts_y), ramps(starts_x), values)
    np.testing.assert_allclose(plan.result_float()[..., 0], expected, rtol=0, atol=1e-6)


def test_the_ramp_is_float32_and_fades_only_the_sides_asked():
    from raygan.platform.core.tiling import _ramp

    both = _ramp(8, 4, True, True)
    assert both.dtype == np.float32  # the blend buffers are float32: 4 bytes a pixel
    np.testing.assert_array_equal(both, np.float32([0.125, 0.375, 0.625, 0.875, 0.875, 0.625, 0.375, 0.125]))
    np.testing.assert_array_equal(_ramp(3, 1, True, False), np.float32([0.5, 1, 1]))
    np.testing.assert_array_equal(_ramp(4, 0, True, True), np.ones(4, np.float32))


def test_one_tile_is_its_output_and_outputs_are_clipped_to_the_unit_range():
    plan = TilePlan(6, 5, tile=8, overlap=4)
    assert len(plan) == 1 and (plan.th, plan.tw) == (6, 5)
    out = np.linspace(-0.5, 1.5, 6 * 5 * 3, dtype=np.float32).reshape(6, 5, 3)
    plan.add(0, out)
    np.testing.assert_array_equal(plan.result_float(), np.clip(out, 0, 1))
    assert plan.result().dtype == np.uint8 and plan.result().min() == 0 and plan.result().max() == 255


def test_plan_arguments_and_the_clipped_overlap():
    with pytest.raises(ValueError, match="tile must be > 0"):
        TilePlan(8, 8, tile=0, overlap=0)
    with pytest.raises(ValueError, match="overlap >= 0"):
        TilePlan(8, 8, tile=4, overlap=-1)
    assert len(TilePlan(3, 3, tile=1, overlap=0)) == 9  # 1-px tiles are tiles
    plan = TilePlan(32, 32, tile=8, overlap=7)
    assert plan.overlap == 4 and isinstance(plan.overlap, int)  # at most half a tile
    assert tile_starts(5, 2, 1) == [0, 1, 2, 3]  # stride 1 when the overlap leaves one pixel


def test_restore_tiled_sends_at_most_four_tiles_a_call_by_default():
    image = np.zeros((40, 40, 3), np.uint8)
    sizes = []

    def restore(tiles):
        sizes.append(len(tiles))
        return [t.astype(np.float32) / 255 for t in tiles]

    restore_tiled(image, restore, tile=16, overlap=4)
    assert max(sizes) == 4 and sum(sizes) == len(TilePlan(40, 40, 16, 4))

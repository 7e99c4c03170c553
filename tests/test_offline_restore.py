"""`raygan restore`: a folder of photos (one broken) restored without a server, through the
endpoint's decoding and tiling, with a small generator made here."""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import job_env, random_image
from test_engine import CONFIGS

from raygan.cli import main as raygan
from raygan.deploy.offline import RestorePlanError, load_model, plan_outputs, restore_paths

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny WCDGAN checkpoint folder (what `raygan restore --model <folder>` takes): its
    generator's weights and meta.json, as a training run writes them."""
    import json

    from safetensors.torch import save_file

    from raygan.platform.core.config import load_config, to_dict
    from raygan.platform.engine import build_family

    folder = tmp_path_factory.mktemp("ckpt") / "run" / "checkpoint_00000002"
    folder.mkdir(parents=True)
    cfg = load_config(CONFIGS / "wcdgan_cpu_demo.yaml", ["model.features=8", "model.blocks=1",
                                                         "model.mixed_width=4"])
    torch.manual_seed(0)
    generator = build_family(cfg).build_generator()
    save_file({k: v.contiguous() for k, v in generator.state_dict().items()}, str(folder / "generator.safetensors"))
    (folder / "meta.json").write_text(json.dumps({"step": 2, "config": to_dict(cfg), "family": cfg.family}))
    return str(folder)


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _digest(folder: Path) -> dict:
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def photos(tmp_path):
    """What a user's folder holds: a photo larger than a tile, a grayscale scan, a 16-bit
    PNG, a transparent logo, a phone photo with EXIF orientation, one in a sub-folder, a
    broken file, a hidden file and a text file."""
    rng = np.random.default_rng(0)
    src = tmp_path / "photos"
    (src / "trip").mkdir(parents=True)
    Image.fromarray(random_image(rng, 150, 170)).save(src / "big.jpg", quality=40)
    Image.fromarray(random_image(rng, 40, 50, channels=1)).save(src / "scan.png")
    Image.fromarray(random_image(rng, 40, 40, channels=1).astype(np.uint16) * 257).save(src / "deep.png")
    rgba = np.concatenate([random_image(rng, 32, 48), np.zeros((32, 48, 1), np.uint8)], axis=2)
    rgba[:, 24:, 3] = 255  # left half transparent
    Image.fromarray(rgba).save(src / "logo.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    Image.fromarray(random_image(rng, 40, 64)).save(src / "trip" / "phone.jpg", exif=exif.tobytes())
    (src / "trip" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / ".hidden.png").write_bytes(b"junk")
    (src / "notes.txt").write_text("not an image")
    return src


def test_a_folder_with_a_broken_file(photos, checkpoint, tmp_path, capsys):
    before = _digest(photos)
    out = tmp_path / "restored"
    status = raygan(["restore", "--model", checkpoint, "--tile", "64", "--no-progress",
                     str(photos), str(out)])
    captured = capsys.readouterr()
    assert status == 1  # one file failed
    errors = [line for line in captured.err.splitlines() if line.startswith("restore: ")]
    assert len(errors) == 1, captured.err
    assert errors[0].startswith(f"restore: {photos / 'trip' / 'broken.jpg'}: ") and "image" in errors[0]
    assert "restored 5 image(s)" in captured.out and "1 failed" in captured.out
    assert _digest(photos) == before  # inputs untouched
    made = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert made == {"big.png", "scan.png", "deep.png", "logo.png", "trip/phone.png"}
    big = Image.open(out / "big.png")
    assert big.size == (170, 150) and big.mode == "RGB"
    assert Image.open(out / "scan.png").mode == "L"  # grayscale in, grayscale out
    assert Image.open(out / "deep.png").mode == "L" and 0 < np.asarray(Image.open(out / "deep.png")).mean() < 250
    # transparency composited on white: the same result as the logo flattened on white
    flat = Image.alpha_composite(Image.new("RGBA", (48, 32), (255, 255, 255, 255)),
                                 Image.open(photos / "logo.png")).convert("RGB")
    flat.save(tmp_path / "flat.png")
    assert raygan(["restore", "--model", checkpoint, "--tile", "64", "--no-progress",
                   str(tmp_path / "flat.png"), str(tmp_path / "flat-restored.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(out / "logo.png")),
                          np.asarray(Image.open(tmp_path / "flat-restored.png")))
    assert Image.open(out / "trip" / "phone.png").size == (40, 64)  # EXIF orientation applied


def test_the_same_as_the_endpoint_in_tiles(checkpoint, tmp_path):
    """The offline result is the endpoint's: decode_image, TaskModel and restore_tiled."""
    from raygan.deploy.images import decode_image
    from raygan.deploy.tiling import restore_tiled

    rng = np.random.default_rng(1)
    photo = tmp_path / "p.png"
    Image.fromarray(random_image(rng, 100, 90)).save(photo)
    model = load_model(checkpoint)
    summary = restore_paths(model, str(photo), str(tmp_path / "r.png"), tile=48, overlap=8, progress=False)
    assert summary["restored"] == 1 and summary["threads"] == len(os.sched_getaffinity(0))
    expected = restore_tiled(decode_image(photo.read_bytes(), 10 ** 8).rgb, model.restore_batch, 48, 8)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.png")), expected)


def test_outputs_never_replace_inputs(photos, checkpoint, capsys):
    (photos / "trip" / "broken.jpg").unlink()
    before = _digest(photos)
    # restoring a folder of PNGs into itself as PNG would overwrite them: refused up front
    status = raygan(["restore", "--model", checkpoint, "--no-progress", str(photos), str(photos)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "would replace an input" in err[0]
    assert _digest(photos) == before
    # as WebP beside them is fine
    assert raygan(["restore", "--model", checkpoint, "--no-progress", "--format", "webp",
                   str(photos), str(photos)]) == 0
    assert {k: v for k, v in _digest(photos).items() if k in before} == before
    assert (photos / "trip" / "phone.webp").is_file()


def test_plans(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.jpg", "a.png", "b.webp"):
        Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(src / name)
    pairs, fmt = plan_outputs(str(src), str(tmp_path / "out"))
    assert fmt == "png" and [(i.name, o.name) for i, o in pairs] == \
        [("a.jpg", "a_jpg.png"), ("a.png", "a_png.png"), ("b.webp", "b.png")]
    assert plan_outputs(str(src / "b.webp"), str(tmp_path / "x.jpg"))[1] == "jpeg"
    [(_, out)], _ = plan_outputs(str(src / "b.webp"), str(tmp_path / "new") + "/")
    assert out == tmp_path / "new" / "b.png"
    with pytest.raises(RestorePlanError, match="would replace an input"):
        plan_outputs(str(src / "a.png"), str(src / "a.png"))
    with pytest.raises(RestorePlanError, match="does not exist"):
        plan_outputs(str(tmp_path / "nope"), str(tmp_path / "out"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RestorePlanError, match="holds no images"):
        plan_outputs(str(tmp_path / "empty"), str(tmp_path / "o"))


def test_a_model_that_does_not_resolve_is_one_line(tmp_path, capsys):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    status = raygan(["restore", "--model", str(tmp_path / "nockpt"), "--no-progress",
                     str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("raygan restore: error: model ")


def test_the_command_in_a_fresh_process(checkpoint, photos, tmp_path):
    """`python -m raygan restore` as a user runs it: every core by default, one line for the
    broken file, no traceback, status 1."""
    out = subprocess.run([sys.executable, "-m", "raygan", "restore", "--model", checkpoint,
                          "--device", "cpu", str(photos / "trip"), str(tmp_path / "r")], cwd=tmp_path,
                         env=job_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    failed = [line for line in out.stderr.splitlines() if line.startswith("restore: ")]
    assert len(failed) == 1 and "broken.jpg" in failed[0], out.stderr
    assert (tmp_path / "r" / "phone.png").is_file()
    cores = len(os.sched_getaffinity(0))
    assert f"(v2, cpu, {cores} threads), 1 failed" in out.stdout, out.stdout

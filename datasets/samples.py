"""Embedded demo data: a small shard set built from photographs shipped with scikit-image.

Only files present in the installed ``skimage/data`` folder are read (directly, by path);
nothing is fetched (no pooch-backed ``skimage.data`` function is called), so it works
offline. The split is fixed: :data:`DEMO_VAL` go to val, the other photographs to train.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import List, Tuple

from raygan.datasets.shards import MANIFEST_NAME, write_shards

__all__ = ["ensure_demo_shards", "demo_image_paths", "DEMO_TRAIN", "DEMO_VAL"]

#: colour photographs only. The demo restores colour JPEG q10, whose error is mostly in the
#: 4:2:0-subsampled chroma; the grayscale textures an earlier list held (brick, grass,
#: gravel, camera, coins, moon) teach nothing about chroma. Validation is two natural
#: photos: the synthetic colour chart ``color.png``, validated on before, is unlike any
#: photo (a model trained on photos moved it 0.8 dB below its input while the photos
#: improved), so it is a training image now.
DEMO_TRAIN = (
    "astronaut.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
    "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "color.png",
)
DEMO_VAL = ("chelsea.png", "coffee.png")

#: versioned: a cached set built from another image list is not reused
DEMO_DIRNAME = "demo_shards_v2"


def _skimage_data_dir() -> str:
    import skimage

    return os.path.join(os.path.dirname(skimage.__file__), "data")


def demo_image_paths() -> Tuple[List[str], List[str]]:
    """``(train paths, val paths)`` of the demo photographs present in this install."""
    root = _skimage_data_dir()
    train = [os.path.join(root, n) for n in DEMO_TRAIN if os.path.isfile(os.path.join(root, n))]
    val = [os.path.join(root, n) for n in DEMO_VAL if os.path.isfile(os.path.join(root, n))]
    if len(val) < 2 or not train:
        raise RuntimeError(
            f"scikit-image's bundled images are missing from {root} "
            f"(need {', '.join(DEMO_VAL)} and some of {', '.join(DEMO_TRAIN)})"
        )
    return train, val


def ensure_demo_shards(workdir: str = ".raygan") -> str:
    """Build ``workdir/demo_shards`` once (idempotent when its manifest exists); return it.

    Built in a temporary sibling folder and renamed into place, so concurrent callers
    (several Ray workers) never see a half-written set.
    """

    dst = os.path.abspath(os.path.join(workdir, DEMO_DIRNAME))
    if os.path.isfile(os.path.join(dst, MANIFEST_NAME)):
        return dst
    train, val = demo_image_paths()
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{DEMO_DIRNAME}-", dir=os.path.dirname(dst))
    try:
        write_shards(train, tmp, shard_size=4, val_fraction=0.0, seed=0, min_size=128,
                     parallel="none", progress=False, val_sources=val)
        if os.path.isdir(dst) and not os.path.isfile(os.path.join(dst, MANIFEST_NAME)):
            shutil.rmtree(dst, ignore_errors=True)  # leftover of an interrupted build
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
        try:
            os.rename(tmp, dst)
        except OSError:
            if not os.path.isfile(os.path.join(dst, MANIFEST_NAME)):  # not a concurrent winner
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst

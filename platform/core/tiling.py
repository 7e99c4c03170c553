"""Any image size in bounded memory: overlapping tiles, blended back without seams.

The tiling core, on the ground floor (numpy only) so that both floors above can use it:
serving (``raygan.deploy.tiling``, ``deploy/app.py``) and evaluation
(``raygan.platform.evaluation``: whole-image scores of generators whose memory grows
faster than the image, DAGAN's self-attention).

An image is cut into tiles of one size (``tile`` input pixels a side, or the image's side
where that is smaller), overlapping by ``overlap`` pixels; the last tile of a row or column
is shifted back to end at the image edge, so every tile has the same shape (tiles of equal
size from concurrent requests batch together). Each restored tile is weighted by a ramp that rises across the
overlap (a linear cross-fade; 1 at the image's own borders), and the weighted sum is divided
by the summed weights. Tile borders, where a convolution sees padding instead of neighbours,
therefore carry little weight and the result matches whole-image inference up to a small
tolerance (tests/test_tiling.py measures it) whenever ``overlap`` covers the generator's
receptive field; generators with global operations (channel attention pools over the whole
input) match only approximately.

The generator only ever sees ``tile``-sized inputs, so its memory is bounded by the tile
size whatever the image; what grows with the image is the float32 output accumulator.
"""

from __future__ import annotations

from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of equal tiles covering ``length`` (>= tile) with at least ``overlap``."""
    if length <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(n: int, fade: int, fade_start: bool, fade_end: bool) -> np.ndarray:
    w = np.ones(n, dtype=np.float32)
    if fade > 0:
        r = (np.arange(fade, dtype=np.float32) + 0.5) / fade
        if fade_start:
            w[:fade] = np.minimum(w[:fade], r)
        if fade_end:
            w[n - fade:] = np.minimum(w[n - fade:], r[::-1])
    return w


class TilePlan:
    """The tiles of one (H, W, C) uint8 image and the blend of their restored outputs.

    Tiles are ``min(tile, H) x min(tile, W)``: an image that fits in one tile goes through
    whole, and every tile of an image has the same shape. ``scale`` is the output/input size
    ratio (SR); the generator's own size multiple is met by the restorer's reflect padding.
    """

    def __init__(self, height: int, width: int, tile: int, overlap: int, scale: int = 1):
        if tile <= 0 or overlap < 0:
            raise ValueError(f"tile must be > 0 and overlap >= 0, got {tile}, {overlap}")
        self.height, self.width, self.scale = int(height), int(width), int(scale)
        self.th, self.tw = min(int(tile), self.height), min(int(tile), self.width)
        self.overlap = min(int(overlap), int(tile) // 2)
        self.ys = tile_starts(self.height, self.th, self.overlap)
        self.xs = tile_starts(self.width, self.tw, self.overlap)
        self.boxes: List[Tuple[int, int]] = [(y, x) for y in self.ys for x in self.xs]
        self._acc: Optional[np.ndarray] = None
        self._norm: Optional[np.ndarray] = None

    def __len__(self) -> int:
        return len(self.boxes)

    def tiles(self, image: np.ndarray) -> Iterator[np.ndarray]:
        """The input tiles in order (views of ``image``: no copies)."""
        for y, x in self.boxes:
            yield image[y:y + self.th, x:x + self.tw]

    def _weights(self, y: int, x: int) -> np.ndarray:
        s, fade = self.scale, self.overlap * self.scale
        wy = _ramp(self.th * s, fade, y > 0, y + self.th < self.height)
        wx = _ramp(self.tw * s, fade, x > 0, x + self.tw < self.width)
        return wy[:, None] * wx[None, :]

    def add(self, index: int, restored: np.ndarray) -> None:
        """Blend the restored tile ``index`` ((th*scale, tw*scale, C) float in [0, 1])."""
        s = self.scale
        if restored.shape[:2] != (self.th * s, self.tw * s):
            raise ValueError(f"tile {index}: expected a {self.th * s}x{self.tw * s} output, "
                             f"got {restored.shape[:2]}")
        if self._acc is None:
            shape = (self.height * s, self.width * s, restored.shape[2])
            self._acc = np.zeros(shape, dtype=np.float32)
            self._norm = np.zeros(shape[:2] + (1,), dtype=np.float32)
        y, x = self.boxes[index]
        ys, xs = slice(y * s, (y + self.th) * s), slice(x * s, (x + self.tw) * s)
        if len(self.boxes) == 1:  # one tile: nothing to blend
            self._acc[ys, xs] = restored
            self._norm[ys, xs] = 1.0
            return
        w = self._weights(y, x)[..., None]
        self._acc[ys, xs] += restored.astype(np.float32) * w
        self._norm[ys, xs] += w

    def result_float(self) -> np.ndarray:
        """The blended image, ``(H*scale, W*scale, C)`` float32 in [0, 1] (evaluation scores
        it unrounded, as it scores a whole-image output)."""
        if self._acc is None:
            raise ValueError("no tile was added")
        return np.clip(self._acc / np.maximum(self._norm, 1e-8), 0, 1)

    def result(self) -> np.ndarray:
        """The blended image, ``(H*scale, W*scale, C)`` uint8."""
        return (self.result_float() * 255 + 0.5).astype(np.uint8)


def restore_tiled(image: np.ndarray, restore_batch: Callable[[Sequence[np.ndarray]], Sequence[np.ndarray]],
                  tile: int, overlap: int, scale: int = 1, batch: int = 4) -> np.ndarray:
    """Restore ``image`` (H, W, C) uint8 in tiles; ``restore_batch`` maps a list of uint8
    tiles to their restored float outputs. In-process form of what the ingress does."""
    plan = TilePlan(image.shape[0], image.shape[1], tile, overlap, scale)
    tiles = list(plan.tiles(image))
    for i in range(0, len(tiles), batch):
        for j, out in enumerate(restore_batch(tiles[i:i + batch])):
            plan.add(i + j, out)
    return plan.result()

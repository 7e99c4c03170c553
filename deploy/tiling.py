"""Serving's tiled restoration: any image size in bounded memory.

The tiling core (:class:`TilePlan`, :func:`tile_starts`, :func:`restore_tiled`) lives on the
ground floor, in :mod:`raygan.platform.core.tiling`, because evaluation (floor 4) restores whole
images through it too and may not import ``deploy/`` (docs/architecture.md). Serving imports
it from here, as before.
"""

from raygan.platform.core.tiling import TilePlan, restore_tiled, tile_starts

__all__ = ["TilePlan", "restore_tiled", "tile_starts"]

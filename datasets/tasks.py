"""Importing this module registers every built-in data task in ``raygan.platform.core.registry.TASKS``.

The generic tasks (jpeg, bitdepth, sr, inpaint, edges) live in ``degradations``; the tasks
that read extra record fields live beside their ingesters (``face_sr`` in ``faces``,
``paired`` in ``paired``). A new task registers itself with ``@register_task`` in its own
module and is added to the imports below.
"""

from raygan.datasets import degradations, faces, paired  # noqa: F401

__all__ = ["degradations", "faces", "paired"]

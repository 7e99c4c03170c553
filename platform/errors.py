"""Every error raygan raises on purpose, in one tiny module any floor may import.

Each names what went wrong and where (the config key, the URI, the file), so a user can act
on the message alone. ``ValueError`` subclasses are bad input; ``RuntimeError`` subclasses
are a failed operation on good input.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names the dotted key."""


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI or the endpoint.

    ``transient``: the storage was unreachable, timed out, throttled or answered 5xx (worth
    retrying); ``missing``: the object or file does not exist."""

    def __init__(self, message: str = "", *, transient: bool = False, missing: bool = False):
        super().__init__(message)
        self.transient, self.missing = transient, missing


class StorageUnavailable(StorageError):
    """Storage stayed unreachable for longer than ``storage.outage_budget_s``."""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or not raygan's."""


class ModelRefError(CheckpointError):
    """A model reference (models:/..., runs:/..., a checkpoint URI) that does not resolve."""


class ShardError(ValueError):
    """Bad shard input or output (no images, bad key, missing manifest); names the place."""


class SkipRecord(ValueError):
    """A record cannot make a sample (too small, missing field); the pipeline counts it."""


class TooManySkipped(RuntimeError):
    """More than ``data.max_skip_fraction`` of a worker's records were skipped."""


class EvaluationError(ValueError):
    """An evaluation request cannot be served (bad protocol, model/set mismatch, no images)."""


class WeightsNotFoundError(FileNotFoundError):
    """``"auto"`` weights are not in the torch hub cache (and are never downloaded)."""

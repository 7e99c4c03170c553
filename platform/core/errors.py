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


class CapacityError(RuntimeError):
    """The cluster did not offer the run's workers within ``ray.capacity_wait_s``."""


class EvaluationError(ValueError):
    """An evaluation request cannot be served (bad protocol, model/set mismatch, no images)."""


class WeightsNotFoundError(FileNotFoundError):
    """``"auto"`` weights are not in the torch hub cache (and are never downloaded)."""


#: what raygan raises on purpose (with the message a user acts on)
OWN_ERRORS = (ConfigError, StorageError, CheckpointError, ShardError, SkipRecord, TooManySkipped,
              EvaluationError, WeightsNotFoundError, CapacityError)


def error_line(exc: BaseException, remote_frame: str = "") -> "tuple[str, int]":
    """How a command reports ``exc`` in one line: ``(line, exit status)``.

    raygan's own errors (:data:`OWN_ERRORS`) and anything raised by raygan's code itself
    (the innermost frame is in a ``raygan`` module: its messages name what they are about)
    give their message and status 2. Anything else, a ``FileNotFoundError`` from deep
    inside a library say, gives its type, the file it names (or that it names none), the
    frame that raised it and the last raygan frame on the way, and status 1: enough to
    report it. ``RAYGAN_TRACEBACK=1`` prints the whole traceback as well (to stderr).
    ``remote_frame`` names where an error raised in another process came from when its own
    frames did not travel with it (a Ray Train worker's, read from Ray's traceback text)."""
    import os
    import sys
    import traceback

    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb)
        tb = tb.tb_next

    def module(t) -> str:
        return str(t.tb_frame.f_globals.get("__name__", "?"))

    def ours(t) -> bool:
        return module(t) == "raygan" or module(t).startswith("raygan.")

    if isinstance(exc, OWN_ERRORS) or (frames and ours(frames[-1])):
        return str(exc) or type(exc).__name__, 2
    if os.environ.get("RAYGAN_TRACEBACK", "") not in ("", "0"):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    parts = [f"{type(exc).__name__}: {message}" if message else type(exc).__name__]
    filename = getattr(exc, "filename", None)
    if isinstance(exc, OSError):
        parts.append(f"file: {filename}" if filename else "the error names no file")
    if remote_frame and not frames:
        parts.append(remote_frame)
    if frames:
        t = frames[-1]
        code = t.tb_frame.f_code
        parts.append(f"raised in {module(t)} ({code.co_filename}:{t.tb_lineno}, {code.co_name})")
        mine = [t for t in frames if ours(t)]
        if mine:
            parts.append(f"called from {module(mine[-1])} line {mine[-1].tb_lineno}")
    if isinstance(exc, FileNotFoundError):
        try:
            os.getcwd()
        except FileNotFoundError:
            parts.append("the current working directory no longer exists (removed under the "
                         "process: under `ray job submit`, Ray's job working directory)")
    parts.append("RAYGAN_TRACEBACK=1 shows the traceback")
    return "; ".join(parts), 1

"""One channel for a run's counters, from where things happen to the report, MLflow and the
summary: records skipped as unusable, and storage retries with the seconds they waited.

- A data-loading process (a DataLoader worker, or the training process itself) counts into
  its stream's own :class:`Counters`; what it counted since the previous sample rides with
  the next sample as ``sample["counters"]`` (a DataLoader worker has no other way back), and
  :meth:`Counters.merge` adds a collated batch's to the rank's counters.
- Every other storage call of a process (Ray Train's checkpoint I/O through
  ``storage.RetryingFileSystem``, MLflow logging, validation reads) counts into
  :data:`PROCESS`; a run reports what :data:`PROCESS` gained since the run started.
- At each validation the rank's counters are summed over the ranks (:meth:`Counters.reduce`)
  into the reported metrics ``skipped_records``, ``storage_retries`` and ``storage_wait_s``.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping

#: every counter, in the order they are all-reduced and reported
NAMES = ("skipped_records", "storage_retries", "storage_wait_s")
#: those reported as integers
INTEGER = ("skipped_records", "storage_retries")


class Counters:
    """Named, additive run counters (:data:`NAMES`)."""

    def __init__(self, values: Mapping[str, float] = ()):
        self.values: Dict[str, float] = dict.fromkeys(NAMES, 0.0)
        self.merge(values)

    def add(self, name: str, amount: float = 1) -> None:
        if name not in self.values:
            raise KeyError(f"unknown counter {name!r}: one of {', '.join(NAMES)}")
        self.values[name] += float(amount)

    def storage_wait(self, seconds: float) -> None:
        """One storage retry, after waiting ``seconds`` (storage.OutageClock calls this)."""
        self.add("storage_retries")
        self.add("storage_wait_s", seconds)

    def merge(self, other: Any) -> "Counters":
        """Adds ``other``: Counters, or a mapping of names to numbers or tensors (a collated
        batch's ``counters``: one value per sample, summed)."""
        items = other.values.items() if isinstance(other, Counters) else dict(other).items()
        for name, value in items:
            self.add(name, float(value.sum()) if hasattr(value, "sum") else float(value))
        return self

    def since(self, before: "Counters") -> "Counters":
        """What was counted after ``before`` (a :meth:`copy` taken earlier)."""
        return Counters({k: v - before.values[k] for k, v in self.values.items()})

    def copy(self) -> "Counters":
        return Counters(self.values)

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def reduce(self) -> Dict[str, float]:
        """The counters summed over the ranks of the process group (this rank's alone when
        none is initialised), integers where they count events."""
        import torch

        totals = torch.tensor([self.values[n] for n in NAMES], dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        return {n: int(round(float(v))) if n in INTEGER else float(v) for n, v in zip(NAMES, totals)}


#: this process's storage retries outside the data stream (see the module docstring)
PROCESS = Counters()

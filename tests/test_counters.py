"""The run's counters (platform/core/counters.py): a collated batch's per-sample counts add up
exactly, a rank without a process group reports its own, and a misspelt counter is an error."""
import pytest
import torch
from torch.utils.data import default_collate

from raygan.platform.core.counters import NAMES, Counters


def test_a_collated_batch_adds_every_samples_counts():
    samples = [{"counters": {"skipped_records": s, "storage_retries": r, "storage_wait_s": w}}
               for s, r, w in ((2, 0, 0.0), (0, 1, 0.25), (3, 1, 0.5))]
    batch = default_collate(samples)  # what the trainer pops from each DataLoader batch
    run = Counters().merge(batch["counters"]).merge(batch["counters"])
    assert run.values == {"skipped_records": 10.0, "storage_retries": 4.0, "storage_wait_s": 1.5}
    assert run.reduce() == {"skipped_records": 10, "storage_retries": 4, "storage_wait_s": 1.5}
    assert tuple(run.reduce()) == NAMES


def test_since_counts_only_what_came_after():
    c = Counters({"storage_retries": 2})
    before = c.copy()
    c.storage_wait(0.75)
    assert c.since(before).values == {"skipped_records": 0.0, "storage_retries": 1.0, "storage_wait_s": 0.75}
    assert before["storage_retries"] == 2  # a copy, not a view
    with pytest.raises(KeyError, match="unknown counter 'retries'"):
        c.add("retries")
    assert Counters().merge({"skipped_records": torch.tensor([1, 2])})["skipped_records"] == 3

"""jobs/bench_train.py: its ratio of step to conv peak (the median of interleaved rounds, and the
stricter fastest step over the highest peak of any round), its FLOP count, the step's kernels
replayed alone, and the allocator setting that keeps its conv peak from paying for fresh
pages."""
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def rounds(monkeypatch):
    """``rounds(peaks, steps)``: step_vs_peak over rounds whose peak (FLOP/s) and fastest
    step (s) are given, for a step of 100 FLOP."""
    monkeypatch.syspath_prepend(str(ROOT / "jobs"))
    import bench_train

    class Engine:
        def train_step(self, batch):
            pass

    def run(peaks, steps):
        peaks, steps = iter(peaks), iter(steps)
        monkeypatch.setattr(bench_train, "conv_peak_flops", lambda threads, repeats: next(peaks))
        monkeypatch.setattr(bench_train, "time_steps", lambda engine, batch, n, warmup: [next(steps)])
        return bench_train.step_vs_peak(Engine(), None, flops=100, threads=1, rounds=3)

    return run


def test_step_vs_peak_pairs_each_step_with_its_own_rounds_peak(rounds):
    # per round: 100/1/100, 100/0.5/200, 100/2/50: each 1.0, though peaks and steps moved 4x
    median, low, high, peak, strict = rounds([100.0, 200.0, 50.0], [1.0, 0.5, 2.0])
    assert (median, low, high, peak) == (1.0, 1.0, 1.0, 100.0)
    assert strict == pytest.approx(1.0)  # the fastest step (0.5 s) over the highest peak (200)


def test_strict_ratio_takes_the_fastest_step_and_the_highest_peak_of_any_round(rounds):
    median, low, high, peak, strict = rounds([200.0, 100.0, 100.0], [1.0, 1.0, 0.25])
    assert (low, median, high, peak) == (0.5, 1.0, 4.0, 100.0)
    assert strict == pytest.approx(100 / 0.25 / 200)  # 2.0, from two different rounds


def test_step_flops_counts_a_split_step_whole(monkeypatch):
    # a FLOP counter sees only its own thread: a step split over threads (train.batch_threads)
    # would count nothing without bench_train turning the split off while it counts
    monkeypatch.syspath_prepend(str(ROOT / "jobs"))
    import bench_train
    from test_engine import batch, tiny_cfg

    from raygan.platform.engine import GANEngine

    torch.set_num_threads(2)  # (a split needs a torch thread per shard)
    whole = bench_train.step_flops(GANEngine(tiny_cfg("data.batch=4")), batch(n=4))
    split_engine = GANEngine(tiny_cfg("data.batch=4", "train.batch_threads=2"))
    assert split_engine.batch_threads == 2
    assert bench_train.step_flops(split_engine, batch(n=4)) == whole > 0
    assert split_engine.batch_threads == 2  # and the engine splits again after counting


def test_kernels_alone_replays_every_kernel_the_step_counts(monkeypatch):
    # the step taken apart: each recorded convolution and FC product, run again alone on
    # tensors of its shapes, adds up to the FLOPs the step's counter counts (a kernel missed,
    # counted once instead of per call, or replayed at another shape would differ)
    monkeypatch.syspath_prepend(str(ROOT / "jobs"))
    import bench_train
    from test_engine import batch, tiny_cfg

    from raygan.platform.engine import GANEngine
    from raygan.platform.plan import with_settings

    torch.set_num_threads(2)
    engine = GANEngine(bench_train.gan_phase(tiny_cfg("data.batch=4", "train.batch_threads=2")))
    calls = bench_train.record_kernels(engine, batch(n=4))
    ops = {str(op) for op, *_ in calls.values()}
    assert {"aten.convolution.default", "aten.convolution_backward.default"} <= ops
    assert any(n > 1 for *_, n in calls.values())  # the same call twice: one signature, counted twice
    assert engine.batch_threads == 2  # recorded unsplit (a split's threads are not seen), then split again
    flops, seconds = bench_train.kernels_alone(calls, repeats=1)
    assert flops == bench_train.step_flops(engine, batch(n=4)) > 0 and seconds > 0
    l1 = GANEngine(with_settings(tiny_cfg("data.batch=4"), **{"train.pretrain_steps": 10**9}))
    l1_flops, _ = bench_train.kernels_alone(bench_train.record_kernels(l1, batch(n=4)), repeats=1)
    assert 0 < l1_flops == bench_train.step_flops(l1, batch(n=4)) < flops  # no D in an L1 step


# A 16 MiB tensor, then glibc's bytes in mmapped blocks (mallinfo2's hblkhd) while it lives
# and after it is freed, printed by a fresh process (mallopt is process-wide: not this one's).
_MMAPPED_PROBE = """
import ctypes, json, sys
sys.path.insert(0, {jobs!r})
import torch
import bench_train

class MallInfo2(ctypes.Structure):
    _fields_ = [(k, ctypes.c_size_t) for k in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
steady = bench_train.steady_allocator() if sys.argv[1] == "steady" else None
before = libc.mallinfo2().hblkhd
x = torch.ones(16 << 20, dtype=torch.uint8)
during = libc.mallinfo2().hblkhd
print(json.dumps({{"steady": steady, "mmapped_for_tensor": during - before}}))
"""


def _mmapped_for_a_tensor(mode: str) -> dict:
    import json
    import subprocess
    import sys

    import ctypes

    try:
        has_mallinfo2 = hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:  # not glibc (macOS, musl): its allocator is another one
        has_mallinfo2 = False
    if not has_mallinfo2:
        pytest.skip("needs glibc 2.33 or later (mallinfo2)")
    out = subprocess.run([sys.executable, "-c", _MMAPPED_PROBE.format(jobs=str(ROOT / "jobs")), mode],
                         capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_steady_allocator_serves_a_large_tensor_from_the_heap():
    # without it glibc maps a fresh 16 MiB block (the conv peak's output paid for fresh pages
    # at every call, depending on what the process had freed before: a peak 1.5x too low)
    plain = _mmapped_for_a_tensor("plain")
    assert plain["mmapped_for_tensor"] >= 16 << 20
    steady = _mmapped_for_a_tensor("steady")
    assert steady["steady"] is True
    assert steady["mmapped_for_tensor"] == 0


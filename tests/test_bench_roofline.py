"""The roofline helpers of benchmarks/bench_planning.py: byte and FLOP counts from shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ttlib.model import GPTConfig, TrajectoryGPT

from conftest import load_benchmark

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_planning")


def test_pass_bytes_by_hand(bench):
    # one token for 4 rows in 2 groups; 10 keys cached, the first 6 shared per group
    L, E, K1, td = 2, 8, 5, 3
    b = bench.pass_bytes(4, 1, cached=10, shared=6, groups=2, L=L, E=E, n_out=K1,
                         transition_dim=td)  # fmt: skip
    assert b["weights"] == 4 * (L * (12 * E * E + 13 * E) + 2 * E + K1 * E)
    # per layer: prefix 6 keys x 2 groups, 5 own keys (4 earlier + the new one) x 4 rows
    assert b["kv_read"] == 4 * L * 2 * E * (2 * 6 + 4 * 5)
    assert b["kv_write"] == 4 * L * 2 * E * 4
    assert b["io"] == 4 * 4 * (2 * E + K1)
    # a window pass uses every head
    w = bench.pass_bytes(4, 3, cached=0, shared=0, groups=4, L=L, E=E, n_out=K1, transition_dim=td)
    assert w["weights"] - b["weights"] == 4 * (td - 1) * K1 * E
    assert w["kv_read"] == w["kv_write"] == 4 * L * 2 * E * 4 * 3


def test_roofline_bound(bench):
    # 1 GFLOP over 1 GB in 1 s against 100 GFLOP/s and 10 GB/s: memory bound at 10 GFLOP/s
    r = bench.roofline(1e9, 1e9, 1.0, peak=100e9, bandwidth=10e9)
    assert r["flop_per_byte"] == 1.0
    assert r["bound_by"] == "memory"
    assert r["roofline_bound_gflop_s"] == pytest.approx(10.0)
    assert r["fraction_of_roofline_bound"] == pytest.approx(0.1)
    assert r["fraction_of_bandwidth"] == pytest.approx(0.1)
    c = bench.roofline(1e12, 1e9, 20.0, peak=100e9, bandwidth=10e9)
    assert c["bound_by"] == "compute"
    assert c["fraction_of_roofline_bound"] == pytest.approx(0.5)


def test_counter_sees_the_shared_prefix_once_per_group(bench, monkeypatch):
    clock = iter(range(100))  # every reading of the CPU clock is one second after the last
    monkeypatch.setattr(bench.time, "process_time", lambda: float(next(clock)))
    torch.manual_seed(0)
    cfg = GPTConfig(observation_dim=2, action_dim=1, n_layer=2, n_head=2, n_embd=16, n_bins=7)
    model = TrajectoryGPT(cfg).eval()
    c = cfg
    counter = bench.FlopCounter(model, c.n_layer, c.n_embd, c.n_bins + 1, c.transition_dim)
    cache = model.new_cache(2)
    with torch.no_grad():
        model(torch.randint(0, c.n_bins, (2, 6)), cache=cache)  # 2 episodes, 6 tokens
        cache.share_prefix(3)  # 3 beams per episode
        model(torch.randint(0, c.n_bins, (6, 1)), cache=cache)
    counter.close()
    assert counter.passes == 2
    single, multi = counter.kinds["single_token"], counter.kinds["multi_token"]
    assert single["passes"] == multi["passes"] == 1
    E, L = c.n_embd, c.n_layer
    assert multi["kv_read"] == 4 * L * 2 * E * 2 * 6
    assert single["kv_read"] == 4 * L * 2 * E * (2 * 6 + 6 * 1)
    assert single["flops"] == bench.pass_flops(6, 1, 7, L, E, c.n_bins + 1)
    assert counter.bytes == sum(k[p] for k in (single, multi) for p in bench.BYTE_PARTS)
    # each pass is timed from its start to its end: one tick of the fake clock each
    assert single["cpu_s"] == multi["cpu_s"] == 1.0


def test_reorder_counter_counts_and_restores(bench):
    from ttlib.kvcache import KVCache

    cfg = GPTConfig(observation_dim=2, action_dim=1, n_layer=2, n_head=2, n_embd=16, n_bins=7)
    model = TrajectoryGPT(cfg).eval()
    cache = model.new_cache(2)
    with torch.no_grad():
        model(torch.randint(0, cfg.n_bins, (2, 5)), cache=cache)
    original = KVCache.select
    with bench.ReorderCounter() as r:
        cache.select(torch.tensor([1, 1, 0]))
    assert KVCache.select is original
    assert r.calls == 1
    assert r.bytes == 2 * 2 * cfg.n_layer * 3 * 5 * cfg.n_embd * 4


def test_memory_bandwidth_counts_a_read_once_and_a_copy_twice(bench, monkeypatch):
    clock = iter(range(10_000))  # every timed block takes one second of the fake CPU clock
    monkeypatch.setattr(bench.time, "process_time", lambda: float(next(clock)))
    bw = bench.memory_bandwidth((1,), reps=1)["1"]
    # 1 MiB, repeated 256 times per timing: 256 MiB read (sum) in 1 s; copy reads and writes
    assert bw["read_gb_s"] == pytest.approx(256 * 2**20 / 1e9)
    assert bw["copy_gb_s"] == pytest.approx(2 * 256 * 2**20 / 1e9)


def test_performance_page_reads_the_roofline_files():
    page = (ROOT / "book" / "performance.md").read_text()
    for name in ("roofline.csv", "memory_bandwidth.csv", "roofline.svg"):
        assert f"../results/benchmarks/{name}" in page
        assert (ROOT / "results" / "benchmarks" / name).is_file()


def test_window_effect_summary_pairs_episodes_by_seed():
    plot = load_benchmark("plot")
    rows = [
        {"planner": "ttlib", "env_seed": 0, "return": 3.0},
        {"planner": "ttlib", "env_seed": 1, "return": 5.0},
        {"planner": "original", "env_seed": 1, "return": 1.0},
        {"planner": "original", "env_seed": 0, "return": 2.0},
        {"planner": "ttlib", "env_seed": 2, "return": 9.0},  # the original did not run seed 2
    ]
    ours, theirs, paired = plot.window_effect_summary(rows)
    assert (ours["episodes"], ours["mean"]) == (3, 5.67)
    assert (theirs["episodes"], theirs["mean"], theirs["se"]) == (2, 1.5, 0.5)
    assert paired["what"].startswith("paired") and paired["episodes"] == 2
    assert (paired["mean"], paired["se"]) == (2.5, 1.5)  # differences 1 and 4

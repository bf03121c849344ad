"""The step bound of benchmarks/bench_training.py: its GEMMs are exactly the model's linear
FLOPs, and the bound is the model's FLOPs over attention plus those GEMMs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ttlib.experiments.compute_fit import train_flops_per_token

from conftest import load_benchmark


def test_the_bound_times_every_linear_flop_once_and_adds_attention(monkeypatch):
    monkeypatch.syspath_prepend(Path(__file__).resolve().parent.parent / "benchmarks")
    bench = load_benchmark("bench_training")  # it imports bench_planning from its folder
    calls = []
    monkeypatch.setattr(bench, "cpu_seconds", lambda fn, reps: calls.append(fn) or 1.0)
    peak = 1e9
    out = bench.step_bound("cpu_4x64_b32", {"fp32": peak})
    E, bs, _ = bench.SETTINGS["cpu_4x64_b32"]
    L, K1, T = 4, 101, 10 * (17 + 6 + 2) - 1
    # one attention timing (times L), 3 products (y, dX, dW) of 4 layer GEMMs and the heads
    assert len(calls) == 1 + 3 * 5
    assert out["attention_cpu_s"] == L and out["gemm_cpu_s"] == 3 * 4 * L + 3
    linear_flops = 6 * (12 * L * E * E + K1 * E) * bs * T  # the FLOP formula's linear part
    assert out["gemm_share_of_peak"] * peak * out["gemm_cpu_s"] == pytest.approx(linear_flops)
    flops = train_flops_per_token(bench.GPTConfig(17, 6, n_embd=E)) * bs * T
    assert out["bound_share_of_fp32_peak"] == pytest.approx(flops / (L + 51) / peak)

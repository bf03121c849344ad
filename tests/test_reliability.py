"""Interrupted runs, bad input and unsafe loading: nothing is lost, every error is one line."""

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ttlib import io
from ttlib.train import load_checkpoint

from conftest import linear_episodes, write_minari_dataset

TTLIB = [sys.executable, "-m", "ttlib.cli"]


def run_cli(*args, **kw):
    return subprocess.run([*TTLIB, *args], capture_output=True, text=True, timeout=120, **kw)


@pytest.mark.slow
def test_unknown_dataset_is_one_line_and_nonzero():
    r = run_cli("train", "--dataset", "ttlib/hoper/medium-v0", "--out", "x")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "ttlib/hoper/medium-v0" in r.stderr


def test_killed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    io.save_torch({"w": torch.ones(3)}, path)

    def dying_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped in the middle of writing

    monkeypatch.setattr(io.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_torch({"w": torch.zeros(3)}, path)
    assert torch.equal(io.load_torch(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary left behind


@pytest.mark.slow
def test_training_killed_by_a_signal_resumes_to_the_same_weights(tmp_path):
    write_minari_dataset("ttlibtest/linear/medium-v0", linear_episodes(30, 30))
    common = [
        "train",
        "--dataset",
        "ttlibtest/linear/medium-v0",
        "--n-bins",
        "10",
        "--n-transitions",
        "3",
        "--steps",
        "60",
        "--batch-size",
        "16",
        "--n-layer",
        "1",
        "--n-head",
        "2",
        "--n-embd",
        "16",
        "--checkpoint-every",
        "5",
    ]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    ref = run_cli(*common, "--out", str(tmp_path / "ref"), env=env)
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*TTLIB, *common, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _, _, partial = load_checkpoint(out)  # what survived the kill loads as a valid checkpoint
    assert 0 < partial["step"] <= 60
    resumed = run_cli(*common, "--out", str(out), env=env)
    assert resumed.returncode == 0, resumed.stderr
    a, _, ca = load_checkpoint(tmp_path / "ref")
    b, _, cb = load_checkpoint(out)
    assert ca["step"] == cb["step"] == 60
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_every_torch_load_in_the_package_is_weights_only():
    pkg = Path(__file__).resolve().parents[1] / "ttlib"
    offenders = []
    for f in pkg.rglob("*.py"):
        for m in re.finditer(r"torch\.load\(([^)]*)\)", f.read_text()):
            if "weights_only=True" not in m.group(1):
                offenders.append(f"{f.name}: {m.group(0)}")
    assert not offenders, offenders


# ------------------------------------------------------------------ planning memory
def _planner_setup():
    from ttlib.discretize import make_discretizer
    from ttlib.model import GPTConfig, TrajectoryGPT

    torch.manual_seed(0)
    cfg = GPTConfig(2, 1, n_bins=8, n_transitions=3, n_layer=2, n_head=2, n_embd=16, dropout=0.0)
    model = TrajectoryGPT(cfg).eval()
    x = torch.randn(300, cfg.transition_dim).numpy()
    return model, make_discretizer("uniform", cfg.n_bins).fit(x)


@pytest.mark.parametrize("rows", [1, 12, 256])
def test_memory_estimate_of_one_cache_is_what_the_model_allocates(rows):
    from ttlib.memory import estimate_planning_memory
    from ttlib.search import PlannerConfig

    model, _ = _planner_setup()
    est = estimate_planning_memory(model.config, PlannerConfig(beam_width=rows, n_expand=1))
    cache = model.new_cache(rows)
    assert est.rows == rows and est.cache == cache.k.nbytes + cache.v.nbytes
    assert est.weights == 4 * model.n_params


def test_memory_estimate_matches_the_caches_beam_search_allocates(monkeypatch):
    """Track the KV caches of a real plan, including the moments when beams are copied."""
    from ttlib.kvcache import KVCache
    from ttlib.memory import estimate_planning_memory
    from ttlib.search import PlannerConfig, beam_search

    model, disc = _planner_setup()
    peak = {"cache": 0, "copying": 0}
    init = KVCache.__init__

    def held(cache):  # the row buffers
        return cache.k.nbytes + cache.v.nbytes

    def tracked_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        peak["cache"] = max(peak["cache"], held(self))

    def tracked(method):
        def call(self, *args, **kwargs):
            before = held(self)
            out = method(self, *args, **kwargs)
            after = held(self)
            peak["copying"] = max(peak["copying"], before + after)  # at most both at once
            peak["cache"] = max(peak["cache"], after)
            return out

        return call

    monkeypatch.setattr(KVCache, "__init__", tracked_init)
    # Every method that allocates row buffers: the widest ones are those share_prefix makes.
    for name in ("select", "share_prefix"):
        monkeypatch.setattr(KVCache, name, tracked(getattr(KVCache, name)))
    E, cfg = 3, PlannerConfig(horizon=4, beam_width=5, n_expand=3, max_context_transitions=1)
    td = model.config.transition_dim
    context = torch.randint(0, 8, (E, td + 2))  # one transition and the current observation
    beam_search(model, disc, context, cfg, generator=torch.Generator().manual_seed(0))
    est = estimate_planning_memory(model.config, cfg, n_episodes=E)
    # The widest cache the plan allocated is the one estimated (the 10 % margin is not needed).
    assert abs(est.cache - peak["cache"]) <= 0.1 * peak["cache"]
    assert peak["copying"] <= est.kv_peak


def test_too_large_plan_fails_at_once_with_the_estimate():
    from ttlib.memory import (
        PlanningMemoryError,
        check_planning_memory,
        estimate_planning_memory,
        format_bytes,
    )
    from ttlib.search import PlannerConfig

    model, _ = _planner_setup()
    cfg = PlannerConfig(beam_width=1_000_000, n_expand=4)
    est = estimate_planning_memory(model.config, cfg, n_episodes=20)
    start = time.perf_counter()
    with pytest.raises(PlanningMemoryError) as err:
        check_planning_memory(model.config, cfg, n_episodes=20, limit="2G")
    assert time.perf_counter() - start < 1.0
    message = str(err.value)
    assert "20 episode(s) with beam_width 1000000 × n_expand 4" in message
    assert f"needs about {format_bytes(est.total)}" in message and "limit of 2.0 GiB" in message
    small = check_planning_memory(model.config, PlannerConfig(), limit="2G")
    assert small.total == estimate_planning_memory(model.config, PlannerConfig()).total < 2**31


def test_planner_reset_refuses_too_many_episodes_before_planning(monkeypatch):
    from ttlib.memory import PlanningMemoryError
    from ttlib.search import PlannerConfig, TTPlanner

    model, disc = _planner_setup()
    planner = TTPlanner(model, disc, PlannerConfig(beam_width=64))
    monkeypatch.setenv("TTLIB_MEMORY_LIMIT", "64K")
    with pytest.raises(PlanningMemoryError, match="planning 8 episode"):
        planner.reset(8)
    monkeypatch.delenv("TTLIB_MEMORY_LIMIT")
    planner.reset(8)  # fits in the machine's default limit


def test_memory_limit_comes_from_the_argument_the_environment_or_free_ram(monkeypatch):
    from ttlib import memory

    assert memory.parse_bytes("1.5G") == 3 * 2**29 and memory.parse_bytes("512MiB") == 2**29
    assert memory.parse_bytes("1000") == 1000 and memory.parse_bytes(7) == 7
    with pytest.raises(ValueError, match="memory size"):
        memory.parse_bytes("lots")
    monkeypatch.delenv(memory.LIMIT_ENV, raising=False)
    free = memory.available_memory()
    assert free is not None and free > 0
    assert abs(memory.memory_limit() - memory.DEFAULT_FRACTION * free) < 0.05 * free
    monkeypatch.setenv(memory.LIMIT_ENV, "3M")
    assert memory.memory_limit() == 3 * 2**20
    assert memory.memory_limit("1K") == 1024


def test_evaluate_refuses_a_planner_too_big_before_making_envs():
    from ttlib.evaluate import evaluate
    from ttlib.memory import PlanningMemoryError
    from ttlib.search import PlannerConfig, TTPlanner

    model, disc = _planner_setup()
    planner = TTPlanner(model, disc, PlannerConfig(beam_width=64), memory_limit="64K")
    made = []

    def factory(**kwargs):
        made.append(kwargs)
        raise AssertionError("no env should be made")

    with pytest.raises(PlanningMemoryError, match="planning 8 episode"):
        evaluate(planner, factory, n_episodes=8, progress=False)
    assert made == []


class _ToyEnv:
    """Two-dimensional observations and one action, as _planner_setup's model expects."""

    def __new__(cls, **kwargs):
        import gymnasium as gym

        class Env(gym.Env):
            observation_space = gym.spaces.Box(-1, 1, (2,))
            action_space = gym.spaces.Box(-1, 1, (1,))

            def reset(self, seed=None, options=None):
                super().reset(seed=seed)
                return np.zeros(2, dtype=np.float32), {}

            def step(self, action):
                return np.zeros(2, dtype=np.float32), 0.0, False, False, {}

        return Env()


def test_the_planners_memory_limit_governs_evaluate_and_reset(monkeypatch):
    """A planner's own limit, not the default (the environment's, here far too small), is the
    one that evaluate's early check and reset() both use."""
    from ttlib.evaluate import evaluate
    from ttlib.memory import LIMIT_ENV, PlanningMemoryError
    from ttlib.search import PlannerConfig, TTPlanner

    model, disc = _planner_setup()
    monkeypatch.setenv(LIMIT_ENV, "64K")
    planner = TTPlanner(model, disc, PlannerConfig(beam_width=2, horizon=1))
    with pytest.raises(PlanningMemoryError):
        planner.reset(1)  # the default limit refuses
    planner = TTPlanner(model, disc, PlannerConfig(beam_width=2, horizon=1), memory_limit="4G")
    result = evaluate(planner, _ToyEnv, n_episodes=1, max_steps=2, progress=False)
    assert result.lengths[0] == 2

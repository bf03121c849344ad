"""Evaluation episodes planned together and cached one by one (the D4RL table, the compute study).

Each episode is a cache entry of its own (``<cache>/<hash of the agent>/seed<n>.json``), so a
rerun, or a longer evaluation of the same agent, computes only the episodes that are missing.
Those are planned several at a time, which costs less CPU per env step than one at a time
(1.28x less at H5/B32, 2.3x at H2/B8: results/benchmarks/eval_throughput.csv). A planner gives
every episode its own generator seeded with the episode's reset seed
(``TTPlanner(..., episode_seeds=...)``), so an episode is the one that planning it alone gives:
bitwise on a CPU (tests/test_episodes.py checks it), whichever episodes share its batch. Each
record also says how many episodes its batch had (``planned_together``), for a device where
batched products round differently.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from ttlib.evaluate import evaluate
from ttlib.experiments.cache import cache_dir, cached, config_key
from ttlib.experiments.d4rl_data import quiet_c_output
from ttlib.io import save_json
from ttlib.search import PlannerConfig, TTPlanner

log = logging.getLogger("ttlib.episodes")

EPISODES_TOGETHER = 10  # the batch eval_throughput.csv recommends; more gains little


def seed_batches(seeds: Sequence[int], together: int) -> list[list[int]]:
    """``seeds`` (ascending) as runs of consecutive seeds of at most ``together`` each:
    :func:`ttlib.evaluate.evaluate` resets its episodes with seeds ``seed, seed + 1, ...``."""
    batches: list[list[int]] = []
    for s in seeds:
        if batches and s == batches[-1][-1] + 1 and len(batches[-1]) < together:
            batches[-1].append(s)
        else:
            batches.append([s])
    return batches


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def episode_scores(
    key_obj: dict,
    make_agent: Callable[[list[int]], object],
    env: str,
    n_episodes: int,
    max_steps: int,
    first_seed: int,
    together: int = EPISODES_TOGETHER,
    cache: str = "d4rl/episodes",
) -> list[dict]:
    """Return, length and normalised score of episodes ``first_seed + i``, one cache entry each.

    ``make_agent(seeds)`` builds a fresh agent for the episodes of those reset seeds (for TT:
    :func:`tt_agent`). The episodes not cached yet are planned ``together`` at a time and
    each is cached on its own with an equal share of its batch's wall and CPU time (the
    provenance the run record lists), so a kill loses at most one batch. The entries of one
    agent share the folder ``<cache>/<hash of key_obj>`` (``key_obj`` is kept in key.json).
    """
    kind = f"{cache}/{config_key(key_obj)}"
    folder = cache_dir(*kind.split("/"))
    save_json(key_obj, folder / "key.json")
    seeds = range(first_seed, first_seed + n_episodes)
    missing = [s for s in seeds if not (folder / f"seed{s}.json").exists()]
    made: dict[int, tuple[dict, dict]] = {}
    for batch in seed_batches(missing, max(1, together)):
        started, t0, c0 = time.time(), time.perf_counter(), time.process_time()
        with quiet_c_output():  # MuJoCo's notices about HalfCheetah's XML
            res = evaluate(make_agent(batch), env, len(batch), max_steps, batch[0], progress=False)
        n = len(batch)
        wall, cpu = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
        share = {"started_utc": _utc(started), "wall_seconds": round(wall, 3)}
        share |= {"cpu_seconds": round(cpu, 3), "planned_together": n}
        for i, seed in enumerate(batch):
            rec = {"seed": seed, "return": float(res.returns[i]), "length": int(res.lengths[i])}
            # seconds: the episode's share of its batch's wall time, so that the sum over a
            # table's episodes is what they cost (a rerun from the cache is fast)
            rec |= {"score": float(res.scores[i]), "seconds": round(wall, 1)}
            made[seed] = (rec | {"planned_together": n}, share)
            log.info("%s seed %d: score %.1f in %d steps", kind, seed, rec["score"], rec["length"])
    rows = []
    for seed in seeds:
        rec, share = made.get(seed, (None, None))
        # cached() keeps the commit, start and time of the code that computed each episode
        # beside it (seed<n>.provenance.json) and lists it in run.json
        path = cached(
            kind,
            None,
            lambda p, rec=rec: save_json(rec, p),
            lambda p: p,
            name=f"seed{seed}",
            suffix=".json",
            episodes=1,
            shared=share,
        )
        rec = json.loads(path.read_text())
        rows.append({k: rec.get(k) for k in ("seed", "return", "length", "score", "seconds")})
    return rows


def tt_agent(model, discretizer, planner: PlannerConfig) -> Callable[[list[int]], TTPlanner]:
    """``make_agent`` of :func:`episode_scores` for a TT model: each episode of a batch draws
    its samples from a generator seeded with its reset seed, as a planner of that seed alone
    would (the D4RL table's episodes were planned one at a time with ``seed`` = reset seed)."""

    def make(seeds: list[int]) -> TTPlanner:
        return TTPlanner(model, discretizer, replace(planner, seed=seeds[0]), episode_seeds=seeds)

    return make

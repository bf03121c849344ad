"""The compute study: planning score against training tokens, on runs that later sessions extend.

Every run (a dataset, a training seed, a model size) trains with the ``constant`` learning
rate (:class:`ttlib.train.TrainConfig`): its rate never depends on how long the run is meant
to be, so its weights after N tokens are a model "trained for N tokens", and a later session
extends the same run bit for bit instead of starting again. The weights are kept in fp16 at
the preset's token counts, beside the run's latest full checkpoint (optimiser and random
streams: what resuming needs), under ``results/compute_study/models/`` (committed for the cpu
preset; smoke runs write under build/). Each kept point is evaluated on ``episodes`` episodes
with the D4RL table's planner, planned together and cached one by one
(:mod:`ttlib.experiments.episodes`); BC, IQL and the data's own episodes are the reference
lines, from the D4RL table's caches where its settings match. A larger model keeps its
weights where its training FLOPs equal the base model's at the listed token counts.

The notebook's work can run without it, one process per dataset (resumable: kill it and run
it again; it goes on from the last checkpoint)::

    python -m ttlib.experiments.compute_study --preset cpu --only hopper [--train-only]

or as Ray tasks on one machine's cores or a cluster (``--ray local``, ``--ray HEAD:6379``).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from ttlib.data import SequenceDataset, data_fingerprint, load_episodes
from ttlib.errors import ConfigError
from ttlib.experiments.cache import (
    code_version,
    config_key,
    note_model,
    note_training,
    planner_identity,
)
from ttlib.experiments.compute_fit import paper_tokens, train_flops_per_token
from ttlib.experiments.d4rl_data import dataset_config
from ttlib.experiments.d4rl_report import data_episode_scores
from ttlib.experiments.d4rl_table import (
    BASELINES,
    EVAL_SEED,
    BaselineSpec,
    baseline_cached,
    evaluate_policy,
    history_frame,
    planner_config,
)
from ttlib.experiments.episodes import episode_scores, tt_agent
from ttlib.experiments.presets import model_kwargs, results_dir
from ttlib.io import load_torch, save_json, save_torch
from ttlib.train import CHECKPOINT_FORMAT, TrainConfig, gpt_config_for, load_checkpoint, train

log = logging.getLogger("ttlib.compute_study")

CHECKPOINT_EVERY = 500  # steps (~2-3 min at the cpu preset): what a kill can lose
LOG_EVERY = 50


@dataclass(frozen=True)
class RunSpec:
    """One training run: its weights are kept where its training FLOPs equal those of the
    base model (the preset's ``n_embd``) after each of ``points`` tokens."""

    env: str
    kind: str
    seed: int
    n_embd: int
    points: tuple[int, ...]


def run_specs(params: dict) -> list[RunSpec]:
    """The runs a preset asks for: the base model per dataset, a second seed and the larger
    model where listed. Their points must be base-model points, to be compared with them."""
    names = ("tokens", "second_seed_tokens", "equal_flops_tokens")
    tokens, second, large = (tuple(sorted(params[name])) for name in names)
    for name, points in (("second_seed_tokens", second), ("equal_flops_tokens", large)):
        if not set(points) <= set(tokens):
            raise ConfigError(f"{name}={list(points)} must be token counts listed in tokens")
    seed, kind, n_embd = int(params["seed"]), params["kind"], int(params["n_embd"])
    specs = []
    for env in params["envs"]:
        specs.append(RunSpec(env, kind, seed, n_embd, tokens))
        if env in params["second_seed_envs"]:
            specs.append(RunSpec(env, kind, seed + 1, n_embd, second))
        if env in params["large_envs"]:
            specs.append(RunSpec(env, kind, seed, int(params["large_n_embd"]), large))
    return specs


@dataclass
class StudyRun:
    spec: RunSpec
    folder: Path  # the run: checkpoint.pt, config.json and the kept points
    model_cfg: object  # GPTConfig of this run
    batch_size: int
    points: dict[int, Path]  # step -> fp16 weights
    history: list[dict]
    step_at: dict[int, int]  # the spec's token counts -> the steps its weights are kept at

    @property
    def label(self) -> str:
        return f"{self.model_cfg.n_layer}×{self.model_cfg.n_embd}"

    def tokens(self, step: int) -> int:
        """Training tokens after ``step`` steps, counted as the original counts its budget."""
        return step * self.batch_size * self.model_cfg.block_size


def _point_file(folder: Path, step: int) -> Path:
    return folder / f"weights_step{step:08d}.pt"


def keep_point(checkpoint: Path, path: Path) -> None:
    """The checkpoint's weights in fp16 (half the bytes; the planner loads them back into an
    fp32 model) with what planning needs; the optimiser stays in the checkpoint."""
    state = load_torch(checkpoint)
    weights = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    keep = ("gpt_config", "data_config", "train_config", "discretizer", "step", "train_seconds")
    save_torch({"format": CHECKPOINT_FORMAT, "model": weights, **{k: state[k] for k in keep}}, path)


def train_run(
    spec: RunSpec, params: dict, models: Path, progress: bool = False, until: int | None = None
) -> StudyRun:
    """Train (or resume, or extend) one run to its last point (or its last point of at most
    ``until`` base-model tokens: a session's chunk), keeping its weights at each."""
    data_cfg = dataset_config(spec.env, spec.kind, params)  # quantile bins, as the paper's TT
    episodes = load_episodes(data_cfg)
    dataset = SequenceDataset(episodes, data_cfg)
    base_cfg = gpt_config_for(dataset, **model_kwargs(params))
    model_cfg = replace(base_cfg, n_embd=spec.n_embd)
    ratio = train_flops_per_token(base_cfg) / train_flops_per_token(model_cfg)
    per_step = int(params["batch_size"]) * model_cfg.block_size
    step_at = {t: max(1, round(t * ratio / per_step)) for t in spec.points}
    steps = sorted(set(step_at.values()))
    todo = sorted({s for t, s in step_at.items() if until is None or t <= until})
    cfg = TrainConfig(
        max_steps=steps[-1],
        batch_size=int(params["batch_size"]),
        schedule="constant",
        warmup_tokens=int(params["warmup_tokens"]),
        seed=spec.seed,
        checkpoint_every=CHECKPOINT_EVERY,
        log_every=LOG_EVERY,
    )
    train_id = {k: v for k, v in cfg.to_dict().items() if k != "max_steps"}  # runs extend
    identity = {"data": data_cfg.to_dict(), "fingerprint": data_fingerprint(episodes)}
    identity |= {"model": model_cfg.to_dict(), "train": train_id}
    stem = f"{spec.env}-{spec.kind}-{model_cfg.n_layer}x{spec.n_embd}-seed{spec.seed}"
    folder = models / f"{stem}-{config_key(identity)}"
    others = sorted(p.name for p in models.glob(f"{stem}-*") if p.is_dir() and p != folder)
    if others:  # e.g. the data were regenerated differently: say so rather than retrain quietly
        log.warning("%s: not resuming %s (other data or settings)", folder.name, others)
    save_json(identity, folder / "config.json")
    ckpt, trained = folder / "checkpoint.pt", False
    code, started = code_version(), time.time()
    for step in todo:
        done = int(load_torch(ckpt)["step"]) if ckpt.exists() else 0
        if _point_file(folder, step).exists():
            continue
        if done > step:
            log.warning("%s passed step %d without keeping it: that point is missing", stem, step)
            continue
        log.info("train %s to step %d", folder.name, step)
        train(dataset, model_cfg, replace(cfg, max_steps=step), folder, progress)
        keep_point(ckpt, _point_file(folder, step))
        trained = True
    if not ckpt.exists():  # ``until`` is below this run's first point
        return StudyRun(spec, folder, model_cfg, cfg.batch_size, {}, [], step_at)
    state = load_torch(ckpt)
    if trained or not folder.with_suffix(".json").exists():
        # the whole run's seconds (every session's), the commit of the session that extended it
        note_training(folder, started, state.get("train_seconds"), code, replace=True)
    note_model(folder, trained, int(state["step"]))
    points = {s: _point_file(folder, s) for s in todo if _point_file(folder, s).exists()}
    history = list(state["history"])
    return StudyRun(spec, folder, model_cfg, cfg.batch_size, points, history, step_at)


# The original's own search (its horizon and beam width per dataset): planner_config scales a
# preset's planner by the preset's horizon and beam width over these
PAPER_SEARCH = {"horizon": 15, "beam_width": 128}


def evaluate_point(
    run: StudyRun, step: int, params: dict, search: dict | None = None
) -> list[dict]:
    """Episodes of the fp16 weights kept at ``step`` (the committed files, so a fresh checkout
    plans with exactly the weights the published scores came from), planned with the D4RL
    table's planner, or with ``search`` (horizon, beam width) in its place."""
    model, discretizer, _ = load_checkpoint(run.points[step], device="cpu")
    planner = planner_config(run.spec.env, run.spec.kind, {**params, **(search or {})})
    key = {
        "run": run.folder.name,
        "step": step,
        "weights": "fp16",
        "planner": planner_identity(replace(planner, seed=0)),
        "env": run.spec.env,
        "max_steps": int(params["max_episode_steps"]),
    }
    return episode_scores(
        key,
        tt_agent(model, discretizer, planner),
        run.spec.env,
        int(params["episodes"]),
        int(params["max_episode_steps"]),
        EVAL_SEED,
        cache="compute_study/episodes",
    )


def reference_scores(
    env: str, kind: str, params: dict, methods: Sequence[str] = BASELINES
) -> pd.DataFrame:
    """BC and IQL (or ``methods``: the D4RL table's models and episodes; same data, steps and
    seed share its caches) and the data's own complete episodes, as rows env, kind, method,
    episode, score."""
    data_cfg = dataset_config(env, kind, params)
    data = load_episodes(data_cfg)
    frames = [data_episode_scores({**params, "envs": [env], "kinds": [kind]}).assign(method="data")]
    for method in methods:
        spec = BaselineSpec(method, int(params["baseline_steps"]), int(params["seed"]))
        policy = baseline_cached(spec, data_cfg, data)
        policy_key = {**asdict(spec), "dataset_id": data_cfg.dataset_id}
        policy_key["data"] = data_fingerprint(data)
        rows = evaluate_policy(policy, method, env, params, EVAL_SEED, policy_key)
        frame = pd.DataFrame(rows).assign(env=env, kind=kind, method=method)
        frames.append(frame.reset_index(names="episode"))
    cols = ["env", "kind", "method", "episode", "score"]
    return pd.concat([f[cols] for f in frames], ignore_index=True)


@dataclass
class Study:
    episodes: pd.DataFrame  # one row per evaluation episode of a kept point (seed: its reset)
    references: pd.DataFrame  # data, BC and IQL episodes per dataset
    histories: pd.DataFrame  # training losses of every run, long format
    paper_search: pd.DataFrame  # episodes of points planned again with the original's search


def _labels(r: StudyRun, step: int) -> dict:
    flops = train_flops_per_token(r.model_cfg)
    labels = {"env": r.spec.env, "kind": r.spec.kind, "model": r.label}
    labels["train_seed"] = r.spec.seed
    labels |= {"step": step, "tokens": r.tokens(step), "flops": r.tokens(step) * flops}
    labels["paper_tokens"] = paper_tokens(r.spec.env, r.spec.kind, r.model_cfg.block_size)
    return labels


def paper_search_episodes(runs: Sequence[StudyRun], params: dict) -> pd.DataFrame:
    """The base runs' points (on the preset's ``paper_search_envs``) at its ``paper_search_at``
    tokens planned again with the original's horizon and beam width (a preset cuts them to
    save CPU time): how much of the gap to the paper the smaller search accounts for. Same
    reset seeds as the points' own episodes, so the two pair up."""
    rows = []
    for r in runs:
        if (r.spec.seed, r.spec.n_embd) != (int(params["seed"]), int(params["n_embd"])):
            continue
        if r.spec.env not in (params.get("paper_search_envs") or ()):
            continue
        per_step = r.batch_size * r.model_cfg.block_size  # as train_run places the points
        wanted = {max(1, round(t / per_step)) for t in params.get("paper_search_at") or ()}
        for step in sorted(wanted & set(r.points)):
            planner = planner_config(r.spec.env, r.spec.kind, {**params, **PAPER_SEARCH})
            search = {"horizon": planner.horizon, "beam_width": planner.beam_width}
            for i, ep in enumerate(evaluate_point(r, step, params, PAPER_SEARCH)):
                rows.append({**_labels(r, step), **search, "episode": i, **ep})
    return pd.DataFrame(rows)


def until_for(params: dict, env: str) -> int | None:
    """How far the preset's published runs of ``env`` have got: ``train_up_to`` is one token
    count for every dataset, or one per dataset (``{hopper: 3e8, halfcheetah: 1.2e8}``: the
    runs are extended in different sessions); None: every point."""
    up_to = params.get("train_up_to")
    return up_to.get(env) if isinstance(up_to, dict) else up_to


def models_dir(params: dict) -> Path:
    """Where the preset's runs live: committed under results/ for cpu, build/ for smoke."""
    return results_dir("compute_study", params["preset"]) / "models"


def run_study(
    params: dict,
    envs: Sequence[str] | None = None,
    train_only: bool = False,
    progress: bool = False,
    until: int | None = None,
) -> Study:
    """Train every run of ``params`` (or of ``envs``; up to ``until`` tokens, by default the
    preset's ``train_up_to``), then evaluate every kept point up to there."""
    models = models_dir(params)
    specs = [s for s in run_specs(params) if envs is None or s.env in envs]
    runs = [
        train_run(
            spec, params, models, progress, until_for(params, spec.env) if until is None else until
        )
        for spec in specs
    ]
    histories = [
        history_frame(
            r.history, env=r.spec.env, kind=r.spec.kind, model=r.label, train_seed=r.spec.seed
        )
        for r in runs
    ]
    rows, refs = [], []
    for r in runs if not train_only else []:
        for step in sorted(r.points):
            for i, ep in enumerate(evaluate_point(r, step, params)):
                rows.append({**_labels(r, step), "episode": i, **ep})
    for env, kind in dict.fromkeys((s.env, s.kind) for s in specs) if not train_only else []:
        refs.append(reference_scores(env, kind, params))
    return Study(
        pd.DataFrame(rows),
        pd.concat(refs, ignore_index=True) if refs else pd.DataFrame(),
        pd.concat(histories, ignore_index=True) if histories else pd.DataFrame(),
        paper_search_episodes(runs, params) if not train_only else pd.DataFrame(),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Train and evaluate the compute study without the notebook, in resumable chunks."""
    from ttlib.experiments.runs import start

    ap = argparse.ArgumentParser(
        prog="python -m ttlib.experiments.compute_study", description=main.__doc__
    )
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--only", nargs="*", default=None, metavar="ENV", help="e.g. hopper")
    ap.add_argument("--train-only", action="store_true", help="train and keep weights only")
    ap.add_argument(
        "--until",
        type=float,
        default=None,
        help="train no point beyond N tokens (default: the preset's train_up_to)",
    )
    ap.add_argument("--log", default=None, help="append progress to this file")
    ap.add_argument("--ray", default=None, metavar="ADDRESS", help="as Ray tasks: local or address")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, filename=args.log, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    torch.set_num_threads(1)  # one process per core: run one per dataset side by side
    params = start("compute_study", {"preset": args.preset}).params
    until = None if args.until is None else int(args.until)
    if args.ray:  # every training and evaluation as a Ray task; run_study then loads them
        from ttlib.experiments import ray_tasks

        ray_tasks.fill_study(params, args.ray, envs=args.only, train_only=args.train_only,
                             until=until)  # fmt: skip
    run_study(params, args.only, args.train_only, until=until)


if __name__ == "__main__":
    main()

"""The D4RL table's, the mazes', the compute study's and the prediction page's work as Ray
tasks: one machine's cores (``ray local``) or a cluster.

Each unit of work is a task with the resources it declares: training a TT model, training a
baseline (BC, IQL), and planning a batch of evaluation episodes of one agent (a batch waits for
its agent's training). The maze experiments (``maze_q``, ``antmaze``) have one training task
per maze (TT, IQL and BC, in that order: the critic and BC read the episodes TT's dataset
holds) and one evaluation task per maze and method. The compute study has one training task
per run and one evaluation task per kept point; the prediction page one training task per
model (TT and MLP per env).

A task calls the same cached functions a serial run calls, so what it makes lands in the same
content-keyed caches (:func:`ttlib.experiments.cache.cached`), under the same keys and with the
same numbers: every task plans with one torch thread per CPU it declares (one by default, as
the serial run does), and episodes are batched as the serial run batches them. The serial
loops (:func:`ttlib.experiments.d4rl_table.run_table`, the maze notebooks' cells) then find
everything cached and render from it.

The driver passes its cache folder, Minari data folder and checkout to every task
(``TTLIB_CACHE``, ``MINARI_DATASETS_PATH``, ``TTLIB_ROOT``): on a cluster they must be the same
paths on every node (shared storage). Ray is an optional extra (``pip install -e ".[ray]"``),
imported only here and only when a run asks for it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from ttlib.data import load_episodes, minari_root
from ttlib.errors import ConfigError
from ttlib.experiments import d4rl_table as dt
from ttlib.experiments.cache import cache_dir
from ttlib.experiments.d4rl_data import DatasetUnavailable, dataset_config
from ttlib.experiments.episodes import EPISODES_TOGETHER, seed_batches
from ttlib.experiments.presets import repo_root
from ttlib.memory import parse_bytes

log = logging.getLogger("ttlib.ray")

PASSED_ENV = ("TTLIB_KEEP_MINARI_PATH", "TTLIB_MEMORY_LIMIT", "MUJOCO_GL")  # when set


class TaskFailed(RuntimeError):
    """A Ray task raised; the message names the task and its error (the remote traceback is the
    ``__cause__``). What the finished tasks made is cached: rerunning resumes from it."""


@dataclass(frozen=True)
class Resources:
    """What one task of each kind asks Ray for: CPUs, GPUs and bytes of memory.

    ``TTLIB_RAY_RESOURCES`` (or ``--ray-resources``) overrides them, e.g.
    ``train_gpus=1,train_memory=16G`` on GPU nodes (0.5 puts two trainings on one GPU).
    A task trains or plans with one torch thread per CPU it asks for; TT training uses a GPU
    only where it asks for one (Ray hides the others).
    """

    train_cpus: float = 1
    train_gpus: float = 0
    train_memory: int = 2 * 2**30
    baseline_cpus: float = 1
    baseline_gpus: float = 0
    baseline_memory: int = 2**30
    eval_cpus: float = 1
    eval_gpus: float = 0
    eval_memory: int = 2 * 2**30

    @classmethod
    def parse(cls, spec: str | None) -> Resources:
        """``"name=value,..."`` over the defaults; memory takes sizes like ``8G``."""
        known = {f.name for f in fields(cls)}
        given = {}
        for item in filter(None, (spec or "").replace(" ", "").split(",")):
            name, _, value = item.partition("=")
            if name not in known or not value:
                raise ConfigError(f"Ray resource {item!r}: use NAME=VALUE with NAME in {known}")
            try:
                given[name] = parse_bytes(value) if name.endswith("memory") else float(value)
            except ValueError:
                raise ConfigError(f"Ray resource {item!r}: {value!r} is not a number") from None
        return cls(**given)

    def options(self, kind: str) -> dict:
        cpus, gpus = getattr(self, f"{kind}_cpus"), getattr(self, f"{kind}_gpus")
        return {"num_cpus": cpus, "num_gpus": gpus, "memory": getattr(self, f"{kind}_memory")}


@dataclass(frozen=True)
class Task:
    name: str  # what the error of a failed task names
    kind: str  # train | baseline | eval: which resources it asks for
    fn: Callable
    args: tuple
    after: tuple[str, ...] = ()  # the tasks whose results it needs in the caches first


# ------------------------------------------------------------------ the units of work
def train_tt(env: str, kind: str, disc: str, params: dict, seed: int) -> None:
    dt.train_table_tt(env, kind, disc, params, seed)


def _baseline(method: str, env: str, kind: str, params: dict, seed: int):
    base_cfg = dataset_config(env, kind, params)
    data = load_episodes(base_cfg)
    spec = dt.BaselineSpec(method, int(params["baseline_steps"]), seed)
    return spec, base_cfg, data, dt.baseline_cached(spec, base_cfg, data)


def train_baseline(method: str, env: str, kind: str, params: dict, seed: int) -> None:
    _baseline(method, env, kind, params, seed)


def evaluate(method: str, env: str, kind: str, params: dict, seed: int, seeds) -> None:
    """Episodes ``seeds`` (consecutive) of one agent, planned together as the serial run does."""
    first, n = seeds[0], len(seeds)
    if method.startswith("TT"):
        trained = dt.train_table_tt(env, kind, dt.tt_discretizer(method), params, seed)
        dt.evaluate_tt(trained, env, kind, params, first, n)
    else:
        spec, base_cfg, data, policy = _baseline(method, env, kind, params, seed)
        dt.evaluate_baseline(policy, spec, base_cfg, data, env, {**params, "episodes": n}, first)


# ------------------------------------------------------------------ the table's tasks
def table_tasks(
    params: dict,
    methods: Sequence[str],
    evaluate_agents: bool = True,
    together: int | None = None,
) -> list[Task]:
    """Every training and evaluation :func:`run_table` would do, as tasks: trainings first,
    then each agent's episodes in batches of ``together`` consecutive seeds (default: as many
    as the serial run plans together, so the records say the same). The datasets are made
    here, before any task reads them."""
    together = together or EPISODES_TOGETHER
    tasks: dict[str, Task] = {}
    wanted: dict[tuple, set[int]] = {}  # (method, env, kind, train seed) -> episode seeds

    def train(method, env, kind, seed) -> str:
        name = f"train {method} {env}/{kind} seed {seed}"
        if method.startswith("TT"):
            args = (env, kind, dt.tt_discretizer(method), params, seed)
            tasks.setdefault(name, Task(name, "train", train_tt, args))
        else:
            args = (method, env, kind, params, seed)
            tasks.setdefault(name, Task(name, "baseline", train_baseline, args))
        return name

    for s in range(int(params["seeds"])):
        seed, first = int(params["seed"]) + s, dt.EVAL_SEED + 1000 * s
        for env in params["envs"]:
            for kind in params["kinds"]:
                try:
                    dataset_config(env, kind, params)  # generated once, here
                except DatasetUnavailable:
                    continue  # run_table lists it as skipped
                for method in methods:
                    train(method, env, kind, seed)
                    if evaluate_agents:
                        wanted.setdefault((method, env, kind, seed), set()).update(
                            range(first, first + int(params["episodes"]))
                        )
    for (method, env, kind, seed), seeds in wanted.items():
        for batch in seed_batches(sorted(seeds), together):
            name = f"evaluate {method} {env}/{kind} seed {seed} episodes {batch[0]}-{batch[-1]}"
            args = (method, env, kind, params, seed, batch)
            tasks[name] = Task(name, "eval", evaluate, args, (train(method, env, kind, seed),))
    return list(tasks.values())


# ------------------------------------------------------------------ the mazes' tasks
# maze_q is imported inside these functions: it brings the maze envs, which the D4RL table's
# tasks (and the d4rl notebook that imports this module) do not need.
def _maze(name: str, params: dict):
    from ttlib.experiments import maze_q

    return next(m for m in maze_q.mazes_for(params) if m.name == name)


def train_maze(name: str, params: dict) -> None:
    from ttlib.experiments import maze_q

    maze_q.train_maze(_maze(name, params), params)


def evaluate_maze(name: str, params: dict, method: str) -> None:
    from ttlib.experiments import maze_q

    models = maze_q.train_maze(_maze(name, params), params)  # loads: its task ran first
    maze_q.evaluate_maze(models, params, [method])


def maze_tasks(params: dict) -> list[Task]:
    """Every training and evaluation the maze notebooks run (``maze_q.mazes_for(params)``),
    as tasks: each maze's training, then one task per method planning all its episodes (as
    the serial run plans them). The datasets are made here, before any task reads them."""
    from ttlib.experiments import maze_q

    tasks = []
    for maze in maze_q.mazes_for(params):
        maze_q.ensure_maze_data(maze, params)
        train = f"train {maze.name}"
        tasks.append(Task(train, "train", train_maze, (maze.name, params)))
        for method in maze_q.METHODS:
            args = (maze.name, params, method)
            tasks.append(
                Task(f"evaluate {method} {maze.name}", "eval", evaluate_maze, args, (train,))
            )
    return tasks


def fill_mazes(params: dict, address: str | None = None) -> None:
    """Fill the maze notebooks' caches on Ray at ``address`` (default ``params["ray"]``)."""
    run_tasks(maze_tasks(params), address or params["ray"])


# ------------------------------------------------------------------ the compute study's tasks
# compute_study is imported inside these functions, as maze_q is above.
def _until(params: dict, env: str, until: int | None) -> int | None:
    from ttlib.experiments import compute_study as cs

    return cs.until_for(params, env) if until is None else until


def train_study_run(spec, params: dict, models: Path, until: int | None) -> None:
    from ttlib.experiments import compute_study as cs

    cs.train_run(spec, params, models, until=_until(params, spec.env, until))


def evaluate_study_point(
    spec, params: dict, models: Path, until: int | None, tokens: int | None
) -> None:
    """The episodes of one kept point (``tokens``), or with ``tokens`` None the run's points
    planned again with the original's search (:func:`compute_study.paper_search_episodes`)."""
    from ttlib.experiments import compute_study as cs

    run = cs.train_run(spec, params, models, until=_until(params, spec.env, until))  # loads
    if tokens is None:
        cs.paper_search_episodes([run], params)
    elif run.step_at[tokens] in run.points:  # else missed by an earlier run, as serially
        cs.evaluate_point(run, run.step_at[tokens], params)


def study_reference(env: str, kind: str, method: str, params: dict) -> None:
    from ttlib.experiments import compute_study as cs

    cs.reference_scores(env, kind, params, [method])


def study_tasks(
    params: dict,
    envs: Sequence[str] | None = None,
    train_only: bool = False,
    until: int | None = None,
    models: Path | None = None,
) -> list[Task]:
    """Every training and evaluation :func:`compute_study.run_study` does with these
    arguments, as tasks: one training per run (to its last point up to ``until`` tokens, by
    default the preset's ``train_up_to``), then one task per kept point planning its episodes,
    one replanning the base run with the original's search where the preset asks, and one per
    dataset and baseline (BC, IQL) for the reference lines. The datasets are made here."""
    from ttlib.experiments import compute_study as cs

    models = models or cs.models_dir(params)
    tasks = []
    specs = [s for s in cs.run_specs(params) if envs is None or s.env in envs]
    for spec in specs:
        dataset_config(spec.env, spec.kind, params)  # generated once, here
        name = f"{spec.env}/{spec.kind} {params['n_layer']}x{spec.n_embd} seed {spec.seed}"
        stop = _until(params, spec.env, until)
        args = (spec, params, models, until)
        tasks.append(Task(f"train {name}", "train", train_study_run, args))
        if train_only:
            continue
        for tokens in (t for t in spec.points if stop is None or t <= stop):
            task = Task(f"evaluate {name} at {tokens} tokens", "eval", evaluate_study_point,
                        (*args, tokens), (f"train {name}",))  # fmt: skip
            tasks.append(task)
        base = (spec.seed, spec.n_embd) == (int(params["seed"]), int(params["n_embd"]))
        if base and spec.env in (params.get("paper_search_envs") or ()):
            task = Task(f"evaluate {name} with the original's search", "eval",
                        evaluate_study_point, (*args, None), (f"train {name}",))  # fmt: skip
            tasks.append(task)
    for env, kind in dict.fromkeys((s.env, s.kind) for s in specs) if not train_only else []:
        for method in dt.BASELINES:
            name = f"reference {method} {env}/{kind}"
            tasks.append(Task(name, "baseline", study_reference, (env, kind, method, params)))
    return tasks


def fill_study(params: dict, address: str | None = None, **kw) -> None:
    """Fill the compute study's caches and runs on Ray at ``address`` (default
    ``params["ray"]``); ``kw`` as :func:`study_tasks`."""
    run_tasks(study_tasks(params, **kw), address or params["ray"])


# ------------------------------------------------------------------ the prediction page's tasks
def train_prediction(env: str, params: dict, model: str) -> None:
    """The prediction page's TT (with its held-out loss) or single-step MLP of ``env``, trained
    and cached exactly as the notebook's ``predict`` trains them."""
    from ttlib.experiments import prediction, runs
    from ttlib.experiments.cache import train_tt

    kind, n, seed = params["dataset_kind"], params["dataset_transitions"], params["seed"]
    data_cfg, train_cfg, model_kw = prediction.tt_configs(runs.ensure_dataset(env, kind, n, seed),
                                                          params)  # fmt: skip
    train_eps, test_eps = prediction.split_episodes(data_cfg)
    if model == "TT":
        train_tt(data_cfg, train_cfg, model_kw, eval_episodes=test_eps)
    else:
        prediction.dynamics_cached(data_cfg, train_eps, params["dynamics_steps"], seed)


def prediction_tasks(params: dict) -> list[Task]:
    """The prediction page's trainings, a TT and an MLP per env, as tasks (its rollouts are
    cheap and stay in the notebook). The datasets are made here."""
    from ttlib.experiments import runs

    tasks = []
    for env in params["envs"]:
        runs.ensure_dataset(env, params["dataset_kind"], params["dataset_transitions"],
                            params["seed"])  # fmt: skip
        for model, kind in (("TT", "train"), ("MLP", "baseline")):
            tasks.append(Task(f"train {model} {env}", kind, train_prediction, (env, params, model)))
    return tasks


def fill_prediction(params: dict, address: str | None = None) -> None:
    """Train the prediction page's models on Ray at ``address`` (default ``params["ray"]``)."""
    run_tasks(prediction_tasks(params), address or params["ray"])


# ------------------------------------------------------------------ running them
def _environ() -> dict[str, str]:
    """What a task needs to find the driver's caches, data and checkout."""
    env = {"TTLIB_CACHE": str(cache_dir().resolve()), "TTLIB_ROOT": str(repo_root())}
    env["MINARI_DATASETS_PATH"] = str(minari_root().resolve())
    return env | {k: os.environ[k] for k in PASSED_ENV if k in os.environ}


def _run(fn: Callable, environ: dict, threads: int, args: tuple, *_after) -> None:
    """A task's body in a Ray worker (``_after``: the results it waited for)."""
    import torch

    os.environ.update(environ)
    torch.set_num_threads(threads)
    fn(*args)


def _connect(address: str) -> bool:
    """Connect to the Ray cluster at ``address`` (``local``: start one on this machine's
    cores); True if this call started it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            'Ray is not installed: pip install -e ".[ray]" (or run without --ray / ray)'
        ) from None
    if ray.is_initialized():
        return False
    if address == "local":
        ray.init(
            include_dashboard=False, object_store_memory=256 * 2**20, logging_level=logging.WARNING
        )
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    return True


def run_tasks(tasks: Sequence[Task], address: str = "local", resources: Resources | None = None):
    """Run ``tasks`` on Ray; the first that fails stops the rest and raises :class:`TaskFailed`."""
    import ray

    started = _connect(address)
    resources = resources or Resources.parse(os.environ.get("TTLIB_RAY_RESOURCES"))
    remote, environ = ray.remote(_run), _environ()
    refs, names = {}, {}
    try:
        for t in tasks:
            opts = resources.options(t.kind)
            threads = max(1, int(opts["num_cpus"]))
            after = [refs[a] for a in t.after]
            ref = remote.options(name=t.name, max_retries=0, **opts).remote(
                t.fn, environ, threads, t.args, *after
            )
            refs[t.name], names[ref] = ref, t.name
        log.info("%d Ray tasks submitted", len(refs))
        pending = list(refs.values())
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayError:
                for ref in pending:
                    ray.cancel(ref)
                name, err = _first_failure(refs)
                cause = getattr(err, "cause", None) or err  # the task's own exception
                what = f"{type(cause).__name__}: {' '.join(str(cause).split())}"
                raise TaskFailed(
                    f"Ray task {name!r} failed: {what}; the finished tasks are cached, rerun "
                    "to resume from them"
                ) from err
            log.info("done: %s (%d to go)", names[done[0]], len(pending))
    finally:
        if started:
            ray.shutdown()


def _first_failure(refs: dict) -> tuple[str, Exception]:
    """The first failed task in submission order and its error: a training comes before the
    evaluations that failed because it did."""
    import ray

    errors = []
    for name, ref in refs.items():
        if ray.wait([ref], timeout=0)[0]:
            try:
                ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                pass
            except ray.exceptions.RayError as err:
                errors.append((name, err))
    return errors[0]


def fill_table(
    params: dict,
    methods: Sequence[str] | None = None,
    evaluate_agents: bool = True,
    address: str | None = None,
) -> None:
    """Fill the caches of :func:`run_table` on Ray at ``address``
    (default ``params["ray"]``); ``methods`` default to all of the table's."""
    methods = methods or [*(dt.tt_method(d) for d in params["discretizers"]), *dt.BASELINES]
    tasks = table_tasks(params, methods, evaluate_agents)
    run_tasks(tasks, address or params["ray"])

"""What every experiment notebook does before and after its own science.

``start(experiment, globals())`` resolves the parameters against ``_config.yml``, picks the
output folder (``build/smoke/...`` for smoke, ``results/...`` otherwise), points smoke runs at
a private Minari data dir, seeds everything and starts the run record; ``run.finish()`` writes
``run.json``: enough to rerun the notebook and to trust a number. ``ensure_dataset`` makes the
local dataset an experiment needs, once.
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from ttlib.experiments.cache import EPISODES_USED, MODELS_USED, _git, cache_dir, code_version
from ttlib.experiments.presets import repo_root, resolve, results_dir
from ttlib.io import save_json

# ------------------------------------------------------------ what the run ran on


def _package_modified() -> bool | None:
    """Whether ttlib's own files differ from the commit (results then come from edited code)."""
    status = _git("status", "--porcelain", "--", "ttlib")
    return None if status is None else bool(status)


def _versions() -> dict:
    names = ["ttlib", "torch", "numpy", "gymnasium", "gymnasium-robotics", "mujoco", "minari"]
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def hardware() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}
    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def default_command(experiment: str, params: dict) -> str:
    """The command that reproduces a notebook run (set TTLIB_COMMAND to record another)."""
    if "TTLIB_COMMAND" in os.environ:
        return os.environ["TTLIB_COMMAND"]
    return f"ttlib reproduce --preset {params.get('preset', 'smoke')} --only {experiment}"


@dataclass
class RunRecord:
    """What ``results/<experiment>/run.json`` holds."""

    experiment: str
    params: dict
    command: str = ""
    started: float = field(default_factory=time.time)
    extra: dict = field(default_factory=dict)
    # the code as the run starts (a long run can outlive several commits)
    git_sha: str | None = field(default_factory=lambda: _git("rev-parse", "HEAD") or None)
    package_modified: bool | None = field(default_factory=_package_modified)

    def write(self, out_dir: Path) -> Path:
        record = {
            "experiment": self.experiment,
            "preset": self.params.get("preset"),
            "params": self.params,
            "command": self.command or default_command(self.experiment, self.params),
            "git_sha": self.git_sha,
            "ttlib_modified_at_start": self.package_modified,
            "versions": _versions(),
            "hardware": hardware(),
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "wall_time_s": round(time.time() - self.started, 1),
            **self.extra,
        }
        return save_json(record, Path(out_dir) / "run.json")


# ------------------------------------------------------------ the notebook's run
@dataclass
class Run:
    experiment: str
    params: dict
    out_dir: Path
    record: RunRecord
    artefacts: list[str] = field(default_factory=list)

    @property
    def preset(self) -> str:
        return self.params["preset"]

    def path(self, name: str) -> Path:
        """A file in the run's output folder, remembered for run.json."""
        self.artefacts.append(name)
        return self.out_dir / name

    def save_figure(self, fig, name: str) -> Path:
        """Save ``fig`` as ``name``.png and .svg (the book uses the PNG, the SVG scales)."""
        png = self.path(f"{name}.png")
        fig.savefig(png, dpi=120, bbox_inches="tight")
        fig.savefig(self.path(f"{name}.svg"), bbox_inches="tight")
        return png

    def save_table(self, df, name: str) -> Path:
        p = self.path(f"{name}.csv")
        df.to_csv(p, index=False, float_format="%.6g")
        return p

    def finish(self, **extra) -> Path:
        """Write run.json; call it in the notebook's last cell.

        It lists every cached model the run used (trained now or loaded) with the wall time
        its training took, and every cached entry of evaluation episodes with the wall and
        CPU time they took, each with the commit of the code that made it, so a rerun from the
        cache still says what the results cost and where they come from.
        """
        self.record.extra.update(extra)
        self.record.extra["models"] = [self._model_origin(m) for m in MODELS_USED]
        self.record.extra["cached_episodes"] = [dict(e) for e in EPISODES_USED]
        self.record.extra["artefacts"] = sorted(set(self.artefacts))
        return self.record.write(self.out_dir)

    def _model_origin(self, model: dict) -> dict:
        """A cached model's entry with the commit and time of the code that trained it.

        The cache keeps each model's training time and commit beside it (``<entry>.json``,
        written by :func:`ttlib.experiments.cache.cached` as it trains); a model trained in
        this run whose file lacks them gets this run's commit and start time added there, so
        later runs that load it can say which code made it. Models trained before this was
        kept say None.
        """
        entry = dict(model)
        timing = _timing_file(model["model"])
        info = json.loads(timing.read_text()) if timing is not None else {}
        if model.get("trained_in_this_run") and timing is not None and "git_sha" not in info:
            started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.record.started))
            info |= {"git_sha": self.record.git_sha, "trained_utc": started}
            save_json(info, timing)
        for key in ("git_sha", "trained_utc", "ttlib_modified"):
            entry[key] = info.get(key, model.get(key))
        return entry


def _timing_file(model: str) -> Path | None:
    """``<cache>/<kind>/<entry>.json`` of a cached model named ``model`` (None if missing)."""
    stem = Path(model).stem if model.endswith(".pt") else model
    for pattern in (f"*/{stem}.json", f"*/*/{stem}.json"):
        found = sorted(cache_dir().glob(pattern))
        if found:
            return found[0]
    return None


def _minutes(seconds) -> str:
    return "not recorded" if seconds is None else f"{float(seconds) / 60:.1f} min"


def _commit(sha: str | None, modified: bool | None = None) -> str:
    """A short commit, marked where ttlib had uncommitted edits (None: not recorded)."""
    if not sha:
        return "not recorded"
    return sha[:8] + ("+edits" if modified else "")


def _count(n: int, what: str) -> str:
    plural = what[:-1] + "ies" if what.endswith("y") else what + "s"
    return f"{n} {what if n == 1 else plural}"


def compute_summary(record: dict) -> dict:
    """What a run's results cost and which code made them, from its run.json (seconds).

    - ``notebook``: the notebook run's own wall time.
    - ``models``: the recorded training time of every cached model it used, each once,
      whether trained in this run or loaded from the cache.
    - ``episodes``: the recorded wall time of every cached evaluation episode it used,
      computed in this run or loaded.
    - ``total``: the notebook plus the models and episodes it *loaded* (made by earlier runs
      or by separate workers such as ``d4rl_fill``); what was made in this run is part of its
      wall time already, so nothing is counted twice. A sum of process wall times: parallel
      workers add up.
    - ``commits``: the notebook's commit first, then those of the caches it used;
      ``commits_complete``: False where some of the caches' commits are not recorded.
    - ``not_recorded``: what the sums and commits miss (the sums are then lower bounds).

    ``models`` or ``episodes`` is None where the record predates their listing. A record
    from before episodes were listed that has ``episode_seconds`` (the D4RL notebook's sum
    over its table's episodes) counts that total as loaded from the cache, without commits.
    """
    models = list({m["model"]: m for m in record.get("models", [])}.values())
    listed = "cached_episodes" in record
    episodes = list(record.get("cached_episodes", []))
    # what the run made itself was made by its own code (older records did not say so)
    mine = {
        "git_sha": record.get("git_sha"),
        "ttlib_modified": record.get("ttlib_modified_at_start"),
    }
    models = [
        m | mine if m.get("trained_in_this_run") and not m.get("git_sha") else m for m in models
    ]
    episodes = [
        e | mine if e.get("computed_in_this_run") and not e.get("git_sha") else e for e in episodes
    ]
    loaded_models = sum(
        float(m["train_seconds"])
        for m in models
        if not m.get("trained_in_this_run") and m.get("train_seconds") is not None
    )
    loaded_episodes = sum(
        float(e["wall_seconds"])
        for e in episodes
        if not e.get("computed_in_this_run") and e.get("wall_seconds") is not None
    )
    out = {
        "notebook": float(record.get("wall_time_s") or 0.0),
        "models": sum(float(m.get("train_seconds") or 0.0) for m in models)
        if "models" in record
        else None,
        "episodes": sum(float(e.get("wall_seconds") or 0.0) for e in episodes),
    }
    missing_time, missing_commit, missing = [], [], []
    if "models" not in record:
        missing.append("the models used (record predates their listing)")
    if not listed and record.get("episode_seconds") is not None:
        out["episodes"] = loaded_episodes = float(record["episode_seconds"])
        # the D4RL notebook's total over its table's episodes (not its learning curve's)
        missing.append(
            "the episodes' commits, and the time of any episodes outside the total the "
            "notebook kept (D4RL: its table's, not its learning curve's)"
        )
    elif not listed:
        out["episodes"] = None
        missing.append("the episodes used (record predates their listing)")
    if n := sum(m.get("train_seconds") is None for m in models):
        missing_time.append(_count(n, "model"))
    if n := sum(e.get("wall_seconds") is None for e in episodes):
        missing_time.append(_count(n, "episode entry"))
    if n := sum(not m.get("git_sha") for m in models):
        missing_commit.append(_count(n, "model"))
    if n := sum(not e.get("git_sha") for e in episodes):
        missing_commit.append(_count(n, "episode entry"))
    if missing_time:
        missing.append("time of " + ", ".join(missing_time))
    if missing_commit:
        missing.append("commit of " + ", ".join(missing_commit))
    out["total"] = out["notebook"] + loaded_models + loaded_episodes
    commits = [_commit(record.get("git_sha"), record.get("ttlib_modified_at_start"))]
    for item in [*models, *episodes]:
        if item.get("git_sha"):
            c = _commit(item["git_sha"], item.get("ttlib_modified"))
            commits += [] if c in commits else [c]
    out["commits"] = commits
    # the caches' commits are all known where nothing but times is missing
    out["commits_complete"] = all(x.startswith("time of") for x in missing)
    out["not_recorded"] = missing
    return out


def _episode_groups(episodes: list[dict]) -> list[dict]:
    """Cached episode entries grouped by cache (``d4rl/episodes``, ``maze_q``) and commit."""
    groups: dict[tuple, dict] = {}
    for e in episodes:
        cache = "/".join(e["kind"].split("/")[:2])
        key = (cache, e.get("git_sha"), e.get("ttlib_modified"))
        g = groups.setdefault(
            key, {"cache": cache, "entries": 0, "episodes": 0, "here": 0, "starts": []}
        )
        g |= {"git_sha": e.get("git_sha"), "ttlib_modified": e.get("ttlib_modified")}
        g["entries"] += 1
        g["episodes"] += int(e.get("episodes") or 0)
        g["here"] += bool(e.get("computed_in_this_run"))
        g["starts"] += [e["started_utc"]] if e.get("started_utc") else []
        for k in ("wall_seconds", "cpu_seconds"):
            if e.get(k) is not None:
                g[k] = g.get(k, 0.0) + float(e[k])
            else:
                g[f"{k}_missing"] = g.get(f"{k}_missing", 0) + 1
    return list(groups.values())


def _group_minutes(g: dict, k: str) -> str:
    text = _minutes(g.get(k))
    if g.get(k) is not None and g.get(f"{k}_missing"):
        text += f" ({g[f'{k}_missing']} not recorded)"
    return text


def provenance_markdown(record: dict | Path | str) -> str:
    """The footer of an experiment page: what ran, where, on which code, for how long, the
    cached models and evaluation episodes it used with the time and commit of the code that
    made them, and what it all cost (markdown)."""
    if not isinstance(record, dict):
        record = json.loads(Path(record).read_text())
    hw = record.get("hardware", {})
    machine = f"{hw.get('cpu') or 'unknown CPU'}, {hw.get('cores')} cores"
    machine += f", GPU {hw['gpu']}" if hw.get("gpu") else ", no GPU"
    sha = (record.get("git_sha") or "unknown")[:8]
    edited = " (ttlib had uncommitted edits)" if record.get("ttlib_modified_at_start") else ""
    lines = [
        f"**Provenance of this page.** Preset `{record.get('preset')}`, run by "
        f"`{record.get('command')}` at commit `{sha}`{edited} on {machine}, started "
        f"{record.get('started_utc')}; wall time {_minutes(record.get('wall_time_s'))}."
    ]
    cost = compute_summary(record)
    total = (
        f"Compute behind it: {_minutes(cost['total'])} (the notebook's wall time plus the "
        "recorded times of the models and episodes it loaded from the cache)"
    )
    if cost["not_recorded"]:
        total += "; not recorded: " + "; ".join(cost["not_recorded"])
    commits = ", ".join(cost["commits"])
    commits += "" if cost["commits_complete"] else " and others not recorded"
    lines.append(total + f". Commits involved: {commits}.")
    if "cached_episodes" not in record and record.get("episode_seconds") is not None:
        lines.append(
            f"The evaluation episodes took {_minutes(record['episode_seconds'])} "
            "when they were computed (they may come from the cache)."
        )
    models = record.get("models", [])
    if not models:
        lines.append("No cached model was used.")
    else:
        trained = [m.get("train_seconds") for m in models if m.get("train_seconds") is not None]
        trained_here = sum(bool(m.get("trained_in_this_run")) for m in models)
        lines.append(
            f"It used {len(models)} cached model(s), {trained_here}"
            f" trained in this run; their training took {_minutes(sum(trained))} in all"
            + (" (some times not recorded)." if len(trained) < len(models) else ".")
        )
        rows = ["| model | steps | training | trained here | commit | trained (UTC) |"]
        rows.append("|---|---:|---:|---|---|---|")
        for m in models:
            rows.append(
                f"| `{m['model']}` | {m.get('steps')} | {_minutes(m.get('train_seconds'))} | "
                f"{'yes' if m.get('trained_in_this_run') else 'no'} | "
                f"{_commit(m.get('git_sha'), m.get('ttlib_modified'))} | "
                f"{m.get('trained_utc') or 'not recorded'} |"
            )
        lines.append("\n".join(rows))
    episodes = record.get("cached_episodes")
    if episodes:
        here = sum(bool(e.get("computed_in_this_run")) for e in episodes)
        lines.append(
            f"It used {_count(len(episodes), 'cached entry')} of evaluation episodes, {here} "
            f"computed in this run; they took {_minutes(cost['episodes'])} (wall) when they "
            "were computed. By cache and by the commit of the code that computed them:"
        )
        rows = [
            "| cache | episodes (entries) | computed here | wall / CPU | commit | started (UTC) |",
            "|---|---:|---:|---:|---|---|",
        ]
        for g in _episode_groups(episodes):
            starts = sorted(g["starts"])
            when = "not recorded" if not starts else starts[0]
            when += f" to {starts[-1]}" if len(set(starts)) > 1 else ""
            rows.append(
                f"| `{g['cache']}` | {g['episodes']} ({g['entries']}) | {g['here']} | "
                f"{_group_minutes(g, 'wall_seconds')} / {_group_minutes(g, 'cpu_seconds')} | "
                f"{_commit(g['git_sha'], g['ttlib_modified'])} | {when} |"
            )
        lines.append("\n".join(rows))
    elif episodes is not None:
        lines.append("No cached evaluation episode was used.")
    return "\n\n".join(lines)


def footer(run: Run, **extra):
    """Finish the run and show its provenance as markdown (the last cell of a notebook)."""
    from IPython.display import Markdown

    return Markdown(provenance_markdown(run.finish(**extra)))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def start(experiment: str, namespace: dict) -> Run:
    """Resolve parameters (one-line error on bad ones), set up outputs, seed, and record."""
    params = resolve(experiment, namespace)
    if params["preset"] == "smoke" and "TTLIB_KEEP_MINARI_PATH" not in os.environ:
        # Smoke datasets are tiny: keep them away from the real ones of the same id.
        smoke_data = repo_root() / "build" / "smoke" / "minari"
        smoke_data.mkdir(parents=True, exist_ok=True)
        os.environ["MINARI_DATASETS_PATH"] = str(smoke_data)
    seed_everything(int(params.get("seed", 0)))
    MODELS_USED.clear()
    EPISODES_USED.clear()
    code_version()  # the commit of the code this process imported, for what it caches
    out = results_dir(experiment, params["preset"])
    return Run(experiment, params, out, RunRecord(experiment, params))


def ensure_dataset(env: str, kind: str, transitions: int, seed: int = 0) -> str:
    """The id of the local dataset ``ttlib/<env>/<kind>-v0``, generating it if missing.

    An existing dataset of another size is not silently replaced: that would change the
    published results behind their back. The error says how to regenerate it.
    """
    import minari

    from ttlib.datagen.datasets_gen import GenConfig, make_dataset
    from ttlib.envs import dataset_id

    did = dataset_id(env, kind)
    if did in minari.list_local_datasets():
        have = minari.load_dataset(did).total_steps
        want = 2 * transitions if kind == "medium-expert" else transitions  # D4RL: concatenated
        if kind != "medium-replay" and have != want:
            raise ValueError(
                f"local dataset {did} has {have} transitions, this preset wants {want}; "
                f"regenerate with `ttlib make-data --env {env} --kind {kind} "
                f"--transitions {transitions} --overwrite`"
            )
        return did
    # The committed policies, found from the checkout (a notebook's cwd is notebooks/).
    policies = repo_root() / "results" / "policies"
    make_dataset(env, kind, GenConfig(transitions=transitions, seed=seed, policy_dir=str(policies)))
    return did

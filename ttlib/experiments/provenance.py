"""What a run's results cost and which code made them, read from its ``run.json``.

:func:`compute_summary` sums the notebook's time with that of the cached models and evaluation
episodes it loaded and lists the commits involved (``results/runs.csv``);
:func:`provenance_markdown` is the footer of an experiment page.
"""

from __future__ import annotations

import json
from pathlib import Path


def minutes_text(seconds) -> str:
    return "not recorded" if seconds is None else f"{float(seconds) / 60:.1f} min"


def commit_text(sha: str | None, modified: bool | None = None) -> str:
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
    commits = [commit_text(record.get("git_sha"), record.get("ttlib_modified_at_start"))]
    for item in [*models, *episodes]:
        if item.get("git_sha"):
            c = commit_text(item["git_sha"], item.get("ttlib_modified"))
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
    text = minutes_text(g.get(k))
    if g.get(k) is not None and g.get(f"{k}_missing"):
        text += f" ({g[f'{k}_missing']} not recorded)"
    return text


def machine_text(hw: dict) -> str:
    """A run's ``hardware`` record in words: CPU, cores, GPU."""
    text = f"{hw.get('cpu') or 'unknown CPU'}, {hw.get('cores')} cores"
    return text + (f", GPU {hw['gpu']}" if hw.get("gpu") else ", no GPU")


def provenance_markdown(record: dict | Path | str) -> str:
    """The footer of an experiment page: what ran, where, on which code, for how long, the
    cached models and evaluation episodes it used with the time and commit of the code that
    made them, and what it all cost (markdown)."""
    if not isinstance(record, dict):
        record = json.loads(Path(record).read_text())
    machine = machine_text(record.get("hardware", {}))
    sha = (record.get("git_sha") or "unknown")[:8]
    edited = " (ttlib had uncommitted edits)" if record.get("ttlib_modified_at_start") else ""
    lines = [
        f"**Provenance of this page.** Preset `{record.get('preset')}`, run by "
        f"`{record.get('command')}` at commit `{sha}`{edited} on {machine}, started "
        f"{record.get('started_utc')}; wall time {minutes_text(record.get('wall_time_s'))}."
    ]
    cost = compute_summary(record)
    total = (
        f"Compute behind it: {minutes_text(cost['total'])} (the notebook's wall time plus the "
        "recorded times of the models and episodes it loaded from the cache)"
    )
    if cost["not_recorded"]:
        total += "; not recorded: " + "; ".join(cost["not_recorded"])
    commits = ", ".join(cost["commits"])
    commits += "" if cost["commits_complete"] else " and others not recorded"
    lines.append(total + f". Commits involved: {commits}.")
    if "cached_episodes" not in record and record.get("episode_seconds") is not None:
        lines.append(
            f"The evaluation episodes took {minutes_text(record['episode_seconds'])} "
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
            f" trained in this run; their training took {minutes_text(sum(trained))} in all"
            + (" (some times not recorded)." if len(trained) < len(models) else ".")
        )
        # four columns, the name as plain text so that it wraps at its hyphens: the table
        # stays within the page's column (a code-font name does not wrap)
        rows = ["| model | steps | training | trained by (commit, UTC) |", "|---|---:|---:|---|"]
        for m in models:
            here = " (this run)" if m.get("trained_in_this_run") else ""
            took = minutes_text(m.get("train_seconds")) + here
            rows.append(
                f"| {m['model']} | {m.get('steps')} | {took} | "
                f"{commit_text(m.get('git_sha'), m.get('ttlib_modified'))}, "
                f"{m.get('trained_utc') or 'time not recorded'} |"
            )
        lines.append("\n".join(rows))
    episodes = record.get("cached_episodes")
    if episodes:
        here = sum(bool(e.get("computed_in_this_run")) for e in episodes)
        lines.append(
            f"It used {_count(len(episodes), 'cached entry')} of evaluation episodes, {here} "
            f"computed in this run; they took {minutes_text(cost['episodes'])} (wall) when they "
            "were computed. By cache and by the commit of the code that computed them:"
        )
        rows = [
            "| cache | episodes (entries) | computed here | wall / CPU | by (commit, UTC) |",
            "|---|---:|---:|---:|---|",
        ]
        for g in _episode_groups(episodes):
            starts = sorted(g["starts"])
            when = "not recorded" if not starts else starts[0]
            when += f" to {starts[-1]}" if len(set(starts)) > 1 else ""
            rows.append(
                f"| `{g['cache']}` | {g['episodes']} ({g['entries']}) | {g['here']} | "
                f"{_group_minutes(g, 'wall_seconds')} / {_group_minutes(g, 'cpu_seconds')} | "
                f"{commit_text(g['git_sha'], g['ttlib_modified'])}, {when} |"
            )
        lines.append("\n".join(rows))
    elif episodes is not None:
        lines.append("No cached evaluation episode was used.")
    return "\n\n".join(lines)

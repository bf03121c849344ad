"""Figure and tables of the planning/training benchmarks, read from results/benchmarks/*.json.

    python benchmarks/plot.py            # writes results/benchmarks/planning.{png,svg},
                                         # summary.csv (planning), agreement.csv, training.csv,
                                         # agreement_trained.csv, window_effect.csv,
                                         # window_effect_summary.csv,
                                         # roofline.csv, memory_bandwidth.csv,
                                         # roofline.{png,svg} (from roofline.json)

The book's performance page shows these files; no number there is typed by hand. The script
does not assume a fixed layout of ``planning.json``: it walks the whole file and takes every
dict with an ``env_steps_per_s`` entry as one measurement, reading the settings (horizon,
beam width, episodes planned together, planner implementation) from the record itself, from
a ``planner`` dict next to it or above it, from a setting of the same name under
``configs``, or from the names on its path (``cpu_H5_B32``, ``"16"`` under a section named
``episodes_together``, ``B64`` / ``"64"`` under a section whose name contains ``beam``).
New sections therefore appear in the CSV without changes here, and any group of
measurements that differs only in beam width gets an "env-steps/s vs beam width" panel.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "results" / "benchmarks"
# "ttlib_before": the planner of an earlier commit, timed in the same run (--baseline-rev)
IMPLEMENTATIONS = ("ttlib_before", "ttlib", "original")
COLOURS = {"ttlib_before": "#A1C9F4", "ttlib": "#4C72B0", "original": "#DD8452"}
MARKERS = "osD^v<>px*"

# Columns of summary.csv, in order: (key in a row, header).
PLANNING_COLUMNS = [
    ("section", "section"),
    ("setting", "setting"),
    ("implementation", "planner"),
    ("model", "model (layers x width)"),
    ("horizon", "horizon"),
    ("beam_width", "beam width"),
    ("episodes", "episodes together"),
    ("env_steps_per_s", "env-steps/s"),
    ("s_per_env_step", "CPU s per env-step"),
    ("forward_passes_per_call", "forward passes per plan"),
    ("gflop_per_env_step", "GFLOP per env-step"),
    ("achieved_gflop_s", "achieved GFLOP/s"),
    ("percent_of_matmul_peak", "share of matmul peak (%)"),
    ("speedup", "ttlib speed-up"),
    ("device", "device"),
    ("commit", "commit"),
    ("note", "note"),
]


# ------------------------------------------------------------------------- reading
def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _from_name(name: str, letters: tuple[str, ...]) -> int | None:
    """``cpu_H5_B32`` with letters ("H",) -> 5; ("beam", "B") -> 32 (case-sensitive)."""
    for letter in letters:
        m = re.search(rf"(?:^|[_\-]){letter}_?(\d+)(?:$|[_\-])", name)
        if m:
            return int(m.group(1))
    return None


def _is_record(node: Any) -> bool:
    return isinstance(node, dict) and ("env_steps_per_s" in node or "skipped" in node)


def _walk(node: Any, path: tuple[str, ...], ancestors: tuple[dict, ...]):
    """Yield (path, record, ancestors) for every measurement in ``node``."""
    if _is_record(node):
        yield path, node, ancestors
        return
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("planner", "machine", "model", "sections_run"):
                continue
            yield from _walk(value, (*path, str(key)), (*ancestors, node))


def _planner_settings(record: dict, ancestors: tuple[dict, ...]) -> dict:
    """Planner settings stored with a record or in the nearest enclosing ``planner`` dict."""
    found: dict = {}
    for node in (record, *reversed(ancestors)):
        for source in (node.get("planner"), node):
            if isinstance(source, dict):
                for key in ("horizon", "beam_width", "n_expand", "episodes"):
                    if key in source and key not in found and _int(source[key]) is not None:
                        found[key] = int(source[key])
    return found


def planning_rows(data: dict) -> list[dict]:
    """One row per measurement in planning.json, settings inferred as the module says."""
    configs = data.get("configs", {}) if isinstance(data.get("configs"), dict) else {}
    sections_run = data.get("sections_run", {}) or {}
    machine = data.get("machine", {}) or {}
    rows = []
    for path, record, ancestors in _walk(data, (), ()):
        section = path[0]
        implementation = next((p for p in path if p in IMPLEMENTATIONS), "ttlib")
        names = [p for p in path[1:] if p not in IMPLEMENTATIONS]
        numeric = [p for p in names if _int(p) is not None]
        setting = next((p for p in names if _int(p) is None), "")
        settings = _planner_settings(record, ancestors)
        # a setting measured elsewhere under `configs` lends its planner settings
        if setting in configs and isinstance(configs[setting], dict):
            for key, value in _planner_settings(configs[setting], ()).items():
                settings.setdefault(key, value)
        for name in names:
            for key, letters in (
                ("horizon", ("H", "horizon")),
                ("beam_width", ("B", "beam", "beam_width")),
                ("episodes", ("E", "episodes")),
            ):
                value = _from_name(name, letters)
                if settings.get(key) is None and value is not None:
                    settings[key] = value
        if numeric:  # a bare number on the path names the swept quantity of its section
            number = int(numeric[-1])
            if "episode" in section:
                settings["episodes"] = settings.get("episodes") or number
            elif "beam" in section:
                settings["beam_width"] = number
            elif "horizon" in section:
                settings["horizon"] = number
        episodes = settings.get("episodes") or 1
        run = sections_run.get(section) or sections_run.get(section.split("_")[0]) or {}
        if not isinstance(run, dict):
            run = {}
        if section == "episodes_together":
            run = sections_run.get("episodes", run) if isinstance(sections_run, dict) else run
        elif section == "configs":
            run = sections_run.get("speed", run) if isinstance(sections_run, dict) else run
        size = (configs.get(setting) or {}).get("model") or data.get("model") or {}
        row = {
            "section": section,
            "setting": setting,
            "model": f"{size['n_layer']}x{size['n_embd']}" if "n_layer" in size else None,
            "implementation": implementation,
            "horizon": settings.get("horizon"),
            "beam_width": settings.get("beam_width"),
            "n_expand": settings.get("n_expand"),
            "episodes": episodes,
            "device": record.get("device") or machine.get("device") or machine.get("cpu_model"),
            "commit": record.get("git_sha") or run.get("git_sha") or machine.get("git_sha"),
            "note": record.get("skipped", ""),
        }
        if "env_steps_per_s" in record:
            steps = record["env_steps_per_s"]
            row["env_steps_per_s"] = steps
            row["s_per_env_step"] = 1.0 / steps if steps else None
            gflop = record.get("gflop_per_call")
            row["gflop_per_env_step"] = gflop / episodes if gflop is not None else None
            row["forward_passes_per_call"] = record.get("forward_passes_per_call")
            row["achieved_gflop_s"] = record.get("achieved_gflop_s")
            frac = record.get("fraction_of_matmul_peak")
            row["percent_of_matmul_peak"] = 100 * frac if frac is not None else None
        parent = ancestors[-1] if ancestors else {}
        if implementation == "ttlib" and "speedup_ttlib_over_original" in parent:
            row["speedup"] = parent["speedup_ttlib_over_original"]
        if implementation == "ttlib_before":
            row["commit"] = record.get("git_rev") or row["commit"]
        rows.append(row)
    return rows


def agreement_rows(data: dict) -> list[dict]:
    """One row per case of the cached-vs-original agreement check in planning.json."""
    rows = []
    for case, r in (data.get("agreement") or {}).items():
        if not isinstance(r, dict):
            continue
        row = {"case": case, "model": data.get("agreement_model", "")}
        for key in ("context_transitions", "horizon", "beam_width", "contexts"):
            row[key] = r.get(key)
        for key in ("identical_first_action", "identical_plan"):
            row[key] = 100 * r[key] if r.get(key) is not None else None
        row["score_abs_diff_mean"] = r.get("score_abs_diff_mean")
        rows.append(row)
    return rows


def trained_agreement_rows(data: dict) -> list[dict]:
    """The agreement check on a trained checkpoint and real contexts (``agreement_trained``):
    one row per case and context length."""
    rows = []
    trained = data.get("agreement_trained") or {}
    info = trained.get("model") or {}
    label = (
        f"trained {info.get('n_layer')}x{info.get('n_embd')} {info.get('dataset_id')} "
        f"{info.get('discretizer')} step {info.get('step')}"
        if info
        else "trained"
    )
    for case, r in trained.items():
        if not isinstance(r, dict) or "by_context_transitions" not in r:
            continue
        for n, g in r["by_context_transitions"].items():
            row = {"case": case, "model": label, "context_transitions": _int(n)}
            row["horizon"], row["beam_width"] = r.get("horizon"), r.get("beam_width")
            row["contexts"] = g.get("contexts")
            for key in ("identical_first_action", "identical_plan"):
                row[key] = 100 * g[key] if g.get(key) is not None else None
            row["score_abs_diff_mean"] = g.get("score_abs_diff_mean")
            row["action_abs_diff_mean"] = g.get("action_abs_diff_mean")
            row["action_abs_diff_ttlib_2_seeds"] = g.get("action_abs_diff_ttlib_2_seeds_mean")
            rows.append(row)
    return rows


def window_effect_rows(data: dict) -> list[dict]:
    """Closed-loop returns of both planners (the window_effect section), one row per episode."""
    rows = []
    for run, r in (data.get("window_effect") or {}).items():
        if not run.startswith("env_seed_") or not isinstance(r, dict):
            continue
        for impl in ("ttlib", "original"):
            body = r.get(impl) or {}
            for k, ret in enumerate(body.get("returns", [])):
                rows.append(
                    {
                        "planner": impl,
                        "env_seed": (r.get("env_seed") or 0) + k,
                        "steps": body["steps"][k],
                        "return": ret,
                        "horizon": (r.get("planner") or {}).get("horizon"),
                        "beam_width": (r.get("planner") or {}).get("beam_width"),
                        "cpu_s_per_step": body.get("cpu_s_per_step"),
                    }
                )
    return rows


def window_effect_summary(rows: list[dict]) -> list[dict]:
    """Pooled closed-loop returns: each planner's mean ± standard error over its episodes, and
    the paired difference (ttlib − original) over the env seeds both ran."""
    import statistics

    def mean_se(xs: list[float]) -> tuple[float, float | None]:
        m = statistics.fmean(xs)
        se = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else None
        return m, se

    def fmt(xs: list[float]) -> dict:
        m, se = mean_se(xs)
        return {
            "episodes": len(xs),
            "mean": round(m, 2),
            "se": None if se is None else round(se, 2),
        }

    by = {
        impl: {r["env_seed"]: r["return"] for r in rows if r["planner"] == impl}
        for impl in ("ttlib", "original")
    }
    out = [{"what": f"{impl}: return", **fmt(list(v.values()))} for impl, v in by.items() if v]
    paired = sorted(set(by["ttlib"]) & set(by["original"]))
    if paired:
        diffs = [by["ttlib"][s] - by["original"][s] for s in paired]
        out.append({"what": "paired difference, ttlib − original", **fmt(diffs)})
    return out


WINDOW_SUMMARY_COLUMNS = [
    ("what", "closed-loop return"),
    ("episodes", "episodes"),
    ("mean", "mean"),
    ("se", "standard error"),
]

WINDOW_COLUMNS = [
    ("planner", "planner"),
    ("env_seed", "env seed"),
    ("steps", "env steps"),
    ("return", "return"),
    ("horizon", "horizon"),
    ("beam_width", "beam width"),
    ("cpu_s_per_step", "CPU s per step"),
]


AGREEMENT_COLUMNS = [
    ("case", "case"),
    ("context_transitions", "context transitions"),
    ("horizon", "horizon"),
    ("beam_width", "beam width"),
    ("contexts", "contexts"),
    ("identical_first_action", "identical first action (%)"),
    ("identical_plan", "identical plan (%)"),
    ("score_abs_diff_mean", "mean abs score difference"),
    ("model", "model"),
]

TRAINED_AGREEMENT_COLUMNS = [
    *AGREEMENT_COLUMNS[:-1],
    ("action_abs_diff_mean", "mean abs first-action difference"),
    ("action_abs_diff_ttlib_2_seeds", "same, ttlib vs ttlib with another seed"),
    ("model", "model"),
]


def training_rows(data: dict) -> list[dict]:
    """One row per (setting, implementation) in training.json."""
    if "settings" in data:  # the format since issue #19: settings with FLOP/s and peak shares
        return [
            {
                "setting": setting,
                "batch": body["batch"],
                "dropout": body["dropout"],
                "implementation": name,
                "tokens_per_s": body[name]["tokens_per_s"],
                "cpu_s_per_step": body[name]["cpu_s_per_step"],
                "gflop_s": body[name]["achieved_gflop_s"],
                "share_fp32": body[name]["share_of_fp32_peak"],
                "share_bf16": body[name].get("share_of_bf16_peak"),
            }
            for setting, body in data["settings"].items()
            for name in ("ttlib", "ttlib_before", "original", "ttlib_bf16_autocast")
            if name in body
        ]
    rows = []
    sections = [k for k in data if k.startswith("batches")]  # batches, batches_dropout_0, ...
    for batch, body in ((b, v) for k in sections for b, v in (data.get(k) or {}).items()):
        if not isinstance(body, dict):
            continue
        for name, record in body.items():
            if isinstance(record, dict) and "tokens_per_s" in record:
                rows.append(
                    {
                        "batch": _int(batch) or batch,
                        "dropout": body.get("dropout", data.get("model", {}).get("dropout")),
                        "implementation": name,
                        "tokens_per_s": record["tokens_per_s"],
                        "cpu_s_per_step": record.get("cpu_s_per_step"),
                        "tokens_per_step": record.get("tokens_per_step"),
                    }
                )
    return rows


# Parts of a plan in roofline.json, in table order: (key, label).
ROOFLINE_PARTS = [
    ("plan", "whole plan"),
    ("single_token_passes", "single-token passes"),
    ("multi_token_passes", "window passes"),
    ("reorders", "beam reorders"),
    ("rest", "rest: sampling and bookkeeping"),
]

ROOFLINE_COLUMNS = [
    ("setting", "setting"),
    ("model", "model (layers x width)"),
    ("implementation", "planner"),
    ("part", "part of the plan"),
    ("share_of_plan_cpu", "share of plan CPU time (%)"),
    ("cpu_s", "CPU s per plan"),
    ("passes", "forward passes"),
    ("gflop", "GFLOP per plan"),
    ("gb", "GB moved per plan (estimate)"),
    ("kv_share", "of which K/V cache (%)"),
    ("flop_per_byte", "FLOP per byte"),
    ("achieved_gb_s", "achieved GB/s"),
    ("percent_of_bandwidth", "share of measured bandwidth (%)"),
    ("achieved_gflop_s", "achieved GFLOP/s"),
    ("percent_of_peak", "share of matmul peak (%)"),
    ("bound_gflop_s", "roofline bound (GFLOP/s)"),
    ("bound_percent_of_peak", "roofline bound as share of matmul peak (%)"),
    ("bound_by", "bound by"),
    ("percent_of_bound", "share of roofline bound (%)"),
    ("commit", "commit"),
]


def _pct(value: Any) -> float | None:
    return 100 * value if isinstance(value, (int, float)) else None


def _kv_gb(part: dict) -> float:
    by_part = part.get("gb_by_part") or {}
    return by_part.get("kv_read", 0) + by_part.get("kv_write", 0)


def _kv_share(record: dict, key: str) -> float | None:
    """Percentage of a part's estimated bytes that are K/V cache reads, writes or copies
    (the beam reorders copy nothing else; the whole plan sums its parts)."""
    part = record.get(key) or {}
    if not part.get("gb"):
        return None
    if key == "reorders":
        return 100.0
    if key == "plan":
        kinds = [record.get(k) or {} for k in ("single_token_passes", "multi_token_passes")]
        kv = sum(_kv_gb(k) for k in kinds) + (record.get("reorders") or {}).get("gb", 0)
        return 100 * kv / part["gb"]
    return 100 * _kv_gb(part) / part["gb"] if part.get("gb_by_part") else None


def roofline_rows(data: dict) -> list[dict]:
    """One row per (setting, planner, part of the plan) in roofline.json."""
    rows = []
    commit = (data.get("machine") or {}).get("git_sha")
    for setting, body in (data.get("configs") or {}).items():
        size = body.get("model") or {}
        for impl in IMPLEMENTATIONS:
            r = body.get(impl)
            if not isinstance(r, dict) or "plan" not in r:
                continue
            for key, label in ROOFLINE_PARTS:
                row = {
                    "setting": setting,
                    "model": f"{size['n_layer']}x{size['n_embd']}" if "n_layer" in size else None,
                    "implementation": impl,
                    "part": label,
                    "commit": commit,
                }
                if key == "rest":
                    if r.get("rest_cpu_s") is None:
                        continue
                    row["cpu_s"] = r["rest_cpu_s"]
                    row["share_of_plan_cpu"] = _pct(r.get("rest_share_of_plan_cpu"))
                    rows.append(row)
                    continue
                part = r.get(key)
                if not isinstance(part, dict):
                    continue
                row["cpu_s"] = part.get("cpu_s")
                row["share_of_plan_cpu"] = (
                    100.0 if key == "plan" else _pct(part.get("share_of_plan_cpu"))
                )
                if key == "plan":
                    row["passes"] = r.get("forward_passes_per_call")
                else:
                    row["passes"] = part.get("passes")
                for k in ("gflop", "gb", "flop_per_byte", "achieved_gb_s", "achieved_gflop_s"):
                    row[k] = part.get(k)
                row["percent_of_bandwidth"] = _pct(part.get("fraction_of_bandwidth"))
                row["percent_of_peak"] = _pct(part.get("fraction_of_matmul_peak"))
                row["bound_gflop_s"] = part.get("roofline_bound_gflop_s")
                peak = data.get("matmul_peak_gflop_s")
                if row["bound_gflop_s"] is not None and peak:
                    row["bound_percent_of_peak"] = 100 * row["bound_gflop_s"] / peak
                row["bound_by"] = part.get("bound_by")
                row["percent_of_bound"] = _pct(part.get("fraction_of_roofline_bound"))
                row["kv_share"] = _kv_share(r, key)
                rows.append(row)
    return rows


def bandwidth_rows(data: dict) -> list[dict]:
    """The measured bandwidths (memory_bandwidth_gb_s) and matmul peak of roofline.json."""
    used = data.get("bandwidth_for_roofline_gb_s")
    rows = []
    for body in (data.get("memory_bandwidth_gb_s") or {}).values():
        best = max(body["read_gb_s"], body["copy_gb_s"])
        rows.append(
            {
                "array_mib": body["array_mib"],
                "read_gb_s": body["read_gb_s"],
                "copy_gb_s": body["copy_gb_s"],
                "roofline": "yes" if used is not None and abs(best - used) < 1e-9 else "",
            }
        )
    return rows


BANDWIDTH_COLUMNS = [
    ("array_mib", "array size (MiB)"),
    ("read_gb_s", "read, a.sum() (GB/s)"),
    ("copy_gb_s", "copy, read + write (GB/s)"),
    ("roofline", "used for the roofline"),
]


def plot_roofline(data: dict, out: Path) -> list[Path]:
    """Achieved GFLOP/s against FLOP per byte, under the measured roof."""
    rows = [r for r in roofline_rows(data) if r.get("flop_per_byte")]
    peak = data.get("matmul_peak_gflop_s")
    bandwidth = data.get("bandwidth_for_roofline_gb_s")
    if not rows or not peak or not bandwidth:
        return []
    fig, ax = plt.subplots(figsize=(8.6, 4.2))
    xs = [r["flop_per_byte"] for r in rows]
    lo, hi = min(min(xs) / 2, 0.5), max(max(xs) * 2, 4 * peak / bandwidth)
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    (roof,) = ax.plot(
        grid,
        [min(peak, x * bandwidth) for x in grid],
        color="0.3",
        linewidth=1.5,
        label=f"roof: min({peak:.0f} GFLOP/s,\nFLOP/byte x {bandwidth:.1f} GB/s)",
    )
    markers = {label: MARKERS[i] for i, (_, label) in enumerate(ROOFLINE_PARTS)}
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    colours = {s: plt.get_cmap("tab10")(j) for j, s in enumerate(settings)}
    for r in rows:
        if r["part"] == "whole plan":
            continue
        original = r["implementation"] == "original"
        ax.scatter(
            r["flop_per_byte"],
            r["achieved_gflop_s"],
            marker=markers[r["part"]],
            color=colours[r["setting"]],
            edgecolor="black" if original else "none",
            linewidth=1.2,
            s=45,
            zorder=3,
        )
    handles = [roof]
    handles += [
        plt.Line2D([], [], marker=markers[label], linestyle="", color="0.4", label=label)
        for _, label in ROOFLINE_PARTS[1:3]
    ]
    handles += [
        plt.Line2D([], [], marker="o", linestyle="", color=colours[s], label=s) for s in settings
    ]
    if any(r["implementation"] == "original" for r in rows):
        handles.append(
            plt.Line2D(
                [],
                [],
                marker="D",
                linestyle="",
                color="white",
                markeredgecolor="black",
                label="black edge: original planner\n(full pass per token)",
            )
        )
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP per estimated byte)")
    ax.set_ylabel("achieved GFLOP/s (CPU time)")
    ax.set_title(
        "forward passes of one plan against the measured roofline", loc="left", fontsize=10
    )
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        path = out / f"roofline.{ext}"
        fig.savefig(path, dpi=130, metadata={"Date": None} if ext == "svg" else {})
        paths.append(path)
    plt.close(fig)
    return paths


# ------------------------------------------------------------------------- writing
def _fmt(value: Any) -> str:
    """Four significant digits, no exponent for the magnitudes in these tables."""
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    text = f"{value:.4g}"
    if "e" in text:  # below 0.001
        text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text


def write_csv(rows: list[dict], columns: list[tuple[str, str]], path: Path) -> Path:
    """Only the columns that hold a value somewhere. The book parses every cell as MyST
    markdown, so no header or cell may start with ``%`` (a comment there)."""
    used = [(k, h) for k, h in columns if any(r.get(k) not in (None, "") for r in rows)]
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([h for _, h in used])
        for r in rows:
            writer.writerow([_fmt(r.get(k)) for k, _ in used])
    return path


def _label(row: dict, sep: str = " ") -> str:
    parts = [row["setting"] or row["section"]]
    if row.get("horizon") is not None and row.get("beam_width") is not None:
        parts = [f"H{row['horizon']} B{row['beam_width']}"]
        if row["setting"]:
            parts.insert(0, row["setting"].split("_")[0])
        if row.get("model"):
            return " ".join(parts) + sep + row["model"]
    return " ".join(parts)


def beam_sweeps(rows: list[dict]) -> dict[tuple, list[dict]]:
    """Groups of single-episode measurements that differ only in beam width (>= 3 widths)."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("env_steps_per_s") and r.get("beam_width") and r.get("episodes") == 1:
            key = (r["implementation"], r.get("horizon"), r.get("n_expand"), r.get("device") or "")
            groups[key].append(r)
    return {
        k: sorted(v, key=lambda r: r["beam_width"])
        for k, v in groups.items()
        if len({r["beam_width"] for r in v}) >= 3
    }


def plot(rows: list[dict], machine: dict, out: Path) -> list[Path]:
    configs = [r for r in rows if r["section"] == "configs" and r.get("env_steps_per_s")]
    episodes = [r for r in rows if r["section"] == "episodes_together"]
    sweeps = beam_sweeps(rows)
    panels = [p for p, present in (("configs", configs), ("episodes", episodes)) if present]
    if sweeps:
        panels.insert(0, "beam")
    if not panels:
        raise SystemExit("no planning measurement found")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.9), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "beam":
            devices = {k[3] for k in sweeps}
            for i, ((impl, horizon, _, device), group) in enumerate(
                sorted(sweeps.items(), key=str)
            ):
                # the same (beam, horizon) may be measured in several sections: average them
                by_beam: dict[int, list[float]] = defaultdict(list)
                for r in group:
                    by_beam[r["beam_width"]].append(r["env_steps_per_s"])
                xs = sorted(by_beam)
                ys = [sum(by_beam[x]) / len(by_beam[x]) for x in xs]
                ax.plot(
                    xs,
                    ys,
                    marker=MARKERS[i % len(MARKERS)],
                    color=COLOURS.get(impl),
                    label=f"{impl}, horizon {horizon}"
                    + (f", {device}" if len(devices) > 1 else ""),
                )
            ax.set_xscale("log", base=2)
            widths = sorted({r["beam_width"] for g in sweeps.values() for r in g})
            ax.set_xticks(widths, [str(w) for w in widths])
            ax.minorticks_off()
            ax.set_yscale("log")
            ax.set_xlabel("beam width")
            ax.set_ylabel("env-steps/s (one plan per step)")
            ax.set_title("planning speed vs beam width", loc="left", fontsize=10)
            ax.legend(fontsize=8)
        elif panel == "configs":
            settings = list(dict.fromkeys(r["setting"] for r in configs))
            present = [m for m in IMPLEMENTATIONS if any(r["implementation"] == m for r in configs)]
            width = 0.8 / len(present)
            offset = {m: (j - (len(present) - 1) / 2) * width for j, m in enumerate(present)}
            for impl in present:
                xs, ys = [], []
                for i, s in enumerate(settings):
                    for r in configs:
                        if r["setting"] == s and r["implementation"] == impl:
                            xs.append(i + offset[impl])
                            ys.append(r["env_steps_per_s"])
                if xs:
                    label = "ttlib, earlier commit" if impl == "ttlib_before" else impl
                    ax.bar(xs, ys, width, color=COLOURS[impl], label=label)
            for i, s in enumerate(settings):
                ours = [r for r in configs if r["setting"] == s and r.get("speedup")]
                if ours:
                    r = ours[0]
                    ax.annotate(
                        f"{r['speedup']:.1f}x",
                        xy=(i + offset["ttlib"], r["env_steps_per_s"]),
                        xytext=(0, 3),
                        textcoords="offset points",
                        ha="center",
                        fontsize=9,
                    )
            labels = [
                _label(next(r for r in configs if r["setting"] == s), sep="\n") for s in settings
            ]
            ax.set_xticks(range(len(settings)), labels)
            ax.set_yscale("log")
            low, high = ax.get_ylim()
            ax.set_ylim(low, high * 2)
            ax.set_ylabel("env-steps/s (one plan per step)")
            ax.set_title("KV-cache planner vs original, same weights", loc="left", fontsize=10)
            ax.legend(fontsize=8)
        else:
            by_setting: dict[str, list[dict]] = defaultdict(list)
            for r in episodes:
                by_setting[r["setting"]].append(r)
            all_x = sorted({r["episodes"] for r in episodes})
            notes: list[str] = []
            for i, group in enumerate(by_setting.values()):
                done = sorted(
                    (r for r in group if r.get("env_steps_per_s")), key=lambda r: r["episodes"]
                )
                if not done:
                    continue
                base = done[0]["env_steps_per_s"] / done[0]["episodes"]
                ax.plot(
                    [r["episodes"] for r in done],
                    [r["env_steps_per_s"] / base for r in done],
                    marker=MARKERS[i % len(MARKERS)],
                    label=_label(done[0]),
                )
                skipped = [r for r in group if not r.get("env_steps_per_s")]
                for r in skipped:
                    notes.append(
                        f"{_label(done[0])}, {r['episodes']} episodes: not run ({r['note']})"
                    )
            ax.plot(all_x, all_x, color="0.7", linestyle="--", linewidth=1, label="ideal (linear)")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log", base=2)
            ax.set_xticks(all_x, [str(x) for x in all_x])
            ax.set_yticks(all_x, [str(x) for x in all_x])
            ax.minorticks_off()
            if notes:
                ax.text(
                    0.98,
                    0.55,
                    "\n".join(notes),
                    transform=ax.transAxes,
                    ha="right",
                    va="bottom",
                    fontsize=7,
                    color="0.35",
                    wrap=True,
                )
            ax.set_xlabel("episodes planned together (one batch)")
            ax.set_ylabel("env-steps/s relative to one episode")
            ax.set_title("batching episodes (ttlib)", loc="left", fontsize=10)
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    cpu = machine.get("device") or machine.get("cpu_model", "")
    threads = machine.get("torch_threads")
    torch = machine.get("torch", "")
    where = ", ".join(
        x
        for x in (
            cpu,
            f"{threads} torch thread{'s' if threads != 1 else ''}" if threads else "",
            f"torch {torch}",
        )
        if x
    )
    timing = "CPU time of the process" if "process" in str(machine.get("timing", "")) else "time"
    fig.suptitle(f"{where}; {timing}", fontsize=9, x=0.01, ha="left")
    fig.tight_layout()
    paths = []
    for ext in ("png", "svg"):
        path = out / f"planning.{ext}"
        fig.savefig(path, dpi=130, metadata={"Date": None} if ext == "svg" else {})
        paths.append(path)
    plt.close(fig)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folder", type=Path, default=FOLDER, help="where the JSONs are and go")
    args = p.parse_args(argv)
    plt.rcParams["svg.hashsalt"] = "ttlib-benchmarks"
    planning = json.loads((args.folder / "planning.json").read_text())
    rows = planning_rows(planning)
    print(write_csv(rows, PLANNING_COLUMNS, args.folder / "summary.csv"))
    for path in plot(rows, planning.get("machine", {}), args.folder):
        print(path)
    agreement = agreement_rows(planning)
    if agreement:
        print(write_csv(agreement, AGREEMENT_COLUMNS, args.folder / "agreement.csv"))
    trained = trained_agreement_rows(planning)
    if trained:
        path = args.folder / "agreement_trained.csv"
        print(write_csv(trained, TRAINED_AGREEMENT_COLUMNS, path))
    window = window_effect_rows(planning)
    if window:
        print(write_csv(window, WINDOW_COLUMNS, args.folder / "window_effect.csv"))
        path = args.folder / "window_effect_summary.csv"
        print(write_csv(window_effect_summary(window), WINDOW_SUMMARY_COLUMNS, path))
    roofline_json = args.folder / "roofline.json"
    if roofline_json.exists():
        data = json.loads(roofline_json.read_text())
        print(write_csv(roofline_rows(data), ROOFLINE_COLUMNS, args.folder / "roofline.csv"))
        path = args.folder / "memory_bandwidth.csv"
        print(write_csv(bandwidth_rows(data), BANDWIDTH_COLUMNS, path))
        for path in plot_roofline(data, args.folder):
            print(path)
    training_json = args.folder / "training.json"
    if training_json.exists():
        columns = [
            ("setting", "setting"),
            ("batch", "batch (windows)"),
            ("dropout", "dropout"),
            ("implementation", "implementation"),
            ("tokens_per_s", "tokens/s"),
            ("cpu_s_per_step", "CPU s per step"),
            ("tokens_per_step", "tokens per step"),
            ("gflop_s", "GFLOP/s"),
            ("share_fp32", "share of fp32 matmul peak"),
            ("share_bf16", "share of bf16 matmul peak"),
        ]
        rows = training_rows(json.loads(training_json.read_text()))
        print(write_csv(rows, columns, args.folder / "training.csv"))


if __name__ == "__main__":
    main()

"""Experiment presets (``_config.yml``) and the notebook parameters they fill in.

A notebook's ``parameters`` cell sets ``preset`` and leaves every other knob ``None``;
:func:`resolve` fills each ``None`` from the preset's block and keeps what the user passed
with ``papermill -p NAME VALUE``. Outputs of the ``cpu`` and ``paper`` presets go to
``results/``; ``smoke`` runs write under ``build/`` so they never overwrite published results.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml

from ttlib.errors import ConfigError, is_int  # ConfigError shows as one line in a notebook

PRESETS = ("smoke", "cpu", "paper")
EXPERIMENTS = (
    "prediction",
    "attention",
    "imitation",
    "goal_reaching",
    "d4rl",
    "maze_q",
    "antmaze",
    "compute_study",
)
_IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def repo_root() -> Path:
    """The checkout that holds ``_config.yml``: $TTLIB_ROOT, the cwd or a parent, or the
    folder above the installed package (editable installs)."""
    if "TTLIB_ROOT" in os.environ:
        return Path(os.environ["TTLIB_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "_config.yml").exists() and (d / "ttlib").is_dir():
            return d
    return Path(__file__).resolve().parent.parent


def load_presets(path: str | Path | None = None) -> dict:
    path = Path(path) if path else repo_root() / "_config.yml"
    if not path.exists():
        raise ConfigError(f"preset file {path} not found; run from the ttlib checkout")
    with open(path) as f:
        return yaml.safe_load(f)


def preset_params(experiment: str, preset: str, path: str | Path | None = None) -> dict:
    presets = load_presets(path)
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(presets)}")
    block = presets[preset]
    if experiment not in block:
        raise ConfigError(f"preset {preset!r} has no block for experiment {experiment!r}")
    return dict(block[experiment])


def _coerce(name: str, value: Any, like: Any) -> Any:
    """Accept a value of the preset's type (ints for floats, lists for lists)."""
    if like is None or value is None:
        return value
    if isinstance(like, bool):
        ok = isinstance(value, bool)
    elif isinstance(like, int | float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and isinstance(like, int) and not isinstance(value, int):
            ok = float(value).is_integer()
            value = int(value) if ok else value
    elif isinstance(like, list):
        ok = isinstance(value, list | tuple)
        value = list(value) if ok else value
    else:
        ok = isinstance(value, type(like))
    if not ok:
        raise ConfigError(
            f"parameter {name}={value!r} has type {type(value).__name__}, "
            f"expected {type(like).__name__} like the preset's {like!r}"
        )
    return value


def resolve(experiment: str, namespace: dict, path: str | Path | None = None) -> dict:
    """Merge a notebook's parameters with its preset; reject unknown names and wrong types.

    ``namespace`` is the notebook's ``globals()`` right after the parameters cell (and the
    cell papermill injects): every public, non-module name in it is a parameter.
    """
    preset = namespace.get("preset", "smoke")
    if preset not in PRESETS:
        near = difflib.get_close_matches(str(preset), PRESETS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"unknown preset {preset!r}{hint}; choose one of {list(PRESETS)}")
    base = preset_params(experiment, preset, path)
    given = {
        k: v
        for k, v in namespace.items()
        if not k.startswith("_")
        and k not in _IPYTHON_NAMES
        and k != "preset"
        and not callable(v)
        and type(v).__name__ != "module"
    }
    unknown = sorted(set(given) - set(base))
    if unknown:
        near = {u: difflib.get_close_matches(u, base, n=1) for u in unknown}
        hints = ", ".join(
            f"{u}" + (f" (did you mean {n[0]}?)" if n else "") for u, n in near.items()
        )
        raise ConfigError(f"unknown parameter(s) for {experiment}: {hints}")
    params = dict(base)
    for k, v in given.items():
        if v is not None:
            params[k] = _coerce(k, v, base[k])
    check_params(experiment, params)
    params["preset"] = preset
    return params


# What the parameters allow, checked before a notebook does any work (a negative episode
# count used to train models first and then fail; a zero beam width was silently clamped).
# Every integer knob is a count or size >= 1, except these:
_AT_LEAST_ZERO = ("seed",)
_MAY_BE_EMPTY = ("longer_envs", "relative_longer")  # lists that may name nothing: optional runs
_CHOICES = {
    "discretizer": ("quantile", "uniform"),
    "discretizers": ("quantile", "uniform"),
    "lr_schedule": ("original", "run_length", "constant"),
    "dataset_namespace": ("ttlib", "mujoco"),
    "antmaze_namespace": ("ttlib", "D4RL"),
}


def check_params(experiment: str, params: dict) -> None:
    """ConfigError naming the first parameter out of range, its value and what is allowed."""

    def bad(name, allowed):
        raise ConfigError(f"parameter {name}={params[name]!r} for {experiment}: {allowed}")

    for name, value in params.items():
        low = 0 if name in _AT_LEAST_ZERO else 1
        if is_int(value) and value < low:
            bad(name, f"must be an integer >= {low}")
        if isinstance(value, list) and not value and name not in _MAY_BE_EMPTY:
            bad(name, "must list at least one value")
        choices = _CHOICES.get(name)
        values = value if isinstance(value, list) else [value]
        if choices and any(v not in choices for v in values):
            bad(name, f"choose from {list(choices)}")
    if "dropout" in params and not 0 <= params["dropout"] < 1:
        bad("dropout", "must be a number in [0, 1)")
    if "n_embd" in params and "n_head" in params and params["n_embd"] % params["n_head"]:
        bad("n_embd", f"must be a multiple of n_head={params['n_head']}")


MODEL_KNOBS = ("n_layer", "n_head", "n_embd", "dropout")


def model_kwargs(params: dict) -> dict:
    """The model-size knobs of a preset block, as overrides for ``gpt_config_for``.

    ``dropout`` is optional: blocks without it keep the paper's 0.1. The cpu blocks that train
    for well under an epoch set it to 0, because dropout then only slows learning, and on a
    CPU it also costs time: with attention dropout SDPA falls back from the fused flash kernel
    to the math path, and drawing the masks alone took 30 % of a training step (4 x 64 Hopper
    model, batch 32: 399 ms per step with dropout 0.1, 178 ms without).
    """
    return {k: params[k] for k in MODEL_KNOBS if k in params}


def train_kwargs(params: dict) -> dict:
    """The training knobs of a preset block, as overrides for ``TrainConfig``.

    ``lr_schedule`` is optional: blocks without it train with the original's schedule. The
    smoke and cpu blocks choose ``run_length``: their models see less than one epoch of
    tokens, so the original's schedule would never leave its warm-up; what that costs at the
    cpu d4rl budget is measured by ``benchmarks/schedule.py`` (the book's fidelity table).
    """
    return {"schedule": params["lr_schedule"]} if "lr_schedule" in params else {}


# ------------------------------------------------------------ output dirs
def results_dir(experiment: str, preset: str) -> Path:
    """``results/<experiment>`` for cpu, ``results/<experiment>-paper`` for paper, and
    ``build/smoke/<experiment>`` for smoke (never the published folder)."""
    root = repo_root()
    if preset == "smoke":
        d = root / "build" / "smoke" / experiment
    elif preset == "paper":
        d = root / "results" / f"{experiment}-paper"
    else:
        d = root / "results" / experiment
    d.mkdir(parents=True, exist_ok=True)
    return d

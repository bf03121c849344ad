"""Long-horizon, open-loop prediction: the Trajectory Transformer used as a dynamics model.

Both models get the same start state s_0 and the same action sequence a_0 … a_{H-1} of a
held-out trajectory. The Trajectory Transformer writes s_0 and every true action into its
sequence as tokens and fills in everything else itself (reward, value, next state) one token
at a time; the single-step model of :mod:`ttlib.baselines` applies itself H times. Both are
scored against the states the simulator actually visited.

The KV cache makes each predicted token one small forward pass. When the sequence outgrows
the model's block, the window jumps forward to start as many transitions before the current
one as fit and is re-encoded in one pass: the planner's own window (:mod:`ttlib.search`).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ttlib.baselines import DynamicsConfig, ProbabilisticDynamics, train_dynamics
from ttlib.data import DataConfig, Episode, data_fingerprint, load_episodes
from ttlib.discretize import Discretizer
from ttlib.envs import make_env
from ttlib.experiments.cache import cached_model, train_config
from ttlib.experiments.presets import model_kwargs
from ttlib.experiments.provenance import commit_text, machine_text, minutes_text
from ttlib.io import load_torch
from ttlib.train import TrainConfig
from ttlib.window import Window  # the planner's window: one jump rule for both

DECODES = ("argmax", "expectation")

# Observation indices of the joint angles (gymnasium v5 locomotion, x position excluded).
JOINT_ANGLES: dict[str, dict[str, int]] = {
    "hopper": {"torso": 1, "thigh": 2, "leg": 3, "foot": 4},
    "walker2d": {"torso": 1, "thigh": 2, "leg": 3, "foot": 4},
    "halfcheetah": {"torso": 1, "bthigh": 2, "bshin": 3, "bfoot": 4, "fthigh": 5, "fshin": 6},
}


# ------------------------------------------------------------------ shared model configs
def tt_configs(
    dataset_id: str,
    params: dict,
    held_out_fraction: float = 0.1,
) -> tuple[DataConfig, TrainConfig, dict]:
    """Data, training and model settings of the analysed models, from a notebook's params.

    The prediction and attention notebooks both call this, so at equal presets their configs
    are equal and :func:`ttlib.experiments.cache.train_tt` trains the Hopper model only once.
    The last ``held_out_fraction`` of the dataset's transitions (whole episodes) is never
    trained on: :func:`split_episodes` returns it as the test set.
    """
    data_cfg = DataConfig(
        dataset_id=dataset_id,
        discretizer=params["discretizer"],
        max_transitions=int(round((1 - held_out_fraction) * params["dataset_transitions"])),
    )
    return data_cfg, train_config(params, 500), model_kwargs(params)


def longer_configs(
    dataset_id: str, params: dict, factor: int
) -> tuple[DataConfig, TrainConfig, dict]:
    """:func:`tt_configs` for ``factor`` times the steps (with the ``run_length`` schedule the
    learning rate then decays over the longer run): the page's longer-trained model."""
    return tt_configs(dataset_id, {**params, "train_steps": factor * params["train_steps"]})


def kept_run(
    models: Path, data_cfg: DataConfig, train_cfg: TrainConfig, model_kw: dict
) -> Path | None:
    """The folder in ``models`` whose recorded data and training configs are these and whose
    model has the settings ``model_kw`` (:func:`tt_configs`' third value), or None."""

    def as_stored(d: dict) -> dict:  # tuples -> lists, as config.json holds them
        return json.loads(json.dumps(d))

    data, train = as_stored(data_cfg.to_dict()), as_stored(train_cfg.to_dict())
    for config in sorted(models.glob("*/config.json")):
        c = json.loads(config.read_text())
        model = c.get("model", {})
        same_model = all(model.get(k) == v for k, v in as_stored(model_kw).items())
        if c.get("data") == data and c.get("train") == train and same_model:
            return config.parent
    return None


def keep_run(folder: Path, keep: Path) -> Path:
    """Copy a model's cache folder (its resume checkpoint) and its training record
    (``<folder>.json``: time and commit) into ``keep``, where git can hold them."""
    shutil.copytree(folder, keep / folder.name, dirs_exist_ok=True)
    if folder.with_suffix(".json").exists():
        shutil.copy2(folder.with_suffix(".json"), keep / f"{folder.name}.json")
    return keep / folder.name


def restore_kept(keep: Path, models: Path) -> list[str]:
    """Put the runs kept in ``keep`` (:func:`keep_run`) into the model cache ``models`` where
    the cache holds none or fewer steps of them, so training resumes from, or loads, the kept
    checkpoint. Returns the names restored."""
    restored = []
    for ckpt in sorted(keep.glob("*/checkpoint.pt")):
        target = models / ckpt.parent.name
        have = target / "checkpoint.pt"
        if have.exists() and load_torch(have)["step"] >= load_torch(ckpt)["step"]:
            continue
        shutil.copytree(ckpt.parent, target, dirs_exist_ok=True)
        record = keep / f"{ckpt.parent.name}.json"
        if record.exists():
            shutil.copy2(record, target.with_suffix(".json"))
        restored.append(target.name)
    return restored


def split_episodes(data_cfg: DataConfig) -> tuple[list[Episode], list[Episode]]:
    """(training episodes, held-out episodes): those ``data_cfg`` keeps and all the others."""
    train = load_episodes(data_cfg)
    every = load_episodes(replace(data_cfg, max_transitions=None))
    return train, every[len(train) :]


# ------------------------------------------------------------------ held-out segments
@dataclass
class Segments:
    """n pieces of real trajectories: what both models are given and what they must predict."""

    states: np.ndarray  # (n, H+1, N) true states s_0 … s_H
    actions: np.ndarray  # (n, H, M) the actions taken, fed open-loop to the models
    rewards: np.ndarray  # (n, H) true rewards
    episode: np.ndarray  # (n,) index of the source episode
    start: np.ndarray  # (n,) step of s_0 in that episode


def sample_segments(episodes: list[Episode], horizon: int, n: int, seed: int = 0) -> Segments:
    """Up to ``n`` distinct windows of ``horizon`` steps that lie inside one episode each.

    A window needs ``horizon + 1`` stored states, so episodes shorter than that are skipped.
    """
    starts = [(i, t) for i, ep in enumerate(episodes) for t in range(len(ep) - horizon)]
    if not starts:
        longest = max((len(ep) for ep in episodes), default=0)
        raise ValueError(
            f"no held-out episode has {horizon + 1} states (the longest has {longest}); "
            "lower the horizon or hold out more data"
        )
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(starts), size=min(n, len(starts)), replace=False)
    chosen = sorted(starts[k] for k in pick)
    S = np.stack([episodes[i].observations[t : t + horizon + 1] for i, t in chosen])
    A = np.stack([episodes[i].actions[t : t + horizon] for i, t in chosen])
    R = np.stack([episodes[i].rewards[t : t + horizon] for i, t in chosen])
    ep_idx, st = (np.array(x) for x in zip(*chosen, strict=True))
    return Segments(S.astype(np.float64), A.astype(np.float64), R.astype(np.float64), ep_idx, st)


# ------------------------------------------------------------------ TT rollout
@dataclass
class RolloutConfig:
    decode: str = "argmax"  # argmax: most likely bin; expectation: E[value] under the bins
    use_cache: bool = True  # False recomputes the window for every token (slow reference)

    def validate(self) -> RolloutConfig:
        if self.decode not in DECODES:
            raise ValueError(f"unknown decode {self.decode!r}; choose one of {DECODES}")
        return self


@dataclass
class Rollout:
    states: np.ndarray  # (n, H+1, N): s_0 as given, then the predicted states
    rewards: np.ndarray  # (n, H) predicted rewards


@torch.no_grad()
def tt_rollout(
    model,
    discretizer: Discretizer,
    s0: np.ndarray,
    actions: np.ndarray,
    config: RolloutConfig | None = None,
) -> Rollout:
    """Predict states and rewards for start states ``s0`` (n, N) under ``actions`` (n, H, M).

    The sequence is [s_0, a_0, r_0, V_0, s_1, a_1, …]: s_0 and the actions are the given ones,
    r, V and every later state dimension come from the model. Each predicted dimension is
    either its most likely bin or its expected value, and the token written back is the bin
    of that value, so the sequence the model continues is the trajectory it reports.
    """
    cfg = (config or RolloutConfig()).validate()
    c = model.config
    N, M, K = c.observation_dim, c.action_dim, c.n_bins
    s0 = np.asarray(s0, dtype=np.float64)
    actions = np.asarray(actions, dtype=np.float64)
    n, H = actions.shape[:2]
    if s0.shape != (n, N) or actions.shape[2] != M:
        raise ValueError(
            f"expected s0 ({n}, {N}) and actions ({n}, H, {M}), got {s0.shape} and {actions.shape}"
        )
    device = next(model.parameters()).device
    window = Window(model, n, None, max(c.n_transitions - 2, 0), cfg.use_cache)

    def tokens(values: np.ndarray, dims: list[int]) -> torch.Tensor:
        return torch.as_tensor(discretizer.encode(values, dims=dims), device=device)

    def choose(logits: torch.Tensor, dim: int) -> tuple[np.ndarray, torch.Tensor]:
        # a bin stands for the mean of its training data; the stop token is not a value
        probs = logits[:, :K].softmax(-1)
        if cfg.decode == "argmax":
            tok = probs.argmax(-1)
            value = discretizer.decode(tok.cpu().numpy()[:, None], [dim], "mean")[:, 0]
            return value, tok
        value = discretizer.expectation(probs[:, None], [dim], "mean")[:, 0]
        value = value.cpu().numpy().astype(np.float64)
        return value, tokens(value[:, None], [dim])[:, 0]

    a_tok = tokens(actions, list(range(N, N + M)))  # (n, H, M)
    pending = tokens(s0, list(range(N)))  # state tokens not yet fed
    states, rewards = [s0], []
    for t in range(H):
        logits = window.feed(torch.cat([pending, a_tok[:, t]], dim=1))
        r, r_tok = choose(logits, N + M)
        logits = window.feed(r_tok[:, None])
        v_tok = logits[:, :K].argmax(-1)  # no query attends to V, but it is fed as in training
        logits = window.feed(v_tok[:, None])
        s_next, s_tok = np.empty((n, N)), []
        for j in range(N):
            if j > 0:
                logits = window.feed(s_tok[-1][:, None])
            s_next[:, j], tok = choose(logits, j)
            s_tok.append(tok)
        pending = s_tok[-1][:, None]
        states.append(s_next)
        rewards.append(r)
    return Rollout(np.stack(states, axis=1), np.stack(rewards, axis=1))


# ------------------------------------------------------------------ errors
def discretization_floor(discretizer: Discretizer, states: np.ndarray) -> np.ndarray:
    """``states`` (..., N) after encode → decode to the bins' training means, as a TT
    rollout reports them: the error of the bins alone, which no TT prediction can go below."""
    dims = list(range(states.shape[-1]))
    return discretizer.decode(discretizer.encode(states, dims=dims), dims, "mean")


def state_scale(episodes: list[Episode]) -> np.ndarray:
    """Per-dimension standard deviation of the states, to put all dimensions on one scale."""
    obs = np.concatenate([ep.observations for ep in episodes]).astype(np.float64)
    return np.maximum(obs.std(0), 1e-6)


def horizon_errors(pred: np.ndarray, true: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Error (n, H+1) of predicted states at every step: the root-mean-square over dimensions
    of (pred - true) / scale, i.e. in units of each dimension's spread in the data."""
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape:
        raise ValueError(f"predicted states {pred.shape} and true states {true.shape} differ")
    return np.sqrt((((pred - true) / scale) ** 2).mean(-1))


def error_quantiles(errors: np.ndarray, **labels) -> pd.DataFrame:
    """Median and quartiles over trajectories at every horizon, one row per horizon."""
    q25, q50, q75 = np.quantile(errors, [0.25, 0.5, 0.75], axis=0)
    horizon = np.arange(errors.shape[1])
    return pd.DataFrame({**labels, "horizon": horizon, "median": q50, "q25": q25, "q75": q75})


def error_table(curves: pd.DataFrame, horizons: list[int]) -> pd.DataFrame:
    """Errors at a few horizons: one row per (env, horizon), median and quartiles per model."""
    rows = curves[curves["horizon"].isin(horizons)]
    wide = rows.pivot_table(
        index=["env", "horizon"], columns="model", values=["median", "q25", "q75"]
    )
    wide.columns = [f"{model} {stat}" for stat, model in wide.columns]
    return wide[sorted(wide.columns)].reset_index()


# ------------------------------------------------------------------ rendering
def render_states(env_name: str, states: np.ndarray, size: int = 160) -> np.ndarray | None:
    """RGB frames (T, size, size, 3) of a locomotion body put into ``states`` (T, N), or None
    when MuJoCo cannot render here (no EGL). The x position is not observed: it is set to 0."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        env = make_env(env_name, render_mode="rgb_array", width=size, height=size)
        env.reset(seed=0)
        u = env.unwrapped
        nq = u.model.nq
        frames = []
        for s in np.asarray(states, dtype=np.float64):
            u.set_state(np.r_[0.0, s[: nq - 1]], s[nq - 1 :])
            frames.append(env.render())
        env.close()
        return np.stack(frames)
    except Exception:  # no OpenGL context: the notebook falls back to joint-angle plots
        return None


# ------------------------------------------------------------------ the baseline
def dynamics_cached(data_cfg: DataConfig, episodes: list[Episode], steps: int, seed: int = 0):
    """The single-step model of :mod:`ttlib.baselines` trained on ``episodes``, once per
    (data, model) config: later calls load it from the cache."""
    cfg = DynamicsConfig(steps=steps, seed=seed)
    identity = {"data": data_cfg.to_dict(), "fingerprint": data_fingerprint(episodes)}
    identity["dynamics"] = asdict(cfg)

    train = partial(train_dynamics, episodes, cfg, progress=False)
    return cached_model("dynamics", data_cfg, identity, train, ProbabilisticDynamics.load, steps)


# ------------------------------------------------ the original code's learning (issue #25)
@dataclass
class OriginalLearning:
    """``benchmarks/original_learning.py``'s committed output, read back for the page."""

    curves: dict[str, pd.DataFrame]  # per env: tokens and each code's held-out state CE
    at_tokens: pd.DataFrame  # both codes at a few equal token counts, and their difference
    record: dict  # the benchmark's original_learning.json: command, commit, time per code


def original_learning(folder: Path, fractions=(0.25, 0.5, 1.0)) -> OriginalLearning | None:
    """The held-out state cross-entropy of the original code and of ttlib trained alike
    (the page's schedule), or None where the benchmark has not been run. ``at_tokens`` takes
    the logged step nearest each fraction of the run that both codes reached."""
    csv, json_path = folder / "original_learning.csv", folder / "original_learning.json"
    if not csv.exists():
        return None
    table = pd.read_csv(csv)
    table = table[(table["schedule"] == "run_length") & table["code"].isin(["original", "ttlib"])]
    curves, rows = {}, []
    for env, part in table.groupby("env", sort=False):
        wide = part.pivot(index="tokens", columns="code", values="val_loss_state")
        if not {"original", "ttlib"} <= set(wide.columns):
            continue  # one code run so far: nothing to compare
        wide = wide[["original", "ttlib"]].dropna()
        curves[env] = wide.reset_index()
        for f in fractions:
            tokens = wide.index[np.abs(wide.index - f * wide.index.max()).argmin()]
            o, t = wide.loc[tokens, "original"], wide.loc[tokens, "ttlib"]
            rows.append({"env": env, "tokens (M)": round(tokens / 1e6, 2), "original": o,
                         "ttlib": t, "ttlib − original": t - o})  # fmt: skip
    record = json.loads(json_path.read_text()) if json_path.exists() else {}
    return OriginalLearning(curves, pd.DataFrame(rows).round(3), record)


def original_learning_provenance(record: dict) -> str:
    """One markdown line per code run: its training time, and the command, commit and
    machine of the call that wrote its record (a resumed run: the last call)."""
    lines = []
    for key, run in record.get("runs", {}).items():
        for code, r in run.get("codes", {}).items():
            hw, sha = r.get("hardware", {}), commit_text(r.get("git_sha"), r.get("ttlib_modified"))
            lines.append(
                f"- {key.split('/')[0]}, {code}: trained for {minutes_text(r.get('train_seconds'))}"
                f" (wall time); recorded by `{r.get('command', '?')}` at commit `{sha}` on "
                f"{machine_text(hw)}, {hw.get('torch_threads', '?')} torch thread(s)"
            )
    return "\n".join(lines)

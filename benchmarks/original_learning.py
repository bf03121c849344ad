"""Does ttlib learn as the original code would, at equal tokens? (issue #25)

The prediction page (``notebooks/prediction.ipynb``, cpu preset) shows ttlib's held-out state
cross-entropy against training tokens. This trains, on the page's data (the cpu ``prediction``
block: 4 layers x 64, batch 32, 4000 steps, quantile bins, the ``medium`` dataset split by
:func:`ttlib.experiments.prediction.split_episodes`, so the training and held-out episodes are
exactly the page's), one env at a time. Both codes read the same windows, tokenised with
the page's bins (ttlib's quantile discretizer, fit on the training episodes; the original's
own ``OriginalQuantileDiscretizer`` places its edges slightly differently and is not what is
compared here):

(a) ``original``: the faithful copy of the original model (:class:`OriginalGPT`, its separate
    key/query/value layers, stored mask, EinLinear head, its init and its weighted loss),
    its optimiser (minGPT's ``configure_optimizers`` param groups, AdamW, clip 1.0) and its
    batch order (``DataLoader(shuffle=True)``: a fresh permutation of the windows per epoch)
    on the original's windows (``original_windows``; built lazily from ttlib's window table,
    which is checked against ``original_windows`` on a few episodes at start);
(b) ``ttlib``: :class:`TrajectoryGPT` trained by :func:`ttlib.train.train` (batches drawn with
    replacement). With the page's settings this *is* the page's run: if the page's finished
    model is in the cache (``cache/models``), its log is reused unless ``--retrain-ttlib``.

Same model size, batch, steps, dropout (the preset's 0.1), seed (each code seeds its own
initialisation and batch draws with it: equal seeds, not equal draws) and the SAME
learning-rate sequence: by default both run ttlib's ``run_length`` rates (:meth:`LRSchedule.lr`:
warm-up over 5 % of the steps, cosine to the last one), the page's schedule, so that only the
code differs. ``--schedule original`` runs each code's own implementation of the original's
schedule instead (warm-up over one epoch of tokens, which these runs never leave).

Every ``--log-every`` steps both are scored on the same fixed held-out windows
(:func:`ttlib.train.held_out_loss`: 256 windows drawn with seed+1, the page's): unweighted
cross-entropy per token kind (:func:`ttlib.train.loss_by_kind`). The original model is scored
through :func:`ttlib_from_original`, exact to float rounding (``tests/test_fidelity.py``).
``--same-init`` starts (a) from (b)'s initial weights, ``--sampler ttlib`` gives (a) (b)'s
batches: with both and dropout 0 the two codes agree step for step
(``tests/test_original_learning.py``).

    env OMP_NUM_THREADS=1 MUJOCO_GL=egl python benchmarks/original_learning.py --env halfcheetah
    env OMP_NUM_THREADS=1 MUJOCO_GL=egl python benchmarks/original_learning.py --env hopper

Training checkpoints to ``cache/benchmarks/original_learning-*`` and resumes from there if
interrupted. Writes ``results/prediction/original_learning.csv`` (one row per code and logged
step; rows of other envs/schedules are kept), ``.json`` (command, commit, hardware, wall time
of each run) and ``.svg`` (held-out state cross-entropy vs tokens, both codes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ttlib.data import SequenceDataset, data_fingerprint
from ttlib.experiments.cache import cache_dir, code_version, config_key
from ttlib.experiments.prediction import split_episodes, tt_configs
from ttlib.experiments.presets import resolve
from ttlib.experiments.runs import ensure_dataset, hardware
from ttlib.interop.d4rl_hdf5 import read_d4rl_hdf5, write_d4rl_hdf5
from ttlib.interop.original import EinLinear, OriginalGPT, OriginalGPTConfig, ttlib_from_original
from ttlib.interop.original_training import original_learning_rates, original_windows
from ttlib.io import load_torch, save_torch
from ttlib.model import GPTConfig
from ttlib.schedule import ORIGINAL_FINAL_EPOCHS, LRSchedule
from ttlib.train import (
    TrainConfig,
    TrainResult,
    gpt_config_for,
    held_out_loss,
    loss_by_kind,
    resolve_device,
    train,
)

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("state", "action", "reward", "value")
FORMAT = "original-learning-v1"
COLUMNS = ["env", "schedule", "code", "step", "tokens", "lr", "train_loss"]
COLUMNS += [f"val_loss_{k}" for k in KINDS]


# ------------------------------------------------------------ the original's training loop
def original_optimizer(
    model: OriginalGPT, lr: float, weight_decay: float, betas
) -> torch.optim.AdamW:
    """The original's ``GPT.configure_optimizers`` (minGPT): decay on the weights of Linear and
    EinLinear layers; biases, LayerNorm and Embedding weights and ``pos_emb`` without."""
    decay, no_decay = set(), set()
    for mn, m in model.named_modules():
        for pn, _ in m.named_parameters(recurse=False):
            fpn = f"{mn}.{pn}" if mn else pn
            if pn.endswith("bias"):
                no_decay.add(fpn)
            elif pn.endswith("weight") and isinstance(m, torch.nn.Linear | EinLinear):
                decay.add(fpn)
            elif pn.endswith("weight") and isinstance(m, torch.nn.LayerNorm | torch.nn.Embedding):
                no_decay.add(fpn)
    no_decay.add("pos_emb")
    params = dict(model.named_parameters())
    if decay & no_decay or params.keys() != decay | no_decay:
        raise RuntimeError("original_optimizer: parameters not split into exactly two groups")
    groups = [
        {"params": [params[n] for n in sorted(decay)], "weight_decay": weight_decay},
        {"params": [params[n] for n in sorted(no_decay)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))


class OriginalOrder:
    """The original's ``DataLoader(shuffle=True, batch_size=B)``: each epoch a new permutation
    of the windows, cut into batches (the epoch's last batch may be smaller)."""

    def __init__(self, n_windows: int, batch_size: int, seed: int):
        self.n, self.batch_size = n_windows, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0

    def next(self) -> torch.Tensor:
        if self.pos >= len(self.perm):
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        index = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += len(index)
        return index

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: Mapping) -> None:
        self.gen.set_state(state["gen"])
        self.perm, self.pos = state["perm"], int(state["pos"])


class TtlibDraws:
    """:func:`ttlib.train.train`'s batches: ``batch_size`` windows drawn with replacement from
    a generator seeded with the run's seed (non-goal data draws nothing else from it)."""

    def __init__(self, n_windows: int, batch_size: int, seed: int):
        self.n, self.batch_size = n_windows, batch_size
        self.gen = torch.Generator().manual_seed(seed)

    def next(self) -> torch.Tensor:
        return torch.randint(self.n, (self.batch_size,), generator=self.gen)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: Mapping) -> None:
        self.gen.set_state(state["gen"])


SAMPLERS = {"original": OriginalOrder, "ttlib": TtlibDraws}


def original_rate(step: int, counted_tokens: int, cfg: TrainConfig, warmup: int) -> float:
    """The rate of ``step`` when (a) runs ``cfg.schedule``: ``run_length`` is ttlib's
    :meth:`LRSchedule.lr` (as (b) runs it); ``original`` is the original trainer's rule, from the
    non-stop targets counted so far (:func:`original_learning_rates`, the faithful copy)."""
    if cfg.schedule == "run_length":  # reads only cfg and step: no windows or tokens needed
        return LRSchedule(cfg, n_windows=1, block_size=1).lr(step)
    if cfg.schedule == "original":
        if cfg.min_lr_frac != 0.1:
            raise ValueError("the original's cosine floor is 0.1 of the rate")
        final = ORIGINAL_FINAL_EPOCHS * warmup
        return original_learning_rates([counted_tokens, 0], cfg.lr, warmup, final)[
            -1 if step else 0
        ]
    raise ValueError(f"schedule {cfg.schedule!r}: the original code has no such schedule")


def score_original(model: OriginalGPT, dataset: SequenceDataset, n_windows: int, cfg, device):
    """:func:`held_out_loss` of the original model, through its exact ttlib twin. Building the
    twin draws initial weights from torch's global stream, which the run's dropout also uses:
    the stream is put back, so the run does not depend on how often it is scored."""
    rng = torch.get_rng_state()
    twin = ttlib_from_original(model).to(device)
    torch.set_rng_state(rng)
    return held_out_loss(twin, dataset, n_windows, cfg, device)


def train_original(
    dataset: SequenceDataset,
    model_cfg: GPTConfig,
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    *,
    eval_dataset: SequenceDataset | None = None,
    eval_windows: int = 256,
    init: Mapping[str, torch.Tensor] | None = None,
    sampler: str = "original",
    progress: bool = False,
    stop_at_step: int | None = None,
) -> TrainResult:
    """Train :class:`OriginalGPT` the original's way; the log has ttlib's keys and cadence.

    Seeds torch with ``cfg.seed`` and builds the model (its own init) unless ``init`` gives
    weights in the original's layout; batches come from ``SAMPLERS[sampler]`` seeded with
    ``cfg.seed``; the rate of each step from :func:`original_rate`. Every ``cfg.log_every``
    steps (and the last) the log records what :func:`ttlib.train.train` records: the step's
    (weighted) loss and rate, its loss per kind and, with ``eval_dataset``, the held-out ones.
    ``out_dir/checkpoint.pt`` is written every ``cfg.checkpoint_every`` steps and resumed from.
    """
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = OriginalGPT(OriginalGPTConfig.like(model_cfg))
    if init is not None:
        model.load_state_dict(init, strict=True)
    model.to(device)
    optimizer = original_optimizer(model, cfg.lr, cfg.weight_decay, cfg.betas)
    order = SAMPLERS[sampler](len(dataset), cfg.batch_size, cfg.seed)
    warmup = len(dataset) * model_cfg.block_size  # the original's warmup_tokens: one epoch
    step, counted, seen, history, prior_seconds = 0, 0, 0, [], 0.0
    identity = {
        "gpt_config": model_cfg.to_dict(),
        "train_config": {k: v for k, v in cfg.to_dict().items() if k != "device"},
        "sampler": sampler,
        "windows": len(dataset),
        "init": "given" if init is not None else "own",
    }
    path = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    if path is not None and path.exists():
        ckpt = load_torch(path)
        if ckpt.get("format") != FORMAT or ckpt.get("identity") != identity:
            raise RuntimeError(f"{path} is another run's checkpoint; use another folder")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        order.load_state_dict(ckpt["sampler"])
        torch.set_rng_state(ckpt["rng"])
        if device.type == "cuda" and "cuda_rng" in ckpt:
            torch.cuda.set_rng_state(ckpt["cuda_rng"])
        step, counted, seen = int(ckpt["step"]), int(ckpt["counted"]), int(ckpt["seen"])
        history, prior_seconds = list(ckpt["history"]), float(ckpt["train_seconds"])
    t_start = time.perf_counter()

    def save():
        if path is None:
            return
        state = {
            "format": FORMAT,
            "identity": identity,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "sampler": order.state_dict(),
            "rng": torch.get_rng_state(),
            "step": step,
            "counted": counted,
            "seen": seen,
            "history": history,
            "train_seconds": round(prior_seconds + time.perf_counter() - t_start, 3),
        }
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_torch(state, path)

    start_step = step
    model.train()
    while step < cfg.max_steps:
        index = order.next()
        x, y, mask = (t.to(device) for t in dataset.batch(index)[:3])
        lr = original_rate(step, counted, cfg, warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits, loss = model(x, y, mask)
        model.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        counted += int((y != model_cfg.stop_token).sum())  # the original's n_tokens
        seen += len(index) * model_cfg.block_size
        step += 1
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            rec = {"step": step, "tokens": seen, "loss": float(loss.detach()), "lr": lr}
            rec.update(loss_by_kind(logits.detach().float(), y, mask, model_cfg))
            if eval_dataset is not None:
                rec.update(score_original(model, eval_dataset, eval_windows, cfg, device))
                model.train()
            history.append(rec)
            if progress:
                print(f"original step {step}: loss {rec['loss']:.3f}", flush=True)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            save()
        if stop_at_step is not None and step >= stop_at_step:
            save()
            break
    model.eval()
    return TrainResult(
        model=model,
        history=history,
        checkpoint=path,
        steps_run=step - start_step,
        seconds=time.perf_counter() - t_start,
    )


def check_original_windows(dataset: SequenceDataset, episodes: list, which: list[int]) -> int:
    """Assert that ``dataset``'s windows of episodes ``which`` are the items the original's
    ``DiscretizedDataset`` builds from them (:func:`original_windows` on a D4RL file of those
    episodes, with the same bins), at the same indices; returns the windows compared."""
    c = dataset.cfg
    first = np.cumsum([0] + [len(ep) - 1 for ep in episodes])
    with tempfile.TemporaryDirectory() as d:
        arrays = read_d4rl_hdf5(write_d4rl_hdf5(Path(d) / "d.hdf5", [episodes[i] for i in which]))
    items = original_windows(
        arrays,
        dataset.discretizer,
        c.n_bins,
        sequence_length=c.n_transitions,
        max_path_length=c.max_path_length,
        discount=c.discount,
        penalty=c.termination_penalty,
    )
    index = torch.cat([torch.arange(first[i], first[i + 1]) for i in which])
    ours = dataset.batch(index)
    for mine, theirs in zip(ours, (torch.stack(t) for t in zip(*items, strict=True)), strict=True):
        if mine.shape != theirs.shape or not torch.equal(mine, theirs.to(mine.dtype)):
            raise AssertionError("ttlib's windows differ from the original's windows")
    return len(index)


# ------------------------------------------------------------ the page's data and run
def page_setup(env: str, steps: int | None):
    """(params, data_cfg, train_cfg, model_cfg, train_set, held_out, train_eps) of the page."""
    params = resolve("prediction", {"preset": "cpu"})
    if steps:
        params["train_steps"] = steps
    did = ensure_dataset(env, params["dataset_kind"], params["dataset_transitions"], params["seed"])
    data_cfg, train_cfg, model_kw = tt_configs(did, params)
    train_eps, test_eps = split_episodes(data_cfg)
    train_set = SequenceDataset(train_eps, data_cfg)  # as train_tt builds it
    held_out = SequenceDataset(test_eps, data_cfg, discretizer=train_set.discretizer)
    model_cfg = gpt_config_for(train_set, **model_kw)
    return params, data_cfg, train_cfg, model_cfg, train_set, held_out, train_eps


def page_checkpoint(data_cfg, episodes, model_cfg, train_cfg) -> Path | None:
    """The page's finished model (``train_tt``'s cache entry for these configs), if kept."""
    identity = {
        "data": data_cfg.to_dict(),
        "fingerprint": data_fingerprint(episodes),
        "model": model_cfg.to_dict(),
        "train": train_cfg.to_dict(),
    }
    name = data_cfg.dataset_id.replace("/", "_")
    path = cache_dir("models") / f"{name}-{config_key(identity)}" / "checkpoint.pt"
    if not path.exists():
        return None
    ckpt = load_torch(path)
    done = int(ckpt.get("step", 0)) >= train_cfg.max_steps
    return path if done and "val_loss_state" in ckpt.get("history", [{}])[-1] else None


def rows_of(history: list[dict], env: str, schedule: str, code: str) -> list[dict]:
    return [
        {
            "env": env,
            "schedule": schedule,
            "code": code,
            "step": h["step"],
            "tokens": h["tokens"],
            "lr": h["lr"],
            "train_loss": h["loss"],
            **{f"val_loss_{k}": h[f"val_loss_{k}"] for k in KINDS},
        }
        for h in history
    ]


def write_csv(rows: list[dict], path: Path) -> pd.DataFrame:
    """Merge ``rows`` into ``path``: rows of the same (env, schedule, code) are replaced."""
    new = pd.DataFrame(rows, columns=COLUMNS)
    if path.exists():
        old = pd.read_csv(path)
        key = ["env", "schedule", "code"]
        done = set(map(tuple, new[key].drop_duplicates().to_numpy().tolist()))
        old = old[[tuple(r) not in done for r in old[key].to_numpy().tolist()]]
        new = pd.concat([old, new], ignore_index=True)
    new = new.sort_values(["env", "schedule", "code", "step"], kind="stable")
    path.parent.mkdir(parents=True, exist_ok=True)
    new.to_csv(path, index=False, float_format="%.6g")
    return new


def plot(table: pd.DataFrame, n_bins: int, path: Path) -> None:
    """Held-out state cross-entropy vs training tokens, one panel per env, a line per code."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(table["env"]))
    fig, axes = plt.subplots(1, len(envs), figsize=(4.5 * len(envs), 3.4), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        part = table[table["env"] == env]
        for (schedule, code), run in part.groupby(["schedule", "code"], sort=True):
            label = code if schedule == "run_length" else f"{code} ({schedule} schedule)"
            ax.plot(run["tokens"] / 1e6, run["val_loss_state"], marker=".", ms=3, label=label)
        ax.axhline(math.log(n_bins), color="grey", ls=":", lw=1)
        ax.annotate(
            f"uniform guess, log {n_bins}",
            (0.98, math.log(n_bins)),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=8,
            color="grey",
        )
        ax.set(title=env, xlabel="training tokens (millions)", ylabel="held-out state CE (nats)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="halfcheetah", choices=["halfcheetah", "hopper"])
    ap.add_argument("--steps", type=int, default=None, help="default: the cpu preset's (4000)")
    ap.add_argument("--schedule", default="run_length", choices=["run_length", "original"])
    ap.add_argument("--log-every", type=int, default=50, help="default: the page's")
    ap.add_argument("--eval-windows", type=int, default=256, help="default: the page's")
    ap.add_argument("--codes", nargs="+", default=["original", "ttlib"])
    ap.add_argument("--sampler", default="original", choices=sorted(SAMPLERS), help="for (a)")
    ap.add_argument("--same-init", action="store_true", help="(a) starts from (b)'s weights")
    ap.add_argument("--retrain-ttlib", action="store_true", help="never reuse the page's model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "results" / "prediction"))
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    params, data_cfg, page_cfg, model_cfg, train_set, held_out, train_eps = page_setup(
        args.env, args.steps
    )
    cfg = replace(page_cfg, schedule=args.schedule, log_every=args.log_every, device=args.device)
    terminated = [i for i, ep in enumerate(train_eps) if ep.terminated][:2]
    checked = check_original_windows(train_set, train_eps, sorted({0, 1, *terminated}))
    print(
        f"{data_cfg.dataset_id}: {len(train_eps)} training episodes, {len(train_set)} windows, "
        f"{len(held_out.episodes)} held-out episodes; {checked} windows equal the original's; "
        f"setup {time.time() - t0:.0f} s",
        flush=True,
    )
    variant = ("-same-init" if args.same_init else "") + (
        f"-{args.sampler}-draws" if args.sampler != "original" else ""
    )
    tag = f"{args.env}-{params['dataset_kind']}-{cfg.max_steps}-{cfg.schedule}"
    rows, runs = [], {}
    for code in args.codes:
        t1 = time.time()
        label = code + (variant if code == "original" else "")
        key = config_key({k: v for k, v in cfg.to_dict().items() if k != "device"})
        folder = cache_dir("benchmarks") / f"original_learning-{tag}-{label}-{key}"
        if code == "ttlib":
            page = page_checkpoint(data_cfg, train_eps, model_cfg, page_cfg)
            reuse = page is not None and cfg == replace(page_cfg, device=args.device)
            reuse = reuse and args.eval_windows == 256 and not args.retrain_ttlib
            if reuse:  # the page's run is this run: same data, model, training, held-out log
                ckpt = load_torch(page)
                history, seconds, source = ckpt["history"], ckpt.get("train_seconds"), str(page)
            else:
                result = train(
                    train_set, model_cfg, cfg, folder, progress=False,
                    eval_dataset=held_out, eval_windows=args.eval_windows,
                )  # fmt: skip
                history, source = result.history, str(folder)
                seconds = load_torch(folder / "checkpoint.pt").get("train_seconds")
        elif code == "original":
            init = None
            if args.same_init:
                from ttlib.interop.original import original_state_dict_from_ttlib
                from ttlib.model import TrajectoryGPT

                torch.manual_seed(cfg.seed)  # as ttlib.train.train builds its model
                init = original_state_dict_from_ttlib(TrajectoryGPT(model_cfg))
            result = train_original(
                train_set, model_cfg, cfg, folder, eval_dataset=held_out,
                eval_windows=args.eval_windows, init=init, sampler=args.sampler, progress=True,
            )  # fmt: skip
            history, source = result.history, str(folder)
            seconds = load_torch(folder / "checkpoint.pt")["train_seconds"]
        else:
            raise SystemExit(f"unknown code {code!r}: choose original or ttlib")
        rows += rows_of(history, args.env, cfg.schedule, label)
        runs[label] = {
            "train_seconds": seconds,
            "this_call_s": round(time.time() - t1, 1),
            "from": source,
            "final": {k: round(v, 4) for k, v in history[-1].items() if k.startswith("val_")},
        }
        print(label, runs[label], flush=True)

    out = Path(args.out)
    table = write_csv(rows, out / "original_learning.csv")
    plot(table, model_cfg.n_bins, out / "original_learning.svg")
    record_path = out / "original_learning.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    record.setdefault("what", "held-out CE per token kind, original code vs ttlib, equal tokens")
    # One entry per env and schedule; each code's run keeps its own provenance, so codes run
    # by separate calls (``--codes original`` then ``--codes ttlib``) are both on record.
    entry = record.setdefault("runs", {}).setdefault(f"{args.env}/{cfg.schedule}", {})
    entry.update({
        "dataset": data_cfg.dataset_id,
        "train_episodes": len(train_eps),
        "train_windows": len(train_set),
        "held_out_episodes": len(held_out.episodes),
        "held_out_windows": args.eval_windows,
        "windows_checked_against_original_windows": checked,
        "train_config": cfg.to_dict(),
        "model": model_cfg.to_dict(),
        "tokens_per_step": cfg.batch_size * model_cfg.block_size,
        "sampler_of_original": args.sampler,
        "same_init": args.same_init,
    })  # fmt: skip
    for stale in ("wall_time_s", "git_sha", "ttlib_modified", "hardware", "command"):
        entry.pop(stale, None)  # these are per code now
    for label, run in runs.items():
        entry.setdefault("codes", {})[label] = {
            **run,
            "wall_time_s": round(time.time() - t0, 1),
            **code_version(),  # git_sha and ttlib_modified, as every run.json records them
            "hardware": hardware(),
            "command": "python benchmarks/original_learning.py " + " ".join(argv),
        }
    record_path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()

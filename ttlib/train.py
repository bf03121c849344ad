"""Training loop for :class:`TrajectoryGPT`, with checkpoints that resume bit-for-bit.

AdamW (decay on weight matrices only), gradient clipping and the original's learning-rate
schedule (:mod:`ttlib.schedule`). A checkpoint holds weights, configs, discretizer, optimiser,
the schedule's token count and both random streams as tensors and plain types, so it loads
with ``weights_only=True`` and an interrupted run continues exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm  # plain bars: tqdm.auto warns in kernels without ipywidgets

from ttlib import distributed
from ttlib.data import DataConfig, SequenceDataset
from ttlib.discretize import Discretizer
from ttlib.errors import CheckpointError, ConfigError, check_number, check_positive
from ttlib.io import load_torch_file, model_file_errors, save_torch
from ttlib.model import GPTConfig, TrajectoryGPT
from ttlib.schedule import LRSchedule

CHECKPOINT_FORMAT = "ttlib-checkpoint-v1"
SCHEDULES = ("original", "run_length", "constant")
PRECISIONS = ("fp32", "bf16")


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 256
    lr: float = 6e-4
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    # ttlib.schedule: "original", "run_length" or "constant" (each checkpoint of a "constant" run
    # is a model trained for that many tokens: the compute study extends runs)
    schedule: str = "original"
    warmup_frac: float = 0.05  # "run_length" only: of max_steps
    warmup_tokens: int = 0  # "constant" only (and in to_dict() only then: older cache keys)
    min_lr_frac: float = 0.1  # the cosine's floor, a fraction of lr (0.1 in the original)
    # "bf16": forward pass under autocast(bfloat16), weights and optimiser fp32. Faster on
    # CPUs with native bf16, but not the original's numerics, so never the default.
    precision: str = "fp32"
    seed: int = 42
    device: str = "auto"
    checkpoint_every: int = 500
    log_every: int = 50

    def __post_init__(self):
        # fail here, before any data is loaded, not as a crash (or a silent no-op) in train()
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        check_positive(
            "TrainConfig",
            max_steps=self.max_steps,
            batch_size=self.batch_size,
            checkpoint_every=self.checkpoint_every,
            log_every=self.log_every,
        )
        check_number("TrainConfig", "(0, inf)", lambda v: 0 < v < math.inf, lr=self.lr)
        check_number("TrainConfig", "[0, 1]", lambda v: 0 <= v <= 1, warmup_frac=self.warmup_frac)
        check_number("TrainConfig", "[0, inf]", lambda v: v >= 0, warmup_tokens=self.warmup_tokens)
        parse_device(self.device)  # its spelling; whether it exists is checked when training

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        if self.schedule != "constant":  # added with that schedule; the others never read it
            del d["warmup_tokens"]
        return d


@dataclass
class TrainResult:
    model: TrajectoryGPT
    history: list[dict] = field(default_factory=list)
    checkpoint: Path | None = None
    steps_run: int = 0
    seconds: float = 0.0  # this call's wall time (the checkpoint's train_seconds: all parts)


def parse_device(device: str) -> torch.device | None:
    """The torch device ``device`` names (None for "auto"), or a ConfigError."""
    if device == "auto":
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device {device!r} is not a device name; use auto, cpu, cuda or cuda:N"
        ) from None


def resolve_device(device: str = "auto") -> torch.device:
    """The device to use, or a ConfigError if it is not in this machine / torch build."""
    dev = parse_device(device)
    if dev is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r}: this torch {torch.__version__} sees no CUDA GPU; use cpu or auto"
        )
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available here; use cpu or auto")
    return dev


def autocast(device: torch.device, precision: str = "fp32"):
    """The autocast context of a training forward pass: bf16 matmuls, or nothing (fp32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def gpt_config_for(dataset: SequenceDataset, **overrides) -> GPTConfig:
    """A model config whose dimensions match ``dataset``; ``overrides`` set the size etc."""
    c = dataset.cfg
    goal_dim = len(c.goal_dims) if c.goal_dims is not None else 0
    return GPTConfig(
        observation_dim=dataset.observation_dim,
        action_dim=dataset.action_dim,
        n_bins=c.n_bins,
        n_transitions=c.n_transitions,
        goal_dim=goal_dim,
        **overrides,
    )


def loss_by_kind(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, config: GPTConfig
):
    """Unweighted cross-entropy per token kind (state / action / reward / value), for curves."""
    dims = (torch.arange(targets.shape[1], device=targets.device) + 1) % config.transition_dim
    kinds = (dims >= config.observation_dim).long() + (dims >= config.transition_dim - 2).long()
    kinds += (dims == config.transition_dim - 1).long()  # 0 state, 1 action, 2 reward, 3 value
    ce = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
    )
    ce = ce.view_as(targets) * mask
    out = {}
    for k, name in enumerate(("state", "action", "reward", "value")):
        sel = (kinds == k)[None, :].expand_as(targets)
        denom = (mask * sel).sum()
        out[f"loss_{name}"] = float((ce * sel).sum() / denom) if denom > 0 else float("nan")
    return out


@torch.no_grad()
def held_out_loss(
    model: TrajectoryGPT, dataset: SequenceDataset, n_windows: int, cfg: TrainConfig, device
) -> dict:
    """Cross-entropy per token kind on ``n_windows`` fixed windows of ``dataset`` (``val_``
    keys), in eval mode, from a random stream of its own (the run's are not touched)."""
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    index = torch.randint(len(dataset), (n_windows,), generator=gen)
    model.eval()
    parts = []
    for chunk in index.split(cfg.batch_size):
        batch = [t.to(device) for t in dataset.batch(chunk, generator=gen)]
        goal = batch[3] if len(batch) > 3 else None
        logits, _ = model(batch[0], goal=goal)
        parts.append((logits.float(), batch[1], batch[2]))
    model.train()
    logits, y, mask = (torch.cat(t) for t in zip(*parts, strict=True))
    return {f"val_{k}": v for k, v in loss_by_kind(logits, y, mask, model.config).items()}


def checkpoint_dict(model, discretizer, data_cfg: DataConfig, train_cfg: TrainConfig, **extra):
    return {
        "format": CHECKPOINT_FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "gpt_config": model.config.to_dict(),
        "data_config": data_cfg.to_dict(),
        "train_config": train_cfg.to_dict(),
        "discretizer": discretizer.state_dict(),
        **extra,
    }


def read_checkpoint(path: str | Path) -> tuple[dict, Path]:
    """The checkpoint dict at ``path`` (a file or its directory), or a CheckpointError."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; train one with `ttlib train`")
    ckpt = load_torch_file(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a ttlib checkpoint (format {CHECKPOINT_FORMAT})")
    missing = [k for k in ("model", "gpt_config", "discretizer") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is incomplete (no {', '.join(missing)}); train it again")
    return ckpt, path


def _weight_mismatch(config: GPTConfig, weights: dict) -> str:
    """What in ``weights`` does not fit a model built from ``config`` ('' if all fits)."""
    expected = {k: tuple(v.shape) for k, v in TrajectoryGPT(config).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    named = {  # parameter → (what its shape measures, the axis that measures it)
        "tok_emb.weight": ("vocabulary size", 0),
        "pos_emb": ("block size", 1),
        "head": ("transition dims", 0),
    }
    found = []
    for key, (what, axis) in named.items():
        if key in got and got[key] != expected[key]:
            found.append(f"{what} {got[key][axis]} in the weights vs {expected[key][axis]}")
    if "head" in got and got["head"][1] != expected["head"][1]:
        found.append(f"n_bins {got['head'][1] - 1} in the weights vs {config.n_bins}")
    layers = {k.split(".")[1] for k in got if k.startswith("blocks.")}
    if len(layers) != config.n_layer:
        found.append(f"{len(layers)} layers in the weights vs n_layer {config.n_layer}")
    if not found and (got.keys() != expected.keys() or got != expected):
        found.append("other parameter shapes differ")
    return "; ".join(found)


def load_checkpoint(path: str | Path, device: str = "auto"):
    """Load ``(model, discretizer, checkpoint_dict)``; the model is in eval mode."""
    ckpt, path = read_checkpoint(path)
    try:
        config = GPTConfig(**ckpt["gpt_config"])
        discretizer = Discretizer.from_state_dict(ckpt["discretizer"])
    except (TypeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path} has a config this version cannot read ({err})") from err
    with model_file_errors(path, "ttlib checkpoint"):  # hand-edited or damaged contents
        mismatch = _weight_mismatch(config, ckpt["model"])
    if mismatch:
        raise CheckpointError(
            f"{path}: its weights do not fit its model config ({mismatch}); the file mixes "
            "parts of different runs"
        )
    if (discretizer.n_bins, discretizer.dim) != (config.n_bins, config.transition_dim):
        raise CheckpointError(
            f"{path}: its discretizer ({discretizer.n_bins} bins, {discretizer.dim} dims) does "
            f"not fit the model's vocabulary (n_bins {config.n_bins}, transition dims "
            f"{config.transition_dim}); the file mixes parts of different runs"
        )
    model = TrajectoryGPT(config)
    model.load_state_dict(ckpt["model"])
    model.to(resolve_device(device)).eval()
    return model, discretizer, ckpt


def _check_resumable(ckpt: dict, model_cfg: GPTConfig, data_cfg: DataConfig, cfg: TrainConfig):
    for name, ours in (
        ("gpt_config", model_cfg.to_dict()),
        ("data_config", data_cfg.to_dict()),
        ("train_config", cfg.to_dict()),
    ):
        theirs = ckpt.get(name, {})
        if name == "train_config":  # written before precision existed: they trained in fp32
            theirs = {"precision": "fp32", **theirs}
        diff = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
        if name == "train_config":
            diff.pop("device", None)
            if cfg.schedule == "constant":  # its rate ignores the run's length: extend it
                diff.pop("max_steps", None)
        if diff:
            pretty = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in diff.items())
            raise CheckpointError(
                f"cannot resume: {name} differs ({pretty}); use another output directory"
            )


def train(
    dataset: SequenceDataset,
    model_cfg: GPTConfig,
    cfg: TrainConfig,
    out_dir: str | Path | None = None,
    progress: bool = True,
    stop_at_step: int | None = None,
    eval_dataset: SequenceDataset | None = None,
    eval_windows: int = 256,
) -> TrainResult:
    """Train (or resume) a model; ``out_dir/checkpoint.pt`` is written every few steps.

    ``stop_at_step`` ends the run early after checkpointing, as an interruption would. With
    ``schedule="constant"`` a finished run resumes with a larger ``max_steps``. Every logged
    step also records :func:`held_out_loss` on ``eval_dataset`` (encoded with this run's
    discretizer) where one is given.
    """
    device = resolve_device(cfg.device)
    ranks = distributed.ranks(device, cfg.batch_size)  # several under torchrun (DDP)
    device = ranks.device(device)
    torch.manual_seed(cfg.seed)
    model = TrajectoryGPT(model_cfg).to(device)
    forward = ranks.wrap(model)  # DDP: gradients averaged over the ranks
    optimizer = model.configure_optimizer(cfg.lr, cfg.weight_decay, tuple(cfg.betas))
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    step = 0
    schedule = LRSchedule(cfg, len(dataset), model_cfg.block_size)

    ckpt_path = Path(out_dir) / "checkpoint.pt" if out_dir is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        ckpt, _ = read_checkpoint(ckpt_path)
        _check_resumable(ckpt, model_cfg, dataset.cfg, cfg)
        if "optimizer" not in ckpt:
            raise CheckpointError(f"{ckpt_path} has no training state to resume from")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["rng"])
        if device.type == "cuda" and "cuda_rng" in ckpt:
            torch.cuda.set_rng_state(ckpt["cuda_rng"])
        step, history = int(ckpt["step"]), list(ckpt["history"])
        schedule.tokens = int(ckpt.get("schedule_tokens", 0))
        # wall time of the earlier parts of this run, so a resumed model still knows its cost
        prior_seconds = float(ckpt.get("train_seconds", 0.0))
    else:
        prior_seconds = 0.0

    def save(at_step: int):
        if ckpt_path is None or not ranks.writes:
            return
        extra = {
            "optimizer": optimizer.state_dict(),
            "generator": gen.get_state(),
            "rng": torch.get_rng_state(),
            "step": at_step,
            "history": history,
            "train_seconds": round(prior_seconds + time.perf_counter() - t_start, 3),
            "schedule_tokens": schedule.tokens,
        }
        if device.type == "cuda":
            extra["cuda_rng"] = torch.cuda.get_rng_state()
        save_torch(
            checkpoint_dict(model, dataset.discretizer, dataset.cfg, cfg, **extra), ckpt_path
        )

    tokens_per_step = cfg.batch_size * model_cfg.block_size
    start_step, t_start = step, time.perf_counter()
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not progress, desc="train", unit="step")
    model.train()
    while step < cfg.max_steps:
        index = torch.randint(len(dataset), (cfg.batch_size,), generator=gen)
        full = dataset.batch(index, generator=gen)  # every rank draws the same full batch
        batch = [t.to(device) for t in ranks.shard(full)]  # and trains on its slice of it
        x, y, mask = batch[:3]
        goal = batch[3] if len(batch) > 3 else None
        lr = schedule.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        with autocast(device, cfg.precision), ranks.step_rng(cfg.seed, step):
            logits, loss = forward(x, y, mask, goal=goal)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        schedule.advance(int((full[1] != model_cfg.stop_token).sum()))  # all but stop tokens
        step += 1

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            elapsed = time.perf_counter() - t_start
            rec = {
                "step": step,
                "tokens": step * tokens_per_step,
                "loss": float(loss.detach()),
                "lr": lr,
                **loss_by_kind(logits.detach().float(), y, mask, model_cfg),
            }
            rec = ranks.mean(rec)  # DDP: averaged over the ranks' slices
            if eval_dataset is not None:
                rec.update(held_out_loss(model, eval_dataset, eval_windows, cfg, device))
            history.append(rec)
            bar.set_postfix(
                loss=f"{rec['loss']:.3f}",
                tok_s=f"{(step - start_step) * tokens_per_step / max(elapsed, 1e-9):.0f}",
            )
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps:
            save(step)
        if stop_at_step is not None and step >= stop_at_step:
            save(step)
            break
    bar.close()
    ranks.barrier()  # DDP: a next train() call of this rank reads the final checkpoint
    model.eval()
    return TrainResult(
        model=model,
        history=history,
        checkpoint=ckpt_path,
        steps_run=step - start_step,
        seconds=time.perf_counter() - t_start,
    )

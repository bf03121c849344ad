"""The `ttlib` command. :func:`build_parser` declares every sub-command, each bound to a runner
that raises on bad input; :func:`main` reports :data:`USER_ERRORS` as one line, exit code 2.
Runners import what is heavy.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import replace

from ttlib.envs import LOCOMOTION_ENVS
from ttlib.errors import CheckpointError, ConfigError, TTLibError
from ttlib.experiments.presets import PRESETS
from ttlib.memory import parse_bytes
from ttlib.search import MODES


def _number(convert, ok, allowed: str):
    """An option type that checks its range as the command line is parsed, before any work."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):  # NaN fails every comparison
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
_count = _number(int, lambda v: v >= 0, "an integer >= 0")  # seeds, context lengths, dimensions
_n_bins = _number(int, lambda v: v >= 2, "an integer >= 2")
_positive_float = _number(float, lambda v: 0 < v < float("inf"), "a number in (0, inf)")
_probability = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _memory_size(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _options(args: argparse.Namespace, *names: str) -> dict:
    """Parsed options as keyword arguments of the config field of the same name."""
    return {name: getattr(args, name) for name in names}


def _run_make_policies(args: argparse.Namespace) -> int:
    from ttlib.datagen import policies
    from ttlib.io import check_output_dir

    for env in args.env:
        policies.check_locomotion(env)
    check_output_dir(args.cache_dir, "--cache-dir")
    check_output_dir(args.out_dir, "--out-dir")
    base = policies.PolicyConfig(
        **_options(args, "total_steps", "checkpoint_every", "stop_score", "seed"),
        **_options(args, "cache_dir", "out_dir"),
        command="ttlib " + shlex.join(sys.argv[1:]),
    )
    for cfg in (replace(base, env=env) for env in args.env):
        if args.save_early:
            info = policies.save_early(cfg)
            print(
                f"{cfg.env}: replay prefix to step {info['prefix_end']}, best {info['best_step']}"
            )
        elif args.train_only:
            policies.train(cfg)
        else:
            info = policies.make_policies(cfg, finalize_only=args.finalize_only)
            medium, expert = info["medium"], info["expert"]
            print(
                f"{cfg.env}: medium {medium['return_mean']:.0f} (step {medium['step']}), "
                f"expert {expert['return_mean']:.0f} (step {expert['step']})"
            )
    return 0


def _run_make_controller(args: argparse.Namespace) -> int:
    from ttlib.datagen.ant_controller import ControllerConfig, train_controller
    from ttlib.io import check_output_dir

    check_output_dir(args.cache_dir, "--cache-dir")
    check_output_dir(args.out_dir, "--out-dir")
    names = ("total_steps", "chunk", "milestone_every", "n_envs", "subproc", "seed")
    cfg = ControllerConfig(
        **_options(args, *names, "eval_episodes", "target_success", "cache_dir", "out_dir"),
        command="ttlib " + shlex.join(sys.argv[1:]),
    )
    curve = train_controller(cfg)
    print(f"antmaze controller: step {curve[-1]['step']}, success {curve[-1]['success']:.2f}")
    return 0


def _run_make_data(args: argparse.Namespace) -> int:
    from ttlib.data import minari_root
    from ttlib.datagen.datasets_gen import GenConfig, make_datasets
    from ttlib.io import check_output_dir

    check_output_dir(minari_root(), "MINARI_DATASETS_PATH")
    cfg = GenConfig(
        **_options(args, "transitions", "seed", "policy_dir", "overwrite"), progress=True
    )
    for dataset_id in make_datasets(args.env, args.kind, cfg):
        print(dataset_id)
    return 0


def _run_data_summary(args: argparse.Namespace) -> int:
    from ttlib.datagen.datasets_gen import data_summary, episode_returns
    from ttlib.datagen.report import write_report
    from ttlib.io import check_output_file

    if not args.out:
        print(data_summary(args.ids).to_string(index=False))
        return 0
    check_output_file(args.out, "--out")
    table = write_report(episode_returns(args.ids), args.out)
    print(table.drop(columns=["d4rl_source"]).to_string(index=False))
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from ttlib.data import DataConfig, SequenceDataset, load_episodes
    from ttlib.io import check_output_dir
    from ttlib.train import TrainConfig, gpt_config_for, resolve_device, train

    # everything that can be refused is refused before the dataset is read
    if args.n_embd % args.n_head:
        raise ConfigError(
            f"--n-head {args.n_head} does not divide --n-embd {args.n_embd}: every attention "
            "head needs the same width; choose an --n-embd that is a multiple of --n-head"
        )
    resolve_device(args.device)
    check_output_dir(args.out, "--out")
    options = _options(args, "batch_size", "lr", "seed", "device", "checkpoint_every")
    cfg = TrainConfig(max_steps=args.steps, **options)
    options = _options(args, "discretizer", "n_bins", "n_transitions", "max_transitions")
    data_cfg = DataConfig(args.dataset, **options, goal_dims=args.goal_dims)
    dataset = SequenceDataset(load_episodes(data_cfg, download=args.download), data_cfg)
    model_cfg = gpt_config_for(dataset, **_options(args, "n_layer", "n_head", "n_embd", "dropout"))
    res = train(dataset, model_cfg, cfg, out_dir=args.out)
    loss = res.history[-1]["loss"] if res.history else float("nan")
    print(f"trained {res.steps_run} steps in {res.seconds:.0f}s; loss {loss:.3f}; {res.checkpoint}")
    return 0


def _check_model_fits(model, ckpt: dict, args: argparse.Namespace, obs_keys: list[str]) -> None:
    """Everything that can be checked before the first env step: dims, block, mode."""
    from ttlib.envs import make_env
    from ttlib.evaluate import flatten_observation

    env = make_env(args.env)
    obs, _ = env.reset(seed=0)
    n_obs, n_act = len(flatten_observation(obs, obs_keys)), env.action_space.shape[0]
    env.close()
    c = model.config
    if (n_obs, n_act) != (c.observation_dim, c.action_dim):
        source = ckpt.get("data_config", {}).get("dataset_id", "its dataset")
        raise CheckpointError(
            f"the checkpoint's model has observation/action dims {c.observation_dim}/"
            f"{c.action_dim} but env {args.env!r} has {n_obs}/{n_act}: it was trained on "
            f"another env ({source}); plan in that env or train a model for {args.env!r}"
        )
    if args.horizon > 1 and c.n_transitions < 2:
        raise CheckpointError(
            f"the model's block size ({c.block_size} tokens, n_transitions {c.n_transitions}) "
            f"holds less than two transitions, so it cannot plan {args.horizon} ahead; use "
            "--horizon 1 or a model trained with --n-transitions 2 or more"
        )
    if args.mode == "goal" and c.goal_dim == 0:
        raise ValueError(
            "mode 'goal' needs a goal-conditioned model (trained with goal_dims); "
            f"{args.checkpoint} has none"
        )


def _q_function(args: argparse.Namespace, model):
    """The IQL critic of ``--q-checkpoint`` (mode q), checked against the model's dims."""
    from ttlib.iql import IQL

    if args.q_checkpoint is None:
        raise ValueError("mode 'q' needs --q-checkpoint PATH (an IQL model saved by ttlib.iql)")
    iql = IQL.load(args.q_checkpoint)  # a missing or unreadable file is a CheckpointError
    c = model.config
    if (iql.obs_dim, iql.act_dim) != (c.observation_dim, c.action_dim):
        raise ValueError(
            f"IQL dims {iql.obs_dim}/{iql.act_dim} do not match the model's "
            f"{c.observation_dim}/{c.action_dim}"
        )
    return iql.q_value


def _describe(result) -> str:
    """One line on an evaluation: return, score or success, episodes, speed."""
    s = result.summary()
    text = f"return {s['return_mean']:.1f} ± {s['return_se']:.1f}"
    if "score_mean" in s:
        text += f", normalised score {s['score_mean']:.1f} ± {s['score_se']:.1f}"
    if "success_mean" in s:
        text += f", success {100 * s['success_mean']:.0f}% ± {100 * s['success_se']:.0f}"
    return f"{text} over {s['episodes']} episodes ({s['env_steps_per_s']:.2f} env steps/s)"


def _run_plan(args: argparse.Namespace) -> int:
    import torch

    from ttlib.envs import check_env_name
    from ttlib.evaluate import evaluate, save_video
    from ttlib.io import check_output_file, save_json
    from ttlib.search import PlannerConfig, TTPlanner
    from ttlib.train import load_checkpoint, resolve_device

    check_env_name(args.env)
    resolve_device(args.device)
    # found out now, not after the whole evaluation has run
    for option, path in (("--out", args.out), ("--video", args.video)):
        if path:
            check_output_file(path, option)
    config = PlannerConfig(
        **_options(args, "mode", "horizon", "beam_width", "n_expand", "k_act", "seed"),
        max_context_transitions=args.context,
        cdf_act=None if args.cdf_act <= 0 else args.cdf_act,
    ).validate()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, discretizer, ckpt = load_checkpoint(args.checkpoint, device=args.device)
    data_cfg = ckpt.get("data_config", {})
    obs_keys = list(data_cfg.get("obs_keys") or ["observation"])
    _check_model_fits(model, ckpt, args, obs_keys)
    q_function = _q_function(args, model) if args.mode == "q" else None
    goal_dims = data_cfg.get("goal_dims")
    planner = TTPlanner(model, discretizer, config, goal_dims, q_function, args.memory_limit)
    kw = dict(video_episodes=int(bool(args.video)), progress=not args.quiet)
    result = evaluate(planner, args.env, args.episodes, args.max_steps, args.seed, obs_keys, **kw)
    print(f"{args.env} ({args.mode}): {_describe(result)}")
    if args.out:
        per_episode = ("returns", "lengths", "scores", "success")
        record = {k: getattr(result, k) for k in per_episode}
        record = {k: None if v is None else v.tolist() for k, v in record.items()}
        record |= {"planner": vars(config), "checkpoint": str(args.checkpoint)}
        save_json(result.summary() | record, args.out)
    if args.video and result.frames:
        print(f"video: {save_video(result.frames[0], args.video)}")
    return 0


def _run_reproduce(args: argparse.Namespace) -> int:
    from ttlib.experiments.reproduce import executed_dir, reproduce
    from ttlib.io import check_output_dir

    check_output_dir(executed_dir(args.preset), "the executed-notebook folder")
    if args.ray_resources:  # the notebooks' kernels inherit it
        from ttlib.experiments.ray_tasks import Resources

        Resources.parse(args.ray_resources)
        os.environ["TTLIB_RAY_RESOURCES"] = args.ray_resources
    for path in reproduce(args.preset, args.only, ray=args.ray):
        print(f"wrote {path}")
    return 0


# What bad input raises (one line "ttlib <command>: error: ...", exit code 2); anything else is
# a bug and keeps its traceback.
PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError)
USER_ERRORS = (TTLibError, ValueError, *PATH_ERRORS)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (not the usage block) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ttlib", description="Trajectory Transformer reproduction toolkit")
    sub = parser.add_subparsers(required=True, metavar="COMMAND", dest="command")
    p = sub.add_parser("make-policies", help="train SAC behaviour policies, pick medium/expert")
    envs = list(LOCOMOTION_ENVS)
    p.add_argument("--env", nargs="+", default=envs, help=f"locomotion envs ({', '.join(envs)})")
    p.add_argument("--total-steps", type=_positive_int, default=200_000)
    p.add_argument("--checkpoint-every", type=_positive_int, default=10_000)
    p.add_argument("--stop-score", type=float, help="stop at this D4RL-normalised return x100")
    p.add_argument("--seed", type=_count, default=0)
    p.add_argument("--cache-dir", default="cache/policies", help="big resumable checkpoints")
    p.add_argument("--out-dir", default="results/policies", help="small committed policy files")
    p.add_argument("--finalize-only", action="store_true", help="choose from existing chunks")
    p.add_argument("--train-only", action="store_true", help="train; choose with --finalize-only")
    p.add_argument("--save-early", action="store_true", help="keep OUT_DIR/<env>/early/ now")
    p.set_defaults(func=_run_make_policies)

    p = sub.add_parser("make-controller", help="train the AntMaze goal-reaching ant controller")
    p.add_argument("--total-steps", type=_positive_int, default=10_240_000)
    p.add_argument("--chunk", type=_positive_int, default=40_960, help="steps per checkpoint")
    p.add_argument("--milestone-every", type=_positive_int, default=409_600)
    p.add_argument("--n-envs", type=_positive_int, default=2, help="PPO's parallel envs")
    p.add_argument("--subproc", action="store_true", help="PPO envs in worker processes")
    p.add_argument("--eval-episodes", type=_positive_int, default=50)
    p.add_argument(
        "--target-success", type=float, default=0.9, help="stop at this arena success rate"
    )
    p.add_argument("--seed", type=_count, default=0)
    p.add_argument(
        "--cache-dir", default="cache/antmaze_d4rl_ant", help="big resumable checkpoints"
    )
    p.add_argument(
        "--out-dir", default="results/policies/antmaze_d4rl_ant", help="small committed files"
    )
    p.set_defaults(func=_run_make_controller)

    p = sub.add_parser("make-data", help="generate D4RL-style Minari datasets")
    p.add_argument("--env", nargs="+", default=None, help="env names (default: all)")
    p.add_argument("--kind", nargs="+", help="dataset kinds (default: all kinds of each env)")
    p.add_argument("--transitions", type=_positive_int, default=100_000, help="per dataset")
    p.add_argument("--seed", type=_count, default=0)
    p.add_argument("--policy-dir", default="results/policies")
    p.add_argument("--overwrite", action="store_true", help="replace datasets that exist")
    p.set_defaults(func=_run_make_data)

    p = sub.add_parser("data-summary", help="table of the local ttlib datasets")
    p.add_argument("--ids", nargs="+", default=None, help="dataset ids (default: all ttlib/ ids)")
    p.add_argument("--out", default="results/data/summary.csv")
    p.set_defaults(func=_run_data_summary)

    p = sub.add_parser("train", help="train a Trajectory Transformer on a Minari dataset")
    p.add_argument("--dataset", required=True, help="Minari id, e.g. ttlib/hopper/medium-v0")
    p.add_argument("--out", required=True, help="output folder (resumes if it has a checkpoint)")
    p.add_argument("--discretizer", choices=["quantile", "uniform"], default="quantile")
    p.add_argument("--n-bins", type=_n_bins, default=100)
    p.add_argument("--n-transitions", type=_positive_int, default=10, help="training window")
    p.add_argument("--max-transitions", type=_positive_int, default=None, help="use the first N")
    p.add_argument("--goal-dims", type=_count, nargs="+", default=None, help="hindsight goals")
    p.add_argument("--steps", type=_positive_int, default=1000)
    p.add_argument("--batch-size", type=_positive_int, default=256)
    p.add_argument("--lr", type=_positive_float, default=6e-4)
    p.add_argument("--n-layer", type=_positive_int, default=4)
    p.add_argument("--n-head", type=_positive_int, default=4)
    p.add_argument("--n-embd", type=_positive_int, default=128)
    p.add_argument("--dropout", type=_probability, default=0.1)
    p.add_argument("--seed", type=_count, default=42)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--checkpoint-every", type=_positive_int, default=500)
    p.add_argument("--download", action="store_true", help="fetch a remote Minari id (network)")
    p.set_defaults(func=_run_train)

    p = sub.add_parser("plan", help="evaluate a trained model with beam-search planning")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt or its directory")
    p.add_argument("--env", required=True, help="ttlib env name, e.g. halfcheetah or fourrooms")
    p.add_argument("--episodes", type=_positive_int, default=1, help="episodes, run together")
    p.add_argument("--mode", choices=MODES, default="reward")
    p.add_argument("--horizon", type=_positive_int, default=15)
    p.add_argument("--beam-width", type=_positive_int, default=128)
    p.add_argument("--n-expand", type=_positive_int, default=2)
    p.add_argument("--context", type=_count, default=5, help="context transitions")
    p.add_argument("--cdf-act", type=_probability, default=0.6, help="0 disables the filter")
    p.add_argument("--k-act", type=_positive_int, default=None)
    p.add_argument("--max-steps", type=_positive_int, default=None, help="cap per episode")
    p.add_argument("--seed", type=_count, default=0)
    p.add_argument("--q-checkpoint", default=None, help="IQL model for --mode q")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--threads", type=_positive_int, help="torch CPU threads (1 on busy cores)")
    p.add_argument("--memory-limit", type=_memory_size, help="e.g. 8G; default $TTLIB_MEMORY_LIMIT")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--video", default=None, help="save episode 0 as a GIF here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_plan)

    p = sub.add_parser("reproduce", help="run the experiment notebooks with papermill")
    p.add_argument("--preset", choices=PRESETS, default="smoke")
    p.add_argument("--only", nargs="+", default=None, help="experiment names")
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the notebooks that take it as Ray tasks: 'local' or an address",
    )
    p.add_argument("--ray-resources", default=None, metavar="SPEC", help="e.g. train_gpus=1")
    p.set_defaults(func=_run_reproduce)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command; bad input ends as one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"ttlib {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ttlib {args.command}: interrupted; rerun it to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

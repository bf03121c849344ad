"""`ttlib plan`: roll out a trained Trajectory Transformer with beam search in an env.

`add_plan` registers the sub-command and binds `func=` to a runner that returns an exit code.
The runner checks everything it can before the first env step (checkpoint readable and
consistent, model made for this env and mode, beam search fits in memory) and raises on bad
input; `ttlib.cli.main` reports that as one line and exit code 2.
`python -m ttlib.cli_plan plan ...` runs it stand-alone through the same entry point.
"""

from __future__ import annotations

import argparse
import os
import sys

from ttlib.memory import parse_bytes
from ttlib.search import MODES


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _check_dims(model, ckpt: dict, env_name: str, obs_keys: list[str]) -> None:
    from ttlib.envs import make_env
    from ttlib.evaluate import flatten_observation
    from ttlib.train import CheckpointError

    env = make_env(env_name)
    obs, _ = env.reset(seed=0)
    n_obs = len(flatten_observation(obs, obs_keys))
    n_act = env.action_space.shape[0]
    env.close()
    c = model.config
    if (n_obs, n_act) != (c.observation_dim, c.action_dim):
        source = ckpt.get("data_config", {}).get("dataset_id", "its dataset")
        raise CheckpointError(
            f"the checkpoint's model has observation/action dims {c.observation_dim}/"
            f"{c.action_dim} but env {env_name!r} has {n_obs}/{n_act}: it was trained on "
            f"another env ({source}); plan in that env or train a model for {env_name!r}"
        )


def _check_block(model, horizon: int) -> None:
    """A plan longer than one transition needs a block that holds at least two of them."""
    from ttlib.train import CheckpointError

    c = model.config
    if horizon > 1 and c.n_transitions < 2:
        raise CheckpointError(
            f"the model's block size ({c.block_size} tokens, n_transitions {c.n_transitions}) "
            f"holds less than two transitions of {c.transition_dim} tokens, so it cannot plan "
            f"{horizon} transitions ahead; use --horizon 1 or a model trained with "
            "--n-transitions 2 or more"
        )


def _run_plan(args: argparse.Namespace) -> int:
    from ttlib.envs import check_env_name
    from ttlib.evaluate import evaluate, save_video
    from ttlib.io import save_json
    from ttlib.memory import LIMIT_ENV, check_planning_memory
    from ttlib.search import PlannerConfig, TTPlanner
    from ttlib.train import load_checkpoint

    check_env_name(args.env)
    config = PlannerConfig(
        mode=args.mode,
        horizon=args.horizon,
        beam_width=args.beam_width,
        n_expand=args.n_expand,
        max_context_transitions=args.context,
        cdf_act=None if args.cdf_act <= 0 else args.cdf_act,
        k_act=args.k_act,
        seed=args.seed,
    ).validate()
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.memory_limit is not None:  # every later check in this process uses it too
        os.environ[LIMIT_ENV] = str(args.memory_limit)
    model, discretizer, ckpt = load_checkpoint(args.checkpoint, device=args.device)
    device = next(model.parameters()).device
    check_planning_memory(model.config, config, args.episodes, args.memory_limit, device)
    data_cfg = ckpt.get("data_config", {})
    obs_keys = list(data_cfg.get("obs_keys") or ["observation"])
    _check_dims(model, ckpt, args.env, obs_keys)
    _check_block(model, args.horizon)
    if args.mode == "goal" and model.config.goal_dim == 0:
        raise ValueError(
            "mode 'goal' needs a goal-conditioned model (trained with goal_dims); "
            f"{args.checkpoint} has none"
        )
    q_function = None
    if args.mode == "q":
        if args.q_checkpoint is None:
            raise ValueError("mode 'q' needs --q-checkpoint PATH (an IQL model saved by ttlib.iql)")
        from ttlib.iql import IQL
        from ttlib.train import CheckpointError

        try:
            iql = IQL.load(args.q_checkpoint)
        except (FileNotFoundError, ValueError):
            raise
        except Exception as err:  # truncated or corrupt file
            raise CheckpointError(
                f"{args.q_checkpoint} is not a readable IQL model ({type(err).__name__})"
            ) from err
        if iql.obs_dim != model.config.observation_dim or iql.act_dim != model.config.action_dim:
            raise ValueError(
                f"IQL dims {iql.obs_dim}/{iql.act_dim} do not match the model's "
                f"{model.config.observation_dim}/{model.config.action_dim}"
            )
        q_function = iql.q_value
    planner = TTPlanner(model, discretizer, config, data_cfg.get("goal_dims"), q_function)
    result = evaluate(
        planner,
        args.env,
        n_episodes=args.episodes,
        max_steps=args.max_steps,
        seed=args.seed,
        obs_keys=obs_keys,
        video_episodes=1 if args.video else 0,
        progress=not args.quiet,
        memory_limit=args.memory_limit,
    )
    print(f"{args.env} ({args.mode}): {result.describe()}")
    if args.out:
        record = result.summary() | {
            "returns": result.returns.tolist(),
            "lengths": result.lengths.tolist(),
            "scores": None if result.scores is None else result.scores.tolist(),
            "success": None if result.success is None else result.success.tolist(),
            "planner": vars(config),
            "checkpoint": str(args.checkpoint),
        }
        save_json(record, args.out)
    if args.video and result.frames:
        print(f"video: {save_video(result.frames[0], args.video)}")
    return 0


def add_plan(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("plan", help="evaluate a trained model with beam-search planning")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt or its directory")
    p.add_argument("--env", required=True, help="ttlib env name, e.g. halfcheetah or fourrooms")
    p.add_argument("--episodes", type=_positive_int, default=1, help="episodes, run together")
    p.add_argument("--mode", choices=MODES, default="reward")
    p.add_argument("--horizon", type=_positive_int, default=15)
    p.add_argument("--beam-width", type=_positive_int, default=128)
    p.add_argument("--n-expand", type=_positive_int, default=2)
    p.add_argument("--context", type=int, default=5, help="context transitions")
    p.add_argument("--cdf-act", type=float, default=0.6, help="0 disables the filter")
    p.add_argument("--k-act", type=_positive_int, default=None)
    p.add_argument("--max-steps", type=_positive_int, default=None, help="cap per episode")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--q-checkpoint", default=None, help="IQL model for --mode q")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="torch CPU threads; 1 is much faster when other jobs share the cores",
    )
    p.add_argument(
        "--memory-limit",
        type=parse_bytes,
        default=None,
        help="refuse settings estimated above this (e.g. 8G); default: "
        "$TTLIB_MEMORY_LIMIT or 3/4 of the memory available",
    )
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--video", default=None, help="save episode 0 as a GIF here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_plan, command="plan")
    return p


def main(argv: list[str] | None = None) -> int:
    from ttlib.cli import main as ttlib_main  # here: ttlib.cli imports this module

    return ttlib_main(argv, commands=(add_plan,))


if __name__ == "__main__":
    sys.exit(main())

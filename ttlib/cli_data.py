"""`ttlib make-policies`, `ttlib make-data` and `ttlib data-summary` sub-commands.

Each `add_*` function registers one sub-command on an argparse sub-parser set and binds
`func=` to a runner that takes the parsed args and returns an exit code. Runners raise on bad
input (unknown env or kind); `ttlib.cli.main` turns those errors into one line and exit code 2.
`python -m ttlib.cli_data <sub-command> ...` runs only these sub-commands, through that same
entry point.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import replace

from ttlib.envs import LOCOMOTION_ENVS


def _command_line() -> str:
    return "ttlib " + shlex.join(sys.argv[1:])


# ---------------------------------------------------------------- make-policies


def _run_make_policies(args: argparse.Namespace) -> int:
    from ttlib.policies import PolicyConfig, make_policies, train

    base = PolicyConfig(
        total_steps=args.total_steps,
        checkpoint_every=args.checkpoint_every,
        stop_score=args.stop_score,
        seed=args.seed,
        cache_dir=args.cache_dir,
        out_dir=args.out_dir,
        command=_command_line(),
    )
    for env in args.env:
        if env not in LOCOMOTION_ENVS:
            raise ValueError(
                f"make-policies trains locomotion policies only, got {env!r}; "
                f"choose from {', '.join(LOCOMOTION_ENVS)}."
            )
    for env in args.env:
        if args.train_only:
            train(replace(base, env=env))
            continue
        info = make_policies(replace(base, env=env), finalize_only=args.finalize_only)
        print(
            f"{env}: medium {info['medium']['return_mean']:.0f} (step {info['medium']['step']})"
            f", expert {info['expert']['return_mean']:.0f} (step {info['expert']['step']})"
        )
    return 0


def add_make_policies(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "make-policies", help="train SAC behaviour policies (resumable) and pick medium/expert"
    )
    p.add_argument(
        "--env",
        nargs="+",
        default=list(LOCOMOTION_ENVS),
        help=f"locomotion envs ({', '.join(LOCOMOTION_ENVS)})",
    )
    p.add_argument("--total-steps", type=int, default=200_000)
    p.add_argument("--checkpoint-every", type=int, default=10_000)
    p.add_argument(
        "--stop-score",
        type=float,
        default=None,
        help="stop training once a checkpoint's D4RL-normalised return (x100) reaches this",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default="cache/policies", help="big resumable checkpoints")
    p.add_argument("--out-dir", default="results/policies", help="small committed policy files")
    p.add_argument(
        "--finalize-only",
        action="store_true",
        help="skip training; select and evaluate from the checkpoints that exist",
    )
    p.add_argument(
        "--train-only",
        action="store_true",
        help="train (or resume) only; choose medium/expert later with --finalize-only",
    )
    p.set_defaults(func=_run_make_policies, command="make-policies")
    return p


# ---------------------------------------------------------------- make-data


def _run_make_data(args: argparse.Namespace) -> int:
    from ttlib.datasets_gen import DataConfig, make_datasets

    cfg = DataConfig(
        transitions=args.transitions,
        seed=args.seed,
        policy_dir=args.policy_dir,
        overwrite=args.overwrite,
    )
    ids = make_datasets(args.env, args.kind, cfg)
    for dataset_id in ids:
        print(dataset_id)
    return 0


def add_make_data(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "make-data", help="generate D4RL-style Minari datasets into MINARI_DATASETS_PATH"
    )
    p.add_argument("--env", nargs="+", default=None, help="env names (default: all)")
    p.add_argument(
        "--kind", nargs="+", default=None, help="dataset kinds (default: all kinds of each env)"
    )
    p.add_argument("--transitions", type=int, default=100_000, help="transitions per dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy-dir", default="results/policies")
    p.add_argument("--overwrite", action="store_true", help="replace datasets that exist")
    p.set_defaults(func=_run_make_data, command="make-data")
    return p


# ---------------------------------------------------------------- data-summary


def _run_data_summary(args: argparse.Namespace) -> int:
    from ttlib.datasets_gen import data_summary

    table = data_summary(args.ids, out=args.out)
    print(table.to_string(index=False))
    return 0


def add_data_summary(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("data-summary", help="table of the local ttlib datasets")
    p.add_argument("--ids", nargs="+", default=None, help="dataset ids (default: all ttlib/ ids)")
    p.add_argument("--out", default="results/data/summary.csv")
    p.set_defaults(func=_run_data_summary, command="data-summary")
    return p


COMMANDS = (add_make_policies, add_make_data, add_data_summary)


def main(argv: list[str] | None = None) -> int:
    from ttlib.cli import main as ttlib_main  # here: ttlib.cli imports this module

    return ttlib_main(argv, commands=COMMANDS)


if __name__ == "__main__":
    sys.exit(main())

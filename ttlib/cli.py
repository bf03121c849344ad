"""The `ttlib` command: make-policies, make-data, data-summary, train, plan, reproduce."""

from __future__ import annotations

import argparse
import sys

from ttlib.cli_data import add_data_summary, add_make_data, add_make_policies
from ttlib.cli_plan import add_plan
from ttlib.data import DatasetError
from ttlib.memory import PlanningMemoryError
from ttlib.train import CheckpointError


def _run_train(args: argparse.Namespace) -> int:
    from ttlib.data import DataConfig, make_sequence_dataset
    from ttlib.train import TrainConfig, gpt_config_for, train

    data_cfg = DataConfig(
        dataset_id=args.dataset,
        discretizer=args.discretizer,
        n_bins=args.n_bins,
        n_transitions=args.n_transitions,
        max_transitions=args.max_transitions,
        goal_dims=args.goal_dims,
    )
    dataset = make_sequence_dataset(data_cfg, download=args.download)
    model_cfg = gpt_config_for(
        dataset, n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout
    )
    cfg = TrainConfig(
        max_steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        checkpoint_every=args.checkpoint_every,
    )
    res = train(dataset, model_cfg, cfg, out_dir=args.out)
    loss = res.history[-1]["loss"] if res.history else float("nan")
    print(f"trained {res.steps_run} steps in {res.seconds:.0f}s; loss {loss:.3f}; {res.checkpoint}")
    return 0


def add_train(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("train", help="train a Trajectory Transformer on a Minari dataset")
    p.add_argument("--dataset", required=True, help="Minari id, e.g. ttlib/hopper/medium-v0")
    p.add_argument("--out", required=True, help="output folder (resumes if it has a checkpoint)")
    p.add_argument("--discretizer", choices=["quantile", "uniform"], default="quantile")
    p.add_argument("--n-bins", type=int, default=100)
    p.add_argument("--n-transitions", type=int, default=10, help="training window")
    p.add_argument("--max-transitions", type=int, default=None, help="use the first N")
    p.add_argument("--goal-dims", type=int, nargs="+", default=None, help="hindsight goals")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="auto")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--download", action="store_true", help="fetch a remote Minari id (network)")
    p.set_defaults(func=_run_train, command="train")
    return p


def _run_reproduce(args: argparse.Namespace) -> int:
    from ttlib.reproduce import reproduce

    for path in reproduce(args.preset, args.only):
        print(f"wrote {path}")
    return 0


def add_reproduce(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("reproduce", help="run the experiment notebooks with papermill")
    p.add_argument("--preset", default="smoke", help="smoke | cpu | paper")
    p.add_argument("--only", nargs="+", default=None, help="experiment names")
    p.set_defaults(func=_run_reproduce, command="reproduce")
    return p


COMMANDS = (add_make_policies, add_make_data, add_data_summary, add_train, add_plan, add_reproduce)


def build_parser(commands=COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ttlib", description="Trajectory Transformer reproduction toolkit"
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    for add in commands:
        add(sub)
    return parser


# The exceptions that bad input causes. Each is reported as one line,
# "ttlib <command>: error: <message>", with exit code 2 and no traceback; anything else is a
# bug and keeps its traceback. Runners raise these and never print errors themselves.
USER_ERRORS: tuple[type[BaseException], ...] = (
    DatasetError,  # dataset id unknown, unreadable, or not downloadable here
    CheckpointError,  # checkpoint missing, corrupt, or made for another env / model
    PlanningMemoryError,  # planner settings that would not fit in memory
    ValueError,  # any other bad value: env name, dataset kind, mode, option combination
    FileNotFoundError,  # an input file (policy, IQL model) that does not exist
    IsADirectoryError,  # a file path that names a folder
    NotADirectoryError,  # a folder path that goes through a file
    PermissionError,  # an output that cannot be written
)


def one_line(err: BaseException) -> str:
    """The error's message on a single line."""
    return " ".join(str(err).split()) or type(err).__name__


def main(argv: list[str] | None = None, commands=COMMANDS) -> int:
    """Run one sub-command; ``commands`` limits the parser (``python -m ttlib.cli_data``)."""
    args = build_parser(commands).parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as err:
        print(f"ttlib {args.command}: error: {one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"ttlib {args.command}: interrupted; rerun the same command to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())

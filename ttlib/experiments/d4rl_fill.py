"""Fill the D4RL table's caches (and its learning curve's) without running the notebook.

``python -m ttlib.experiments.d4rl_fill --preset cpu --only hopper/medium`` trains and
evaluates what the notebook would, dataset by dataset; several processes can share the work
(``--only``, ``--methods``), and the notebook then renders the table from the caches.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import torch

from ttlib.experiments.d4rl_table import learning_curve, method_name, run_table, summarise
from ttlib.experiments.runs import start

log = logging.getLogger("ttlib.d4rl")


def main(argv: Sequence[str] | None = None) -> None:
    """Fill the caches of the table (and the learning curve) without running the notebook."""
    ap = argparse.ArgumentParser(
        prog="python -m ttlib.experiments.d4rl_fill", description=main.__doc__
    )
    ap.add_argument("--preset", default="cpu")
    ap.add_argument(
        "--only",
        nargs="*",
        default=None,
        metavar="ENV/KIND",
        help="datasets to do, e.g. hopper/medium (default: the preset's, curve dataset first)",
    )
    ap.add_argument("--curve", action="store_true", help="also the learning curve")
    ap.add_argument(
        "--train-only",
        action="store_true",
        help="train and cache the models (TT, BC, IQL) without the evaluation episodes",
    )
    ap.add_argument(
        "--methods",
        nargs="*",
        default=None,
        metavar="NAME",
        help="only these methods: uniform, quantile (the TT discretizers), BC, IQL; lets two "
        "processes share one dataset (default: all of the preset's)",
    )
    ap.add_argument("--log", default=None, help="append progress to this file")
    args = ap.parse_args(argv)
    methods = None if args.methods is None else [method_name(m) for m in args.methods]
    logging.basicConfig(
        level=logging.INFO, filename=args.log, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    torch.set_num_threads(1)
    params = start("d4rl", {"preset": args.preset}).params  # same data dirs as the notebook
    curve = (params["curve_env"], params["curve_kind"])
    pairs = (
        [tuple(x.split("/")) for x in args.only]
        if args.only
        else [(e, k) for e in params["envs"] for k in params["kinds"]]
    )
    pairs.sort(key=lambda pair: pair != curve)
    for env, kind in pairs:
        run = run_table(
            {**params, "envs": [env], "kinds": [kind]},
            methods=methods,
            evaluate_agents=not args.train_only,
        )
        if args.train_only:
            log.info("trained %s %s", env, kind)
            continue
        if not run.episodes.empty:
            log.info("done %s %s:\n%s", env, kind, summarise(run.episodes).round(1))
        if args.curve and params["learning_curve"] and (env, kind) == curve:
            learning_curve(env, kind, params)
            log.info("learning curve of %s %s done", env, kind)


if __name__ == "__main__":
    main()

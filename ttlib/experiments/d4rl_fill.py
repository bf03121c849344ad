"""Fill the D4RL table's caches without running the notebook.

``python -m ttlib.experiments.d4rl_fill --preset cpu --ray local`` trains and evaluates what
the notebook would as Ray tasks on every core of this machine (``--ray ADDRESS``: on a Ray
cluster, :mod:`ttlib.experiments.ray_tasks`); without ``--ray``, dataset by dataset in this
process. The notebook then renders the table from the caches.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import torch

from ttlib.experiments.archive import pack
from ttlib.experiments.d4rl_table import run_table, summarise
from ttlib.experiments.runs import start

log = logging.getLogger("ttlib.d4rl")


def main(argv: Sequence[str] | None = None) -> None:
    """Fill the caches of the table without running the notebook."""
    ap = argparse.ArgumentParser(
        prog="python -m ttlib.experiments.d4rl_fill", description=main.__doc__
    )
    ap.add_argument("--preset", default="cpu")
    ap.add_argument(
        "--train-only",
        action="store_true",
        help="train and cache the models (TT, BC, IQL) without the evaluation episodes",
    )
    ap.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run the work as Ray tasks: 'local' (all of this machine's cores) or a Ray "
        "cluster's address (pip install -e '.[ray]')",
    )
    ap.add_argument(
        "--ray-resources",
        default=None,
        metavar="SPEC",
        help="what each Ray task asks for, e.g. train_gpus=1,train_memory=16G "
        "(ttlib.experiments.ray_tasks.Resources)",
    )
    ap.add_argument(
        "--envs",
        nargs="+",
        default=None,
        help="only these envs of the preset (e.g. two processes on two cores: one per env list)",
    )
    ap.add_argument("--kinds", nargs="+", default=None, help="only these dataset kinds")
    ap.add_argument(
        "--archive",
        default=None,
        metavar="DIR",
        help="after each dataset, copy its models and episodes from the cache to DIR "
        "(ttlib.experiments.archive; the cpu table's: results/d4rl/archive)",
    )
    ap.add_argument("--log", default=None, help="append progress to this file")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, filename=args.log, format="%(asctime)s %(message)s", datefmt="%H:%M:%S"
    )
    torch.set_num_threads(1)
    namespace = {"preset": args.preset, **({"envs": args.envs} if args.envs else {})}
    namespace |= {"kinds": args.kinds} if args.kinds else {}
    params = start("d4rl", namespace).params  # same data dirs as the notebook
    if args.ray:
        from ttlib.experiments.ray_tasks import Resources, fill_table

        if args.ray_resources:
            Resources.parse(args.ray_resources)  # a bad spec fails now, not in the first task
            os.environ["TTLIB_RAY_RESOURCES"] = args.ray_resources
        fill_table(params, None, not args.train_only, args.ray)
    # serially, or (after Ray) loading what the tasks cached: a summary per dataset
    for env, kind in [(e, k) for e in params["envs"] for k in params["kinds"]]:
        run = run_table(
            {**params, "envs": [env], "kinds": [kind]}, evaluate_agents=not args.train_only
        )
        if args.train_only:
            log.info("trained %s %s", env, kind)
            continue
        if not run.episodes.empty:
            log.info("done %s %s:\n%s", env, kind, summarise(run.episodes).round(1))
        if args.archive:
            log.info("%d files archived in %s", pack(args.archive), args.archive)


if __name__ == "__main__":
    main()

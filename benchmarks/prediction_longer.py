"""Train a prediction-page TT longer, to see where its held-out state loss stops falling (#25).

The prediction page's models (cpu preset: 4 x 64, batch 32, 4000 steps, the ``run_length``
schedule) still improve on held-out episodes at their last step. This trains the same model of
one env, on the page's split, for ``--factor`` times the steps (its own ``run_length`` schedule
over the longer run), logging the held-out cross-entropy as the page does.

Training runs through :func:`ttlib.experiments.cache.train_tt` and checkpoints every 500 steps,
so a killed run resumes bit for bit. ``--keep DIR`` copies the latest checkpoint (optimiser
and random states included: it is what resuming needs) and its training record to DIR after
the run or on Ctrl-C, and a later run on a fresh machine starts from DIR's checkpoint when the
cache has fewer steps::

    env OMP_NUM_THREADS=1 python benchmarks/prediction_longer.py --env hopper --factor 4 \\
        --keep results/prediction/resume

The prediction page restores the kept run the same way and shows its learning curve and its
rollouts beside the page's model (its ``longer_envs`` and ``longer_factor`` knobs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from ttlib.experiments import prediction, runs
from ttlib.experiments.cache import cache_dir, train_tt
from ttlib.experiments.presets import preset_params


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="hopper", choices=["hopper", "halfcheetah"])
    ap.add_argument("--factor", type=int, default=4, help="times the page's train_steps")
    ap.add_argument("--keep", type=Path, default=None, help="copy the resume checkpoint here")
    args = ap.parse_args(argv)

    p = preset_params("prediction", "cpu")
    did = runs.ensure_dataset(args.env, p["dataset_kind"], p["dataset_transitions"], p["seed"])
    data_cfg, train_cfg, model_kw = prediction.longer_configs(did, p, args.factor)
    train_eps, test_eps = prediction.split_episodes(data_cfg)
    models = cache_dir("models")
    if args.keep is not None:  # a kept run continues where it stopped
        prediction.restore_kept(args.keep, models)
    try:
        tt = train_tt(data_cfg, train_cfg, model_kw, eval_episodes=test_eps, progress=True)
    finally:  # also on Ctrl-C; nothing to keep where training failed before its first write
        folder = prediction.kept_run(models, data_cfg, train_cfg, model_kw)
        if args.keep is not None and folder is not None:
            print(f"kept {folder} in {prediction.keep_run(folder, args.keep)}")
    print(pd.DataFrame(tt.history).tail(3).to_string())


if __name__ == "__main__":
    main()

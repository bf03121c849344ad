"""Train a prediction-page TT longer, to see where its held-out state loss stops falling (#25).

The prediction page's models (cpu preset: 4 x 64, batch 32, 4000 steps, the ``run_length``
schedule) still improve on held-out episodes at their last step. This trains the same model of
one env, on the page's split, for ``--factor`` times the steps (its own ``run_length`` schedule
over the longer run), logging the held-out cross-entropy as the page does.

Training runs through :func:`ttlib.experiments.cache.train_tt` and checkpoints every 500 steps,
so a killed run resumes bit for bit. ``--keep DIR`` copies the latest checkpoint (optimiser
and random states included: it is what resuming needs) to DIR after the run or on Ctrl-C, and
a later run on a fresh machine starts from DIR's checkpoint when the cache has none::

    env OMP_NUM_THREADS=1 python benchmarks/prediction_longer.py --env hopper --factor 4 \\
        --keep results/prediction/resume

At the end it writes ``<keep>/<model>.curve.csv``: steps, tokens and the training and
held-out losses per token kind, as logged.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

from ttlib.experiments import prediction, runs
from ttlib.experiments.cache import cache_dir, train_tt
from ttlib.experiments.presets import preset_params


def _run_folder(models: Path, data: dict, train: dict) -> Path:
    """The cache folder of this run: the one whose recorded data and training configs match."""
    data, train = json.loads(json.dumps(data)), json.loads(json.dumps(train))  # tuples -> lists
    for config in models.glob("*/config.json"):
        c = json.loads(config.read_text())
        if c.get("data") == data and c.get("train") == train:
            return config.parent
    raise FileNotFoundError(f"no cache folder in {models} holds this run")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="hopper", choices=["hopper", "halfcheetah"])
    ap.add_argument("--factor", type=int, default=4, help="times the page's train_steps")
    ap.add_argument("--keep", type=Path, default=None, help="copy the resume checkpoint here")
    args = ap.parse_args(argv)

    p = preset_params("prediction", "cpu")
    p["train_steps"] = args.factor * p["train_steps"]
    did = runs.ensure_dataset(args.env, p["dataset_kind"], p["dataset_transitions"], p["seed"])
    data_cfg, train_cfg, model_kw = prediction.tt_configs(did, p)
    train_eps, test_eps = prediction.split_episodes(data_cfg)
    models = cache_dir("models")
    if args.keep is not None:  # a kept run continues where it stopped
        for folder in args.keep.glob("*/checkpoint.pt"):
            target = models / folder.parent.name
            if not (target / "checkpoint.pt").exists():
                shutil.copytree(folder.parent, target, dirs_exist_ok=True)
    try:
        tt = train_tt(data_cfg, train_cfg, model_kw, eval_episodes=test_eps, progress=True)
    finally:
        if args.keep is not None:
            folder = _run_folder(models, data_cfg.to_dict(), train_cfg.to_dict())
            shutil.copytree(folder, args.keep / folder.name, dirs_exist_ok=True)
            print(f"kept {folder} in {args.keep / folder.name}")
    curve = pd.DataFrame(tt.history)
    if args.keep is not None:
        curve.to_csv(args.keep / f"{tt.folder.name}.curve.csv", index=False)
    print(curve.tail(3).to_string())


if __name__ == "__main__":
    main()

"""AntMaze in the TT(+Q) experiment: our generated datasets or D4RL's, and D4RL's evaluation task.

``antmaze_namespace`` chooses the data of ``env_family: antmaze`` (as ``dataset_namespace``
does for the D4RL table):

``ttlib`` (the smoke and cpu presets)
    the local ``ttlib/antmaze/<kind>-v0`` that ``ttlib make-data --env antmaze`` writes
    (:mod:`ttlib.datagen.antmaze_gen`), generated on first use with ``antmaze_transitions``
    transitions: D4RL's one million at cpu and paper, a few thousand at smoke. It needs the
    committed ant controller (``results/policies/antmaze_d4rl_ant``) and no network.
``D4RL`` (the paper preset)
    Minari's remote ``D4RL/antmaze/<kind>-v1``, downloaded on first use (needs network) and
    evaluated in the evaluation env Minari stores with it.

Either way training reads the first ``dataset_transitions`` transitions of the dataset
(:class:`ttlib.data.DataConfig`'s ``max_transitions``), the meaning that knob always had for
the remote datasets.

On local data every method is evaluated on D4RL's AntMaze task (``antmaze-*-v0``/``v2``'s
evaluation envs): the ant starts in cell (1, 1) and walks to the maze's one far goal cell
(umaze (3, 1), medium (6, 6), large (7, 9)); :func:`ttlib.datagen.antmaze_gen.eval_env` builds
that env, marking the two cells ``r`` and ``g`` as Minari's D4RL AntMaze evaluation envs do,
so gymnasium-robotics draws the start and goal there with its reset noise (up to a quarter
cell, 1 m, in x and y). As in D4RL an episode lasts at most 700 steps in umaze and 1000 in
medium and large (fewer when ``max_episode_steps`` is smaller), and it ends with success
once the ant is within D4RL's 0.5 m of the goal.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym

from ttlib.datagen.antmaze_gen import SCALING, eval_env, split_kind
from ttlib.envs import ANTMAZE_ENV, ANTMAZE_MAX_EPISODE_STEPS, antmaze_layout
from ttlib.envs import dataset_id as local_dataset_id

NAMESPACES = ("ttlib", "D4RL")
LOCAL_PREFIX = "ttlib/antmaze/"


def namespace_of(params: dict) -> str:
    """``antmaze_namespace`` of a run's parameters, checked."""
    namespace = params["antmaze_namespace"]
    if namespace not in NAMESPACES:
        raise ValueError(f"unknown antmaze_namespace {namespace!r}; choose one of {NAMESPACES}")
    return namespace


def local_id(kind: str) -> str:
    """``ttlib/antmaze/<kind>-v0``, the dataset ``ttlib make-data --env antmaze`` writes."""
    return local_dataset_id(ANTMAZE_ENV, kind)


def is_local(dataset_id: str) -> bool:
    return dataset_id.startswith(LOCAL_PREFIX)


def kind_of(dataset_id: str) -> str:
    """The dataset kind of a local id: ``ttlib/antmaze/medium-play-v0`` → ``medium-play``."""
    return dataset_id.removeprefix(LOCAL_PREFIX).removesuffix("-v0")


def maze_of(dataset_id: str) -> str:
    """The maze of a local AntMaze dataset: ``umaze``, ``medium`` or ``large``."""
    return split_kind(kind_of(dataset_id))[0]


def ensure_local(dataset_id: str, params: dict) -> str:
    """Generate the local dataset with ``antmaze_transitions`` transitions unless it exists
    (an existing one of another size is an error, see
    :func:`ttlib.experiments.runs.ensure_dataset`)."""
    from ttlib.experiments.runs import ensure_dataset

    transitions = int(params["antmaze_transitions"])
    return ensure_dataset(ANTMAZE_ENV, kind_of(dataset_id), transitions, params["seed"])


def episode_limit(maze: str, max_steps: int) -> int:
    """D4RL's time limit of the maze's evaluation env, or ``max_steps`` if that is shorter."""
    return min(int(max_steps), ANTMAZE_MAX_EPISODE_STEPS[maze])


class EndAtGoal(gym.Wrapper):
    """D4RL's evaluation episode: it terminates, a success, within 0.5 m of the goal.

    The wrapped env is :func:`ttlib.envs.make_antmaze`'s, whose reward is already D4RL's (1
    within ``ANTMAZE_GOAL_RADIUS``), so a reward is the success. ``info["success"]`` says the
    same (gymnasium-robotics' own flag uses 0.45 m), so :func:`ttlib.evaluate.evaluate` counts
    what D4RL's return of 1 counts.
    """

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        reached = reward > 0
        return obs, reward, terminated or reached, truncated, {**info, "success": reached}


def eval_factory(dataset_id: str, max_steps: int) -> Callable[..., gym.Env]:
    """``env(**kw)`` for :func:`ttlib.evaluate.evaluate`: D4RL's evaluation task in the maze
    of a local dataset (module docstring)."""
    maze = maze_of(dataset_id)
    limit = episode_limit(maze, max_steps)
    return lambda **kw: EndAtGoal(eval_env(maze, max_episode_steps=limit, **kw))


def eval_identity(dataset_id: str, max_steps: int) -> dict:
    """What the evaluation of a local AntMaze dataset adds to its cache key."""
    maze = maze_of(dataset_id)
    return {"eval_task": "d4rl-antmaze", "episode_limit": episode_limit(maze, max_steps)}


def video_factory(dataset_id: str, max_steps: int, size: int = 160) -> Callable[..., gym.Env]:
    """:func:`eval_factory` whose rendering env draws ``size``² frames from the ant's own
    camera (:func:`ttlib.envs.d4rl_ant_xml`: it looks down on the torso wherever it walks)."""
    factory = eval_factory(dataset_id, max_steps)
    return lambda **kw: factory(**kw, width=size, height=size) if kw else factory()


def layout(dataset_id: str) -> tuple[list[list[int]], float]:
    """(layout with 1 = wall, cell size 4 m) of a local dataset's maze, without an env."""
    return antmaze_layout(maze_of(dataset_id)), SCALING

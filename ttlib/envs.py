"""Environment construction and D4RL-style score normalisation.

Every part of ttlib builds environments through `make_env`, so the names used in dataset ids
(`ttlib/<env>/<kind>-v0`), configs and the CLI all mean the same simulator.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import io

import gymnasium as gym
import numpy as np

LOCOMOTION_ENVS: dict[str, str] = {
    "halfcheetah": "HalfCheetah-v5",
    "hopper": "Hopper-v5",
    "walker2d": "Walker2d-v5",
}

# Four rooms: an 11x11 grid (walls included) split by a cross-shaped wall with one doorway in each
# arm, the layout of the paper's four-rooms figure (Sutton et al. 1999 style). 1 = wall, 0 = free.
FOUR_ROOMS_MAP: list[list[int]] = [
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
    [1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1],
    [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
    [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1],
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
]

# PointMaze layouts are taken from gymnasium-robotics' own maps (the D4RL maze2d/antmaze layouts)
# with the reset/goal markers stripped: our data collector picks start and goal cells itself.
MAZE_ENVS: tuple[str, ...] = ("fourrooms", "pointmaze-medium", "pointmaze-large")

# Episode length of the maze envs; long enough for the controller to cross the large maze.
MAZE_MAX_EPISODE_STEPS: dict[str, int] = {
    "fourrooms": 400,
    "pointmaze-medium": 600,
    "pointmaze-large": 800,
}

# AntMaze: gymnasium-robotics' AntMaze v5 (its Ant, cells of maze_size_scaling = 4 m). One env
# name; the dataset kind names the maze and the goal sampling, as D4RL's ids do
# (antmaze-medium-play -> ttlib/antmaze/medium-play-v0). Data: ttlib/datagen/antmaze_gen.py.
ANTMAZE_ENV = "antmaze"
ANTMAZES: tuple[str, ...] = ("umaze", "medium", "large")
# D4RL's registered time limits (d4rl/locomotion/__init__.py: umaze 700, medium/large 1000).
ANTMAZE_MAX_EPISODE_STEPS: dict[str, int] = {"umaze": 700, "medium": 1000, "large": 1000}
# D4RL's sparse AntMaze reward: 1 within this distance of the goal (d4rl/locomotion/ant.py);
# gymnasium-robotics uses 0.45, so make_env recomputes it.
ANTMAZE_GOAL_RADIUS = 0.5

ENV_NAMES: tuple[str, ...] = (*LOCOMOTION_ENVS, *MAZE_ENVS, ANTMAZE_ENV)

# D4RL reference returns (random policy, expert policy) used for the ×100 normalised score.
REF_SCORES: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
}


def check_env_name(name: str) -> str:
    """Return `name` if it is a known env, else raise a ValueError that suggests the closest one."""
    if name in ENV_NAMES:
        return name
    close = difflib.get_close_matches(name, ENV_NAMES, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"Unknown env name {name!r}; valid names are {', '.join(ENV_NAMES)}.{hint}")


def _robotics():
    """gymnasium-robotics, imported without the notice about its Adroit envs (not used here)
    that it prints on import."""
    with contextlib.redirect_stderr(io.StringIO()):
        import gymnasium_robotics
    return gymnasium_robotics


def maze_map(name: str) -> list[list[int]]:
    """The cell layout (1 = wall, 0 = free) of a maze env, without reset/goal markers."""
    maps = _robotics().envs.maze.maps
    check_env_name(name)
    layouts = {"pointmaze-medium": maps.MEDIUM_MAZE, "pointmaze-large": maps.LARGE_MAZE}
    layout = FOUR_ROOMS_MAP if name == "fourrooms" else layouts.get(name)
    if layout is None:
        raise ValueError(f"{name!r} is not a maze env; maze envs are {', '.join(MAZE_ENVS)}.")
    return [[1 if c == 1 else 0 for c in row] for row in layout]


def antmaze_layout(maze: str) -> list[list[int]]:
    """The cell layout (1 = wall, 0 = free) of an AntMaze maze: D4RL's U_MAZE, BIG_MAZE and
    HARDEST_MAZE as gymnasium-robotics ships them (U_MAZE, MEDIUM_MAZE, LARGE_MAZE)."""
    maps = _robotics().envs.maze.maps
    layouts = {"umaze": maps.U_MAZE, "medium": maps.MEDIUM_MAZE, "large": maps.LARGE_MAZE}
    if maze not in layouts:
        raise ValueError(f"Unknown AntMaze maze {maze!r}; choose from {', '.join(ANTMAZES)}.")
    return [[1 if c == 1 else 0 for c in row] for row in layouts[maze]]


class D4RLSparseReward(gym.Wrapper):
    """Reward 1 within ANTMAZE_GOAL_RADIUS of the goal, else 0 (D4RL's, not the env's 0.45)."""

    def step(self, action):
        obs, _, term, trunc, info = self.env.step(action)
        dist = np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"])
        return obs, float(dist <= ANTMAZE_GOAL_RADIUS), term, trunc, info


def d4rl_ant_xml() -> str:
    """Gymnasium's ant.xml made D4RL's ant (d4rl/locomotion/assets/ant.xml): torque at most 30
    (D4RL: gear 1, ctrlrange +-30, actions rescaled from [-1, 1]; gymnasium: gear 150) and
    a 0.02 s MuJoCo step (gymnasium: 0.01), so an env step is 0.1 s (5 frames) as in D4RL.
    Why it matters: uniform random actions put gymnasium's ant on its back within 25-243
    steps in 10 of 10 runs here, D4RL's in none of 10 runs of 1000 steps, and D4RL collected
    its data with N(0, 0.2^2) noise on that scale. Written once to the temp dir."""
    import os
    import tempfile

    text, digest = _d4rl_ant_xml_text()
    path = os.path.join(tempfile.gettempdir(), f"ttlib-d4rl-ant-{digest}.xml")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(text)
        os.replace(tmp, path)
    return path


@functools.cache
def _d4rl_ant_xml_text() -> tuple[bytes, str]:
    """The XML of :func:`d4rl_ant_xml` and its short hash, built once per process (every
    AntMaze env asks for it)."""
    import hashlib
    import os
    import sys
    import xml.etree.ElementTree as ET

    from gymnasium.envs.mujoco import ant_v5

    tree = ET.parse(
        os.path.join(os.path.dirname(sys.modules[ant_v5.__name__].__file__), "assets", "ant.xml")
    )
    for motor in tree.iter("motor"):
        motor.set("gear", "30")
    tree.find("option").set("timestep", "0.02")
    # The ant's "track" camera follows its centre of mass; gymnasium's looks from the side at
    # 0.3 m, behind the maze's walls, so ours looks down from 12 m, 4 m behind (72 degrees).
    # Rendering only: the physics does not see cameras.
    camera = next(c for c in tree.iter("camera") if c.get("name") == "track")
    camera.set("pos", "0 -4 12")
    camera.set("xyaxes", "1 0 0 0 0.949 0.316")
    text = ET.tostring(tree.getroot())
    return text, hashlib.sha1(text).hexdigest()[:10]


def make_antmaze(maze: str = "umaze", layout=None, ant: str = "d4rl", **kw) -> gym.Env:
    """AntMaze v5 with D4RL's sparse reward. The task continues at the goal with the goal kept
    (``continuing_task=True, reset_target=False``: in gymnasium-robotics 1.4 *reset_target=True*
    is what draws a new goal on arrival, whatever its docstring says), so an episode ends only
    at the time limit, as in D4RL's data. ``layout`` replaces the maze's (e.g. an open arena).
    ``observation`` is the ant's 27-number state (x, y are ``achieved_goal``). ``ant``: "d4rl"
    (:func:`d4rl_ant_xml`, the ant of D4RL's data) or "gymnasium" (Ant-v5's, the ant of
    Minari's remote D4RL/antmaze datasets)."""
    if ant not in ("d4rl", "gymnasium"):
        raise ValueError(f"make_antmaze: ant={ant!r}, choose 'd4rl' or 'gymnasium'")
    if ant == "d4rl":
        kw.setdefault("xml_file", d4rl_ant_xml())
    if kw.get("render_mode") == "rgb_array":  # frames follow the ant (the XML's camera)
        kw.setdefault("camera_name", "track")
    gym.register_envs(_robotics())
    kw.setdefault("max_episode_steps", ANTMAZE_MAX_EPISODE_STEPS.get(maze, 1000))
    kw.setdefault("continuing_task", True)
    kw.setdefault("reset_target", False)
    # D4RL's (and Minari's D4RL/antmaze) ant state has 27 numbers: no contact forces, which
    # Ant-v5 would otherwise append (78 more)
    kw.setdefault("include_cfrc_ext_in_observation", False)
    layout = antmaze_layout(maze) if layout is None else layout
    return D4RLSparseReward(gym.make("AntMaze_UMaze-v5", maze_map=layout, **kw))


def make_env(name: str, **kw) -> gym.Env:
    """The gymnasium env behind a ttlib env name (`kw` to `gym.make`); mazes are PointMaze with
    a sparse reward, ending when the goal is reached like D4RL's goal-reaching tasks;
    ``antmaze`` is :func:`make_antmaze` (``maze="umaze"`` unless given)."""
    check_env_name(name)
    if name == ANTMAZE_ENV:
        return make_antmaze(**kw)
    if name in LOCOMOTION_ENVS:
        if kw.get("render_mode") == "rgb_array":  # frames follow the body (the XML's camera)
            kw.setdefault("camera_name", "track")
        return gym.make(LOCOMOTION_ENVS[name], **kw)
    gym.register_envs(_robotics())
    kw.setdefault("max_episode_steps", MAZE_MAX_EPISODE_STEPS[name])
    kw.setdefault("reward_type", "sparse")
    kw.setdefault("continuing_task", False)
    return gym.make("PointMaze_UMaze-v3", maze_map=maze_map(name), **kw)


def normalized_score(env_name: str, returns: np.ndarray | float) -> np.ndarray:
    """D4RL-normalised score ×100: 0 = random policy, 100 = D4RL's expert (locomotion only)."""
    check_env_name(env_name)
    if env_name not in REF_SCORES:
        raise ValueError(
            f"No reference returns for {env_name!r}; normalised scores exist for "
            f"{', '.join(REF_SCORES)}. Report success rate for mazes instead."
        )
    lo, hi = REF_SCORES[env_name]
    return 100.0 * (np.asarray(returns, dtype=np.float64) - lo) / (hi - lo)


# Local datasets are named ttlib/<env>/<kind>-v0 (`ttlib make-data` writes them).
LOCOMOTION_KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")
MAZE_KINDS = ("diverse",)
# D4RL's AntMaze datasets: <maze>-diverse = random start and goal cells; umaze = D4RL's fixed
# start and goal; <maze>-play = hand-picked goal cells (ttlib/datagen/antmaze_gen.py)
ANTMAZE_KINDS = (
    "umaze",
    "umaze-diverse",
    "medium-play",
    "medium-diverse",
    "large-play",
    "large-diverse",
)
NAMESPACE = "ttlib"


def kinds_for(env_name: str) -> tuple[str, ...]:
    check_env_name(env_name)
    if env_name == ANTMAZE_ENV:
        return ANTMAZE_KINDS
    return LOCOMOTION_KINDS if env_name in LOCOMOTION_ENVS else MAZE_KINDS


def dataset_id(env_name: str, kind: str) -> str:
    """`ttlib/<env>/<kind>-v0`, validating both parts."""
    kinds = kinds_for(env_name)
    if kind not in kinds:
        raise ValueError(
            f"Unknown dataset kind {kind!r} for env {env_name!r}; "
            f"valid kinds are {', '.join(kinds)}."
        )
    return f"{NAMESPACE}/{env_name}/{kind}-v0"

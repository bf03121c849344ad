"""Rendered locomotion frames follow the body (the XML's tracking camera), so a rollout GIF
never shows an empty floor after the agent has run out of a fixed camera's view."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ttlib.envs import make_env


def _frames_at(xs, **kw):
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        env = make_env("halfcheetah", render_mode="rgb_array", width=96, height=96, **kw)
        env.reset(seed=0)
        u = env.unwrapped
        frames = []
        for x in xs:
            q = u.data.qpos.copy()
            q[0] = x
            u.set_state(q, u.data.qvel.copy())
            frames.append(env.render().astype(float))
        env.close()
    except Exception as err:  # no OpenGL context on this machine
        pytest.skip(f"MuJoCo cannot render here: {err}")
    return frames


def _body_share(frame: np.ndarray) -> float:
    """Share of the pixels in the cheetah's tan colour (the floor is green-grey, the sky grey)."""
    r, g, b = frame[..., 0], frame[..., 1], frame[..., 2]
    return float(((r > g + 20) & (r > b + 40)).mean())


@pytest.mark.slow
def test_the_camera_follows_the_cheetah():
    at_start, far_away = _frames_at([0.0, 10.0])
    assert _body_share(at_start) > 0.01 and _body_share(far_away) > 0.01
    # a free camera that stays where it is loses the body
    still_start, still_far = _frames_at([0.0, 10.0], camera_name=None, camera_id=-1)
    assert _body_share(still_start) > 0.01 and _body_share(still_far) < 0.001


def _antmaze_frames(xys, **kw):
    """Frames of AntMaze umaze with the ant's torso moved to each of ``xys``."""
    from ttlib.envs import make_antmaze

    os.environ.setdefault("MUJOCO_GL", "egl")
    env = make_antmaze("umaze", render_mode="rgb_array", width=96, height=96, **kw)
    env.reset(seed=0)
    ant = env.unwrapped.ant_env
    frames = []
    for xy in xys:
        q = ant.data.qpos.copy()
        q[:2] = xy
        ant.set_state(q, ant.data.qvel.copy())
        try:
            frames.append(env.render().astype(float))
        except Exception as err:  # no OpenGL context on this machine
            pytest.skip(f"MuJoCo cannot render here: {err}")
    env.close()
    return frames


def _ant_share(frame: np.ndarray) -> float:
    """Share of the centre's pixels in the ant's pale tan (walls are a deeper orange, the floor
    black and white)."""
    centre = frame[32:64, 32:64]
    r, g, b = centre[..., 0], centre[..., 1], centre[..., 2]
    return float(((r > 180) & (g > 150) & (b > 90) & (r - b > 40) & (g - b > 25)).mean())


@pytest.mark.slow
def test_the_antmaze_camera_looks_down_on_the_ant_wherever_it_walks():
    # two free cells 8 m apart: the start corner and the far end of the U
    corners = [[-4.0, -4.0], [4.0, 4.0]]
    following = _antmaze_frames(corners)
    assert all(_ant_share(f) > 0.02 for f in following)
    # gymnasium's free camera stays where it is and loses the ant at one of the corners
    still = _antmaze_frames(corners, camera_name=None, camera_id=-1)
    assert min(_ant_share(f) for f in still) < 0.001

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


def test_the_camera_follows_the_cheetah():
    at_start, far_away = _frames_at([0.0, 10.0])
    assert _body_share(at_start) > 0.01 and _body_share(far_away) > 0.01
    # a free camera that stays where it is loses the body
    still_start, still_far = _frames_at([0.0, 10.0], camera_name=None, camera_id=-1)
    assert _body_share(still_start) > 0.01 and _body_share(still_far) < 0.001

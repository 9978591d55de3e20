"""Fast, upright offscreen rendering for Gymnasium MuJoCo environments.

MuJoCo's default offscreen quality renders a 4096 x 4096 shadow map and 4x multisampling
for every frame. At the 64 to 224 pixel frames a policy receives, that costs most of each step
and adds nothing visible, so `FastUprightRender` turns both off. It also rotates frames
from cameras mounted upside down (their up axis points below the horizon), such as
Meta-World's ``corner`` cameras, so that the floor is at the bottom of every frame.
"""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np

RGB_ARRAY = "rgb_array"
# MuJoCo reads both values when it creates the rendering context, at the first render.
FAST_SHADOW_SIZE = 0
FAST_OFFSCREEN_SAMPLES = 0
# mjvCamera id of MuJoCo's free camera, which is never rolled.
FREE_CAMERA_ID = -1


def apply_fast_render_quality(model: mujoco.MjModel) -> None:
    """Turn off shadow mapping and offscreen multisampling for contexts created from `model` later."""
    model.vis.quality.shadowsize = FAST_SHADOW_SIZE
    model.vis.quality.offsamples = FAST_OFFSCREEN_SAMPLES


def camera_is_upside_down(data: mujoco.MjData, camera_id: int) -> bool:
    """Return whether fixed camera `camera_id` has its image up axis pointing below the horizon.

    `data` must have been through ``mj_forward`` (any reset or step does it). MuJoCo cameras
    look along their -z axis with +y as image up, and ``cam_xmat`` stores the camera axes as
    the columns of a row-major 3 x 3 matrix, so the up axis's world z is element 7.
    """
    if camera_id == FREE_CAMERA_ID:
        return False
    up_axis_world_z = float(data.cam_xmat[camera_id][7])
    return up_axis_world_z < 0.0


class FastUprightRender(gym.Wrapper):
    """Render ``rgb_array`` frames without shadows or multisampling, rotated upright if needed.

    Wrap the environment before its first ``render`` call, because MuJoCo fixes the render
    quality when it creates the rendering context. The wrapped environment must be a
    Gymnasium ``MujocoEnv`` built with ``render_mode="rgb_array"``. The wrapper keeps
    the width, height and camera that the environment was built with.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        base = env.unwrapped
        if env.render_mode != RGB_ARRAY:
            raise ValueError(
                f"FastUprightRender needs render_mode={RGB_ARRAY!r}, got {env.render_mode!r}. "
                f"Build the environment with render_mode={RGB_ARRAY!r}."
            )
        renderer = getattr(base, "mujoco_renderer", None)
        if renderer is None:
            raise TypeError(f"FastUprightRender needs a Gymnasium MujocoEnv, got {type(base).__name__}.")
        if renderer.viewer is not None:
            raise RuntimeError(
                "The environment has rendered already, so its render quality is fixed. "
                "Wrap it in FastUprightRender before the first render call."
            )
        apply_fast_render_quality(base.model)
        self._rotate: bool | None = None

    def render(self) -> np.ndarray:
        """Render one upright ``(height, width, 3)`` uint8 frame from the environment's camera."""
        frame = self.env.render()
        if self._rotate is None:
            # Cameras fixed in the world keep their orientation, so one check per wrapper is enough.
            base = self.env.unwrapped
            self._rotate = camera_is_upside_down(base.data, base.mujoco_renderer.camera_id)
        if self._rotate:
            # A camera rolled by 180 degrees records the scene rotated by 180 degrees, not mirrored.
            frame = frame[::-1, ::-1]
        return np.ascontiguousarray(frame)

"""A simulated Franka Panda pick-and-place (robosuite on MuJoCo) that speaks the real arm's data.

`FrankaSimEnv` is a gymnasium environment. Its observation holds the fields of
`cfgrl_ros.observation` (joint positions, gripper width, end-effector pose, object pose), all in
the robot base frame like the real arm's current_pose, plus optional camera images. It is
commanded like the real arm: an absolute end-effector target pose and a finger opening
(`step_command`), tracked by robosuite's operational-space controller with absolute input
(the role of the Cartesian impedance controller on the real arm). `step` takes the policy's
normalised delta action and turns it into such a command with `ArmCommandAdapter`.

Frames: the end-effector pose is the position of the grasp point between the fingertips with
the orientation of the hand (pointing down is about (1, 0, 0, 0) in (x, y, z, w)), as
franka_ros2's current_pose. Rewards are sparse: 1.0 and terminated=True at success.
"""

from __future__ import annotations

import logging
import os
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

try:
    import mujoco
except (AttributeError, ImportError, OSError) as error:  # PyOpenGL found no GL library
    raise ImportError(
        f"MuJoCo cannot load its OpenGL backend MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} "
        f"({error!r}). Install it (osmesa: Debian libosmesa6; egl: libegl1) or pick the other "
        "with MUJOCO_GL=egl or MUJOCO_GL=osmesa (and the same PYOPENGL_PLATFORM)"
    ) from error

from cfgrl_ros.arm.command_adapter import (
    ACTION_DIM,
    AdapterConfig,
    ArmCommand,
    ArmCommandAdapter,
    quat_to_rotvec,
)
from cfgrl_ros.observation import DEFAULT_IMAGE_SIZE, OBSERVATION_FIELDS
from cfgrl_ros.sim.tasks import task_adapter_config, task_spec

# Observation image key -> robosuite camera: the scene camera looks across the table at the
# robot, the wrist camera down between the fingers.
CAMERAS: dict[str, str] = {"image": "agentview", "wrist_image": "robot0_eye_in_hand"}
CONTROL_RATE = 20.0  # Hz: robosuite control_freq
_GRIPPER_DEADBAND = 0.002  # m: finger opening error below which the gripper holds still
# OSC stiffness (robosuite default 150): a target one maximum step (3 cm) ahead then moves the
# hand at about 0.2 m/s, critically damped.
_OSC_STIFFNESS = 300.0
_IRRELEVANT_NOTICES = ("macro", "robosuite_models", "mink-based")
_GOAL_MARGIN = 0.045  # m: how far inside its bin quadrant pick_place_can aims (can radius 2.5 cm)


def _quiet_robosuite() -> None:
    # robosuite announces at import that it has no private macro file and lacks optional
    # robot models and IK solvers, and logs an INFO line per controller load; none of it
    # concerns the Panda environments here.
    def keep(record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return record.levelno >= logging.WARNING and not any(
            notice in message for notice in _IRRELEVANT_NOTICES
        )

    logger = logging.getLogger("robosuite_logs")
    if not any(getattr(f, "__name__", "") == keep.__name__ for f in logger.filters):
        logger.addFilter(keep)


def _wxyz_to_xyzw(quat: np.ndarray) -> np.ndarray:
    return np.array([quat[1], quat[2], quat[3], quat[0]])


def _mat_to_xyzw(matrix: np.ndarray) -> np.ndarray:
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(matrix, dtype=np.float64).reshape(9))
    return _wxyz_to_xyzw(quat)


def _xyzw_to_mat(quat: np.ndarray) -> np.ndarray:
    matrix = np.empty(9)
    wxyz = np.array([quat[3], quat[0], quat[1], quat[2]], dtype=np.float64)
    mujoco.mju_quat2Mat(matrix, wxyz / np.linalg.norm(wxyz))
    return matrix.reshape(3, 3)


class FrankaSimEnv(gym.Env):
    """Panda pick-and-place at 20 Hz with the real arm's observations and commands.

    task: "lift" (lift the cube 4 cm) or "pick_place_can" (put the can in its bin quadrant).
    cameras: observation image keys to render, of "image" (scene) and "wrist_image".
    image_size: square image side in pixels (docs/benchmarks.md has the rendering cost).
    horizon: control steps before truncation (default: the task's).
    adapter_config: scales and workspace of `step`'s actions (default: the task's).

    Besides the gymnasium API: `step_command(ArmCommand)` executes an absolute command,
    `command` is the last command executed, `hold_command()` one that keeps the arm still,
    `adapter` turns actions into commands, `observation` is the current observation, `goal_pos`
    where pick_place_can's object must go, `steps` and `success` the episode's progress.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": CONTROL_RATE}

    def __init__(
        self,
        task: str = "lift",
        cameras: tuple[str, ...] = (),
        image_size: int = DEFAULT_IMAGE_SIZE,
        horizon: int | None = None,
        adapter_config: AdapterConfig | None = None,
    ) -> None:
        self.task = task
        self._spec = task_spec(task)
        unknown = [name for name in cameras if name not in CAMERAS]
        if unknown:
            raise ValueError(f"unknown cameras {unknown}; choose from {sorted(CAMERAS)}")
        _check_image_size(image_size)
        self.horizon = self._spec.horizon if horizon is None else int(horizon)
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1 control step, got {self.horizon}")
        self.cameras = tuple(cameras)
        self.image_size = int(image_size)
        self.adapter = ArmCommandAdapter(adapter_config or task_adapter_config(task))

        _quiet_robosuite()
        import robosuite

        self._env = robosuite.make(
            self._spec.robosuite_env,
            robots="Panda",
            controller_configs=_absolute_osc_config(),
            has_renderer=False,
            has_offscreen_renderer=False,  # cameras are rendered by self._renderers
            use_camera_obs=False,
            control_freq=int(CONTROL_RATE),
            horizon=10**9,  # truncation is ours; robosuite must never end an episode itself
            ignore_done=True,
            hard_reset=False,  # reset in ~2 ms by resetting the state, not reloading the model
            seed=0,  # the model's random parts (the cube's size) are drawn once, at load
        )
        for name in self._env.observation_names:  # state is read from MuJoCo directly
            self._env.modify_observable(name, "enabled", False)
        robot = self._env.robots[0]
        model, data = self._env.sim.model, self._env.sim.data
        self._model, self._data = model._model, data._data
        self._base_body = model.body_name2id(robot.robot_model.root_body)
        self._hand_body = model.body_name2id(robot.robot_model.eef_name["right"])
        self._grip_site = robot.eef_site_id["right"]
        self._object_body = model.body_name2id(self._spec.object_body)
        self._arm_qpos = np.array(robot._ref_joint_pos_indexes)
        self._finger_qpos = np.array(robot._ref_gripper_joint_pos_indexes["right"])
        self._renderers: dict[int, mujoco.Renderer] = {}  # image side -> renderer

        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), dtype=np.float32)
        spaces: dict[str, gym.spaces.Space] = {
            name: gym.spaces.Box(-np.inf, np.inf, (size,), dtype=np.float64)
            for name, size in OBSERVATION_FIELDS.items()
        }
        for camera in self.cameras:
            shape = (self.image_size, self.image_size, 3)
            spaces[camera] = gym.spaces.Box(0, 255, shape, dtype=np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)

        self.steps = 0
        self.success = False
        self.command: ArmCommand | None = None  # the last command executed
        self._observation: dict[str, np.ndarray] = {}
        # The controller tracks the grip site's frame; commands are in the hand's frame.
        hand_rot = self._rotation(self._hand_body)
        self._hand_to_site = hand_rot.T @ self._data.site_xmat[self._grip_site].reshape(3, 3)

    # ----------------------------------------------------------------- gymnasium API

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """New object placement and arm start; `seed` makes both reproducible."""
        super().reset(seed=seed)
        if seed is not None:
            # robosuite's placement sampler and arm-start noise share this generator object,
            # so it is reseeded in place.
            fresh = np.random.default_rng(seed)
            self._env.rng.bit_generator.state = fresh.bit_generator.state
        self._env.reset()
        self.steps = 0
        self.success = False
        self._observation = self._observe()
        self.command = self.hold_command()
        return self.observation, self._info()

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Apply a normalised delta action (dx, dy, dz, droll, dpitch, dyaw, grip) for one tick."""
        self._require_reset()
        command = self.adapter.command(
            action, self._observation["eef_pos"], self._observation["eef_quat"]
        )
        return self.step_command(command)

    def step_command(
        self, command: ArmCommand
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Track an absolute target pose (base frame) and finger opening for one tick.

        Stepping on after the episode ended is allowed (a node keeps the arm alive until a
        reset); `terminated` then stays True while the object stays in its goal.
        """
        self._require_reset()
        self._env.step(self._robosuite_action(command))
        self.command = command
        self.steps += 1
        self._observation = self._observe()
        reached = bool(self._env._check_success())
        reward = 1.0 if reached and not self.success else 0.0
        self.success = self.success or reached
        truncated = self.steps >= self.horizon and not reached
        return self.observation, reward, reached, truncated, self._info()

    def render(self, camera: str | None = None, size: int | None = None) -> np.ndarray:
        """The current image (RGB, right way up) of `camera` (an image key; default: the first
        configured camera, else the scene camera) at `size` px (default: image_size); e.g. a
        large view for a video beside the policy's small ones."""
        camera = camera or (self.cameras[0] if self.cameras else "image")
        if camera not in CAMERAS:
            raise ValueError(f"unknown camera {camera!r}; choose from {sorted(CAMERAS)}")
        _check_image_size(size or self.image_size)
        return self._render(CAMERAS[camera], size or self.image_size)

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        self._env.close()

    # ----------------------------------------------------------------- arm interface

    @property
    def observation(self) -> dict[str, np.ndarray]:
        """A copy of the current observation."""
        return {name: value.copy() for name, value in self._observation.items()}

    def hold_command(self) -> ArmCommand:
        """A command that keeps the arm where it is, with the fingers at their current opening."""
        return ArmCommand(
            self._observation["eef_pos"].copy(),
            self._observation["eef_quat"].copy(),
            float(self._observation["gripper_width"][0]),
        )

    @property
    def goal_pos(self) -> np.ndarray | None:
        """Where pick_place_can puts the object (base frame, bin floor height); None for lift.

        The point of the can's bin quadrant nearest the robot, _GOAL_MARGIN inside its edges:
        the quadrant's centre is at the edge of the Panda's reach.
        """
        if self.task != "pick_place_can":
            return None
        env = self._env
        index = next(i for i, obj in enumerate(env.objects) if obj.name == "Can")
        centre = env.target_bin_placements[index]
        quarter = np.array([env.bin_size[0] / 4, env.bin_size[1] / 4, 0.0])
        low, high = self._to_base(centre - quarter), self._to_base(centre + quarter)
        corners = np.array([[x, y, low[2]] for x in (low[0], high[0]) for y in (low[1], high[1])])
        nearest = corners[np.argmin(np.linalg.norm(corners[:, :2], axis=1))]
        inward = np.sign((low + high) / 2 - nearest) * [1.0, 1.0, 0.0]
        return nearest + _GOAL_MARGIN * inward

    # ----------------------------------------------------------------- internals

    def _require_reset(self) -> None:
        if not self._observation:
            raise RuntimeError("call reset() before step()")

    def _rotation(self, body: int) -> np.ndarray:
        return self._data.xmat[body].reshape(3, 3)

    def _to_base(self, world_pos: np.ndarray) -> np.ndarray:
        base_rot = self._rotation(self._base_body)
        return base_rot.T @ (np.asarray(world_pos) - self._data.xpos[self._base_body])

    def _observe(self) -> dict[str, np.ndarray]:
        base_rot = self._rotation(self._base_body).T
        qpos = self._data.qpos
        fingers = qpos[self._finger_qpos]
        obs = {
            "joint_pos": qpos[self._arm_qpos].copy(),
            "gripper_width": np.array([fingers[0] - fingers[1]]),
            "eef_pos": self._to_base(self._data.site_xpos[self._grip_site]),
            "eef_quat": _mat_to_xyzw(base_rot @ self._rotation(self._hand_body)),
            "object_pos": self._to_base(self._data.xpos[self._object_body]),
            "object_quat": _mat_to_xyzw(base_rot @ self._rotation(self._object_body)),
        }
        for key in self.cameras:
            obs[key] = self._render(CAMERAS[key], self.image_size)
        return obs

    def _render(self, camera: str, size: int) -> np.ndarray:
        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = self._renderers[size] = mujoco.Renderer(self._model, size, size)
            # Shadows and reflections cost most of a software-rendered frame.
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        renderer.update_scene(self._data, camera=camera)
        return renderer.render().copy()  # mujoco.Renderer's rows are top first

    def _robosuite_action(self, command: ArmCommand) -> np.ndarray:
        site_rot = _xyzw_to_mat(np.asarray(command.target_quat)) @ self._hand_to_site
        rotvec = quat_to_rotvec(_mat_to_xyzw(site_rot))
        width_error = float(self._observation["gripper_width"][0]) - command.gripper_width
        grip = 0.0 if abs(width_error) < _GRIPPER_DEADBAND else float(np.sign(width_error))
        return np.concatenate([np.asarray(command.target_pos, dtype=np.float64), rotvec, [grip]])

    def _info(self) -> dict[str, Any]:
        return {"success": self.success, "command": self.command, "steps": self.steps}


def _check_image_size(size: int) -> None:
    if not 16 <= size <= 512:
        raise ValueError(f"image size must be 16-512 pixels, got {size}")


def _absolute_osc_config() -> dict[str, Any]:
    """robosuite's BASIC composite controller, the arm on OSC_POSE with absolute base input."""
    from robosuite.controllers import load_composite_controller_config

    config = load_composite_controller_config(controller="BASIC", robot="Panda")
    # The Panda has one arm: the other body parts of the generic config only cause warnings.
    config["body_parts"] = {"right": config["body_parts"]["right"]}
    arm = config["body_parts"]["right"]
    arm["input_type"] = "absolute"
    arm["input_ref_frame"] = "base"
    arm["kp"] = _OSC_STIFFNESS
    return config

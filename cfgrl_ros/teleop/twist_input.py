"""Teleoperation input -> the policy's normalised action and the operator's button presses.

The input follows the ROS drivers' conventions, so any of them works: a geometry_msgs/Twist
(linear x, y, z and angular x, y, z) from ``spacenav`` (``spacenav/twist``: about +-1 at full
deflection of a SpaceMouse) or ``teleop_twist_joy`` (``cmd_vel``), and the buttons of a
sensor_msgs/Joy. `TeleopInput` turns the twist into the 7-d action a policy outputs (the
motion scaled into [-1, 1], the gripper from a toggle button), which the policy node sends
through the same adapter and safety envelope as the policy's own: one action space, one set of
limits. ROS-free; cfgrl_ros.nodes.teleop_node is its ROS face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cfgrl_ros.settings import setting, setting_problems

BUTTON_ACTIONS = ("gripper", "takeover", "success", "failure")


@dataclass(frozen=True)
class TeleopConfig:
    """How input becomes action: scales, axes, timeout and the button map."""

    linear_scale: float = setting(
        1.0,
        "action units per unit of twist linear motion (action 1 moves the adapter's "
        "max_translation per control step: 0.6 m/s at its defaults)",
        minimum=0.0,
        above=True,
    )
    angular_scale: float = setting(
        1.0, "action units per unit of twist angular motion", minimum=0.0, above=True
    )
    max_input: float = setting(
        10.0,
        "a twist component beyond +-max_input is refused as a broken input (counted in the "
        "diagnostics); within it the scaled action is clipped to [-1, 1]",
        minimum=0.0,
        above=True,
    )
    axes: tuple[int, ...] = setting(
        (1, 2, 3),
        "which input axis (1-based; negative: reversed) drives the robot base frame's x, y "
        "and z, for motion and rotation alike: [2, -1, 3] for a device turned 90 degrees",
    )
    input_timeout: float = setting(
        0.2,
        "seconds a twist is used for; with none newer, no action is sent and the arm holds",
        minimum=0.0,
        above=True,
    )
    gripper_button: int = setting(
        0, "Joy button that opens/closes the gripper (-1: none)", minimum=-1
    )
    takeover_button: int = setting(
        1,
        "Joy button that takes the arm over from the policy and hands it back (-1: none)",
        minimum=-1,
    )
    success_button: int = setting(
        -1, "Joy button that marks the episode a success (-1: none)", minimum=-1
    )
    failure_button: int = setting(
        -1, "Joy button that marks the episode a failure (-1: none)", minimum=-1
    )
    deadman_button: int = setting(
        -1, "Joy button that must be held for any motion (-1: none)", minimum=-1
    )

    def __post_init__(self) -> None:
        problems = setting_problems(self)
        if sorted(abs(axis) for axis in self.axes) != [1, 2, 3]:
            problems.append(f"axes {list(self.axes)} must name input axes 1, 2 and 3 once each")
        buttons = {name: self.button(name) for name in (*BUTTON_ACTIONS, "deadman")}
        used = [button for button in buttons.values() if button >= 0]
        if len(set(used)) != len(used):
            problems.append(f"the buttons {buttons} must differ (or be -1)")
        if problems:
            raise ValueError("invalid TeleopConfig: " + "; ".join(problems))

    def button(self, name: str) -> int:
        return getattr(self, f"{name}_button")


class TeleopInput:
    """The latest twist and buttons; `action(now)` is what the operator commands now.

    Counters: ``twists`` accepted, ``refused`` (NaN, infinite or beyond max_input), ``clipped``
    (scaled beyond [-1, 1]).
    """

    def __init__(self, config: TeleopConfig | None = None) -> None:
        self.config = config or TeleopConfig()
        self.grip = -1.0  # open; the gripper button toggles it
        self.counts = {"twists": 0, "refused": 0, "clipped": 0}
        self._motion: np.ndarray | None = None
        self._motion_time = -np.inf
        self._buttons: tuple[int, ...] = ()
        axes = np.asarray(self.config.axes)
        self._order = np.abs(axes) - 1
        self._signs = np.sign(axes).astype(float)

    def twist(self, linear: Sequence[float], angular: Sequence[float], now: float) -> None:
        """A twist arrived at `now`; ValueError (and counted) if it is broken."""
        values = np.asarray([*linear, *angular], dtype=float)
        if values.shape != (6,) or not np.all(np.isfinite(values)):
            self.counts["refused"] += 1
            raise ValueError(f"twist {values.tolist()} is not 6 finite numbers: not used")
        if np.any(np.abs(values) > self.config.max_input):
            self.counts["refused"] += 1
            raise ValueError(
                f"twist {values.round(3).tolist()} is beyond max_input {self.config.max_input}: "
                "not used (a broken driver, or set max_input and the scales for this device)"
            )
        linear_part = self._signs * values[:3][self._order] * self.config.linear_scale
        angular_part = self._signs * values[3:][self._order] * self.config.angular_scale
        motion = np.concatenate([linear_part, angular_part])
        if np.any(np.abs(motion) > 1.0):
            self.counts["clipped"] += 1
            motion = np.clip(motion, -1.0, 1.0)
        self.counts["twists"] += 1
        self._motion = motion
        self._motion_time = now

    def twist_for(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (linear, angular) twist that `twist` turns into `action`'s motion (a scripted
        operator drives through the same mapping as a person)."""
        motion = np.asarray(action, dtype=float)[:6]
        linear, angular = np.empty(3), np.empty(3)
        linear[self._order] = motion[:3] * self._signs / self.config.linear_scale
        angular[self._order] = motion[3:] * self._signs / self.config.angular_scale
        return linear, angular

    def joy(self, buttons: Sequence[int]) -> list[str]:
        """Buttons now; returns the button actions just pressed (of BUTTON_ACTIONS). The
        gripper button also toggles the gripper here. ValueError if a mapped button is missing.
        """
        buttons = tuple(int(value) for value in buttons)
        missing = [
            f"{name}_button {self.config.button(name)}"
            for name in (*BUTTON_ACTIONS, "deadman")
            if self.config.button(name) >= len(buttons)
        ]
        if missing:
            raise ValueError(
                f"the Joy message has {len(buttons)} buttons, so {', '.join(missing)} cannot be "
                "pressed: set those parameters to buttons of this device (or -1)"
            )
        pressed = []
        for name in BUTTON_ACTIONS:
            index = self.config.button(name)
            if index < 0:
                continue
            was_down = index < len(self._buttons) and self._buttons[index]
            if buttons[index] and not was_down:
                pressed.append(name)
        self._buttons = buttons
        if "gripper" in pressed:
            self.grip = -self.grip
        return pressed

    def holding_reason(self, now: float) -> str:
        """Why no action is sent now ("" when one is)."""
        if self._motion is None:
            return "no twist received yet"
        age = now - self._motion_time
        if age > self.config.input_timeout:
            return (
                f"the last twist is {age:.2f} s old (input_timeout {self.config.input_timeout} s)"
            )
        deadman = self.config.deadman_button
        if deadman >= 0 and not (deadman < len(self._buttons) and self._buttons[deadman]):
            return f"the dead-man button {deadman} is not held"
        return ""

    def action(self, now: float) -> np.ndarray | None:
        """The operator's action (7,) now, or None: hold (see `holding_reason`)."""
        if self.holding_reason(now):
            return None
        return np.append(self._motion, self.grip).astype(np.float32)

"""The observation the arm publishes, as arrays, and what of it a policy reads.

One definition shared by the simulator, the bag reader, the nodes and the policy, so that a
policy trained on bags sees exactly what it will see live. Quaternions are (x, y, z, w), as in
geometry_msgs and robosuite.

A policy declares its inputs with an `ObservationSpec`: which of the low-dimensional fields
form its state vector (proprioception, and the object pose or not), and which cameras at what
size. Its checkpoint stores the spec; every reader of observations (bag reader, simulator,
policy node, adapt, eval) takes exactly those inputs from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

# field -> size; the order is the order of the state vector.
OBSERVATION_FIELDS: dict[str, int] = {
    "joint_pos": 7,  # arm joint positions (rad), /joint_states
    "gripper_width": 1,  # finger opening (m): sum of the two finger joints
    "eef_pos": 3,  # end-effector position (m), current_pose
    "eef_quat": 4,  # end-effector orientation, current_pose
    "object_pos": 3,  # object position (m), /object_pose
    "object_quat": 4,  # object orientation, /object_pose
}
PROPRIOCEPTION: tuple[str, ...] = ("joint_pos", "gripper_width", "eef_pos", "eef_quat")
OBJECT_POSE: tuple[str, ...] = ("object_pos", "object_quat")
# Images are uint8 (H, W, 3) RGB, right way up: "image" the fixed scene camera, "wrist_image"
# the camera on the hand.
IMAGE_KEYS: tuple[str, ...] = ("image", "wrist_image")
DEFAULT_IMAGE_SIZE = 84


def _canonical_quat(quat: np.ndarray) -> np.ndarray:
    # q and -q are the same rotation; w >= 0 makes the representation unique for learning.
    return np.where(quat[..., 3:4] < 0, -quat, quat)


@dataclass(frozen=True)
class ObservationSpec:
    """The inputs of a policy. The state vector holds `state_fields` in OBSERVATION_FIELDS order
    and, when both positions are in it, the object's position relative to the gripper (what a
    grasp is steered by)."""

    state_fields: tuple[str, ...] = (*PROPRIOCEPTION, *OBJECT_POSE)
    image_keys: tuple[str, ...] = ()  # cameras, from IMAGE_KEYS
    # (height, width) every camera is resized to; None: as recorded (a policy needs a size)
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        problems = []
        unknown = [name for name in self.state_fields if name not in OBSERVATION_FIELDS]
        if unknown:
            problems.append(f"state_fields {unknown} are not fields {list(OBSERVATION_FIELDS)}")
        elif not self.state_fields:
            problems.append(
                "state_fields is empty: a policy needs at least one state field, e.g. "
                f"{list(PROPRIOCEPTION)}"
            )
        elif list(self.state_fields) != [f for f in OBSERVATION_FIELDS if f in self.state_fields]:
            problems.append(
                f"state_fields {list(self.state_fields)} must list each field once, in the order "
                f"{list(OBSERVATION_FIELDS)}"
            )
        cameras = [key for key in self.image_keys if key not in IMAGE_KEYS]
        if cameras or len(set(self.image_keys)) != len(self.image_keys):
            problems.append(f"image_keys {list(self.image_keys)} must be distinct of {IMAGE_KEYS}")
        if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
            problems.append(f"image_size {self.image_size} must be (height, width) or null")
        if not self.image_keys and self.image_size is not None:
            problems.append(f"image_size {self.image_size} is set but no camera is (image_keys)")
        if problems:
            raise ValueError("invalid observation: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ObservationSpec:
        """Inverse of dataclasses.asdict; names unknown fields and values of the wrong type."""
        # Imported here: cfgrl_ros.policy imports torch, which this module must not need.
        from cfgrl_ros.policy.config_types import from_fields

        return from_fields(cls, values, prefix="observation.")

    @property
    def uses_object_pose(self) -> bool:
        """Whether the policy reads /object_pose (which a real cell rarely has)."""
        return any(name in OBJECT_POSE for name in self.state_fields)

    @property
    def _relative(self) -> bool:
        return "object_pos" in self.state_fields and "eef_pos" in self.state_fields

    @property
    def state_dim(self) -> int:
        """The length of state_vector()."""
        return sum(OBSERVATION_FIELDS[name] for name in self.state_fields) + 3 * self._relative

    def describe(self) -> str:
        """One line for logs: "4 state fields (no object pose) + cameras image, wrist_image at
        84x84"."""
        pose = "object pose" if self.uses_object_pose else "no object pose"
        size = "as recorded" if self.image_size is None else "at {}x{}".format(*self.image_size)
        cameras = f" + cameras {', '.join(self.image_keys)} {size}" if self.image_keys else ""
        return f"{len(self.state_fields)} state fields ({pose}){cameras}"

    def state_vector(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Concatenate the state fields of an observation (single or batched) into float32.

        Raises ValueError naming the field when one is missing or has the wrong size.
        """
        parts = {}
        for name in self.state_fields:
            if name not in obs:
                raise ValueError(f"observation has no field {name!r} (has {sorted(obs)})")
            size = OBSERVATION_FIELDS[name]
            value = np.asarray(obs[name], dtype=np.float32)
            if value.shape[-1:] != (size,):
                raise ValueError(
                    f"observation field {name!r} has shape {value.shape}, expected (..., {size})"
                )
            parts[name] = _canonical_quat(value) if name.endswith("_quat") else value
        relative = [parts["object_pos"] - parts["eef_pos"]] if self._relative else []
        return np.concatenate([*parts.values(), *relative], axis=-1)


# What `pretrain --observation` names: today's simulator inputs, and what a real cell sees.
OBSERVATIONS: dict[str, ObservationSpec] = {
    "state": ObservationSpec(),
    "vision": ObservationSpec(PROPRIOCEPTION, IMAGE_KEYS, (DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE)),
}
STATE_DIM = OBSERVATIONS["state"].state_dim  # every low-dimensional field, object pose included


def is_finite(obs: Mapping[str, np.ndarray]) -> bool:
    """True when every numeric field is finite (images are uint8 and always are)."""
    return all(
        np.all(np.isfinite(np.asarray(obs[name]))) for name in OBSERVATION_FIELDS if name in obs
    )

"""The policy node: runs the frozen flow policy and commands the arm, one chunk per decision.

    ros2 run cfgrl_ros policy_node --ros-args -p checkpoint:=policy.pt -p guidance_weight:=1.5

While an episode runs (between ``episode_event`` "start" and "success"/"failure") every
decision takes the latest observation (joint states, end-effector pose, object pose, camera
images if the policy uses them), encodes it, asks the noise actor for the start noise
(``dsrl/noise_request``; cfgrl_ros.nodes.decision_messages has the contract) and waits at most
``noise_timeout`` for it (``first_noise_timeout`` for an episode's first decision while a noise
actor is running: it may be training between episodes, and the arm is at rest). Without an
answer it decodes from w0 ~ N(0, I), the base policy, and marks the decision. The chunk is
decoded with the current ``guidance_weight``, a live parameter: a change takes effect at the
next decision; values outside [0, 10], and any change for a checkpoint trained without
guidance, are refused with the reason. The chunk's first ``exec_horizon`` actions go through
the arm command adapter and the safety envelope to ``target_pose`` and ``gripper_command``,
one per control step. Each executed decision is published on ``dsrl/decision``; at the end of
an episode an episode-end record follows.

Control steps: with ``lockstep: false`` (a real arm, or the simulator in realtime) a timer at
``control_rate`` drives them and observations older than ``safety.max_observation_age`` are
refused (the envelope holds the arm). With ``lockstep: true`` (the simulator advances one step
per target pose) each fresh observation, i.e. received after the last command, triggers the
next step, so the graph runs as fast as the simulator answers; time is then the observation's
stamp, since the simulated world does not move between steps.

The policy node is the only publisher of ``target_pose`` and ``gripper_command``: a Cartesian
controller (crisp_controllers') ignores a target topic with more than one publisher, and every
motion must pass the safety envelope. So it also homes the real arm: ``~/home``
(std_srvs/Trigger), called by the reward/reset node between episodes, opens the gripper and
moves the arm to ``home_position`` / ``home_orientation`` one control step at a time (at most
``home_speed_scale`` of the adapter's maximum step), through the adapter and the envelope,
until it is within ``home_tolerance`` / ``home_rotation_tolerance`` or ``home_timeout`` has
passed. Homing needs only the arm's state (joint states and pose), not the object's; it is
refused while an episode runs and in lockstep mode (the simulator resets itself).

Services: ``~/pause`` and ``~/resume`` (std_srvs/Trigger) hold the arm and let it go again;
``~/home`` above. Diagnostics on ``/diagnostics``: decisions, noise answers and fallbacks,
decode time, safety.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from cfgrl_ros.arm.command_adapter import ArmCommand
from cfgrl_ros.arm.safety import SafetyConfig, SafetyEnvelope
from cfgrl_ros.msg_arrays import image_array, joint_arrays, pose_arrays, stamp_seconds
from cfgrl_ros.nodes.arm_interface import (
    CURRENT_POSE_TOPIC,
    GRIPPER_COMMAND_TOPIC,
    TARGET_POSE_TOPIC,
    command_messages,
    declare_adapter,
    declare_gripper,
    declare_gripper_settings,
    declare_home,
    declare_robot_mode_guard,
)
from cfgrl_ros.nodes.decision_messages import (
    DECISION_TOPIC,
    EPISODE_EVENT_TOPIC,
    NOISE_REQUEST_TOPIC,
    NOISE_TOPIC,
    DecisionRecord,
    EpisodeEnd,
    decision_message,
    end_message,
    event_qos,
    exchange_qos,
    noise_from_message,
    noise_request_message,
    record_qos,
    stamp_to_ns,
)
from cfgrl_ros.nodes.node_support import declare, now_seconds, require_positive, run_node
from cfgrl_ros.policy import FlowPolicy

MAX_GUIDANCE_WEIGHT = 10.0
ARM_JOINTS = [f"panda_joint{i}" for i in range(1, 8)]
FINGER_JOINTS = ["panda_finger_joint1", "panda_finger_joint2"]
IMAGE_TOPICS = {
    "image": "camera/camera/color/image_raw",
    "wrist_image": "wrist_camera/color/image_raw",
}
ARM_PARTS = ("joint_states", "current_pose")  # what homing needs of the observation
LOCKSTEP_RESEND = 1.0  # seconds without an answer from a lockstep simulator: send again
STOP_WAIT = 0.5  # seconds to wait for the simulator's answer to the last target at an end


@dataclass
class Observation:
    """The latest message of one observation topic and the receipt number it arrived with."""

    message: Any
    receipt: int


@dataclass
class Decision:
    """The decision being made or executed."""

    stamp_ns: int
    features: torch.Tensor  # [1, D]
    guidance_weight: float
    index: int
    chunk: np.ndarray | None = None  # None while waiting for the noise actor
    from_actor: bool = False
    step: int = 0  # actions of the chunk sent so far


class PolicyNode(Node):
    def __init__(self, **node_options: Any) -> None:
        super().__init__("policy_node", **node_options)
        checkpoint = declare(self, "checkpoint", "", "FlowPolicy checkpoint (.pt) to run")
        device = declare(self, "device", "auto", "torch device: auto, cpu or cuda")
        if not checkpoint:
            raise ValueError("parameter checkpoint is empty: pass the FlowPolicy checkpoint path")
        self.guidance_weight = declare(
            self,
            "guidance_weight",
            1.0,
            "CFGRL guidance weight w: 0 behaviour cloning, 1 the optimality-conditioned policy, "
            "> 1 further towards optimality. Takes effect at the next decision.",
            read_only=False,
            float_range=(0.0, MAX_GUIDANCE_WEIGHT),
        )
        self.denoising_steps = declare(
            self,
            "denoising_steps",
            0,
            "Euler steps per decode (0: the checkpoint's)",
            integer_range=(0, 1000),
        )
        self.exec_horizon = declare(
            self,
            "exec_horizon",
            4,
            "actions of each chunk executed before the next decision",
            integer_range=(1, 1000),
        )
        control_rate = declare(self, "control_rate", 20.0, "control steps per second")
        self.lockstep = declare(
            self,
            "lockstep",
            False,
            "step on each fresh observation (lockstep simulator) instead of a timer",
        )
        self.noise_timeout = declare(
            self, "noise_timeout", 0.05, "seconds to wait for the noise actor's answer"
        )
        self.first_noise_timeout = declare(
            self,
            "first_noise_timeout",
            30.0,
            "seconds to wait for the answer at an episode's first decision (the actor may be "
            "training between episodes)",
        )
        self.use_noise_actor = declare(
            self, "use_noise_actor", True, "false: always decode from w0 ~ N(0, I) (base policy)"
        )
        use_camera = declare(self, "use_camera", False, "camera images are available")
        self.arm_joints = declare(self, "arm_joints", ARM_JOINTS, "the 7 arm joints, in order")
        self.finger_joints = declare(
            self, "finger_joints", FINGER_JOINTS, "finger joints (summed into the width)"
        )
        history = declare(
            self,
            "record_history",
            2000,
            "decision records kept for late (restarted) readers",
            integer_range=(1, 1_000_000),
        )
        self.base_frame = declare(self, "base_frame", "panda_link0", "frame_id of commanded poses")
        seed = declare(self, "seed", 0, "seed of the fallback noise")
        require_positive(
            {
                "control_rate": control_rate,
                "noise_timeout": self.noise_timeout,
                "first_noise_timeout": self.first_noise_timeout,
            }
        )
        self.control_period = 1.0 / control_rate

        self.policy = FlowPolicy.load(checkpoint, device)
        horizon = self.policy.config.horizon
        if self.exec_horizon > horizon:
            raise ValueError(
                f"exec_horizon {self.exec_horizon} is longer than the policy's chunks ({horizon})"
            )
        if self.policy.config.condition == "goal":
            raise ValueError(
                f"{checkpoint} is goal-conditioned; the policy node runs policies trained with "
                "condition 'optimality' (CFGRL) or 'none'"
            )
        image_keys = self.policy.config.image_keys
        if image_keys and not use_camera:
            raise ValueError(
                f"{checkpoint} was trained with camera images {list(image_keys)}: launch with "
                "use_camera:=true"
            )
        self.adapter = declare_adapter(self)
        trained = (self.policy.config.max_translation, self.policy.config.max_rotation)
        if not np.allclose(
            trained, (self.adapter.config.max_translation, self.adapter.config.max_rotation)
        ):
            raise ValueError(
                f"{checkpoint} was trained with actions scaled by max_translation {trained[0]} m "
                f"and max_rotation {trained[1]} rad per step, this node's adapter has "
                f"{self.adapter.config.max_translation} and {self.adapter.config.max_rotation}: "
                "set those parameters to the checkpoint's (or retrain) so the arm moves as far "
                "as the policy means"
            )
        self.envelope = SafetyEnvelope(self._safety_config())
        self.gripper_settings = declare_gripper_settings(self, self.adapter.config, self.envelope)
        self.gripper = declare_gripper(self, self.gripper_settings)
        self.mode_guard = declare_robot_mode_guard(self)
        self.home = declare_home(self)
        self._check_home_inside_the_boxes()
        self.rng = np.random.default_rng(seed)

        # Observation topics: field -> latest message. Receipt numbers order arrivals.
        self._latest: dict[str, Observation] = {}
        self._receipts = 0
        self._command_receipt = 0  # receipts up to here were seen before the last command
        self._episode_receipt = 0  # ... before the last episode ended
        subscriptions = {
            "joint_states": (JointState, "joint_states"),
            "current_pose": (PoseStamped, CURRENT_POSE_TOPIC),
            "object_pose": (PoseStamped, "object_pose"),
        }
        for key, default in IMAGE_TOPICS.items():
            topic = declare(self, f"{key}_topic", default, f"camera topic of the {key!r} input")
            if key in image_keys:
                subscriptions[key] = (Image, topic)
        self.image_keys = image_keys
        for field, (message_type, topic) in subscriptions.items():
            self.create_subscription(
                message_type,
                topic,
                lambda message, field=field: self._on_observation(field, message),
                qos_profile_sensor_data,
            )
        self.fields = tuple(subscriptions)

        self.target_publisher = self.create_publisher(PoseStamped, TARGET_POSE_TOPIC, 10)
        self.gripper_publisher = self.create_publisher(Float64, GRIPPER_COMMAND_TOPIC, 10)
        self.request_publisher = self.create_publisher(
            JointState, NOISE_REQUEST_TOPIC, exchange_qos()
        )
        self.record_publisher = self.create_publisher(
            JointState, DECISION_TOPIC, record_qos(history)
        )
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointTrajectory, NOISE_TOPIC, self._on_noise, exchange_qos())
        self.create_subscription(String, EPISODE_EVENT_TOPIC, self._on_event, event_qos(10))
        self.create_service(Trigger, "~/pause", self._on_pause)
        self.create_service(Trigger, "~/resume", self._on_resume)
        self.create_service(Trigger, "~/home", self._on_home)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self.running = False
        self.decision: Decision | None = None
        self._decision_index = 0
        self._noise_deadline = None  # the timer that ends the wait for the noise actor
        self._stopping_since: float | None = None  # lockstep: waiting for the last answer
        self._homing_until: float | None = None  # node-clock deadline while homing
        self._outcome = False  # how the episode being stopped ended
        self._last_features = torch.zeros(1, self.policy.feature_dim)  # of the last decision
        self._last_command: ArmCommand | None = None
        self._last_command_time = 0.0
        self.counts = {"decisions": 0, "actor_noise": 0, "fallbacks": 0, "late_answers": 0}
        self._decode_seconds: list[float] = []  # since the last diagnostics
        self._diagnostics_time = time.monotonic()
        if self.lockstep:
            self.create_timer(LOCKSTEP_RESEND / 4, self._check_lockstep)
        else:
            self.create_timer(self.control_period, self._control_step)
        self.create_timer(1.0, self._publish_diagnostics)
        self.get_logger().info(
            f"policy {checkpoint} on {self.policy.device}: chunks {horizon}x"
            f"{self.policy.config.action_dim}, executing {self.exec_horizon} per decision, "
            f"w = {self.guidance_weight}, {'lockstep' if self.lockstep else 'timer'} control"
        )

    # ---------------------------------------------------------------------------- parameters
    def _safety_config(self) -> SafetyConfig:
        defaults = SafetyConfig()
        values = {}
        for field in fields(SafetyConfig):
            default = getattr(defaults, field.name)
            if isinstance(default, tuple):
                default = [float(v) for v in default]
            values[field.name] = declare(
                self, f"safety.{field.name}", default, f"safety envelope: {field.name}"
            )
        values["workspace_low"] = tuple(values["workspace_low"])
        values["workspace_high"] = tuple(values["workspace_high"])
        return SafetyConfig(**values)

    def _check_home_inside_the_boxes(self) -> None:
        """Homing could never arrive at a home pose outside the adapter's or envelope's box."""
        position = self.home.position
        for name, config in (("", self.adapter.config), ("safety.", self.envelope.config)):
            low, high = np.asarray(config.workspace_low), np.asarray(config.workspace_high)
            if np.any(position < low) or np.any(position > high):
                raise ValueError(
                    f"home_position {position.tolist()} is outside the box {name}workspace_low "
                    f"{list(config.workspace_low)} .. {name}workspace_high "
                    f"{list(config.workspace_high)}: move it inside"
                )

    def _on_set_parameters(self, parameters: Sequence[Any]) -> SetParametersResult:
        # rclpy has already checked the type and the range [0, MAX_GUIDANCE_WEIGHT].
        weights = [p.value for p in parameters if p.name == "guidance_weight"]
        if weights and self.policy.config.condition == "none":
            return SetParametersResult(
                successful=False,
                reason="this checkpoint was trained without conditions (bc or awr): it has no "
                "guidance, so guidance_weight changes nothing; train with cfgrl to use it",
            )
        for weight in weights:
            self.get_logger().info(
                f"guidance weight {self.guidance_weight} -> {weight} from the next decision"
            )
            self.guidance_weight = float(weight)
        return SetParametersResult(successful=True)

    # -------------------------------------------------------------------------- observations
    def _on_observation(self, field: str, message: Any) -> None:
        self._receipts += 1
        self._latest[field] = Observation(message, self._receipts)
        if self.lockstep and self._fresh():
            self._lockstep_step()

    def _fresh(self) -> bool:
        """Lockstep: every part arrived after the last command and after the last episode."""
        if len(self._latest) < len(self.fields):
            return False
        barrier = max(self._command_receipt, self._episode_receipt)
        return all(part.receipt > barrier for part in self._latest.values())

    def _observation(
        self, with_images: bool, arm_only: bool = False
    ) -> tuple[dict[str, np.ndarray], float] | None:
        """The latest observation and its stamp (its oldest part's), None if incomplete.

        ``arm_only`` (homing): only joint states and pose are needed; the object, which may be
        gone between episodes, is replaced by a placeholder that nothing acts on.
        Raises ValueError for messages that do not fit (wrong joint names, image encoding).
        """
        parts = ARM_PARTS if arm_only else self.fields
        if any(part not in self._latest for part in parts):
            return None
        joints = self._latest["joint_states"].message
        joint_pos, gripper_width = joint_arrays(joints, self.arm_joints, self.finger_joints)
        eef_pos, eef_quat = pose_arrays(self._latest["current_pose"].message)
        if arm_only:
            object_pos, object_quat = np.zeros(3), np.array([0.0, 0.0, 0.0, 1.0])
        else:
            object_pos, object_quat = pose_arrays(self._latest["object_pose"].message)
        observation = {
            "joint_pos": joint_pos,
            "gripper_width": gripper_width,
            "eef_pos": eef_pos,
            "eef_quat": eef_quat,
            "object_pos": object_pos,
            "object_quat": object_quat,
        }
        if with_images and self.image_keys:
            height, width = self.policy.config.image_size
            for key in self.image_keys:
                observation[key] = image_array(self._latest[key].message, (width, height))
        stamp = min(stamp_seconds(self._latest[part].message.header.stamp) for part in parts)
        return observation, stamp

    # --------------------------------------------------------------------------- episodes
    def _on_event(self, message: String) -> None:
        if message.data == "start":
            if self.running:
                self.get_logger().warning("episode started while one was running; restarting")
            self._cancel_decision()
            if self._homing_until is not None:
                self._homing_until = None
                if not self._at_home():
                    self.get_logger().warning("episode started before the arm was home")
            self.running = True
            self._decision_index = 0
            self._stopping_since = None
            self.get_logger().info("episode started")
            if self.lockstep and self._fresh():
                self._control_step()  # the simulator's reset observation came before "start"
        elif message.data in ("success", "failure"):
            if not self.running:
                return
            self.running = False
            self._cancel_decision()
            self._outcome = message.data == "success"
            if self.lockstep and self._last_command is not None and not self._fresh():
                self._stopping_since = time.monotonic()  # end when the last answer arrives
            else:
                self._publish_end()
        else:
            self.get_logger().warning(f"unknown episode event {message.data!r} ignored")

    def _publish_end(self) -> None:
        self._stopping_since = None
        features = None
        try:
            observed = self._observation(with_images=True)
            if observed is not None:
                features = self._encode(observed[0])
        except ValueError as error:
            self.get_logger().error(f"cannot encode the final observation: {error}")
        if features is None:  # the best estimate of the final state: the last decision's
            features = self._last_features
            self.get_logger().warning("no final observation; the end record repeats the last one")
        end = EpisodeEnd(
            stamp_ns=self.get_clock().now().nanoseconds,
            features=features[0].cpu().numpy(),
            success=self._outcome,
            decisions=self._decision_index,
        )
        self.record_publisher.publish(end_message(end))
        self._episode_receipt = self._receipts
        self._last_command = None
        self.get_logger().info(
            f"episode ended in {'success' if end.success else 'failure'} after "
            f"{end.decisions} decisions"
        )

    # ---------------------------------------------------------------------------- control
    def _lockstep_step(self) -> None:
        if self._stopping_since is not None:
            self._publish_end()
        elif self.running:
            self._control_step()

    def _check_lockstep(self) -> None:
        """Lockstep: re-send a command the simulator did not answer; end a stalled stop."""
        now = time.monotonic()
        if self._stopping_since is not None and now - self._stopping_since > STOP_WAIT:
            self._publish_end()
        elif (
            self.running
            and self.decision is not None
            and self.decision.chunk is not None
            and self._last_command is not None
            and now - self._last_command_time > LOCKSTEP_RESEND
        ):
            self.get_logger().warning(
                f"no observation from the simulator {LOCKSTEP_RESEND}s after the last target; "
                "sending it again"
            )
            self._publish_command(self._last_command)

    def _control_time(self, stamp: float) -> float:
        # Lockstep: the simulated world stands still between steps, so "now" is its stamp.
        return stamp if self.lockstep else now_seconds(self)

    def _control_step(self) -> None:
        if self._homing_until is not None:
            self._home_step()
            return
        if not self.running or self._stopping_since is not None:
            return
        if self.decision is not None and self.decision.chunk is None:
            return  # waiting for the noise actor: the arm keeps its last target
        try:
            observed = self._observation(with_images=False)
        except ValueError as error:
            self.get_logger().error(str(error), throttle_duration_sec=5.0)
            observed = None
        observation, stamp = observed if observed is not None else (None, None)
        now = self._control_time(stamp) if stamp is not None else now_seconds(self)
        verdict = self.envelope.check_observation(observation, stamp, now)
        if verdict.ok and (self.decision is None or self.decision.step >= self.exec_horizon):
            self._start_decision()
            return
        action = None
        if verdict.ok:
            action = self.decision.chunk[self.decision.step]
            self.decision.step += 1
        self._send(observation, action, now)

    def _send(self, observation: dict | None, action: np.ndarray | None, now: float) -> bool:
        """One command through the adapter and the safety envelope (a hold when action None).

        Returns whether the action's command (possibly limited) was published: not a hold,
        not stopped.
        """
        command = None
        if action is not None:
            try:
                command = self.adapter.command(
                    action, observation["eef_pos"], observation["eef_quat"]
                )
            except ValueError as error:  # a non-finite action: the envelope holds the arm
                self.get_logger().error(f"action not sent: {error}", throttle_duration_sec=2.0)
        blocked = self.mode_guard.check(now).blocking_reason if self.mode_guard else ""
        safe = self.envelope.filter_command(command, now, blocked)
        if safe.reasons:
            self.get_logger().warning(
                f"safety: {', '.join(safe.reasons)}", throttle_duration_sec=2.0
            )
        if safe.command is not None:
            self._publish_command(safe.command)
        return safe.command is not None and not safe.holding

    def _publish_command(self, command: ArmCommand) -> None:
        target, gripper = command_messages(
            command, self.base_frame, self.get_clock().now().to_msg()
        )
        self._command_receipt = self._receipts
        self._last_command = command
        self._last_command_time = time.monotonic()
        # Gripper first: a lockstep simulator steps when the target pose arrives.
        self.gripper_publisher.publish(gripper)
        self.target_publisher.publish(target)
        if self.gripper is not None:
            self.gripper.command(command.gripper_width)

    # --------------------------------------------------------------------------- decisions
    def _encode(self, observation: dict[str, np.ndarray]) -> torch.Tensor:
        with torch.inference_mode():
            return self.policy.encode(self.policy.inputs_from_observation(observation))

    def _start_decision(self) -> None:
        try:
            observation, _ = self._observation(with_images=True)
            features = self._encode(observation)
        except ValueError as error:
            self.get_logger().error(f"cannot encode the observation: {error}")
            return
        stamp_ns = self.get_clock().now().nanoseconds
        self.decision = Decision(stamp_ns, features, self.guidance_weight, self._decision_index)
        self._last_features = features
        if not self.use_noise_actor or self.count_subscribers(NOISE_REQUEST_TOPIC) == 0:
            self._finish_decision(None)
            return
        self.request_publisher.publish(
            noise_request_message(stamp_ns, self.guidance_weight, features[0].cpu().numpy())
        )
        first = self._decision_index == 0
        timeout = self.first_noise_timeout if first else self.noise_timeout
        self._noise_deadline = self.create_timer(timeout, self._on_noise_timeout)

    def _on_noise(self, message: JointTrajectory) -> None:
        decision = self.decision
        if decision is None or decision.chunk is not None:
            self.counts["late_answers"] += 1
            return
        if stamp_to_ns(message.header.stamp) != decision.stamp_ns:
            self.counts["late_answers"] += 1
            return
        try:
            noise = noise_from_message(message, self.policy.noise_shape)
        except ValueError as error:
            self.get_logger().error(str(error), throttle_duration_sec=10.0)
            return
        self._finish_decision(noise)

    def _on_noise_timeout(self) -> None:
        if self.decision is not None and self.decision.chunk is None:
            self.get_logger().warning(
                "no noise from the noise actor in time: this decision uses the base policy",
                throttle_duration_sec=5.0,
            )
            self._finish_decision(None)
        else:
            self._cancel_deadline()

    def _cancel_deadline(self) -> None:
        if self._noise_deadline is not None:
            self.destroy_timer(self._noise_deadline)
            self._noise_deadline = None

    def _cancel_decision(self) -> None:
        self._cancel_deadline()
        self.decision = None

    def _finish_decision(self, noise: np.ndarray | None) -> None:
        """Decode the chunk (from `noise`, or N(0, I) when None), send its first action."""
        self._cancel_deadline()
        decision = self.decision
        decision.from_actor = noise is not None
        if noise is None:
            noise = self.rng.standard_normal(self.policy.noise_shape).astype(np.float32)
        started = time.perf_counter()
        with torch.inference_mode():
            chunk = self.policy.decode(
                decision.features,
                torch.as_tensor(noise[None]),
                decision.guidance_weight,
                self.denoising_steps or None,
            )
        self._decode_seconds.append(time.perf_counter() - started)
        decision.chunk = chunk[0].cpu().numpy()
        self._decision_index += 1
        self.counts["decisions"] += 1
        self.counts["actor_noise" if decision.from_actor else "fallbacks"] += 1

        observation, stamp = self._observation(with_images=False)  # complete since the start
        now = self._control_time(stamp)
        verdict = self.envelope.check_observation(observation, stamp, now)
        action = decision.chunk[0] if verdict.ok else None
        decision.step = 1 if verdict.ok else 0
        self._send(observation, action, now)
        record = DecisionRecord(
            stamp_ns=decision.stamp_ns,
            features=decision.features[0].cpu().numpy(),
            noise=noise,
            chunk=decision.chunk,
            guidance_weight=decision.guidance_weight,
            noise_from_actor=decision.from_actor,
            decision_index=decision.index,
            exec_horizon=self.exec_horizon,
        )
        self.record_publisher.publish(decision_message(record))

    # ----------------------------------------------------------------------------- homing
    def _home_step(self) -> None:
        """One control step towards the home pose, gripper open; homing ends when there."""
        now = now_seconds(self)
        if now > self._homing_until:
            self._homing_until = None
            self.get_logger().error(
                f"the arm did not reach the home pose within {self.home.timeout}s: homing stopped"
            )
            return
        try:
            observed = self._observation(with_images=False, arm_only=True)
        except ValueError as error:
            self.get_logger().error(str(error), throttle_duration_sec=5.0)
            observed = None
        observation, stamp = observed if observed is not None else (None, None)
        if not self.envelope.check_observation(observation, stamp, now).ok:
            self._send(observation, None, now)  # the envelope holds (or stops) the arm
            return
        position, quaternion = observation["eef_pos"], observation["eef_quat"]
        sent = self._send(observation, self.home.action(self.adapter, position, quaternion), now)
        # Done once the arm is home and the command (target home, gripper open) went out.
        if sent and self.home.reached(position, quaternion):
            self._homing_until = None
            self.get_logger().info("at the home pose, gripper open")

    def _at_home(self) -> bool:
        """Whether the latest measured pose is within the home tolerances."""
        if "current_pose" not in self._latest:
            return False
        return self.home.reached(*pose_arrays(self._latest["current_pose"].message))

    def _on_home(self, request, response):
        refusal = ""
        if self.lockstep:
            refusal = "lockstep simulator: reset it with its ~/reset service instead"
        elif self.running:
            refusal = "an episode is running: end it first (episode_event success or failure)"
        elif self.envelope.shut_down:
            refusal = "shut down: cannot move the arm"
        if refusal:
            response.success = False
            response.message = f"not homing: {refusal}"
            return response
        self._homing_until = now_seconds(self) + self.home.timeout
        self._home_step()  # the first command goes out before the answer
        response.success = True
        if self._homing_until is None:
            response.message = "at the home pose, gripper open"
        elif self.envelope.paused:
            response.message = "paused: homing starts after ~/resume"
        else:
            response.message = f"moving to the home pose {self.home.position.tolist()}"
        return response

    # --------------------------------------------------------------------------- services
    def _on_pause(self, request, response):
        self.envelope.pause()
        response.success = True
        response.message = "holding the arm until ~/resume"
        return response

    def _on_resume(self, request, response):
        response.success = self.envelope.resume()
        response.message = "resumed" if response.success else "shut down: cannot resume"
        return response

    # ------------------------------------------------------------------------ diagnostics
    def _publish_diagnostics(self) -> None:
        decode_ms = 1000.0 * np.asarray(self._decode_seconds or [0.0])
        now = time.monotonic()
        rate = len(self._decode_seconds) / max(now - self._diagnostics_time, 1e-9)
        self._decode_seconds = []
        self._diagnostics_time = now
        values = {
            "running": self.running,
            "homing": self._homing_until is not None,
            "guidance_weight": self.guidance_weight,
            **self.counts,
            "decisions_per_second": f"{rate:.2f}",
            "decode_ms_mean": f"{decode_ms.mean():.2f}",
            "decode_ms_max": f"{decode_ms.max():.2f}",
        }
        decisions = DiagnosticStatus(
            level=DiagnosticStatus.OK,
            name=f"{self.get_name()}: decisions",
            message=f"{self.counts['decisions']} decisions, {self.counts['fallbacks']} with "
            "base-policy noise",
            values=[KeyValue(key=key, value=str(value)) for key, value in values.items()],
        )
        status = self.envelope.status()
        safety = DiagnosticStatus(
            level=bytes([status.level]),
            name=f"{self.get_name()}: safety",
            message=status.message,
            values=[KeyValue(key=key, value=value) for key, value in status.values.items()],
        )
        message = DiagnosticArray(status=[decisions, safety])
        message.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_publisher.publish(message)

    def destroy_node(self) -> None:
        # Leave the arm holding where it is rather than tracking a stale target, unless the
        # robot mode guard forbids commanding it (a reflex, the user stop): then send nothing.
        now = now_seconds(self)
        publish = not self.lockstep and self.context.ok()  # a shut-down context cannot publish
        blocked = ""
        if publish and self.mode_guard is not None:
            blocked = self.mode_guard.check(now).blocking_reason
        safe = self.envelope.shutdown(now, blocked)
        if safe.command is not None and publish:
            self._publish_command(safe.command)
        if self.mode_guard is not None:
            self.mode_guard.destroy()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(PolicyNode, "policy_node", args)


if __name__ == "__main__":
    main()

"""The policy node: runs the frozen flow policy and commands the arm, one chunk per decision.

    ros2 run cfgrl_ros policy_node --ros-args -p checkpoint:=policy.pt -p guidance_weight:=1.5

An episode starts when the reward/reset node calls ``~/start_episode`` (std_srvs/Trigger) and
ends at ``episode_event`` "success" or "failure". The reward/reset node, the authority on
episode state, publishes ``episode_event`` "start" only after this node has answered the call:
so once anyone has heard "start", this node knows the episode runs and refuses ``~/home``
(a topic alone gave no such order: ``~/home`` could be accepted between the announcement and
its delivery). The topic's "start" is therefore not a second start here.

While an episode runs every decision takes the latest observation (joint states, end-effector
pose, object pose, camera images if the policy uses them), encodes it, asks the noise actor for
the start noise (``dsrl/noise_request``; cfgrl_ros.nodes.decision_messages has the contract) and
waits at most ``noise_timeout`` for it (``first_noise_timeout`` for an episode's first decision
while a noise actor is running: it may be training between episodes, and the arm is at rest).
Without an answer it decodes from w0 ~ N(0, I), the base policy, and marks the decision. The
chunk is decoded with the current ``guidance_weight``, a live parameter: a change takes effect
at the next decision; values outside [0, 10], and any change for a checkpoint trained without
guidance, are refused with the reason. The chunk's first ``exec_horizon`` actions go through
the arm command adapter and the safety envelope to ``target_pose`` and ``gripper_command``,
one per control step. Each executed decision is published on ``dsrl/decision``; at the end of
an episode an episode-end record follows.

Control steps: with ``lockstep: false`` (a real arm, or the simulator in realtime) a timer at
``control_rate`` drives them and observations older than ``safety.max_observation_age`` are
refused (the envelope holds the arm). With ``lockstep: true`` (the simulator advances one step
per target pose) each fresh observation, i.e. received after the last command, triggers the
next step, so the graph runs as fast as the simulator answers; time is then the observation's
stamp, since the simulated world does not move between steps. The decisions themselves are
made by cfgrl_ros.control.decision_loop (no ROS); this node converts messages and publishes.

The policy node is the only publisher of ``target_pose`` and ``gripper_command``: a Cartesian
controller (crisp_controllers') ignores a target topic with more than one publisher, and every
motion must pass the safety envelope. So it also homes the real arm: ``~/home``
(std_srvs/Trigger), called by the reward/reset node between episodes, opens the gripper and
moves the arm to ``home_position`` / ``home_orientation`` one control step at a time (at most
``home_speed_scale`` of the adapter's maximum step), through the adapter and the envelope,
until it is within ``home_tolerance`` / ``home_rotation_tolerance`` or ``home_timeout`` has
passed. Homing needs only the arm's state (joint states and pose), not the object's; it is
refused while an episode runs and in lockstep mode (the simulator resets itself).

Operator: ``~/takeover`` (std_srvs/SetBool; the teleop node calls it at its takeover button)
true hands the arm to the operator at the next control step: each step then sends the latest
``teleop/action`` (the normalised action the teleop node makes of a SpaceMouse or joystick)
through the same adapter and envelope, holding the arm while none is younger than
``operator_timeout``; false hands it back at the next decision. The decision records mark the
ticks the operator drove (cfgrl_ros.control.decision_loop has the rules). With an empty
``checkpoint`` there is no policy: the operator drives every episode (recording
demonstrations), and the node reads only the arm's state.

Services: ``~/start_episode`` above, ``~/pause`` and ``~/resume`` (std_srvs/Trigger) hold the
arm and let it go again; ``~/home`` and ``~/takeover`` above. Ctrl-C sends a last hold (unless
the robot mode guard forbids commanding the arm) and exits. Diagnostics on ``/diagnostics``:
decisions, noise answers and fallbacks, operator, decode time, safety.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64, String
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from cfgrl_ros.arm.safety import SafetyConfig, SafetyEnvelope
from cfgrl_ros.control.decision_loop import (
    ARM_PARTS,
    Decided,
    DecisionLoop,
    EpisodeEnded,
    Log,
    LoopSettings,
    Observed,
    Output,
    Phase,
    Reply,
    RequestNoise,
    SendCommand,
)
from cfgrl_ros.dsrl.agent import DsrlConfig
from cfgrl_ros.msg_arrays import arm_observation, image_array, stamp_seconds
from cfgrl_ros.nodes.arm_interface import (
    CURRENT_POSE_TOPIC,
    GRIPPER_COMMAND_TOPIC,
    IMAGE_TOPICS,
    TARGET_POSE_TOPIC,
    command_messages,
    declare_adapter,
    declare_gripper,
    declare_gripper_settings,
    declare_home,
    declare_joint_names,
    declare_robot_mode_guard,
)
from cfgrl_ros.nodes.decision_messages import (
    DECISION_TOPIC,
    EPISODE_EVENT_TOPIC,
    NOISE_REQUEST_TOPIC,
    NOISE_TOPIC,
    OPERATOR_ACTION_TOPIC,
    DecisionRecord,
    EpisodeEnd,
    decision_message,
    end_message,
    event_qos,
    exchange_qos,
    noise_from_message,
    noise_request_message,
    operator_action_from_message,
    record_qos,
    stamp_to_ns,
)
from cfgrl_ros.nodes.node_support import (
    declare,
    declare_setting,
    declare_settings,
    diagnostic_status,
    now_seconds,
    publish_diagnostics,
    require_positive,
    run_node,
    write_log,
)
from cfgrl_ros.observation import PROPRIOCEPTION, ObservationSpec
from cfgrl_ros.policy import FlowPolicy

MAX_GUIDANCE_WEIGHT = 10.0
FINAL_HOLD_DELIVERY = 0.5  # seconds an exiting node waits for the last hold to be received


class TorchPolicy:
    """A FlowPolicy as the decision loop sees it: numpy in, numpy out; decode times kept."""

    def __init__(self, policy: FlowPolicy, denoising_steps: int) -> None:
        self.policy = policy
        self.denoising_steps = denoising_steps or None  # None: the checkpoint's
        self.noise_shape = policy.noise_shape
        self.feature_dim = policy.feature_dim
        self.decode_seconds: list[float] = []  # since the diagnostics last took them

    def encode(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            features = self.policy.encode(self.policy.inputs_from_observation(observation))
        return features[0].cpu().numpy()

    def decode(self, features: np.ndarray, noise: np.ndarray, guidance_weight: float) -> np.ndarray:
        started = time.perf_counter()
        with torch.inference_mode():
            chunk = self.policy.decode(
                torch.as_tensor(features[None], device=self.policy.device),
                torch.as_tensor(noise[None], device=self.policy.device),
                guidance_weight,
                self.denoising_steps,
            )
        self.decode_seconds.append(time.perf_counter() - started)
        return chunk[0].cpu().numpy()


class PolicyNode(Node):
    def __init__(self, **node_options: Any) -> None:
        super().__init__("policy_node", **node_options)
        self._declare_parameters()
        self.policy = FlowPolicy.load(self.checkpoint, self.device) if self.checkpoint else None
        if self.policy is not None:
            self._check_configuration()
        self.envelope = SafetyEnvelope(self.safety_config)
        self.gripper_settings = declare_gripper_settings(self, self.adapter.config, self.envelope)
        self.gripper = declare_gripper(self, self.gripper_settings)
        self.mode_guard = declare_robot_mode_guard(self)
        self._check_home_inside_the_boxes()

        # Observation topics, exactly the policy's inputs: part -> latest message.
        self._latest: dict[str, Any] = {}
        self.observation_spec = (
            self.policy.config.observation
            if self.policy is not None
            else ObservationSpec(state_fields=PROPRIOCEPTION)  # the operator drives: the arm
        )
        subscriptions = {
            "joint_states": (JointState, "joint_states"),
            "current_pose": (PoseStamped, CURRENT_POSE_TOPIC),
        }
        if self.observation_spec.uses_object_pose:
            subscriptions["object_pose"] = (PoseStamped, "object_pose")
        for key in self.observation_spec.image_keys:
            subscriptions[key] = (Image, self.image_topics[key])
        self.observation_topics = {  # part -> resolved topic name, for messages
            part: self.create_subscription(
                message_type,
                topic,
                lambda message, part=part: self._on_observation(part, message),
                qos_profile_sensor_data,
            ).topic_name
            for part, (message_type, topic) in subscriptions.items()
        }

        self.torch_policy = (
            TorchPolicy(self.policy, self.denoising_steps) if self.policy is not None else None
        )
        self.rejected_operator_actions = 0
        self.loop = DecisionLoop(
            self.loop_settings,
            self.torch_policy,
            self._observation,
            tuple(subscriptions),
            self.adapter,
            self.envelope,
            self.home,
            guidance_weight=self.guidance_weight,
            noise_actor_listening=lambda: self.count_subscribers(NOISE_REQUEST_TOPIC) > 0,
            # Read at each use: the guard may be replaced (tests) or absent.
            blocked=lambda now: (
                self.mode_guard.check(now).blocking_reason if self.mode_guard else ""
            ),
            rng=np.random.default_rng(self.seed),
        )

        self.target_publisher = self.create_publisher(PoseStamped, TARGET_POSE_TOPIC, 10)
        self.gripper_publisher = self.create_publisher(Float64, GRIPPER_COMMAND_TOPIC, 10)
        self.request_publisher = self.create_publisher(
            JointState, NOISE_REQUEST_TOPIC, exchange_qos()
        )
        self.record_publisher = self.create_publisher(
            JointState, DECISION_TOPIC, record_qos(self.record_history)
        )
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointTrajectory, NOISE_TOPIC, self._on_noise, exchange_qos())
        self.create_subscription(String, EPISODE_EVENT_TOPIC, self._on_event, event_qos(10))
        self.create_subscription(
            JointState, OPERATOR_ACTION_TOPIC, self._on_operator_action, exchange_qos(1)
        )
        self.create_service(Trigger, "~/start_episode", self._on_start_episode)
        self.create_service(Trigger, "~/pause", self._on_pause)
        self.create_service(Trigger, "~/resume", self._on_resume)
        self.create_service(Trigger, "~/home", self._on_home)
        self.create_service(SetBool, "~/takeover", self._on_takeover)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._noise_timer = None  # re-checks the loop's deadlines while it awaits noise
        self._diagnostics_time = time.monotonic()
        if self.loop_settings.lockstep:
            check_period = self.loop_settings.lockstep_resend / 4
            self.create_timer(check_period, lambda: self._run(self.loop.check_deadlines))
        else:
            self.create_timer(self.control_period, lambda: self._run(self.loop.tick))
        self.create_timer(1.0, self._publish_diagnostics)
        control = "lockstep" if self.loop_settings.lockstep else "timer"
        if self.policy is None:
            self.get_logger().info(
                f"no checkpoint: the operator drives every episode from {OPERATOR_ACTION_TOPIC} "
                f"({control} control)"
            )
            return
        config = self.policy.config
        self.get_logger().info(
            f"policy {self.checkpoint} on {self.policy.device}: chunks {config.horizon}x"
            f"{config.action_dim}, executing {self.loop_settings.exec_horizon} per decision, "
            f"w = {self.guidance_weight}, {control} control; it reads "
            f"{self.observation_spec.describe()}"
        )

    # ---------------------------------------------------------------------------- parameters
    def _declare_parameters(self) -> None:
        """Every parameter of the node, in one place."""
        self.checkpoint = declare(
            self,
            "checkpoint",
            "",
            "FlowPolicy checkpoint (.pt) to run; empty: no policy, the operator drives every "
            "episode (recording demonstrations)",
        )
        self.device = declare(self, "device", "auto", "torch device: auto, cpu or cuda")
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
        # The noise actor's agent is set up for the same number: one definition for both.
        exec_horizon = declare_setting(self, DsrlConfig, "exec_horizon")
        control_rate = declare(self, "control_rate", 20.0, "control steps per second")
        lockstep = declare(
            self,
            "lockstep",
            LoopSettings.lockstep,
            "step on each fresh observation (lockstep simulator) instead of a timer",
        )
        noise_timeout = declare(
            self,
            "noise_timeout",
            LoopSettings.noise_timeout,
            "seconds to wait for the noise actor's answer",
        )
        first_noise_timeout = declare(
            self,
            "first_noise_timeout",
            LoopSettings.first_noise_timeout,
            "seconds to wait for the answer at an episode's first decision (the actor may be "
            "training between episodes)",
        )
        operator_timeout = declare(
            self,
            "operator_timeout",
            LoopSettings.operator_timeout,
            "seconds an operator action (teleop/action) is used for; older, the arm holds",
        )
        use_noise_actor = declare(
            self,
            "use_noise_actor",
            LoopSettings.use_noise_actor,
            "false: always decode from w0 ~ N(0, I) (base policy)",
        )
        self.use_camera = declare(self, "use_camera", False, "camera images are available")
        self.arm_joints, self.finger_joints = declare_joint_names(self)
        self.record_history = declare(
            self,
            "record_history",
            2000,
            "decision records kept for late (restarted) readers",
            integer_range=(1, 1_000_000),
        )
        self.base_frame = declare(self, "base_frame", "panda_link0", "frame_id of commanded poses")
        self.seed = declare(self, "seed", 0, "seed of the fallback noise")
        self.task = declare(
            self,
            "task",
            "",
            "the simulated task the graph runs (the launch argument task:= sets it); a policy "
            "trained on another task is refused. Empty: not checked (a real arm)",
        )
        require_positive(
            {
                "control_rate": control_rate,
                "noise_timeout": noise_timeout,
                "first_noise_timeout": first_noise_timeout,
                "operator_timeout": operator_timeout,
            }
        )
        self.control_period = 1.0 / control_rate
        self.loop_settings = LoopSettings(
            exec_horizon=exec_horizon,
            lockstep=lockstep,
            noise_timeout=noise_timeout,
            first_noise_timeout=first_noise_timeout,
            use_noise_actor=use_noise_actor,
            operator_timeout=operator_timeout,
        )
        self.adapter = declare_adapter(self)
        self.safety_config = declare_settings(self, SafetyConfig, "safety.")
        self.home = declare_home(self)
        self.image_topics = {
            key: declare(self, f"{key}_topic", default, f"camera topic of the {key!r} input")
            for key, default in IMAGE_TOPICS.items()
        }

    def _check_configuration(self) -> None:
        """The checkpoint against the parameters: ValueError naming what does not fit."""
        checkpoint, config = self.checkpoint, self.policy.config
        if self.loop_settings.exec_horizon > config.horizon:
            raise ValueError(
                f"exec_horizon {self.loop_settings.exec_horizon} is longer than the policy's "
                f"chunks ({config.horizon})"
            )
        if config.condition == "goal":
            raise ValueError(
                f"{checkpoint} is goal-conditioned; the policy node runs policies trained with "
                "condition 'optimality' (CFGRL) or 'none'"
            )
        if self.task and config.task and config.task != self.task:
            raise ValueError(
                f"{checkpoint} was trained on {config.task} demonstrations, the simulator runs "
                f"{self.task}: launch with task:={config.task} (or train a {self.task} policy)"
            )
        if config.observation.image_keys and not self.use_camera:
            raise ValueError(
                f"{checkpoint} was trained with camera images "
                f"{list(config.observation.image_keys)}: launch with use_camera:=true"
            )
        trained = (config.max_translation, config.max_rotation)
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
        if weights and self.policy is None:
            return SetParametersResult(
                successful=False,
                reason="no checkpoint: the operator drives, there is no guidance to weigh",
            )
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
            self.loop.guidance_weight = self.guidance_weight
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------------------- inputs
    def _run(self, step, *args: Any) -> None:
        """Call a loop input with the node's clock (last argument) and carry out its outputs."""
        self._carry_out(step(*args, now_seconds(self)))

    def _on_observation(self, part: str, message: Any) -> None:
        self._latest[part] = message
        self._run(self.loop.observed, part)

    def _observation(self, with_images: bool, arm_only: bool = False) -> Observed | None:
        """The latest observation and its stamp (its oldest part's), None if incomplete.

        ``arm_only`` (homing): only joint states and pose are needed (the object may be gone
        between episodes, and the cameras are not looked at).
        Raises ValueError for messages that do not fit (wrong joint names, image encoding).
        """
        parts = ARM_PARTS if arm_only else self.loop.fields
        stamps = [stamp_seconds(self._latest[p].header.stamp) for p in parts if p in self._latest]
        complete = len(stamps) == len(parts)
        max_age = self.safety_config.max_observation_age
        if not complete or (
            not self.loop_settings.lockstep and now_seconds(self) - min(stamps) > max_age
        ):
            # The envelope holds the arm (no or a stale observation); this says which topic.
            silent = self.silent_topics(parts, now_seconds(self))
            self.get_logger().warning(
                f"holding the arm: {'; '.join(silent)}", throttle_duration_sec=5.0
            )
        if not complete:
            return None
        observation = arm_observation(
            self._latest["joint_states"],
            self._latest["current_pose"],
            self.arm_joints,
            self.finger_joints,
            self._latest["object_pose"]
            if not arm_only and self.observation_spec.uses_object_pose
            else None,
        )
        for key in self.observation_spec.image_keys if with_images and not arm_only else ():
            height, width = self.observation_spec.image_size
            try:
                observation[key] = image_array(self._latest[key], (width, height))
            except ValueError as error:
                raise ValueError(f"{self.observation_topics[key]}: {error}") from None
        return observation, min(stamps)

    def silent_topics(self, parts: Sequence[str], now: float) -> list[str]:
        """The observation topics of `parts` with no message yet, or (timer mode: a lockstep
        simulator stands still between steps) none newer than safety.max_observation_age."""
        silent = []
        for part in parts:
            topic = self.observation_topics[part]
            if part not in self._latest:
                silent.append(f"no message on {topic} yet")
                continue
            age = now - stamp_seconds(self._latest[part].header.stamp)
            if not self.loop_settings.lockstep and age > self.safety_config.max_observation_age:
                silent.append(
                    f"{topic} is {age:.2f} s old (safety.max_observation_age "
                    f"{self.safety_config.max_observation_age} s)"
                )
        return silent

    def _on_noise(self, message: JointTrajectory) -> None:
        try:
            noise = noise_from_message(message, self.policy.noise_shape)
        except ValueError as error:
            self.get_logger().error(str(error), throttle_duration_sec=10.0)
            return
        self._run(self.loop.on_noise, stamp_to_ns(message.header.stamp), noise)

    def _on_operator_action(self, message: JointState) -> None:
        try:
            action = operator_action_from_message(message)
        except ValueError as error:
            self.rejected_operator_actions += 1
            self.get_logger().error(str(error), throttle_duration_sec=5.0)
            return
        self.loop.operator_action(action, now_seconds(self))

    def _on_noise_timer(self) -> None:
        self._run(self.loop.check_deadlines)
        if self.loop.phase != Phase.AWAITING_NOISE:
            self.destroy_timer(self._noise_timer)
            self._noise_timer = None

    def _on_event(self, message: String) -> None:
        if message.data in ("success", "failure"):
            self._run(self.loop.end_episode, message.data == "success")
        elif message.data == "start":
            if not self.loop.running:  # the reward/reset node calls ~/start_episode first
                self.get_logger().warning(
                    "episode_event start without a call of ~/start_episode: ignored (episodes "
                    "start through the service, so that ~/home knows about them)"
                )
        else:
            self.get_logger().warning(f"unknown episode event {message.data!r} ignored")

    # ----------------------------------------------------------------------------- services
    def _answer(self, response: Any, reply: Reply) -> Any:
        response.success = reply.success
        response.message = reply.message
        return response

    def _on_start_episode(self, request, response):
        reply, outputs = self.loop.start_episode(now_seconds(self))
        self._carry_out(outputs)
        return self._answer(response, reply)

    def _on_home(self, request, response):
        reply, outputs = self.loop.request_home(now_seconds(self))
        self._carry_out(outputs)
        return self._answer(response, reply)

    def _on_takeover(self, request, response):
        reply, outputs = self.loop.takeover(bool(request.data), now_seconds(self))
        self._carry_out(outputs)
        return self._answer(response, reply)

    def _on_pause(self, request, response):
        return self._answer(response, self.loop.pause())

    def _on_resume(self, request, response):
        return self._answer(response, self.loop.resume())

    # ------------------------------------------------------------------------------ outputs
    def _carry_out(self, outputs: list[Output]) -> None:
        for output in outputs:
            if isinstance(output, SendCommand):
                target, gripper = command_messages(
                    output.command, self.base_frame, self.get_clock().now().to_msg()
                )
                # Gripper first: a lockstep simulator steps when the target pose arrives.
                self.gripper_publisher.publish(gripper)
                self.target_publisher.publish(target)
                if self.gripper is not None:
                    self.gripper.command(output.command.gripper_width)
            elif isinstance(output, RequestNoise):
                self.request_publisher.publish(
                    noise_request_message(output.stamp_ns, output.guidance_weight, output.features)
                )
                if self._noise_timer is not None:
                    self.destroy_timer(self._noise_timer)
                self._noise_timer = self.create_timer(output.timeout, self._on_noise_timer)
            elif isinstance(output, Decided):
                record = DecisionRecord(
                    stamp_ns=output.stamp_ns,
                    features=output.features,
                    noise=output.noise,
                    chunk=output.chunk,
                    guidance_weight=output.guidance_weight,
                    noise_from_actor=output.from_actor,
                    decision_index=output.index,
                    exec_horizon=self.loop_settings.exec_horizon,
                    operator=output.operator,
                )
                self.record_publisher.publish(decision_message(record))
            elif isinstance(output, EpisodeEnded):
                end = EpisodeEnd(output.stamp_ns, output.features, output.success, output.decisions)
                self.record_publisher.publish(end_message(end))
            elif isinstance(output, Log):
                write_log(self, output)

    # -------------------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        decode_seconds = self.torch_policy.decode_seconds if self.torch_policy else []
        decode_ms = 1000.0 * np.asarray(decode_seconds or [0.0])
        now = time.monotonic()
        rate = len(decode_seconds) / max(now - self._diagnostics_time, 1e-9)
        if self.torch_policy:
            self.torch_policy.decode_seconds = []
        self._diagnostics_time = now
        counts = self.loop.counts
        values = {
            "running": self.loop.running,
            "phase": self.loop.phase.value,
            "homing": self.loop.phase == Phase.HOMING,
            "guidance_weight": self.guidance_weight,
            "operator_driving": self.loop.operator_driving,
            "rejected_operator_actions": self.rejected_operator_actions,
            **counts,
            "decisions_per_second": f"{rate:.2f}",
            "decode_ms_mean": f"{decode_ms.mean():.2f}",
            "decode_ms_max": f"{decode_ms.max():.2f}",
        }
        message = f"{counts['decisions']} decisions, {counts['fallbacks']} with base-policy noise"
        decisions = diagnostic_status(self, "decisions", message, values)
        status = self.envelope.status()
        safety = diagnostic_status(
            self, "safety", status.message, status.values, bytes([status.level])
        )
        publish_diagnostics(self, self.diagnostics_publisher, decisions, safety)

    def destroy_node(self) -> None:
        # Leave the arm holding where it is rather than tracking a stale target, unless the
        # robot mode guard forbids commanding it (a reflex, the user stop): then send nothing.
        # A shut-down context cannot publish.
        outputs = self.loop.shutdown(now_seconds(self), can_publish=self.context.ok())
        self._carry_out(outputs)
        if any(isinstance(output, SendCommand) for output in outputs):
            # The process ends next: unacknowledged, the last hold could be dropped unsent.
            for publisher in (self.gripper_publisher, self.target_publisher):
                publisher.wait_for_all_acked(Duration(seconds=FINAL_HOLD_DELIVERY))
        if self.mode_guard is not None:
            self.mode_guard.destroy()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(PolicyNode, "policy_node", args)


if __name__ == "__main__":
    main()

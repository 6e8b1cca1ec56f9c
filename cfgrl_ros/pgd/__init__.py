"""Policy-guided diffusion (docs/algorithms.md section 4): synthetic on-policy experience from bags.

- `sub_trajectories`, `episodes_from_windows`: episodes <-> windows of (state, action, reward,
  done) rows.
- `TrajectoryModel`: the flow-matching trajectory model; `sample(..., guidance, target_log_prob)`
  draws windows guided toward a target policy.
- `GaussianTarget`, `flow_policy_action`: the target policy (a frozen flow policy, optionally
  steered by a DSRL noise agent).
- `DynamicsModel`, `world_model_rollouts`: dynamics error of synthetic transitions and the
  autoregressive world-model baseline.
ROS-free.
"""

from cfgrl_ros.pgd.diffusion import TrajectoryModel, TrajectoryModelConfig
from cfgrl_ros.pgd.dynamics import (
    DynamicsModel,
    Transitions,
    episode_transitions,
    window_transitions,
    world_model_rollouts,
)
from cfgrl_ros.pgd.target import GaussianTarget, flow_policy_action
from cfgrl_ros.pgd.trajectories import WindowLayout, episodes_from_windows, sub_trajectories

__all__ = [
    "DynamicsModel",
    "GaussianTarget",
    "TrajectoryModel",
    "TrajectoryModelConfig",
    "Transitions",
    "WindowLayout",
    "episode_transitions",
    "episodes_from_windows",
    "flow_policy_action",
    "sub_trajectories",
    "window_transitions",
    "world_model_rollouts",
]

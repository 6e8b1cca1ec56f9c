"""DSRL: steer a frozen flow policy through its start noise (docs/algorithms.md section 3).

- `NoiseSpaceEnv`: an arm environment seen through the frozen policy; the action is the noise.
- `DsrlSac`, `DsrlNa`: SB3 SAC in noise space, and the noise-aliased variant (critic over
  actions, distilled into noise space; usable with offline data).
- `NoiseAgent` (`make_noise_agent`, `NoiseAgent.load`): the environment-free API that the ROS
  noise actor node and `cfgrl-ros adapt` use.
"""

from cfgrl_ros.dsrl.agent import (
    DsrlConfig,
    NoiseAgent,
    make_algorithm,
    make_noise_agent,
    make_noise_env,
)
from cfgrl_ros.dsrl.dsrl_na import DsrlNa
from cfgrl_ros.dsrl.dsrl_sac import DsrlSac
from cfgrl_ros.dsrl.noise_space import NoiseSpace, NoiseSpaceEnv
from cfgrl_ros.dsrl.rollout import EpisodeResult, ZeroNoise, run_episode

__all__ = [
    "DsrlConfig",
    "DsrlNa",
    "DsrlSac",
    "EpisodeResult",
    "NoiseAgent",
    "NoiseSpace",
    "NoiseSpaceEnv",
    "ZeroNoise",
    "make_algorithm",
    "make_noise_agent",
    "make_noise_env",
    "run_episode",
]

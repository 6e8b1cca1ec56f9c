"""DSRL fine-tuning of a frozen flow policy on a Franka arm, with CFGRL guidance as a live knob.

    ros2 launch cfgrl_ros dsrl_franka.launch.py policy:=/path/to/policy.pt [sim:=false] ...

Starts the nodes that ``cfgrl_ros.graph.describe_graph`` lists for the arguments: the policy
node, the noise actor, the reward/reset node and, with sim:=true, the simulated Franka. The
pip-mode launcher (``cfgrl-ros launch dsrl_franka``) starts the same description.
"""

from cfgrl_ros.ros2_launch import launch_description


def generate_launch_description():
    return launch_description("dsrl_franka")

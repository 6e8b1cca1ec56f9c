"""Several arms, one learner: DSRL with one noise actor serving N arm groups in namespaces.

    ros2 launch cfgrl_ros dsrl_fleet.launch.py policy:=/path/to/policy.pt arms:=2 [sim:=false] ...

Starts the nodes that ``cfgrl_ros.graph.describe_fleet`` lists: one noise actor and, per arm,
the dsrl_franka group (policy node, reward/reset node and, with sim:=true, a simulated Franka
of its own seed) in namespace arm0, arm1, ... The pip-mode launcher (``cfgrl-ros launch
dsrl_fleet``) starts the same description.
"""

from cfgrl_ros.ros2_launch import launch_description


def generate_launch_description():
    return launch_description("dsrl_fleet")

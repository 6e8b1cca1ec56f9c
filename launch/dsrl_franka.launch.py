"""DSRL fine-tuning of a frozen flow policy on a Franka arm, with CFGRL guidance as a live knob.

    ros2 launch cfgrl_ros dsrl_franka.launch.py policy:=/path/to/policy.pt [sim:=false] ...

Starts the nodes that ``cfgrl_ros.graph.describe_graph`` lists for the arguments: the policy
node, the noise actor, the reward/reset node and, with sim:=true, the simulated Franka. The
pip-mode launcher (``cfgrl-ros launch dsrl_franka``) starts the same description. ``launch`` and
``launch_ros`` are imported inside generate_launch_description(), so this file can be imported
(and its description tested) where they are not installed.
"""

import os

from cfgrl_ros.graph import LAUNCH_ARGUMENTS, PACKAGE, describe_graph, node_environment


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def start_nodes(context):
        values = {
            argument.name: LaunchConfiguration(argument.name).perform(context)
            for argument in LAUNCH_ARGUMENTS
        }
        return [
            Node(
                package=PACKAGE,
                executable=node.executable,
                name=node.name,
                namespace=node.namespace,
                parameters=[*map(str, node.parameter_files), node.parameters],
                additional_env=node_environment(os.environ),
                output="screen",
                emulate_tty=True,
            )
            for node in describe_graph(values)
        ]

    arguments = [
        DeclareLaunchArgument(
            argument.name,
            default_value=argument.default,
            description=argument.description,
            **({"choices": list(argument.choices)} if argument.choices else {}),
        )
        for argument in LAUNCH_ARGUMENTS
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=start_nodes)])

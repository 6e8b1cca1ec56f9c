"""The ``ros2 launch`` side of cfgrl_ros.graph: a graph's LaunchDescription.

launch/<graph>.launch.py calls `launch_description`; ``launch`` and ``launch_ros`` are imported
inside it, so those files can be imported (and their descriptions tested) where the launch
packages are not installed, as in pip mode.
"""

from __future__ import annotations

import os
from typing import Any

from cfgrl_ros.graph import GRAPHS, PACKAGE, node_environment


def launch_description(graph_name: str) -> Any:
    """The LaunchDescription that starts the nodes `GRAPHS[graph_name]` describes."""
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    graph = GRAPHS[graph_name]

    def start_nodes(context: Any) -> list[Node]:
        values = {
            argument.name: LaunchConfiguration(argument.name).perform(context)
            for argument in graph.arguments
        }
        return [
            Node(
                package=PACKAGE,
                executable=node.executable,
                name=node.name,
                namespace=node.namespace,
                parameters=[*map(str, node.parameter_files), node.parameters],
                additional_env={**node_environment(os.environ), **node.environment},
                ros_arguments=node.enclave_arguments or None,
                output="screen",
                emulate_tty=True,
            )
            for node in graph.describe(values)
        ]

    arguments = [
        DeclareLaunchArgument(
            argument.name,
            default_value=argument.default,
            description=argument.description,
            **({"choices": list(argument.choices)} if argument.choices else {}),
        )
        for argument in graph.arguments
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=start_nodes)])

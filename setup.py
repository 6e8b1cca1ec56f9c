from glob import glob

from setuptools import find_packages, setup

package_name = "cfgrl_ros"

# One console script per node; each module under cfgrl_ros/nodes/ exposes main().
NODES = [
    "franka_sim_node",
    "policy_node",
    "noise_actor_node",
    "reward_reset_node",
    "realsense_camera_node",
    "teleop_node",
    "bag_recorder_node",
    "scripted_operator_node",
    "success_detector_node",
]

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench", "bench.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    # Python dependencies live in requirements.txt (pinned by constraints.txt): on a robot PC
    # colcon does not install them, and the ROS 2 ones come from the ROS install there.
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="cfgrl_ros developers",
    maintainer_email="cfgrl-ros@example.org",
    description="CFGRL guidance and DSRL noise steering for flow policies on a Franka arm.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [f"{node} = {package_name}.nodes.{node}:main" for node in NODES]
        + ["cfgrl-ros = cfgrl_ros.cli.main:main"],
    },
)

"""Who can reach the arm: does a publisher in one process reach a subscriber in another, for
each DDS discovery setting a lab might run with?

    sudo python bench/dds_reach.py [--seconds 8]

The subscriber stands for the arm's graph (it listens on ``dsrl/noise``, which moves the arm);
the publisher for a process anywhere else in the lab. "Another computer" is a Linux network
namespace joined to the subscriber's by a virtual Ethernet pair (10.99.0.1 <-> 10.99.0.2):
two network stacks with their own loopback, as two hosts on one subnet. Neither namespace has
a route to any other network, so nothing this script sends (SUBNET multicast included) leaves
the machine. Needs root (ip netns). Prints a markdown table: setting, expected, measured.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass, field

from cfgrl_ros.paths import config_path

LOOPBACK_PROFILE = "fastdds_localhost.xml"
HOSTS = {"host_a": "10.99.0.1", "host_b": "10.99.0.2"}
TOPIC = "dsrl/noise"

LISTEN = """
import sys, time, rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("arm_graph")
heard = []
node.create_subscription(String, sys.argv[1], lambda m: heard.append(m.data), 10)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    rclpy.spin_once(node, timeout_sec=0.1)
print(len(heard))
"""

TALK = """
import sys, time, rclpy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("intruder")
publisher = node.create_publisher(String, sys.argv[1], 10)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    publisher.publish(String(data="steer"))
    rclpy.spin_once(node, timeout_sec=0.1)
"""


@dataclass
class Case:
    """One setting: where each side runs and the environment it runs with."""

    name: str
    expected: bool
    listener_host: str
    talker_host: str
    listener: dict[str, str] = field(default_factory=dict)
    talker: dict[str, str] = field(default_factory=dict)


def cases(domain: int) -> list[Case]:
    same = {"ROS_DOMAIN_ID": str(domain)}
    other = {"ROS_DOMAIN_ID": str(domain + 1)}
    local = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    subnet = {"ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}
    peer = {"ROS_STATIC_PEERS": HOSTS["host_b"]}
    at_arm = {"ROS_STATIC_PEERS": HOSTS["host_a"]}  # the other side names the arm's computer
    loopback = {**local, "FASTRTPS_DEFAULT_PROFILES_FILE": str(config_path(LOOPBACK_PROFILE))}
    return [
        Case("same computer, same domain, LOCALHOST", True, "host_a", "host_a",
             {**same, **local}, {**same, **local}),
        Case("same computer, same domain, arm LOCALHOST, other SUBNET", True, "host_a", "host_a",
             {**same, **local}, {**same, **subnet}),
        Case("same computer, other domain", False, "host_a", "host_a",
             {**same, **local}, {**other, **local}),
        Case("other computer, same domain, both SUBNET (ROS's default)", True, "host_a", "host_b",
             {**same, **subnet}, {**same, **subnet}),
        Case("other computer, same domain, arm LOCALHOST, other SUBNET", False, "host_a",
             "host_b", {**same, **local}, {**same, **subnet}),
        Case("other computer, same domain, arm LOCALHOST, other SUBNET + ROS_STATIC_PEERS=arm",
             False, "host_a", "host_b", {**same, **local}, {**same, **subnet, **at_arm}),
        Case("other computer, same domain, arm LOCALHOST + ROS_STATIC_PEERS=other", True,
             "host_a", "host_b", {**same, **local, **peer}, {**same, **subnet}),
        Case("other computer, other domain, both SUBNET", False, "host_a", "host_b",
             {**same, **subnet}, {**other, **subnet}),
        Case(f"same computer, same domain, arm LOCALHOST + {LOOPBACK_PROFILE}, other SUBNET",
             True, "host_a", "host_a", {**same, **loopback}, {**same, **subnet}),
        Case(f"other computer, same domain, arm LOCALHOST + {LOOPBACK_PROFILE}, other SUBNET + "
             "ROS_STATIC_PEERS=arm", False, "host_a", "host_b", {**same, **loopback},
             {**same, **subnet, **at_arm}),
    ]  # fmt: skip


def run(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True)


def make_hosts() -> None:
    remove_hosts()
    for host in HOSTS:
        run(["ip", "netns", "add", host])
        run(["ip", "-n", host, "link", "set", "lo", "up"])
    run(["ip", "link", "add", "veth_a", "netns", "host_a", "type", "veth", "peer", "name",
         "veth_b", "netns", "host_b"])  # fmt: skip
    for host, device in (("host_a", "veth_a"), ("host_b", "veth_b")):
        run(["ip", "-n", host, "addr", "add", f"{HOSTS[host]}/24", "dev", device])
        run(["ip", "-n", host, "link", "set", device, "up", "multicast", "on"])
        run(["ip", "-n", host, "route", "add", "224.0.0.0/4", "dev", device])


def remove_hosts() -> None:
    for host in HOSTS:
        subprocess.run(["ip", "netns", "del", host], capture_output=True)


def measure(case: Case, seconds: float) -> int:
    """Messages the subscriber heard."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("ROS_DOMAIN", "ROS_AUTOMATIC", "ROS_STATIC", "FASTRTPS_"))
    }

    def start(host: str, script: str, environment: dict[str, str], duration: float):
        command = ["ip", "netns", "exec", host, sys.executable, "-c", script, TOPIC, str(duration)]
        return subprocess.Popen(
            command, env={**base, **environment}, stdout=subprocess.PIPE, text=True
        )

    listener = start(case.listener_host, LISTEN, case.listener, seconds + 4)
    talker = start(case.talker_host, TALK, case.talker, seconds)
    talker.wait(seconds + 30)
    output, _ = listener.communicate(timeout=seconds + 30)
    return int(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="publishing time per case")
    parser.add_argument("--domain", type=int, default=42, help="the arm's ROS_DOMAIN_ID")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: it makes two network namespaces (ip netns)")
    make_hosts()
    try:
        print("| setting | expected | messages heard | reached |")
        print("|---|---|---|---|")
        for case in cases(args.domain):
            heard = measure(case, args.seconds)
            expected = "reaches" if case.expected else "cut off"
            print(f"| {case.name} | {expected} | {heard} | {'yes' if heard else 'no'} |")
    finally:
        remove_hosts()


if __name__ == "__main__":
    main()

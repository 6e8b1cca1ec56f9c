"""ROS 2 nodes: thin adapters between messages and the ROS-free core. One node per file."""

import signal
import threading

# A node that a shell started in the background (`noise_actor_node ... &`, nohup) inherits
# SIGINT ignored, and Python keeps it ignored: Ctrl-C would do nothing (rclpy's own handler
# would override it, but run_node leaves SIGINT to Python for the last hold). This package is
# imported before any node module's heavy imports (torch, SB3: seconds on a loaded machine), so
# Ctrl-C works from then on.
if (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
):
    signal.signal(signal.SIGINT, signal.default_int_handler)

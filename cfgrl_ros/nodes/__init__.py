"""ROS 2 nodes: thin adapters between messages and the ROS-free core. One node per file."""

import signal
import threading

# A node that a shell started in the background (`noise_actor_node ... &`, nohup) inherits
# SIGINT ignored. run_node puts Python's Ctrl-C back, but only after the node module's heavy
# imports (torch, SB3: seconds on a loaded machine); a Ctrl-C in between would be lost and the
# node would run on. This package is imported first, so restore it here already.
if (
    threading.current_thread() is threading.main_thread()
    and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
):
    signal.signal(signal.SIGINT, signal.default_int_handler)

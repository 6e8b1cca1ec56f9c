"""Learned success detection: was the task done, from the cameras (ROS-free core)."""

"""Teleoperation: a SpaceMouse or joystick as the policy's action space (ROS-free core)."""

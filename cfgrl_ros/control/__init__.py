"""ROS-free control logic of the nodes: state machines driven by inputs and a clock."""

# Sourced by make targets: keep all ROS 2 traffic on loopback with a domain of its own.
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
# Humble predates ROS_AUTOMATIC_DISCOVERY_RANGE and reads only ROS_LOCALHOST_ONLY. Not set on
# newer distros: Jazzy warns about it twice per process (and then ignores the range), Kilted
# ignores it. Humble has no PyPI wheels, so there ROS_DISTRO always comes from its setup.bash.
if [ "${ROS_DISTRO:-}" = humble ]; then
  export ROS_LOCALHOST_ONLY=${ROS_LOCALHOST_ONLY:-1}
fi
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 101 ))}
export ROS_LOG_DIR=${ROS_LOG_DIR:-$(mktemp -d -t cfgrl_ros_log.XXXXXX)}
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
export PYOPENGL_PLATFORM=${PYOPENGL_PLATFORM:-osmesa}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # small networks; oversubscribed torch threads crawl

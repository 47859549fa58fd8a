"""Frame sources on real files written with OpenCV, and the live drop logic on a real thread."""

from __future__ import annotations

import importlib.util
import itertools
import socket
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.camera import Frame, LiveSource, SourceError, open_source

BITS = 8  # the frame number as 8 vertical stripes, black or white, 8 px wide: JPEG-proof
H, W = 32, 8 * BITS


def index_image(i: int) -> np.ndarray:
    """A BGR frame whose stripes spell ``i`` in binary (most significant bit first)."""
    image = np.zeros((H, W, 3), np.uint8)
    for bit in range(BITS):
        if i >> (BITS - 1 - bit) & 1:
            image[:, bit * 8 : bit * 8 + 8] = 255
    return image


def decode_index(image: np.ndarray) -> int:
    stripes = image.reshape(H, BITS, 8, 3).mean(axis=(0, 2, 3)) > 127
    return int("".join("1" if s else "0" for s in stripes), 2)


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 25.0, (W, H))
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(
        tmp_path_factory.mktemp("video") / "count.avi", [index_image(i) for i in range(30)]
    )


# --- files and folders --------------------------------------------------------------------------


def test_video_file_is_read_in_order_to_the_end(video: Path) -> None:
    with open_source(str(video)) as source:
        assert not source.live
        frames = list(source)
        assert source.read() is None  # stays at the end
        assert source.dropped == 0
    assert [f.index for f in frames] == list(range(30))
    assert [decode_index(f.image) for f in frames] == list(range(30))
    f = frames[0]
    assert (f.image.shape, f.image.dtype, f.name) == ((H, W, 3), np.uint8, None)
    assert abs(f.captured_at - time.time()) < 60


def test_video_frames_are_rgb(tmp_path: Path) -> None:
    red_bgr = np.zeros((H, W, 3), np.uint8)
    red_bgr[..., 2] = 255
    path = write_video(tmp_path / "red.avi", [red_bgr] * 3)
    with open_source(str(path)) as source:
        frame = source.read()
    assert frame is not None
    r, g, b = frame.image.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 50 and b < 50


def test_fps_paces_a_file_without_dropping(video: Path) -> None:
    with open_source(str(video), fps=50) as source:
        t0 = time.monotonic()
        frames = [source.read() for _ in range(10)]
        elapsed = time.monotonic() - t0
    assert [f.index for f in frames if f is not None] == list(range(10))
    assert 0.17 <= elapsed < 2.0


def test_folder_is_read_in_name_order_as_rgb(tmp_path: Path) -> None:
    colours = {"c.png": (0, 0, 255), "a.png": (255, 0, 0), "b.PNG": (0, 255, 0)}  # BGR
    for name, bgr in colours.items():  # written out of order on purpose
        assert cv2.imwrite(str(tmp_path / name), np.full((H, W, 3), bgr, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub.png").mkdir()  # a folder with an image's name is not an image
    with open_source(str(tmp_path)) as source:
        assert not source.live
        frames = list(source)
    assert [(f.index, f.name) for f in frames] == [(0, "a.png"), (1, "b.PNG"), (2, "c.png")]
    rgb = [tuple(int(v) for v in f.image[0, 0]) for f in frames]
    assert rgb == [(0, 0, 255), (0, 255, 0), (255, 0, 0)]  # blue, green, red


def test_folder_stops_at_an_unreadable_image_naming_it(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "1.png"), index_image(1))
    (tmp_path / "2.jpg").write_bytes(b"not a jpeg")
    with open_source(str(tmp_path)) as source:
        first = source.read()
        assert first is not None and decode_index(first.image) == 1
        with pytest.raises(SourceError, match=r"cannot decode image .*2\.jpg"):
            source.read()


# --- errors -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("/nonexistent/clip.mp4", r"no such file or folder: /nonexistent/clip\.mp4"),
        ("97", r"cannot open camera 97: check it is plugged in"),
        ("picamera2:640by480", r"picamera2:WIDTHxHEIGHT"),
        ("  ", r"no source given"),
    ],
)
def test_bad_sources_are_one_clear_error(spec: str, match: str, capfd) -> None:
    with pytest.raises(SourceError, match=match):
        open_source(spec)
    assert "WARN" not in capfd.readouterr().err  # OpenCV's own lines would repeat ours


def test_empty_folder_and_undecodable_video(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match=rf"no images in folder {tmp_path}: .*\.png"):
        open_source(str(tmp_path))
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(SourceError, match=r"cannot decode video .*clip\.mp4"):
        open_source(str(bad))


def test_unreachable_stream() -> None:
    url = f"http://127.0.0.1:{free_port()}/video.mjpg"
    with pytest.raises(SourceError, match=rf"cannot open stream {url}: check the address"):
        open_source(url)


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 present")
def test_picamera2_missing_says_how_to_install_it() -> None:
    with pytest.raises(SourceError, match=r"apt install python3-picamera2.*--system-site-packages"):
        open_source("picamera2:320x240")


# What a pip numpy 2 does to Bookworm's picamera2 (built against numpy 1.24): simplejpeg, which
# it imports, fails as below (picamera2 issues #1088, #1211).
_ABI_ERROR = (
    "raise ValueError('numpy.dtype size changed, may indicate binary incompatibility. "
    "Expected 96 from C header, got 88 from PyObject')\n"
)


def test_picamera2_on_the_wrong_numpy_names_the_cause_and_the_fix(tmp_path, monkeypatch) -> None:
    (tmp_path / "picamera2").mkdir()
    (tmp_path / "picamera2" / "__init__.py").write_text(_ABI_ERROR)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    with pytest.raises(SourceError) as caught:
        open_source("picamera2")
    text = str(caught.value)
    assert "numpy.dtype size changed" in text and f"numpy {np.__version__}" in text
    assert "Re-run deploy/pi/install.sh (it keeps the system's numpy)" in text
    assert "pip install 'numpy==" in text


def test_bad_fps_is_refused_before_opening() -> None:
    with pytest.raises(ValueError, match="-1"):
        open_source("/nonexistent", fps=-1)


# --- the live wrapper ---------------------------------------------------------------------------


class Producer:
    """A camera stand-in: numbered frames every ``period`` s, ``count`` of them (None: forever)."""

    def __init__(self, period: float, count: int | None = None) -> None:
        self.period, self.count, self.made = period, count, 0
        self.released_on: str | None = None

    def read_raw(self) -> np.ndarray | None:
        if self.count is not None and self.made >= self.count:
            return None
        time.sleep(self.period)
        image = np.full((2, 2, 3), self.made % 256, np.uint8)
        self.made += 1
        return image

    def release(self) -> None:
        self.released_on = threading.current_thread().name


def test_live_source_drops_stale_frames_instead_of_queueing() -> None:
    producer, converted = Producer(period=0.0005, count=300), []

    def to_rgb(image: np.ndarray) -> np.ndarray:
        converted.append(image)
        return image

    frames: list[Frame] = []
    with LiveSource(
        producer.read_raw, name="fake camera", to_rgb=to_rgb, release=producer.release
    ) as source:
        assert source.live
        for frame in source:  # a consumer far slower than the camera
            frames.append(frame)
            time.sleep(0.01)
        dropped = source.dropped
    indexes = [f.index for f in frames]
    assert all(b > a for a, b in itertools.pairwise(indexes))
    assert all(int(f.image[0, 0, 0]) == f.index % 256 for f in frames)  # image matches its index
    assert dropped > 0
    assert (
        dropped
        == 300 - len(frames)
        == indexes[0] + sum(b - a - 1 for a, b in itertools.pairwise(indexes))
    )
    assert indexes[-1] == 299  # after the camera ended, the next read was the newest frame
    assert len(converted) == len(frames)  # dropped frames are never converted
    assert producer.released_on == "source fake camera"  # released on the reader thread


def test_live_source_paces_reads_to_fps_dropping_the_rest() -> None:
    producer = Producer(period=0.001)
    with LiveSource(producer.read_raw, name="fast camera", fps=20) as source:
        t0 = time.monotonic()
        frames = [source.read() for _ in range(5)]
        elapsed = time.monotonic() - t0
        assert source.dropped > 0
    assert elapsed >= 0.19
    assert all(f is not None for f in frames)
    assert source.read() is None  # closed


def test_live_source_reports_a_failing_or_stalled_producer() -> None:
    def broken() -> np.ndarray:
        raise OSError("USB device disconnected")

    with (
        LiveSource(broken, name="camera 3") as source,
        pytest.raises(SourceError, match="camera 3 failed: USB device disconnected"),
    ):
        source.read()

    with (
        LiveSource(lambda: None, name="camera 4") as source,
        pytest.raises(SourceError, match="camera 4 opened but gave no frame"),
    ):
        source.read()

    go = threading.Event()

    def stuck() -> np.ndarray | None:
        go.wait()
        return None

    source = LiveSource(stuck, name="stream rtsp://cam", stall_timeout_s=0.2)
    with pytest.raises(SourceError, match=r"no frame from stream rtsp://cam for 0\.2 s"):
        source.read()
    go.set()  # the stream comes back, ends, and the reader thread can finish
    source.close()

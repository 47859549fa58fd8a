"""Where the camera node's frames come from: a camera, a stream, the Pi camera, a video or a folder.

Every source hands out RGB frames (the order training used); OpenCV's and picamera2's BGR is
converted here, at the edge, so nothing downstream has to know where a frame came from.

A live source (camera, stream, Pi camera) keeps only its newest frame: a node that falls behind
should classify what the camera sees now, not a queue of the past, and every frame it never saw is
counted in ``dropped``. A file or a folder is replayed frame by frame, nothing dropped, so a frame's
``index`` is its position in the source and a result can be matched to it.

Folders: an image OpenCV cannot decode stops the run with a :class:`SourceError` naming the file
rather than being skipped, because a replay set is something the user controls and a silently
shorter run would misstate every count the node reports.
"""

from __future__ import annotations

import contextlib
import logging
import re
import stat
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from shared.errors import IsplitEEError, TemporaryError

__all__ = [
    "IMAGE_SUFFIXES",
    "Frame",
    "FrameSource",
    "ImageFolderSource",
    "LiveSource",
    "SourceError",
    "SourceUnavailable",
    "VideoFileSource",
    "open_source",
    "picamera2_import_problem",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})
STREAM_TIMEOUT_MS = 10_000  # an unreachable or stalled stream fails instead of hanging the node
PICAMERA2_SIZE = (640, 480)


class SourceError(IsplitEEError):
    """A source that cannot be opened or read; the message names it and what to check."""


class SourceUnavailable(SourceError, TemporaryError):
    """A live source (a camera, a stream) that is not there yet: a USB camera enumerated late,
    a stream whose server is restarting. A later start can succeed (exit status 75)."""


@dataclass(frozen=True, slots=True)
class Frame:
    index: int  # position in a file/folder; frames captured so far (dropped included) when live
    image: np.ndarray  # (H, W, 3) uint8, RGB
    captured_at: float  # time.time() when the frame was read
    name: str | None = None  # the file name, for folders


def _bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class _Pacer:
    """Spaces calls at least ``1/fps`` apart; a late caller may not catch up in a burst."""

    def __init__(self, fps: float | None) -> None:
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be a positive number or None, got {fps!r}")
        self.period = 0.0 if fps is None else 1.0 / fps
        self._last: float | None = None

    def wait(self) -> None:
        if not self.period:
            return
        now = time.monotonic()
        if self._last is not None and now < self._last + self.period:
            time.sleep(self._last + self.period - now)
            now = time.monotonic()
        self._last = now


class FrameSource(ABC):
    """What the node reads frames from; ``with`` releases the device or file however it ends."""

    live: bool = False
    name: str

    @property
    def dropped(self) -> int:
        return 0

    @abstractmethod
    def read(self) -> Frame | None:
        """The next frame, or None when the source has ended or was closed."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class VideoFileSource(FrameSource):
    """A video replayed frame by frame; with ``fps`` it plays "as live" for a demo, losslessly."""

    def __init__(self, path: Path, *, fps: float | None = None) -> None:
        self.name = str(path)
        self._pacer = _Pacer(fps)
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(
                f"cannot decode video {path}: check it is a video file OpenCV's FFmpeg can play"
            )
        self._index = 0

    def read(self) -> Frame | None:
        if self._cap is None:
            return None
        self._pacer.wait()
        ok, image = self._cap.read()
        if not ok:
            return None
        frame = Frame(self._index, _bgr_to_rgb(image), time.time())
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class ImageFolderSource(FrameSource):
    """The images of one folder, read one at a time as asked for.

    Plain name order, not "natural" order, so the order is the one ``ls`` shows: number files
    with leading zeros (``frame_0002.png``). Subfolders are not entered.
    """

    def __init__(self, folder: Path, *, fps: float | None = None) -> None:
        self.name = str(folder)
        self._pacer = _Pacer(fps)
        self.files = sorted(
            (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.name,
        )
        if not self.files:
            suffixes = " ".join(sorted(IMAGE_SUFFIXES))
            raise SourceError(f"no images in folder {folder}: expected files ending in {suffixes}")
        self._index = 0

    def read(self) -> Frame | None:
        if self._index >= len(self.files):
            return None
        path = self.files[self._index]
        self._pacer.wait()
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as e:
            raise SourceError(f"cannot read image {path}: {e.strerror or e}") from e
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            raise SourceError(f"cannot decode image {path}: remove it or re-encode it")
        frame = Frame(self._index, _bgr_to_rgb(image), time.time(), name=path.name)
        self._index += 1
        return frame

    def close(self) -> None:
        self._index = len(self.files)


class LiveSource(FrameSource):
    """Any frame producer behind a reader thread that keeps only the newest frame.

    ``read_raw`` is called in a loop on the thread and returns an image, or None when the producer
    has ended; ``to_rgb`` is applied only to the frames actually handed out, so a node that drops
    most frames does not pay to convert them. ``release`` runs on the reader thread once it stops,
    so a capture handle is never released while a read on it is still blocked.
    """

    live = True

    def __init__(
        self,
        read_raw: Callable[[], np.ndarray | None],
        *,
        name: str,
        fps: float | None = None,
        to_rgb: Callable[[np.ndarray], np.ndarray] | None = None,
        release: Callable[[], None] | None = None,
        stall_timeout_s: float = STREAM_TIMEOUT_MS / 1000,
    ) -> None:
        self.name = name
        self._pacer = _Pacer(fps)
        self._read_raw = read_raw
        self._to_rgb = to_rgb
        self._release = release
        self.stall_timeout_s = stall_timeout_s
        self._cond = threading.Condition()
        self._newest: Frame | None = None
        self._captured = 0
        self._dropped = 0
        self._ended = False
        self._closed = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"source {name}", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        with self._cond:
            return self._dropped

    def _run(self) -> None:
        try:
            while not self._closed:
                image = self._read_raw()
                captured_at = time.time()
                with self._cond:
                    if image is None or self._closed:
                        break
                    if self._newest is not None:
                        self._dropped += 1
                    self._newest = Frame(self._captured, image, captured_at)
                    self._captured += 1
                    self._cond.notify_all()
        except Exception as e:
            self._error = e
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            if self._release is not None:
                try:
                    self._release()
                except Exception:
                    log.warning("releasing %s failed", self.name, exc_info=True)

    def read(self) -> Frame | None:
        self._pacer.wait()  # before taking the frame, so a paced read still gets the freshest one
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._newest is not None or self._ended or self._closed,
                timeout=self.stall_timeout_s,
            ):
                raise SourceError(
                    f"no frame from {self.name} for {self.stall_timeout_s:g} s: check the camera "
                    "or stream is still up"
                )
            if self._closed:
                return None
            frame, self._newest = self._newest, None
            if frame is None:
                if self._error is not None:
                    raise SourceError(f"{self.name} failed: {self._error}") from self._error
                if self._captured == 0:
                    raise SourceError(
                        f"{self.name} opened but gave no frame: check it is not in use elsewhere "
                        "and delivers video"
                    )
                log.warning("%s ended after %d frames", self.name, self._captured)
                return None
        if self._to_rgb is None:
            return frame
        return Frame(frame.index, self._to_rgb(frame.image), frame.captured_at, frame.name)

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)


def _opencv_live(
    cap: cv2.VideoCapture, name: str, what_to_check: str, fps: float | None
) -> LiveSource:
    if not cap.isOpened():
        cap.release()
        raise SourceUnavailable(f"cannot open {name}: {what_to_check}")

    def read_raw() -> np.ndarray | None:
        ok, image = cap.read()
        return image if ok else None

    return LiveSource(read_raw, name=name, fps=fps, to_rgb=_bgr_to_rgb, release=cap.release)


@contextlib.contextmanager
def _opencv_quiet() -> Iterator[None]:
    """OpenCV logs its own warnings when a camera is missing ("can't open camera by index"),
    just before our error says the same with what to check: keep only ours."""
    logging_ = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging_ is None:  # an OpenCV build without the logging module
        yield
        return
    before = logging_.getLogLevel()
    logging_.setLogLevel(logging_.LOG_LEVEL_ERROR)
    try:
        yield
    finally:
        logging_.setLogLevel(before)


def _open_camera(device: int | str, fps: float | None) -> LiveSource:
    with _opencv_quiet():
        cap = cv2.VideoCapture(device)
    if cap.isOpened():
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # best effort: fewer stale frames in the driver
    check = (
        "check it is plugged in, not in use by another program, "
        "and listed by `v4l2-ctl --list-devices`"
    )
    return _opencv_live(cap, f"camera {device}", check, fps)


def _open_stream(url: str, fps: float | None) -> LiveSource:
    timeouts = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        STREAM_TIMEOUT_MS,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        STREAM_TIMEOUT_MS,
    ]
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, timeouts)
    check = "check the address, credentials and that the stream plays in `ffplay`"
    return _opencv_live(cap, f"stream {url}", check, fps)


_NUMPY_ABI = ("numpy.dtype size changed", "compiled using NumPy 1.x", "numpy.core.multiarray")


def _system_numpy() -> str | None:
    """The numpy Raspberry Pi OS installed (python3-numpy), whatever this venv has."""
    import importlib.metadata

    for dist in importlib.metadata.distributions(path=["/usr/lib/python3/dist-packages"]):
        if (dist.metadata["Name"] or "").lower() == "numpy":
            return dist.version
    return None


def picamera2_import_problem(exc: BaseException) -> str:
    """Why Raspberry Pi OS's picamera2 would not load, and the fix. Its commonest cause: a
    numpy 2 from pip, in a venv made with --system-site-packages, shadows the system's
    numpy 1.24 that python3-picamera2, simplejpeg and python3-av are built against
    (picamera2 issues #1088, #1211)."""
    text = f"{type(exc).__name__}: {exc}"
    if any(mark in text for mark in _NUMPY_ABI):
        system = _system_numpy() or "1.24.2"
        return (
            f"picamera2 cannot load ({text}): this environment's numpy {np.__version__}"
            f" is not the numpy {system} Raspberry Pi OS built python3-picamera2 against."
            " Re-run deploy/pi/install.sh (it keeps the system's numpy), or"
            f" `{sys.executable} -m pip install 'numpy=={system}'`"
        )
    return (
        f"picamera2 is installed but cannot load ({text}); `sudo apt install --reinstall"
        " python3-picamera2` and check `python3 -c 'import picamera2'` outside the venv"
    )


def _open_picamera2(size: tuple[int, int], fps: float | None) -> LiveSource:
    try:
        from picamera2 import Picamera2  # only on a Pi, from Raspberry Pi OS's own package
    except ModuleNotFoundError as e:
        if e.name not in ("picamera2", None):  # picamera2 is there, one of its parts is not
            raise SourceError(picamera2_import_problem(e)) from e
        raise SourceError(
            "picamera2 is not installed: run `sudo apt install python3-picamera2` and make the "
            "virtualenv with `python3 -m venv --system-site-packages` so it can see the package"
        ) from e
    except (ImportError, ValueError, AttributeError) as e:  # it is there but cannot load
        raise SourceError(picamera2_import_problem(e)) from e
    name = f"Pi camera {size[0]}x{size[1]}"
    try:
        camera = Picamera2()
        # libcamera names formats by their little-endian word layout: "RGB888" lands in memory as
        # B, G, R per pixel (picamera2 issues #191, #848), i.e. OpenCV's BGR.
        camera.configure(
            camera.create_preview_configuration(main={"format": "RGB888", "size": size})
        )
        camera.start()
    except Exception as e:
        raise SourceUnavailable(
            f"cannot start the {name}: {e}; check the ribbon cable and "
            "`rpicam-hello --list-cameras`"
        ) from e

    def release() -> None:
        camera.stop()
        camera.close()

    return LiveSource(
        lambda: camera.capture_array("main"),
        name=name,
        fps=fps,
        to_rgb=_bgr_to_rgb,
        release=release,
    )


def open_source(spec: str, *, fps: float | None = None) -> FrameSource:
    """Open ``spec``: a camera index, ``picamera2[:WxH]``, a URL, a video file or a folder."""
    _Pacer(fps)  # a bad fps fails here, before any device is opened
    spec = spec.strip()
    if not spec:
        raise SourceError("no source given: pass a camera index, URL, video file or image folder")
    if spec.isdigit():
        return _open_camera(int(spec), fps)
    if spec == "picamera2" or spec.startswith("picamera2:"):
        size = PICAMERA2_SIZE
        if spec != "picamera2":
            m = re.fullmatch(r"picamera2:(\d+)x(\d+)", spec)
            if m is None or 0 in (w := int(m[1]), h := int(m[2])):
                raise SourceError(f"bad source {spec!r}: write picamera2 or picamera2:WIDTHxHEIGHT")
            size = (w, h)
        return _open_picamera2(size, fps)
    if re.match(r"(rtsps?|https?|rtmp|udp|tcp)://", spec, re.IGNORECASE):
        return _open_stream(spec, fps)
    path = Path(spec).expanduser()
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SourceError(
            f"no such file or folder: {spec} (a source is a camera index, picamera2, an "
            "rtsp:// or http:// URL, a video file or a folder of images)"
        ) from None
    except OSError as e:
        raise SourceError(f"cannot open {spec}: {e.strerror or e}") from e
    if stat.S_ISCHR(mode):  # /dev/video0
        return _open_camera(str(path), fps)
    if stat.S_ISDIR(mode):
        return ImageFolderSource(path, fps=fps)
    return VideoFileSource(path, fps=fps)

"""A camera frame as a JPEG on the wire: what a frame offload sends instead of an activation.

At 224 px the shallow splits' activations are several times the size of the frame's JPEG
(block 3: 75,264 values against some 10 KB), so sending the frame itself can be the cheaper
offload (docs/testbed.md). The node encodes the frame at the model's input size (the network
sees no more pixels than that); the worker decodes it and preprocesses it exactly as the node
would have (:class:`shared.preprocess.FramePreprocessor`).

:func:`jpeg_dimensions` reads the size a JPEG declares from its header without decoding it,
so a worker refuses a small file that would decode to a huge image before it allocates
anything. OpenCV is imported on first use: a worker that never sees a frame never loads it.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DEFAULT_QUALITY",
    "MAX_FRAME_SIDE",
    "JpegError",
    "decode_frame",
    "encode_frame",
    "jpeg_dimensions",
]

DEFAULT_QUALITY = 90
"""JPEG quality a node sends frames at (OpenCV's default is 95; 90 halves nothing the model
needs and saves about a third of the bytes)."""

MAX_FRAME_SIDE = 2048
"""Largest width or height a worker decodes: a 1080p frame fits; a hostile message declaring
the most costs the worker some 12 MB and a tenth of a second, not a gigabyte (nodes send the
model's input size)."""

_SOI = b"\xff\xd8"
# Start-of-frame markers (baseline, extended, progressive, lossless, hierarchical,
# arithmetic-coded): all carry precision, height, width and the component count.
_SOF = frozenset({*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)})
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RSTn have no length field
_SOS = 0xDA


class JpegError(ValueError):
    """Bytes that are not a JPEG this project decodes."""


def jpeg_dimensions(data: bytes) -> tuple[int, int, int]:
    """(height, width, components) from a JPEG's start-of-frame header, without decoding."""
    if not data.startswith(_SOI):
        raise JpegError("not a JPEG (it does not start with the FF D8 marker)")
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise JpegError(f"not a JPEG (no marker at byte {i})")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            raise JpegError(f"JPEG segment at byte {i} has an impossible length {length}")
        if marker in _SOF:
            if length < 8 or i + 10 > n:
                raise JpegError("JPEG start-of-frame header is cut short")
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            return height, width, data[i + 9]
        if marker == _SOS:
            break
        i += 2 + length
    raise JpegError("JPEG has no start-of-frame header before its image data")


def encode_frame(image: np.ndarray, quality: int = DEFAULT_QUALITY) -> bytes:
    """JPEG bytes of an RGB uint8 frame (H, W, 3)."""
    import cv2

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"frame should be HxWx3 uint8, got {image.shape} {image.dtype}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality should be 1..100, got {quality!r}")
    ok, buf = cv2.imencode(
        ".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    )
    if not ok:
        raise ValueError("OpenCV could not encode the frame as a JPEG")
    return buf.tobytes()


def decode_frame(data: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """The RGB uint8 frame of JPEG ``data`` that declares ``shape`` (H, W, 3); JpegError when
    it does not decode to exactly that."""
    import cv2

    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # the pixels as the node sent them
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error as exc:
        raise JpegError(f"the JPEG does not decode ({exc})") from None
    if image is None:
        raise JpegError("the JPEG does not decode (corrupt or truncated image data)")
    if image.shape != tuple(shape):
        raise JpegError(f"the JPEG decodes to {list(image.shape)}, not the declared {list(shape)}")
    return np.ascontiguousarray(image[:, :, ::-1])

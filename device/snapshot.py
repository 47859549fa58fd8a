"""A snapshot as a person opens it: the frame at a chosen size, optionally labelled, as a JPEG.

The JPEG itself is :func:`shared.jpeg.encode_frame`, the encoder of frame offloads: one encoder
in the project. What is here is only what a person needs and a model does not: a size people
can see (a 64 px camera frame is enlarged, a 1080p one shrunk, so a Pi keeps only small copies
of the frames it may show) and the label and confidence drawn on it.
"""

from __future__ import annotations

import numpy as np

from shared.jpeg import encode_frame

__all__ = ["annotate", "fit", "keepable", "snapshot_jpeg"]


def fit(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` (H, W, 3) uint8 scaled so its longest side is ``size`` pixels: by area when
    shrinking, to blocks (no blur) when enlarging. A new array, so the caller may keep it."""
    import cv2

    h, w = image.shape[:2]
    scale = size / max(h, w)
    if scale == 1:
        return image.copy()
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    how = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
    return cv2.resize(image, new, interpolation=how)


def keepable(image: np.ndarray, size: int) -> np.ndarray:
    """What to keep of a frame that may become a ``size`` snapshot: the frame itself when it is
    at most twice that, else a copy at twice that by nearest neighbour (a tenth of a
    millisecond for 1080p, where a proper area filter costs several on every frame); the
    snapshot's own :func:`fit` then filters it properly, on the few frames that are sent."""
    import cv2

    h, w = image.shape[:2]
    scale = 2 * size / max(h, w)
    if scale >= 1:
        return image
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, new, interpolation=cv2.INTER_NEAREST)


def annotate(image: np.ndarray, text: str) -> np.ndarray:
    """A copy of ``image`` with ``text`` in a band along its top, legible at any size."""
    import cv2

    out = image.copy()
    h, w = out.shape[:2]
    scale = max(w, h) / 640
    thickness = max(1, round(2 * scale))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, round(6 * scale))
    cv2.rectangle(out, (0, 0), (min(w, tw + 2 * pad), th + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(
        out,
        text,
        (pad, pad + th),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        thickness,
        cv2.LINE_AA,
    )
    return out


def snapshot_jpeg(image: np.ndarray, quality: int, label: str | None = None) -> bytes:
    """The snapshot's JPEG of an already :func:`fit` frame, ``label`` drawn on when given."""
    return encode_frame(annotate(image, label) if label else image, quality)

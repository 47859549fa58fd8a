"""From logits to what the policy and the result need: a class and a confidence per exit.

The node and the worker must compute confidence the same way, or the node's reward would
compare an exit's confidence with a differently scaled C_L: both call :func:`confidence`, with
the per-exit temperatures stored in the checkpoint. The softmax is taken in float64 so a
confidence reaches exactly 1.0 only for logits hundreds apart, which keeps ``alpha = 1``
meaning "never exit early". numpy only: a node on an exported artefact has no torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["confidence"]


def confidence(logits: Any, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(max softmax probability, arg max) per row of ``logits`` (N, classes): a NumPy array
    (what ONNX Runtime returns) or anything ``np.asarray`` takes, a CPU tensor included."""
    if hasattr(logits, "detach"):  # a tensor that may carry autograd: numpy cannot view it
        logits = logits.detach().cpu().numpy()
    z = np.asarray(logits, dtype=np.float64) / temperature
    cls = z.argmax(axis=-1)
    # The largest probability is exp(0) over the sum of exp(z - max): the same value as the
    # softmax's largest entry, without dividing every class.
    conf = 1.0 / np.exp(z - np.take_along_axis(z, cls[..., None], axis=-1)).sum(axis=-1)
    return conf, cls

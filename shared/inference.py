"""From logits to what the policy and the result need: a class and a confidence per exit.

The node and the worker must compute confidence the same way, or the node's reward would
compare an exit's confidence with a differently scaled C_L: both call :func:`confidence`, with
the per-exit temperatures stored in the checkpoint. The softmax is taken in float64 so a
confidence reaches exactly 1.0 only for logits hundreds apart, which keeps ``alpha = 1``
meaning "never exit early".
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["confidence"]


def confidence(
    logits: Tensor | np.ndarray, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """(max softmax probability, arg max) per row of ``logits`` (N, classes): a tensor, or
    the NumPy array another runtime returned."""
    logits = torch.as_tensor(logits)
    probs = torch.softmax(logits.detach().to(torch.float64) / temperature, dim=-1)
    conf, cls = probs.max(dim=-1)
    return conf.cpu().numpy(), cls.cpu().numpy()

"""Long checks, excluded from the default run: ``make test-slow``."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from shared.checkpoint import load_checkpoint
from shared.lab.cli import main

pytestmark = pytest.mark.slow


def test_digits_training_reaches_90_percent_within_5_minutes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "digits.pt"
    t0 = time.perf_counter()
    args = ["train", "--dataset", "digits", "--input-size", "32", "--epochs", "30"]
    assert main([*args, "--seed", "0", "--no-progress", "--out", str(out)]) == 0
    elapsed = time.perf_counter() - t0
    text = capsys.readouterr().out
    final = re.search(r"^\| final +\| ([\d.]+) ", text, re.M)
    assert final is not None and float(final.group(1)) >= 90.0, text
    assert elapsed < 300, f"took {elapsed:.0f} s"
    assert load_checkpoint(out).meta.num_classes == 10

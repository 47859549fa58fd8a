"""End to end without torch: node and worker processes on the artefact, torch unimportable.

A Pi installs the [device] extra only; these runs prove that it is enough. Every frame gets one
result, and the labels are the ones the PyTorch checkpoint's pipeline gives on the same frames,
whichever side runs the artefact and whichever the checkpoint.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shared.checkpoint import load_checkpoint
from shared.lab.clips import whole_model_predictions, write_digit_clip
from shared.lab.procs import device_command

from .pipeline_helpers import ResultReader, WorkerPool, run_device_cli

N_FRAMES = 40

# What a Pi lacks: torch and everything only training needs.
NO_TORCH = (
    "import runpy, sys\n"
    "for name in ('torch', 'torchvision', 'onnx', 'shared.lab', 'sklearn', 'skimage'):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = [{module!r}, *{args!r}]\n"
    "runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n"
)


def _torchless(module: str, args: list[str]) -> list[str]:
    return [sys.executable, "-c", NO_TORCH.format(module=module, args=args)]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_digit_clip(tmp_path_factory.mktemp("clip") / "digits.avi", N_FRAMES)


@pytest.fixture(scope="module")
def whole(tiny_checkpoint, clip) -> np.ndarray:
    return whole_model_predictions(load_checkpoint(tiny_checkpoint), clip.frames)


def _node(broker, model: Path, clip, device_id: str, *extra: str, torchless: bool):
    if torchless:
        cmd = device_command(broker.url, model, clip.path, device_id, *extra)
        proc = subprocess.Popen(
            _torchless("device", cmd[3:]), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    else:
        proc = run_device_cli(broker.url, model, clip.path, device_id, *extra)
    _out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]


def _labels(reader: ResultReader, device_id: str) -> list[int]:
    mine = [r for r in reader.collect(N_FRAMES) if r["device_id"] == device_id]
    assert sorted(r["frame_id"] for r in mine) == list(range(N_FRAMES)), device_id
    return [r["label"] for r in sorted(mine, key=lambda r: r["frame_id"])]


def test_node_and_worker_without_torch_give_the_checkpoints_labels(
    broker, tiny_checkpoint, tiny_artefact, clip, whole
) -> None:
    worker = subprocess.Popen(
        _torchless(
            "cloud_worker",
            ["--broker", broker.url, "--model", str(tiny_artefact), "--threads", "1"],
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    labels: dict[str, list[int]] = {}
    try:
        for device_id, model, policy, torchless in [
            ("a-off", tiny_artefact, "offload-all", True),  # both without torch
            ("p-off", tiny_checkpoint, "offload-all", False),  # node on .pt, worker artefact
            ("a-final", tiny_artefact, "final", True),  # the node's own whole network
        ]:
            reader = ResultReader(broker.url, f"isplitee/{device_id}/result")
            _node(broker, model, clip, device_id, "--policy", policy, torchless=torchless)
            labels[device_id] = _labels(reader, device_id)
            reader.close()
    finally:
        worker.terminate()
        _out, err = worker.communicate(timeout=30)
    assert "Traceback" not in err, err[-3000:]
    pool = WorkerPool(broker.url, [tiny_checkpoint])  # worker on .pt, node on the artefact
    pool.start("w-pt")
    try:
        reader = ResultReader(broker.url, "isplitee/a-pt/result")
        _node(broker, tiny_artefact, clip, "a-pt", "--policy", "offload-all", torchless=True)
        labels["a-pt"] = _labels(reader, "a-pt")
        reader.close()
    finally:
        pool.close()
    for device_id, got in labels.items():
        assert got == whole.tolist(), device_id


def test_a_checkpoint_without_torch_is_one_line_naming_the_fix(tiny_checkpoint, broker) -> None:
    out = subprocess.run(
        _torchless("device", ["--broker", broker.url, "--model", str(tiny_checkpoint)]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "needs torch" in lines[0] and "isplitee export" in lines[0]

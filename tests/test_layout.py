"""What a Pi installs: the [device] extra only, and no torch. The node and the worker must not
need the offline tool, and on an exported artefact they must not import torch at all."""

from __future__ import annotations

import subprocess
import sys

# None in sys.modules is how Python spells "not installed" to both `import` and find_spec.
BLOCK = (
    "import sys\n"
    "for name in ('shared.lab', 'sklearn', 'skimage', 'matplotlib', 'tqdm'):\n"
    "    sys.modules[name] = None\n"
)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], capture_output=True, text=True)


def test_node_and_worker_import_nothing_from_the_offline_tool() -> None:
    out = _python(
        "import cloud_worker.cli, cloud_worker.service, device.app, device.cli, device.node\n"
        "print('ok')\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_blocker_itself_bites() -> None:
    """The check above would pass vacuously if blocking did nothing: prove it blocks."""
    out = _python("import shared.lab.simulate\n")
    assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr


def test_on_an_artefact_node_and_worker_import_nothing_of_torch(tiny_artefact, tmp_path) -> None:
    """Not blocked here, only watched: whatever the node and the worker do to start on an
    artefact (read the config as the CLI does, with threads; load the model, open every graph,
    time the splits, run the halves and preprocess a frame), torch and torchvision never enter
    ``sys.modules``, though they are installed here."""
    out = _python(
        "import numpy as np\n"
        "from cloud_worker.engine import ModelBank\n"
        "from device.app import DeviceApp\n"
        "from device.config import DeviceConfig\n"
        "from shared.entrypoint import load_program_config\n"
        f"cfg = load_program_config(DeviceConfig, None, dict(model={str(tiny_artefact)!r},\n"
        f"    cache_dir={str(tmp_path)!r}, cost='measured', threads=1), check=False)\n"
        "app = DeviceApp(cfg)\n"
        "x = app.node.preprocess(np.zeros((48, 64, 3), np.uint8))\n"
        "bank = ModelBank([cfg.model], threads=1)\n"
        "for b in app.ckpt.meta.exit_blocks:\n"
        "    act, _ = app.edge(x, b)\n"
        "    bank.run(app.ckpt.hash, b, [act])\n"
        "print(app.edge.name, bank.halves[app.ckpt.hash].name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["onnxruntime onnxruntime", "[]"], out.stdout

"""A Pi installs the [device] extra only: node and worker must not need the offline tool."""

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

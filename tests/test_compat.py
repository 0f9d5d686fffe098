"""The package must stay importable on Python 3.8 (JetPack 5 on Jetson Xavier)."""
import pathlib
import shutil
import subprocess

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "edge_stad"


def test_package_needs_at_most_python_38():
    vermin = shutil.which("vermin")
    if vermin is None:
        pytest.skip("vermin is not installed (pip install -e .[dev])")
    result = subprocess.run([vermin, "-t=3.8-", "--no-tips", "--violations", "--backport", "argparse", str(PACKAGE)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

"""Folder-level atomic writes: a killed build's staging folder is removed by the next build of the target,
a running build's is not."""
import os
import subprocess
import sys
import textwrap

import pytest

from edge_stad.data.staging import remove_stale, staged_dir

pytest.importorskip("fcntl")

HOLD = textwrap.dedent("""
    import os, signal, sys, time
    from edge_stad.data.staging import staged_dir
    with staged_dir(sys.argv[1]) as folder:
        open(os.path.join(folder, "part.onnx"), "w").write("half a build")
        print(folder, flush=True)
        if sys.argv[2] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)   # no finally, no cleanup: what a killed build leaves
        time.sleep(60)
""")


def hold(out, how):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(out), how], stdout=subprocess.PIPE, text=True,
                               env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    folder = process.stdout.readline().strip()
    assert os.path.isdir(folder) and os.path.basename(folder).startswith(".eng.tmp-")
    return process, folder


def test_the_next_build_removes_a_killed_builds_staging_folder_only(tmp_path):
    out = tmp_path / "eng"
    killed, stale = hold(out, "kill")
    killed.wait(timeout=60)
    running, live = hold(out, "sleep")
    try:
        other = tmp_path / ".engine.tmp-0123"   # another target's: not ours to touch
        other.mkdir()
        with staged_dir(out) as folder:
            open(os.path.join(folder, "manifest.json"), "w").write("{}")
        assert os.listdir(out) == ["manifest.json"]
        assert not os.path.exists(stale) and os.path.isdir(live) and other.is_dir()
    finally:
        running.kill()
        running.wait(timeout=60)
    assert remove_stale(str(out)) == [live]   # its build is gone now
    assert sorted(os.listdir(tmp_path)) == [".engine.tmp-0123", "eng"]

"""GStreamer pipelines as sources: a real videotestsrc pipeline through an OpenCV built with GStreamer
(Debian's python3-opencv, run by the system Python where the venv's pip OpenCV lacks it), and the
errors that say why a pipeline cannot run."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from edge_stad.errors import SourceError
from edge_stad.runtime.sources import open_source, opencv_has_gstreamer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIPELINE = ("videotestsrc num-buffers=12 pattern=red ! video/x-raw,width=96,height=72,framerate=25/1 ! "
            "videoconvert ! video/x-raw,format=BGR ! appsink")
PROBE = ("import json, sys\n"
         "sys.path.insert(0, sys.argv[1])\n"
         "import numpy as np\n"
         "from edge_stad.runtime.sources import open_source, opencv_has_gstreamer\n"
         "assert opencv_has_gstreamer()\n"
         "with open_source(sys.argv[2], reconnect_attempts=0) as source:\n"
         "    frames = list(source)\n"
         "print(json.dumps({'kind': source.kind, 'live': source.live, 'count': len(frames),\n"
         "                  'shapes': sorted({f.shape for f, _ in frames}), 'dtype': str(frames[0][0].dtype),\n"
         "                  'bgr': frames[0][0][36, 48].tolist(), 'times': [t for _, t in frames]}))\n")


def gstreamer_python():
    """A Python whose OpenCV has GStreamer: this one, or the system's (Debian's python3-opencv); else None."""
    if opencv_has_gstreamer():
        return sys.executable
    system = shutil.which("python3", path="/usr/bin:/bin")
    if system and subprocess.run([system, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                                  "from edge_stad.runtime.sources import opencv_has_gstreamer as g; "
                                  "sys.exit(0 if g() else 1)", ROOT], capture_output=True).returncode == 0:
        return system
    return None


def test_a_videotestsrc_pipeline_through_opencvs_gstreamer():
    python = gstreamer_python()
    if python is None:
        pytest.skip("no OpenCV with GStreamer here (pip's opencv wheels lack it): apt-get install python3-opencv "
                    "gstreamer1.0-plugins-base")
    out = subprocess.run([python, "-c", PROBE, ROOT, PIPELINE], capture_output=True, text=True, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert (got["kind"], got["live"], got["count"], got["dtype"]) == ("pipeline", True, 12, "uint8")
    assert got["shapes"] == [[72, 96, 3]] and got["bgr"] == [0, 0, 255]   # red, in BGR order
    assert got["times"][0] == 0 and all(b > a for a, b in zip(got["times"], got["times"][1:]))


def test_opencv_without_gstreamer_says_so():
    if opencv_has_gstreamer():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(SourceError, match="built without GStreamer.*python3-opencv"):
        open_source(PIPELINE)


def test_a_pipeline_must_end_in_appsink_and_keeps_passwords_out_of_messages():
    with pytest.raises(SourceError, match=r"must end in appsink") as error:
        open_source("rtspsrc location=rtsp://admin:hunter2@cam.local/live ! decodebin ! autovideosink")
    assert "hunter2" not in str(error.value) and "rtsp://***@cam.local/live" in str(error.value)

"""ActionEvents: a Runtime's tubes as schema-checked events, and event clips, on a tiny engine and real video files."""
import hashlib
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("torch")
jsonschema = pytest.importorskip("jsonschema")

from media import video  # noqa: E402

from edge_stad import Runtime  # noqa: E402
from edge_stad.errors import ConfigError  # noqa: E402
from edge_stad.runtime.sinks import ActionEvents, engine_identity  # noqa: E402
from edge_stad.runtime.sinks.events import check_camera_name  # noqa: E402

K, N = 3, 5
SCHEMA = json.load(open(os.path.join(os.path.dirname(__file__), "..", "docs", "events_schema.json")))
FPS = 25.0


@pytest.fixture(scope="module")
def engine(tiny_engine):
    return tiny_engine(("walk", "fall down", "wave", "sit"))   # K = 3


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    from mosquitto import session_broker

    yield from session_broker(tmp_path_factory)


def barcoded(frames):
    """``frames`` with their 1-based index as 8 black/white 12x12 blocks along the bottom (survives mp4v)."""
    out = []
    for i, frame in enumerate(frames, start=1):
        frame = frame.copy()
        for bit in range(8):
            frame[-12:, 12 * bit:12 * bit + 12] = 255 if i >> bit & 1 else 0
        out.append(frame)
    return out


def frame_index(frame):
    return sum(1 << bit for bit in range(8) if frame[-6, 12 * bit + 6].mean() > 128)


def stream(events, frames, flush=True):
    for i, frame in enumerate(frames):
        events.push(frame, i / FPS)
    if flush:
        events.flush()


def check_story(messages):
    """Every event matches the schema; seq counts from 0; per tube: started, updated..., then one end."""
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    for message in messages:
        validator.validate(json.loads(json.dumps(message)))
    assert [m["seq"] for m in messages] == list(range(len(messages)))
    story = {}
    for m in messages:
        story.setdefault(m["tube_id"], []).append(m["type"])
    for kinds in story.values():
        if kinds[0] == "started":
            assert kinds[-1] in ("ended", "discarded") and set(kinds[1:-1]) <= {"updated"}
        else:   # kept, never reported at the threshold before it ended
            assert kinds == ["ended"]
    return story


@pytest.mark.parametrize("min_score", [0.0, 0.3])
def test_events_follow_the_tubes_the_runtime_reports(engine, min_score):
    runtime = Runtime(engine, min_tube_score=min_score)
    messages = []
    frames = video(60, seed=2)
    stream(ActionEvents(runtime, "cam", [messages.append], update_interval=0.4, engine=engine), frames)
    story = check_story(messages)
    kept = {t.tube_id: t for _, t in runtime.tubes() if t.score >= min_score}
    ended = {m["tube_id"]: m for m in messages if m["type"] == "ended"}
    assert kept and sorted(ended) == sorted(kept)   # exactly one ended per kept tube, no other
    for tube_id, tube in kept.items():
        m = ended[tube_id]
        assert m["score"] == round(tube.score, 4) and m["label"] == tube.label and m["clip"] is None
        assert m["last_frame"] == tube.boxes[-1, 0] and m["first_frame"] >= tube.boxes[0, 0]
        np.testing.assert_allclose(m["box"], tube.boxes[-1, 1:5], atol=0.051)
        assert m["last_timestamp"] == pytest.approx((m["last_frame"] - 1) / FPS)
        assert m["first_timestamp"] == pytest.approx((m["first_frame"] - 1) / FPS)
        assert m["label_name"] == runtime.labels[tube.label]
    assert any(kinds[0] == "started" and kinds[-1] == "ended" for kinds in story.values())
    assert all(m["score"] >= min_score for m in messages if m["type"] in ("started", "ended"))
    assert messages[0]["engine"] == {"name": "engine", "sha256": engine_identity(engine)["sha256"]}
    updates = {}
    for m in messages:
        if m["type"] in ("started", "updated"):
            updates.setdefault(m["tube_id"], []).append(m["last_timestamp"])
    assert any(len(t) > 1 for t in updates.values())
    for times in updates.values():   # throttled: 0.4 s of stream time (10 frames) apart at least
        assert all(b - a >= 0.4 - 1e-9 for a, b in zip(times, times[1:]))


def test_pipelined_runtime_makes_the_same_tube_events(engine):
    """Results and tube events come later, and batched differently at the flush: the same tubes start and end."""
    def events(pipeline):
        messages = []
        stream(ActionEvents(Runtime(engine, pipeline=pipeline), "cam", [messages.append]), video(50, seed=5))
        ends = sorted((m["tube_id"], m["type"], m["first_frame"], m["last_frame"], m["score"], m["box"])
                      for m in messages if m["type"] in ("ended", "discarded"))
        return {m["tube_id"] for m in messages if m["type"] == "started"}, ends

    assert events(0) == events(2)


def test_started_needs_two_tubelets_and_discarded_closes_every_started_tube(engine):
    runtime = Runtime(engine, min_tube_score=0.0)
    messages = []
    frames = video(40, seed=3)
    stream(ActionEvents(runtime, "cam", [messages.append], update_interval=None), frames)
    assert runtime.events() == []   # drained by ActionEvents
    reference = Runtime(engine, min_tube_score=0.0)   # the same stream's linker events
    for frame in frames:
        reference.push(frame)
    reference.flush()
    linker = [e for _, e in reference.events()]
    grew = {e.tube_id for e in linker if e.kind == "grew"}
    started = [m["tube_id"] for m in messages if m["type"] == "started"]
    assert len(set(started)) == len(started) and set(started) <= grew
    assert len({e.tube_id for e in linker if e.kind == "started"}) > 2 * len(started)   # most never grow
    assert not [m for m in messages if m["type"] == "updated"]
    ended_or_discarded = [m["tube_id"] for m in messages if m["type"] in ("ended", "discarded")]
    assert sorted(ended_or_discarded) == sorted(started)


def clip_frames(path):
    capture = cv2.VideoCapture(path)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame_index(frame))
    capture.release()
    return count, frames


def test_clips_hold_the_tube_with_pre_and_post_roll(engine, tmp_path):
    runtime = Runtime(engine, min_tube_score=0.0)
    messages = []
    frames = barcoded(video(70, seed=4))
    pre, post = 6, 3    # frames: 0.24 s and 0.12 s at 25 frames/s
    events = ActionEvents(runtime, "door", [messages.append], clips=tmp_path / "clips", fps=FPS,
                          pre_roll=pre / FPS, post_roll=post / FPS, max_open_clips=100)
    stream(events, frames)
    check_story(messages)
    ended = [m for m in messages if m["type"] == "ended"]
    kept = {t.tube_id: t for _, t in runtime.tubes()}
    assert sorted(m["tube_id"] for m in ended) == sorted(kept)
    assert sorted(os.listdir(tmp_path / "clips")) == sorted(os.path.basename(m["clip"]) for m in ended)
    for m in ended:
        assert m["clip"].startswith(str(tmp_path / "clips" / "door-")) and m["clip"].endswith(
            f"-tube{m['tube_id']:06d}-{m['label_name'].replace(' ', '_')}.mp4")
        count, indexes = clip_frames(m["clip"])
        first, last = max(1, m["first_frame"] - pre), min(len(frames), m["last_frame"] + post)
        assert indexes == list(range(first, last + 1)), m   # pre-roll, the tube, post-roll; every frame once
        assert count == last - first + 1
    assert any(m["first_frame"] > pre and m["last_frame"] + post <= len(frames) for m in ended)
    assert events.stats()["clips_written"] == len(ended) and events.stats()["clips_missing"] == 0


def test_annotated_clips_and_too_many_at_once(engine, tmp_path):
    runtime = Runtime(engine, min_tube_score=0.0)
    messages = []
    events = ActionEvents(runtime, "cam", [messages.append], clips=tmp_path, fps=FPS, pre_roll=0.1,
                          post_roll=0.1, annotate_clips=True, max_open_clips=1)
    plain = video(40, seed=6)
    stream(events, plain)
    ended = [m for m in messages if m["type"] == "ended"]
    with_clip = [m for m in ended if m["clip"]]
    assert with_clip and len(with_clip) < len(ended)   # one at a time: the others got none, counted
    assert events.stats()["clips_missing"] == len(ended) - len(with_clip)
    assert len(os.listdir(tmp_path)) == len(with_clip)
    capture = cv2.VideoCapture(with_clip[0]["clip"])
    ok, image = capture.read()
    first = max(1, with_clip[0]["first_frame"] - 2)
    assert ok and np.abs(image.astype(int) - plain[first - 1]).max() > 100   # boxes drawn in


def test_clip_memory_stays_bounded(engine, tmp_path):
    runtime = Runtime(engine, min_tube_score=0.0)
    events = ActionEvents(runtime, "cam", [], clips=tmp_path, fps=FPS, pre_roll=0.2, post_roll=0.2,
                          max_open_clips=4)
    latency = runtime.latency_frames[1]
    bound = (latency + 1) + (5 + K * N + 1) + 4 * K * N   # waiting results, the ring, a gap per open clip
    buffered = []
    for i, frame in enumerate(video(200, seed=7) * 2):
        events.push(frame, i / FPS)
        buffered.append(events.stats()["frames_buffered"])
    events.flush()
    assert max(buffered) <= bound
    assert events.stats()["frames_buffered"] == 0


def test_frames_are_copied_so_the_caller_may_reuse_its_buffer(engine, tmp_path):
    runtime = Runtime(engine, min_tube_score=0.0)
    messages = []
    events = ActionEvents(runtime, "cam", [messages.append], clips=tmp_path, fps=FPS, pre_roll=0, post_roll=0)
    buffer = np.zeros((72, 96, 3), np.uint8)
    for i, frame in enumerate(barcoded(video(40, seed=2))):
        buffer[:] = frame
        events.push(buffer, i / FPS)
    events.flush()
    ended = [m for m in messages if m["type"] == "ended" and m["clip"]]
    assert ended
    for m in ended:
        assert clip_frames(m["clip"])[1] == list(range(m["first_frame"], m["last_frame"] + 1))


def test_reset_discards_open_tubes_and_their_clips(engine, tmp_path):
    runtime = Runtime(engine, min_tube_score=0.0)
    messages = []
    events = ActionEvents(runtime, "cam", [messages.append], clips=tmp_path, fps=FPS, pre_roll=0, post_roll=10)
    stream(events, video(30, seed=2), flush=False)
    started = {m["tube_id"] for m in messages if m["type"] == "started"}
    assert started
    events.reset()
    check_story(messages)
    ends = {m["tube_id"]: m for m in messages if m["type"] in ("ended", "discarded")}
    assert set(ends) == started
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(m["clip"]) for m in ends.values() if m["clip"])
    before = len(messages)
    messages.clear()
    stream(events, video(30, seed=2))   # a new stream: seq goes on, new tube ids
    assert messages and messages[0]["seq"] == before
    assert min(m["tube_id"] for m in messages) > max(started)


def test_several_streams_with_push_batch(engine, tmp_path):
    runtime = Runtime(engine, streams=2, min_tube_score=0.0)
    messages = []
    events = ActionEvents(runtime, ["left", "right"], [messages.append], clips=tmp_path, fps=FPS, pre_roll=0.1,
                          post_roll=0.1, max_open_clips=100)
    a, b = video(30, seed=8), video(30, seed=9)
    for i in range(30):
        events.push_batch([a[i], b[i] if i < 25 else None], [i / FPS, i / FPS])
    events.flush()
    for camera in ("left", "right"):
        mine = [m for m in messages if m["camera"] == camera]
        check_story(mine)
        assert [m["clip"] for m in mine if m["type"] == "ended"]
    single = []
    stream(ActionEvents(Runtime(engine, min_tube_score=0.0), "left", [single.append]), a)
    left = [m for m in messages if m["camera"] == "left"]
    assert [(m["type"], m["first_frame"], m["last_frame"], m["box"]) for m in left if m["type"] != "ended"] == \
        [(m["type"], m["first_frame"], m["last_frame"], m["box"]) for m in single if m["type"] != "ended"]


def test_engine_identity_is_the_manifest_sha256(engine, tmp_path):
    digest = hashlib.sha256((engine / "manifest.json").read_bytes()).hexdigest()
    assert engine_identity(engine) == {"name": "engine", "sha256": digest}
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")
    assert engine_identity(checkpoint) == {"name": "model.pt", "sha256": hashlib.sha256(b"weights").hexdigest()}
    assert engine_identity(None) == {"name": None, "sha256": None}


@given(st.text(max_size=12))
def test_camera_names(name):
    if name and "/" not in name and "+" not in name and "#" not in name and name.isprintable():
        assert check_camera_name(name) == name
    else:
        with pytest.raises(ConfigError, match="camera name"):
            check_camera_name(name)


def test_bad_settings(engine, tmp_path):
    runtime = Runtime(engine)
    for kwargs, match in [({"camera": ["a", "b"]}, "one camera name per stream"),
                          ({"camera": "a/b"}, "camera name"),
                          ({"fps": 0}, "fps"),
                          ({"update_interval": -1}, "update_interval"),
                          ({"clips": tmp_path, "pre_roll": -1}, "pre_roll"),
                          ({"clips": tmp_path, "max_open_clips": 0}, "max_open")]:
        with pytest.raises(ConfigError, match=match):
            ActionEvents(runtime, **kwargs)
    with pytest.raises(ConfigError, match="must differ"):
        ActionEvents(Runtime(engine, streams=2), ["a", "a"])


def test_sinks_import_without_torch_or_paho_and_mqtt_says_what_to_install():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['paho'] = None\n"
            "from edge_stad.runtime.sinks import ActionEvents, MqttSink\n"
            "from edge_stad.errors import MissingDependencyError\n"
            "try:\n    MqttSink('mqtt://127.0.0.1:1')\nexcept MissingDependencyError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert 'pip install "edge_stad[mqtt]"' in out


def test_run_command_sends_one_ended_event_and_writes_one_clip_per_tube(engine, broker, tmp_path, capsys):
    """The acceptance run: `edge-stad run video.mp4 --engine ENG --mqtt mqtt://127.0.0.1:PORT --clips out/`."""
    from media import write_video
    from mosquitto import Subscriber

    from edge_stad import cli
    from edge_stad.runtime.sources import open_source

    path = write_video(tmp_path / "hall.mp4", video(60, seed=2), fourcc="mp4v", fps=FPS)
    subscriber = Subscriber(broker.port, "edge_stad/lobby/#")
    out = tmp_path / "out"
    assert cli.main(["run", path, "--engine", str(engine), "--mqtt", broker.url, "--clips", str(out),
                     "--camera", "lobby", "--min-score", "0", "--max-clips", "100", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    got = subscriber.wait_for(lambda m: ("edge_stad/lobby/status", "offline", False) in m)
    subscriber.close()
    messages = [json.loads(p) for t, p, _ in got if t == "edge_stad/lobby/events"]
    check_story(messages)
    runtime = Runtime(engine, min_tube_score=0.0)   # the same file through a Runtime: the tubes it reports
    with open_source(path) as source:
        for frame, timestamp in source:
            runtime.push(frame, timestamp)
    runtime.flush()
    tubes = sorted(t.tube_id for _, t in runtime.tubes())
    ended = [m for m in messages if m["type"] == "ended"]
    assert tubes and sorted(m["tube_id"] for m in ended) == tubes   # exactly one ended event per tube
    assert sorted(os.listdir(out)) == sorted(os.path.basename(m["clip"]) for m in ended)   # and one clip
    assert all(os.path.getsize(m["clip"]) > 0 for m in ended)
    assert messages[0]["engine"] == engine_identity(engine)
    assert f"{len(tubes)} clips in {out}" in printed
    assert f"{len(messages)} events published, 0 dropped, 0 not acknowledged" in printed

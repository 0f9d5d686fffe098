"""Frame sources (video, folder, camera, stream), tube drawing and the atomic video sink, on real files."""
import os

import cv2
import numpy as np
import pytest
from media import faststart, write_video

from edge_stad.errors import FrameError, SourceError
from edge_stad.runtime.drawing import VideoSink, draw_status, draw_tubes, tube_colour
from edge_stad.runtime.sources import natural_key, open_source

W, H, N, FPS = 64, 48, 40, 20.0


def square_frame(i):
    """Grey-blue frame with a white 16x16 square whose left edge is at column i."""
    frame = np.full((H, W, 3), (120, 80, 40), np.uint8)
    frame[10:26, i:i + 16] = 255
    return frame


def square_left(frame):
    """Left edge of the white square, robust to MJPG's small compression errors."""
    return int(np.flatnonzero((frame[18] > 200).all(axis=1))[0])


@pytest.fixture
def avi(tmp_path):
    return write_video(tmp_path / "clip.avi", [square_frame(i) for i in range(N)])


def test_video_file_frames_timestamps_and_content(avi):
    with open_source(avi) as source:
        assert (source.kind, source.live, source.name) == ("video", False, avi)
        assert source.fps == FPS and source.frame_count == N
        frames = list(source)
    assert source.frames_read == N and source.warning is None
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for f, _ in frames)
    np.testing.assert_allclose([t for _, t in frames], np.arange(N) / FPS)
    assert [square_left(f) for f, _ in frames] == list(range(N))  # every frame, in order


def test_truncated_video_keeps_decoded_frames_and_warns(avi, tmp_path):
    data = open(avi, "rb").read()
    cut = str(tmp_path / "cut.avi")
    with open(cut, "wb") as f:
        f.write(data[:len(data) // 2])
    with open_source(cut) as source:
        frames = list(source)  # must not raise
    n = source.frames_read
    assert 0 < n < N and source.frame_count == N
    assert [square_left(f) for f, _ in frames] == list(range(n))
    assert source.warning == (f"{cut}: read {n} of the {N} frames its container declares (truncated or corrupt "
                              f"file, or decoder errors); kept the {n} frames decoded")


def test_truncated_mp4_without_index_cannot_open(tmp_path):
    path = write_video(tmp_path / "clip.mp4", [square_frame(i) for i in range(N)], "mp4v")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])  # mp4v puts its index (moov) at the end: nothing is decodable
    with pytest.raises(SourceError, match="cannot open video"):
        open_source(path)


def test_non_video_file_is_source_error(tmp_path):
    text = tmp_path / "notes.txt"  # FFmpeg would "play" this as rendered ANSI text
    text.write_text("not a video\n" * 50)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(20000))
    for path in (text, garbage):
        with pytest.raises(SourceError, match=rf"cannot open video .*{path.name} \(not a video"):
            open_source(str(path))


def test_video_that_opens_but_decodes_nothing_is_source_error(tmp_path):
    path = tmp_path / "empty.avi"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match="no frame decodes"):
        open_source(str(path), capture_factory=lambda target: FakeCapture([]))


def test_image_folder_natural_order_and_fps(tmp_path):
    for value, name in [(10, "frame10.png"), (2, "frame2.png"), (1, "frame1.png"), (3, "frame3.PNG")]:
        cv2.imwrite(str(tmp_path / "x.png"), np.full((H, W, 3), value, np.uint8))
        os.replace(tmp_path / "x.png", tmp_path / name)
    (tmp_path / "notes.txt").write_text("ignored")
    with open_source(str(tmp_path), folder_fps=10.0) as source:
        assert (source.kind, source.live, source.frame_count, source.fps) == ("folder", False, 4, 10.0)
        frames = list(source)
    assert [int(f[0, 0, 0]) for f, _ in frames] == [1, 2, 3, 10]
    np.testing.assert_allclose([t for _, t in frames], [0.0, 0.1, 0.2, 0.3])
    assert source.frames_read == 4 and source.warning is None
    assert sorted(["b10", "b9", "a100", "B1"], key=natural_key) == ["a100", "B1", "b9", "b10"]


def test_image_folder_grey_and_bgra_come_out_bgr(tmp_path):
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    bgra = np.zeros((H, W, 4), np.uint8)
    bgra[...] = (10, 20, 30, 128)
    cv2.imwrite(str(tmp_path / "1.png"), grey)
    cv2.imwrite(str(tmp_path / "2.png"), bgra)
    (f1, _), (f2, _) = list(open_source(str(tmp_path)))
    assert f1.shape == f2.shape == (H, W, 3) and f1.dtype == f2.dtype == np.uint8
    assert all(np.array_equal(f1[..., c], grey) for c in range(3))
    assert (f2 == (10, 20, 30)).all()


def test_image_folder_skips_and_counts_unreadable_images(tmp_path):
    for i in (1, 2, 4, 6):
        cv2.imwrite(str(tmp_path / f"{i:06d}.jpg"), np.full((H, W, 3), 40 * i, np.uint8))
    (tmp_path / "000003.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    source = open_source(str(tmp_path), folder_fps=10.0)
    frames = []
    for frame, timestamp in source:
        frames.append((frame, timestamp))
        if len(frames) == 3:
            assert source.warning == f"{tmp_path / '000003.jpg'} is not a readable image"
    assert [int(f[0, 0, 0]) for f, _ in frames] == [40, 80, 160, 240]   # the good frames after it too
    np.testing.assert_allclose([t for _, t in frames], [0.0, 0.1, 0.3, 0.4])
    assert source.frames_read == 4 and source.skipped == 1 and source.frame_count == 5
    (tmp_path / "000005.png").write_bytes(b"not a png")
    source = open_source(str(tmp_path))
    assert len(list(source)) == 4 and source.skipped == 2
    assert source.warning == f"skipped 2 unreadable images of 6 (the first {tmp_path / '000003.jpg'})"
    strict = open_source(str(tmp_path), strict=True)
    with pytest.raises(SourceError, match=r"000003\.jpg is not a readable image \(--strict\)"):
        list(strict)
    assert strict.frames_read == 2


def test_truncated_faststart_mp4_plays_what_decodes_and_says_how_much(tmp_path):
    path = write_video(tmp_path / "clip.mp4", [square_frame(i) for i in range(N)], "mp4v")
    data = faststart(open(path, "rb").read())
    cut = str(tmp_path / "cut.mp4")
    with open(cut, "wb") as f:
        f.write(data[:len(data) * 3 // 4])
    with open_source(cut) as source:
        frames = list(source)
    n = source.frames_read
    assert 0 < n < N and source.frame_count == N
    assert [square_left(f) for f, _ in frames[:-1]] == list(range(n - 1))   # the last one is partly concealed
    assert source.warning == (f"{cut}: read {n} of the {N} frames its container declares (truncated or corrupt "
                              f"file, or decoder errors); kept the {n} frames decoded")
    with open_source(cut, strict=True) as source:
        with pytest.raises(SourceError, match=rf"read {n} of the {N} frames its container declares .*\(--strict\)"):
            list(source)


def test_empty_folder_and_unknown_spec_are_source_errors(tmp_path):
    with pytest.raises(SourceError, match="holds no"):
        open_source(str(tmp_path))
    (tmp_path / "readme.txt").write_text("no images")
    with pytest.raises(SourceError, match="holds no"):
        open_source(str(tmp_path))
    missing = str(tmp_path / "nope.mp4")
    with pytest.raises(SourceError, match=r"nope\.mp4.*camera index.*stream URL.*image folder.*video file"):
        open_source(missing)
    with pytest.raises(SourceError, match="3.5"):
        open_source(3.5)


class FakeCapture:
    """cv2.VideoCapture stand-in: hands out ``frames`` then fails, like a camera whose cable is pulled."""

    def __init__(self, frames, opened=True):
        self.frames, self.opened = list(frames), opened

    def isOpened(self):
        return self.opened

    def read(self):
        return (True, self.frames.pop(0)) if self.opened and self.frames else (False, None)

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        self.opened = False


def numbered(values):
    return [np.full((4, 6), v, np.uint8) for v in values]  # grey: the source must convert to BGR


class FakeCamera:
    """Capture factory handing out prepared captures in order; records what it was asked to open."""

    def __init__(self, *captures):
        self.captures, self.targets, self.sleeps = list(captures), [], []

    def __call__(self, target):
        self.targets.append(target)
        return self.captures.pop(0) if self.captures else FakeCapture([], opened=False)


def test_live_source_reconnects_with_doubling_backoff():
    camera = FakeCamera(FakeCapture(numbered(range(5))),
                        FakeCapture([], opened=False), FakeCapture([], opened=False),  # two failed reopens
                        FakeCapture(numbered(range(5, 9))))
    source = open_source("0", reconnect_attempts=5, backoff=0.5, max_backoff=3.0, sleep=camera.sleeps.append,
                         capture_factory=camera)
    assert (source.kind, source.live, source.name, source.fps) == ("camera", True, "camera 0", 30.0)
    frames = list(source)
    assert [int(f[0, 0, 0]) for f, _ in frames] == list(range(9))
    assert all(f.shape == (4, 6, 3) for f, _ in frames)
    times = [t for _, t in frames]
    assert times[0] == 0.0 and times == sorted(times)
    assert source.reconnects == 1 and source.frames_read == 9
    # back after the third reopen; the good frames reset the count, then five more tries, capped at 3 s
    assert camera.sleeps == [0.5, 1.0, 2.0, 0.5, 1.0, 2.0, 3.0, 3.0]
    assert camera.targets == [0] * 9
    assert source.warning == "lost camera 0 after 5 reconnect attempts"


def test_live_source_that_never_comes_back_gives_up():
    # reopens succeed but deliver nothing: that must count as a failed attempt, not reset the count
    camera = FakeCamera(FakeCapture(numbered(range(3))), *[FakeCapture([]) for _ in range(10)])
    url = "rtsp://user:secret@10.0.0.5:554/cam"
    source = open_source(url, reconnect_attempts=3, backoff=0.25, sleep=camera.sleeps.append,
                         capture_factory=camera)
    assert (source.kind, source.name) == ("stream", "rtsp://***@10.0.0.5:554/cam")
    assert len(list(source)) == 3
    assert camera.sleeps == [0.25, 0.5, 1.0] and camera.targets == [url] * 4
    assert source.reconnects == 0
    assert source.warning == "lost rtsp://***@10.0.0.5:554/cam after 3 reconnect attempts"


def test_live_source_that_never_opens_is_source_error():
    camera = FakeCamera(FakeCapture([], opened=False))
    with pytest.raises(SourceError, match="cannot open camera camera 2"):
        open_source(2, sleep=camera.sleeps.append, capture_factory=camera)
    assert camera.sleeps == []


LABELS = ["walk", "run"]


def grey_image(h=120, w=160):
    return np.full((h, w, 3), 100, np.uint8)


def test_draw_tubes_draws_box_border_and_label_only():
    image = grey_image()
    before = image.copy()
    tubes = np.array([[7, 1, 0.83, 40, 50, 100, 90]], np.float32)
    out = draw_tubes(image, tubes, LABELS)
    assert np.array_equal(image, before)  # input untouched
    colour = tube_colour(7)
    for y, x in [(70, 40), (70, 100), (50, 70), (90, 70)]:  # the four sides
        assert tuple(out[y, x]) == colour
    assert np.array_equal(out[52:89, 42:99], before[52:89, 42:99])  # inside the box
    assert np.array_equal(out[95:, :], before[95:, :]) and np.array_equal(out[:, 130:], before[:, 130:])
    label_area = out[35:50, 40:100]
    assert (label_area == colour).all(axis=2).sum() > 50  # filled label box above the top edge


def test_draw_tubes_min_score_clipping_and_stable_colours():
    image = grey_image()
    low = np.array([[3, 0, 0.3, 10, 10, 50, 50]], np.float32)
    assert np.array_equal(draw_tubes(image, low, LABELS, min_score=0.5), image)
    assert not np.array_equal(draw_tubes(image, low, LABELS, min_score=0.3), image)
    assert np.array_equal(draw_tubes(image, np.zeros((0, 7), np.float32), LABELS), image)
    outside = np.array([[3, 0, 0.9, 200, 10, 260, 50]], np.float32)
    assert np.array_equal(draw_tubes(image, outside, LABELS), image)
    # partly outside (and a label index with no name): clipped, drawn on the image's edge
    out = draw_tubes(image, np.array([[3, 9, 0.9, -20, 60, 30, 200]], np.float32), LABELS)
    assert tuple(out[100, 30]) == tuple(out[119, 15]) == tube_colour(3)
    a = draw_tubes(image, np.array([[12, 0, 0.9, 10, 40, 60, 100]], np.float32), LABELS)
    b = draw_tubes(image, np.array([[12, 1, 0.5, 80, 30, 150, 110]], np.float32), LABELS)
    assert tuple(a[70, 10]) == tuple(b[70, 80]) == tube_colour(12) != tube_colour(13)


def test_drawing_scales_with_image_size():
    tubes = np.array([[1, 0, 0.9, 100, 100, 500, 400]], np.float32)
    big = draw_tubes(grey_image(1080, 1920), tubes, LABELS)
    line = (big[250, 90:110] == tube_colour(1)).all(axis=1).sum()
    assert line >= 3  # a 1-pixel line would vanish on a 1080p screen
    image = grey_image()
    assert draw_status(image, "frame 120  612 fps") is image
    assert (image[:8, :40] != 100).any() and (image[60:] == 100).all()


def read_back(path):
    cap = cv2.VideoCapture(path)
    frames = []
    ok, frame = cap.read()
    while ok:
        frames.append(frame)
        ok, frame = cap.read()
    cap.release()
    return frames


@pytest.mark.parametrize("name", ["annotated.mp4", "annotated.avi"])
def test_video_sink_writes_readable_video(tmp_path, name):
    path = str(tmp_path / name)
    with VideoSink(path, fps=FPS) as sink:
        for i in range(12):
            sink.write(square_frame(i))
        sink.write(cv2.resize(square_frame(12), (W // 2, H // 2)))  # resized to the first frame's size
        assert os.listdir(tmp_path) == [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    assert sink.frames_written == 13 and sink.fourcc == ("MJPG" if name.endswith(".avi") else "mp4v")
    assert os.listdir(tmp_path) == [name]
    frames = read_back(path)
    assert len(frames) == 13 and all(f.shape == (H, W, 3) for f in frames)
    assert [square_left(f) for f in frames[:12]] == list(range(12))


def test_video_sink_failure_leaves_nothing(tmp_path):
    path = tmp_path / "annotated.mp4"
    with pytest.raises(RuntimeError, match="boom"):
        with VideoSink(path, fps=FPS) as sink:
            sink.write(square_frame(0))
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    path.write_bytes(b"previous run")
    sink = VideoSink(path, fps=FPS, size=(W, H))
    sink.write(square_frame(0))
    sink.abort()
    assert os.listdir(tmp_path) == ["annotated.mp4"] and path.read_bytes() == b"previous run"
    with pytest.raises(FrameError, match="BGR uint8"):
        VideoSink(path, fps=FPS).write(np.zeros((H, W), np.uint8))
    for name in ("bad.txt", "x.gif", "noext"):   # refused before any frame, and nothing written
        with pytest.raises(SourceError, match=r"cannot write video .*: annotated videos are \.mp4, "):
            VideoSink(tmp_path / name, fps=FPS)
    assert sorted(os.listdir(tmp_path)) == ["annotated.mp4"]


def test_frames_lost_mid_file_are_counted_against_the_declared_count(tmp_path):
    path = write_video(tmp_path / "mid.avi", [square_frame(i) for i in range(N)])
    data = bytearray(open(path, "rb").read())
    for k in range(len(data) * 45 // 100, len(data) * 55 // 100):   # garbage in the middle, the end intact
        data[k] = (data[k] * 7 + 13) & 255
    open(path, "wb").write(data)
    with open_source(path) as source:
        frames = list(source)
    n = source.frames_read
    assert 0 < n < N and square_left(frames[-1][0]) == N - 1   # decoding went on past the damage
    assert source.warning.startswith(f"{path}: read {n} of the {N} frames its container declares")

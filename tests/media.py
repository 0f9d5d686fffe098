"""Frames and video files for the tests: a drifting block over noise, OpenCV-written videos, a faststart MP4."""
import cv2
import numpy as np

FPS = 20.0   # what test_sources expects the files to declare


def video(nframes, hw=(72, 96), seed=0):
    """Frames with a bright block drifting over smooth noise: enough structure for peaks and tubes."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (hw[0] // 8, hw[1] // 8, 3), dtype=np.uint8)
    frames = []
    for t in range(nframes):
        frame = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
        x = 8 + 2 * t % (hw[1] - 30)
        frame[20:50, x:x + 20] = (230, 200, 40)
        frames.append(frame)
    return frames


def stream(runtime, frames, stream_id=0):
    pushed = []
    for i, frame in enumerate(frames, start=1):
        pushed += [(i, r) for r in runtime.push(frame, timestamp=i / 25, stream=stream_id)]
    return pushed + [(len(frames) + 1, r) for r in runtime.flush(stream_id)]


def write_video(path, frames, fourcc="MJPG", fps=FPS):
    """Encode BGR ``frames`` into ``path`` with OpenCV; returns the path as a string."""
    path = str(path)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def faststart(data):
    """An MP4 with its ``moov`` atom moved before ``mdat`` and its chunk offsets shifted (what
    ``qt-faststart`` and ``ffmpeg -movflags faststart`` write): cut short, such a file still opens."""
    import struct

    def atoms(buf, start, end):
        while start + 8 <= end:
            size, kind = struct.unpack(">I4s", buf[start:start + 8])
            yield kind, start, size
            start += size

    def shift(buf, start, end, by):
        for kind, at, size in atoms(buf, start, end):
            if kind in (b"trak", b"mdia", b"minf", b"stbl"):
                shift(buf, at + 8, at + size, by)
            elif kind == b"stco":
                count = struct.unpack(">I", buf[at + 12:at + 16])[0]
                offsets = struct.unpack(f">{count}I", buf[at + 16:at + 16 + 4 * count])
                buf[at + 16:at + 16 + 4 * count] = struct.pack(f">{count}I", *(o + by for o in offsets))

    top = list(atoms(data, 0, len(data)))
    _, at, size = next(a for a in top if a[0] == b"moov")
    moov = bytearray(data[at:at + size])
    shift(moov, 8, len(moov), size)
    out = b""
    for kind, start, length in top:
        out += (bytes(moov) if kind == b"mdat" else b"") + (data[start:start + length] if kind != b"moov" else b"")
    return out

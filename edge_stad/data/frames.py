"""Frame decoding whose errors say which file and frame is broken.

``cv2.imread`` returns a partly grey image for a truncated JPEG and only prints a
warning, which would silently poison training. JPEG files are therefore read as bytes,
checked for an end-of-image marker after the last scan, and decoded with
``cv2.imdecode``. Video files are decoded with ``cv2.VideoCapture`` and compared with
the frame count their container declares, which is how a truncated file shows.
"""
import collections
import os
import re
import threading

import cv2
import numpy as np

from edge_stad.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_SOS, _EOI = b"\xff\xda", b"\xff\xd9"


def decode_jpeg(data, where):
    """Decode JPEG bytes to a uint8 HxWx3 BGR array; ``where`` names the file/frame in errors."""
    if not data.startswith(b"\xff\xd8"):
        raise DataError(f"{where}: not a JPEG file (no start-of-image marker)")
    # 0xFFD9 cannot occur inside entropy-coded data, so a complete file has one after its last scan.
    if data.rfind(_EOI) < data.rfind(_SOS):
        raise DataError(f"{where}: truncated JPEG ({len(data)} bytes, no end-of-image marker after the last scan)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{where}: corrupt JPEG, OpenCV cannot decode it")
    return image


def read_image_bytes(path, where):
    """The bytes of an image file, or a :class:`DataError` naming ``where`` if it is missing."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{where}: missing file {path}") from None
    except OSError as e:
        raise DataError(f"{where}: cannot read {path}: {e}") from None


def decode_image(data, path, where):
    """Decode image bytes (JPEG checked for truncation; PNG/BMP by OpenCV) to BGR uint8."""
    if path.lower().endswith((".jpg", ".jpeg")):
        return decode_jpeg(data, where)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{where}: {path} is corrupt or not an image OpenCV can decode")
    return image


def _natural_key(name):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def iter_clip_frames(source):
    """Yield ``(image, jpeg_bytes_or_None)`` for each frame of a video file or a folder of images.

    Folder images are taken in name order with numbers compared by value (``f9`` before
    ``f10``); their JPEG bytes are passed on so that converters can copy them losslessly.
    """
    if os.path.isdir(source):
        names = sorted((f for f in os.listdir(source) if f.lower().endswith(IMAGE_EXTENSIONS)), key=_natural_key)
        if not names:
            raise DataError(f"{source}: frame folder holds no {'/'.join(IMAGE_EXTENSIONS)} files")
        for i, name in enumerate(names, 1):
            path = os.path.join(source, name)
            where = f"{source}: frame {i} ({name})"
            data = read_image_bytes(path, where)
            image = decode_image(data, path, where)
            yield image, (data if name.lower().endswith((".jpg", ".jpeg")) else None)
    elif os.path.isfile(source):
        yield from _video_frames(source)
    else:
        raise DataError(f"{source}: no such video file or frame folder")


def _video_frames(path):
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise DataError(f"{path}: cannot open as a video (corrupt, truncated, or a codec OpenCV cannot read)")
    declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    count = 0
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                break
            count += 1
            yield image, None
    finally:
        capture.release()
    if count == 0:
        raise DataError(f"{path}: no frame could be decoded (corrupt or truncated video)")
    # Containers that estimate the count from duration x fps may overstate it by one.
    if declared > count + 1:
        raise DataError(f"{path}: the container declares {declared} frames but decoding stopped after frame "
                        f"{count} (the last frame decoded): the file is truncated or corrupt")


class FrameCache:
    """A thread-safe LRU of decoded frames; not carried across pickling (each worker starts empty)."""

    def __init__(self, size):
        self.size = int(size)
        self._items = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            image = self._items.get(key)
            if image is not None:
                self._items.move_to_end(key)
            return image

    def put(self, key, image):
        with self._lock:
            self._items[key] = image
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __getstate__(self):
        return {"size": self.size}

    def __setstate__(self, state):
        self.__init__(state["size"])

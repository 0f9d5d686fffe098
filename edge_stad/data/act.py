"""The ACT dataset layout (UCF101-24, JHMDB-21, the synthetic set): reader and GT writer.

::

    <root>/rgb-images/<video>/00001.jpg ...   frames, 1-based, five digits; <video> = "<label>/<name>"
    <root>/<Name>-GT.pkl                       ground truth (reference §5), e.g. UCF101v2-GT.pkl,
                                               JHMDB-GT.pkl (3 splits), Synth-GT.pkl

The annotation file is read with :func:`edge_stad.data.annotations.load_gt` (data-only
unpickler, validation). :class:`ActDataset` adds what the file cannot check alone: that
the split exists, that each video's last frame (``nframes``) is on disk, that frame files
exist, decode completely and have the annotated resolution, and that every tube's frames
are on disk. Each problem is a
:class:`~edge_stad.errors.DataError` that names the video and frame; a pickle that asks
to run code stays an :class:`~edge_stad.errors.UnsafePickleError`.
"""
import glob
import numbers
import os
import pickle

from edge_stad.atomic import atomic_write
from edge_stad.data.annotations import load_gt, validate_gt, write_gt_json
from edge_stad.data.frames import FrameCache, decode_jpeg, read_image_bytes
from edge_stad.errors import AnnotationError, DataError, UnsafePickleError

FRAMES_DIR = "rgb-images"


def frame_name(frame):
    """File name of 1-based ``frame`` in the ACT layout (``00001.jpg``)."""
    return f"{frame:05d}.jpg"


def find_gt(root):
    """The ground-truth file of dataset folder ``root``: its only ``*-GT.pkl`` or ``*-GT.json``."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataError(f"{root}: no such dataset folder")
    found = sorted(glob.glob(os.path.join(glob.escape(root), "*-GT.pkl"))
                   + glob.glob(os.path.join(glob.escape(root), "*-GT.json")))
    if len(found) != 1:
        raise DataError("{}: expected exactly one *-GT.pkl or *-GT.json ground-truth file, found {}".format(
            root, [os.path.basename(f) for f in found] or "none"))
    return found[0]


def is_act_dataset(root):
    """Whether ``root`` is a folder holding exactly one ground-truth file (see :func:`find_gt`)."""
    try:
        find_gt(root)
    except DataError:
        return False
    return True


def gt_paths(folder, name):
    """Where :func:`write_gt` puts ``name``'s ground truth: ``<name>-GT.pkl`` and ``<name>-annotations.json``.

    The JSON twin is deliberately not called ``*-GT.json``: a folder must hold exactly one
    ``*-GT`` file for :func:`find_gt` (and ``edge-stad eval --data``) to pick it.
    """
    return os.path.join(folder, f"{name}-GT.pkl"), os.path.join(folder, f"{name}-annotations.json")


def write_gt(folder, name, gt):
    """Validate ACT ground truth ``gt`` (a dict, reference §5) and write it as pickle + JSON twin.

    The pickle is a plain ``pickle.dump`` of dicts, lists and NumPy arrays, as the ACT tools
    expect. Returns the two paths.
    """
    checked = validate_gt(gt, f"ground truth for {name}")
    pkl_path, json_path = gt_paths(folder, name)
    with atomic_write(pkl_path, "wb") as f:
        pickle.dump(gt, f, protocol=4)
    write_gt_json(json_path, checked)
    return pkl_path, json_path


def _check_video_name(video, source):
    parts = video.split("/")
    if not video or "\\" in video or video.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise DataError(f"{source}: video name {video!r} is not a relative 'label/name' path")


class ActDataset:
    """An ACT-layout dataset folder, one split selected.

    ``root`` holds ``rgb-images/`` and one ``*-GT.pkl`` (or pass ``gt_path``). ``split`` is
    1-based (JHMDB-21: 1..3). ``cache_size`` > 0 keeps that many decoded frames in an LRU
    keyed by (video, frame), for samplers that read overlapping clips.
    """

    def __init__(self, root, split=1, gt_path=None, cache_size=0):
        self.root = os.fspath(root)
        self.gt_path = os.fspath(gt_path) if gt_path is not None else find_gt(self.root)
        try:
            self.gt = load_gt(self.gt_path)
        except UnsafePickleError:
            raise
        except AnnotationError as e:
            raise DataError(str(e)) from e
        splits = len(self.gt.train_videos)
        if len(self.gt.test_videos) != splits:
            raise DataError(f"{self.gt_path}: {splits} train splits but {len(self.gt.test_videos)} test splits")
        if isinstance(split, bool) or not isinstance(split, int) or not 1 <= split <= splits:
            raise DataError(f"{self.gt_path}: split {split!r} does not exist; this dataset has {splits} "
                            f"split(s), numbered 1..{splits}")
        for video, n in self.gt.nframes.items():
            _check_video_name(video, self.gt_path)
            last = os.path.join(self.root, FRAMES_DIR, *video.split("/"), frame_name(n))
            if not os.path.isfile(last):   # one stat: no loop of any length ever runs on a wrong count
                raise DataError(f"{self.gt_path}: video {video!r}: field 'nframes' is {n}, but its frame {n} is not "
                                f"on disk ({last})")
        self.split = split
        self._cache = FrameCache(cache_size) if cache_size > 0 else None

    def __repr__(self):
        return (f"ActDataset({self.root!r}, split={self.split}: {len(self.labels)} labels, "
                f"{len(self.train_videos)} train / {len(self.test_videos)} test videos)")

    @property
    def labels(self):
        """Class names; a tube's label is an index into this list."""
        return self.gt.labels

    @property
    def train_videos(self):
        return self.gt.train_videos[self.split - 1]

    @property
    def test_videos(self):
        return self.gt.test_videos[self.split - 1]

    @property
    def videos(self):
        """Every annotated video (all splits), sorted."""
        return sorted(self.gt.nframes)

    def _known(self, video):
        if video not in self.gt.nframes:
            raise DataError(f"video {video!r}: not in {self.gt_path}")

    def nframes(self, video):
        self._known(video)
        return self.gt.nframes[video]

    def resolution(self, video):
        """``(height, width)`` of the video's frames, as annotated."""
        self._known(video)
        if video not in self.gt.resolution:
            raise DataError(f"video {video!r}: {self.gt_path} has no resolution entry for it")
        return self.gt.resolution[video]

    def tubes(self, video):
        """``{label: [ndarray (n, 5) frame, x1, y1, x2, y2]}``; empty for a video without tubes.

        The arrays are the dataset's own: copy before changing them.
        """
        self._known(video)
        return self.gt.gttubes.get(video, {})

    def frame_path(self, video, frame):
        """Path of 1-based ``frame`` of ``video`` (whether or not the file exists)."""
        self._known(video)
        n = self.gt.nframes[video]
        if isinstance(frame, bool) or not isinstance(frame, numbers.Integral) or not 1 <= frame <= n:
            raise DataError(f"video {video!r} frame {frame!r}: outside 1..{n}")
        return os.path.join(self.root, FRAMES_DIR, *video.split("/"), frame_name(int(frame)))

    def read_frame(self, video, frame):
        """Frame ``frame`` (1-based) of ``video`` as a uint8 HxWx3 BGR array the caller owns."""
        if self._cache is not None:
            image = self._cache.get((video, frame))
            if image is not None:
                return image.copy()
        path = self.frame_path(video, frame)
        where = f"video {video!r} frame {frame}"
        image = decode_jpeg(read_image_bytes(path, where), f"{where} ({path})")
        expected = self.gt.resolution.get(video)
        if expected is not None and image.shape[:2] != expected:
            raise DataError(f"{where} ({path}): image is {image.shape[0]}x{image.shape[1]} (h x w) but the ground "
                            f"truth says {expected[0]}x{expected[1]}")
        if self._cache is not None:
            self._cache.put((video, frame), image)
            return image.copy()
        return image

    def verify(self, videos=None, decode="first"):
        """Check that the frames of ``videos`` (default: the split's train and test videos) are usable.

        Every frame file 1..nframes must exist (so every tube frame is on disk). ``decode``
        is ``"first"`` (decode frame 1 of each video: resolution check), ``"all"`` (every
        frame: truncation and resolution) or ``"none"``.
        """
        if decode not in ("first", "all", "none"):
            raise ValueError(f"decode must be 'first', 'all' or 'none', got {decode!r}")
        if videos is None:
            videos = self.train_videos + self.test_videos
        for video in videos:
            n = self.nframes(video)
            folder = os.path.dirname(self.frame_path(video, 1))
            present = set(os.listdir(folder)) if os.path.isdir(folder) else set()
            missing = next((f for f in range(1, n + 1) if frame_name(f) not in present), None)
            if missing is not None:
                raise DataError(f"video {video!r} frame {missing}: missing file {self.frame_path(video, missing)}"
                                f"{self._tube_using(video, missing)} (nframes is {n})")
            for f in {"first": [1], "all": range(1, n + 1), "none": []}[decode]:
                self.read_frame(video, f)

    def _tube_using(self, video, frame):
        for label, tubes in self.tubes(video).items():
            for i, tube in enumerate(tubes):
                if tube[0, 0] <= frame <= tube[-1, 0]:
                    return (f", needed by tube {i} of label {self.labels[label]!r} (frames "
                            f"{int(tube[0, 0])}..{int(tube[-1, 0])})")
        return ""

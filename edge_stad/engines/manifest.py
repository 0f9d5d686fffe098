"""``manifest.json``: what an engine folder holds, and the check that it still does.

The manifest records the model (family, backbone, K, clip length, input size, classes,
normalisation), the precision and backend, the versions that built it, the calibration
summary, the command line, and the sha256 of every other file in the folder.
:func:`read_manifest` refuses a folder whose files are missing or corrupt (checksum)
or from an incompatible format version, so a runtime never runs a graph it does not
describe. No torch here.

An engine folder is closed: engines are copied between machines and opened by services,
so a manifest is untrusted input. Every path it names must be relative, normalised
(``/``-separated, no ``.``, ``..`` or empty parts) and inside the folder; no file on the way
may be a symbolic link (each part is opened relative to its parent's descriptor with
``O_NOFOLLOW``, so a link swapped in during the check is refused too); and the bytes that
are hashed are the bytes handed to ONNX Runtime or TensorRT (:func:`verified_files`), never a
second read of the same name. The manifest itself is checked against a schema (types,
ranges, required keys, :mod:`edge_stad.model_config`) before anything is read through it.
"""
import errno
import hashlib
import json
import os
import re
import stat

from edge_stad.atomic import write_json
from edge_stad.errors import EngineError
from edge_stad.model_config import check_labels, check_model_config, short_repr
from edge_stad.version import __version__

MANIFEST = "manifest.json"
INT8_REPORT = "int8_report.json"   # the INT8 build's calibration and gate report, inside the engine folder
FORMAT = "edge_stad.engine"
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "model", "precision", "graphs", "files")
PRECISIONS = ("fp32", "fp16", "int8")
MAX_MANIFEST_BYTES = 16 << 20   # a manifest is a few KB; refuse to parse a runaway one
_SHA256 = re.compile(r"[0-9a-f]{64}")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
# POSIX: walk the folder with openat(2) (dir_fd) and O_NOFOLLOW; elsewhere lstat each part, then
# check that the opened file is the one lstat saw.
OPEN_AT = os.open in os.supports_dir_fd and bool(_NOFOLLOW)


def sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder, info):
    """Write ``folder/manifest.json``: ``info`` plus format fields and the sha256 of every file in ``folder``."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in sorted(names):
            path = os.path.join(root, name)
            rel = os.path.relpath(path, folder).replace(os.sep, "/")
            if rel != MANIFEST:
                files[rel] = {"sha256": sha256(path), "bytes": os.path.getsize(path)}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "edge_stad": __version__}
    manifest.update(info)
    manifest["files"] = files
    write_json(os.path.join(folder, MANIFEST), manifest)
    return manifest


def engine_parts(folder, rel, field):
    """The parts of ``rel``, a path the manifest names in ``field``, or an :class:`EngineError`: it must be
    relative, ``/``-separated and normalised, so that it names one file inside the folder on any system."""
    parts = rel.split("/") if isinstance(rel, str) else None
    if (not parts or any(p in ("", ".", "..") for p in parts) or "\\" in rel or "\0" in rel
            or re.match(r"[A-Za-z]:", rel)):
        raise EngineError(f"engine {folder}: field '{field}' names {short_repr(rel)}; expected a normalised relative "
                          "path inside the engine folder ('/'-separated, no '.', '..', empty parts or drive)")
    return parts


def _open_inside(folder, parts):
    """A read-only descriptor of the regular file ``folder/<parts>``; OSError ``ELOOP`` when a part is a link."""
    if OPEN_AT:
        fd = os.open(folder, os.O_RDONLY | _DIRECTORY)
        try:
            for part in parts[:-1]:
                parent, fd = fd, None
                try:
                    fd = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=parent)
                finally:
                    os.close(parent)
            return os.open(parts[-1], os.O_RDONLY | _NOFOLLOW, dir_fd=fd)
        finally:
            if fd is not None:
                os.close(fd)
    path = folder
    for part in parts:
        path = os.path.join(path, part)
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise OSError(errno.ELOOP, "a symbolic link", path)
    seen = os.lstat(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):
        os.close(fd)
        raise OSError(errno.ELOOP, "replaced while it was opened", path)
    return fd


def _link_on_the_way(folder, parts):
    """Whether a part of ``folder/<parts>`` is a symbolic link (O_DIRECTORY | O_NOFOLLOW says ENOTDIR for one)."""
    path = folder
    for part in parts:
        path = os.path.join(path, part)
        if os.path.islink(path):
            return True
    return False


def read_inside(folder, rel, field, expected_bytes=None, keep=True, max_bytes=None, chunk=1 << 20):
    """``(sha256 hex, bytes or None)`` of the engine file ``rel``: opened inside ``folder`` without following
    any link, refused when it is not a regular file, its size is not ``expected_bytes`` or exceeds
    ``max_bytes``; the bytes are returned only with ``keep`` (what was hashed is what the caller loads)."""
    folder = os.fspath(folder)
    parts = engine_parts(folder, rel, field)
    try:
        fd = _open_inside(folder, parts)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EMLINK) or _link_on_the_way(folder, parts):
            raise EngineError(f"engine {folder}: {rel} (field '{field}') is or passes through a symbolic link; an "
                              "engine's files must be regular files inside its folder") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise EngineError(f"engine {folder}: {rel} is listed in the manifest but missing") from None
        raise EngineError(f"engine {folder}: cannot open {rel}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        size = os.fstat(f.fileno())
        if not stat.S_ISREG(size.st_mode):
            raise EngineError(f"engine {folder}: {rel} (field '{field}') is not a regular file")
        if expected_bytes is not None and size.st_size != expected_bytes:
            raise EngineError(f"engine {folder}: {rel} does not match its sha256 in the manifest (corrupt or "
                              f"modified after the build: {size.st_size} bytes, the manifest says {expected_bytes})")
        if max_bytes is not None and size.st_size > max_bytes:
            raise EngineError(f"engine {folder}: {rel} is {size.st_size} bytes; expected at most {max_bytes}")
        digest, blocks = hashlib.sha256(), []
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
            if keep:
                blocks.append(block)
    return digest.hexdigest(), b"".join(blocks) if keep else None


def read_manifest(folder, verify=True):
    """Load ``folder/manifest.json`` and check it against the schema; with ``verify`` also every listed
    file (inside the folder, no links, size and sha256: :func:`verified_files`)."""
    folder = os.fspath(folder)
    path = os.path.join(folder, MANIFEST)
    if not os.path.lexists(path):
        raise EngineError(f"{folder} is not an engine folder: no {MANIFEST} (build one with `edge-stad build`)")
    _, data = read_inside(folder, MANIFEST, MANIFEST, max_bytes=MAX_MANIFEST_BYTES)
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:   # UnicodeDecodeError is a ValueError
        raise EngineError(f"{path}: cannot read as JSON: {type(e).__name__}: {e}") from None
    check_manifest(manifest, folder)
    if verify:
        verified_files(folder, manifest)
    return manifest


def check_manifest(manifest, folder):
    """The schema of ``folder``'s manifest: required keys, their types and ranges, the model config, labels,
    and graph and plan names that are listed files; an :class:`EngineError` naming the field otherwise."""
    where = os.path.join(folder, MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EngineError(f"{where} is not an edge_stad engine manifest (format {FORMAT!r} expected)")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise EngineError(f"{where} lacks {', '.join(missing)}")
    version = manifest["format_version"]
    if not isinstance(version, int) or isinstance(version, bool):
        raise EngineError(f"{where}: field 'format_version' is {short_repr(version)}; expected the int "
                          f"{FORMAT_VERSION}")
    if version != FORMAT_VERSION:
        raise EngineError(f"{where} has engine format version {version}; this edge_stad "
                          f"{__version__} reads version {FORMAT_VERSION}: rebuild the engine")
    model = check_model_config(manifest["model"], EngineError, where)
    if manifest["precision"] not in PRECISIONS:
        raise EngineError(f"{where}: field 'precision' is {short_repr(manifest['precision'])}; expected one of "
                          + ", ".join(PRECISIONS))
    files = manifest["files"]
    if not isinstance(files, dict):
        raise EngineError(f"{where}: field 'files' is a {type(files).__name__}; expected an object mapping each "
                          "file to its sha256 and bytes")
    for rel, entry in files.items():
        engine_parts(folder, rel, "files")
        if (not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str)
                or not _SHA256.fullmatch(entry["sha256"]) or not isinstance(entry.get("bytes"), int)
                or isinstance(entry["bytes"], bool) or entry["bytes"] < 0):
            raise EngineError(f"{where}: field 'files.{rel}' is {short_repr(entry)}; expected "
                              "{\"sha256\": 64 lowercase hex digits, \"bytes\": an int >= 0}")
    for field in ("graphs", "plans"):
        names = manifest.get(field) or {}
        if not isinstance(names, dict):
            raise EngineError(f"{where}: field '{field}' is a {type(names).__name__}; expected an object mapping "
                              "graph names to files")
        for graph, rel in names.items():
            engine_parts(folder, rel, f"{field}.{graph}")
            if rel not in files:
                raise EngineError(f"engine {folder}: the {graph} graph {rel} is not among the "
                                  "manifest's files")
    if "labels" in manifest and manifest["labels"] is not None:
        check_labels(manifest["labels"], model["num_classes"], EngineError, where)
    trt = manifest.get("tensorrt")
    if trt is not None and (not isinstance(trt, dict) or not isinstance(trt.get("tensorrt", ""), str)):
        raise EngineError(f"{where}: field 'tensorrt' is {short_repr(trt)}; expected an object with the TensorRT "
                          "version as 'tensorrt'")
    return manifest


def verified_files(folder, manifest, load=()):
    """Check every file ``manifest`` lists (inside ``folder``, no links, size and sha256) and return
    ``{name: bytes}`` of those in ``load``: the very bytes that were hashed."""
    folder = os.fspath(folder)
    loaded = {}
    for rel, entry in manifest["files"].items():
        digest, data = read_inside(folder, rel, "files", entry["bytes"], keep=rel in load)
        if digest != entry["sha256"]:
            raise EngineError(f"engine {folder}: {rel} does not match its sha256 in the manifest "
                              "(corrupt or modified after the build)")
        if rel in load:
            loaded[rel] = data
    missing = [rel for rel in load if rel not in loaded]
    if missing:
        raise EngineError(f"engine {folder}: {', '.join(missing)} not among the manifest's files")
    return loaded

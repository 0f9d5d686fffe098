"""``manifest.json``: what an engine folder holds, and the check that it still does.

The manifest records the model (family, backbone, K, clip length, input size, classes,
normalisation), the precision and backend, the versions that built it, the calibration
summary, the command line, and the sha256 of every other file in the folder.
:func:`read_manifest` refuses a folder whose files are missing or corrupt (checksum)
or from an incompatible format version, so a runtime never runs a graph it does not
describe. No torch here.
"""
import hashlib
import os

from edge_stad import __version__
from edge_stad.atomic import read_json, write_json
from edge_stad.errors import EngineError

MANIFEST = "manifest.json"
FORMAT = "edge_stad.engine"
FORMAT_VERSION = 1
REQUIRED = ("format", "format_version", "model", "precision", "graphs", "files")


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


def read_manifest(folder, verify=True):
    """Load and check ``folder/manifest.json``; with ``verify`` also every file's size and sha256."""
    path = os.path.join(os.fspath(folder), MANIFEST)
    if not os.path.isfile(path):
        raise EngineError(f"{folder} is not an engine folder: no {MANIFEST} (build one with `edge-stad build`)")
    manifest = read_json(path, EngineError)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise EngineError(f"{path} is not an edge_stad engine manifest (format {FORMAT!r} expected)")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise EngineError(f"{path} lacks {', '.join(missing)}")
    if manifest["format_version"] != FORMAT_VERSION:
        raise EngineError(f"{path} has engine format version {manifest['format_version']}; this edge_stad "
                          f"{__version__} reads version {FORMAT_VERSION}: rebuild the engine")
    if verify:
        for rel, entry in manifest["files"].items():
            file = os.path.join(os.fspath(folder), *rel.split("/"))
            if not os.path.isfile(file):
                raise EngineError(f"engine {folder}: {rel} is listed in the manifest but missing")
            if os.path.getsize(file) != entry["bytes"] or sha256(file) != entry["sha256"]:
                raise EngineError(f"engine {folder}: {rel} does not match its sha256 in the manifest "
                                  "(corrupt or modified after the build)")
        for graph, rel in manifest["graphs"].items():
            if rel not in manifest["files"]:
                raise EngineError(f"engine {folder}: the {graph} graph {rel} is not among the manifest's files")
    return manifest

"""Engine folders are closed and their manifests are checked: paths inside the folder, no symbolic links, the
hashed bytes are the loaded bytes, a schema for every field, and the model fields against the graphs at open."""
import hashlib
import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from model_helpers import tiny_model  # noqa: E402

from edge_stad import Runtime  # noqa: E402
from edge_stad.backends import open_backend  # noqa: E402
from edge_stad.build.pipeline import BuildOptions, build_engine  # noqa: E402
from edge_stad.engines import manifest as manifest_module  # noqa: E402
from edge_stad.engines import onnxruntime_backend  # noqa: E402
from edge_stad.engines.manifest import read_manifest  # noqa: E402
from edge_stad.errors import EngineError  # noqa: E402

LABELS = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    root = tmp_path_factory.mktemp("folders")
    for name, decode in (("graph", True), ("host", False)):
        build_engine(tiny_model("shufflenetv2"), root / name,
                     BuildOptions(backend="onnxruntime", decode_in_graph=decode), labels=LABELS, log=lambda _: None)
    return root


def edited(engine, out, change):
    """A copy of ``engine`` whose manifest.json went through ``change(manifest)`` (other files untouched)."""
    shutil.copytree(engine, out)
    manifest = json.loads((out / "manifest.json").read_text())
    change(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def listed(manifest, rel, path):
    """List the file at ``path`` under the name ``rel`` with its true size and sha256."""
    data = open(path, "rb").read()
    manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_paths_outside_the_folder_are_refused_where_they_used_to_load(engines, tmp_path):
    other = tmp_path / "outside"
    other.mkdir()
    shutil.copyfile(engines / "host" / "head.onnx", other / "head.onnx")   # a foreign graph, hashes right

    def dotdot(m):
        m["graphs"]["head"] = "../outside/head.onnx"
        listed(m, "../outside/head.onnx", other / "head.onnx")

    folder = edited(engines / "graph", tmp_path / "dotdot", dotdot)
    with pytest.raises(EngineError, match=r"'\.\./outside/head\.onnx'; expected a normalised relative path"):
        open_backend(folder)
    # absolute: verified as folder/<path> (a good copy planted there) but loaded from the absolute path
    absolute = str(other / "head.onnx")
    folder = tmp_path / "absolute"
    shutil.copytree(engines / "graph", folder)
    planted = folder / absolute.lstrip("/")
    planted.parent.mkdir(parents=True)
    shutil.copyfile(engines / "graph" / "head.onnx", planted)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["graphs"]["head"] = absolute
    listed(manifest, absolute, planted)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="expected a normalised relative path"):
        open_backend(folder)
    for bad in ("./head.onnx", "sub//head.onnx", "C:/head.onnx", "sub\\head.onnx", "", 7):
        folder = edited(engines / "graph", tmp_path / f"bad{abs(hash(str(bad)))}",
                        lambda m, bad=bad: m["graphs"].update(head=bad))
        with pytest.raises(EngineError, match="field 'graphs.head'"):
            read_manifest(folder)


def test_symbolic_links_in_an_engine_folder_are_refused(engines, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0\n")

    def link(m):
        listed(m, "reference_io.npz", secret)   # the manifest hashes what the link points to

    folder = edited(engines / "graph", tmp_path / "link", link)
    os.remove(folder / "reference_io.npz")
    os.symlink(secret, folder / "reference_io.npz")
    with pytest.raises(EngineError, match="reference_io.npz .* symbolic link"):
        read_manifest(folder)
    with pytest.raises(EngineError, match="symbolic link"):
        Runtime(folder)
    # a linked directory on the way
    folder = tmp_path / "linked_dir"
    shutil.copytree(engines / "graph", folder)
    real = tmp_path / "real"
    real.mkdir()
    shutil.move(str(folder / "head.onnx"), real / "head.onnx")
    os.symlink(real, folder / "graphs")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["graphs/head.onnx"] = manifest["files"].pop("head.onnx")
    manifest["graphs"]["head"] = "graphs/head.onnx"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineError, match="graphs/head.onnx .* symbolic link"):
        open_backend(folder)
    # the manifest itself
    folder = tmp_path / "linked_manifest"
    shutil.copytree(engines / "graph", folder)
    shutil.move(str(folder / "manifest.json"), tmp_path / "m.json")
    os.symlink(tmp_path / "m.json", folder / "manifest.json")
    with pytest.raises(EngineError, match="manifest.json .* symbolic link"):
        read_manifest(folder)


def test_the_hashed_bytes_are_the_loaded_bytes(engines, tmp_path, monkeypatch):
    folder = tmp_path / "swap"
    shutil.copytree(engines / "graph", folder)
    reference = open_backend(engines / "graph")
    real = onnxruntime_backend.create_session
    calls = []

    def swap_after_the_check(model, *args, **kwargs):   # the file changes once it was verified
        calls.append(model)
        shutil.copyfile(engines / "host" / "head.onnx", folder / "head.onnx")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnxruntime_backend, "create_session", swap_after_the_check)
    backend = open_backend(folder)
    assert all(isinstance(c, bytes) for c in calls) and backend.decodes_in_graph
    ref = np.load(engines / "graph" / "reference_io.npz")
    np.testing.assert_array_equal(backend.detect(ref["head.feats"], ref["head.whs"]),
                                  reference.detect(ref["head.feats"], ref["head.whs"]))
    with pytest.raises(EngineError, match="head.onnx does not match its sha256"):
        open_backend(folder)   # the next open sees the new file


def test_the_walk_without_openat_refuses_links_too(engines, tmp_path, monkeypatch):
    monkeypatch.setattr(manifest_module, "OPEN_AT", False)
    assert read_manifest(engines / "graph")["model"]["K"] == 2
    folder = tmp_path / "link"
    shutil.copytree(engines / "graph", folder)
    os.remove(folder / "reference_io.npz")
    os.symlink(engines / "graph" / "reference_io.npz", folder / "reference_io.npz")
    with pytest.raises(EngineError, match="symbolic link"):
        read_manifest(folder)


def _set(path, value):
    def change(manifest):
        *parents, last = path.split(".")
        target = manifest
        for key in parents:
            target = target[key]
        target[last] = value
    return change


SCHEMA_VIOLATIONS = [
    (_set("files", ["encoder.onnx", "head.onnx"]), "field 'files' is a list"),
    (_set("format_version", "2"), "field 'format_version' is '2'; expected the int 1"),
    (_set("model", ["amma"]), "'model' is a list"),
    (_set("model.input_size", [100000, 100000]), r"'model.input_size' is \[100000, 100000\]; expected"),
    (_set("model.input_size", [64]), "'model.input_size'"),
    (_set("model.K", "2"), "'model.K' is '2'; expected an int in"),
    (_set("model.K", True), "'model.K' is True"),
    (_set("model.clip_len", 0), "'model.clip_len' is 0"),
    (_set("model.num_classes", 10 ** 9), "'model.num_classes'"),
    (_set("model.name", "yolo"), "'model.name' is 'yolo'"),
    (_set("labels", ["a", "b"]), "'labels' names 2 classes; expected 4"),
    (_set("labels", "abcd"), "'labels' is 'abcd'"),
    (_set("precision", "int4"), "'precision' is 'int4'"),
    (_set("graphs", "encoder.onnx"), "'graphs' is a str"),
    (lambda m: m["graphs"].pop("head"), "lists no head graph"),
    (lambda m: m["files"].update({"head.onnx": {"sha256": "x", "bytes": 1}}), "'files.head.onnx'"),
    (lambda m: m["files"]["head.onnx"].update(bytes="12"), "'files.head.onnx'"),
    (lambda m: m.pop("model"), "lacks model"),
]


@pytest.mark.parametrize("change, message", SCHEMA_VIOLATIONS)
def test_manifest_schema(engines, tmp_path, change, message):
    folder = edited(engines / "graph", tmp_path / "e", change)
    with pytest.raises(EngineError, match=message):
        Runtime(folder)


@pytest.mark.parametrize("engine", ["graph", "host"])
@pytest.mark.parametrize("field, value, graph", [("num_classes", 5, "head"), ("K", 3, "head"),
                                                 ("clip_len", 6, "encoder"), ("input_size", [96, 64], "encoder")])
def test_model_fields_are_checked_against_the_graphs_at_open(engines, tmp_path, engine, field, value, graph):
    def change(manifest):
        manifest["model"][field] = value
        manifest["labels"] = [f"c{i}" for i in range(manifest["model"]["num_classes"])]

    folder = edited(engines / engine, tmp_path / "e", change)
    with pytest.raises(EngineError, match=f"(the {graph} graph.*(shaped|built for)|model.{field}).*different models"):
        Runtime(folder)


def test_build_refuses_class_names_of_another_length(tmp_path):
    from edge_stad.errors import ConfigError

    with pytest.raises(ConfigError, match="8 class names for a model of 4 classes"):
        build_engine(tiny_model("shufflenetv2"), tmp_path / "e", BuildOptions(backend="onnxruntime"),
                     labels=[str(i) for i in range(8)], log=lambda _: None)
    assert not (tmp_path / "e").exists()

"""ONNX export of the streaming graphs: validity, parity with PyTorch, streaming on a real video, decode."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from model_helpers import BACKBONES, tiny_model  # noqa: E402
from synth_data import tiny_synth  # noqa: E402

from edge_stad.core.tubelet_decode import decode  # noqa: E402
from edge_stad.core.windows import clip_ending_at, window_schedule  # noqa: E402
from edge_stad.data.act import ActDataset  # noqa: E402
from edge_stad.engines.onnxruntime_backend import OnnxRuntimeBackend, create_session  # noqa: E402
from edge_stad.errors import ExportError  # noqa: E402
from edge_stad.export.graphs import TrajectoryAtCells, decode_rows  # noqa: E402
from edge_stad.export.onnx_export import export_onnx, scaled_error  # noqa: E402
from edge_stad.preprocess import normalize_clip, resize  # noqa: E402


@pytest.mark.parametrize("backbone", BACKBONES)
def test_fp32_onnx_matches_pytorch_and_streams_a_whole_video(backbone, tmp_path, tmp_path_factory):
    model = tiny_model(backbone)
    record = export_onnx(model, tmp_path)
    assert record["opset"] == 17
    assert max(record["parity_scaled_error"].values()) < 1e-4
    for graph in ("encoder", "head"):
        proto = onnx.load(tmp_path / f"{graph}.onnx")
        assert proto.opset_import[0].version == 17
        assert not [n.op_type for n in proto.graph.node if n.op_type in ("Identity", "Constant")]

    # Streaming through the two ONNX graphs (each clip encoded once, features cached) gives
    # the normal-mode PyTorch forward of every window of a real video.
    dataset = ActDataset(tiny_synth(tmp_path_factory))
    video = dataset.test_videos[0]
    backend = OnnxRuntimeBackend(tmp_path / "encoder.onnx", tmp_path / "head.onnx", model.config)
    cfg = model.config
    frames = {}

    def clip(end):
        for f in clip_ending_at(end, cfg["clip_len"]):
            frames.setdefault(f, resize(dataset.read_frame(video, f), tuple(cfg["input_size"])))
        return np.stack([frames[f] for f in clip_ending_at(end, cfg["clip_len"])])

    cache, worst, windows = {}, 0.0, list(window_schedule(cfg["K"], cfg["clip_len"], dataset.nframes(video), "stream"))
    assert len(windows) >= 3
    for ends in windows:
        for e in ends:
            if e not in cache:
                cache[e] = backend.encode(clip(e)[None])
        streamed = backend.head(np.stack([cache[e][0][0] for e in ends])[None],
                                np.stack([cache[e][1][0] for e in ends])[None])
        clips = torch.from_numpy(np.stack([normalize_clip(list(clip(e))) for e in ends]))[None]
        with torch.no_grad():
            normal = model(clips)
        worst = max(worst, scaled_error(streamed, [normal[k].numpy() for k in ("hm", "mov", "wh")]))
    assert worst < 1e-4


def test_dynamic_batch_equals_batch_one(tmp_path):
    model = tiny_model("shufflenetv2")
    export_onnx(model, tmp_path, dynamic_batch=True)
    encoder = create_session(str(tmp_path / "encoder.onnx"))
    frames = np.random.default_rng(1).integers(0, 256, (3, 5, 64, 64, 3), dtype=np.uint8)
    batched = encoder.run(None, {"frames": frames})
    for i in range(3):
        single = encoder.run(None, {"frames": frames[i:i + 1]})
        assert scaled_error([a[i:i + 1] for a in batched], single) < 1e-4


def test_dcn_decoder_exports_as_one_deformconv(tmp_path):
    record = export_onnx(tiny_model("shufflenetv2", decoder="dcn"), tmp_path)
    assert max(record["parity_scaled_error"].values()) < 1e-4
    assert record["opset"] == 19
    ops = [n.op_type for n in onnx.load(tmp_path / "encoder.onnx").graph.node]
    assert ops.count("DeformConv") == 1 and "GatherElements" not in ops


def test_static_graph_refuses_another_batch(tmp_path):
    export_onnx(tiny_model("shufflenetv2"), tmp_path)
    encoder = create_session(str(tmp_path / "encoder.onnx"))
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        encoder.run(None, {"frames": np.zeros((2, 5, 64, 64, 3), np.uint8)})


def test_parity_failure_is_an_error(tmp_path):
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_onnx(tiny_model("shufflenetv2"), tmp_path, tolerance=0.0)


class _Decode(torch.nn.Module):
    def forward(self, hm, mov, wh):
        return decode_rows(hm, mov, wh, 20)


def test_in_graph_decode_equals_host_decode_exactly(tmp_path):
    # Plateaus (equal neighbours), exact ties across classes, peaks on the border, movements
    # that leave the grid: the ONNX decode must give the host decode bit for bit.
    rng = np.random.default_rng(3)
    b, c, h, w, K = 2, 3, 8, 10, 3
    hm = rng.choice(np.float32([0.05, 0.2, 0.2, 0.7]), size=(b, c, h, w)).astype(np.float32)
    hm[0, 1, 2:4, 2:4] = 0.9                       # a plateau
    hm[1, 2] = hm[1, 0]                            # identical classes
    mov = (rng.standard_normal((b, 2 * K, h, w)) * 4).astype(np.float32)
    wh = (rng.random((b, 2 * K, h, w)) * 6).astype(np.float32)
    path = tmp_path / "decode.onnx"
    torch.onnx.export(_Decode(), tuple(torch.from_numpy(a) for a in (hm, mov, wh)), str(path), opset_version=17,
                      input_names=["hm", "mov", "wh"], output_names=["rows"], dynamo=False)
    got = create_session(str(path)).run(None, {"hm": hm, "mov": mov, "wh": wh})[0]
    np.testing.assert_array_equal(got, decode(hm, mov, wh, top_n=20))


def test_trajectory_at_cells_is_the_trajectory_map_at_those_cells():
    torch.manual_seed(0)
    branch = tiny_model("shufflenetv2").eval().branch
    for p in branch.mov[0].parameters():   # nonzero bias: a zero-padded tap must not read it as an input
        torch.nn.init.normal_(p)
    feats = torch.randn(2, branch.K, 64, 5, 7)
    h, w = feats.shape[-2:]
    idx = torch.tensor([[0, w - 1, (h - 1) * w, h * w - 1, 8, 8], [1, w, 2 * w + 3, h * w - 2, 0, 17]])
    with torch.no_grad():
        full = branch.mov_cls(branch.mov(branch.stack(feats))).reshape(2, 2 * branch.K, h * w)
        at = TrajectoryAtCells(branch)(branch.stack(feats), idx)
    torch.testing.assert_close(at, torch.gather(full, 2, idx[:, None].expand(-1, 2 * branch.K, -1)),
                               rtol=1e-5, atol=1e-5)


def test_export_with_in_graph_decode_checks_it(tmp_path):
    record = export_onnx(tiny_model("shufflenetv2"), tmp_path, decode=True)
    assert record["parity_max_abs_error"]["decode"] < 1e-5   # the trajectory branch sums in another order
    proto = onnx.load(tmp_path / "head.onnx")
    assert [o.name for o in proto.graph.output] == ["tubelets"]

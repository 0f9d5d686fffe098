"""The device-resident GPU path (TorchCudaBackend) through the Runtime, on the CPU with the kernels'
NumPy references (or the model's own modules) standing in for the kernels.

On a CUDA machine the same comparison runs with the real kernels (the last test)."""
import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from media import stream, video  # noqa: E402
from model_helpers import tiny_model  # noqa: E402

from edge_stad import Runtime  # noqa: E402
from edge_stad.preprocess import STD_BGR, normalize_clip  # noqa: E402
from edge_stad.torch_backends.cuda import ReferenceTensorOps, TorchCudaBackend  # noqa: E402
from edge_stad.torch_backends.streaming import TorchBackend  # noqa: E402

K, SIZE = 3, 64


@pytest.fixture(scope="module")
def model():
    return tiny_model("shufflenetv2", K=K, size=SIZE)


def run(backend, frames):
    runtime = Runtime(backend, min_tube_score=0.0)
    results = [r for _, r in stream(runtime, frames)]
    return runtime, results


def compare(host, device, frames, atol):
    host_rt, host_results = run(host, frames)
    device_rt, device_results = run(device, frames)
    host_windows, device_windows = [w for _, w in host_rt.windows()], [w for _, w in device_rt.windows()]
    assert len(host_windows) == len(device_windows) > 0
    for a, b in zip(host_windows, device_windows):
        assert a.frames == b.frames and sorted(a.tubelets) == sorted(b.tubelets)
        for label in a.tubelets:
            np.testing.assert_allclose(a.tubelets[label], b.tubelets[label], atol=atol)
    assert len(host_results) == len(device_results) == len(frames)
    for a, b in zip(host_results, device_results):
        np.testing.assert_allclose(a.tubes, b.tubes, atol=atol)
    return host_rt, device_rt


class ModuleOps(ReferenceTensorOps):
    """The kernels' preprocess reference, and the model's own micro-motion module: the device path then
    computes what the host path computes, operation for operation, and any difference is plumbing."""

    def micro_motion(self, clips, mm):
        return mm(clips)


def test_device_path_plumbing_equals_the_host_path(model):
    frames = video(40, hw=(SIZE, SIZE))   # at the model size: no resampling, the host and kernel inputs agree
    device = TorchCudaBackend(model, "cpu", ops=ModuleOps())
    assert device.link_matrices is None
    host, runtime = compare(TorchBackend(model), device, frames, atol=1e-5)
    stats = runtime.stats()
    assert stats["clips_encoded"] == host.stats()["clips_encoded"] >= 40 // 5
    assert stats["seconds"]["decode"] < stats["seconds"]["head"]   # decoded with the head, on the device


def test_reference_ops_encode_like_the_model(model):
    """The kernels' references in place of the model's preprocessing and micro-motion: the same features to float
    rounding (frames at the model size; at other sizes the resize may differ from cv2's by a grey level)."""
    device = TorchCudaBackend(model, "cpu", ops=ReferenceTensorOps())
    clip = np.stack(video(5, hw=(SIZE, SIZE), seed=3))
    prepared = [device.prepare(frame) for frame in clip]
    assert prepared[0].shape == (3, SIZE, SIZE) and prepared[0].dtype == torch.float32
    feat, wh = device.encode_prepared([prepared])
    host_feat, host_wh = TorchBackend(model).encode(clip[None])
    np.testing.assert_allclose(feat.numpy(), host_feat, atol=1e-5 * np.abs(host_feat).max(), rtol=1e-4)
    np.testing.assert_allclose(wh.numpy(), host_wh, atol=1e-5 * np.abs(host_wh).max(), rtol=1e-4)
    np.testing.assert_allclose(device.encode(clip[None])[0], host_feat, atol=1e-5 * np.abs(host_feat).max())
    other = device.prepare(video(1, hw=(72, 96))[0])
    resized = cv2.resize(video(1, hw=(72, 96))[0], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)
    assert np.abs(other.numpy() - normalize_clip([resized])).max() <= 1 / 255 / min(STD_BGR) + 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device for PyTorch")
def test_cuda_kernels_path_equals_the_host_path(model):
    frames = video(40, hw=(SIZE, SIZE))
    device = TorchCudaBackend(model, "cuda")
    assert device.link_matrices is not None
    compare(TorchBackend(model.to("cuda")), device, frames, atol=1e-3)

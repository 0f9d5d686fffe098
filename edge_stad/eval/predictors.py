"""The offline predictor of each backend kind (:mod:`edge_stad.engines.protocols`), in one place: ``edge-stad
eval --engine``, ``bench`` and the build's accuracy gate evaluate any engine the way its Runtime streams it."""
from edge_stad.eval.evaluate import evaluate, split_videos
from edge_stad.eval.predict import predict
from edge_stad.eval.predict_frames import predict_frame_detections
from edge_stad.eval.predict_snippets import predict_snippets
from edge_stad.eval.predict_ssd import predict_ssd_detections


def predict_backend(backend, dataset, videos, progress=None, linker="online", refresh=1):
    """:class:`~edge_stad.eval.detections.Detections` of ``videos`` by ``backend`` (AMMA's stream mode); ``refresh``
    for frame and snippet backends with a 3D branch, ``linker`` for frame and SSD backends."""
    if backend.kind == "frame":
        return predict_frame_detections(backend, dataset, videos, refresh, linker, progress)
    if backend.kind == "ssd":
        return predict_ssd_detections(backend, dataset, videos, linker, progress)
    if backend.kind == "snippet":
        return predict_snippets(backend, dataset, videos, refresh, progress)
    return predict(backend, dataset, videos, progress=progress)


def evaluate_backend_of_any_kind(backend, dataset, split=1, progress=None):
    """Frame-mAP / video-mAP of ``backend`` on the test videos of ``split`` (an ``Evaluation``)."""
    videos = split_videos(dataset.gt, split)
    return evaluate(dataset.gt, predict_backend(backend, dataset, videos, progress), split=split)

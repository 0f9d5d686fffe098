"""Which quantized layers hurt most: measured, per tensor, on real windows.

Both the FP32 and the QDQ graph are run on the same feeds with every intermediate
tensor exposed (``onnxruntime.quantization.qdq_loss_debug``). For each quantized
activation we get two signal-to-quantization-noise ratios (dB, higher is better):
``local`` (the tensor before vs after its own Q/DQ pair: the rounding error that layer
adds) and ``accumulated`` (FP32 tensor vs the QDQ model's tensor: all error up to there).
Ranked worst ``local`` first, the producing nodes are what the builder keeps in float
when the accuracy gate fails.
"""
import os
import tempfile
from typing import List, NamedTuple

import numpy as np

from edge_stad.quant.int8 import _quantization, feed_reader


class LayerError(NamedTuple):
    node: str
    op_type: str
    tensor: str
    local_db: float
    accumulated_db: float


def _finite(x):
    x = float(np.mean(x)) if np.ndim(x) else float(x)
    return x if np.isfinite(x) else float("inf")


def layer_errors(fp32_path, int8_path, feeds) -> List[LayerError]:
    """Per quantized activation, worst local SQNR first (see the module docstring)."""
    import onnx

    _quantization()
    from onnxruntime.quantization import qdq_loss_debug as debug

    producers = {out: node for node in onnx.load(str(fp32_path)).graph.node for out in node.output}
    with tempfile.TemporaryDirectory(prefix="edge_stad_sensitivity_") as tmp:
        augmented = {}
        for name, path in (("float", fp32_path), ("qdq", int8_path)):
            augmented[name] = os.path.join(tmp, name + ".onnx")
            debug.modify_model_output_intermediate_tensors(str(path), augmented[name])
        float_acts = debug.collect_activations(augmented["float"], feed_reader(feeds))
        qdq_acts = debug.collect_activations(augmented["qdq"], feed_reader(feeds))
    matching = debug.create_activation_matching(qdq_acts, float_acts)
    errors = debug.compute_activation_error(matching)
    rows = []
    for tensor, err in errors.items():
        node = producers.get(tensor)
        if node is None or "qdq_err" not in err:
            continue
        rows.append(LayerError(node.name, node.op_type, tensor, _finite(err["qdq_err"]),
                               _finite(err.get("xmodel_err", float("inf")))))
    return sorted(rows, key=lambda r: r.local_db)

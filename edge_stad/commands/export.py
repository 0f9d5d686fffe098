"""Export a checkpoint to the two streaming ONNX graphs, as an FP32 engine folder.

  encoder.onnx   uint8 BGR clip (B, n, H, W, 3), resized, oldest frame first
                 -> clip feature (B, 64, H/8, W/8), size map (B, 2, H/8, W/8);
                 the normalisation is inside the graph
  head.onnx      K cached features (B, K, 64, h, w) and size maps (B, K, 2, h, w), oldest
                 first -> the decoded tubelets (B, 100, 4K+2) (3x3 peak filter, TopK and the
                 trajectory branch at the top cells in the graph); with --decode host the
                 maps hm (after sigmoid), mov, wh instead

TorchScript exporter, opset 17 (19 for the dcn decoder's DeformConv), static shapes
(batch 1, the model's input size) unless --dynamic-batch. onnx.checker, strict shape
inference and an ONNX Runtime vs PyTorch parity check (error < 1e-4, relative to outputs
larger than 1) run after the export; the folder gets a manifest.json and
reference_io.npz like every engine. `edge-stad build` does this and more (FP16, INT8,
TensorRT).

  edge-stad export --checkpoint runs/demo/best.pt --out engines/demo_fp32
"""
HELP = "export a checkpoint to the streaming ONNX graphs (encoder, head) with parity checks"


def add_arguments(p):
    from edge_stad.commands import build

    build.add_model_arguments(p)
    p.add_argument("--out", help="engine folder (default engines/<model>_<backbone>_k<K>_fp32)")
    p.add_argument("--force", action="store_true", help="replace an existing folder")
    build.add_decode_argument(p)
    p.add_argument("--dynamic-batch", action="store_true", help="dynamic batch axis (multi-camera batching)")


def run(args):
    from edge_stad.commands import build

    args.precision, args.backend = "fp32", "onnxruntime"
    return build.build_from_args(args)

"""What this machine has, and what Runtime(ENGINE, backend="auto") runs here and why.

Lists the NVIDIA driver and GPUs (compute capability), TensorRT, ONNX Runtime and its
execution providers, NVRTC and the driver the CUDA kernels would use (cuda-python or
pycuda), OpenCV (GStreamer or not), PyTorch and jtop; then, for an engine folder or a
checkpoint, the backend, providers, precision and kernels the runtime picks, with the
reason for each, and what to install to get more (TensorRT, the CUDA provider, the
kernels' bindings). An engine folder is also opened as the runtime would open it.
Exits 1 when the engine cannot run here.

  edge-stad doctor                                        # this machine
  edge-stad doctor engines/amma_shufflenetv2_k3_int8      # ... and what runs this engine
  edge-stad doctor --json > machine.json                  # for a bug report
  edge-stad doctor ENGINE --machine machine.json          # the choices on a recorded machine
"""
import json
import sys

HELP = "what this machine has (GPU, TensorRT, ONNX Runtime, NVRTC, OpenCV) and what runs an engine here, and why"


def add_arguments(p):
    p.add_argument("engine", nargs="?", help="an engine folder (edge-stad build) or a checkpoint .pt")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON (for bug reports)")
    p.add_argument("--machine", metavar="FILE",
                   help="decide for a machine recorded with --json instead of probing this one (the engine is "
                        "then not opened)")


def run(args):
    from edge_stad.diagnosis import doctor, load_machine

    machine = load_machine(args.machine) if args.machine else None
    report = doctor(args.engine, machine, out=None if args.json else sys.stdout)
    if args.json:
        print(json.dumps(report, indent=1))
    return 1 if report["runs"] is False else 0

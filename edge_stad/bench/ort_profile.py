"""Where an ONNX graph spends its time in ONNX Runtime, by operator type (ORT's own profiler)."""
import collections
import json
import os
import tempfile


def op_profile(model_path, feed, runs=10, warmup=3, threads=None):
    """``[(op_type, ms per run, share of kernel time)]`` for ``model_path`` on ``feed``, largest first."""
    import onnxruntime as ort

    from edge_stad.engines.onnxruntime_backend import DISABLED_OPTIMIZERS

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "ort")
        session = ort.InferenceSession(os.fspath(model_path), options, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=DISABLED_OPTIMIZERS)
        for _ in range(warmup + runs):
            session.run(None, feed)
        with open(session.end_profiling()) as f:
            events = json.load(f)
    total = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            total[event["args"]["op_name"]] += event["dur"]
    overall = sum(total.values()) or 1
    return [(op, us / 1000 / (warmup + runs), us / overall) for op, us in total.most_common()]

"""The benchmark run matrix behind ``edge-stad bench``: model x backbone x K x precision x backend.

For every model x backbone x K the harness builds the engines asked for (:func:`edge_stad.build.pipeline.build_engine`;
INT8 calibrated on synthetic training frames, or on the labelled set when one is given), opens them next
to the same-run baseline (the FP32 PyTorch model behind the same Runtime), and streams one fixed
synthetic video through all of them in interleaved rounds (:mod:`~edge_stad.bench.streaming`) while
telemetry is sampled in the background (:mod:`~edge_stad.bench.telemetry`). Each engine gets one record:
params and MACs (:mod:`~edge_stad.bench.complexity`), engine size, FPS and its ratio to the baseline,
latency percentiles, per-stage times, memory, power, achieved MAC/s against the backend's measured GEMM
peak (:mod:`~edge_stad.bench.peak`) and, with a labelled set, frame-/video-mAP. Combinations that cannot
run here are listed in ``skipped`` with the reason.

Building engines needs torch and onnx (imported when a run starts); this module imports without them.
"""
import copy
import datetime
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional, Tuple

import numpy as np

from edge_stad.atomic import atomic_write
from edge_stad.bench import telemetry
from edge_stad.bench.latency import latency_summary
from edge_stad.bench.machine import machine_info, versions
from edge_stad.bench.streaming import interleaved
from edge_stad.defaults import MIN_TUBE_SCORE
from edge_stad.errors import ConfigError, EngineError, ExportError, MissingDependencyError
from edge_stad.model_config import SNIPPET, SSD, frames_per_clip
from edge_stad.runtime.stream import STAGES

MODELS = ("amma", "menet-lite", "menet", "stma-lite", "flow-fusion-lite")
BACKBONES = ("resnet18", "mobilenetv2", "shufflenetv2", "resnext101")   # MENet's: its 3D branch
DEFAULT_BACKBONES = {"amma": "shufflenetv2", "menet-lite": "shufflenetv2", "menet": "resnext101",
                     "stma-lite": "shufflenetv2", "flow-fusion-lite": "mobilenetv2"}
DEFAULT_K = {"amma": 3, "stma-lite": 5}   # the families with tubelets of K frames (--K); the others 1
PRECISIONS = ("fp32", "fp16", "int8")
BACKENDS = ("onnxruntime", "tensorrt", "torch")
BASELINE = ("torch", "fp32")
RANDOM_INPUT_SIZE = 128
# Paper Table 3's setting: the params and paper-convention GMAC columns are counted for it, whatever
# the timed engine's size, K, decoder or classes (those go into the stream GMAC column).
PAPER_SETTING = {"input_size": (288, 288), "K": 5, "decoder": "dcn", "num_classes": 21}
# MENet's paper's cost setting: YOWO's 224x224 and UCF101-24's 24 classes; GMACs per frame.
MENET_PAPER_SETTING = {"input_size": (224, 224), "num_classes": 24}
# The flow-fusion paper's input (RFBNet300), and flow-fusion-lite's (the size its paper presets train at).
SSD_PAPER_SIZE = {"flow-fusion": (300, 300), "flow-fusion-lite": (320, 320)}
MB = float(1 << 20)


@dataclass
class BenchConfig:
    models: Tuple[str, ...] = ("amma",)
    backbones: Optional[Tuple[str, ...]] = None   # None: the family's (DEFAULT_BACKBONES), or the checkpoint's
    Ks: Optional[Tuple[int, ...]] = None          # None: 3, or the checkpoint's; AMMA only
    precisions: Tuple[str, ...] = ("fp32", "int8")
    backends: Tuple[str, ...] = BACKENDS
    device: str = "auto"
    checkpoint: Optional[str] = None              # None: random weights (speed only)
    input_size: Optional[int] = None              # None: 128 with random weights, else the checkpoint's
    num_classes: int = 8                          # random weights without a labelled set
    frames: int = 300
    warmup: int = 50
    rounds: int = 3
    threads: Optional[int] = None
    data: Optional[str] = None                    # labelled ACT set: accuracy, INT8 calibration and gate
    calib_clips: int = 32
    telemetry_interval: float = 0.1
    min_tube_score: float = MIN_TUBE_SCORE
    work: str = os.path.join("runs", "bench")

    def check(self):
        def known(name, values, allowed):
            bad = [v for v in values if v not in allowed]
            if bad or not values:
                raise ConfigError(f"unknown {name} {', '.join(map(repr, bad)) or '(none given)'}; expected "
                                  f"one or more of {', '.join(allowed)}")

        known("model", self.models, MODELS)
        known("backbone", self.backbones or BACKBONES, BACKBONES)
        known("precision", self.precisions, PRECISIONS)
        known("backend", self.backends, BACKENDS)
        if any(k < 1 for k in self.Ks or ()):
            raise ConfigError(f"K must be >= 1, got {self.Ks}")
        if self.device != "auto" and self.device != "cpu" and not _is_cuda(self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.input_size is not None and (self.input_size < 32 or self.input_size % 32):
            raise ConfigError(f"input size must be a positive multiple of 32, got {self.input_size}")
        if self.rounds < 1 or self.warmup < 0 or self.frames <= self.warmup:
            raise ConfigError(f"need rounds >= 1 and frames > warmup >= 0, got rounds={self.rounds}, "
                              f"frames={self.frames}, warmup={self.warmup}")
        if self.checkpoint is not None and not os.path.isfile(self.checkpoint):
            raise ConfigError(f"checkpoint {self.checkpoint} does not exist")
        if self.data is not None and not os.path.exists(self.data):
            raise ConfigError(f"labelled set {self.data} does not exist (generate one: edge-stad synth --out "
                              f"{self.data})")
        return self


def _is_cuda(device):
    head, _, index = device.partition(":")
    return head == "cuda" and (index == "" or index.isdigit())


def resolve_device(device):
    """``auto`` -> ``cuda:0`` where torch, ONNX Runtime or TensorRT sees a GPU, else ``cpu``; ``cuda`` -> ``cuda:0``."""
    if device == "cuda":
        return "cuda:0"
    if device != "auto":
        return device
    import onnxruntime

    from edge_stad.engines import tensorrt_runtime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers() or tensorrt_runtime.available():
        return "cuda:0"
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def skip_reason(backend, precision, device):
    """Why ``backend`` cannot run ``precision`` on ``device`` here, or None."""
    gpu = device != "cpu"
    if backend == "torch":
        if precision != "fp32":
            return "the PyTorch backend runs FP32 (the baseline); FP16 and INT8 run as onnxruntime/tensorrt engines"
        try:
            import torch
        except ImportError:
            return "torch is not installed"
        if gpu and not torch.cuda.is_available():
            return f"this torch ({torch.__version__}) sees no CUDA device"
    elif backend == "tensorrt":
        from edge_stad.engines import tensorrt_runtime

        if not gpu:
            return "TensorRT runs on NVIDIA GPUs and this run is on the CPU (--device cuda)"
        if not tensorrt_runtime.available():
            return "tensorrt is not importable here (pip install tensorrt; on JetPack: python3-libnvinfer)"
    elif gpu:
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "this onnxruntime has no CUDAExecutionProvider (pip install onnxruntime-gpu)"
    return None


def _providers(device):
    if device == "cpu":
        return ["CPUExecutionProvider"]
    return [("CUDAExecutionProvider", {"device_id": int(device.partition(":")[2] or 0)}), "CPUExecutionProvider"]


class _Runner:
    """One thing to time: an opened backend and what the record says about it."""

    def __init__(self, name, backend, precision, kind, engine=None, engine_mb=None, int8_flavor=None):
        self.name, self.backend, self.precision, self.kind = name, backend, precision, kind
        self.engine, self.engine_mb, self.int8_flavor = engine, engine_mb, int8_flavor
        self.samplers = []


def _load_model(cfg, name, backbone, K, num_classes):
    import torch

    from edge_stad.models import create_model
    from edge_stad.models.checkpoint import load_checkpoint

    if cfg.checkpoint:
        overrides = {"input_size": (cfg.input_size,) * 2} if cfg.input_size else {}
        return load_checkpoint(cfg.checkpoint, **overrides).eval()
    torch.manual_seed(0)
    size = cfg.input_size or RANDOM_INPUT_SIZE
    if name in SSD:
        return create_model(name, backbone=backbone, num_classes=num_classes, input_size=size).eval()
    if name not in DEFAULT_K:
        return create_model(name, backbone_3d=backbone, num_classes=num_classes, input_size=size).eval()
    return create_model(name, backbone=backbone, K=K, num_classes=num_classes, input_size=size).eval()


def _groups(cfg):
    """``[(model, backbone, K)]``: the checkpoint's own, or the product asked for."""
    if cfg.checkpoint:
        from edge_stad.models.checkpoint import load_checkpoint

        config = load_checkpoint(cfg.checkpoint).config   # also infers the authors' checkpoints' config
        held = {"backbone": config.get("backbone", config.get("backbone_3d")), "K": config.get("K", 1)}
        for flag, name, asked in (("--backbones", "backbone", cfg.backbones), ("--K", "K", cfg.Ks)):
            if asked and tuple(asked) != (held[name],):
                raise ConfigError(f"{cfg.checkpoint} holds {name} {held[name]}; leave {flag} out or pass "
                                  f"{held[name]}")
        return [(config["name"], held["backbone"], held["K"])]
    return [(m, b, k) for m in cfg.models for b in (cfg.backbones or (DEFAULT_BACKBONES[m],))
            for k in ((cfg.Ks or (DEFAULT_K[m],)) if m in DEFAULT_K else (1,))]


def complexity(model):
    """Params and GMACs per clip: at paper Table 3's setting (:data:`PAPER_SETTING`), and the timed model's
    true streaming cost at its own size (what achieved MAC/s is computed from). A MENet's clip is one
    frame (the whole model per frame), its paper setting :data:`MENET_PAPER_SETTING`. An STMA's paper
    column is one window from scratch at :data:`MENET_PAPER_SETTING` (the paper reports no cost); its clip
    in the stream is one new frame (per-frame outputs cached, the 3D branch every frame). A flow-fusion
    model's paper column is its paper input size (:data:`SSD_PAPER_SIZE`; the paper reports times, not MACs), its
    clip in the stream one new frame (one pair's flow, the detector)."""
    from edge_stad.bench.complexity import profile_amma, profile_menet
    from edge_stad.models import create_model

    config = {k: v for k, v in model.config.items() if k != "name"}
    if model.config["name"] in SNIPPET:
        from edge_stad.bench.stma_complexity import profile_stma

        paper = profile_stma(create_model(model.config["name"], **dict(config, **MENET_PAPER_SETTING)))
        own = profile_stma(model)
        return {"params_m": paper["params"]["total"] / 1e6, "paper_gmac_per_clip": paper["macs"]["clip"]["total"] / 1e9,
                "model_params_m": own["params"]["total"] / 1e6,
                "stream_gmac_per_clip": own["macs"]["stream"]["1"]["total"] / 1e9}
    if model.config["name"] in SSD:
        from edge_stad.bench.flow_complexity import profile_flow_fusion

        config.pop("priors")   # sized for the trained input; the defaults of the paper size
        paper = profile_flow_fusion(create_model(model.config["name"], **dict(
            config, input_size=SSD_PAPER_SIZE[model.config["name"]])))
        own = profile_flow_fusion(model)
        return {"params_m": paper["params"]["total"] / 1e6,
                "paper_gmac_per_clip": paper["macs"]["stream"]["total"] / 1e9,
                "model_params_m": own["params"]["total"] / 1e6,
                "stream_gmac_per_clip": own["macs"]["stream"]["total"] / 1e9}
    if model.config["name"] != "amma":
        config.pop("anchors")   # sized for the grid of the trained input; the counts do not depend on them
        paper = profile_menet(create_model(model.config["name"], **dict(config, **MENET_PAPER_SETTING)))
        own = profile_menet(model)
        return {"params_m": paper["params"]["total"] / 1e6,
                "paper_gmac_per_clip": paper["macs"]["frame"]["total"] / 1e9,
                "model_params_m": own["params"]["total"] / 1e6,
                "stream_gmac_per_clip": own["macs"]["frame"]["total"] / 1e9}
    paper = profile_amma(create_model(model.config["name"], **dict(config, **PAPER_SETTING)))
    own = profile_amma(model)
    return {"params_m": paper["params"]["total"] / 1e6, "paper_gmac_per_clip": paper["macs"]["paper"]["total"] / 1e9,
            "model_params_m": own["params"]["total"] / 1e6,
            "stream_gmac_per_clip": own["macs"]["stream"]["total"] / 1e9}


def _calibration_data(cfg, config, log):
    """The labelled set, or a ``.npy`` of windows from the synthetic training videos (made once per shape)."""
    if cfg.data:
        return cfg.data
    from edge_stad.data.synth.generate import synthetic_stream
    from edge_stad.quant.calibration import windows_from_frames

    h, w = config["input_size"]
    path = os.path.join(cfg.work, "calibration", f"synth_train_k{config.get('K', 1)}_n{frames_per_clip(config)}_{h}x{w}"
                                                 f"_{cfg.calib_clips}.npy")
    if not os.path.isfile(path):
        log(f"[calibration] {cfg.calib_clips} windows of the synthetic training videos -> {path}")
        frames = synthetic_stream(max(400, cfg.calib_clips * frames_per_clip(config)), split="train")
        windows = np.stack(windows_from_frames(frames, config, cfg.calib_clips, "the synthetic training videos"))
        with atomic_write(path, "wb") as f:
            np.save(f, windows)
    return path


def _build(cfg, model, labels, precision, backend, device, log):
    from edge_stad.backends import open_backend
    from edge_stad.build.pipeline import BuildOptions, build_engine, engine_name

    name = engine_name(model.config, precision)
    size = "x".join(map(str, model.config["input_size"]))
    out = os.path.join(cfg.work, "engines", f"{name}_{size}_{backend}")
    opts = BuildOptions(precision=precision, backend=backend, force=True, random_weights=not cfg.checkpoint,
                        calibration_dir=os.path.join(cfg.work, "calibration"), calib_clips=cfg.calib_clips,
                        calib_data=_calibration_data(cfg, model.config, log) if precision == "int8" else None)
    manifest = build_engine(model, out, opts, labels=labels, command="edge-stad bench", log=log)
    opened = open_backend(out, backend, threads=cfg.threads, providers=_providers(device) if backend != "tensorrt"
                          else None, device=int(device.partition(":")[2] or 0))
    files = manifest["plans"] if backend == "tensorrt" else manifest["graphs"]
    engine_mb = sum(os.path.getsize(os.path.join(out, f)) for f in files.values()) / MB
    return _Runner(f"{backend} {precision}", opened, precision, backend, out, engine_mb, manifest.get("int8_flavor"))


def _torch_runner(model, device):
    from edge_stad.torch_backends.streaming import torch_backend

    model = model if device == "cpu" else copy.deepcopy(model).to(device)
    size = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers())) / MB
    return _Runner("torch fp32", torch_backend(model), "fp32", "torch", None, size)


def _accuracy(runner, dataset):
    from edge_stad.eval.predictors import evaluate_backend_of_any_kind

    if runner.backend.config["num_classes"] != len(dataset.labels):
        return telemetry.unavailable(f"the model has {runner.backend.config['num_classes']} classes, the labelled "
                                     f"set {len(dataset.labels)}")
    ev = evaluate_backend_of_any_kind(runner.backend, dataset)
    return {"frame_mAP@0.5": 100 * float(ev.frame.mean), "video_mAP@0.5": 100 * float(ev.video[0.5].mean),
            "test_videos": len(ev.videos)}


class _Peaks:
    """GEMM peaks measured once per (backend, precision, INT8 flavour) in a run."""

    def __init__(self, device, threads, log):
        self.device, self.threads, self.log, self.found = device, threads, log, {}

    def __call__(self, backend, precision, flavor):
        key = (backend, precision, flavor or "")
        if key not in self.found:
            from edge_stad.bench.peak import PeakUnavailable, measure_peak

            try:
                peak = measure_peak(backend, precision, self.device, self.threads,
                                    _providers(self.device) if backend == "onnxruntime" else None, flavor or "cpu")
                self.log(f"[peak] {backend} {precision}: {peak['gmac_per_s']:.1f} GMAC/s ({peak['gemm']})")
            except (PeakUnavailable, MissingDependencyError, EngineError) as e:
                peak = {"gmac_per_s": telemetry.unavailable(e)}
            self.found[key] = dict(peak, backend=backend, precision=precision, int8_flavor=flavor,
                                   device=self.device)
        return self.found[key]


def _power(summaries):
    """Average power (W) over the sampled streams, from energy where a source counted it, else mean power."""
    for source, summary in summaries.items():
        if isinstance(summary, dict) and summary.get("seconds") and "energy_j" in summary:
            return summary["energy_j"] / summary["seconds"], source
    for source, summary in summaries.items():
        if isinstance(summary, dict) and "power_w" in summary:
            return summary["power_w"]["mean"], source
    return None, None


def _record(runner, runs, info, baseline_fps, peak, missing):
    fps_rounds = [r.fps for r in runs]
    fps = statistics.median(fps_rounds)
    steady = sum(len(r.push_s) - r.warmup for r in runs)
    steady_s = sum(r.steady_s for r in runs)
    clips_per_s = sum(r.clips for r in runs) / steady_s
    achieved = info["stream_gmac_per_clip"] * clips_per_s
    summaries = {s.source.name: s.summary() for s in runner.samplers}
    summaries.update(missing)
    power, power_source = _power(summaries)
    gone = missing.get("power") or telemetry.unavailable(f"{', '.join(s.source.name for s in runner.samplers)} "
                                                         "gave no power reading")
    rss = summaries.get("psutil", {})
    rss = rss["rss_mb"]["max"] if isinstance(rss, dict) and "rss_mb" in rss else missing.get(
        "psutil", telemetry.unavailable("no RSS reading"))
    if runner.kind == "torch" and info["device"] != "cpu":
        import torch

        gpu_memory = torch.cuda.max_memory_allocated(info["device"]) / MB
    elif isinstance(summaries.get("nvml"), dict) and "gpu_memory_mb" in summaries["nvml"]:
        gpu_memory = summaries["nvml"]["gpu_memory_mb"]["max"]   # the whole GPU's, every process
    elif info["device"] == "cpu":
        gpu_memory = telemetry.unavailable("a CPU run has no GPU memory")
    elif telemetry.is_jetson():
        gpu_memory = telemetry.unavailable("the Jetson's GPU shares system memory: see peak RSS")
    else:
        gpu_memory = missing.get("nvml") or telemetry.unavailable("NVML gave no memory reading")
    peak_gmacs = peak["gmac_per_s"]
    record = dict(info)
    record.update({
        "precision": runner.precision, "backend": runner.kind, "int8_flavor": runner.int8_flavor,
        "baseline": (runner.kind, runner.precision) == BASELINE, "engine": runner.engine,
        "engine_mb": runner.engine_mb,
        "fps": fps, "fps_rounds": fps_rounds, "vs_pytorch_fp32": fps / baseline_fps if baseline_fps else None,
        "latency_ms": latency_summary([r.push_s for r in runs], runs[0].warmup),
        "flush_ms": 1e3 * statistics.median(r.flush_s for r in runs),
        "stages_ms_per_frame": {k: 1e3 * sum(r.stage_s[k] for r in runs) / steady for k in STAGES},
        "clips_per_s": clips_per_s, "achieved_gmac_per_s": achieved, "peak_gmac_per_s": peak_gmacs,
        "peak_gemm": peak.get("gemm"),
        "fraction_of_peak": achieved / peak_gmacs if isinstance(peak_gmacs, float) else peak_gmacs,
        "rss_peak_mb": rss, "gpu_memory_mb": gpu_memory,
        "power_w": power if power is not None else gone,
        "power_source": power_source,
        "energy_per_clip_j": power / clips_per_s if power is not None else gone,
        "fps_per_w": fps / power if power else gone,
        "telemetry": summaries,
    })
    return record


def run_bench(cfg, command=None, log=print, progress=True):
    """Run the matrix of ``cfg`` (a :class:`BenchConfig`); returns the results document (records, skipped, ...)."""
    from tqdm import tqdm

    cfg.check()
    started, clock = datetime.datetime.now().isoformat(timespec="seconds"), time.perf_counter()
    device = resolve_device(cfg.device)
    groups = _groups(cfg)
    try:
        import torch
    except ImportError:
        raise MissingDependencyError("edge-stad bench builds its engines from PyTorch models: pip install torch "
                                     "onnx (or pip install -e .[train])") from None
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dataset, labels, num_classes = None, (), cfg.num_classes
    if cfg.data:
        from edge_stad.data.act import ActDataset

        dataset = ActDataset(cfg.data)
        labels, num_classes = tuple(dataset.labels), len(dataset.labels)
    if cfg.checkpoint:
        from edge_stad.models.checkpoint import read_checkpoint

        labels = tuple(read_checkpoint(cfg.checkpoint)["meta"].get("labels") or ())
    from edge_stad.data.synth.generate import synthetic_stream

    frames = synthetic_stream(cfg.frames, split="test")
    plan, skipped = [], []
    for backend in cfg.backends:
        for precision in cfg.precisions:
            reason = skip_reason(backend, precision, device)
            if reason is None:
                plan.append((backend, precision))
            else:
                skipped.extend(dict(model=m, backbone=b, K=k, backend=backend, precision=precision, reason=reason)
                               for m, b, k in groups)
    sources, missing = telemetry.open_sources(device)
    peaks = _Peaks(device, cfg.threads, log)
    builds, runners_per_group = len(set(plan) - {BASELINE}), len(set(plan) | {BASELINE})
    weights = f"checkpoint {cfg.checkpoint}" if cfg.checkpoint else "random (untrained, built here; speed only)"
    log(f"edge-stad bench on {device}: {len(groups)} model(s) x {builds} engine(s) + the PyTorch FP32 baseline; "
        f"weights: {weights}")
    for name, reason in missing.items():
        log(f"[telemetry] {name}: {reason}")
    records = []
    bar = tqdm(total=len(groups) * (builds + runners_per_group * cfg.rounds), desc="bench", unit="step",
               disable=not progress, file=sys.stderr)
    try:
        for model_name, backbone, K in groups:
            model = _load_model(cfg, model_name, backbone, K, num_classes)
            info = {"model": model_name, "backbone": backbone, "K": K,
                    "clip_len": frames_per_clip(model.config), "input_size": list(model.config["input_size"]),
                    "decoder": model.config.get("decoder"), "num_classes": model.config["num_classes"],
                    "device": device, "weights": weights}
            info.update(complexity(model))
            runners = {}
            for backend, precision in plan:
                if (backend, precision) == BASELINE:
                    continue
                bar.set_postfix_str(f"build {backbone} K{K} {backend} {precision}")
                try:
                    runner = _build(cfg, model, labels, precision, backend, device,
                                    lambda s: log("  " + s))
                    runners[runner.name] = runner
                except (EngineError, ExportError, MissingDependencyError) as e:
                    skipped.append(dict(model=model_name, backbone=backbone, K=K, backend=backend,
                                        precision=precision, reason=str(e)))
                bar.update(1)
            baseline = _torch_runner(model, device)
            runners[baseline.name] = baseline
            for runner in runners.values():
                runner.samplers = [telemetry.Sampler(s, cfg.telemetry_interval) for s in sources]
            if device != "cpu":
                torch.cuda.reset_peak_memory_stats(device)
            bar.set_postfix_str(f"stream {backbone} K{K}")
            segments = {n: _Segment(r.samplers) for n, r in runners.items()}
            timings = interleaved({n: r.backend for n, r in runners.items()}, frames, cfg.rounds, cfg.warmup,
                                  cfg.min_tube_score, around=segments.__getitem__, progress=bar)
            baseline_fps = statistics.median(r.fps for r in timings[baseline.name])
            for name, runner in runners.items():
                flavor = runner.int8_flavor if runner.precision == "int8" else None
                record = _record(runner, timings[name], info, baseline_fps, peaks(runner.kind, runner.precision,
                                                                                    flavor), missing)
                record["accuracy"] = (_accuracy(runner, dataset) if dataset is not None else
                                      telemetry.unavailable("no labelled set given (--data)"))
                records.append(record)
                log(f"  {backbone} K{K} {name}: {record['fps']:.1f} frames/s "
                    f"({record['vs_pytorch_fp32']:.2f}x PyTorch FP32), p99 {record['latency_ms']['p99']:.1f} ms")
            for runner in runners.values():  # TensorRT holds device buffers until closed
                getattr(runner.backend, "close", lambda: None)()
    finally:
        bar.close()
        for source in sources:
            source.close()
    run = {"machine": machine_info(device), "versions": versions(), "config": asdict(cfg)}
    for record in records:  # each record stands alone: results of several machines can be pooled
        record.update(run)
    return dict(run, **{
        "command": command, "started": started, "wall_s": time.perf_counter() - clock, "weights": weights,
        "video": {"source": "synthetic benchmark (preset bench, seed 0), test videos back to back, rendered in "
                            "memory", "frames": len(frames), "resolution": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
                  "warmup_frames": cfg.warmup, "rounds": cfg.rounds},
        "peaks": list(peaks.found.values()),
        "telemetry": {"sources": [s.name for s in sources], "unavailable": missing},
        "records": records, "skipped": skipped,
    })


class _Segment:
    """Every sampler of a runner, started around each timed stream."""

    def __init__(self, samplers):
        self.samplers = samplers

    def __enter__(self):
        for sampler in self.samplers:
            sampler.start()

    def __exit__(self, *exc):
        for sampler in self.samplers:
            sampler.stop()

"""What action events cost a stream: frames/s with ActionEvents and an MQTT sink (and event clips) vs without.

    python benchmarks/events_overhead.py --engine engines/amma_shufflenetv2_k3_int8 --frames 1500 --rounds 5
    python benchmarks/events_overhead.py --engine ENGINE --clips              # also: event clips written
    python benchmarks/events_overhead.py --engine ENGINE --mqtt mqtt://broker.local:1883

The frames (--video, else the synthetic test videos of --data, cycled up to --frames) are decoded
into memory once. Each round streams them through a fresh Runtime per mode, the modes in a rotated
order: ``off`` (Runtime.push alone), ``mqtt`` (ActionEvents publishing every event, QoS 1, to a
Mosquitto this script starts on a free loopback port unless --mqtt names a broker), and with --clips
``mqtt+clips`` (also one MP4 per ended tube, 2 s pre- and post-roll, into a temporary folder). A
stream's frames/s counts every push and the flush, wall time; the MQTT client's network thread runs
meanwhile and competes for the cores, as it would in a camera app. The ratio to ``off`` is the median
over rounds of the per-round ratio, so that a slow drift of a shared machine cancels. Prints a table
and, with --results, writes .md and .json.
"""
import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _frames(args):
    from edge_stad.runtime.sources import open_source

    if args.video:
        with open_source(args.video) as source:
            clip = [frame for frame, _ in source]
    else:
        from edge_stad.data.act import ActDataset

        dataset = ActDataset(args.data, split=1)
        clip = [dataset.read_frame(v, f) for v in dataset.gt.test_videos[0]
                for f in range(1, dataset.gt.nframes[v] + 1)]
    return [clip[i % len(clip)] for i in range(args.frames)]


def _mosquitto(folder):
    """A local broker on a free port: (process, url)."""
    import socket

    binary = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/sbin")
    if binary is None:
        sys.exit("no mosquitto here (apt-get install mosquitto), and no --mqtt broker given")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = os.path.join(folder, "mosquitto.conf")
    with open(config, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    process = subprocess.Popen([binary, "-c", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, f"mqtt://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                sys.exit("mosquitto did not start")
            time.sleep(0.05)


def _stream(backend, frames, mode, args, url, folder):
    """One timed stream: (frames/s, events made, MQTT stats or None, clips written)."""
    from edge_stad.runtime.sinks import ActionEvents, MqttSink
    from edge_stad.runtime.stream import Runtime

    runtime = Runtime(backend, min_tube_score=args.min_score, pipeline=args.pipeline)
    events = sink = None
    if mode != "off":
        sink = MqttSink(url, "bench", queue_size=100000)
        while not sink.stats()["connected"]:
            time.sleep(0.01)
        events = ActionEvents(runtime, "bench", [sink], clips=folder if "clips" in mode else None, fps=25.0,
                              engine=args.engine)
    stepper = runtime if events is None else events
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        stepper.push(frame, i / 25.0)
    stepper.flush()
    seconds = time.perf_counter() - start
    runtime.close()
    if events is None:
        return len(frames) / seconds, 0, None, 0
    events.close()
    stats = events.stats()
    return len(frames) / seconds, sum(stats["events"].values()), sink.stats(), stats["clips_written"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engine", default=os.path.join("engines", "amma_shufflenetv2_k3_int8"))
    parser.add_argument("--video", help="a video file to stream (default: the synthetic test videos of --data)")
    parser.add_argument("--data", default=os.path.join("data", "synth_bench"))
    parser.add_argument("--frames", type=int, default=1500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-score", type=float, default=0.2, help="tubes that make events (as edge-stad run)")
    parser.add_argument("--pipeline", type=int, default=0, help="Runtime(pipeline=N)")
    parser.add_argument("--mqtt", help="a broker URL (default: start a local Mosquitto)")
    parser.add_argument("--clips", action="store_true", help="also time ActionEvents with event clips")
    parser.add_argument("--results", help="write the table and numbers to this path (.md and .json)")
    args = parser.parse_args(argv)

    from edge_stad.backends import open_backend
    from edge_stad.bench.machine import cpu_model

    frames = _frames(args)
    threads = None if not args.pipeline else max(1, (os.cpu_count() or 2) - 1)
    backend = open_backend(args.engine, "onnxruntime", threads=threads)
    modes = ["off", "mqtt"] + (["mqtt+clips"] if args.clips else [])
    work = tempfile.mkdtemp(prefix="events_overhead-")
    broker, url = (None, args.mqtt) if args.mqtt else _mosquitto(work)
    runs = {m: [] for m in modes}
    try:
        _stream(backend, frames[:100], "mqtt", args, url, os.path.join(work, "warmup"))   # first calls, untimed
        for r in range(args.rounds):
            for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
                folder = os.path.join(work, f"clips-{r}")
                runs[mode].append(_stream(backend, frames, mode, args, url, folder))
                shutil.rmtree(folder, ignore_errors=True)
                print(f"round {r + 1}/{args.rounds} {mode}: {runs[mode][-1][0]:.1f} frames/s", file=sys.stderr)
    finally:
        if broker is not None:
            broker.terminate()
            broker.wait()
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for mode in modes:
        fps = [run[0] for run in runs[mode]]
        ratio = statistics.median(a[0] / b[0] for a, b in zip(runs[mode], runs["off"]))
        mqtt = runs[mode][-1][2]
        rows.append({"mode": mode, "fps_median": statistics.median(fps), "fps": fps, "ratio_to_off": ratio,
                     "events": runs[mode][-1][1], "clips": runs[mode][-1][3],
                     "dropped": None if mqtt is None else mqtt["dropped"]})
    command = "python benchmarks/events_overhead.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [f"# Action events overhead: {os.path.basename(os.path.normpath(args.engine))}, {args.frames} frames, "
             f"{args.rounds} rounds", "", f"Command: `{command}`", "",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}; "
             f"broker {'local Mosquitto' if broker is not None else args.mqtt}.", "",
             "| mode | frames/s (median) | vs off | events per stream | clips per stream | dropped |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['mode']} | {r['fps_median']:.1f} | {r['ratio_to_off']:.3f}x | {r['events']} | {r['clips']} | "
              f"{'' if r['dropped'] is None else r['dropped']} |" for r in rows]
    text = "\n".join(lines) + "\n"
    if args.results:
        from edge_stad.bench.results import save_results

        save_results(args.results, text, {"command": command, "rows": rows})
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stream a video file, image folder, camera or network stream through an engine.

Frames go through edge_stad.Runtime as they are read; each frame's result (its action
tubes: box, class, score, tube id) is final about K x clip_len frames later and is then
drawn and written. A truncated or corrupt file ends cleanly with what decoded and says how
many frames it read of those its container declares; an unreadable image in a folder is
skipped and counted (--strict: either is an error); a live source that drops is reopened
with backoff. Ctrl-C stops reading and still
writes everything processed so far.

  edge-stad run video.mp4 --engine engines/amma_shufflenetv2_k3_int8 --out annotated.mp4
  edge-stad run frames/ --engine ENGINE --json detections.jsonl    # then: edge-stad eval
  edge-stad run 0 --engine ENGINE --show                           # camera 0, on screen
  edge-stad run rtsp://camera.local/stream --engine ENGINE --out cam.mp4 --max-frames 9000
  edge-stad run 0 --engine ENGINE --camera door --mqtt mqtt://broker.local:1883 --clips clips/
  edge-stad run "nvarguscamerasrc ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! appsink" --engine ENGINE

SOURCE: a video file, a folder of images (natural order), a camera index, an
rtsp/rtmp/http(s)/udp/tcp URL (anything OpenCV's VideoCapture opens), or a GStreamer
pipeline ending in appsink (where OpenCV was built with GStreamer, as JetPack's is).
--mqtt publishes every tube's started/updated/ended events as JSON (docs/events_format.md)
on edge_stad/<camera>/events; --clips writes one MP4 per ended tube with pre- and post-roll.
--json writes the detections format of docs/detections_format.md (every window's
tubelets and every finished tube) under the video name --video-name, so
`edge-stad eval --detections` scores it like the offline path.

Frames per second, on the progress bar, on the frames and at the end, are one figure:
edge_stad.Runtime's (frames over the time spent in Runtime.push and flush: preprocessing to
per-frame results; video decoding, drawing and writing excluded), as Runtime.stats()["fps"]
gives it. At the end, the tubes are counted as the Python API hands them out: the finished
tubes of Runtime.tubes(), how many of them reach --min-score (those are drawn; the same
default as Runtime(min_tube_score=)), and how many candidate tubes were started (tube ids
count these, so they run higher).
"""
import os
import sys

from edge_stad.defaults import MIN_TUBE_SCORE

HELP = "stream a video, image folder, camera or RTSP/HTTP URL through an engine (boxes, tubes, FPS)"
# the bar shows edge_stad.Runtime's frames/s (its postfix), not tqdm's rate, which would count decoding and drawing too
BAR = "{desc}: {n_fmt}/{total_fmt} frames [{elapsed}<{remaining}] {postfix}"


def add_arguments(p):
    p.add_argument("source", help="video file, image folder, camera index or stream URL")
    p.add_argument("--engine", required=True, help="engine folder (edge-stad build) or a checkpoint .pt (PyTorch)")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt", "torch"), default="auto",
                   help="auto: TensorRT plans where TensorRT imports, else ONNX Runtime (default)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all cores, cores-1 with --pipeline)")
    p.add_argument("--pipeline", type=int, nargs="?", const=1, default=0, metavar="N",
                   help="encode on N worker threads (default 1 when given without N) while this one links: more "
                        "frames/s on a small CPU, results N clips later (3 was fastest on 2 cores at 288x288, 1 at "
                        "128x128)")
    p.add_argument("--out", help="annotated video to write (.mp4, .m4v, .mov, .mkv or .avi)")
    p.add_argument("--json", help="detections file to write (.jsonl or .jsonl.gz)")
    p.add_argument("--video-name", help="video name in --json (default: the source's file or folder name)")
    p.add_argument("--show", action="store_true", help="show the annotated frames in a window (q quits)")
    p.add_argument("--min-score", type=float, default=MIN_TUBE_SCORE,
                   help="tubes with a lower mean score are not drawn or reported per frame (default %(default)s, "
                        "as Runtime(min_tube_score=))")
    p.add_argument("--max-frames", type=int, help="stop after this many frames (live sources run until stopped)")
    p.add_argument("--reconnect-attempts", type=int, default=5,
                   help="reopen attempts, with backoff, when a live source drops (default 5)")
    p.add_argument("--strict", action="store_true",
                   help="a video that ends before the frames its container declares, or an unreadable image in a "
                        "folder, is an error (default: a warning, the frames that decoded are kept)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    events = p.add_argument_group("action events (MQTT) and event clips",
                                  "events and clips are made for the tubes that reach --min-score")
    events.add_argument("--camera", help="camera name in events, topics and clip names (default: the source's "
                                         "file or folder name, else 'camera')")
    events.add_argument("--mqtt", metavar="URL", help="publish events to this broker: mqtt://[user@]host[:port], "
                                                      "mqtts:// for TLS; the password may come from the environment "
                                                      "variable EDGE_STAD_MQTT_PASSWORD")
    events.add_argument("--mqtt-topic", default="edge_stad/{camera}/events",
                        help="topic template, with {camera} and {type} (default edge_stad/{camera}/events)")
    events.add_argument("--mqtt-ca", metavar="FILE", help="CA bundle for mqtts:// (default: the system's)")
    events.add_argument("--mqtt-cert", metavar="FILE", help="client certificate for mqtts://")
    events.add_argument("--mqtt-key", metavar="FILE", help="client certificate's key for mqtts://")
    events.add_argument("--mqtt-queue", type=int, default=1000, metavar="N",
                        help="events kept while the broker is away; beyond that they are dropped, counted and "
                             "logged (default 1000)")
    events.add_argument("--update-interval", type=float, default=1.0, metavar="S",
                        help="seconds of video between a tube's 'updated' events (default 1; 0: every frame)")
    events.add_argument("--clips", metavar="DIR", help="write one MP4 per ended tube here, its path in the "
                                                       "'ended' event")
    events.add_argument("--pre-roll", type=float, default=2.0, metavar="S",
                        help="seconds of video before a tube in its clip (default 2)")
    events.add_argument("--post-roll", type=float, default=2.0, metavar="S",
                        help="seconds of video after a tube in its clip (default 2)")
    events.add_argument("--annotate-clips", action="store_true", help="draw the tubes into the clips")
    events.add_argument("--max-clips", type=int, default=8, metavar="N",
                        help="clips written at once, each encoding every frame; a tube that starts while N are "
                             "open gets none, counted in the summary (default 8)")


def _video_name(args):
    if args.video_name:
        return args.video_name
    base = os.path.basename(os.path.normpath(str(args.source)))
    return os.path.splitext(base)[0] or str(args.source)


def _camera_name(args):
    if args.camera:
        return args.camera
    source = str(args.source)
    if os.path.exists(source):
        from edge_stad.runtime.sinks.clips import safe_name

        return safe_name(_video_name(args))
    return "camera"


def _events(args, runtime, fps):
    """The ActionEvents that --mqtt and --clips ask for, or None."""
    if not (args.mqtt or args.clips):
        return None
    from edge_stad.runtime.sinks import ActionEvents, MqttSink

    camera = _camera_name(args)
    sinks = []
    if args.mqtt:
        sinks.append(MqttSink(args.mqtt, camera, topic=args.mqtt_topic,
                              password=os.environ.get("EDGE_STAD_MQTT_PASSWORD"), ca_certs=args.mqtt_ca,
                              certfile=args.mqtt_cert, keyfile=args.mqtt_key, queue_size=args.mqtt_queue))
    return ActionEvents(runtime, camera, sinks, clips=args.clips, fps=fps, pre_roll=args.pre_roll,
                        post_roll=args.post_roll, annotate_clips=args.annotate_clips, max_open_clips=args.max_clips,
                        update_interval=args.update_interval, engine=args.engine)


class _Display:
    """``cv2.imshow`` where a display exists; says so once and stops trying where it does not."""

    def __init__(self, enabled):
        self.enabled = enabled
        self.quit = False

    def show(self, image):
        if not self.enabled:
            return
        import cv2

        try:
            cv2.imshow("edge-stad run", image)
            self.quit = (cv2.waitKey(1) & 0xFF) == ord("q")
        except cv2.error:
            print("--show: no display available here (or OpenCV is the headless build); continuing without it",
                  file=sys.stderr)
            self.enabled = False


def run(args):
    import contextlib
    from collections import deque

    from tqdm import tqdm

    from edge_stad.core.linking import STARTED
    from edge_stad.eval.detections import open_writer
    from edge_stad.runtime.drawing import VideoSink, draw_status, draw_tubes, video_codec
    from edge_stad.runtime.sources import open_source
    from edge_stad.runtime.stream import Runtime

    if args.out:
        video_codec(args.out)   # a container we cannot write is refused before anything is opened or decoded
    runtime = Runtime(args.engine, args.backend, threads=args.threads, min_tube_score=args.min_score,
                      pipeline=args.pipeline)
    source = open_source(args.source, reconnect_attempts=args.reconnect_attempts, strict=args.strict)
    name = _video_name(args)
    display = _Display(args.show)
    kept = deque()  # frames waiting for their result: at most the runtime's latency
    counts = {"frames": 0, "tubes": 0, "drawn": 0, "started": 0}
    interrupted = False
    total = source.frame_count if not source.live else None
    if args.max_frames:
        total = min(total or args.max_frames, args.max_frames)
    with contextlib.ExitStack() as stack:
        stack.enter_context(source)
        events = _events(args, runtime, source.fps or 25.0)
        stepper = runtime if events is None else stack.enter_context(events)
        sink = stack.enter_context(VideoSink(args.out, source.fps or 25.0)) if args.out else None
        writer = None
        if args.json:
            writer = stack.enter_context(open_writer(args.json, runtime.K, runtime.clip_len, "stream",
                                                     runtime.labels))
        bar = stack.enter_context(tqdm(total=total, unit="frame", desc="run", disable=args.no_progress,
                                       file=sys.stderr, bar_format=BAR))

        def emit(results):
            fps = runtime.stats()["fps"] if results else 0.0
            for result in results:
                image = kept.popleft()
                if sink is not None or display.enabled:
                    image = draw_tubes(image, result.tubes, runtime.labels)
                    draw_status(image, f"frame {result.frame}  {fps:.0f} frames/s")
                    if sink is not None:
                        sink.write(image)
                    display.show(image)
            for _, window in runtime.windows():
                if writer is not None:
                    writer.window(name, window.frames, window.tubelets)
            for _, tube in runtime.tubes():
                counts["tubes"] += 1
                counts["drawn"] += tube.score >= runtime.min_tube_score
                if writer is not None:
                    writer.tube(name, tube)
            counts["started"] += sum(event.kind == STARTED for _, event in runtime.events())

        try:
            for frame, timestamp in source:
                kept.append(frame)
                emit(stepper.push(frame, timestamp))
                counts["frames"] += 1
                bar.update(1)
                if counts["frames"] % 25 == 0:
                    bar.set_postfix_str(f"{runtime.stats()['fps']:.0f} frames/s, {counts['tubes']} tubes")
                if display.quit or (args.max_frames and counts["frames"] >= args.max_frames):
                    break
        except KeyboardInterrupt:
            interrupted = True
        emit(stepper.flush())
    runtime.close()
    stats = runtime.stats()
    if source.warning:
        print(f"warning: {source.warning}", file=sys.stderr)
    if interrupted:
        print(f"interrupted: kept the {counts['frames']} frames processed", file=sys.stderr)
    stages = "  ".join(f"{k} {v:.2f}" for k, v in stats["ms_per_frame"].items())
    started = f", of {counts['started']} started" if events is None else ""   # ActionEvents drains the events
    print(f"{counts['frames']} frames; {counts['tubes']} tubes (Runtime.tubes(): finished and kept; {counts['drawn']} "
          f"with mean score >= {runtime.min_tube_score:g}, drawn){started}")
    print(f"{stats['fps']:.0f} frames/s in edge_stad.Runtime (push and flush; decoding, drawing and writing excluded; "
          f"ms per frame: {stages})")
    if events is not None:
        _report(events, args.clips)
    for path in (args.out, args.json):
        if path:
            print("wrote", path)
    return 0


def _report(events, clips_folder):
    """One line for the events and clips, one per MQTT sink (what reached the broker, what was dropped)."""
    stats = events.stats()
    made = ", ".join(f"{n} {kind}" for kind, n in stats["events"].items())
    clips = f"; {stats['clips_written']} clips in {clips_folder}" if clips_folder else ""
    skipped = (f" ({stats['clips_missing']} ended tubes without one: --max-clips were open)"
               if stats["clips_missing"] else "")
    print(f"events: {made}{clips}{skipped}")
    for sink in events.sinks:
        if hasattr(sink, "broker"):
            mqtt = sink.stats()
            print(f"mqtt {sink.broker}: {mqtt['published']} events published, {mqtt['dropped']} dropped, "
                  f"{mqtt['pending']} not acknowledged at close")

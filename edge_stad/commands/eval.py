"""Score a detections file against an ACT-layout dataset with the ACT protocol.

Reports, per class and as the mean:
  frame-mAP at --iou (default 0.5), trimmed or untrimmed;
  the frame-mAP error breakdown (localization, classification, time, other, missed);
  video-mAP at 0.2, 0.5 and 0.75, and the mean over 0.5:0.05:0.95.

--data is a dataset root holding one *-GT.pkl (or *-GT.json) file, or that file. The
pickle is read with a data-only unpickler: a file that asks to run code is refused.
--detections is a file written by `edge-stad run` (docs/detections_format.md):
frame-level detections are built from its tubelet windows (or taken from its frame
records), tubes are linked from the windows (or taken from its tube records).
--engine runs an engine folder (from `edge-stad build`; ONNX Runtime, CPU) over the
test videos in stream mode instead, exactly as the runtime will, and scores that. A
MENet engine detects frame by frame; its tubes come from the online linker, or with
--linker viterbi from YOWO's offline Viterbi linker (the paper's video-mAP protocol). A
flow-fusion engine detects every frame too; --linker road links with ROAD's online linker, the
flow-fusion paper's.

--ties says how equal scores rank. They are part of the protocol: a tubelet's score lands on
K frames, so frame-mAP ranks many equal scores. stable (default): in input order (video,
frame, arrival), the same on every machine. reference: as the authors' ACT code ranks them
with NumPy's default sort (np.argsort(-score) in frame-mAP, its error breakdown and video-mAP;
np.argsort(score)[::-1] in the per-frame soft-NMS, the tubelet NMS and the tube NMS), which
reproduces its numbers bit for bit on the same NumPy (its order depends on the NumPy version).
AP is the trapezoid area under the raw curve, points in float32, summed in float64, in both.

--mode auto (default) picks `trimmed` when every ground-truth tube of the split spans
its whole video (JHMDB-21; there both modes give the same numbers) and `untrimmed`
otherwise (UCF101-24, whose actions cover part of each video).

Example:
  edge-stad eval --data data/JHMDB --detections runs/jhmdb_k5.jsonl.gz --split 1 \\
      --json runs/jhmdb_k5_eval.json --plot runs/jhmdb_k5_eval.png
  edge-stad eval --data data/synth_bench --engine engines/amma_shufflenetv2_k3_int8
"""
import os

from edge_stad.defaults import TIES

HELP = "frame-mAP / video-mAP of a detections file against an ACT-layout dataset"


def add_arguments(parser):
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="dataset root with one *-GT.pkl / *-GT.json, or the GT file itself")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--detections", metavar="FILE", help="detections .jsonl or .jsonl.gz")
    source.add_argument("--engine", metavar="DIR", help="engine folder to run over the test videos")
    parser.add_argument("--threads", type=int, help="ONNX Runtime threads with --engine (default: all cores)")
    parser.add_argument("--linker", choices=("online", "viterbi", "road"), default="online",
                        help="tubes of a MENet or flow-fusion --engine: the online linker (default, what the Runtime "
                             "streams), YOWO's offline Viterbi, or (flow fusion) ROAD's online linker, the paper's")
    parser.add_argument("--split", type=int, default=1, metavar="N", help="test split (JHMDB: 1-3; default 1)")
    parser.add_argument("--mode", choices=("auto", "trimmed", "untrimmed"), default="auto",
                        help="frame-mAP handling of frames without ground truth (default: auto, see above)")
    parser.add_argument("--iou", type=float, default=0.5, metavar="TH",
                        help="IoU threshold of frame-mAP and its error breakdown (default 0.5)")
    parser.add_argument("--ties", choices=TIES, default="stable",
                        help="how equal scores rank: stable (input order, default) or reference (as the authors' "
                             "ACT code with NumPy's default sort; see above)")
    parser.add_argument("--json", metavar="OUT", help="also write the results (percent) as JSON")
    parser.add_argument("--plot", metavar="OUT.png", help="also plot PR curves and the error breakdown")


def run(args):
    from edge_stad.atomic import write_json
    from edge_stad.data.act import find_gt
    from edge_stad.data.annotations import load_gt
    from edge_stad.errors import ConfigError
    from edge_stad.eval.detections import read_detections
    from edge_stad.eval.evaluate import evaluate
    from edge_stad.eval.report import format_tables, plot

    if not 0 < args.iou <= 1:
        raise ConfigError(f"--iou must be in (0, 1], got {args.iou}")
    gt = load_gt(args.data if os.path.isfile(args.data) else find_gt(args.data))
    if args.engine:
        detections = _run_engine(args)
    else:
        detections = read_detections(args.detections)
    result = evaluate(gt, detections, split=args.split, mode=args.mode, iou_threshold=args.iou, ties=args.ties)
    print(format_tables(result))
    if args.json:
        write_json(args.json, dict(result.to_json(), source=os.path.abspath(args.engine or args.detections)))
        print("wrote", args.json)
    if args.plot:
        plot(result, args.plot)
        print("wrote", args.plot)
    return 0


def _run_engine(args):
    import sys

    from tqdm import tqdm

    from edge_stad.backends import open_backend
    from edge_stad.data.act import ActDataset
    from edge_stad.eval.evaluate import split_videos
    from edge_stad.eval.predictors import predict_backend

    if os.path.isfile(args.data):
        from edge_stad.errors import ConfigError

        raise ConfigError("--engine needs the dataset folder (its frames), not only the GT file")
    dataset = ActDataset(args.data, split=args.split)
    backend = open_backend(args.engine, "onnxruntime", threads=args.threads)
    if backend.manifest["labels"] != list(dataset.labels):
        from edge_stad.errors import EvaluationError

        raise EvaluationError(f"engine {args.engine} detects {backend.manifest['labels']}, but {args.data} labels "
                              f"{list(dataset.labels)}: an engine built for another dataset")
    videos = split_videos(dataset.gt, args.split)
    with tqdm(total=len(videos), desc="engine", unit="video", file=sys.stderr) as bar:
        return predict_backend(backend, dataset, videos, progress=bar, linker=args.linker)

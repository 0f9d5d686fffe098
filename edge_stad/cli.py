"""The ``edge-stad`` command line.

Each subcommand lives in ``edge_stad/commands/<name>.py`` and exposes ``HELP`` (one
line), ``add_arguments(parser)`` and ``run(args) -> int``; the module docstring is
the long description shown by ``edge-stad <name> --help``. Command modules import
heavy libraries (torch, onnx) inside ``run`` so that ``--help`` stays instant and
works on a runtime-only install.
"""
import argparse
import importlib
import sys

from edge_stad.errors import EdgeStadError, OutputExistsError
from edge_stad.version import __version__

# Subcommands in pipeline order.
COMMANDS = ["demo", "synth", "convert", "train", "distill", "export", "build", "run", "eval", "bench", "profile",
            "doctor"]


def build_parser():
    parser = argparse.ArgumentParser(
        prog="edge-stad",
        description="Real-time spatio-temporal action detection on embedded GPUs and CPUs: train AMMA/MENet "
                    "detectors, build ONNX Runtime or TensorRT engines, stream cameras, evaluate and benchmark.",
        epilog="Run `edge-stad <command> --help` for the options of one command.",
    )
    parser.add_argument("--version", action="version", version="edge_stad " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name in COMMANDS:
        module = importlib.import_module("edge_stad.commands." + name)
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except OutputExistsError as e:   # every command that writes such a folder has --out and --force
        print(f"edge-stad {args.command}: error: {e.path} already exists and is not an empty folder; pass --force "
              "to replace it, or --out to write elsewhere", file=sys.stderr)
        return 1
    except EdgeStadError as e:
        print(f"edge-stad {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

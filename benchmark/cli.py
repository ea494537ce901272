"""`python -m benchmark <command>`: one module per command in `benchmark/commands/`."""
from __future__ import annotations

import argparse
import importlib
import sys

from benchmark import __version__
from benchmark.kit.errors import BenchmarkError, storage_error
from benchmark.kit.files import forget_warnings

COMMANDS = {
    "run": "train and evaluate a grid of methods x modes x label ratios x seeds",
    "report": "Table II (and III/IV) as LaTeX and Markdown from results.csv",
    "umap": "UMAP figure of test features (the paper's Fig. 8)",
    "data": "describe, prepare or preview a dataset",
    "list": "the registered methods",
    "perf": "throughput, memory and grid-time measurements",
    "init": "build the label-free starting point a profile's methods share",
    "config": "the effective config of a cell, or every config key with its type, default and meaning",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 without the usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def build_parser(prog: str = "mics-bench") -> argparse.ArgumentParser:
    """`prog`: the name usage lines show, the installed script's or `python -m benchmark`."""
    parser = _Parser(prog=prog,
                     description="A benchmark suite for semi-supervised multimodal (WLI + NBI) image classification.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f".commands.{name}", __package__)
        module.configure(sub.add_parser(name, help=help_text, description=help_text))
        sub.choices[name].set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None, prog: str = "mics-bench") -> int:
    args = build_parser(prog).parse_args(argv)
    forget_warnings()
    try:
        return int(args.handler(args) or 0)
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a full disk, a read-only folder: one line, not a chain of tracebacks
        if storage_error(err) is None:
            raise
        print(f"error: {storage_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

"""`python -m benchmark <command>`: one module per command in `benchmark/commands/`."""
from __future__ import annotations

import argparse
import importlib
import sys

from .errors import BenchmarkError

COMMANDS = {
    "run": "train and evaluate a grid of methods x modes x label ratios x seeds",
    "report": "Table II (and III/IV) as LaTeX and Markdown from results.csv",
    "umap": "UMAP figure of test features (the paper's Fig. 8)",
    "data": "describe, prepare or preview a dataset",
    "list": "the registered methods",
    "perf": "throughput, memory and grid-time measurements",
    "init": "build the label-free starting point a profile's methods share",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2 without the usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m benchmark", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f".commands.{name}", __package__)
        module.configure(sub.add_parser(name, help=help_text, description=help_text))
        sub.choices[name].set_defaults(handler=module.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except BenchmarkError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

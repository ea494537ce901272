import argparse

from ..errors import BenchmarkError


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    raise BenchmarkError("'report' is not available yet in this version")

import argparse

from ..errors import BenchmarkError


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    raise BenchmarkError("'umap' is not available yet in this version")

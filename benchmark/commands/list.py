import argparse

import methods


def configure(parser: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    specs = methods.list_methods()
    if not specs:
        print("no methods registered")
        return 0
    width = max(len(s.name) for s in specs)
    for spec in sorted(specs, key=lambda s: (s.family, s.name)):
        print(f"{spec.name:<{width}}  {','.join(spec.modes):<13} {spec.family:<8} {spec.description}")
    return 0

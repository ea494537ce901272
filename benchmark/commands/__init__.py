"""CLI commands: each module has `configure(parser)` and `main(args) -> int`."""

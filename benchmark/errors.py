"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class BenchmarkError(Exception):
    """Bad input from the user (names, values, files); never a bug in the suite."""

    exit_code = 2


class DataError(BenchmarkError):
    """A dataset folder, file or image that cannot be used, named in the message."""


class ConfigError(BenchmarkError):
    """An unknown name or a bad value in the configuration or on the command line."""


def unknown_name(kind: str, name: str, valid) -> ConfigError:
    """The one-line error for a name that is not among the valid choices."""
    choices = ", ".join(sorted(valid))
    return ConfigError(f"unknown {kind} '{name}'; valid: {choices}")

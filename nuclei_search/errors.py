"""Errors the CLI turns into a one-line message and exit code 2."""


class NucleiSearchError(Exception):
    """Base class: a user-facing problem with input, configuration or storage."""

    exit_code = 2


class ConfigError(NucleiSearchError, ValueError):
    """A bad configuration value, search space or command-line combination."""


class DataError(NucleiSearchError, ValueError):
    """Bad input data: names the offending file (corrupt PNG, size mismatch, zip-slip...)."""


class ExperimentError(NucleiSearchError):
    """An experiment folder that exists, is missing, or cannot be written."""

"""The base class of errors caused by input (files, configs, checkpoints); the `gea` command prints them without a traceback."""


class GEAError(RuntimeError):
    """An error whose message names the bad input and the fix."""

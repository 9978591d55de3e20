"""Subcommands of the `gea` command line, one module each (see `gea.cli`)."""

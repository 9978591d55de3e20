"""The `gea` command line. Each subcommand lives in its own module under `gea.commands`."""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from typing import Optional, Sequence

import gea.commands
from gea.errors import GEAError


# Errors caused by input (names, files, configs, checkpoints). Their messages state what to fix.
USER_ERRORS = (GEAError, ValueError, FileNotFoundError, KeyError)


def build_parser() -> argparse.ArgumentParser:
    """Build the parser with one subparser per module in `gea.commands`.

    A command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``.
    """
    parser = argparse.ArgumentParser(prog="gea", description="Train and evaluate generalist embodied agents.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log at DEBUG level instead of INFO.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(gea.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"gea.commands.{module_info.name}")
        subparser = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(subparser)
        subparser.set_defaults(run=module.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:
        # The reader of our output went away (e.g. `gea envs | head`); nothing is left to report.
        sys.stderr.close()
        return 0
    except USER_ERRORS as error:
        # Bad input gets its message, not a traceback; --verbose shows the traceback too.
        if args.verbose:
            raise
        logging.getLogger("gea").error("%s", error)
        return 2


if __name__ == "__main__":
    sys.exit(main())

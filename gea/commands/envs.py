"""`gea envs`: list the registered embodiments."""

from __future__ import annotations

import argparse

NAME = "envs"
HELP = "List the registered embodiments with their domain and action type."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--details", action="store_true", help="Also print each embodiment's success rule.")


def run(args: argparse.Namespace) -> int:
    from gea_envs import ADAPTERS

    rows = [ADAPTERS.get(name).describe() for name in ADAPTERS.names()]
    name_width = max((len(row["name"]) for row in rows), default=4)
    domain_width = max((len(row["domain"]) for row in rows), default=6)
    print(f"{'name':<{name_width}}  {'domain':<{domain_width}}  action")
    for row in rows:
        line = f"{row['name']:<{name_width}}  {row['domain']:<{domain_width}}  {row['action']}"
        if args.details:
            line += f"  ({row['success']})"
        print(line)
    return 0

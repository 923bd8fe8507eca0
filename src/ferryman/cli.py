"""The ``ferryman`` command line: argument parsing built from the settings registry."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, NoReturn

import uvloop

from . import __version__
from .config import flag_of, reference_markdown, resolve, settings, shown_default
from .core import Core
from .errors import ConfigError
from .log import setup_logging
from .spawning.detect import detect, with_interpreter
from .spawning.error_report import ErrorReports


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors in one line, exit code 2, like every other configuration error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ferryman: {message} (see '{self.prog} --help')\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="ferryman",
        description="Ferryman: a polyglot application server with a least-busy process pool.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"ferryman {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    commands.required = True
    start = commands.add_parser("start", help="serve the app in APP_DIR")
    start.add_argument(
        "app_dir", nargs="?", default=".", metavar="APP_DIR", help="the app (default: .)"
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, spec, default in settings():
        shown = shown_default(name, spec, default)
        help_text = spec.help if shown == "(none)" else f"{spec.help} (default: {shown})"
        group = groups.get(spec.section)
        if group is None:
            group = groups[spec.section] = start.add_argument_group(spec.section)
        flags = [flag_of(name)] + ([spec.short] if spec.short else [])
        if spec.kind.boolean:
            group.add_argument(
                *flags,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        elif spec.kind.repeatable:
            group.add_argument(
                *flags,
                dest=name,
                action="append",
                default=None,
                metavar=spec.kind.metavar,
                help=help_text + " (repeatable)",
            )
        else:
            group.add_argument(
                *flags, dest=name, default=None, metavar=spec.kind.metavar, help=help_text
            )
    listing = commands.add_parser("settings", help="print the configuration reference")
    listing.add_argument(
        "--markdown", action="store_true", help="(the default) print it as Markdown"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "settings":
        sys.stdout.write(reference_markdown())
        return 0
    return start(args)


def start(args: argparse.Namespace) -> int:
    given = {name: getattr(args, name) for name, _, _ in settings()}
    try:
        config, warnings = resolve(Path(args.app_dir), given, os.environ)
        spec = with_interpreter(detect(config), config, Path.cwd())
        ErrorReports(config.error_report_dir, config.error_report_limit).check()
        sink = setup_logging(config)
    except ConfigError as exc:
        sys.stderr.write(f"ferryman: {exc}\n")
        return exc.exit_code
    try:
        log = logging.getLogger("ferryman")
        for warning in warnings:
            log.warning("%s", warning)
        try:
            return run(Core(config, spec, sink).run())
        except ConfigError as exc:
            # Found only when listening (a host that does not resolve, an address that is
            # not this machine's): said like every other configuration error.
            sys.stderr.write(f"ferryman: {exc}\n")
            if config.log_file:
                log.error("%s", exc)
            return exc.exit_code
    finally:
        sink.close()


def run(main_coroutine: Coroutine[Any, Any, int]) -> int:
    result: int = uvloop.run(main_coroutine)
    asyncio.set_event_loop(None)
    return result


if __name__ == "__main__":
    sys.exit(main())

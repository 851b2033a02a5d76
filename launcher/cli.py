"""The ``launcher`` entry point: argument parsing and the one place errors meet the user.

Each command group lives in its own module under ``launcher.commands`` and registers its
sub-commands; this module only wires them up and turns a ``MedbenchError`` into one line on
stderr and a fixed exit code (2 bad input, 1 failed run), never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import traceback

from rich.console import Console
from rich.text import Text

from launcher import commands
from runner.credentials import scrub_logs
from runner.errors import MedbenchError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="launcher",
        description="Run medical questions through a panel of models, locally or on Kubernetes.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"launcher.commands.{info.name}")
        module.register(sub)
    return parser


def load_env() -> None:
    """Keys may sit in a .env file in the working folder, as with the original tool."""
    try:
        from dotenv import load_dotenv
    except ImportError:
        return
    load_dotenv(".env", override=False)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # With -v, botocore logs every request's headers (the session token, the signature) and
    # HTTP libraries every URL: all of it passes the redaction on its way out.
    scrub_logs()
    load_env()
    try:
        return int(args.func(args) or 0)
    except MedbenchError as e:
        if args.verbose:
            traceback.print_exc()
        # The message may quote a server, a file or a model id: printed as text, never as markup.
        # Split on newlines only: a quoted abstract may hold U+2028, which is not a line of ours.
        for line in str(e).split("\n") if str(e) else [type(e).__name__]:
            err_console.print(Text("error: ", style="bold red") + Text(line))
        return e.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted; run the same command again to continue where it stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())

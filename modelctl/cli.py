"""`modelctl`: publish models, roll versions out, and write their cards.

It reads the same settings as the services (SERVING_* variables), so it works on the
same store, and tells the running API processes of each change through Redis."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from modelctl import parsers

if TYPE_CHECKING:
    from modelctl.context import Context

EXIT_FAILED = 2  # as argparse exits on a usage error
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelctl",
        description=__doc__,
        epilog="`modelctl COMMAND --help` describes each command, with examples.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parsers.add_model_commands(sub)
    parsers.add_rollout_commands(sub)
    parsers.add_card_command(sub)
    parsers.add_db_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    # Imported once the arguments are parsed: `--help` and a usage error need none of it.
    from pydantic import ValidationError

    from common.errors import ServingError

    try:
        return run(args)
    except ServingError as exc:
        return fail(exc.message)
    except ValidationError as exc:  # the settings, mostly: one line per problem
        return fail("; ".join(f"{problem_at(e['loc'])}{e['msg']}" for e in exc.errors()))
    except OSError as exc:
        return fail(f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc))
    except ValueError as exc:
        return fail(str(exc))
    except store_errors() as exc:
        return fail(f"the model store failed: {exc}")
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def run(args: argparse.Namespace) -> int:
    from common.settings import get_settings
    from modelctl.context import Context
    from modelctl.output import Output

    module, _, name = args.handler.partition(":")
    command: Callable[[argparse.Namespace, Context], int] = getattr(
        importlib.import_module(f"modelctl.{module}"), name
    )
    return int(command(args, Context(get_settings(), Output.create())))


def fail(message: str) -> int:
    # One line: a message may quote several lines of a library's error.
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_FAILED


def problem_at(loc: tuple[int | str, ...]) -> str:
    return f"{'.'.join(map(str, loc))}: " if loc else ""


def store_errors() -> tuple[type[Exception], ...]:
    """boto3's errors (an S3 store that refuses or cannot be reached), imported only
    when something has gone wrong."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


class _StderrLines(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        # sys.stderr as it is now: while bars are live, rich's proxy that keeps them whole.
        print(f"{record.levelname.lower()}: {record.getMessage()}", file=sys.stderr)


def configure_logging() -> None:
    """Library warnings (a registry notification Redis did not take) as one line each,
    `warning: ...`, on stderr."""
    logging.basicConfig(level=logging.WARNING, handlers=[_StderrLines()])


if __name__ == "__main__":
    sys.exit(main())

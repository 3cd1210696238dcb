"""What modelctl prints. Results and tables go to stdout, warnings to stderr, progress to
stdout on a terminal and to stderr otherwise, so `modelctl show --json | jq` sees only
the JSON. On a terminal there are colours and live bars; piped or captured, rich writes
no ANSI codes, the bars become one line per step, and tables are laid out wide enough
that their rows do not wrap."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

# Rich lays a table out for 80 columns when it cannot ask a terminal: too narrow for a
# listing with metrics. A table takes only the width it needs, so a wide page costs nothing.
PIPED_WIDTH = 200


def make_console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = max(console.width, PIPED_WIDTH)
    return console


@dataclass(frozen=True)
class Output:
    out: Console
    err: Console

    @classmethod
    def create(cls) -> Output:
        return cls(make_console(stderr=False), make_console(stderr=True))

    def line(self, text: str) -> None:
        self.out.print(Text(text))  # Text: a value holding "[...]" is never read as markup

    def warn(self, text: str) -> None:
        self.err.print(Text(f"warning: {text}"))

    def json(self, value: Any) -> None:
        """Exactly the JSON, even on a terminal: for scripts."""
        sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")

    def table(self, table: Table) -> None:
        self.out.print(table)

    def steps(self) -> StepBars:
        # On stdout when it is a terminal: results printed meanwhile go through the same
        # console, above the bars, instead of through them.
        return StepBars(self.out if self.out.is_terminal else self.err)


def table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str = ""
) -> Table:
    """Cells as plain text: a model type, a version or a metric never reads as markup."""
    result = Table(title=Text(title), caption=Text(caption) if caption else None)
    for column in columns:
        result.add_column(Text(column))
    for row in rows:
        result.add_row(*(Text(cell) for cell in row))
    return result


class StepBars:
    """A bar for each thing being done (a model trained, a version published), advancing
    step by step. Not on a terminal: one line on stderr as each step begins."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
        )

    def __enter__(self) -> StepBars:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def bar(self, name: str, steps: int) -> StepBar:
        return StepBar(self, name, self.progress.add_task(name, total=steps))


@dataclass
class StepBar:
    bars: StepBars
    name: str
    task: TaskID

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        description = f"{self.name}: {what}"
        self.bars.progress.update(self.task, description=description)
        if self.bars.progress.disable:
            self.bars.console.print(Text(f"{description}..."))
        yield
        self.bars.progress.advance(self.task)

    def done(self, what: str = "done") -> None:
        self.bars.progress.update(self.task, description=f"{self.name}: {what}")

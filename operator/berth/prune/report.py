"""What `berth prune` shows a person: a progress bar while it runs and the plan as a
table afterwards (rich). Machine-readable output is plain JSON, built elsewhere."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import Progress as RichProgress
from rich.table import Table

from berth.prune.retention import Action, PlanEntry, short_digest


class ProgressBar:
    """berth.prune.run.Progress on a rich progress bar: one line per phase."""

    def __init__(self, console: Console) -> None:
        self._progress = RichProgress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, phase: str, total: int | None) -> None:
        if self._task is not None:
            task = self._progress.tasks[-1]
            self._progress.update(self._task, completed=task.total or task.completed)
        self._task = self._progress.add_task(phase, total=total)

    def advance(self, amount: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, amount)


def plan_table(entries: Iterable[PlanEntry], *, show_kept: bool) -> Table:
    """Deletions (and kept images, if asked), one row per tag or untagged manifest."""
    table = Table(title="Prune plan", show_lines=False, header_style="bold")
    for column in ("Action", "Repository", "Tag", "Digest", "Reason"):
        table.add_column(column, overflow="fold")
    rows = sorted(
        (e for e in entries if show_kept or e.action is Action.DELETE),
        key=lambda e: (e.action is not Action.DELETE, e.repository, e.tag or "", e.digest),
    )
    for entry in rows:
        style = "red" if entry.action is Action.DELETE else "green"
        table.add_row(
            f"[{style}]{entry.action.value}[/{style}]",
            entry.repository,
            entry.tag or "<untagged>",
            short_digest(entry.digest),
            entry.reason,
        )
    return table


def kept_table(entries: Iterable[PlanEntry]) -> Table:
    """How many tags each rule kept."""
    counts = Counter(e.basis.value for e in entries if e.action is Action.KEEP and e.tag)
    table = Table(title="Kept tags by reason", header_style="bold")
    table.add_column("Reason")
    table.add_column("Tags", justify="right")
    for basis, count in counts.most_common():
        table.add_row(basis, str(count))
    return table


def summary_table(summary: Mapping[str, Any]) -> Table:
    table = Table(title="Summary", show_header=False)
    table.add_column("Field")
    table.add_column("Value", justify="right")
    for key, value in summary.items():
        if key != "errors":
            table.add_row(key, str(value))
    return table

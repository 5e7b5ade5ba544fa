"""What the `berth` command shows a person (rich): the progress bar of a prune run, its
plan as tables afterwards, and a TagPolicy's tag history. Machine-readable output is
plain JSON, built by the actions."""

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


def tags_table(title: str, tags: Iterable[Mapping[str, Any]]) -> Table:
    """A TagPolicy's status.tags: a row per history item, newest first, the tag and its
    state on the first."""
    table = Table(title=title, title_justify="left")
    for column in ("TAG", "DIGEST", "CREATED", "SOURCE", "GEN", "STATE"):
        table.add_column(column, overflow="fold")
    for entry in tags:
        state = _tag_state(entry)
        for position, item in enumerate(entry.get("items") or [{}]):
            first = position == 0
            table.add_row(
                entry["tag"] if first else "",
                _digest(str(item.get("digest") or "-")),
                str(item.get("created") or "-"),
                str(item.get("source") or "-"),
                str(item.get("generation") or "-"),
                state if first else "",
            )
    return table


def _tag_state(entry: Mapping[str, Any]) -> str:
    """Each condition's type and reason, with the message of those that are False."""
    conditions = {c.get("type"): c for c in entry.get("conditions") or []}
    return ", ".join(
        f"{kind} {c.get('reason')}"
        + (": " + str(c.get("message")) if c.get("status") == "False" else "")
        for kind, c in sorted(conditions.items())
    )


def _digest(digest: str) -> str:
    return digest[:19] if digest.startswith("sha256:") else digest

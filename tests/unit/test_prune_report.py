"""What a prune run reports, checked without a cluster: status.lastRun and status.plan
(with their caps), the LastRunSucceeded condition, the GC log parser, the reach of a
schedule outside the Registry's namespace, and the terminal table."""

from __future__ import annotations

import datetime

from rich.console import Console

from berth.actions.prune import run_condition, status_plan, summary
from berth.api.pruneschedule import ERRORS_LIMIT, PLAN_LIMIT, PruneScheduleStatus
from berth.console import plan_table
from berth.prune.gc import GCResult, gc_summary, parse_swept_blobs
from berth.prune.retention import (
    InventoryManifest,
    InventoryRepository,
    RepositorySelection,
    RetentionRules,
    plan,
)
from berth.prune.run import RunReport, ScopedSelection, reclaimed_bytes
from berth.reconcile.pruneschedule import reaches_namespace

NOW = datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC)
OLD = NOW - datetime.timedelta(days=30)


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def a_plan(repositories: int, tags: int) -> RunReport:
    inventory = {
        f"team/r{r}": InventoryRepository(
            tags={f"t{t}": digest(r * 1000 + t) for t in range(tags)},
            manifests={
                digest(r * 1000 + t): InventoryManifest(
                    size=100, created=OLD + datetime.timedelta(minutes=t)
                )
                for t in range(tags)
            },
        )
        for r in range(repositories)
    }
    report = RunReport(started=NOW, dry_run=True, completed=NOW)
    report.plan = plan(inventory, {}, RetentionRules(keep_last=1), NOW)
    report.tags_deleted = report.plan.tags_deleted
    return report


def test_status_plan_lists_deletions_first_and_is_capped() -> None:
    report = a_plan(repositories=30, tags=30)  # 900 entries, 870 deletions
    entries = status_plan(report)
    assert len(entries) == PLAN_LIMIT
    assert {e["action"] for e in entries} == {"Delete"}
    status = PruneScheduleStatus.model_validate({"plan": entries, "lastRun": summary(report)})
    assert status.last_run is not None
    assert status.last_run.tags_scanned == 900
    assert status.last_run.tags_deleted == 870
    assert status.last_run.manifests_deleted == 870
    assert status.last_run.kept_by_rule == 30


def test_errors_are_capped_and_a_failure_says_nothing_was_deleted() -> None:
    report = RunReport(started=NOW, dry_run=False, completed=NOW)
    report.failure = "InUseScanFailed"
    report.errors = [f"nothing was deleted: error {n}" for n in range(ERRORS_LIMIT + 10)]
    last_run = summary(report)
    assert len(last_run["errors"]) == ERRORS_LIMIT
    PruneScheduleStatus.model_validate({"lastRun": last_run})
    condition = run_condition(report)
    assert condition.status is False
    assert condition.reason == "InUseScanFailed"
    assert condition.message.startswith("nothing was deleted")


def test_condition_names_the_basis_of_bytes_reclaimed() -> None:
    report = a_plan(2, 3)
    report.dry_run = False
    report.deleted = list(report.plan.deletions) if report.plan else []
    report.bytes_reclaimed, report.bytes_basis = 4096, "measured"
    report.gc = GCResult(ran=True, swept={digest(1)})
    condition = run_condition(report)
    assert condition.reason == "Succeeded"
    assert "4.0 KiB reclaimed (measured from the garbage collector's log)" in condition.message
    report.gc.errors.append("storage GC: Job failed")
    report.errors.append("storage GC: Job failed")
    assert run_condition(report).reason == "GarbageCollectionFailed"
    report.gc.restored = False
    assert run_condition(report).reason == "ReadWriteNotRestored"


GC_LOG = """\
team/app: marking manifest sha256:30f95fc69c173aecfe8dc637be8ddffac2166b860566f2e415b39071bace1ebc
team/app: marking blob sha256:52d3772d4a515dabc4d14f68c684cf7184025b0d6228163c47fa322657854268

9 blobs marked, 2 blobs and 0 manifests eligible for deletion
blob eligible for deletion: sha256:0697ac8071a8cc550d7466a762fc21f78d373d9a76480a3302bd9adb6c1f5d8a
blob eligible for deletion: sha256:9aadc30fd8e40c416c0e4b07e03f37d3f534c4b073019c8d3464f5146903ba46
time="2025-06-01T00:00:00Z" level=info msg="Deleting blob: /docker/registry/v2/blobs/sha256/06/0697"
"""


def test_gc_log_gives_the_swept_blobs_and_their_bytes() -> None:
    swept = parse_swept_blobs(GC_LOG)
    assert swept == {
        "sha256:0697ac8071a8cc550d7466a762fc21f78d373d9a76480a3302bd9adb6c1f5d8a",
        "sha256:9aadc30fd8e40c416c0e4b07e03f37d3f534c4b073019c8d3464f5146903ba46",
    }
    sizes = {"sha256:0697ac8071a8cc550d7466a762fc21f78d373d9a76480a3302bd9adb6c1f5d8a": 678}
    assert reclaimed_bytes(swept, sizes) == (678, 1)
    assert gc_summary(GC_LOG) == "9 blobs marked, 2 blobs and 0 manifests eligible for deletion"


def test_a_schedule_outside_the_registry_namespace_reaches_only_its_own() -> None:
    assert reaches_namespace("**", "team")
    assert reaches_namespace("team/**", "team")
    assert reaches_namespace("t*/app", "team")
    assert not reaches_namespace("other/**", "team")
    assert not reaches_namespace("team", "team")  # the top-level repository `team`
    scoped = ScopedSelection(include=("**",), exclude=("team/mirror/**",), scope="team/**")
    assert scoped.selects("team/app")
    assert not scoped.selects("other/app")
    assert not scoped.selects("team/mirror/x")
    assert RepositorySelection().selects("other/app")


def test_plan_table_lists_deletions_with_reasons() -> None:
    report = a_plan(1, 3)
    console = Console(width=200, record=True)
    console.print(plan_table(report.entries(), show_kept=False))
    text = console.export_text()
    assert text.count("Delete") == 2
    assert "Keep" not in text
    assert "team/r0" in text
    console = Console(width=200, record=True)
    console.print(plan_table(report.entries(), show_kept=True))
    assert "Keep" in console.export_text()


def test_progress_bar_follows_the_phases() -> None:
    from berth.console import ProgressBar

    console = Console(width=120, record=True, force_terminal=True)
    with ProgressBar(console) as bar:
        bar.start("reading repositories", 3)
        bar.advance()
        bar.advance(2)
        bar.start("deleting", 1)
        bar.advance()
        tasks = bar._progress.tasks  # what the bar shows
        assert [(t.description, t.completed, t.total) for t in tasks] == [
            ("reading repositories", 3, 3),
            ("deleting", 1, 1),
        ]

"""The entry point of `berth operator`: logging, metrics, and kopf's operator loop."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading

import kopf
from prometheus_client import start_http_server

from berth.observability import REDACTOR

# Watch handlers that run for every ServiceAccount, Namespace and child event: their
# "succeeded" lines would flood the log (one per object at start-up) and say nothing.
_QUIET_HANDLERS = re.compile(
    r"^Handler '(namespace_event|service_account_event|_child_event)' (succeeded|is invoked)"
)


class _QuietWatchHandlers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not _QUIET_HANDLERS.match(record.getMessage())


def configure_logging(verbose: bool) -> None:
    """Structured (JSON) logs, with every known credential redacted before any handler
    or kopf's Event poster sees a record."""
    kopf.configure(debug=verbose, verbose=verbose, log_format=kopf.LogFormat.JSON)
    for handler in logging.getLogger().handlers:
        handler.addFilter(REDACTOR)
    logging.getLogger("kopf.objects").addFilter(REDACTOR)
    if not verbose:
        logging.getLogger("kopf.objects").addFilter(_QuietWatchHandlers())


async def operate(
    *,
    namespaces: list[str],
    standalone: bool,
    peering: str | None,
    liveness: str | None,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    notifications_address: str | None = None,
    tag_poll_interval: float | None = None,
    memo: kopf.Memo | None = None,
) -> None:
    """kopf's operator loop with Berth's handlers. `memo`, when given, is the object the
    handlers share (a test keeps it to read the notification port or tune polling)."""
    # Importing the handler modules registers them with kopf's default registry.
    from berth.handlers import pruneschedule, registry, settings, tagpolicy  # noqa: F401

    memo = memo if memo is not None else settings.Memo()
    memo.notifications_address = notifications_address
    memo.tag_poll_interval = tag_poll_interval or settings.DEFAULT_TAG_POLL_INTERVAL

    await kopf.operator(
        clusterwide=not namespaces,
        namespaces=namespaces,
        standalone=standalone,
        peering_name=None if standalone else peering,
        liveness_endpoint=liveness,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
        memo=memo,
    )


def run_operator(
    *,
    namespaces: list[str],
    standalone: bool,
    peering: str | None,
    liveness: str | None,
    metrics_port: int,
    kubeconfig: str | None,
    verbose: bool,
    notifications_address: str | None = None,
    tag_poll_interval: float | None = None,
) -> int:
    configure_logging(verbose)
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    if metrics_port:
        start_http_server(metrics_port)
    asyncio.run(
        operate(
            namespaces=namespaces,
            standalone=standalone,
            peering=peering,
            liveness=liveness,
            notifications_address=notifications_address,
            tag_poll_interval=tag_poll_interval,
        )
    )
    return 0

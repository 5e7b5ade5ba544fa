"""The `berth` command: the operator, the token server, one-off prunes and helpers.

Commands parse their arguments, call an action (berth.actions) and print what it returns
(tables: berth.console); `_reported` is the one place that turns what they raise into a
message and exit status 1. Imports are made inside the commands, so that `berth --help`
and the short commands stay quick.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import click

from berth import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from berth.actions.prune import RunOutcome
    from berth.k8s.api import Kube

P = ParamSpec("P")
T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="berth")
def main() -> None:
    """Berth: cluster-local container registries on Kubernetes and OpenShift."""


def _reported(command: Callable[P, T]) -> Callable[P, T]:
    """Errors a person can act on become a message on stderr and exit status 1; any other
    error stays a traceback."""

    @functools.wraps(command)
    def reported(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return command(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as error:
            message = _problem(error)
            if message is None:
                raise
            raise click.ClickException(message) from error

    return reported


def _problem(error: Exception) -> str | None:
    """What to tell a person about `error`, or None when it is not theirs to act on."""
    from berth.actions import ActionError
    from berth.auth.config import ConfigError
    from berth.k8s.api import ApiException
    from berth.reconcile.endpoints import RegistryProblem
    from berth.registry.client import RegistryError
    from berth.registry.reference import InvalidReference

    if isinstance(error, ApiException):
        return f"the API server refused: {error.status} {error.reason}"
    problems = (ActionError, ConfigError, RegistryProblem, RegistryError, InvalidReference)
    return str(error) if isinstance(error, problems) else None


def _in_cluster(
    kubeconfig: str | None,
    action: Callable[[Kube], Awaitable[T]],
    *,
    cancel_on_sigterm: bool = False,
) -> T:
    """Run `action` with a Kube of the kube context, closed afterwards. With
    `cancel_on_sigterm`, SIGTERM cancels the action (so that its `finally` clauses run)."""
    import asyncio
    import signal

    from berth.k8s.api import Kube

    async def run() -> T:
        if cancel_on_sigterm:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        kube = Kube.from_environment(kubeconfig)
        try:
            return await action(kube)
        finally:
            kube.close()

    return asyncio.run(run())


def _output_option(help_text: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """--output/-o: table (for a person) or json."""
    return click.option(
        "--output",
        "-o",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help=help_text,
    )


def _namespaced(ref: str, what: str) -> tuple[str, str]:
    namespace, _, name = ref.partition("/")
    if not namespace or not name or "/" in name:
        raise click.UsageError(f"{what} takes NAMESPACE/NAME")
    return namespace, name


@main.command()
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Serve only these.")
@click.option("--all-namespaces", "-A", is_flag=True, help="Serve every namespace.")
@click.option("--standalone", is_flag=True, help="No peering: assume a single instance.")
@click.option(
    "--peering",
    default=None,
    help="kopf peering object to coordinate replicas (needs kopf's peering CRDs); "
    "by default kopf's own detection.",
)
@click.option("--liveness", default="http://0.0.0.0:8080/healthz", show_default=True)
@click.option("--metrics-port", default=8081, show_default=True, type=int)
@click.option(
    "--notifications-address",
    default="0.0.0.0:8082",
    show_default=True,
    help="host:port of the endpoint registries send push notifications to; empty for none.",
)
@click.option(
    "--tag-poll-interval",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Seconds between polls of a TagPolicy's tags (pushes notified by the registry "
    "are seen at once).",
)
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
@click.option("--verbose", "-v", is_flag=True, help="Debug logs.")
def operator(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    standalone: bool,
    peering: str | None,
    liveness: str,
    metrics_port: int,
    notifications_address: str,
    tag_poll_interval: float,
    kubeconfig: str | None,
    verbose: bool,
) -> None:
    """Run the operator."""
    if namespaces and all_namespaces:
        raise click.UsageError("--namespace and --all-namespaces exclude each other")
    if not namespaces and not all_namespaces:
        raise click.UsageError("say which namespaces: --namespace NS (repeatable) or -A")
    from berth.handlers.main import run_operator

    sys.exit(
        run_operator(
            namespaces=list(namespaces),
            standalone=standalone,
            peering=peering,
            liveness=liveness,
            metrics_port=metrics_port,
            kubeconfig=kubeconfig,
            verbose=verbose,
            notifications_address=notifications_address or None,
            tag_poll_interval=tag_poll_interval,
        )
    )


@main.command()
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
@_reported
def context(kubeconfig: str | None) -> None:
    """Print the API server of the current kube context (exit 1 when there is none)."""
    from berth.actions.context import api_server

    click.echo(api_server(kubeconfig))


@main.group()
def crds() -> None:
    """Berth's CustomResourceDefinitions."""


@crds.command("apply")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
def crds_apply(directory: Path, kubeconfig: str | None) -> None:
    """Server-side apply every CRD in DIRECTORY and wait until they are Established."""
    from berth.k8s.crds import apply_crds

    for name in apply_crds(directory, kubeconfig=kubeconfig):
        click.echo(f"customresourcedefinition/{name} applied")


@main.command("auth-server")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The token server's JSON configuration (reloaded when it changes).",
)
@click.option("--listen", default="0.0.0.0:8443", show_default=True, help="host:port")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
@_reported
def auth_server(
    config_path: Path,
    listen: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    kubeconfig: str | None,
) -> None:
    """Run the registry token server (Docker registry token specification)."""
    from berth.auth.tokenserver import run_token_server

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("expected host:port, e.g. 0.0.0.0:8443", param_hint="--listen")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    run_token_server(
        config_path, host, int(port), tls_cert=tls_cert, tls_key=tls_key, kubeconfig=kubeconfig
    )


@main.command("node-agent")
@click.option(
    "--hosts-file",
    required=True,
    type=click.Path(path_type=Path),
    help="The node's hosts file, as this process sees it.",
)
@click.option(
    "--containerd-config",
    required=True,
    type=click.Path(path_type=Path),
    help="containerd's config.toml, as this process sees it.",
)
@click.option(
    "--containerd-certs-dir",
    required=True,
    type=click.Path(path_type=Path),
    help="containerd's certs.d, as this process sees it.",
)
@click.option(
    "--containerd-certs-dir-on-node",
    required=True,
    help="The same folder as containerd names it on the node.",
)
@click.option(
    "--crio-certs-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="CRI-O's (and podman's) certs.d, as this process sees it.",
)
@click.option("--node", envvar="NODE_NAME", required=True, help="This node's name.")
@click.option("--pod", envvar="POD_NAME", required=True, help="This Pod's name (the report).")
@click.option(
    "--namespace", envvar="POD_NAMESPACE", required=True, help="Where the plans are, and this Pod."
)
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
@_reported
def node_agent(
    hosts_file: Path,
    containerd_config: Path,
    containerd_certs_dir: Path,
    containerd_certs_dir_on_node: str,
    crio_certs_dir: Path | None,
    node: str,
    pod: str,
    namespace: str,
    kubeconfig: str | None,
) -> None:
    """Keep this node resolving and trusting Berth's registries (run by the DaemonSet)."""
    import asyncio
    import contextlib
    import logging

    from berth.node.agent import NodePaths, run_agent

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    paths = NodePaths(
        hosts_file, containerd_config, containerd_certs_dir, containerd_certs_dir_on_node,
        crio_certs_dir,
    )  # fmt: skip
    with contextlib.suppress(asyncio.CancelledError):
        _in_cluster(
            kubeconfig,
            lambda kube: run_agent(kube, paths, node=node, pod=pod, namespace=namespace),
            cancel_on_sigterm=True,
        )


@main.command()
@click.option(
    "--schedule", "schedule_ref", required=True, metavar="NS/NAME", help="The PruneSchedule."
)
@click.option("--dry-run", is_flag=True, help="Plan only: delete nothing, write the plan.")
@click.option(
    "--registry-url",
    metavar="URL",
    help="Reach the registry here instead of the address in the Registry's status "
    "(needed outside the cluster).",
)
@_output_option("json prints the plan and summary as JSON, and nothing else, on stdout.")
@click.option("--show-kept", is_flag=True, help="List kept images in the table too.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
@click.option("--verbose", "-v", is_flag=True, help="Progress logs on stderr.")
@_reported
def prune(
    schedule_ref: str,
    dry_run: bool,
    registry_url: str | None,
    output: str,
    show_kept: bool,
    kubeconfig: str | None,
    verbose: bool,
) -> None:
    """Run a PruneSchedule once: delete old images that nothing in the cluster uses.

    Exits 1 when the run failed or was aborted (in which case nothing was deleted)."""
    import contextlib
    import json
    import logging

    from rich.console import Console

    from berth.actions.prune import run_schedule
    from berth.console import ProgressBar
    from berth.observability import REDACTOR

    namespace, name = _namespaced(schedule_ref, "--schedule")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(REDACTOR)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[handler],
    )
    stdout = Console()
    # The bar goes where a person looks; JSON on stdout stays clean.
    bar_console = Console(stderr=True) if output == "json" else stdout
    bar = ProgressBar(bar_console) if bar_console.is_terminal and sys.stdout.isatty() else None
    with bar or contextlib.nullcontext():
        # SIGTERM (the Job's deadline, a node drain) cancels the run, so that storage GC's
        # `finally` restores read-write before the process ends.
        outcome = _in_cluster(
            kubeconfig,
            lambda kube: run_schedule(
                kube, namespace, name, dry_run=dry_run, registry_url=registry_url, progress=bar
            ),
            cancel_on_sigterm=True,
        )
    if output == "json":
        click.echo(json.dumps(outcome.to_json(), indent=2, sort_keys=True))
    else:
        _print_run(stdout, outcome, show_kept=show_kept)
    if not outcome.succeeded:
        sys.exit(1)


def _print_run(stdout: Console, outcome: RunOutcome, *, show_kept: bool) -> None:
    """`berth prune`'s table output: the plan, the kept tags, the summary, the result."""
    from berth.console import kept_table, plan_table, summary_table

    report = outcome.report
    if report is not None and report.plan is not None:
        stdout.print(plan_table(report.entries(), show_kept=show_kept))
        if not show_kept:
            stdout.print(kept_table(report.entries()))
        stdout.print(summary_table(outcome.last_run))
    for message in outcome.last_run.get("errors") or []:
        stdout.print(f"[red]error:[/red] {message}", highlight=False)
    stdout.print(
        f"{outcome.condition.reason}: {outcome.condition.message}",
        highlight=False,
        soft_wrap=True,
    )


@main.command()
@click.argument("source")
@click.argument("target")
@click.option(
    "--registry",
    "registry_ref",
    metavar="NS/NAME",
    help="The Registry holding both images; by default the one whose host names them.",
)
@click.option(
    "--registry-url",
    metavar="URL",
    help="Reach the registry here instead of its in-cluster address (e.g. a port-forward).",
)
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
@_reported
def promote(
    source: str,
    target: str,
    registry_ref: str | None,
    registry_url: str | None,
    kubeconfig: str | None,
) -> None:
    """Copy image SOURCE to tag TARGET in the same registry (e.g.
    registry.example/team/app:stage registry.example/team/app:prod).

    Blobs are mounted across repositories, so no layer data moves. Berth's admin
    credential is read from the Registry's Secret: this needs the right to read it."""
    from berth.actions.promote import promote as run_promote

    wanted = _namespaced(registry_ref, "--registry") if registry_ref else None
    done = _in_cluster(
        kubeconfig,
        lambda kube: run_promote(kube, source, target, registry=wanted, registry_url=registry_url),
    )
    result = done.result
    click.echo(
        f"{done.target} is now {result.digest} (from {done.source}, Registry {done.registry}): "
        f"{result.blobs_mounted} blobs mounted, {result.blobs_present} already there, "
        f"{result.blobs_uploaded} uploaded"
    )


@main.command()
@click.argument("policy_ref", metavar="NS/NAME")
@_output_option("json prints status.tags as JSON.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
@_reported
def tags(policy_ref: str, output: str, kubeconfig: str | None) -> None:
    """The history of a TagPolicy's tags: what each pointed to, newest first."""
    import json

    from rich.console import Console

    from berth.actions.tags import tag_history
    from berth.console import tags_table

    namespace, name = _namespaced(policy_ref, "tags")
    history = _in_cluster(kubeconfig, lambda kube: tag_history(kube, namespace, name))
    if output == "json":
        click.echo(json.dumps(history.tags, indent=2, sort_keys=True))
        return
    console = Console(width=max(Console().width, 120))
    console.print(tags_table(history.title, history.tags))
    ready = history.ready
    if ready:
        console.print(
            f"Ready={ready.get('status')} {ready.get('reason')}: {ready.get('message')}",
            highlight=False,
            soft_wrap=True,
        )


if __name__ == "__main__":
    main()

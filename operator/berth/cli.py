"""The `berth` command: the operator, the token server, one-off prunes and helpers."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from berth import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="berth")
def main() -> None:
    """Berth: cluster-local container registries on Kubernetes and OpenShift."""


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
def context(kubeconfig: str | None) -> None:
    """Print the API server of the current kube context (exit 1 when there is none)."""
    from berth.k8s.api import Kube

    try:
        kube = Kube.from_environment(kubeconfig)
        kube.request_sync("GET", "/version")
    except Exception as error:
        raise click.ClickException(f"no usable kube context: {error}") from error
    click.echo(kube.api_client.configuration.host)
    kube.close()


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
def auth_server(
    config_path: Path,
    listen: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    kubeconfig: str | None,
) -> None:
    """Run the registry token server (Docker registry token specification)."""
    from berth.auth.config import ConfigError
    from berth.auth.tokenserver import run_token_server

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter("expected host:port, e.g. 0.0.0.0:8443", param_hint="--listen")
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        run_token_server(
            config_path, host, int(port), tls_cert=tls_cert, tls_key=tls_key, kubeconfig=kubeconfig
        )
    except ConfigError as error:
        raise click.ClickException(str(error)) from error


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
@click.option(
    "--output",
    "-o",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="json prints the plan and summary as JSON, and nothing else, on stdout.",
)
@click.option("--show-kept", is_flag=True, help="List kept images in the table too.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
@click.option("--verbose", "-v", is_flag=True, help="Progress logs on stderr.")
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
    import asyncio
    import json
    import logging
    import signal

    from rich.console import Console

    from berth.actions.prune import RunOutcome, RunProblem, run_schedule
    from berth.console import ProgressBar, kept_table, plan_table, summary_table
    from berth.k8s.api import ApiException, Kube
    from berth.observability import REDACTOR

    namespace, _, name = schedule_ref.partition("/")
    if not namespace or not name or "/" in name:
        raise click.UsageError("--schedule takes NAMESPACE/NAME")
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
    show_bar = bar_console.is_terminal and sys.stdout.isatty()

    async def run() -> RunOutcome:
        task = asyncio.current_task()
        assert task is not None
        # SIGTERM (the Job's deadline, a node drain) cancels the run, so that storage GC's
        # `finally` restores read-write before the process ends.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        kube = Kube.from_environment(kubeconfig)
        try:
            if show_bar:
                with ProgressBar(bar_console) as bar:
                    return await run_schedule(
                        kube,
                        namespace,
                        name,
                        dry_run=dry_run,
                        registry_url=registry_url,
                        progress=bar,
                    )
            return await run_schedule(
                kube, namespace, name, dry_run=dry_run, registry_url=registry_url
            )
        finally:
            kube.close()

    try:
        outcome = asyncio.run(run())
    except RunProblem as problem:
        raise click.ClickException(str(problem)) from problem
    except ApiException as error:
        raise click.ClickException(
            f"the API server refused: {error.status} {error.reason}"
        ) from error
    if output == "json":
        click.echo(json.dumps(outcome.to_json(), indent=2, sort_keys=True))
    else:
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
    if not outcome.succeeded:
        sys.exit(1)


if __name__ == "__main__":
    main()


def _namespaced(ref: str, what: str) -> tuple[str, str]:
    namespace, _, name = ref.partition("/")
    if not namespace or not name or "/" in name:
        raise click.UsageError(f"{what} takes NAMESPACE/NAME")
    return namespace, name


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
    import asyncio

    from berth.actions.promote import Promotion
    from berth.actions.promote import promote as run_promote
    from berth.k8s.api import ApiException, Kube
    from berth.reconcile.endpoints import RegistryProblem
    from berth.registry.client import RegistryError
    from berth.registry.reference import InvalidReference

    wanted = _namespaced(registry_ref, "--registry") if registry_ref else None

    async def run() -> Promotion:
        kube = Kube.from_environment(kubeconfig)
        try:
            return await run_promote(
                kube, source, target, registry=wanted, registry_url=registry_url
            )
        finally:
            kube.close()

    try:
        done = asyncio.run(run())
    except (RegistryProblem, RegistryError, InvalidReference) as problem:
        raise click.ClickException(str(problem)) from problem
    except ApiException as error:
        raise click.ClickException(
            f"the API server refused: {error.status} {error.reason}"
        ) from error
    result = done.result
    click.echo(
        f"{done.target} is now {result.digest} (from {done.source}, Registry {done.registry}): "
        f"{result.blobs_mounted} blobs mounted, {result.blobs_present} already there, "
        f"{result.blobs_uploaded} uploaded"
    )


@main.command()
@click.argument("policy_ref", metavar="NS/NAME")
@click.option(
    "--output",
    "-o",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="json prints status.tags as JSON.",
)
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
def tags(policy_ref: str, output: str, kubeconfig: str | None) -> None:
    """The history of a TagPolicy's tags: what each pointed to, newest first."""
    import asyncio
    import json

    from rich.console import Console

    from berth.actions import ActionError
    from berth.actions.tags import TagHistory, tag_history
    from berth.console import tags_table
    from berth.k8s.api import ApiException, Kube

    namespace, name = _namespaced(policy_ref, "tags")

    async def fetch() -> TagHistory:
        kube = Kube.from_environment(kubeconfig)
        try:
            return await tag_history(kube, namespace, name)
        finally:
            kube.close()

    try:
        history = asyncio.run(fetch())
    except ActionError as problem:
        raise click.ClickException(str(problem)) from problem
    except ApiException as error:
        raise click.ClickException(
            f"the API server refused: {error.status} {error.reason}"
        ) from error
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

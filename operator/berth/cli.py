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
@click.option("--peering", default="berth", show_default=True, help="Peering object name.")
@click.option("--liveness", default="http://0.0.0.0:8080/healthz", show_default=True)
@click.option("--metrics-port", default=8081, show_default=True, type=int)
@click.option("--kubeconfig", type=click.Path(dir_okay=False), envvar="KUBECONFIG")
@click.option("--verbose", "-v", is_flag=True, help="Debug logs.")
def operator(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    standalone: bool,
    peering: str,
    liveness: str,
    metrics_port: int,
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

"""`berth context`: the API server of the current kube context, if it answers."""

from __future__ import annotations

from berth.actions import ActionError
from berth.k8s.api import Kube


def api_server(kubeconfig: str | None) -> str:
    """The API server's address, once it answered /version."""
    try:
        kube = Kube.from_environment(kubeconfig)
        kube.request_sync("GET", "/version")
    except Exception as error:
        raise ActionError(f"no usable kube context: {error}") from error
    host = str(kube.api_client.configuration.host)
    kube.close()
    return host

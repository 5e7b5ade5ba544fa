"""The token server's children (auth.mode Token): it runs the operator image as
`berth auth-server`, reads a JSON config the access pass renders into a Secret, and
signs tokens with a key the registry trusts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from berth.resources.registry.config import checksum
from berth.resources.registry.inputs import RegistryInputs, RegistryView
from berth.resources.registry.names import NON_OPENSHIFT_UID, TOKEN_SERVER_PORT, RegistryNames
from berth.resources.registry.secrets import b64, secret
from berth.resources.render import labels, owned_by, render, selector_labels

CONFIG_DIR: Final = Path("/etc/berth/auth")
SIGNING_DIR: Final = Path("/etc/berth/token-signing")
TLS_DIR: Final = Path("/etc/berth/tls")
COMPONENT: Final = "token-server"


def _common(registry: RegistryView) -> dict[str, Any]:
    names = registry.names
    return {
        "names": names,
        "namespace": registry.namespace,
        "labels": labels(names.registry, COMPONENT),
        "selector": selector_labels(names.registry, COMPONENT),
        "port": TOKEN_SERVER_PORT,
    }


def token_config_secret(
    registry: dict[str, Any], names: RegistryNames, config_json: str
) -> dict[str, Any]:
    """The token server's config; the access pass is its one writer."""
    return owned_by(
        secret(
            registry["metadata"]["namespace"],
            names.token_server_config,
            labels(names.registry, COMPONENT),
            "Opaque",
            {"config.json": b64(config_json)},
        ),
        registry,
    )


def service_account(inputs: RegistryInputs) -> dict[str, Any]:
    return render("tokenserver/serviceaccount.yaml.j2", **_common(inputs))


def tls(inputs: RegistryInputs) -> dict[str, Any]:
    serving = inputs.material.token_server_tls
    assert serving is not None
    return secret(
        inputs.namespace,
        inputs.names.token_server_tls,
        labels(inputs.names.registry, COMPONENT),
        "kubernetes.io/tls",
        {"tls.crt": b64(serving.cert_pem), "tls.key": b64(serving.key_pem)},
    )


def service(inputs: RegistryInputs) -> dict[str, Any]:
    return render("tokenserver/service.yaml.j2", **_common(inputs))


def deployment(inputs: RegistryInputs) -> dict[str, Any]:
    serving = inputs.material.token_server_tls
    assert inputs.operator_image is not None, "the token server runs the operator's image"
    return render(
        "tokenserver/deployment.yaml.j2",
        **_common(inputs),
        image=inputs.operator_image,
        tls=serving is not None,
        tls_secret=inputs.names.token_server_tls,
        config_secret=inputs.names.token_server_config,
        config_dir=str(CONFIG_DIR),
        signing_dir=str(SIGNING_DIR),
        tls_dir=str(TLS_DIR),
        # The server reloads its config; only its own certificate needs a restart.
        checksum=checksum(serving.cert_pem if serving else None),
        run_as_uid=None if inputs.openshift else NON_OPENSHIFT_UID,
    )


def network_policy(inputs: RegistryInputs) -> dict[str, Any]:
    return render("tokenserver/networkpolicy.yaml.j2", **_common(inputs))


def cluster_role_binding(inputs: RegistryInputs) -> dict[str, Any]:
    """Cluster-scoped: no ownerReference reaches it; the Registry's finalizer deletes it."""
    return render(
        "tokenserver/clusterrolebinding.yaml.j2",
        **_common(inputs),
        name=inputs.names.token_server_binding(inputs.namespace),
    )

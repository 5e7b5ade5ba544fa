"""The token server's children (auth.mode Token): it runs the operator image as
`berth auth-server`, reads a JSON config the access pass renders into a Secret, and
signs tokens with a key the registry trusts."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Final

from berth.resources.registry import (
    TOKEN_SERVER_PORT,
    RegistryInputs,
    RegistryNames,
    checksum,
    secret,
)
from berth.resources.render import labels, owned_by, render, selector_labels

CONFIG_DIR: Final = Path("/etc/berth/auth")
SIGNING_DIR: Final = Path("/etc/berth/token-signing")
TLS_DIR: Final = Path("/etc/berth/tls")
COMPONENT: Final = "token-server"


def config_secret_name(names: RegistryNames) -> str:
    return f"{names.token_server}-config"


def tls_secret_name(names: RegistryNames) -> str:
    return f"{names.token_server}-tls"


def cluster_role_binding_name(namespace: str, names: RegistryNames) -> str:
    return f"berth:{namespace}:{names.token_server}"


def token_config_secret(
    owner: dict[str, Any], names: RegistryNames, config_json: str
) -> dict[str, Any]:
    metadata = owner["metadata"]
    return owned_by(
        secret(
            metadata["namespace"],
            config_secret_name(names),
            labels(names.registry, COMPONENT),
            "Opaque",
            {"config.json": base64.b64encode(config_json.encode()).decode()},
        ),
        owner,
    )


def token_server_children(inputs: RegistryInputs, operator_image: str) -> list[dict[str, Any]]:
    """Namespaced children (owned by the Registry) and the cluster-scoped
    ClusterRoleBinding (cleaned up by the Registry's finalizer), in apply order."""
    names, namespace = inputs.names, inputs.namespace
    common = {
        "names": names,
        "namespace": namespace,
        "labels": labels(names.registry, COMPONENT),
        "selector": selector_labels(names.registry, COMPONENT),
        "port": TOKEN_SERVER_PORT,
    }
    serving = inputs.material.token_server_tls
    children = [render("tokenserver/serviceaccount.yaml.j2", **common)]
    if serving is not None:
        children.append(
            secret(
                namespace,
                tls_secret_name(names),
                labels(names.registry, COMPONENT),
                "kubernetes.io/tls",
                {
                    "tls.crt": base64.b64encode(serving.cert_pem.encode()).decode(),
                    "tls.key": base64.b64encode(serving.key_pem.encode()).decode(),
                },
            )
        )
    children += [
        render("tokenserver/service.yaml.j2", **common),
        render(
            "tokenserver/deployment.yaml.j2",
            **common,
            image=operator_image,
            tls=serving is not None,
            tls_secret=tls_secret_name(names),
            config_secret=config_secret_name(names),
            config_dir=str(CONFIG_DIR),
            signing_dir=str(SIGNING_DIR),
            tls_dir=str(TLS_DIR),
            # The server reloads its config; only its own certificate needs a restart.
            checksum=checksum(serving.cert_pem if serving else None),
            run_as_uid=None if inputs.openshift else 1000,
        ),
        render("tokenserver/networkpolicy.yaml.j2", **common),
    ]
    owned = [owned_by(child, inputs.owner) for child in children]
    binding = render(
        "tokenserver/clusterrolebinding.yaml.j2",
        **common,
        name=cluster_role_binding_name(namespace, names),
    )
    return [*owned, binding]

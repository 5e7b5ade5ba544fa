"""Names and fixed paths of a Registry's children, all derived from the Registry's name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from berth.api.registry import AuthMode

REGISTRY_PORT: Final = 5000
DEBUG_PORT: Final = 5001
TOKEN_SERVER_PORT: Final = 8443
DATA_PATH: Final = "/var/lib/registry"
CONFIG_DIR: Final = "/etc/berth/registry"
TLS_DIR: Final = "/etc/berth/tls"
AUTH_DIR: Final = "/etc/berth/auth"
# The upstream registry image runs as root; outside OpenShift (which assigns a UID from
# the namespace's range) the Pod needs a non-root UID of its own to pass `restricted`.
NON_OPENSHIFT_UID: Final = 1000
TOKEN_ISSUER: Final = "berth"
CA_ROTATION_KEY: Final = "rotation.json"  # the CA Secret's rotation record
ADMIN_USER: Final = "berth-admin"  # Berth's own account: prunes, imports, probes
# The file each auth mode mounts from the registry's Secret into AUTH_DIR.
AUTH_FILES: Final = {AuthMode.HTPASSWD: "htpasswd", AuthMode.TOKEN: "token-ca.crt"}


@dataclass(frozen=True)
class RegistryNames:
    """Names of a Registry's children, all derived from the Registry's name."""

    registry: str

    @property
    def deployment(self) -> str:
        return self.registry

    @property
    def service(self) -> str:
        return self.registry

    @property
    def service_account(self) -> str:
        return f"{self.registry}-registry"

    @property
    def config(self) -> str:
        return f"{self.registry}-config"

    @property
    def secrets(self) -> str:
        return f"{self.registry}-secrets"

    @property
    def tls(self) -> str:
        return f"{self.registry}-tls"

    @property
    def ca_secret(self) -> str:
        return f"{self.registry}-ca"

    @property
    def ca_config_map(self) -> str:
        return f"{self.registry}-ca"

    @property
    def pvc(self) -> str:
        return f"{self.registry}-data"

    @property
    def admin(self) -> str:
        return f"{self.registry}-admin"

    @property
    def notifications(self) -> str:
        """The shared secret a registry's notifications must carry (key `token`)."""
        return f"{self.registry}-notifications"

    @property
    def token_server(self) -> str:
        return f"{self.registry}-auth"

    @property
    def token_signing(self) -> str:
        return f"{self.registry}-token-signing"

    @property
    def token_server_config(self) -> str:
        """The token server's config (written by the access pass)."""
        return f"{self.token_server}-config"

    @property
    def token_server_tls(self) -> str:
        return f"{self.token_server}-tls"

    def token_server_binding(self, namespace: str) -> str:
        """The token server's ClusterRoleBinding (cluster-scoped: the name holds the
        namespace)."""
        return f"berth:{namespace}:{self.token_server}"

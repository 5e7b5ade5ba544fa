"""Registry access: the token server (Docker registry token authentication) and the
robot credentials Berth hands to namespaces.

This package stands on its own (stdlib, third-party libraries, `berth.constants` and
`berth.observability`): the token server runs from a JSON file, not from the API models.
"""

from berth.auth.config import (
    ConfigError,
    ConfigFile,
    Grant,
    Robot,
    StaticConfig,
    TokenServerConfig,
    parse_config,
)
from berth.auth.jwt import generate_signing_key_pair
from berth.auth.robots import (
    RobotCredential,
    dockerconfigjson,
    hash_password,
    htpasswd_line,
    new_robot,
    verify_password,
)
from berth.auth.tokenserver import TOKEN_PATH, create_app, run_token_server

__all__ = [
    "TOKEN_PATH",
    "ConfigError",
    "ConfigFile",
    "Grant",
    "Robot",
    "RobotCredential",
    "StaticConfig",
    "TokenServerConfig",
    "create_app",
    "dockerconfigjson",
    "generate_signing_key_pair",
    "hash_password",
    "htpasswd_line",
    "new_robot",
    "parse_config",
    "run_token_server",
    "verify_password",
]

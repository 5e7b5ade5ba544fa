"""The token server's JSON configuration: the contract with the operator, and reloads."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from berth.auth.config import ConfigError, ConfigFile, TokenServerConfig, parse_config
from berth.auth.grants import Scope, authorize
from berth.auth.jwt import generate_signing_key_pair
from berth.auth.robots import hash_password

HASH_A = hash_password("password-a", cost=4)
HASH_B = hash_password("password-b", cost=4)


def operator_config(**changes: object) -> dict[str, object]:
    """The example of the contract, as the operator renders it."""
    config: dict[str, object] = {
        "issuer": "berth",
        "service": "reg.ns.svc",
        "tokenTTLSeconds": 300,
        "signingKeyFile": "signing.key",
        "signingCertFile": "signing.crt",
        "robots": [
            {
                "username": "robot-team-a-0a1b2c3d",
                "passwordHash": HASH_A,
                "namespace": "team-a",
                "grants": [{"repositories": ["team-a/**"], "actions": ["pull", "push"]}],
            }
        ],
        "namespaceGrants": {"team-a": [{"repositories": ["team-a/**"], "actions": ["pull"]}]},
        "tokenReview": True,
    }
    config.update(changes)
    return config


def write_atomically(path: Path, document: dict[str, object]) -> None:
    # Mounted Secrets change by an atomic symlink swap; a rename is the same for a reader.
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(document))
    os.replace(staging, path)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    key_pem, cert_pem = generate_signing_key_pair()
    (tmp_path / "signing.key").write_bytes(key_pem)
    (tmp_path / "signing.crt").write_bytes(cert_pem)
    write_atomically(tmp_path / "config.json", operator_config())
    return tmp_path


def test_contract_example_loads() -> None:
    config = parse_config(json.dumps(operator_config()))
    assert config.issuer == "berth"
    assert config.service == "reg.ns.svc"
    assert config.token_ttl_seconds == 300
    assert config.signing_key_file == Path("signing.key")
    assert config.robots[0].username == "robot-team-a-0a1b2c3d"
    assert config.robots[0].grants[0].actions == ["pull", "push"]
    assert config.namespace_grants["team-a"][0].repositories == ["team-a/**"]
    assert config.token_review is True


def test_to_json_round_trips_with_the_contract_field_names() -> None:
    config = parse_config(json.dumps(operator_config()))
    rendered = json.loads(config.to_json())
    assert {"tokenTTLSeconds", "signingKeyFile", "namespaceGrants", "tokenReview"} <= set(rendered)
    assert rendered["robots"][0]["passwordHash"] == HASH_A
    assert parse_config(config.to_json()) == config


def test_defaults() -> None:
    minimal = {
        "issuer": "berth",
        "service": "s",
        "signingKeyFile": "/k",
        "signingCertFile": "/c",
    }
    config = TokenServerConfig.model_validate(minimal)
    assert config.token_ttl_seconds == 300
    assert config.robots == []
    assert config.namespace_grants == {}
    assert config.token_review is False


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"unknownField": 1}, "unknownField"),
        ({"tokenTTLSeconds": 5}, "tokenTTLSeconds"),
        ({"issuer": ""}, "issuer"),
        (
            {"robots": [{"username": "r", "passwordHash": HASH_A}] * 2},
            "listed twice",
        ),
        (
            {
                "robots": [
                    {
                        "username": "r",
                        "passwordHash": HASH_A,
                        "grants": [{"repositories": ["{namespace}/**"], "actions": ["pull"]}],
                    }
                ]
            },
            "without a namespace",
        ),
        (
            {
                "robots": [
                    {
                        "username": "r",
                        "passwordHash": HASH_A,
                        "grants": [{"repositories": ["team-a/**"], "actions": ["admin"]}],
                    }
                ]
            },
            "actions",
        ),
        (
            {"namespaceGrants": {"team-a": [{"repositories": ["Team A/**"], "actions": ["pull"]}]}},
            "repositories",
        ),
    ],
)
def test_invalid_configs_are_refused_with_a_reason(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(json.dumps(operator_config(**changes)))


def test_errors_never_quote_a_password_hash() -> None:
    broken_hash = HASH_A[:-1] + "!"  # one bad character: still mostly a real hash
    document = operator_config(robots=[{"username": "r", "passwordHash": broken_hash}])
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps(document))
    assert "passwordHash" in str(caught.value)
    assert HASH_A[:20] not in str(caught.value)


def test_password_hash_is_not_in_repr() -> None:
    config = parse_config(json.dumps(operator_config()))
    assert HASH_A not in repr(config)


def test_namespace_grants_can_name_service_accounts() -> None:
    document = operator_config(
        namespaceGrants={
            "team-a": [
                {"repositories": ["{namespace}/**"], "actions": ["pull"]},
                {
                    "repositories": ["team-a/**"],
                    "actions": ["push"],
                    "serviceAccounts": ["builder"],
                },
            ]
        }
    )
    grants = parse_config(json.dumps(document)).namespace_grants["team-a"]
    assert grants[0].admits("default")
    assert grants[1].admits("builder")
    assert not grants[1].admits("default")


def test_config_file_resolves_relative_key_paths(config_dir: Path) -> None:
    source = ConfigFile(config_dir / "config.json")
    active = source.current()
    assert active.signer.algorithm == "ES256"
    assert set(active.robots) == {"robot-team-a-0a1b2c3d"}


def test_service_account_rules_follow_namespace_grants(config_dir: Path) -> None:
    write_atomically(
        config_dir / "config.json",
        operator_config(
            namespaceGrants={
                "team-a": [
                    {"repositories": ["{namespace}/**"], "actions": ["pull"]},
                    {"repositories": ["shared/*"], "actions": ["push"], "serviceAccounts": ["ci"]},
                ]
            }
        ),
    )
    active = ConfigFile(config_dir / "config.json").current()
    requested = [
        Scope("repository", "team-a/app", ("pull", "push")),
        Scope("repository", "shared/base", ("push",)),
    ]
    assert authorize(
        requested, active.service_account_rules("team-a", "default"), catalog=False
    ) == [Scope("repository", "team-a/app", ("pull",))]
    assert authorize(requested, active.service_account_rules("team-a", "ci"), catalog=False) == [
        Scope("repository", "team-a/app", ("pull",)),
        Scope("repository", "shared/base", ("push",)),
    ]
    assert active.service_account_rules("team-b", "default") == ()


def test_reload_picks_up_a_changed_file(config_dir: Path) -> None:
    source = ConfigFile(config_dir / "config.json")
    assert source.reload_if_changed() is False  # nothing changed yet
    robots = [
        *operator_config()["robots"],  # type: ignore[misc]
        {"username": "robot-team-a-99999999", "passwordHash": HASH_B, "namespace": "team-a"},
    ]
    write_atomically(config_dir / "config.json", operator_config(robots=robots))
    assert source.reload_if_changed() is True
    assert set(source.current().robots) == {"robot-team-a-0a1b2c3d", "robot-team-a-99999999"}
    assert source.reload_if_changed() is False


def test_reload_picks_up_a_new_signing_key(config_dir: Path) -> None:
    source = ConfigFile(config_dir / "config.json")
    old_signer = source.current().signer
    key_pem, cert_pem = generate_signing_key_pair(key_type="rsa")
    (config_dir / "signing.key").write_bytes(key_pem)
    (config_dir / "signing.crt").write_bytes(cert_pem)
    assert source.reload_if_changed() is True
    assert source.current().signer != old_signer
    assert source.current().signer.algorithm == "RS256"


def test_broken_file_keeps_the_last_good_config_and_logs_once(
    config_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = ConfigFile(config_dir / "config.json")
    before = source.current()
    (config_dir / "config.json").write_text('{"issuer": "berth", "service": ')
    with caplog.at_level(logging.ERROR, logger="berth.auth.config"):
        assert source.reload_if_changed() is False
        assert source.reload_if_changed() is False
    assert source.current() is before
    assert len([r for r in caplog.records if "keeping the previous" in r.getMessage()]) == 1

    write_atomically(config_dir / "config.json", operator_config(tokenTTLSeconds=600))
    assert source.reload_if_changed() is True
    assert source.current().config.token_ttl_seconds == 600


def test_mismatched_key_and_certificate_keep_the_last_good_config(config_dir: Path) -> None:
    source = ConfigFile(config_dir / "config.json")
    before = source.current()
    _, other_cert = generate_signing_key_pair()
    (config_dir / "signing.crt").write_bytes(other_cert)
    assert source.reload_if_changed() is False
    assert source.current() is before


def test_a_broken_file_at_start_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="issuer"):
        ConfigFile(tmp_path / "config.json")

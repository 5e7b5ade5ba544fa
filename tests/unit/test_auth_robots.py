"""Robot credentials: usernames, passwords, hashes, dockerconfigjson and htpasswd lines."""

from __future__ import annotations

import base64
import json
import re

import bcrypt
import pytest

from berth.auth.robots import (
    MAX_USERNAME_LENGTH,
    dockerconfigjson,
    hash_password,
    htpasswd_line,
    new_robot,
    verify_password,
)
from berth.observability import REDACTOR


def test_new_robot_names_its_namespace_and_hashes_with_bcrypt_cost_10() -> None:
    robot = new_robot("team-a", "main")
    assert re.fullmatch(r"robot-team-a-[0-9a-f]{8}", robot.username)
    assert (robot.namespace, robot.registry) == ("team-a", "main")
    assert robot.password_hash.startswith("$2b$10$")
    assert bcrypt.checkpw(robot.password.encode(), robot.password_hash.encode())


def test_new_robot_password_is_long_urlsafe_and_fits_bcrypt() -> None:
    robot = new_robot("team-a", "main")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", robot.password)  # 32 random bytes
    assert len(robot.password.encode()) <= 72


def test_each_new_robot_is_a_different_credential() -> None:
    first, second = new_robot("team-a", "main"), new_robot("team-a", "main")
    assert first.username != second.username
    assert first.password != second.password


def test_username_of_a_longest_namespace_fits_64_characters() -> None:
    namespace = "n" * 62 + "x"  # 63, the longest DNS label
    robot = new_robot(namespace, "main")
    assert len(robot.username) <= MAX_USERNAME_LENGTH
    assert robot.username.startswith("robot-nnnn")
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", robot.username)


def test_truncation_does_not_leave_a_double_dash() -> None:
    namespace = "a" * 48 + "-bcdefg"  # the 55-character cut ends with this dash
    assert "--" not in new_robot(namespace, "main").username


def test_robot_secrets_are_registered_with_the_redactor() -> None:
    robot = new_robot("team-a", "main")
    text = f"password {robot.password} hash {robot.password_hash}"
    assert REDACTOR.redact(text) == "password [redacted] hash [redacted]"
    assert robot.password not in repr(robot)
    assert robot.password_hash not in repr(robot)


def test_verify_password() -> None:
    password_hash = hash_password("correct horse", cost=4)
    assert verify_password("correct horse", password_hash)
    assert not verify_password("correct horsE", password_hash)
    assert not verify_password("x" * 100, password_hash)  # beyond bcrypt's 72 bytes
    assert not verify_password("correct horse", "$2b$04$not-a-real-hash")


def test_hash_password_refuses_what_bcrypt_would_truncate() -> None:
    with pytest.raises(ValueError, match="72 bytes"):
        hash_password("x" * 73)


def test_dockerconfigjson_logs_in_to_every_host() -> None:
    document = json.loads(
        dockerconfigjson(
            ["reg.ns.svc:5000", "reg.ns.svc.cluster.local:5000", "reg.ns.svc:5000"],
            "robot-a",
            "s3cret-password",
        )
    )
    assert set(document) == {"auths"}
    assert set(document["auths"]) == {"reg.ns.svc:5000", "reg.ns.svc.cluster.local:5000"}
    for entry in document["auths"].values():
        assert entry["username"] == "robot-a"
        assert entry["password"] == "s3cret-password"
        assert base64.b64decode(entry["auth"]) == b"robot-a:s3cret-password"


def test_dockerconfigjson_is_deterministic() -> None:
    first = dockerconfigjson(["b.example", "a.example"], "u", "p")
    assert first == dockerconfigjson(["a.example", "b.example"], "u", "p")


def test_dockerconfigjson_needs_a_host() -> None:
    with pytest.raises(ValueError, match="host"):
        dockerconfigjson([], "u", "p")


def test_htpasswd_line() -> None:
    password_hash = hash_password("pw", cost=4)
    assert htpasswd_line("robot-a", password_hash) == f"robot-a:{password_hash}"
    with pytest.raises(ValueError, match="bcrypt"):
        htpasswd_line("robot-a", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=")
    with pytest.raises(ValueError, match="username"):
        htpasswd_line("robot:a", password_hash)

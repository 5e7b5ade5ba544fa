"""Image references: the distribution grammar and Docker's normalisation."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from berth.registry.reference import InvalidReference, Reference, parse_digest, parse_reference

SHA = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "host", "repository", "tag", "digest"),
    [
        ("nginx", "docker.io", "library/nginx", None, None),
        ("nginx:1.27", "docker.io", "library/nginx", "1.27", None),
        ("user/app", "docker.io", "user/app", None, None),
        ("user/app:v1", "docker.io", "user/app", "v1", None),
        ("docker.io/nginx", "docker.io", "library/nginx", None, None),
        ("index.docker.io/user/app", "docker.io", "user/app", None, None),
        ("docker.io/library/nginx:latest", "docker.io", "library/nginx", "latest", None),
        ("localhost/app", "localhost", "app", None, None),
        ("localhost:5000/team/app:v2", "localhost:5000", "team/app", "v2", None),
        ("registry.ns.svc:5000/a/b/c", "registry.ns.svc:5000", "a/b/c", None, None),
        ("10.96.0.12:5000/app:1", "10.96.0.12:5000", "app", "1", None),
        ("[::1]:5000/app", "[::1]:5000", "app", None, None),
        ("quay.io/org/app@" + SHA, "quay.io", "org/app", None, SHA),
        ("quay.io/org/app:v1@" + SHA, "quay.io", "org/app", "v1", SHA),
        ("app@" + SHA, "docker.io", "library/app", None, SHA),
        # An upper-case first component cannot be a path, so it is a host.
        ("Registry/app", "Registry", "app", None, None),
        ("a.b/x__y/z-w/v.u:T_A.G-1", "a.b", "x__y/z-w/v.u", "T_A.G-1", None),
        ("a.b/x---y", "a.b", "x---y", None, None),
    ],
)
def test_parses_and_normalises(
    text: str, host: str, repository: str, tag: str | None, digest: str | None
) -> None:
    assert parse_reference(text) == Reference(host, repository, tag, digest)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (" nginx", "whitespace"),
        ("ab" * 32, "image ID"),
        ("host.io/App", "must be lowercase"),
        ("nginx:", "invalid tag ''"),
        ("nginx:-x", "invalid tag '-x'"),
        ("nginx:" + "t" * 129, "invalid tag"),
        ("nginx@sha256:abc", "invalid digest"),
        ("nginx@sha256:" + "AB" * 32, "lower-case hex"),
        ("nginx@md5:" + "ab" * 16, "unsupported algorithm"),
        ("host.io/a//b", "invalid repository"),
        ("host.io/a_", "invalid repository"),
        ("host.io/-a", "invalid repository"),
        ("host.io/a___b", "invalid repository"),
        ("ho_st.io/a", "invalid host"),
        ("host.io:port/a", "invalid host"),
        (":tag", "repository name is missing"),
        ("host.io/" + "a" * 250, "longer than 255"),
    ],
)
def test_rejects_with_a_message_naming_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidReference, match=message):
        parse_reference(text)


@pytest.mark.parametrize(
    ("text", "familiar"),
    [
        ("docker.io/library/nginx:1.27", "nginx:1.27"),
        ("docker.io/library/a/b", "library/a/b"),
        ("docker.io/user/app@" + SHA, "user/app@" + SHA),
        ("localhost:5000/app:v1", "localhost:5000/app:v1"),
        ("quay.io/library/app", "quay.io/library/app"),
        # Without docker.io/ the first component would read as a host.
        ("docker.io/my.org/app", "docker.io/my.org/app"),
    ],
)
def test_familiar_form(text: str, familiar: str) -> None:
    assert parse_reference(text).familiar == familiar
    # The familiar form means the same image.
    assert parse_reference(familiar) == parse_reference(text)


def test_reference_is_what_a_pull_asks_for() -> None:
    assert parse_reference("a.io/x").reference == "latest"
    assert parse_reference("a.io/x:v1").reference == "v1"
    assert parse_reference(f"a.io/x:v1@{SHA}").reference == SHA


def test_digest_lengths_per_algorithm() -> None:
    assert parse_digest("sha512:" + "0" * 128) == "sha512:" + "0" * 128
    with pytest.raises(InvalidReference):
        parse_digest("sha512:" + "0" * 64)


_component = st.from_regex(r"[a-z0-9]{1,5}([._-][a-z0-9]{1,5})?", fullmatch=True)
_host = st.one_of(
    st.just("docker.io"),
    st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]\.[a-z]{2,4}(:[0-9]{2,5})?", fullmatch=True),
    st.from_regex(r"localhost(:[0-9]{2,5})?", fullmatch=True),
)


@given(
    host=_host,
    path=st.lists(_component, min_size=1, max_size=4).map("/".join),
    tag=st.none() | st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    digest=st.none() | st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex()),
)
def test_str_round_trips(host: str, path: str, tag: str | None, digest: str | None) -> None:
    if host == "docker.io" and "/" not in path:
        path = "library/" + path
    reference = Reference(host, path, tag, digest)
    parsed = parse_reference(str(reference))
    assert parsed == reference
    assert parse_reference(reference.familiar) == reference
    assert str(parsed) == str(reference)

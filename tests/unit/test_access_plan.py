"""The access pass's decisions, without a cluster: which namespaces it serves, which
pull Secrets go, what robots each namespace holds after a pass (issue, rotate, retire),
what the robot record keeps, whom the token server accepts and which ServiceAccounts
name the pull Secret."""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import pytest

from berth.api.registry import RegistrySpec
from berth.reconcile.access import (
    AccessState,
    HeldRobots,
    NamespacePlan,
    RobotRecord,
    Timing,
    fingerprint,
    held_robots,
    plan_namespace,
    recorded_state,
    robot_to_mint,
    robots_by_namespace,
    service_account_patch,
    stale_pull_secrets,
    token_server_config,
    wanted_namespaces,
)
from berth.resources.access import NamespaceAccess

NOW = datetime.datetime(2025, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)
TIMING = Timing(
    propagation=datetime.timedelta(seconds=90), retire_grace=datetime.timedelta(minutes=10)
)
PERIOD = datetime.timedelta(days=30)


def stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def robot(
    username: str,
    phase: str,
    *,
    created: datetime.datetime = NOW - datetime.timedelta(days=1),
    password: str | None = None,
    retire_at: datetime.datetime | None = None,
    pending_password: str | None = None,
    namespace: str = "team",
    password_hash: str = "",
) -> RobotRecord:
    return RobotRecord(
        username=username,
        password_hash=password_hash or f"hash-of-{username}",
        namespace=namespace,
        created=stamp(created),
        phase=phase,
        fingerprint=fingerprint(password or f"password-of-{username}"),
        retire_at=stamp(retire_at) if retire_at else None,
        pending_password=pending_password,
    )


ACTIVE = robot("robot-team-1", "active")
CARRIED = ("robot-team-1", "password-of-robot-team-1")


# -- which namespaces, which copies ----------------------------------------------------


def _spec(auth: str, access: list[dict[str, Any]] | None) -> RegistrySpec:
    document: dict[str, Any] = {"storage": {"emptyDir": {}}, "auth": {"mode": auth}}
    if access is not None:
        document["access"] = access
    return RegistrySpec.model_validate(document)


def _namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


NAMESPACES = [_namespace("team-a", tier="build"), _namespace("team-b"), _namespace("other")]
GRANTS = [
    {"namespaceSelector": {"matchLabels": {"tier": "build"}}, "permission": "push"},
    {"namespaces": ["team-b"], "serviceAccounts": ["*"]},
]


def test_wanted_namespaces_are_the_ones_the_grants_select() -> None:
    wanted = wanted_namespaces(_spec("Token", GRANTS), NAMESPACES)
    assert wanted == {
        "team-a": NamespaceAccess("team-a", ("pull", "push"), ("team-a/**",), ("default",)),
        "team-b": NamespaceAccess("team-b", ("pull",), ("team-b/**",), ("*",)),
    }
    assert wanted_namespaces(_spec("Htpasswd", GRANTS), NAMESPACES) == wanted


@pytest.mark.parametrize(
    ("auth", "access"), [("None", GRANTS), ("Token", None), ("Token", []), ("Htpasswd", [])]
)
def test_no_namespace_is_served_without_authentication_or_grants(
    auth: str, access: list[dict[str, Any]] | None
) -> None:
    assert wanted_namespaces(_spec(auth, access), NAMESPACES) == {}


def test_stale_pull_secrets_are_those_of_namespaces_no_longer_served() -> None:
    live = {
        ns: {"metadata": {"namespace": ns, "name": "berth-reg-ns-reg"}}
        for ns in ("team-a", "gone", "left")
    }
    wanted = {"team-a": NamespaceAccess("team-a", ("pull",), ("team-a/**",), ("default",))}
    assert stale_pull_secrets(live, wanted) == [
        ("gone", "berth-reg-ns-reg"),
        ("left", "berth-reg-ns-reg"),
    ]
    assert stale_pull_secrets(live, {}) == [(ns, "berth-reg-ns-reg") for ns in live]
    assert stale_pull_secrets({}, wanted) == []


def test_robots_are_grouped_by_namespace_in_recorded_order() -> None:
    a1 = robot("robot-a-1", "active", namespace="a")
    a2 = robot("robot-a-2", "pending", namespace="a", pending_password="p")
    b1 = robot("robot-b-1", "active", namespace="b")
    assert robots_by_namespace([a1, b1, a2]) == {"a": [a1, a2], "b": [b1]}
    assert robots_by_namespace([]) == {}


# -- the robot record ------------------------------------------------------------------


def test_the_record_keeps_the_robots_of_the_namespaces_served() -> None:
    gone = robot("robot-gone-1", "active", namespace="gone")
    state = AccessState(
        robots=[ACTIVE, gone],
        admin_hash="admin-hash",
        admin_fingerprint="admin-fp",
        rotation_request="r1",
        last_rotation="2025-01-01T00:00:00Z",
    )
    plans = [NamespacePlan([ACTIVE], CARRIED)]
    after = recorded_state(state, plans, rotation_request=None, now=NOW)
    assert after == dataclasses.replace(state, robots=[ACTIVE])
    assert state.robots == [ACTIVE, gone]  # the record read stays as it was


def test_the_record_notes_a_completed_rotation_and_the_request_acted_on() -> None:
    state = AccessState(robots=[ACTIVE], rotation_request="r1")
    new = robot("robot-team-2", "active")
    plans = [NamespacePlan([new, ACTIVE], ("robot-team-2", "p2"), rotated=True)]
    after = recorded_state(state, plans, rotation_request="r2", now=NOW)
    assert after.robots == [new, ACTIVE]
    assert after.last_rotation == stamp(NOW)
    assert after.rotation_request == "r2"


def test_a_pass_without_namespaces_revokes_every_robot() -> None:
    state = AccessState(robots=[ACTIVE], last_rotation="2025-01-01T00:00:00Z")
    after = recorded_state(state, [], rotation_request=None, now=NOW)
    assert after == AccessState(robots=[], last_rotation="2025-01-01T00:00:00Z")


# -- held_robots -----------------------------------------------------------------------


def test_held_robots_sorts_by_phase() -> None:
    pending = robot("robot-team-2", "pending", pending_password="p2")
    retiring = robot("robot-team-0", "retiring", retire_at=NOW + datetime.timedelta(minutes=1))
    held = held_robots([retiring, pending, ACTIVE], CARRIED, NOW)
    assert held == HeldRobots(ACTIVE, pending, [retiring], "password-of-robot-team-1")


def test_held_robots_take_the_first_of_a_phase() -> None:
    second = robot("robot-team-9", "active")
    assert held_robots([ACTIVE, second], CARRIED, NOW).active == ACTIVE


def test_held_robots_leave_out_retiring_robots_past_their_grace() -> None:
    valid = robot("robot-team-a", "retiring", retire_at=NOW + datetime.timedelta(seconds=1))
    expired = robot("robot-team-b", "retiring", retire_at=NOW)
    undated = robot("robot-team-c", "retiring")
    held = held_robots([ACTIVE, valid, expired, undated], CARRIED, NOW)
    assert held.retiring == [valid]


@pytest.mark.parametrize(
    ("robots", "carried"),
    [
        ([ACTIVE], None),  # no pull Secret, or an unreadable one
        ([ACTIVE], ("robot-team-other", "password-of-robot-team-1")),  # another robot's
        ([ACTIVE], ("robot-team-1", "edited")),  # the password was edited
        ([], CARRIED),  # the state lost the robot
    ],
)
def test_held_robots_without_an_intact_copy_have_no_password(
    robots: list[RobotRecord], carried: tuple[str, str] | None
) -> None:
    assert held_robots(robots, carried, NOW).password is None


# -- robot_to_mint ---------------------------------------------------------------------


def _mint(held: HeldRobots, *, rotate_all: bool = False) -> str | None:
    return robot_to_mint(held, period=PERIOD, rotate_all=rotate_all, now=NOW)


def test_a_namespace_without_a_working_credential_gets_an_active_robot() -> None:
    assert _mint(HeldRobots(None, None, [], None)) == "active"
    assert _mint(HeldRobots(ACTIVE, None, [], None)) == "active"
    # even with a rotation under way: there is nothing working to protect
    pending = robot("robot-team-2", "pending", pending_password="p2")
    assert _mint(HeldRobots(ACTIVE, pending, [], None)) == "active"


def test_a_fresh_credential_is_kept() -> None:
    assert _mint(HeldRobots(ACTIVE, None, [], "pw")) is None


def test_an_old_credential_gets_a_pending_successor() -> None:
    old = robot("robot-team-1", "active", created=NOW - PERIOD)
    assert _mint(HeldRobots(old, None, [], "pw")) == "pending"


def test_a_rotation_request_makes_a_pending_successor() -> None:
    assert _mint(HeldRobots(ACTIVE, None, [], "pw"), rotate_all=True) == "pending"


def test_a_rotation_under_way_gets_no_second_successor() -> None:
    old = robot("robot-team-1", "active", created=NOW - PERIOD)
    pending = robot("robot-team-2", "pending", pending_password="p2")
    assert _mint(HeldRobots(old, pending, [], "pw"), rotate_all=True) is None


# -- plan_namespace --------------------------------------------------------------------


def _plan(held: HeldRobots, minted: tuple[RobotRecord, str] | None = None) -> NamespacePlan:
    return plan_namespace(held, minted, now=NOW, timing=TIMING)


def test_a_new_active_robot_replaces_whatever_was_there() -> None:
    retiring = robot("robot-team-0", "retiring", retire_at=NOW + datetime.timedelta(minutes=1))
    pending = robot("robot-team-2", "pending", pending_password="p2")
    new = robot("robot-team-3", "active", created=NOW, password="p3")
    plan = _plan(HeldRobots(ACTIVE, pending, [retiring], None), (new, "p3"))
    assert plan == NamespacePlan([new, retiring], ("robot-team-3", "p3"))


def test_a_steady_namespace_keeps_its_robots_and_credential() -> None:
    retiring = robot("robot-team-0", "retiring", retire_at=NOW + datetime.timedelta(minutes=1))
    plan = _plan(HeldRobots(ACTIVE, None, [retiring], "pw"))
    assert plan == NamespacePlan([ACTIVE, retiring], ("robot-team-1", "pw"))


def test_a_new_pending_robot_is_recorded_with_its_password_but_not_handed_out() -> None:
    new = robot("robot-team-2", "pending", created=NOW, password="p2")
    plan = _plan(HeldRobots(ACTIVE, None, [], "pw"), (new, "p2"))
    assert plan == NamespacePlan(
        [ACTIVE, dataclasses.replace(new, pending_password="p2")], ("robot-team-1", "pw")
    )
    assert new.pending_password is None  # the inputs stay as they were


def test_a_pending_robot_waits_for_propagation() -> None:
    created = NOW - TIMING.propagation + datetime.timedelta(seconds=1)
    pending = robot("robot-team-2", "pending", created=created, pending_password="p2")
    plan = _plan(HeldRobots(ACTIVE, pending, [], "pw"))
    assert plan == NamespacePlan([ACTIVE, pending], ("robot-team-1", "pw"))


def test_a_propagated_pending_robot_becomes_active_and_the_old_one_retires() -> None:
    older = robot("robot-team-0", "retiring", retire_at=NOW + datetime.timedelta(minutes=1))
    pending = robot(
        "robot-team-2", "pending", created=NOW - TIMING.propagation, pending_password="p2"
    )
    plan = _plan(HeldRobots(ACTIVE, pending, [older], "pw"))
    assert plan == NamespacePlan(
        [
            dataclasses.replace(pending, phase="active", pending_password=None),
            dataclasses.replace(
                ACTIVE, phase="retiring", retire_at=stamp(NOW + TIMING.retire_grace)
            ),
            older,
        ],
        ("robot-team-2", "p2"),
        rotated=True,
    )
    assert (pending.phase, ACTIVE.phase) == ("pending", "active")  # inputs unchanged


def test_without_propagation_time_a_new_pending_robot_is_promoted_at_once() -> None:
    new = robot("robot-team-2", "pending", created=NOW, password="p2")
    plan = plan_namespace(
        HeldRobots(ACTIVE, None, [], "pw"),
        (new, "p2"),
        now=NOW,
        timing=Timing(datetime.timedelta(0), TIMING.retire_grace),
    )
    assert plan.rotated
    assert plan.credential == ("robot-team-2", "p2")
    assert [(r.username, r.phase) for r in plan.robots] == [
        ("robot-team-2", "active"),
        ("robot-team-1", "retiring"),
    ]


def test_a_rotation_from_start_to_end() -> None:
    """Pass after pass, the way the operator drives a namespace: issue, wait for the
    period, make a successor, wait for propagation, swap, retire the old robot."""
    passwords = iter(["first", "second"])

    def one_pass(
        robots: list[RobotRecord], carried: tuple[str, str] | None, now: datetime.datetime
    ) -> NamespacePlan:
        held = held_robots(robots, carried, now)
        phase = robot_to_mint(held, period=PERIOD, rotate_all=False, now=now)
        minted = None
        if phase:
            password = next(passwords)
            minted = (
                robot(f"robot-team-{password}", phase, created=now, password=password),
                password,
            )
        return plan_namespace(held, minted, now=now, timing=TIMING)

    start = NOW
    plan = one_pass([], None, start)
    assert plan.credential == ("robot-team-first", "first")
    assert [r.phase for r in plan.robots] == ["active"]

    plan = one_pass(plan.robots, plan.credential, start + datetime.timedelta(days=1))
    assert plan.credential == ("robot-team-first", "first")
    assert [r.phase for r in plan.robots] == ["active"]

    due = start + PERIOD
    plan = one_pass(plan.robots, plan.credential, due)
    assert plan.credential == ("robot-team-first", "first")
    assert [(r.username, r.phase) for r in plan.robots] == [
        ("robot-team-first", "active"),
        ("robot-team-second", "pending"),
    ]
    assert not plan.rotated

    swap = due + TIMING.propagation
    plan = one_pass(plan.robots, plan.credential, swap)
    assert plan.rotated
    assert plan.credential == ("robot-team-second", "second")
    assert [(r.username, r.phase) for r in plan.robots] == [
        ("robot-team-second", "active"),
        ("robot-team-first", "retiring"),
    ]
    assert all(r.pending_password is None for r in plan.robots)

    plan = one_pass(plan.robots, plan.credential, swap + TIMING.retire_grace)
    assert [(r.username, r.phase) for r in plan.robots] == [("robot-team-second", "active")]
    assert plan.credential == ("robot-team-second", "second")


# -- the token server's configuration --------------------------------------------------

HASH_A, HASH_B, HASH_ADMIN = ("$2b$05$" + c * 53 for c in "abz")
ACCESS_A = NamespaceAccess("team-a", ("pull", "push"), ("team-a/**",), ("builder", "default"))
REGISTRY = {"metadata": {"name": "reg", "namespace": "ns", "uid": "u-1"}, "spec": {}}
SPEC = _spec("Token", GRANTS)


def _robots(config_json: str) -> list[tuple[str, str | None]]:
    return [(r["username"], r["namespace"]) for r in json.loads(config_json)["robots"]]


def test_the_token_server_accepts_the_admin_and_the_robots_of_namespaces_served() -> None:
    a = robot("robot-team-a-2", "active", namespace="team-a", password_hash=HASH_A)
    a_old = robot("robot-team-a-1", "retiring", namespace="team-a", password_hash=HASH_B)
    gone = robot("robot-gone-1", "active", namespace="gone", password_hash=HASH_B)
    config = token_server_config(
        REGISTRY, SPEC, [a, gone, a_old], {"team-a": ACCESS_A}, admin_hash=HASH_ADMIN
    )
    assert (config.issuer, config.service, config.token_review) == ("berth", "reg.ns.svc", True)
    admin, *robots = config.robots
    assert (admin.username, admin.password_hash, admin.namespace, admin.catalog) == (
        "berth-admin",
        HASH_ADMIN,
        None,
        True,
    )
    assert [g.model_dump() for g in admin.grants] == [
        {"repositories": ["**"], "actions": ["pull", "push", "delete"], "service_accounts": None}
    ]
    # sorted by username; none for a namespace no longer served
    assert [(r.username, r.password_hash, r.namespace, r.catalog) for r in robots] == [
        ("robot-team-a-1", HASH_B, "team-a", False),
        ("robot-team-a-2", HASH_A, "team-a", False),
    ]
    for r in robots:
        assert [g.model_dump() for g in r.grants] == [
            {"repositories": ["team-a/**"], "actions": ["pull", "push"], "service_accounts": None}
        ]
    assert {
        ns: [g.model_dump() for g in grants] for ns, grants in config.namespace_grants.items()
    } == {
        "team-a": [
            {
                "repositories": ["team-a/**"],
                "actions": ["pull", "push"],
                "service_accounts": ["builder", "default"],
            }
        ]
    }


def test_without_an_admin_password_the_token_server_has_no_admin() -> None:
    a = robot("robot-team-a-1", "active", namespace="team-a", password_hash=HASH_A)
    config = token_server_config(REGISTRY, SPEC, [a], {"team-a": ACCESS_A}, admin_hash=None)
    assert _robots(config.to_json()) == [("robot-team-a-1", "team-a")]


def test_a_registry_serving_no_namespace_accepts_only_its_admin() -> None:
    config = token_server_config(REGISTRY, SPEC, [], {}, admin_hash=HASH_ADMIN)
    assert _robots(config.to_json()) == [("berth-admin", None)]
    assert config.namespace_grants == {}


# -- ServiceAccounts -------------------------------------------------------------------

SECRET = "berth-ns-reg"


def _account(ns: str, name: str, *refs: str) -> dict[str, Any]:
    account: dict[str, Any] = {"metadata": {"namespace": ns, "name": name, "resourceVersion": "42"}}
    if refs:
        account["imagePullSecrets"] = [{"name": ref} for ref in refs]
    return account


WANTED = {
    "team-a": ACCESS_A,
    "team-b": NamespaceAccess("team-b", ("pull",), ("team-b/**",), ("*",)),
}


def test_a_chosen_account_gets_the_pull_secret_after_the_others() -> None:
    patch = service_account_patch(_account("team-a", "builder", "mine"), SECRET, WANTED)
    assert patch == {
        "metadata": {"resourceVersion": "42"},
        "imagePullSecrets": [{"name": "mine"}, {"name": SECRET}],
    }
    patch = service_account_patch(_account("team-b", "anyone"), SECRET, WANTED)
    assert patch == {"metadata": {"resourceVersion": "42"}, "imagePullSecrets": [{"name": SECRET}]}


def test_an_account_that_has_what_it_should_is_left_alone() -> None:
    assert service_account_patch(_account("team-a", "default", SECRET), SECRET, WANTED) is None
    assert service_account_patch(_account("team-a", "other", "mine"), SECRET, WANTED) is None
    assert service_account_patch(_account("elsewhere", "default"), SECRET, WANTED) is None


def test_an_account_no_longer_chosen_loses_only_the_pull_secret() -> None:
    account = _account("team-a", "other", "mine", SECRET, "theirs")
    assert service_account_patch(account, SECRET, WANTED) == {
        "metadata": {"resourceVersion": "42"},
        "imagePullSecrets": [{"name": "mine"}, {"name": "theirs"}],
    }
    # the list empty: the field goes
    assert service_account_patch(_account("gone", "default", SECRET), SECRET, {}) == {
        "metadata": {"resourceVersion": "42"},
        "imagePullSecrets": None,
    }

"""A Registry's CA rotation, step by step (berth.reconcile.rotation.advance_ca): trust
first, signing after the propagation and the nodes, the old CA retired last."""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from berth import pki
from berth.reconcile.rotation import (
    CARotation,
    CAStep,
    Timing,
    advance_ca,
    seconds_to_next_step,
    stamp,
)
from berth.resources.registry import RegistryMaterial, TLSMaterial

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
TIMING = Timing(datetime.timedelta(seconds=90), datetime.timedelta(minutes=10))
SECOND = datetime.timedelta(seconds=1)


@pytest.fixture(scope="module")
def cas() -> list[pki.CertKey]:
    return [pki.new_ca("berth team/reg CA") for _ in range(4)]


def _maker(cas: list[pki.CertKey]) -> Callable[[], pki.CertKey]:
    supply = itertools.cycle(cas[1:])
    return lambda: next(supply)


def _step(
    cas: list[pki.CertKey],
    stored: pki.CertKey | None,
    record: CARotation,
    *,
    request: str | None = None,
    moment: datetime.datetime = NOW,
    nodes_hold: bool = True,
    rolled_out: bool = True,
) -> CAStep:
    return advance_ca(
        stored, record, request=request, moment=moment, timing=TIMING,
        nodes_hold=nodes_hold, rolled_out=rolled_out, new_ca=_maker(cas),
    )  # fmt: skip


def _bundle(step: CAStep) -> str:
    ca = TLSMaterial(step.ca.cert_pem, step.ca.key_pem)
    return RegistryMaterial("secret", ca=ca, ca_trusted=step.record.trusted).ca_bundle


def test_the_first_ca_signs_at_once_and_records_the_request(cas: list[pki.CertKey]) -> None:
    step = _step(cas, None, CARotation(), request="r1")
    assert step.ca == cas[1]
    assert step.record == CARotation(request="r1")
    assert step.change is None


def test_nothing_moves_without_a_request_or_an_expiring_ca(cas: list[pki.CertKey]) -> None:
    record = CARotation(request="r1")
    assert _step(cas, cas[0], record, request="r1") == CAStep(cas[0], record)
    assert _step(cas, cas[0], CARotation()) == CAStep(cas[0], CARotation())


def test_a_whole_rotation_trust_first_then_sign_then_retire(cas: list[pki.CertKey]) -> None:
    current = cas[0]
    staged = _step(cas, current, CARotation(), request="r1")
    assert staged.ca == current  # the old CA still signs
    assert staged.record.next_cert == cas[1].cert_pem
    assert staged.record.request == "r1"
    assert staged.change is not None
    assert staged.change.reason == "CARotationStaged"
    assert cas[1].cert_pem in _bundle(staged)
    assert current.cert_pem in _bundle(staged)

    # Not before the propagation, nor before the nodes hold it.
    early = _step(
        cas, current, staged.record, request="r1", moment=NOW + TIMING.propagation - SECOND
    )
    assert early == CAStep(current, staged.record)
    late = NOW + TIMING.propagation
    waiting = _step(cas, current, staged.record, request="r1", moment=late, nodes_hold=False)
    assert waiting == CAStep(current, staged.record)

    promoted = _step(cas, current, staged.record, request="r1", moment=late)
    assert promoted.ca == cas[1]
    assert promoted.record.next_cert is None
    assert promoted.record.next_key is None
    assert promoted.record.previous_cert == current.cert_pem
    assert promoted.record.retire_at == stamp(late + TIMING.retire_grace)
    assert promoted.change is not None
    assert promoted.change.reason == "CARotated"
    # The same two CAs before and after the switch: the same bundle, nothing for the
    # nodes and clients to fetch again.
    assert _bundle(promoted) == _bundle(staged)

    # The old CA stays trusted for the grace, and while Pods still roll.
    retire = late + TIMING.retire_grace
    kept = _step(cas, cas[1], promoted.record, request="r1", moment=retire - SECOND)
    assert kept == CAStep(cas[1], promoted.record)
    rolling = _step(cas, cas[1], promoted.record, request="r1", moment=retire, rolled_out=False)
    assert rolling == CAStep(cas[1], promoted.record)
    retired = _step(cas, cas[1], promoted.record, request="r1", moment=retire)
    assert retired.record == CARotation(request="r1")
    assert retired.change is not None
    assert retired.change.reason == "CARetired"
    assert _bundle(retired) == cas[1].cert_pem.strip() + "\n"


def test_a_request_during_a_rotation_waits_for_it(cas: list[pki.CertKey]) -> None:
    staged = _step(cas, cas[0], CARotation(), request="r1").record
    again = _step(cas, cas[0], staged, request="r2", moment=NOW + SECOND, nodes_hold=False)
    assert again.record == staged  # the staged CA is kept; r2 is acted on after


def _expiring_ca() -> pki.CertKey:
    """A CA that cannot sign a serving certificate for its whole validity any more."""
    key = ec.generate_private_key(ec.SECP256R1())
    validity = pki.SERVING_VALIDITY - datetime.timedelta(days=1)
    cert = pki.build_certificate("berth team/reg CA", key.public_key(), key, validity, [])
    return pki.CertKey(
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )  # fmt: skip


def test_an_expiring_ca_rotates_by_itself(cas: list[pki.CertKey]) -> None:
    expiring = _expiring_ca()
    step = _step(cas, expiring, CARotation(request="r1"), request="r1")
    assert step.ca == expiring  # it still signs until the next one is trusted
    assert step.record.next_cert == cas[1].cert_pem
    assert step.record.request == "r1"
    assert step.change is not None
    assert "close to expiring" in step.change.message


def test_a_record_that_cannot_be_read_is_an_empty_one() -> None:
    assert CARotation.from_json("not json") == CARotation()
    assert CARotation.from_json('["a list"]') == CARotation()
    assert CARotation.from_json(None) == CARotation()
    record = CARotation(next_cert="n", next_key="k", staged_at=stamp(NOW), request="r")
    assert CARotation.from_json(record.to_json()) == record
    assert CARotation.from_json('{"request": "r", "added_later": 1}') == CARotation(request="r")


def test_the_next_pass_is_asked_for_when_a_step_is_due_by_time() -> None:
    staged = CARotation(next_cert="n", next_key="k", staged_at=stamp(NOW))
    assert seconds_to_next_step(staged, NOW, TIMING) == 91
    assert seconds_to_next_step(staged, NOW + TIMING.propagation, TIMING) == 1
    # Past due, it waits on the nodes: their reports start the pass.
    assert seconds_to_next_step(staged, NOW + TIMING.propagation + SECOND, TIMING) is None
    promoted = CARotation(previous_cert="p", retire_at=stamp(NOW + TIMING.retire_grace))
    assert seconds_to_next_step(promoted, NOW, TIMING) == 601
    assert seconds_to_next_step(CARotation(request="r"), NOW, TIMING) is None

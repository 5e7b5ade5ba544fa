"""Rotations that never break a client: the timing every rotation waits by (credentials
in berth.reconcile.access, and a Registry's CA here), and the CA's phases.

A SelfSigned Registry's CA rotates as a credential does, trust first:

    staged    the next CA is in the CA bundle (the CA ConfigMap and the nodes' ca.crt)
              but signs nothing yet
    promoted  after PROPAGATION, and once every node agent holds the bundle, it signs:
              the serving certificates are reissued and the Pods roll; the old CA stays
              in the bundle, as the Pods still starting or stopping serve its certificates
    retired   after RETIRE_GRACE, with the workload rolled out, the old CA leaves it

so a client never meets a certificate from a CA it was not given first. A rotation
starts when the `berth.dev/rotate-ca` annotation takes a new value, or by itself when
the CA is close to expiring. The record of it is kept in the CA Secret (CA_ROTATION_KEY).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Final

from berth import pki
from berth.constants import GROUP
from berth.reconcile.kit import Note

ANNOTATION_ROTATE_CA: Final = f"{GROUP}/rotate-ca"


@dataclass
class Timing:
    """How long new material waits before it is used (mounted Secrets and ConfigMaps
    reach Pods within the kubelet's sync period), and how long old material stays valid."""

    propagation: datetime.timedelta = datetime.timedelta(seconds=90)
    retire_grace: datetime.timedelta = datetime.timedelta(minutes=10)


TIMING: Final = Timing()


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


# -- a Registry's CA ---------------------------------------------------------------------


@dataclass(frozen=True)
class CARotation:
    """The CA Secret's rotation record: the staged CA, the retired one still trusted,
    and the last rotate-ca request acted on."""

    next_cert: str | None = None
    next_key: str | None = None
    staged_at: str | None = None
    previous_cert: str | None = None
    retire_at: str | None = None
    request: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str | None) -> CARotation:
        """The record in `text`; an empty one when there is none or it cannot be read
        (a CA Secret from before rotations, or edited by hand)."""
        try:
            data = json.loads(text or "{}")
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if not all(v is None or isinstance(v, str) for v in fields.values()):
            return cls()
        return cls(**fields)

    @property
    def trusted(self) -> tuple[str, ...]:
        """The CAs trusted beside the signing one."""
        return tuple(pem for pem in (self.next_cert, self.previous_cert) if pem)


@dataclass(frozen=True)
class CAStep:
    """A Registry's CA after this pass: the one that signs, the record, and the Event
    that says what changed, if a rotation moved on."""

    ca: pki.CertKey
    record: CARotation
    change: Note | None = None


def promotion_due(record: CARotation, moment: datetime.datetime, timing: Timing) -> bool:
    """Whether the staged CA has waited out the propagation (the nodes are asked next)."""
    if record.next_cert is None or record.staged_at is None:
        return False
    return moment - parse_stamp(record.staged_at) >= timing.propagation


def seconds_to_next_step(
    record: CARotation, moment: datetime.datetime, timing: Timing
) -> float | None:
    """When the rotation's next step is due by time alone (None: not waiting on time;
    a step that waits on the nodes or a rollout follows their events)."""
    if record.next_cert is not None and record.staged_at is not None:
        due = parse_stamp(record.staged_at) + timing.propagation
    elif record.previous_cert is not None and record.retire_at is not None:
        due = parse_stamp(record.retire_at)
    else:
        return None
    left = (due - moment).total_seconds()
    return left + 1 if left >= 0 else None


def retirement_due(record: CARotation, moment: datetime.datetime) -> bool:
    return record.previous_cert is not None and (
        record.retire_at is None or parse_stamp(record.retire_at) <= moment
    )


def advance_ca(
    stored: pki.CertKey | None,
    record: CARotation,
    *,
    request: str | None,
    moment: datetime.datetime,
    timing: Timing,
    nodes_hold: bool,
    rolled_out: bool,
    new_ca: Callable[[], pki.CertKey],
) -> CAStep:
    """One pass's step of the CA (pure but for `new_ca`).

    `stored` is the CA in the Secret (None: none, or unusable as a CA at all); `request`
    the rotate-ca annotation; `nodes_hold` whether every node agent holds the bundle with
    the staged CA; `rolled_out` whether no Pod still serves an older certificate.
    """
    if stored is None:
        # Nothing trusts a CA that does not exist: the first one signs at once.
        return CAStep(new_ca(), CARotation(request=request))
    asked = bool(request) and request != record.request
    if record.next_cert is None and (asked or not pki.ca_is_usable(stored)):
        staged = new_ca()
        reason = "rotate-ca annotation" if asked else "the CA is close to expiring"
        record = replace(
            record,
            next_cert=staged.cert_pem,
            next_key=staged.key_pem,
            staged_at=stamp(moment),
            request=request if asked else record.request,
        )
        message = (
            f"A new CA is staged ({reason}): clients and nodes trust it from now on; it "
            f"signs after {timing.propagation.total_seconds():.0f} s, once every node "
            "agent holds it"
        )
        return CAStep(stored, record, Note("CARotationStaged", message, warning=False))
    if promotion_due(record, moment, timing) and nodes_hold:
        assert record.next_cert is not None and record.next_key is not None
        promoted = pki.CertKey(record.next_cert, record.next_key)
        record = replace(
            record,
            next_cert=None,
            next_key=None,
            staged_at=None,
            previous_cert=stored.cert_pem,
            retire_at=stamp(moment + timing.retire_grace),
        )
        message = (
            "The new CA signs: the serving certificates are reissued and the Pods roll; "
            f"the old CA stays trusted until {record.retire_at}"
        )
        return CAStep(promoted, record, Note("CARotated", message, warning=False))
    if retirement_due(record, moment) and record.next_cert is None and rolled_out:
        retired = replace(record, previous_cert=None, retire_at=None)
        note = Note("CARetired", "The old CA is trusted no more", warning=False)
        return CAStep(stored, retired, note)
    return CAStep(stored, record)

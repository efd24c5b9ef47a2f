"""The invariants after a run: ``ubscore verify``'s (app.core.verification.check), then what only the simulator sees.

``check`` takes op ids as unique for ever, while the simulator uses every id again
after the retention window, as clients may. So before the verifier reads them,
op ids and reusable hold ids are renamed per epoch (``o3`` of epoch 1 becomes
``o3.1``), the epoch of an operation being the time the broker stamped it and
the epoch of an event its ``ts`` (the stamp of the operation it answers, or the
expiry of the hold it releases). A row of an earlier use that answers for a later
one then shows as what it is: an event of the old epoch, and a new operation
without its result.

Is "the same as a fault-free run" well defined? Not over the inputs: after a kill
the two streams of a partition interleave differently and the timer sends its
legs at other times, so seqs legitimately differ from any one clean run. It is
well defined over the decisions: each user's events, in seq order, say in which
order that user's messages were decided, and ``check`` replays exactly that
order through the pure core and compares every event, the balances and the
holds (the reference run). The simulator adds the rest of the state: every
result row, hold mark and expiry row left in the tables must be one that
reference run would have left (a row whose message the account never applied,
or whose event was never published at its seq, is a stale row).
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from app.core.ledger import Account
from app.core.legs import Expiry
from app.core.verification import check
from app.settings import settings
from app.tables import expiry_row
from app.topics import CREDITS, DEAD_LETTERS, EVENTS, OPERATIONS
from tests.simulator.kafka import Cluster
from tests.simulator.worker import CHANGELOG_SUFFIX, Store
from tests.simulator.workload import EXPIRING_PREFIX

try:  # holds as rows of their own (issue 23); older trees keep them in the account row
    from app.core.hold_rows import HoldRow
except ImportError:  # pragma: no cover - depends on the tree under test
    HoldRow = None  # type: ignore[assignment,misc]

MAX_EXAMPLES = 5


@dataclass
class Violations:
    """Violations by kind: how many, and the first few in words."""

    counts: Dict[str, int] = field(default_factory=lambda: defaultdict(int))
    examples: Dict[str, List[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, detail: str) -> None:
        """One violation."""
        self.counts[kind] += 1
        if len(self.examples[kind]) < MAX_EXAMPLES:
            self.examples[kind].append(detail)

    @property
    def total(self) -> int:
        """How many, of every kind."""
        return sum(self.counts.values())

    def lines(self) -> List[str]:
        """Each kind with its count, then its examples."""
        found: List[str] = []
        for kind in sorted(self.counts):
            found.append(f"{kind}: {self.counts[kind]}")
            found.extend(f"    {example}" for example in self.examples[kind])
        return found


class Epochs:
    """Which retention window a time falls in, and the names ids take in it for the verifier."""

    def __init__(self, starts: Sequence[int]) -> None:
        self.starts = list(starts)

    def of(self, ts_ms: int) -> int:
        """The epoch a time belongs to (before the first: the first)."""
        return max(0, bisect.bisect_right(self.starts, ts_ms) - 1)

    def rename(self, body: Dict[str, Any], epoch: int) -> None:
        """Op ids, and the hold ids that are used again, get the epoch's suffix, in place (trades too)."""
        if isinstance(body.get("op_id"), str):
            body["op_id"] = f"{body['op_id']}.{epoch}"
        _rename_hold(body, epoch)
        for side in ("buyer", "seller"):
            if isinstance(body.get(side), dict):
                _rename_hold(body[side], epoch)
        if isinstance(body.get("trade"), dict):
            self.rename(body["trade"], epoch)


def _rename_hold(body: Dict[str, Any], epoch: int) -> None:
    hold_id = body.get("hold_id")
    if isinstance(hold_id, str) and hold_id.startswith(EXPIRING_PREFIX):
        body["hold_id"] = f"{hold_id}.{epoch}"


def _stamp_ms(timestamp: float) -> int:
    return int(round(timestamp * 1000))


class Final:
    """The run's end state, read once: events (every copy and de-duplicated) and the local tables."""

    def __init__(self, cluster: Cluster, store: Store, epochs: Epochs) -> None:
        self.cluster = cluster
        self.store = store
        self.epochs = epochs
        self.copies: List[Dict[str, Any]] = [json.loads(m.value or b"null") for m in cluster.records(EVENTS)]
        self.events: Dict[Tuple[int, int], Dict[str, Any]] = {}
        for event in self.copies:
            self.events.setdefault((event["user_id"], event["seq"]), event)
        self.accounts = self._account_views()

    def _account_views(self) -> Dict[int, Dict[str, Any]]:
        """Each account as ``GET /accounts/{id}`` shows it (what ``ubscore verify`` reads), with its ``applied``.

        Holds live in the account row, or (issue 23) in rows of their own, each read
        as its account knows it (``HoldRow.seen_by``).
        """
        rows = {int(key): json.loads(raw) for key, raw in self.rows("accounts")}
        hold_rows: Dict[int, List[Tuple[str, Any]]] = defaultdict(list)
        for key, raw in self.rows("holds"):
            owner, _, hold_id = key.decode().partition("|")
            hold_rows[int(owner)].append((hold_id, json.loads(raw)))
        views: Dict[int, Dict[str, Any]] = {}
        for user, row in sorted(rows.items()):
            holds = dict(row.get("holds", {}))
            if HoldRow is not None:
                account = Account.from_json(row)
                for hold_id, body in hold_rows.get(user, []):
                    hold = HoldRow.from_json(body).seen_by(account)  # type: ignore[union-attr]
                    if hold is not None:
                        holds[hold_id] = hold.to_json()
            views[user] = {
                "seq": row["seq"],
                "balances": row["balances"],
                "holds": dict(sorted(holds.items())),
                "applied": row.get("applied", {}),
            }
        return views

    def rows(self, table: str) -> List[Tuple[bytes, bytes]]:
        """Every local row of a table, partition by partition."""
        return [
            (key, raw)
            for (name, _), rows in sorted(self.store.rows.items())
            if name == table
            for key, raw in rows.items()
        ]

    def partition_rows(self, table: str) -> List[Tuple[int, bytes, bytes]]:
        """Every local row of a table with its partition."""
        return [
            (partition, key, raw)
            for (name, partition), rows in sorted(self.store.rows.items())
            if name == table
            for key, raw in rows.items()
        ]

    def applied(self, user_id: int, origin: Sequence[Any]) -> bool:
        """Whether the user's account reflects the message at ``origin`` (Account.has_applied, on the raw row)."""
        stream, offset = origin
        account = self.accounts.get(user_id) or {}
        return int(offset) <= int(account.get("applied", {}).get(stream, -1))


def check_run(cluster: Cluster, store: Store, epoch_starts: Sequence[int], now_ms: int) -> Violations:
    """Every invariant over what the run left: the verifier's, then the tables' rows and the dead letters."""
    epochs = Epochs(epoch_starts)
    final = Final(cluster, store, epochs)
    found = Violations()
    _verify(final, found)
    _check_holds(final, found, now_ms)
    _check_result_rows(final, found)
    _check_expiry_rows(final, found)
    _check_dead_letters(cluster, found)
    _check_store_is_changelog(cluster, store, found)
    return found


def _verify(final: Final, found: Violations) -> None:
    """app.core.verification.check (what ``ubscore verify`` runs) over the renamed topics and tables."""
    epochs = final.epochs
    operations: List[Tuple[Optional[bytes], bytes]] = []
    for message in final.cluster.records(OPERATIONS):
        operations.append((message.key, _renamed_operation(message.value or b"", epochs, _stamp_ms(message.timestamp))))
    events = []
    for copy in final.copies:
        renamed = json.loads(json.dumps(copy))
        epochs.rename(renamed, epochs.of(int(copy["ts"])))
        events.append(renamed)
    tables = {user: _renamed_account(account, epochs) for user, account in final.accounts.items()}
    for table in tables.values():
        table.pop("applied", None)  # the verifier reads accounts through the API, which does not show it
    report = check(operations, events, tables, max_operation_bytes=settings.max_body_bytes)
    for kind, examples in sorted(report.violations.items()):
        for example in examples:
            found.add(kind, example)
        hidden = report.counts[f"violation:{kind}"] - len(examples)
        found.counts[kind] += max(0, hidden)


def _renamed_operation(raw: bytes, epochs: Epochs, stamp_ms: int) -> bytes:
    try:
        body = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(body, dict):
        return raw
    epochs.rename(body, epochs.of(stamp_ms))
    return json.dumps(body, separators=(",", ":")).encode()


def _renamed_account(account: Mapping[str, Any], epochs: Epochs) -> Dict[str, Any]:
    renamed = dict(account)
    holds = {}
    for hold_id, hold in account.get("holds", {}).items():
        if hold_id.startswith(EXPIRING_PREFIX) and hold.get("expires_at_ms") is not None:
            hold_id = f"{hold_id}.{epochs.of(int(hold['expires_at_ms']))}"
        holds[hold_id] = hold
    if holds:
        renamed["holds"] = holds
    return renamed


def _check_holds(final: Final, found: Violations, now_ms: int) -> None:
    """Drained: no trade holds a reservation, and no hold is open past its expiry."""
    for user, account in sorted(final.accounts.items()):
        for hold_id, hold in sorted(account.get("holds", {}).items()):
            if int(hold.get("pending", 0)):
                found.add("hold_pending", f"user {user} hold {hold_id!r} drained with {hold}")
            expires = hold.get("expires_at_ms")
            if expires is not None and int(expires) <= now_ms:
                found.add("hold_not_released", f"user {user} hold {hold_id!r} open past its expiry: {hold}")


def _check_result_rows(final: Final, found: Violations) -> None:
    """Every result row answers for a message its account applied, with the event published at its seq."""
    for partition, key, raw in final.partition_rows("results"):
        parts = key.decode().split("|")
        user = int(parts[0])
        value = json.loads(raw)
        if parts[1] == "hold":
            _check_hold_mark(final, found, partition, user, parts[2], value)
            continue
        origin = value["source"]
        if not final.applied(user, origin):
            found.add("stale_result", f"{key.decode()} from {origin}: the account never applied it: {value['event']}")
            continue
        event = value.get("event")
        if event is None:
            continue
        published = final.events.get((event["user_id"], event["seq"]))
        if published != event:
            found.add(
                "stale_result",
                f"{key.decode()} answers with {_brief(event)}; published at that seq: {_brief(published)}",
            )


def _check_hold_mark(
    final: Final, found: Violations, partition: int, user: int, hold_id: str, value: Mapping[str, Any]
) -> None:
    """A hold id is marked used only by a lock whose accepted event was published."""
    stream, offset = value["hold"]
    where = f"{user}|hold|{hold_id} from {[stream, offset]}"
    if stream != "operations" or not final.applied(user, (stream, offset)):
        found.add("stale_hold_mark", f"{where}: the account never applied it")
        return
    message = final.cluster.log(OPERATIONS, partition).read(int(offset))
    op_id = json.loads(message.value or b"{}").get("op_id")
    epoch = final.epochs.of(_stamp_ms(message.timestamp))
    answers = [
        event
        for (owner, _), event in sorted(final.events.items())
        if owner == user and event["op_id"] == op_id and final.epochs.of(int(event["ts"])) == epoch
    ]
    if not any(event["kind"] == "lock" and event["status"] == "accepted" for event in answers):
        found.add("stale_hold_mark", f"{where}: its lock {op_id!r} was answered {[_brief(e) for e in answers]}")


def _check_expiry_rows(final: Final, found: Violations) -> None:
    """An expiry row exactly for each open hold that expires: a stale one sends legs, a missing one never expires."""
    rows = {key for key, _ in final.rows("expiries")}
    for key, raw in final.rows("expiries"):
        expiry = json.loads(raw)
        hold = final.accounts.get(int(expiry["user_id"]), {}).get("holds", {}).get(expiry["hold_id"])
        if hold is None or hold.get("expires_at_ms") != expiry["expires_at_ms"]:
            found.add("stale_expiry_row", f"{key.decode()}: the hold is {hold}")
    for user, account in sorted(final.accounts.items()):
        for hold_id, hold in sorted(account.get("holds", {}).items()):
            expires = hold.get("expires_at_ms")
            if expires is not None and expiry_row(Expiry(user, hold_id, int(expires))) not in rows:
                found.add("expiry_row_missing", f"user {user} hold {hold_id!r} {hold}: it will never expire")


def _check_dead_letters(cluster: Cluster, found: Violations) -> None:
    """Only the agent and its timer write legs: a leg it cannot read back is money stuck in flight."""
    for message in cluster.records(DEAD_LETTERS):
        letter = json.loads(message.value or b"{}")
        if letter.get("topic") == CREDITS:
            found.add("leg_dead_lettered", f"{letter.get('error')}: {str(letter.get('value'))[:200]}")


def _check_store_is_changelog(cluster: Cluster, store: Store, found: Violations) -> None:
    """Local state never differs from the changelog: each row is its key's last changelog value (or a result gone)."""
    latest: Dict[Tuple[str, int], Dict[bytes, Optional[bytes]]] = {}
    for (topic, partition), log in sorted(cluster.logs.items()):
        if topic.endswith(CHANGELOG_SUFFIX):
            table = latest.setdefault((topic[: -len(CHANGELOG_SUFFIX)], partition), {})
            for message in log.records:
                assert message.key is not None
                table[message.key] = message.value
    for (table_name, partition), rows in sorted(store.rows.items()):
        expected = {key: value for key, value in latest.get((table_name, partition), {}).items() if value is not None}
        for key, value in rows.items():
            if expected.get(key) != value:
                found.add(
                    "local_not_changelog", f"{table_name}/{partition} {key!r}: {value!r} != {expected.get(key)!r}"
                )
        if table_name != "results":
            for key in sorted(expected.keys() - rows.keys()):
                found.add("local_not_changelog", f"{table_name}/{partition} {key!r} missing locally")


def _brief(event: Optional[Mapping[str, Any]]) -> str:
    if event is None:
        return "nothing"
    return (
        f"{event['kind']} {event['op_id']!r} {event['status']}"
        f"{'/' + str(event['reason']) if event.get('reason') else ''} seq {event['seq']}"
    )

"""The expiry timer: holds past their ``expires_at_ms`` are released by an ordinary ledger message.

The timer decides nothing about money. Every ``UBS_EXPIRY_CHECK_S`` it reads
the front of the ``expiries`` table of each input partition this worker owns
(keys sort by expiry time) and puts one expiry leg per due hold on the ledger's
internal topic, on that user's partition. The agent applies the leg like any
other input (``ledger.apply_expiry``): the release, its event and its seq are
decided from the account alone, so they are the same on every replay, and a
leg sent twice, late, or for a hold closed meanwhile changes nothing more. The
agent removes the row when it applies the leg, so a due row that stays means
its leg is still on the way, or was lost with a crash: the timer sends it
again after ``RESEND_AFTER_S``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Dict, Iterator, List, Tuple

from app.core.legs import Expiry
from app.faust_app import app
from app.frame.faust_internals import open_partition_db
from app.observability import metrics
from app.partitioning import partition_for, user_key
from app.settings import settings
from app.tables import expiries
from app.topics import credits_topic, operations_topic

log = logging.getLogger(__name__)

#: A due row whose leg was sent this long ago and is still there is sent again.
RESEND_AFTER_S = 30.0

_sent: Dict[bytes, float] = {}


def due(partition: int, now_ms: int) -> List[Tuple[bytes, Expiry]]:
    """The expiries of one partition due at ``now_ms``, earliest first."""
    bound = f"{now_ms + 1:015d}".encode()  # every key of a time <= now_ms sorts below it
    found = []
    for key, value in _rows(partition):
        if key >= bound:
            break
        found.append((key, Expiry.from_json(value)))
    return found


def _rows(partition: int) -> Iterator[Tuple[bytes, Any]]:
    """One partition's rows in key order; the agent tests' memory store keeps all partitions in one mapping."""
    db = open_partition_db(expiries, partition)
    if db is not None:
        for key, raw in db.items():
            yield key, json.loads(raw)
        return
    for key in sorted(expiries.data.keys()):
        value = expiries.data[key]
        if partition_for(user_key(int(value["user_id"])), settings.partitions) == partition:
            yield key, value


async def send_due(now_ms: int, monotonic: float) -> int:
    """Send the leg of every due expiry of the owned partitions not sent recently; returns how many were sent."""
    owned = sorted(tp.partition for tp in app.consumer.assignment() if tp.topic == operations_topic.get_topic_name())
    seen = set()
    sent = 0
    for partition in owned:
        for key, expiry in due(partition, now_ms):
            seen.add(key)
            if monotonic - _sent.get(key, -RESEND_AFTER_S) < RESEND_AFTER_S:
                continue
            value = json.dumps(expiry.to_json(), separators=(",", ":")).encode()
            await credits_topic.send(key=user_key(expiry.user_id), value=value, partition=partition)
            _sent[key] = monotonic
            sent += 1
            log.info(
                "hold_expiry_sent user_id=%s hold_id=%s expires_at_ms=%s partition=%s",
                expiry.user_id,
                expiry.hold_id,
                expiry.expires_at_ms,
                partition,
            )
    for key in [key for key in _sent if key not in seen]:
        del _sent[key]
    if sent:
        metrics.HOLD_EXPIRIES_SENT.inc(sent)
    return sent


@app.timer(interval=settings.expiry_check_s)
async def expire_due_holds() -> None:
    """Send the expiry legs of the holds due now (see the module docstring)."""
    recovered = app.tables.recovery.completed.is_set()  # type: ignore[attr-defined]  # TableManagerT omits it
    if app.rebalancing or not recovered:
        return
    try:
        await send_due(int(time.time() * 1000), time.monotonic())
    except Exception as exc:  # noqa: BLE001 - broker away or partitions moving: the rows stay due, next time
        log.warning("hold_expiry_failed error=%r", exc)

"""Every private attribute of Faust and aiokafka that UBSCore reads, in one module.

The guards need facts the libraries keep private: which partitions Faust holds
back, what its consumer believes it read and committed, and aiokafka's view of a
partition. Each read is one function here, and tests/unit/test_faust_internals.py
checks each against the installed versions, so an upgrade that moves one fails a
canary test instead of a guard in production. Besides these reads, private
hooks are overridden by subclasses: ``faust.App._new_producer`` and
``faust.App._new_web`` (app.faust_app.UBSCoreApp), ``ProducerBuffer._send_pending``
(app.frame.producer_buffer), and ``Recovery._build_offsets`` with the
``TableManager.recovery`` that hands it out (app.frame.bulk_recovery), and
``Consumer.wait_first`` as the fetcher uses it (app.frame.consume_loop); the
canaries cover them too. The web driver's ``_runner`` is replaced by a runner
reading aiohttp's own privates (app.web.limits, whose canaries are
tests/agents/test_gateway_limits.py). One more is called: aiokafka's coordinator's
``check_errors``, to collect an error nobody polls for (app.guards.group_watch). And one is
wrapped on the instance: the group coordinator's ``_do_heartbeat``, whose
successes say this worker still owns its partitions (app.frame.ownership).
"""

from __future__ import annotations

import weakref
from typing import Any, Awaitable, Callable, Dict, Optional, Tuple

from aiokafka import AIOKafkaConsumer
from faust import streams as faust_streams
from faust.types import TP

# ruff: noqa: SLF001 - reading private attributes is this module's purpose


async def refresh_topic_metadata(consumer: AIOKafkaConsumer, topic: str) -> None:
    """Make a consumer without subscriptions learn a topic's partitions.

    Such a consumer tracks no topic's metadata, and a refresh already under way
    may answer without the topic, so it is added and a refresh forced.
    """
    await consumer._client.add_topic(topic)
    await consumer._client.force_metadata_update()


def held_by_faust(consumer: Any, tp: TP) -> Dict[str, bool]:
    """Whether Faust's consumer has the partition paused, inactive or buffered."""
    return {
        "paused": tp in consumer._paused_partitions,
        "inactive": tp not in consumer._get_active_partitions(),
        "buffered": tp in consumer._buffered_partitions,
    }


def faust_offsets(consumer: Any, tp: TP) -> Dict[str, Any]:
    """The last offset Faust's consumer handed out and the last it committed, for one partition."""
    return {"read_offset": consumer._read_offset.get(tp), "committed": consumer._committed_offset.get(tp)}


def aiokafka_partition_state(consumer: Any, tp: TP) -> Dict[str, Any]:
    """aiokafka's view of one partition, under Faust's consumer thread."""
    kafka = aiokafka_consumer(consumer)
    state = kafka._subscription.subscription.assignment.state_value(tp)
    return {
        "position": state.position if state.has_valid_position else None,
        "highwater": state.highwater,
        "kafka_paused": state.paused,
        "awaiting_reset": state.awaiting_reset,
        "prefetched": tp in kafka._fetcher._records,
    }


def aiokafka_consumer(consumer: Any) -> AIOKafkaConsumer:
    """The aiokafka consumer under Faust's, which lives in Faust's consumer thread."""
    return consumer._thread._ensure_consumer()


async def in_consumer_thread(consumer: Any, fun: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run ``fun(*args)`` in the event loop of Faust's consumer thread, where aiokafka's futures live."""
    return await consumer._thread.call_thread(fun, *args)


def parked_group_error(kafka: AIOKafkaConsumer) -> Optional[BaseException]:
    """The error aiokafka's group coordination has parked for the application, if any.

    The coordination task hands some errors (a JoinGroup answered
    REBALANCE_IN_PROGRESS, for one) to the application: it parks the error and
    waits until the next poll of the consumer raises it, and only then joins again.
    """
    coordinator = kafka._coordinator
    return None if coordinator is None else coordinator._pending_exception


def listener_coordinator(listener: Any) -> Optional[Any]:
    """The aiokafka group coordinator behind Faust's rebalance listener, in Faust's consumer thread."""
    return getattr(listener._thread._ensure_consumer(), "_coordinator", None)


def on_heartbeat(coordinator: Any, wrap: Callable[[Callable[[], Any]], Callable[[], Any]]) -> bool:
    """Replace a group coordinator's ``_do_heartbeat`` by ``wrap(it)``, on this object, once; whether it did now.

    The heartbeat task calls ``self._do_heartbeat()`` at each beat, so an
    attribute of the instance takes the class's place from the next beat on.
    """
    if not hasattr(coordinator, "_do_heartbeat") or "_do_heartbeat" in vars(coordinator):
        return False
    coordinator._do_heartbeat = wrap(coordinator._do_heartbeat)
    return True


async def collect_group_error(kafka: AIOKafkaConsumer) -> Optional[BaseException]:
    """Raise the parked error as a poll would, and return it; the coordination task then goes on."""
    try:
        kafka._coordinator.check_errors()
    except Exception as exc:  # noqa: BLE001 - the error is what is collected
        return exc
    return None


def recovery_progress(recovery: Any) -> Tuple[int, Dict[TP, Tuple[int, int]]]:
    """The generation of Faust's table recovery, and while one runs, where it stands on each active changelog partition.

    For each partition: the offset it has applied (-1 before the first record)
    and the highwater it waits for (the last offset there, -1 when empty). A
    partition whose offsets are not built yet is left out.
    """
    generation = int(recovery._generation_id)
    if not recovery.in_recovery:
        return generation, {}
    progress: Dict[TP, Tuple[int, int]] = {}
    for tp in list(recovery.active_tps):
        offset, highwater = recovery.active_offsets.get(tp), recovery.active_highwaters.get(tp)
        if offset is not None and highwater is not None:
            progress[tp] = (int(offset), int(highwater))
    return generation, progress


def open_partition_db(table: Any, partition: int) -> Optional[Any]:
    """The RocksDB database (rocksdict, raw bytes) of one partition of a table, if this worker has it open.

    None for a partition not open here and for a store that keeps no
    database per partition (``memory://``, the agent tests' store).
    """
    dbs = getattr(table.data, "_dbs", None)
    return None if dbs is None else dbs.get(partition)


def delivery_can_wait(app: Any, consumer: Any, tp: TP) -> bool:
    """Whether Faust's delivery of a fetched record of ``tp`` to its channels could suspend.

    It waits on the conductor's index lock, on flow control, on a producer
    buffer over its limit, and on a full channel queue; and a delivery while
    the flow is being suspended must take Faust's race.
    """
    if consumer.suspend_flow.is_set() or not app.flow_control.is_active():
        return True
    conductor = app.topics
    if conductor._tp_to_callback_lock.locked():
        return True
    buffer = app.producer.buffer
    if buffer.size > buffer.max_messages:
        return True
    channels = conductor._tp_index.get(tp)
    return not channels or any(channel.queue.full() for channel in channels)


def set_current_event(event: Any) -> None:
    """Make ``event`` Faust's current event in this task, as its stream does for a per-message agent.

    A batch is handled in the agent's own task, where Faust leaves the current
    event unset or stale; table reads use it to pick the partition's store.
    """
    faust_streams._current_event.set(weakref.ref(event))

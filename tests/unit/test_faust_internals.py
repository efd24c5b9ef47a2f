"""Canaries for the private Faust and aiokafka attributes UBSCore reads or overrides (app.frame.faust_internals).

Each guard reads a private attribute; a faust-streaming or aiokafka upgrade may
rename one without a deprecation. These tests build the real objects without a
broker (a throwaway Faust app's consumer, an unstarted aiokafka consumer with a
manual assignment, a real Fetcher) and call the guard functions on them, so an
upgrade that moves an attribute fails here, not in a guard in production.
The last tests check the promise of app/__init__.py: the pure core loads alone.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
from typing import Any, AsyncIterator, Dict, Tuple

import faust
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.consumer.subscription_state import Assignment, SubscriptionState, TopicPartitionState
from faust.exceptions import ConsumerNotStarted
from faust.transport.producer import ProducerBuffer
from faust.types import TP

from app.frame.faust_internals import (
    aiokafka_partition_state,
    collect_group_error,
    delivery_can_wait,
    faust_offsets,
    held_by_faust,
    listener_coordinator,
    on_heartbeat,
    open_partition_db,
    parked_group_error,
    recovery_progress,
    set_current_event,
)

TOPIC = TP("canary.topic", 3)
# ruff: noqa: SLF001 - reading the private attributes is what a canary is for

HEAVY = ("faust", "aiokafka", "cassandra", "mode", "rocksdict")


@pytest.fixture()
def faust_consumer() -> Any:
    """The consumer of a throwaway app: nothing connects until it is started, and it never is."""
    app = faust.App("canary", broker="kafka://localhost:1", store="memory://")
    return app.consumer


@pytest.fixture()
async def kafka_consumer() -> AsyncIterator[AIOKafkaConsumer]:
    """An unstarted aiokafka consumer holding TOPIC by manual assignment, with a real Fetcher."""
    consumer = AIOKafkaConsumer(bootstrap_servers="localhost:1")
    consumer.assign([TOPIC])
    consumer._fetcher = Fetcher(consumer._client, consumer._subscription)
    try:
        yield consumer
    finally:
        await consumer._fetcher.close()
        consumer._fetcher = None
        await consumer.stop()


def test_faust_consumer_keeps_the_sets_and_maps_the_guards_read(faust_consumer: Any) -> None:
    assert isinstance(faust_consumer._paused_partitions, set)
    assert isinstance(faust_consumer._buffered_partitions, set)
    assert isinstance(faust_consumer._get_active_partitions(), set)
    for name in ("_read_offset", "_committed_offset"):
        offsets = getattr(faust_consumer, name)
        assert offsets.get(TOPIC) is None, name  # a mapping of TP to offset, empty before any read
        offsets[TOPIC] = 41
        assert offsets.get(TOPIC) == 41, name


def test_held_by_faust_reads_paused_inactive_and_buffered(faust_consumer: Any) -> None:
    assert held_by_faust(faust_consumer, TOPIC) == {"paused": False, "inactive": True, "buffered": False}
    faust_consumer._paused_partitions.add(TOPIC)
    faust_consumer._buffered_partitions.add(TOPIC)
    faust_consumer._get_active_partitions().add(TOPIC)
    assert held_by_faust(faust_consumer, TOPIC) == {"paused": True, "inactive": False, "buffered": True}


def test_faust_offsets_reads_what_was_handed_out_and_committed(faust_consumer: Any) -> None:
    assert faust_offsets(faust_consumer, TOPIC) == {"read_offset": None, "committed": None}
    faust_consumer._read_offset[TOPIC] = 12
    faust_consumer._committed_offset[TOPIC] = 10
    assert faust_offsets(faust_consumer, TOPIC) == {"read_offset": 12, "committed": 10}


def test_faust_consumer_thread_hands_out_its_aiokafka_consumer(faust_consumer: Any) -> None:
    thread = faust_consumer._thread
    assert callable(thread._ensure_consumer)
    assert hasattr(thread, "_consumer") and thread._consumer is None  # where _ensure_consumer finds it
    with pytest.raises(ConsumerNotStarted):
        thread._ensure_consumer()


async def test_aiokafka_assignment_state_has_the_fields_the_guard_reads(kafka_consumer: AIOKafkaConsumer) -> None:
    subscription = kafka_consumer._subscription
    assert isinstance(subscription, SubscriptionState)
    assert isinstance(subscription.subscription.assignment, Assignment)
    state = subscription.subscription.assignment.state_value(TOPIC)
    assert isinstance(state, TopicPartitionState)
    assert (state.has_valid_position, state.highwater, state.paused, state.awaiting_reset) == (
        False,
        None,
        False,
        False,
    )
    state.seek(17)
    assert (state.has_valid_position, state.position) == (True, 17)
    assert isinstance(kafka_consumer._fetcher._records, dict)


async def test_aiokafka_partition_state_reads_through_faust_to_aiokafka(
    faust_consumer: Any, kafka_consumer: AIOKafkaConsumer
) -> None:
    faust_consumer._thread._consumer = kafka_consumer
    assert aiokafka_partition_state(faust_consumer, TOPIC) == {
        "position": None,
        "highwater": None,
        "kafka_paused": False,
        "awaiting_reset": False,
        "prefetched": False,
    }
    kafka_consumer._subscription.subscription.assignment.state_value(TOPIC).seek(5)
    kafka_consumer.pause(TopicPartition(TOPIC.topic, TOPIC.partition))
    kafka_consumer._fetcher._records[TOPIC] = object()  # what a fetch leaves there: a batch of TOPIC's records
    state = aiokafka_partition_state(faust_consumer, TOPIC)
    assert (state["position"], state["kafka_paused"], state["prefetched"]) == (5, True, True)
    del kafka_consumer._fetcher._records[TOPIC]


def test_recovery_progress_reads_the_generation_and_the_active_offsets() -> None:
    recovery = faust.App("canary", broker="kafka://localhost:1", store="memory://").tables.recovery
    assert recovery_progress(recovery) == (0, {})  # no recovery under way
    other = TP("canary.other", 0)
    recovery.active_tps.update({TOPIC, other})
    recovery.active_offsets[TOPIC] = -1
    recovery.active_highwaters[TOPIC] = 204
    recovery.active_offsets[other] = None  # added, offsets not built yet
    recovery._generation_id = 7
    assert recovery_progress(recovery) == (7, {})
    recovery._set_recovery_started()
    assert recovery.in_recovery
    assert recovery_progress(recovery) == (7, {TOPIC: (-1, 204)})


def test_fetcher_keeps_prefetched_records_in_records() -> None:
    source = inspect.getsource(Fetcher.__init__)
    assert "self._records = collections.OrderedDict()" in source


async def test_aiokafka_client_refreshes_metadata_for_an_added_topic(kafka_consumer: AIOKafkaConsumer) -> None:
    """refresh_topic_metadata awaits what these two return."""
    client = kafka_consumer._client
    assert list(inspect.signature(client.add_topic).parameters) == ["topic"]
    assert list(inspect.signature(client.force_metadata_update).parameters) == []
    for pending in (client.add_topic("canary.other"), client.force_metadata_update()):
        assert isinstance(pending, asyncio.Future)  # awaitable, and cancelled here: no broker will answer
        pending.cancel()
    assert "canary.other" in client._topics


def test_set_current_event_is_what_table_reads_see() -> None:
    """Table reads pick the partition's store from faust.streams.current_event()."""
    from faust.streams import current_event

    marker = object.__new__(faust.Event)
    set_current_event(marker)
    assert current_event() is marker


def test_the_overridden_producer_hooks_exist_and_are_called() -> None:
    """app.faust_app overrides App._new_producer and app.frame.producer_buffer ProducerBuffer._send_pending."""
    new_producer = faust.App._new_producer
    assert inspect.isfunction(new_producer) and not inspect.iscoroutinefunction(new_producer)
    assert "self._new_producer()" in inspect.getsource(faust.App)
    send_pending = ProducerBuffer._send_pending
    assert inspect.iscoroutinefunction(send_pending)
    assert list(inspect.signature(send_pending).parameters) == ["self", "fut"]
    assert "self._send_pending" in inspect.getsource(ProducerBuffer)  # its sending loop calls the hook
    for name in ("put", "flush", "__post_init__"):
        assert callable(getattr(ProducerBuffer, name)), name


def test_our_subclasses_override_those_very_hooks() -> None:
    from app.faust_app import UBSCoreApp
    from app.frame.producer_buffer import DrainingProducerBuffer

    assert "_new_producer" in vars(UBSCoreApp)
    assert inspect.iscoroutinefunction(vars(DrainingProducerBuffer)["_send_pending"])


def test_the_web_hook_exists_and_its_blueprints_are_chosen_from_the_class() -> None:
    """app.faust_app overrides App._new_web with a Web whose production_blueprints (Faust's index) are none."""
    from faust.web.base import Web

    from app.faust_app import GatewayWeb, UBSCoreApp

    assert "self._new_web()" in inspect.getsource(faust.App)
    assert "_new_web" in vars(UBSCoreApp)
    assert "self.production_blueprints" in inspect.getsource(Web._enabled_blueprints)
    assert GatewayWeb.production_blueprints == ()


async def test_fausts_server_serves_with_the_apps_web_ssl_context() -> None:
    """app.faust_app sets ``web_ssl_context`` at the worker's start; Faust's TCP site must be made with it."""
    import ssl

    from faust.web.drivers.aiohttp import Web as AiohttpWeb

    app = faust.App("canary-web", broker="kafka://localhost:1", store="memory://", web_port=1)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    app.conf.web_ssl_context = context
    web = AiohttpWeb(app)
    await web._runner.setup()  # binds nothing: the site, never started, only holds what it would serve with
    try:
        assert web._new_transport_tcp()._ssl_context is context
    finally:
        await web._runner.cleanup()


def test_the_recovery_hooks_of_the_bulk_load_exist_and_are_called() -> None:
    """app.frame.bulk_recovery overrides Recovery._build_offsets and TableManager.recovery."""
    from faust.tables import TableManager
    from faust.tables.recovery import Recovery

    build_offsets = Recovery._build_offsets
    assert inspect.iscoroutinefunction(build_offsets)
    assert list(inspect.signature(build_offsets).parameters) == ["self", "consumer", "tps", "destination", "title"]
    source = inspect.getsource(Recovery)  # _restart_recovery is a mode ServiceTask, not a plain function
    restart = source[source.index("async def _restart_recovery") : source.index("def _set_recovery_started")]
    # Called for the actives with their offsets, after their highwaters, before the seek.
    assert restart.index("_build_highwaters") < restart.index("_build_offsets") < restart.index("_seek_offsets")
    assert '"active"' in restart and "active_offsets" in restart
    assert isinstance(inspect.getattr_static(TableManager, "recovery"), property)
    assert "self._recovery" in inspect.getsource(TableManager)


def test_our_table_manager_hands_out_the_bulk_first_recovery() -> None:
    from app.frame.bulk_recovery import BulkFirstRecovery, UBSCoreTableManager

    assert "_build_offsets" in vars(BulkFirstRecovery)
    app = faust.App("canary", broker="kafka://localhost:1", store="memory://", TableManager=UBSCoreTableManager)
    assert isinstance(app.tables.recovery, BulkFirstRecovery)


async def test_a_parked_group_error_waits_for_a_poll_and_collecting_it_lets_the_coordination_go_on() -> None:
    """aiokafka's coordination parks errors for the application (app.guards.group_watch collects them)."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator
    from aiokafka.errors import KafkaError

    consumer = AIOKafkaConsumer(bootstrap_servers="localhost:1", group_id="canary")
    assert parked_group_error(consumer) is None  # no coordinator before start
    consumer._subscription.register_fetch_waiters(set())  # the fetcher does this at start
    coordinator = GroupCoordinator(consumer._client, consumer._subscription, group_id="canary")
    consumer._coordinator = coordinator
    try:
        assert parked_group_error(consumer) is None
        # What the coordination routine does with an error it does not retry on its own: park it and wait.
        waiting = asyncio.ensure_future(coordinator._push_error_to_user(KafkaError("join refused")))
        await asyncio.sleep(0.01)
        assert isinstance(parked_group_error(consumer), KafkaError)
        assert not waiting.done()  # nobody polled: the coordination waits
        collected = await collect_group_error(consumer)
        assert isinstance(collected, KafkaError) and "join refused" in str(collected)
        await asyncio.wait_for(waiting, 1)  # and now it goes on
        assert parked_group_error(consumer) is None
        assert await collect_group_error(consumer) is None
        assert "await self._push_error_to_user(exc)" in inspect.getsource(GroupCoordinator)
    finally:
        coordinator._coordination_task.cancel()
        await asyncio.gather(coordinator._coordination_task, return_exceptions=True)
        await consumer._client.close()


def test_the_fetcher_races_each_delivery_through_wait_first() -> None:
    """app.frame.consume_loop overrides Consumer.wait_first for the fetcher's call with the consumer's callback."""
    from faust.transport.consumer import Consumer as BaseConsumer

    drain = inspect.getsource(BaseConsumer._drain_messages)
    assert "callback = self.callback" in drain
    assert "self.wait_first(" in drain and "callback(message), self.suspend_flow.wait()" in drain
    assert "self._new_consumer()" in inspect.getsource(faust.App)
    new_consumer = inspect.getsource(faust.App._new_consumer)
    for keyword in ("callback=", "on_partitions_revoked=", "on_partitions_assigned=", "beacon="):
        assert keyword in new_consumer, keyword


def test_our_app_builds_the_inline_delivering_consumer() -> None:
    from app.faust_app import UBSCoreApp
    from app.frame.consume_loop import UBSCoreConsumer

    app = UBSCoreApp("canary", broker="kafka://localhost:1", store="memory://")
    assert isinstance(app.consumer, UBSCoreConsumer)


async def test_delivery_can_wait_reads_flow_control_the_index_lock_the_buffer_and_the_queues() -> None:
    app = faust.App("canary", broker="kafka://localhost:1", store="memory://")
    topic = app.topic("canary.topic")
    channel = topic.clone(is_iterator=True)
    app.topics._tp_index[TOPIC] = {channel}
    consumer = app.consumer
    assert delivery_can_wait(app, consumer, TOPIC)  # flow control starts suspended
    app.flow_control.resume()
    assert not delivery_can_wait(app, consumer, TOPIC)
    assert delivery_can_wait(app, consumer, TP("canary.unsubscribed", 0))
    consumer.suspend_flow.set()
    assert delivery_can_wait(app, consumer, TOPIC)
    consumer.suspend_flow.clear()
    async with app.topics._tp_to_callback_lock:
        assert delivery_can_wait(app, consumer, TOPIC)
    buffer = app.producer.buffer
    for _ in range(buffer.max_messages + 1):
        buffer.pending.put_nowait(None)  # type: ignore[arg-type]
    assert delivery_can_wait(app, consumer, TOPIC)
    while not buffer.pending.empty():
        buffer.pending.get_nowait()
    while not channel.queue.full():
        channel.queue.put_nowait(None)
    assert delivery_can_wait(app, consumer, TOPIC)


def test_open_partition_db_is_none_without_databases_per_partition() -> None:
    app = faust.App("canary", broker="kafka://localhost:1", store="memory://")
    table = app.Table("canary-table", partitions=4)
    assert open_partition_db(table, 0) is None


def test_open_partition_db_is_the_database_faust_opened_for_the_partition(tmp_path: Any) -> None:
    """The RocksDB store keeps one raw-bytes database per partition, opened on first use; read() reads it."""
    from app.tables import read

    app = faust.App("canary", broker="kafka://localhost:1", store="rocksdb://", datadir=str(tmp_path))
    table = app.Table("canary-table", partitions=4, key_type=bytes, options={"driver": "rocksdict"})
    assert open_partition_db(table, 2) is None  # not opened yet: read() goes through Faust
    db = table.data._db_for_partition(2)
    assert open_partition_db(table, 2) is db
    db[b"user"] = json.dumps({"seq": 3}).encode()
    assert read(table, 2, b"user") == {"seq": 3}
    assert read(table, 2, b"nobody") is None
    assert open_partition_db(table, 1) is None


def loaded_after(statement: str) -> Tuple[Dict[str, Any], str]:
    """Run ``statement`` in a fresh interpreter; the heavy libraries it loaded, and what it printed."""
    code = (
        "import json, sys\n"
        f"{statement}\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    *printed, last = done.stdout.strip().splitlines()
    return {"heavy": json.loads(last)}, "\n".join(printed)


def test_the_pure_core_loads_no_framework_or_driver() -> None:
    statement = (
        "import importlib, pkgutil, app.core\n"
        "names = [m.name for m in pkgutil.iter_modules(app.core.__path__)]\n"
        "[importlib.import_module('app.core.' + n) for n in names]\n"
        "print(len(names))"
    )
    loaded, printed = loaded_after(statement)
    assert int(printed) >= 4  # ledger, models, verification, wire: the check ran over real modules
    assert loaded["heavy"] == []


def test_importing_app_loads_no_faust_and_app_app_is_the_faust_app() -> None:
    assert loaded_after("import app")[0]["heavy"] == []
    loaded, printed = loaded_after("import app, faust\nprint(isinstance(app.app, faust.App))")
    assert printed == "True"
    assert "faust" in loaded["heavy"]


async def test_a_real_group_coordinator_heartbeats_through_the_instance_attribute_we_wrap() -> None:
    """app.frame.ownership records heartbeats by wrapping ``_do_heartbeat`` on the coordinator object."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    routine = inspect.getsource(GroupCoordinator._heartbeat_routine)
    assert "success = await self._do_heartbeat()" in routine
    assert inspect.iscoroutinefunction(GroupCoordinator._do_heartbeat)
    heartbeat = inspect.getsource(GroupCoordinator._do_heartbeat)
    assert "return True" in heartbeat and "return False" in heartbeat
    # A join completes before the heartbeat task starts: the listener sees every new coordinator first.
    ensure = inspect.getsource(GroupCoordinator.ensure_active_group)
    assert ensure.index("await self._do_rejoin_group(") < ensure.index("self._start_heartbeat_task()")
    consumer = AIOKafkaConsumer(bootstrap_servers="localhost:1", group_id="canary")
    consumer._subscription.register_fetch_waiters(set())
    coordinator = GroupCoordinator(consumer._client, consumer._subscription, group_id="canary")
    try:
        wrapped: list = []
        assert on_heartbeat(coordinator, lambda original: wrapped.append(original) or original)
        assert wrapped and wrapped[0].__func__ is GroupCoordinator._do_heartbeat
        assert not on_heartbeat(coordinator, lambda original: original)  # once per object
    finally:
        coordinator._coordination_task.cancel()
        await asyncio.gather(coordinator._coordination_task, return_exceptions=True)
        await consumer._client.close()


def test_fausts_rebalance_listener_reaches_the_coordinator_and_our_consumer_uses_ours() -> None:
    """The listener class is chosen from the consumer class; it finds aiokafka's consumer through its thread."""
    from faust.transport.drivers.aiokafka import ConsumerRebalanceListener

    from app.faust_app import UBSCoreApp
    from app.frame.ownership import OwnershipListener

    assert "consumer.RebalanceListener(self)" in inspect.getsource(faust.transport.drivers.aiokafka)
    assert "self._thread._ensure_consumer()._coordinator" in inspect.getsource(
        ConsumerRebalanceListener.on_partitions_assigned
    )
    app = UBSCoreApp("canary", broker="kafka://localhost:1", store="memory://")
    assert app.consumer.RebalanceListener is OwnershipListener
    listener = OwnershipListener(app.consumer._thread)
    with pytest.raises(ConsumerNotStarted):
        listener_coordinator(listener)

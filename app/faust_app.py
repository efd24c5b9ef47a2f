"""The one Faust app of UBSCore, configured from app.settings.

Agents, tables, topics and views register themselves on this object when their
modules are imported (app/__init__.py imports them all), so ``faust -A app worker``
and the ``ubscore`` console script see the same complete app.
"""

from __future__ import annotations

import logging
import signal
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

import faust
from faust.types import ConsumerT, ProducerT, TopicT
from faust.web import Web
from faust.web.drivers.aiohttp import Web as AiohttpWeb

from app.frame import failpoints
from app.frame.bulk_recovery import UBSCoreTableManager
from app.frame.consume_loop import UBSCoreConsumer
from app.frame.fencing import FreezeWatch
from app.frame.kafka_admin import CHANGELOG_CONFIGS, ensure_topics
from app.frame.local_state import set_aside_mismatched
from app.frame.producer_buffer import install as install_draining_buffer
from app.kafka_clients import broker_credentials
from app.observability.log_format import install as install_log_format
from app.settings import settings
from app.web import access, limits, peers, tls

log = logging.getLogger(__name__)


class UBSCoreWorker(faust.Worker):
    """Faust's worker without its terminal spinner, logging in ``UBS_LOG_FORMAT``, reading its API keys.

    With a spinner Faust sets the root logger to DEBUG whatever ``-l`` says, so
    every library's debug record is built and then dropped: about a tenth of a
    busy worker's time. Without one, ``-l`` is the level that is built.

    The keys are read, the gateway's address judged and its TLS files loaded
    before anything else starts (app.web.access, app.web.tls): a worker that
    must not serve as configured exits 78 with one line, having bound nothing
    and touched no topic. The server's TLS context is given to the app here
    rather than when the app is made: the ``ubscore`` commands make the same
    app, and have no business reading the gateway's private key.
    """

    def __init__(self, app: faust.App, *args: Any, **kwargs: Any) -> None:
        with access.refusing_to_start():
            self.exposure = access.start(app.conf.web_bind)
            app.conf.web_ssl_context = tls.server_context(settings)
            tls.client_context(settings)  # a CA file that holds no CA stops the start, not the first routed read
        super().__init__(app, *args, **kwargs)
        self.spinner = None

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """Called once logging is configured: lines in ``UBS_LOG_FORMAT`` (app.observability.log_format),
        the first on the keys."""
        super().on_setup_root_logger(logger, level)
        install_log_format(logger, settings.log_format)
        access.announce(self.exposure)

    def install_signal_handlers(self) -> None:
        """mode's handlers, and SIGHUP: the API keys read again (app.web.access.reload)."""
        super().install_signal_handlers()
        self.loop.add_signal_handler(signal.SIGHUP, access.reload)


class GatewayWeb(AiohttpWeb):
    """Faust's aiohttp server serving UBSCore's views alone, over HTTPS when the worker has a certificate,
    with deadlines for slow clients.

    The settings given to the app turn Faust's own pages off one by one
    (``/router``, ``/table``, ``/graph``, the statistics, ``/performance``);
    the index that takes their place at ``/`` has no setting, so it is left out
    here. None of them would ask for an API key.

    Faust's server takes the app's ``web_ssl_context`` (set by UBSCoreWorker).
    The gateway's calls to other workers go through its own session
    (app.web.peers), closed here once the server has stopped serving.
    Faust's runner would let a client take as long as it likes over a request's
    headers and body; this one disconnects it (app.web.limits).
    """

    production_blueprints = ()

    def __init__(self, app: faust.App, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._runner = limits.runner(self.web_app, limits.Limits.of(settings))

    async def on_shutdown(self) -> None:
        """After the server (a child service) has stopped: no request is left to use the session."""
        await super().on_shutdown()
        await peers.close()


class UBSCoreApp(faust.App):
    """A Faust app that creates its topics before its consumer subscribes to them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owned_topics: List[TopicT] = []
        self.outlives: List[Tuple[str, str]] = []
        self.startup_tasks: List[Callable[[], Awaitable[None]]] = []

    def _new_consumer(self) -> ConsumerT:
        """Faust's consumer, delivering inline what cannot block (app.frame.consume_loop)."""
        return UBSCoreConsumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            loop=self.transport.loop,
        )

    def _new_web(self) -> Web:
        """The gateway's server: Faust's, without Faust's pages (GatewayWeb)."""
        return GatewayWeb(self)

    def _new_producer(self) -> ProducerT:
        """Faust's producer with a buffer that drains fully before offsets commit (app.frame.producer_buffer)."""
        return install_draining_buffer(super()._new_producer())

    def own_topic(self, topic: TopicT, outlives: Optional[TopicT] = None) -> TopicT:
        """Register a topic to be created at start-up if missing, with its ``config`` checked at every start.

        ``outlives``: a topic whose records this one must keep at least as long (the start is refused otherwise).
        """
        self.owned_topics.append(topic)
        if outlives is not None:
            self.outlives.extend((name, other) for name in topic.topics for other in outlives.topics)
        return topic

    def startup_task(self, fun: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        """Register a task that runs from start-up on (Faust's own tasks wait for the first table recovery)."""
        self.startup_tasks.append(fun)
        return fun

    async def on_first_start(self) -> None:
        """Create the topics first: any component may start before any topic exists.

        The tables' changelog topics are created here too: Faust would create
        them itself, but on a cold broker its consumer can still miss them in
        the first metadata and the agent then crashes on a partition mismatch;
        and Faust gives a changelog its settings only when it creates it, so
        here they are also checked and corrected on changelogs made by anyone
        (compacted, never cut by size, plus the table's own settings).
        The freeze watch and the startup tasks start here too: only a running worker owns partitions,
        and a first recovery can be what needs watching.
        Then local stores that do not match the cluster are set aside, still before any store opens
        (app.frame.local_state).
        """
        await super().on_first_start()
        FreezeWatch(settings.freeze_limit_s).start()
        for task in self.startup_tasks:
            self.add_future(task())
        wanted: Dict[str, int] = {}
        configs: Dict[str, Dict[str, str]] = {}
        for topic in self.owned_topics:
            for name in topic.topics:
                wanted[name] = topic.partitions or settings.partitions
                if topic.config:
                    configs[name] = {key: str(value) for key, value in topic.config.items()}
        for table in self.tables.values():
            changelog = table.changelog_topic
            for name in changelog.topics:
                wanted[name] = changelog.partitions or settings.partitions
                extra = {key: str(value) for key, value in (changelog.config or {}).items()}
                configs[name] = {**CHANGELOG_CONFIGS, **extra}
        await ensure_topics(
            settings.kafka_bootstrap, wanted, settings.topic_replication_factor, configs, outlives=self.outlives
        )
        await set_aside_mismatched(self.tables.values(), settings.partitions, settings.kafka_bootstrap)


app = UBSCoreApp(
    settings.app_id,
    broker=settings.kafka,
    # TLS and SASL login as every other Kafka client of UBSCore has them (app.kafka_clients).
    broker_credentials=broker_credentials(settings),
    store=settings.store,
    datadir=settings.data_dir,
    autodiscover=False,
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.topic_replication_factor,
    processing_guarantee=settings.processing_guarantee,
    table_standby_replicas=settings.standby_replicas,
    # How long a silent (killed, frozen) worker keeps its partitions before the group moves them.
    broker_session_timeout=settings.session_timeout_s,
    broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
    # A member that does not rejoin a rebalance within this is dropped: never sooner than its session
    # timeout, which the ownership bound and the checkpoint's fence count on (app.frame.ownership).
    broker_rebalance_timeout=max(60.0, settings.session_timeout_s),
    # A static member restarted at the same URL takes its partitions back without a rebalance.
    consumer_group_instance_id=settings.group_instance_id("ledger"),
    # Faust binds 0.0.0.0 unless told otherwise; the gateway listens where UBS_WEB_HOST says.
    web_bind=settings.web_host,
    web_host=settings.advertised_host,
    web_port=settings.web_port,
    canonical_url=settings.canonical_url,
    # aiohttp stops reading a body past this, chunked or not, and raises (a 413: app.web.answers.counted).
    web_application_options={"client_max_size": settings.max_body_bytes},
    # Faust's own pages: table contents, the cluster's layout, statistics, none behind an API key.
    web_router_enabled=False,
    web_tables_enabled=False,
    web_graph_enabled=False,
    web_stats_enabled=False,
    web_metrics_enabled=False,
    key_serializer="raw",
    value_serializer="raw",
    # Every write is acknowledged by all in-sync replicas before it counts as sent.
    producer_acks=-1,
    # Faust hands the agent what aiokafka prefetched, partition after partition, so a credit leg
    # can wait behind every operation already buffered; bounded per-partition fetches keep that to
    # seconds (docs/fault-injection.md, finding 12), and large enough ones keep the ledger fed
    # (docs/benchmarks.md, "Fetch size").
    consumer_max_fetch_size=settings.max_fetch_bytes,
    broker_max_poll_records=settings.max_poll_records,
    # A new consumer group starts from the oldest operation, never skips one.
    consumer_auto_offset_reset="earliest",
    # Declared topics are created at start-up, so any component may start first.
    topic_allow_declare=True,
    Worker=UBSCoreWorker,
    # Partitions far behind their changelog are rebuilt in bulk before Faust's recovery reads the tail.
    TableManager=UBSCoreTableManager,
)

if failpoints.armed():
    app.sensors.add(failpoints.CommitFailpoint())

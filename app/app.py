"""The one Faust app of UBSCore, configured from app.settings.

Agents, tables, topics and views register themselves on this object when their
modules are imported (app/__init__.py imports them all), so ``faust -A app worker``
and the ``ubscore`` console script see the same complete app.
"""

from __future__ import annotations

import faust

from app.settings import settings

app = faust.App(
    settings.app_id,
    broker=settings.kafka,
    store=settings.store,
    datadir=settings.data_dir,
    autodiscover=False,
    topic_partitions=settings.partitions,
    topic_replication_factor=settings.topic_replication_factor,
    processing_guarantee=settings.processing_guarantee,
    table_standby_replicas=settings.standby_replicas,
    # Faust binds 0.0.0.0 unless told otherwise; the gateway listens where UBS_WEB_HOST says.
    web_bind=settings.web_host,
    web_host=settings.advertised_host,
    web_port=settings.web_port,
    canonical_url=settings.canonical_url,
    key_serializer="raw",
    value_serializer="raw",
    # Every write is acknowledged by all in-sync replicas before it counts as sent.
    producer_acks=-1,
    # A new consumer group starts from the oldest operation, never skips one.
    consumer_auto_offset_reset="earliest",
    # Declared topics are created at start-up, so any component may start first.
    topic_allow_declare=True,
)

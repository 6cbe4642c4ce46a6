"""Prometheus counters, one registry per app (no module-level state)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.priority import AcksFirst


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.deliveries = Counter(
            "pagedesk_deliveries", "Webhook deliveries accepted", ["source"], registry=r
        )
        self.rejected = Counter(
            "pagedesk_deliveries_rejected",
            "Webhook deliveries refused",
            ["source", "reason"],
            registry=r,
        )
        self.tasks_opened = Counter("pagedesk_tasks_opened", "Tasks opened", registry=r)
        self.relayed = Counter(
            "pagedesk_messages_relayed", "Customer messages relayed to chat", registry=r
        )
        self.answers = Counter(
            "pagedesk_answers", "Staff answers to Facebook", ["result"], registry=r
        )
        self.outbox_backlog = Gauge("pagedesk_outbox_backlog", "Outbox jobs waiting", registry=r)
        self.inbox_backlog = Gauge(
            "pagedesk_inbox_backlog", "Stored deliveries not yet processed", registry=r
        )
        self.outbox_retries = Counter(
            "pagedesk_outbox_retries", "Outbox calls retried", ["kind"], registry=r
        )
        self.outbox_failed = Counter(
            "pagedesk_outbox_failed", "Outbox jobs failed for good", ["kind"], registry=r
        )

        self.chat_failures = Counter(
            "pagedesk_chat_failures",
            "Chat-side jobs failed for good, by platform and kind of reason",
            ["platform", "reason"],
            registry=r,
        )
        self.threads_recreated = Counter(
            "pagedesk_threads_recreated",
            "Task threads made anew because a person deleted them",
            ["platform"],
            registry=r,
        )
        self.page_token_state = Gauge(
            "pagedesk_page_token_state",
            "1 for the state each connected Page's token is in (valid, expiring within a "
            "week, invalid, unknown), from the last debug_token check",
            ["page_id", "state"],
            registry=r,
        )

    def watch(self, acks: AcksFirst) -> None:
        """Processing's time on the event loop and its waits for acknowledgements."""
        self.registry.register(_AcksCollector(acks))

    def render(self) -> bytes:
        data: bytes = generate_latest(self.registry)
        return data


class _AcksCollector(Collector):
    def __init__(self, acks: AcksFirst) -> None:
        self._acks = acks

    def collect(self) -> Iterable[Metric]:
        yield CounterMetricFamily(
            "pagedesk_processing_seconds",
            "Seconds the event loop spent processing stored deliveries and outbox jobs",
            value=self._acks.processing,
        )
        yield CounterMetricFamily(
            "pagedesk_processing_deferred_seconds",
            "Seconds processing waited so that webhook deliveries were acknowledged first",
            value=self._acks.deferred,
        )
        yield GaugeMetricFamily(
            "pagedesk_deliveries_waiting",
            "Webhook deliveries received and not yet acknowledged",
            value=self._acks.waiting,
        )

"""Prometheus metrics, in a registry owned by one app (tests run several apps at once)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modelhub.engines.base import EngineStats

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _EngineCollector(Collector):
    """Queue depth and running sequences, read from the engines at scrape time."""

    def __init__(self, engines: Callable[[], dict[str, EngineStats]]):
        self._engines = engines

    def collect(self):
        queued = GaugeMetricFamily(
            "modelhub_engine_queue_depth", "Requests waiting for an engine slot", labels=["model"]
        )
        running = GaugeMetricFamily(
            "modelhub_engine_running_sequences", "Sequences in the running batch", labels=["model"]
        )
        extra: dict[str, GaugeMetricFamily] = {}
        for model, stats in self._engines().items():
            queued.add_metric([model], stats.queued)
            running.add_metric([model], stats.running)
            for name, value in stats.extra.items():
                family = extra.setdefault(
                    name,
                    GaugeMetricFamily(
                        f"modelhub_engine_{name}", f"Engine: {name}", labels=["model"]
                    ),
                )
                family.add_metric([model], value)
        yield queued
        yield running
        yield from extra.values()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "modelhub_requests",
            "Chat completion requests by model and HTTP status",
            ["model", "status"],
            registry=self.registry,
        )
        self.tokenize_requests = Counter(
            "modelhub_tokenize_requests",
            "/tokenize requests by model and HTTP status",
            ["model", "status"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "modelhub_prompt_tokens", "Prompt tokens processed", ["model"], registry=self.registry
        )
        self.completion_tokens = Counter(
            "modelhub_completion_tokens",
            "Completion tokens generated",
            ["model"],
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "modelhub_time_to_first_token_seconds",
            "From request received to first token generated",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.time_per_output_token = Histogram(
            "modelhub_time_per_output_token_seconds",
            "Mean time between output tokens, per request",
            ["model"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
            registry=self.registry,
        )
        self.prompt_mismatches = Counter(
            "modelhub_upstream_prompt_token_mismatch",
            "Requests whose prompt count by the model's format differed from the upstream's",
            ["model"],
            registry=self.registry,
        )
        self.batch_sequences = Histogram(
            "modelhub_engine_batch_sequences",
            "Sequences sampled together in one decode step",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )

    def prompt_mismatch_observer(self, model: str) -> Callable[[int, int], None]:
        counter = self.prompt_mismatches.labels(model)
        return lambda local, upstream: counter.inc()

    def watch_engines(self, engines: Callable[[], dict[str, EngineStats]]) -> None:
        self.registry.register(_EngineCollector(engines))

    def step_observer(self, model: str) -> Callable[[int, int], None]:
        histogram = self.batch_sequences.labels(model)

        def observe(sequences: int, tokens: int) -> None:
            if sequences:
                histogram.observe(sequences)

        return observe

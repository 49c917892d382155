"""Prometheus metrics, in a registry owned by one app (tests run several apps at once).

Label values are bounded: ``model`` is a catalog id or ``unknown`` (a client can send any
string), ``contract`` a contract name (the operator creates them) or ``anonymous``,
``endpoint`` a route template or ``unmatched``.

What calls what:
- the access-log middleware: ``observe_response`` for every response, whatever its status;
- serving: ``observe_usage`` when a request ends, ``queue_observer`` / ``step_observer``
  handed to the engines;
- ``watch_engines``: queue, running, KV-cache usage and preemptions read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from modelhub.engines.base import EngineStats

__all__ = ["UNKNOWN_MODEL", "Metrics"]

UNKNOWN_MODEL = "unknown"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


def _per_model(family: type, name: str, documentation: str):
    return family(name, documentation, labels=["model"])


class _EngineCollector(Collector):
    """Engine figures read from the engines at scrape time."""

    def __init__(self, engines: Callable[[], dict[str, EngineStats]]):
        self._engines = engines

    def collect(self):
        queued = _per_model(
            GaugeMetricFamily, "modelhub_engine_queue_depth", "Requests waiting for an engine slot"
        )
        running = _per_model(
            GaugeMetricFamily, "modelhub_engine_running_sequences", "Sequences in the running batch"
        )
        kv = _per_model(
            GaugeMetricFamily,
            "modelhub_engine_kv_cache_usage_ratio",
            "Share of the KV cache in use (embedded engine), 0 to 1",
        )
        preemptions = _per_model(
            CounterMetricFamily,
            "modelhub_engine_preemptions",
            "Sequences preempted (KV cache full) and recomputed later",
        )
        healthy = _per_model(
            GaugeMetricFamily,
            "modelhub_engine_healthy_replicas",
            "Upstream replicas passing health checks",
        )
        # vLLM's prefix_cache_queries and prefix_cache_hits: their ratio is the hit rate.
        queries = _per_model(
            CounterMetricFamily,
            "modelhub_engine_prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache (embedded engine)",
        )
        hits = _per_model(
            CounterMetricFamily,
            "modelhub_engine_prefix_cache_hits",
            "Prompt tokens whose KV the prefix cache gave instead of computing it",
        )
        cached = _per_model(
            GaugeMetricFamily,
            "modelhub_engine_prefix_cache_bytes",
            "Host memory the prefix cache's entries take",
        )
        for model, stats in self._engines().items():
            queued.add_metric([model], stats.queued)
            running.add_metric([model], stats.running)
            preemptions.add_metric([model], stats.preemptions)
            if stats.kv_cache_usage is not None:
                kv.add_metric([model], stats.kv_cache_usage)
            if stats.healthy_replicas is not None:
                healthy.add_metric([model], stats.healthy_replicas)
            if "prefix_cache_queries_tokens" in stats.extra:
                queries.add_metric([model], stats.extra["prefix_cache_queries_tokens"])
                hits.add_metric([model], stats.extra["prefix_cache_hits_tokens"])
                cached.add_metric([model], stats.extra["prefix_cache_bytes"])
        yield from (queued, running, kv, preemptions, healthy, queries, hits, cached)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._models: frozenset[str] = frozenset()
        self.responses = Counter(
            "modelhub_http_responses",
            "Every HTTP response, by route and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.requests = Counter(
            "modelhub_requests",
            "Model requests (chat, tokenize) by model and HTTP status, failures included",
            ["model", "status"],
            registry=self.registry,
        )
        self.contract_requests = Counter(
            "modelhub_contract_requests",
            "Model requests by contract and HTTP status",
            ["contract", "status"],
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "modelhub_request_latency_seconds",
            "End to end: request received to last byte sent",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_time = Histogram(
            "modelhub_queue_time_seconds",
            "Time a sequence waited for an engine slot",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "modelhub_prompt_tokens",
            "Prompt tokens processed",
            ["model", "contract"],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "modelhub_completion_tokens",
            "Completion tokens generated",
            ["model", "contract"],
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
            buckets=_TOKEN_BUCKETS,
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

    def set_models(self, model_ids: Collection[str]) -> None:
        """The catalog's ids: any other model a client names is counted as ``unknown``."""
        self._models = frozenset(model_ids)

    def _model(self, model: str | None) -> str:
        return model if model in self._models else UNKNOWN_MODEL

    # Called by the access-log middleware, once per response ------------------------------
    def observe_response(
        self,
        *,
        endpoint: str,
        status: int,
        model: str | None,
        contract: str | None,
        latency_s: float,
    ) -> None:
        """``model`` is None for requests that name none and are not model requests."""
        self.responses.labels(endpoint, str(status)).inc()
        if model is None:
            return
        label = self._model(model)
        self.requests.labels(label, str(status)).inc()
        self.contract_requests.labels(contract or "anonymous", str(status)).inc()
        if status < 400:
            self.request_latency.labels(label).observe(latency_s)

    # Called by serving ---------------------------------------------------------------------
    def observe_usage(
        self,
        *,
        model: str,
        contract: str,
        prompt_tokens: int,
        completion_tokens: int,
        ttft_s: float | None,
        tpot_s: float | None,
    ) -> None:
        """A request's tokens and timings, once, when it ends (whatever its status)."""
        label = self._model(model)
        self.prompt_tokens.labels(label, contract).inc(prompt_tokens)
        self.completion_tokens.labels(label, contract).inc(completion_tokens)
        if ttft_s is not None:
            self.time_to_first_token.labels(label).observe(max(ttft_s, 0.0))
        if tpot_s is not None:
            self.time_per_output_token.labels(label).observe(max(tpot_s, 0.0))

    def queue_observer(self, model: str) -> Callable[[float], None]:
        """For an engine: call with the seconds a sequence waited before it first ran."""
        return self.queue_time.labels(self._model(model)).observe

    def prompt_mismatch_observer(self, model: str) -> Callable[[int, int], None]:
        counter = self.prompt_mismatches.labels(model)
        return lambda local, upstream: counter.inc()

    def step_observer(self, model: str) -> Callable[[int, int], None]:
        histogram = self.batch_sequences.labels(model)

        def observe(sequences: int, tokens: int) -> None:
            if sequences:
                histogram.observe(sequences)

        return observe

    def watch_engines(self, engines: Callable[[], dict[str, EngineStats]]) -> None:
        self.registry.register(_EngineCollector(engines))

    # Read back, for the admin API's live status -------------------------------------------
    def request_count(self, model: str) -> int:
        """Model requests answered since start, whatever their status."""
        return int(
            sum(
                s.value
                for family in self.requests.collect()
                for s in family.samples
                if s.name.endswith("_total") and s.labels.get("model") == model
            )
        )

    def median(self, histogram: Histogram, model: str) -> float | None:
        """The histogram's p50 for ``model`` since start, interpolated within its bucket
        (as Prometheus' histogram_quantile does); None before any observation."""
        buckets = [
            (float(s.labels["le"]), s.value)
            for family in histogram.collect()
            for s in family.samples
            if s.name.endswith("_bucket") and s.labels.get("model") == model
        ]
        total = buckets[-1][1] if buckets else 0
        if not total:
            return None
        rank, lower, below = total / 2, 0.0, 0.0
        for upper, count in buckets:
            if count >= rank:
                if upper == float("inf"):
                    return lower
                return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
            lower, below = upper, count
        return None

"""``GET /metrics``: the engine's state and counters in Prometheus' text format.

Rendered by ``prometheus_client`` from a per-app ``CollectorRegistry`` (never the global
default one, so several apps in one process do not clash). ``EngineCollector`` reads the
engine's counters, histograms and ``stats()`` at scrape time and names them as vLLM does
(``vllm:...``, labelled ``model_name``), so dashboards built for vLLM work unchanged; the
registry also holds the process, platform and GC collectors (``process_*``, ``python_*``).
Two figures vLLM has no metric for keep toolkit names: ``toolkit:spec_decode_acceptance_rate``
and ``toolkit:spec_decode_mean_accepted_length``.
"""

from __future__ import annotations

from collections.abc import Iterator

from blacksheep import Content, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from toolkit.api.context import ServingContext

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()
PREFIX = "vllm"
TOOLKIT_PREFIX = "toolkit"


def _histogram(name: str, help_text: str, histogram, labels: list[str],
               label_values: list[str]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, help_text, labels=labels)
    buckets = [(floatToGoString(bound), count) for bound, count in histogram.cumulative()]
    buckets.append(("+Inf", histogram.count))
    family.add_metric(label_values, buckets, histogram.total)
    return family


class EngineCollector(Collector):
    """Reads the engine's ``stats()`` and ``metrics`` (EngineMetrics) on every scrape."""

    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        labels, values = ["model_name"], [self.ctx.model_name]
        stats, metrics = self.ctx.engine.stats(), self.ctx.engine.metrics

        def gauge(name: str, help_text: str, value: float, prefix: str = PREFIX):
            family = GaugeMetricFamily(f"{prefix}:{name}", help_text, labels=labels)
            family.add_metric(values, value)
            return family

        def counter(name: str, help_text: str, value: float):
            # prometheus_client appends the ``_total`` suffix to the sample.
            family = CounterMetricFamily(f"{PREFIX}:{name}", help_text, labels=labels)
            family.add_metric(values, value)
            return family

        yield gauge("num_requests_running", "Requests in the running batch.",
                    stats["num_running"])
        yield gauge("num_requests_waiting", "Requests waiting to be scheduled.",
                    stats["num_waiting"])
        yield gauge("kv_cache_usage_perc", "Fraction of KV pages in use (0-1).",
                    stats["kv_cache_usage"])
        yield counter("prompt_tokens", "Prefilled prompt tokens.", metrics.prompt_tokens)
        yield counter("generation_tokens", "Generated tokens.", metrics.generation_tokens)
        success = CounterMetricFamily(f"{PREFIX}:request_success",
                                      "Finished requests by reason.",
                                      labels=[*labels, "finished_reason"])
        for reason, count in sorted(metrics.finished_requests.items()):
            success.add_metric([*values, reason], count)
        yield success
        yield _histogram(f"{PREFIX}:time_to_first_token_seconds", "Time to first token.",
                         metrics.ttft, labels, values)
        yield _histogram(f"{PREFIX}:inter_token_latency_seconds",
                         "Time between output tokens.", metrics.itl, labels, values)
        # Speculative decoding: vLLM's counters, then two derived gauges vLLM lacks.
        yield counter("spec_decode_num_drafts",
                      "Verifications of at least one draft token (request, step).",
                      metrics.num_verifications)
        yield counter("spec_decode_num_draft_tokens", "Draft tokens verified.",
                      metrics.num_draft_tokens)
        yield counter("spec_decode_num_accepted_tokens", "Draft tokens accepted.",
                      metrics.num_accepted_tokens)
        yield gauge("spec_decode_acceptance_rate", "Accepted / verified draft tokens (0-1).",
                    metrics.acceptance_rate, TOOLKIT_PREFIX)
        yield gauge("spec_decode_mean_accepted_length",
                    "Tokens emitted per verification (1 + accepted drafts).",
                    metrics.mean_accepted_length, TOOLKIT_PREFIX)
        lora = getattr(self.ctx.engine, "lora", None)
        if lora is not None:
            yield _lora_requests(lora, labels, values)
        replica_stats = getattr(self.ctx.engine, "replica_stats", None)
        if replica_stats is not None:
            yield from _replica_metrics(replica_stats(), labels, values)


def _replica_metrics(replicas: list[dict], labels: list[str],
                     values: list[str]) -> Iterator[Metric]:
    """Data parallelism, per ``replica``: ``toolkit:replica_requests_total`` (routed to
    it), ``toolkit:replica_requests_in_flight``, ``toolkit:replica_up`` (1 while it is
    routed to) and ``toolkit:replica_restarts_total`` (times it was lost)."""
    labels = [*labels, "replica"]
    routed = CounterMetricFamily(f"{TOOLKIT_PREFIX}:replica_requests",
                                 "Requests routed to each data-parallel replica.", labels=labels)
    in_flight = GaugeMetricFamily(f"{TOOLKIT_PREFIX}:replica_requests_in_flight",
                                  "Requests in flight on each replica.", labels=labels)
    up = GaugeMetricFamily(f"{TOOLKIT_PREFIX}:replica_up",
                           "1 while the replica is routed to, 0 while it restarts.",
                           labels=labels)
    restarts = CounterMetricFamily(f"{TOOLKIT_PREFIX}:replica_restarts",
                                   "Times each replica was lost (Ray restarts it).",
                                   labels=labels)
    for replica in replicas:
        key = [*values, replica["replica"]]
        routed.add_metric(key, replica["num_routed"])
        in_flight.add_metric(key, replica["num_in_flight"])
        up.add_metric(key, 1 if replica["up"] else 0)
        restarts.add_metric(key, replica["num_restarts"])
    yield from (routed, in_flight, up, restarts)


def _lora_requests(lora, labels: list[str], values: list[str]) -> CounterMetricFamily:
    """``toolkit:lora_requests_total{lora_name}``: requests run per LoRA adapter (every
    served adapter, 0 before its first request)."""
    family = CounterMetricFamily(f"{TOOLKIT_PREFIX}:lora_requests",
                                 "Requests run per LoRA adapter.",
                                 labels=[*labels, "lora_name"])
    counts = {adapter.name: 0 for adapter in lora.served()} | lora.request_counts()
    for name, count in sorted(counts.items()):
        family.add_metric([*values, name], count)
    return family


def metrics_registry(ctx: ServingContext, process: bool = True) -> CollectorRegistry:
    """A fresh registry with the engine collector and (``process``) the process, platform
    and GC collectors."""
    registry = CollectorRegistry()
    registry.register(EngineCollector(ctx))
    if process:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


def render_metrics(ctx: ServingContext, process: bool = False) -> str:
    """The scrape text of a one-off registry (the engine's metrics; tests and tools)."""
    return generate_latest(metrics_registry(ctx, process)).decode()


class MetricsServing:
    """The Prometheus scrape endpoint; one registry per app."""

    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx
        self.registry = metrics_registry(ctx)

    async def metrics(self, request: Request) -> Response:
        return Response(200, None, Content(CONTENT_TYPE, generate_latest(self.registry)))

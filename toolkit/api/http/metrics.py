"""``GET /metrics``: the engine's state and counters in Prometheus' text format (0.0.4)."""

from __future__ import annotations

from blacksheep import Content, Request, Response

from toolkit.api.context import ServingContext

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
PREFIX = "toolkit"


def _sample(name: str, value: float, labels: dict[str, str]) -> str:
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{label_text}}} {value}"


def _metric(name: str, kind: str, help_text: str, samples: list[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


def _histogram(name: str, help_text: str, histogram, labels: dict[str, str]) -> list[str]:
    samples = [_sample(f"{name}_bucket", count, {**labels, "le": str(bound)})
               for bound, count in histogram.cumulative()]
    samples.append(_sample(f"{name}_bucket", histogram.count, {**labels, "le": "+Inf"}))
    samples.append(_sample(f"{name}_sum", histogram.total, labels))
    samples.append(_sample(f"{name}_count", histogram.count, labels))
    return _metric(name, "histogram", help_text, samples)


def render_metrics(ctx: ServingContext) -> str:
    """Every metric, labelled with the reported model name."""
    labels = {"model_name": ctx.model_name}
    stats, metrics = ctx.engine.stats(), ctx.engine.metrics
    lines = [
        *_metric(f"{PREFIX}:num_requests_running", "gauge", "Requests in the running batch.",
                 [_sample(f"{PREFIX}:num_requests_running", stats["num_running"], labels)]),
        *_metric(f"{PREFIX}:num_requests_waiting", "gauge", "Requests waiting to be scheduled.",
                 [_sample(f"{PREFIX}:num_requests_waiting", stats["num_waiting"], labels)]),
        *_metric(f"{PREFIX}:kv_cache_usage_perc", "gauge", "Fraction of KV pages in use (0-1).",
                 [_sample(f"{PREFIX}:kv_cache_usage_perc", stats["kv_cache_usage"], labels)]),
        *_metric(f"{PREFIX}:prompt_tokens_total", "counter", "Prefilled prompt tokens.",
                 [_sample(f"{PREFIX}:prompt_tokens_total", metrics.prompt_tokens, labels)]),
        *_metric(f"{PREFIX}:generation_tokens_total", "counter", "Generated tokens.",
                 [_sample(f"{PREFIX}:generation_tokens_total", metrics.generation_tokens,
                          labels)]),
        *_metric(f"{PREFIX}:request_success_total", "counter", "Finished requests by reason.",
                 [_sample(f"{PREFIX}:request_success_total", count,
                          {**labels, "finished_reason": reason})
                  for reason, count in sorted(metrics.finished_requests.items())]),
        *_histogram(f"{PREFIX}:time_to_first_token_seconds", "Time to first token.",
                    metrics.ttft, labels),
        *_histogram(f"{PREFIX}:inter_token_latency_seconds", "Time between output tokens.",
                    metrics.itl, labels),
        *_speculative_metrics(metrics, labels),
    ]
    return "\n".join(lines) + "\n"


def _speculative_metrics(metrics, labels: dict[str, str]) -> list[str]:
    """Draft tokens verified and accepted; acceptance rate and mean accepted length."""
    rows = (
        ("spec_decode_num_draft_tokens_total", "counter", "Draft tokens verified.",
         metrics.num_draft_tokens),
        ("spec_decode_num_accepted_tokens_total", "counter", "Draft tokens accepted.",
         metrics.num_accepted_tokens),
        ("spec_decode_acceptance_rate", "gauge", "Accepted / verified draft tokens (0-1).",
         metrics.acceptance_rate),
        ("spec_decode_mean_accepted_length", "gauge",
         "Tokens emitted per verification (1 + accepted drafts).",
         metrics.mean_accepted_length),
    )
    lines: list[str] = []
    for name, kind, help_text, value in rows:
        lines += _metric(f"{PREFIX}:{name}", kind, help_text,
                         [_sample(f"{PREFIX}:{name}", value, labels)])
    return lines


class MetricsServing:
    """The Prometheus scrape endpoint."""

    def __init__(self, ctx: ServingContext) -> None:
        self.ctx = ctx

    async def metrics(self, request: Request) -> Response:
        return Response(200, None, Content(CONTENT_TYPE, render_metrics(self.ctx).encode()))

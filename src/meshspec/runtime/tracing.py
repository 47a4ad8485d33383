"""Traces of meshspec's own services (`meshspec serve <name>`), with the OpenTelemetry SDK.

Configured by OpenTelemetry's own environment, which the deploy renders from the spec's `tracing`
(render/programs.py `tracing_env`): OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the trace store's OTLP over
HTTP), OTEL_TRACES_SAMPLER and its argument, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES. Without
an endpoint nothing is set up and no span is made.

The instrumentations carry the W3C trace context: aiohttp's server takes the `traceparent` the
proxy sets or forwards, aiohttp's and httpx's clients send it on (through the proxy again),
aio-pika writes it into a job message's headers and the worker's consumer reads it back, so one
request (or one job) is one trace. Each span names the instance that made it
(`service.instance.id`): Phoenix keeps span attributes, not the resource.
"""

from __future__ import annotations

import atexit
import os

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"


class NamesInstance(SpanProcessor):
    """Copies the process's service and instance onto each span it starts."""

    def __init__(self, resource: Resource) -> None:
        self.attributes = {k: resource.attributes[k] for k in (SERVICE_NAME, SERVICE_INSTANCE_ID)
                           if k in resource.attributes}

    def on_start(self, span, parent_context=None) -> None:
        span.set_attributes(self.attributes)


def start() -> bool:
    """Set tracing up from the environment; whether it was (an endpoint is named)."""
    if not os.environ.get(ENDPOINT):
        return False
    from opentelemetry.instrumentation.aio_pika import AioPikaInstrumentor
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    provider = TracerProvider()  # the sampler and the resource come from the environment
    provider.add_span_processor(NamesInstance(provider.resource))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)  # the last batch goes out on a clean stop
    for instrumentor in (AioHttpServerInstrumentor, AioHttpClientInstrumentor, HTTPXClientInstrumentor,
                         AsyncPGInstrumentor, AioPikaInstrumentor):
        instrumentor().instrument()
    return True

"""A real OTLP client for obsctl's embedded-backend tests: the OpenTelemetry Python SDK with
its OTLP exporters (gRPC or HTTP/protobuf). Each run is one short-lived process with its own
service.instance.id. It prints one JSON line with the ids it sent, so the test can read them
back through the query API."""

import argparse
import json
import sys
import uuid

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


def exporters(protocol, endpoint, temporality):
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        kw = {"endpoint": endpoint, "insecure": True}
        return (
            OTLPSpanExporter(**kw),
            OTLPMetricExporter(preferred_temporality=temporality, **kw),
            OTLPLogExporter(**kw),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return (
        OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"),
        OTLPMetricExporter(
            endpoint=f"{endpoint}/v1/metrics", preferred_temporality=temporality
        ),
        OTLPLogExporter(endpoint=f"{endpoint}/v1/logs"),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--endpoint", required=True, help="http://host:port")
    parser.add_argument("--protocol", choices=["grpc", "http"], required=True)
    parser.add_argument("--temporality", choices=["delta", "cumulative"], default="cumulative")
    parser.add_argument("--service", default="py-agent")
    parser.add_argument("--task-id", required=True)
    parser.add_argument("--increment", type=int, default=1)
    parser.add_argument("--duration-ms", type=float, default=42.0)
    args = parser.parse_args()

    kind = (
        AggregationTemporality.DELTA
        if args.temporality == "delta"
        else AggregationTemporality.CUMULATIVE
    )
    temporality = {Counter: kind, Histogram: kind}
    span_exporter, metric_exporter, log_exporter = exporters(
        args.protocol, args.endpoint, temporality
    )
    resource = Resource.create(
        {"service.name": args.service, "service.instance.id": str(uuid.uuid4())}
    )

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))

    tracer = tracer_provider.get_tracer("obsctl-test-python", "1.0")
    meter = meter_provider.get_meter("obsctl-test-python")
    logger = logger_provider.get_logger("obsctl-test-python")
    counter = meter.create_counter("agent_step_success", description="steps that succeeded")
    histogram = meter.create_histogram("agent_step_duration_ms", unit="ms")
    labels = {"agent": "py", "stepName": "build", "repo": "org/repo"}

    with tracer.start_as_current_span(
        "py-root",
        kind=trace.SpanKind.SERVER,
        attributes={"taskId": args.task_id, "prNumber": 7, "ratio": 0.5, "dry": False},
    ) as root:
        with tracer.start_as_current_span("py-child", attributes={"taskId": args.task_id}) as child:
            child.add_event("tool-call", {"tool": "grep"})
            child.set_status(trace.Status(trace.StatusCode.ERROR, "tool failed"))
            counter.add(args.increment, labels)
            histogram.record(args.duration_ms, labels)
            logger.emit(
                body=f"step build finished for {args.task_id}",
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                attributes={"taskId": args.task_id, "prNumber": 7},
            )
            child_ctx = child.get_span_context()
        root_ctx = root.get_span_context()

    meter_provider.force_flush()
    ok = all(
        [
            tracer_provider.force_flush(),
            logger_provider.force_flush() is not False,
        ]
    )
    meter_provider.shutdown()
    tracer_provider.shutdown()
    logger_provider.shutdown()
    print(
        json.dumps(
            {
                "trace_id": format(root_ctx.trace_id, "032x"),
                "root_span_id": format(root_ctx.span_id, "016x"),
                "child_span_id": format(child_ctx.span_id, "016x"),
            }
        )
    )
    sys.stdout.flush()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

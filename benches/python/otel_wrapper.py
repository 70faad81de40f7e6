"""The Python peer of `obsctl shim`: the same step wrapper written with the OpenTelemetry SDK.

Runs a command under a span named <agent>/<step>, passes its stdout/stderr through line by line
as log records, records the duration histogram and success/fail counters (delta temporality),
then flushes everything to the OTLP/HTTP endpoint from the standard environment variables.
Usage: otel_wrapper.py COMMAND [ARGS...]; exit code is the command's.
"""

import os
import subprocess
import sys
import threading
import time

from opentelemetry import trace, metrics
from opentelemetry._logs import SeverityNumber, get_logger_provider, set_logger_provider
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode


def main() -> int:
    agent = os.environ.get("AGENT", "unknown")
    step = os.environ.get("STEP", os.path.basename(sys.argv[1]))
    labels = {"agent": agent, "stepName": step, "repo": os.environ.get("REPO", ""),
              "prNumber": os.environ.get("PR_NUMBER", "")}
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "agent-steps")})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    delta = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA}
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(preferred_temporality=delta))
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    metrics.set_meter_provider(meter_provider)
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    set_logger_provider(logger_provider)

    meter = metrics.get_meter("peer")
    duration = meter.create_histogram("agent_step_duration_ms", unit="ms")
    success = meter.create_counter("agent_step_success")
    fail = meter.create_counter("agent_step_fail")
    logger = get_logger_provider().get_logger("peer")
    tracer = trace.get_tracer("peer")

    start = time.monotonic()
    with tracer.start_as_current_span(f"{agent}/{step}") as span:
        for k, v in labels.items():
            span.set_attribute(k, v)
        ctx = span.get_span_context()
        span_context = trace.set_span_in_context(span)
        env = dict(os.environ, TRACE_ID=format(ctx.trace_id, "032x"), SPAN_ID=format(ctx.span_id, "016x"))
        child = subprocess.Popen(sys.argv[1:], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

        def pump(pipe, out, severity):
            for line in pipe:
                out.buffer.write(line)
                out.buffer.flush()
                logger.emit(body=line.decode("utf-8", "replace").rstrip("\n"),
                            severity_number=severity, context=span_context, attributes=labels)

        threads = [threading.Thread(target=pump, args=(child.stdout, sys.stdout, SeverityNumber.INFO)),
                   threading.Thread(target=pump, args=(child.stderr, sys.stderr, SeverityNumber.WARN))]
        for t in threads:
            t.start()
        code = child.wait()
        for t in threads:
            t.join()
        span.set_attribute("process.exit.code", code)
        if code != 0:
            span.set_status(Status(StatusCode.ERROR, f"exited with code {code}"))
    elapsed_ms = (time.monotonic() - start) * 1000
    outcome = "success" if code == 0 else "failure"
    duration.record(elapsed_ms, {**labels, "outcome": outcome})
    (success if code == 0 else fail).add(1, labels)
    tracer_provider.shutdown()
    meter_provider.shutdown()
    logger_provider.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())

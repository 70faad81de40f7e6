//! A step recorded from outside. A shim that is SIGKILLed (a pod deleted without grace, an OOM
//! kill, a controller that died and took its steps along) exports nothing; the runner then
//! records the attempt on its behalf from what it knows: the ids the shim printed at start, the
//! step's environment, its start and end, and the partial output in the step's log file. The
//! messages are the shim's own (same resource, attributes, metrics and log records), marked with
//! `obsctl.recorded_by_runner`, so the attempt has its span, its failure count and its logs.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;

use super::child::{ChildRun, Exit, Line, LogBuffer, MAX_BODY_BYTES, Stream};
use super::context::StepContext;
use super::redact::Redactor;
use super::sampler::Sampler;
use super::telemetry::{self, StepRecord};
use crate::conventions::env;
use crate::otlp::export::{ExportConfig, ExportRequest};
use crate::otlp::{SpanId, TraceContext, TraceId};

/// What the runner knows about an attempt whose shim died before exporting.
pub struct KilledAttempt<'a> {
    /// The step's environment as the runner gave it (obsctl's variables, then the template's).
    pub env: &'a [(String, String)],
    pub agent: &'a str,
    pub step: &'a str,
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub start: SystemTime,
    pub end: SystemTime,
    /// The command the shim wrapped.
    pub command: &'a [String],
    /// The signal that ended the shim.
    pub signal: Signal,
    /// Why the runner recorded it, for `obsctl.recorded_by_runner` (for example `SIGKILL`).
    pub why: &'a str,
    /// The step's log file (its stdout and stderr as the runner wrote them), if any.
    pub log_file: Option<&'a Path>,
}

impl KilledAttempt<'_> {
    /// The step's variables first, then obsctl's own environment (which the shim inherited).
    fn lookup(&self, name: &str) -> Option<String> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
            .filter(|v| !v.is_empty())
    }

    /// The span, one failure count with its duration sample, and the partial logs, as the
    /// shim would have sent them.
    pub fn requests(&self) -> Vec<ExportRequest> {
        let lookup = |name: &str| self.lookup(name);
        let command_name = self.command.first().map_or("", String::as_str);
        let context =
            StepContext::resolve(Some(self.agent), Some(self.step), &[], command_name, lookup);
        let parent =
            lookup(env::TRACEPARENT).and_then(|tp| TraceContext::parse_traceparent(&tp).ok());
        let (sampler, _) = Sampler::from_config(
            lookup(env::OTEL_TRACES_SAMPLER).as_deref(),
            lookup(env::OTEL_TRACES_SAMPLER_ARG).as_deref(),
        );
        let span = TraceContext {
            trace_id: self.trace_id,
            span_id: self.span_id,
            sampled: sampler.should_sample(parent.as_ref(), self.trace_id),
        };
        let redactor = Redactor::from_vars(
            self.env
                .iter()
                .map(|(k, v)| (OsString::from(k), OsString::from(v))),
        );
        let run = ChildRun {
            exit: Exit::Signaled(self.signal),
            forwarded: None,
            logs: self.partial_logs(),
        };
        let resource = telemetry::resource(
            lookup,
            &TraceId::random().to_hex(),
            lookup(env::POD_NAME),
            Some(context.get(crate::conventions::attr::NAMESPACE)),
            &redactor,
        );
        let record = StepRecord {
            context: &context,
            span,
            parent,
            tracestate: lookup(env::TRACESTATE),
            start: self.start,
            end: self.end.max(self.start),
            command: self.command.join(" "),
            run: &run,
            redactor: &redactor,
            replaces: lookup(env::OBSCTL_REPLACES)
                .and_then(|tp| TraceContext::parse_traceparent(&tp).ok()),
            recorded_by_runner: Some(self.why),
        };
        let mut requests = Vec::with_capacity(3);
        if span.sampled {
            requests.push(record.trace_request(&resource));
        }
        requests.push(record.metrics_request(&resource));
        requests.extend(record.logs_request(&resource));
        requests
    }

    /// The lines the step printed before it died. The file has no times: each line gets the
    /// attempt's end plus its index in nanoseconds, which keeps their order and keeps them apart
    /// for a backend that merges identical (time, line) entries, as Loki does.
    fn partial_logs(&self) -> LogBuffer {
        let text = self
            .log_file
            .and_then(|p| std::fs::read(p).ok())
            .unwrap_or_default();
        let mut logs = LogBuffer::default();
        let shim_notes = b"obsctl shim: ";
        for (i, bytes) in text
            .split(|b| *b == b'\n')
            .filter(|l| !l.starts_with(shim_notes))
            .enumerate()
        {
            let kept = bytes.len().min(MAX_BODY_BYTES);
            logs.push(Line {
                stream: Stream::Stdout,
                time: self.end + Duration::from_nanos(i as u64),
                bytes: bytes[..kept].to_vec(),
                truncated: bytes.len() - kept,
            });
        }
        logs
    }

    /// Sends the messages within the shim's default budget, spooling what does not go through,
    /// exactly as the shim does (warnings on stderr, never an error for the run).
    pub async fn record(&self) {
        let config = ExportConfig::from_lookup(|name| self.lookup(name));
        super::export_with(&self.requests(), super::DEFAULT_EXPORT_BUDGET, config).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conventions::{attr, metric};
    use crate::otlp::attrs;
    use crate::otlp::proto::metrics::v1::{metric::Data, number_data_point};
    use crate::otlp::proto::trace::v1::status;

    #[test]
    fn a_killed_attempt_gets_the_shims_span_failure_count_and_partial_logs() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, "line 1\nline 2\nobsctl shim: warning: x\n").unwrap();
        let parent = TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            sampled: true,
        };
        let replaced = TraceContext {
            span_id: SpanId::random(),
            ..parent
        };
        let env = vec![
            (env::TRACEPARENT.to_string(), parent.to_traceparent()),
            (env::OBSCTL_REPLACES.to_string(), replaced.to_traceparent()),
            (
                env::OTEL_TRACES_SAMPLER.to_string(),
                "parentbased_always_on".into(),
            ),
            (env::TASK_ID.to_string(), "42".into()),
        ];
        let start = SystemTime::now();
        let killed = KilledAttempt {
            env: &env,
            agent: "coder",
            step: "edit",
            trace_id: parent.trace_id,
            span_id: SpanId::random(),
            start,
            end: start + Duration::from_millis(250),
            command: &["sh".into(), "-c".into(), "sleep 9".into()],
            signal: Signal::SIGKILL,
            why: "SIGKILL",
            log_file: Some(&log),
        };
        let requests = killed.requests();
        let [
            ExportRequest::Traces(t),
            ExportRequest::Metrics(m),
            ExportRequest::Logs(l),
        ] = requests.as_slice()
        else {
            panic!("span, metrics and logs expected: {requests:?}")
        };
        let span = &t.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.span_id, killed.span_id.as_bytes());
        assert_eq!(span.parent_span_id, parent.span_id.as_bytes());
        assert_eq!(span.name, "coder/edit");
        assert_eq!(
            span.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        assert_eq!(
            attrs::get(&span.attributes, attr::PROCESS_SIGNAL).unwrap(),
            "SIGKILL"
        );
        assert_eq!(
            attrs::get(&span.attributes, attr::RECORDED_BY_RUNNER).unwrap(),
            "SIGKILL"
        );
        assert_eq!(attrs::get(&span.attributes, attr::TASK_ID).unwrap(), "42");
        assert_eq!(span.links.len(), 1);
        assert_eq!(span.links[0].span_id, replaced.span_id.as_bytes());
        let metrics = &m.resource_metrics[0].scope_metrics[0].metrics;
        let fail = metrics
            .iter()
            .find(|x| x.name == metric::STEP_FAIL)
            .unwrap();
        let Some(Data::Sum(sum)) = &fail.data else {
            panic!()
        };
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsInt(1))
        );
        let records = &l.resource_logs[0].scope_logs[0].log_records;
        let bodies: Vec<String> = records
            .iter()
            .map(|r| format!("{:?}", r.body.as_ref().unwrap().value))
            .collect();
        assert_eq!(records.len(), 2, "{bodies:?}");
        assert!(bodies[0].contains("line 1") && bodies[1].contains("line 2"));
        assert!(
            records
                .iter()
                .all(|r| r.span_id == killed.span_id.as_bytes())
        );
        assert!(records[0].time_unix_nano < records[1].time_unix_nano);
    }
}

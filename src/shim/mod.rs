//! The tracer shim: wraps one agent step so that it yields a span, a duration sample,
//! success/fail counts and correlated logs, and never changes the step's exit code.
//! `docs/shim.md` explains the choices (temporality, instance identity, budget, spool).

pub mod check;
pub mod child;
pub mod context;
pub mod outside;
pub mod redact;
pub mod sampler;
pub mod telemetry;

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::conventions::{attr, env};
use crate::otlp::export::{ExportConfig, ExportRequest, Exporter, Signal};
use crate::otlp::spool::{self, Spool};
use crate::otlp::{SpanId, TraceContext, TraceId};
use child::Exit;
use context::StepContext;
use redact::Redactor;
use sampler::Sampler;
use telemetry::StepRecord;

/// Export budget when neither `--export-budget` nor `OBSCTL_EXPORT_BUDGET_MS` says.
pub const DEFAULT_EXPORT_BUDGET: Duration = Duration::from_secs(1);
/// Spooled requests one step replays at most, so a backlog never slows one step much.
pub const MAX_REPLAY_PER_STEP: usize = 64;

/// What to run and how to label it.
#[derive(Debug, Clone)]
pub struct Options {
    pub agent: Option<String>,
    pub step: Option<String>,
    pub attrs: Vec<(String, String)>,
    pub command: Vec<OsString>,
    /// Total time allowed for export after the step ended.
    pub export_budget: Duration,
}

/// The first line the shim prints on stdout, before anything the step prints.
#[derive(Debug, serde::Serialize)]
pub struct StartLine<'a> {
    pub trace_id: String,
    pub span_id: String,
    pub traceparent: String,
    pub agent: &'a str,
    pub step: &'a str,
    #[serde(rename = "taskId")]
    pub task_id: &'a str,
    pub sampled: bool,
}

pub fn warn(message: impl std::fmt::Display) {
    eprintln!("obsctl shim: warning: {message}");
}

fn lookup(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Runs the step and exports its telemetry; answers the exit code the shim must exit with.
/// Telemetry problems become warnings on stderr, never a different exit code.
pub fn run(options: Options) -> u8 {
    let start = SystemTime::now();
    let command_name = Path::new(&options.command[0])
        .file_name()
        .map_or_else(
            || options.command[0].to_string_lossy(),
            |n| n.to_string_lossy(),
        )
        .into_owned();
    let context = StepContext::resolve(
        options.agent.as_deref(),
        options.step.as_deref(),
        &options.attrs,
        &command_name,
        lookup,
    );
    let parent = lookup(env::TRACEPARENT).and_then(|tp| {
        TraceContext::parse_traceparent(&tp)
            .map_err(|e| {
                warn(format!(
                    "ignoring {}: {e}; starting a new trace",
                    env::TRACEPARENT
                ))
            })
            .ok()
    });
    let tracestate = parent.and_then(|_| lookup(env::TRACESTATE));
    let (sampler, sampler_warning) = Sampler::from_config(
        lookup(env::OTEL_TRACES_SAMPLER).as_deref(),
        lookup(env::OTEL_TRACES_SAMPLER_ARG).as_deref(),
    );
    if let Some(w) = sampler_warning {
        warn(w);
    }
    let trace_id = parent.map_or_else(TraceId::random, |p| p.trace_id);
    let node = context.get(attr::NODE_ID);
    let node_span = (lookup(env::OBSCTL_SPAN_ID_FROM).as_deref() == Some("node")
        && parent.is_some()
        && !node.is_empty())
    .then(|| crate::argo::node_span_id(trace_id, node));
    let span = TraceContext {
        trace_id,
        span_id: node_span.unwrap_or_else(SpanId::random),
        sampled: sampler.should_sample(parent.as_ref(), trace_id),
    };
    print_start_line(&span, &context);

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            // Without a runtime there is no shim: run the step bare so it still happens.
            warn(format!(
                "cannot start the runtime ({e}); running the step untraced"
            ));
            return std::process::Command::new(&options.command[0])
                .args(&options.command[1..])
                .status()
                .map_or(127, |s| s.code().unwrap_or(1) as u8);
        }
    };
    let code = runtime.block_on(async {
        // The exporter's TLS configurations and name lookups get ready while the step runs.
        let exporter = ExportConfig::from_env().map(Exporter::new);
        if let Ok(exporter) = &exporter {
            exporter.prepare();
        }
        let child_env = [
            (env::TRACEPARENT, span.to_traceparent()),
            (env::TRACE_ID, span.trace_id.to_hex()),
            (env::SPAN_ID, span.span_id.to_hex()),
        ];
        let run = child::run(&options.command, &child_env).await;
        let end = SystemTime::now();
        if let Exit::NotFound(m) | Exit::NotExecutable(m) = &run.exit {
            eprintln!("obsctl shim: {m}");
        }
        let redactor = Redactor::from_vars(std::env::vars_os());
        let resource = telemetry::resource(
            lookup,
            &TraceId::random().to_hex(),
            lookup(env::POD_NAME),
            Some(context.get(attr::NAMESPACE)),
            &redactor,
        );
        let record = StepRecord {
            context: &context,
            span,
            parent,
            tracestate,
            start,
            end,
            command: command_line(&options.command),
            run: &run,
            redactor: &redactor,
            replaces: lookup(env::OBSCTL_REPLACES)
                .and_then(|tp| TraceContext::parse_traceparent(&tp).ok()),
            recorded_by_runner: None,
        };
        let mut requests = Vec::with_capacity(3);
        if span.sampled {
            requests.push(record.trace_request(&resource));
        }
        requests.push(record.metrics_request(&resource));
        requests.extend(record.logs_request(&resource));
        requests.retain(|r| signal_enabled(r.signal()));
        export(&requests, options.export_budget, exporter).await;
        if lookup(env::OBSCTL_SHIM_END_LINE).is_some() {
            let mut out = std::io::stdout().lock();
            let end = crate::workflow::runner::ShimEnd(span.span_id).line();
            let _ = writeln!(out, "{end}").and_then(|()| out.flush());
        }
        run.exit.code()
    });
    // Without waiting for a name lookup still hanging on its thread: the export budget is over.
    runtime.shutdown_background();
    code
}

fn print_start_line(span: &TraceContext, context: &StepContext) {
    let line = StartLine {
        trace_id: span.trace_id.to_hex(),
        span_id: span.span_id.to_hex(),
        traceparent: span.to_traceparent(),
        agent: context.agent(),
        step: context.step(),
        task_id: context.get(attr::TASK_ID),
        sampled: span.sampled,
    };
    let mut out = std::io::stdout().lock();
    let json = serde_json::to_string(&line).expect("the start line serialises");
    let _ = writeln!(out, "{json}").and_then(|()| out.flush());
}

/// The command as a shell would show it, arguments with spaces quoted.
fn command_line(command: &[OsString]) -> String {
    command
        .iter()
        .map(|a| {
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `OTEL_TRACES_EXPORTER=none` / `OTEL_METRICS_EXPORTER=none` turn the span / the metrics off,
/// `OBSCTL_STEP_LOGS=none` the step's log records; anything else means OTLP. The step logs have
/// their own switch: `OTEL_LOGS_EXPORTER` configures the step's own SDK (seed 000 sets it to
/// `none` there), and honouring it here would silently drop log correlation.
fn signal_enabled(signal: Signal) -> bool {
    let var = match signal {
        Signal::Traces => env::OTEL_TRACES_EXPORTER,
        Signal::Metrics => env::OTEL_METRICS_EXPORTER,
        Signal::Logs => env::OBSCTL_STEP_LOGS,
    };
    lookup(var).is_none_or(|v| v.trim() != "none")
}

/// [`export`] through an exporter for the given settings, which the caller read (the runner
/// records a killed step with the step's own settings, not this process's environment).
pub(crate) async fn export_with(
    requests: &[ExportRequest],
    budget: Duration,
    config: Result<ExportConfig, crate::otlp::export::ConfigError>,
) {
    export(requests, budget, config.map(Exporter::new)).await
}

/// Sends within the budget, spools what did not go through, replays older spooled requests
/// when the collector is back, and says on stderr what could not be delivered.
async fn export(
    requests: &[ExportRequest],
    budget: Duration,
    exporter: Result<Exporter, crate::otlp::export::ConfigError>,
) {
    if requests.is_empty() {
        return;
    }
    let spool = Spool::from_env_checked().unwrap_or_else(|(spool, e)| {
        warn(e);
        spool
    });
    let exporter = match exporter {
        Ok(exporter) => exporter,
        Err(e) => {
            // A configuration fix later lets `obsctl flush` deliver what is spooled now.
            warn(format!(
                "{e}; spooling telemetry in {}",
                spool.dir().display()
            ));
            for r in requests {
                if let Err(e) = spool.store(r) {
                    warn(e);
                }
            }
            return;
        }
    };
    let config = exporter.config();
    let limit = budget.min(config.timeout);
    let deadline = tokio::time::Instant::now() + limit;
    for r in requests {
        crate::ui::debug(
            1,
            format!(
                "shim: exporting {} to {} over {} within {}",
                r.signal(),
                config.endpoint(r.signal()),
                config.protocol,
                crate::ui::duration(limit)
            ),
        );
    }
    let started = std::time::Instant::now();
    let report = spool::deliver(&exporter, &spool, requests, deadline, MAX_REPLAY_PER_STEP).await;
    let delivered = report.results.iter().filter(|r| r.is_ok()).count();
    crate::ui::debug(
        1,
        format!(
            "shim: {delivered} of {} request(s) acknowledged in {} ms; {} spooled; replayed {} \
             from the spool",
            requests.len(),
            started.elapsed().as_millis(),
            report.spooled,
            report.replay.as_ref().map_or(0, |r| r.delivered)
        ),
    );
    if let Some(err) = report.results.iter().find_map(|r| r.as_ref().err()) {
        warn(format!(
            "telemetry not delivered ({err}); {} request(s) spooled in {} for replay",
            report.spooled,
            spool.dir().display()
        ));
    }
    if report.lost > 0 {
        warn(format!("{} telemetry request(s) lost", report.lost));
    }
    for e in &report.spool_errors {
        warn(e);
    }
    if report.dropped.requests > 0 {
        let total = spool.dropped();
        warn(format!(
            "spool full: dropped the {} oldest request(s) ({} items); {} dropped in total",
            report.dropped.requests, report.dropped.items, total.requests
        ));
    }
}

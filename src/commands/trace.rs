//! `obsctl trace <taskId>`: argument handling and output only. The lookup lives in
//! `report::task`, the waterfall in `report::waterfall`, the HTML page in `report::html::task`.
//! An unknown task, or a task none of whose traces the trace backend has, exits 1.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::verify::{ArgoSource, BackendArgs, non_empty_task_id};
use crate::report::task::{TaskQuery, load, render_task};
use crate::workflow::record::RecordStore;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The task id (the workflow's `taskId` parameter).
    #[arg(value_name = "TASK_ID", value_parser = non_empty_task_id)]
    pub task_id: String,
    /// Show each step's log lines under its span, in time order.
    #[arg(long)]
    pub logs: bool,
    /// Print the span tree as JSON instead of a waterfall.
    #[arg(long)]
    pub json: bool,
    /// Also write the task as one self-contained HTML page to FILE: each trace as a waterfall
    /// with every step's log lines under its span, and the links.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Where `obsctl run` recorded the runs [default: $XDG_STATE_HOME/obsctl/runs].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub argo: ArgoSource,
    #[command(flatten)]
    pub backends: BackendArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(crate::paths::default_state_dir);
    let records = match args.argo.record()? {
        Some(record) => vec![record],
        None => RecordStore::new(&state_dir)
            .list()
            .context("reading run records")?,
    };
    let backends = args.backends.connect()?;
    let query = TaskQuery {
        task_id: &args.task_id,
        // The page always shows the logs; the terminal only with --logs.
        with_logs: args.logs || args.html.is_some(),
        service_name: &args.backends.service_name,
        state_dir,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let view = runtime.block_on(load(&backends, &records, &query))?;
    if let Some(path) = &args.html {
        std::fs::write(path, crate::report::html::task::render(&view))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    // Logs fetched only for the page stay off the terminal.
    let stripped = (args.html.is_some() && !args.logs).then(|| view.without_logs());
    let shown = stripped.as_ref().unwrap_or(&view);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(shown).expect("views always serialize")
        );
    } else {
        print!("{}", render_task(shown, crate::ui::color_enabled()));
    }
    // The records name the task but nothing of it reached the trace backend: a person looking
    // for the trace found nothing, and a script must not take that for success.
    if view.traces.is_empty() {
        eprintln!(
            "obsctl: trace: none of the {} trace(s) of task {} is in the trace backend at {}; \
             telemetry may still be in flight, or the steps exported elsewhere",
            view.missing_traces.len(),
            crate::ui::quoted(&args.task_id),
            crate::backends::redact(&backends.urls.tempo)
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

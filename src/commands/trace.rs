//! `obsctl trace <taskId>`: argument handling and output only. The lookup lives in
//! `report::task`, the waterfall in `report::waterfall`. An unknown task exits 1.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::verify::BackendArgs;
use crate::report::task::{TaskQuery, load, render_task};
use crate::workflow::record::RecordStore;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The task id (the workflow's `taskId` parameter).
    #[arg(value_name = "TASK_ID")]
    pub task_id: String,
    /// Show each step's log lines under its span, in time order.
    #[arg(long)]
    pub logs: bool,
    /// Print the span tree as JSON instead of a waterfall.
    #[arg(long)]
    pub json: bool,
    /// Where `obsctl run` recorded the runs [default: $XDG_STATE_HOME/obsctl/runs].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub backends: BackendArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(crate::paths::default_state_dir);
    let records = RecordStore::new(&state_dir)
        .list()
        .context("reading run records")?;
    let backends = args.backends.connect()?;
    let query = TaskQuery {
        task_id: &args.task_id,
        with_logs: args.logs,
        service_name: &args.backends.service_name,
        state_dir,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let view = runtime.block_on(load(&backends, &records, &query))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).expect("views always serialize")
        );
    } else {
        print!("{}", render_task(&view, crate::ui::color_enabled()));
    }
    Ok(ExitCode::SUCCESS)
}

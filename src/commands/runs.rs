//! `obsctl runs`: argument handling and output only; the records are `workflow::record`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::run::{Format, argo_json};
use crate::workflow::clock;
use crate::workflow::record::{NodeType, RecordStore};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where run records are kept [default: $XDG_STATE_HOME/obsctl/runs].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// A table, or a JSON list of Argo-shaped workflows.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = RecordStore::new(
        args.state_dir
            .unwrap_or_else(crate::paths::default_state_dir),
    );
    let records = store.list()?;
    crate::ui::debug(
        1,
        format!(
            "runs: {} record(s) in {}",
            records.len(),
            store.dir().display()
        ),
    );
    match args.output {
        Format::Json => {
            let list: Vec<_> = records.iter().map(argo_json).collect();
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        Format::Table => {
            let mut table = crate::report::table(
                [
                    "NAME", "PHASE", "STARTED", "DURATION", "PODS", "TRACE ID", "FILE",
                ],
                crate::ui::color_enabled(),
            );
            for r in &records {
                let pods = r
                    .status
                    .nodes
                    .values()
                    .filter(|n| n.node_type == NodeType::Pod)
                    .count();
                let duration = clock::between(
                    r.status.started_at.as_deref(),
                    r.status.finished_at.as_deref(),
                )
                .map(|d| format!("{:.1}s", d.as_secs_f64()))
                .unwrap_or_default();
                table.add_row([
                    r.name.clone(),
                    r.status.phase.to_string(),
                    r.status.started_at.clone().unwrap_or_default(),
                    duration,
                    pods.to_string(),
                    r.trace_id.to_hex(),
                    r.workflow_file.display().to_string(),
                ]);
            }
            if records.is_empty() {
                eprintln!("no runs recorded in {}", store.dir().display());
            } else {
                println!("{table}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

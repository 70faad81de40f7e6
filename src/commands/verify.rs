//! `obsctl verify`: argument handling and output only. The checks live in `checks`, the
//! renderings in `report::verify` and `report::html::verify`. Exit codes: 0 all checks passed,
//! 1 could not run, 2 a check failed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::backends::{BackendUrls, Backends, UrlFlags, redact};
use crate::checks::collect::{CollectOptions, Observed};
use crate::checks::expect::Expectation;
use crate::checks::metrics::DEFAULT_SERIES_BUDGET;
use crate::checks::select::{Selection, select};
use crate::checks::time::parse_duration;
use crate::checks::{Thresholds, verify};
use crate::conventions::resource::DEFAULT_SERVICE_NAME;
use crate::report::html::ReportFormat;
use crate::report::html::verify::Evidence;
use crate::report::task::links_of_runs;
use crate::report::verify::{BackendsUsed, VerifyReport, json, junit, table};
use crate::stack::endpoints::Endpoints;
use crate::workflow::record::{RecordStore, RunRecord};

/// Exit code when a check failed (1 is "could not run").
pub const EXIT_CHECK_FAILED: u8 = 2;

/// Where the backends answer; each defaults to the running stack's endpoints file.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
    /// Tempo-shaped trace API base URL (default: the backends file, else the running stack).
    #[arg(long, value_name = "URL")]
    pub tempo_url: Option<String>,
    /// Prometheus API base URL (default: the backends file, else the running stack).
    #[arg(long, value_name = "URL")]
    pub prometheus_url: Option<String>,
    /// Loki API base URL (default: the backends file, else the running stack).
    #[arg(long, value_name = "URL")]
    pub loki_url: Option<String>,
    /// `service_name` label the step logs carry in Loki.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_SERVICE_NAME)]
    pub service_name: String,
    #[command(flatten)]
    pub access: super::access::AccessArgs,
}

impl BackendArgs {
    /// Flags, else the backends file, else the endpoints file, else an error telling the user
    /// to start a stack.
    pub fn connect(&self) -> anyhow::Result<Backends> {
        let connector = self.access.connector(UrlFlags {
            tempo: self.tempo_url.clone(),
            prometheus: self.prometheus_url.clone(),
            loki: self.loki_url.clone(),
        })?;
        let urls = BackendUrls::discover(&connector.urls, &Endpoints::default_path())?;
        Ok(connector.backends(urls)?)
    }
}

/// A clap value parser for task ids: an empty id would select every run without a task, not
/// one task.
pub fn non_empty_task_id(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("the task id must not be empty".to_string())
    } else {
        Ok(text.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
    Junit,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Verify this run (its name, as `obsctl runs` lists it). Default: the latest run.
    #[arg(long, value_name = "NAME", conflicts_with_all = ["task_id", "since", "argo_server"])]
    pub run: Option<String>,
    /// Verify every recorded run of this task.
    #[arg(long, value_name = "ID", conflicts_with_all = ["since", "argo_server"], value_parser = non_empty_task_id)]
    pub task_id: Option<String>,
    /// Verify every run started within this long ago (30s, 5m, 2h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Share of step attempts that must have a correct span, between 0 and 1.
    #[arg(long, value_name = "RATIO", default_value_t = 0.95)]
    pub min_coverage: f64,
    /// Most series one step metric may have.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_SERIES_BUDGET)]
    pub series_budget: u64,
    /// How long to wait for the backends to hold the expected data.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Report format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Also write the report to FILE: one self-contained HTML page when FILE ends in .html
    /// (checks with their numbers and items, counters per step, each run's trace as a waterfall
    /// with its log lines, the links), else the JSON report.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Where `obsctl run` recorded the runs [default: $XDG_STATE_HOME/obsctl/runs].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub argo: ArgoSource,
    #[command(flatten)]
    pub backends: BackendArgs,
}

/// A workflow on an Argo Server instead of run records (`verify` and `trace`).
#[derive(Debug, clap::Args)]
pub struct ArgoSource {
    /// Judge a workflow that ran on this Argo Server (URL or `host:port`; alone:
    /// $ARGO_SERVER) from its nodes there, without a run record: needs --workflow. Token in
    /// $ARGO_TOKEN or --argo-token-file; see docs/argo.md.
    #[arg(long, value_name = "URL", num_args = 0..=1, requires = "workflow")]
    pub argo_server: Option<Option<String>>,
    /// With --argo-server: the workflow's name.
    #[arg(long, value_name = "NAME", requires = "argo_server")]
    pub workflow: Option<String>,
    /// With --argo-server: its namespace [default: $ARGO_NAMESPACE, else argo].
    #[arg(long, requires = "argo_server")]
    pub namespace: Option<String>,
    /// With --argo-server: a file holding the token instead of $ARGO_TOKEN.
    #[arg(long, value_name = "FILE", requires = "argo_server")]
    pub argo_token_file: Option<PathBuf>,
}

impl ArgoSource {
    /// The workflow as a run record, read from the server; `None` without --argo-server.
    pub fn record(&self) -> anyhow::Result<Option<RunRecord>> {
        use crate::argo::client::{ArgoClient, ServerConfig};
        let (Some(server), Some(name)) = (&self.argo_server, &self.workflow) else {
            return Ok(None);
        };
        let config = ServerConfig::resolve(
            server.as_deref(),
            self.namespace.as_deref(),
            self.argo_token_file.as_deref(),
            |k| std::env::var(k).ok(),
        )?;
        let client = ArgoClient::new(config)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let record = runtime.block_on(crate::argo::remote::fetch_record(&client, name))?;
        Ok(Some(record))
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if !(0.0..=1.0).contains(&args.min_coverage) {
        anyhow::bail!(
            "--min-coverage must be between 0 and 1, got {}",
            args.min_coverage
        );
    }
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(crate::paths::default_state_dir);
    let (runs, all) = match args.argo.record()? {
        Some(record) => (vec![record.clone()], vec![record]),
        None => {
            let all = RecordStore::new(&state_dir)
                .list()
                .context("reading run records")?;
            let selection = match (&args.run, &args.task_id, args.since) {
                (Some(name), _, _) => Selection::Run(name.clone()),
                (_, Some(task), _) => Selection::Task(task.clone()),
                (_, _, Some(since)) => Selection::Since(since),
                _ => Selection::Latest,
            };
            (
                select(&all, &selection, &state_dir.display().to_string())?,
                all,
            )
        }
    };
    let backends = args.backends.connect()?;
    let expectation = Expectation::new(runs, &all);
    let thresholds = Thresholds {
        min_coverage: args.min_coverage,
        series_budget: args.series_budget,
    };
    let options = CollectOptions {
        timeout: args.timeout,
        service_name: args.backends.service_name.clone(),
    };
    let (report, observed) = run_checks(&backends, &expectation, &options, &thresholds)?;
    if let Some(path) = &args.report {
        let text = match ReportFormat::of(path) {
            ReportFormat::Html => {
                let links = links_of_runs(&backends, &expectation.runs);
                let evidence = Evidence::of(&expectation, &observed, links);
                crate::report::html::verify::render(&report, &evidence)
            }
            ReportFormat::Json => json(&report) + "\n",
        };
        std::fs::write(path, text)
            .with_context(|| format!("cannot write the report to {}", path.display()))?;
    }
    print!(
        "{}",
        match args.output {
            Output::Table => table(&report, crate::ui::color_enabled()),
            Output::Json => json(&report) + "\n",
            Output::Junit => junit(&report),
        }
    );
    exit_code(&report)
}

/// Runs the checks and assembles the report, with what the backends held for a report that
/// draws it; a backend that cannot be queried exits 1.
pub fn run_checks(
    backends: &Backends,
    expectation: &Expectation,
    options: &CollectOptions,
    thresholds: &Thresholds,
) -> anyhow::Result<(VerifyReport, Observed)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (wait, results, observed) = runtime
        .block_on(verify(backends, expectation, options, thresholds))
        .context("querying the backends")?;
    let report = VerifyReport::new(
        expectation,
        BackendsUsed {
            tempo: redact(&backends.urls.tempo),
            prometheus: redact(&backends.urls.prometheus),
            loki: redact(&backends.urls.loki),
        },
        thresholds,
        wait,
        results,
    );
    Ok((report, observed))
}

/// 0 when every check passed, else 2 with one line on stderr (the report is on stdout).
pub fn exit_code(report: &VerifyReport) -> anyhow::Result<ExitCode> {
    if report.passed {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "obsctl: verify: {} of {} checks failed",
        report.failures(),
        report.checks.len()
    );
    Ok(ExitCode::from(EXIT_CHECK_FAILED))
}

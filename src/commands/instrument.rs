//! `obsctl instrument`: argument handling and output only; the work is `argo::instrument`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::CommandError;
use crate::argo::instrument::{self, CheckPolicy, DEFAULT_ENDPOINT, DEFAULT_IMAGE, Options};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Prints the workflow with every Pod template's main container started through \
`obsctl shim`, the OTEL environment, labels and annotations, for `argo submit` or `kubectl create`. \
Exit code: 0, or 2 for invalid input. See docs/argo.md."
)]
pub struct Args {
    /// The Workflow, WorkflowTemplate or ClusterWorkflowTemplate YAML.
    pub file: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Yaml)]
    pub output: Format,
    /// The image carrying obsctl at /bin/obsctl (a static build: it is copied into step images).
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// The collector as the workflow's pods reach it.
    #[arg(long, value_name = "URL", default_value = DEFAULT_ENDPOINT)]
    pub otlp_endpoint: String,
    /// OTLP protocol: grpc, http/protobuf or http/json.
    #[arg(long, value_name = "PROTOCOL", default_value = "grpc")]
    pub otlp_protocol: String,
    /// OTEL_TRACES_SAMPLER_ARG for the steps' parentbased_traceidratio sampler.
    #[arg(long, default_value = "1.0", value_name = "RATIO")]
    pub sampler_ratio: String,
    /// When the init container's collector check fails: warn and run the step, or fail the pod.
    #[arg(long, value_enum, default_value_t = CheckPolicy::Warn)]
    pub check_policy: CheckPolicy,
    /// deployment.environment when the workflow declares no `env` parameter.
    #[arg(long, default_value = "cluster", value_name = "NAME")]
    pub environment: String,
}

impl Args {
    pub fn options(&self) -> Options {
        Options {
            image: self.image.clone(),
            otlp_endpoint: self.otlp_endpoint.clone(),
            otlp_protocol: self.otlp_protocol.clone(),
            sampler_ratio: self.sampler_ratio.clone(),
            check: self.check_policy,
            traceparent: None,
            environment: self.environment.clone(),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (doc, report) = instrument::instrument_file(&args.file, &args.options())
        .map_err(|e| CommandError::new(2, e))?;
    let text = match args.output {
        Format::Yaml => serde_norway::to_string(&doc)?,
        Format::Json => serde_json::to_string_pretty(&doc)? + "\n",
    };
    print!("{text}");
    for (template, why) in &report.unwrapped {
        eprintln!("obsctl: warning: template {template:?} not wrapped in the shim: {why}");
    }
    crate::ui::debug(
        1,
        format!("wrapped in the shim: {}", report.wrapped.join(", ")),
    );
    Ok(ExitCode::SUCCESS)
}

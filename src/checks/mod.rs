//! `obsctl verify`'s checks: each is a function from what the run records say happened
//! ([`expect::Expectation`]) and what the backends hold ([`collect::Observed`]) to a
//! [`CheckResult`] carrying its numbers (expected, found, missing, duplicated), not just a verdict.

pub mod collect;
pub mod expect;
pub mod logs;
pub mod metrics;
pub mod outputs;
pub mod select;
pub mod spans;
pub mod time;

use serde::Serialize;

use collect::Observed;
use expect::Expectation;

/// The checks, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckId {
    SpanCoverage,
    NoOrphans,
    CounterParity,
    Exemplars,
    LogCorrelation,
    WorkflowOutputs,
    Cardinality,
}

impl CheckId {
    pub fn name(self) -> &'static str {
        match self {
            CheckId::SpanCoverage => "span-coverage",
            CheckId::NoOrphans => "no-orphans",
            CheckId::CounterParity => "counter-parity",
            CheckId::Exemplars => "exemplars",
            CheckId::LogCorrelation => "log-correlation",
            CheckId::WorkflowOutputs => "workflow-outputs",
            CheckId::Cardinality => "cardinality",
        }
    }
}

/// A check's verdict. A check that does not apply to the runs (for example link outputs of a
/// workflow that declares none) neither passes nor fails, and does not fail `verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    Passed,
    Failed,
    NotApplicable,
}

impl CheckStatus {
    pub fn label(self) -> &'static str {
        match self {
            CheckStatus::Passed => "PASS",
            CheckStatus::Failed => "FAIL",
            CheckStatus::NotApplicable => "N/A",
        }
    }
}

/// One check's verdict and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    pub check: CheckId,
    /// True only when the check passed; `status` tells a failure from not applicable.
    pub passed: bool,
    pub status: CheckStatus,
    /// One line a person reads first.
    pub summary: String,
    pub expected: u64,
    pub found: u64,
    /// Items expected but not found (or found wrong), one description each.
    pub missing: Vec<String>,
    /// Items found more often than expected.
    pub duplicated: Vec<String>,
    /// Other findings: wrong attributes, malformed values, notes.
    pub problems: Vec<String>,
}

impl CheckResult {
    fn new(check: CheckId, expected: u64, found: u64) -> Self {
        Self {
            check,
            passed: false,
            status: CheckStatus::Failed,
            summary: String::new(),
            expected,
            found,
            missing: Vec::new(),
            duplicated: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn set_passed(&mut self, passed: bool) {
        self.passed = passed;
        self.status = if passed {
            CheckStatus::Passed
        } else {
            CheckStatus::Failed
        };
    }

    fn set_not_applicable(&mut self) {
        self.passed = false;
        self.status = CheckStatus::NotApplicable;
    }

    /// Whether the check failed (a check that does not apply did not).
    pub fn failed(&self) -> bool {
        self.status == CheckStatus::Failed
    }
}

/// Thresholds the checks apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Share of step attempts that must have a correct span (seed 000: above 95 % in dev).
    pub min_coverage: f64,
    /// Most series one step metric may have.
    pub series_budget: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            min_coverage: 0.95,
            series_budget: metrics::DEFAULT_SERIES_BUDGET,
        }
    }
}

/// Every check, in report order.
pub fn run_all(
    expectation: &Expectation,
    observed: &Observed,
    thresholds: &Thresholds,
) -> Vec<CheckResult> {
    vec![
        spans::span_coverage(expectation, observed, thresholds.min_coverage),
        spans::no_orphans(expectation, observed),
        metrics::counter_parity(expectation, observed),
        metrics::exemplars(expectation, observed),
        logs::log_correlation(expectation, observed),
        outputs::workflow_outputs(expectation),
        metrics::cardinality(observed, thresholds.series_budget),
    ]
}

/// Collects what the backends hold for `expectation` (waiting as [`collect::collect`] does) and
/// runs every check on it. What was observed comes back too, for a report that draws it (the
/// HTML report's waterfalls and per-step counters) without asking the backends again.
pub async fn verify(
    backends: &crate::backends::Backends,
    expectation: &Expectation,
    options: &collect::CollectOptions,
    thresholds: &Thresholds,
) -> Result<(collect::WaitReport, Vec<CheckResult>, Observed), crate::backends::BackendError> {
    let (observed, wait) = collect::collect(backends, expectation, options).await?;
    let results = run_all(expectation, &observed, thresholds);
    Ok((wait, results, observed))
}

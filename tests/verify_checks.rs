//! Each check on a clean run (passes) and with its defect introduced (fails, with the right
//! numbers). The run record is hand-built as `obsctl run` writes it; the backend data is what
//! Tempo, Prometheus and Loki would return, as typed by obsctl's clients.

mod common;

use common::verify::scenario::Scenario;
use obsctl::backends::prometheus::Sample;
use obsctl::checks::collect::SeriesCount;
use obsctl::checks::expect::Expectation;
use obsctl::checks::{CheckId, CheckResult, Thresholds, run_all};
use obsctl::otlp::TraceId;

fn check(results: &[CheckResult], id: CheckId) -> &CheckResult {
    results.iter().find(|r| r.check == id).unwrap()
}

fn failing(results: &[CheckResult]) -> Vec<CheckId> {
    results
        .iter()
        .filter(|r| r.failed())
        .map(|r| r.check)
        .collect()
}

#[test]
fn a_clean_run_passes_every_check_with_its_numbers() {
    let s = Scenario::clean("agent-pipeline-abc12");
    let results = run_all(&s.expectation(), &s.observed(), &Thresholds::default());
    assert_eq!(results.len(), 7);
    assert!(failing(&results).is_empty(), "{results:#?}");
    let coverage = check(&results, CheckId::SpanCoverage);
    assert_eq!((coverage.expected, coverage.found), (4, 4));
    let orphans = check(&results, CheckId::NoOrphans);
    assert_eq!((orphans.expected, orphans.found), (4, 4));
    let parity = check(&results, CheckId::CounterParity);
    // 3 successes + 1 failure in the counters, and 4 in the histogram count.
    assert_eq!((parity.expected, parity.found), (8, 8));
    let exemplars = check(&results, CheckId::Exemplars);
    assert_eq!((exemplars.expected, exemplars.found), (4, 4));
    let logs = check(&results, CheckId::LogCorrelation);
    assert_eq!((logs.expected, logs.found), (4, 4));
    let outputs = check(&results, CheckId::WorkflowOutputs);
    assert_eq!((outputs.expected, outputs.found), (3, 3));
    let cardinality = check(&results, CheckId::Cardinality);
    assert_eq!((cardinality.expected, cardinality.found), (1000, 4));
}

#[test]
fn a_dropped_step_span_fails_coverage_naming_the_step() {
    let mut s = Scenario::clean("wf");
    let dropped = s.steps[3].span_id;
    s.spans.retain(|sp| sp.span_id != dropped);
    let results = run_all(&s.expectation(), &s.observed(), &Thresholds::default());
    let coverage = check(&results, CheckId::SpanCoverage);
    assert!(!coverage.passed);
    assert_eq!((coverage.expected, coverage.found), (4, 3));
    assert_eq!(coverage.missing.len(), 1);
    assert!(
        coverage.missing[0].contains("deploy/preview #0"),
        "{:?}",
        coverage.missing
    );
    assert!(coverage.summary.contains("75.0%"), "{}", coverage.summary);
    assert_eq!(
        failing(&results),
        [CheckId::SpanCoverage, CheckId::Exemplars]
    );
    // The exemplar of the dropped step now points at a span the trace lacks.
    assert_eq!(check(&results, CheckId::Exemplars).missing.len(), 1);

    // Below the threshold fails; at or above passes.
    let lenient = Thresholds {
        min_coverage: 0.75,
        ..Thresholds::default()
    };
    let results = run_all(&s.expectation(), &s.observed(), &lenient);
    assert!(check(&results, CheckId::SpanCoverage).passed);
}

#[test]
fn wrong_status_and_missing_attribute_are_faults_with_reasons() {
    let mut s = Scenario::clean("wf");
    // The failed attempt reported OK; clippy's span lost its nodeId.
    let failed = s.steps[1].span_id;
    let clippy = s.steps[0].span_id;
    for span in &mut s.spans {
        if span.span_id == failed {
            span.status.code = obsctl::backends::tempo::StatusCode::Ok;
        }
        if span.span_id == clippy {
            span.attributes.remove("nodeId");
        }
    }
    let results = run_all(&s.expectation(), &s.observed(), &Thresholds::default());
    let coverage = check(&results, CheckId::SpanCoverage);
    assert_eq!((coverage.expected, coverage.found), (4, 2));
    let missing = coverage.missing.join("\n");
    assert!(
        missing.contains(r#"span present but attribute nodeId missing, expected "wf-1000""#),
        "{missing}"
    );
    assert!(
        missing.contains("status is OK, expected ERROR since the step failed"),
        "{missing}"
    );
}

#[test]
fn a_wrong_attribute_value_names_expected_and_found() {
    let mut s = Scenario::clean("wf");
    let clippy = s.steps[0].span_id;
    for span in &mut s.spans {
        if span.span_id == clippy {
            span.attributes.insert("repo".into(), "acme/other".into());
        }
    }
    let results = run_all(&s.expectation(), &s.observed(), &Thresholds::default());
    let coverage = check(&results, CheckId::SpanCoverage);
    assert_eq!(coverage.found, 3);
    assert_eq!(coverage.missing.len(), 1, "{:?}", coverage.missing);
    assert!(
        coverage.missing[0].ends_with(
            r#"span present but attribute repo is "acme/other", expected "acme/widgets""#
        ),
        "{}",
        coverage.missing[0]
    );
}

#[test]
fn duplicate_spans_are_counted_once_and_reported_apart() {
    let mut s = Scenario::clean("wf");
    let copy = s.spans[1].clone();
    s.spans.push(copy);
    let results = run_all(&s.expectation(), &s.observed(), &Thresholds::default());
    let coverage = check(&results, CheckId::SpanCoverage);
    assert!(coverage.passed);
    assert_eq!(coverage.found, 4);
    assert_eq!(coverage.duplicated.len(), 1);
    assert!(coverage.duplicated[0].contains("received 2 times"));
    let orphans = check(&results, CheckId::NoOrphans);
    assert!(orphans.passed);
    assert_eq!((orphans.expected, orphans.found), (4, 4));
    assert_eq!(orphans.duplicated.len(), 1);
}

#[test]
fn a_span_whose_parent_is_missing_is_an_orphan() {
    let mut s = Scenario::clean("wf");
    // The run's root span never arrived: every step span is orphaned.
    let root = s.record.root_span_id;
    s.spans.retain(|sp| sp.span_id != root);
    let results = run_all(&s.expectation(), &s.observed(), &Thresholds::default());
    let orphans = check(&results, CheckId::NoOrphans);
    assert!(!orphans.passed);
    assert_eq!((orphans.expected, orphans.found), (4, 0));
    assert_eq!(orphans.missing.len(), 4);
    assert!(orphans.missing[0].contains(&format!("parent {root}")));
    assert_eq!(failing(&results), [CheckId::NoOrphans]);
}

#[test]
fn a_counter_sent_twice_fails_parity_as_duplicated() {
    let mut s = Scenario::clean("wf");
    s.success[0].value = 2.0; // clippy/verify counted twice
    let results = run_all(&s.expectation(), &s.observed(), &Thresholds::default());
    let parity = check(&results, CheckId::CounterParity);
    assert!(!parity.passed);
    assert_eq!(parity.expected, 8);
    assert_eq!(parity.found, 9);
    assert_eq!(
        parity.duplicated,
        ["agent_step_success_total clippy/verify: expected 1, found 2"]
    );
    assert!(parity.missing.is_empty());
    assert_eq!(failing(&results), [CheckId::CounterParity]);
}

#[test]
fn a_lost_failure_count_and_histogram_count_are_missing() {
    let mut s = Scenario::clean("wf");
    s.fail.clear();
    s.histogram_counts
        .retain(|h| h.label("outcome") != Some("failure"));
    let results = run_all(&s.expectation(), &s.observed(), &Thresholds::default());
    let parity = check(&results, CheckId::CounterParity);
    assert_eq!((parity.expected, parity.found), (8, 6));
    assert_eq!(
        parity.missing,
        [
            "agent_step_fail_total tests/unit: expected 1, found 0",
            "agent_step_duration_ms_count tests/unit outcome=failure: expected 1, found 0",
        ]
    );
}

/// The lifetime totals of a backend that also holds an earlier run of the same PR (another CI
/// job, another state directory): doubled counters and histogram.
fn with_history(s: &Scenario) -> obsctl::checks::collect::Observed {
    let mut observed = s.observed();
    let mut baseline = Vec::new();
    for c in observed
        .success_counters
        .iter_mut()
        .chain(observed.fail_counters.iter_mut())
    {
        baseline.push(c.clone());
        c.value *= 2.0;
    }
    observed.baseline = baseline;
    observed
}

#[test]
fn counters_compare_what_the_runs_added_not_lifetime_totals() {
    let s = Scenario::clean("wf-2");
    let observed = with_history(&s);
    let results = run_all(&s.expectation(), &observed, &Thresholds::default());
    let parity = check(&results, CheckId::CounterParity);
    assert!(
        parity.passed,
        "{:?} {:?}",
        parity.missing, parity.duplicated
    );
    assert_eq!((parity.expected, parity.found), (8, 8));

    // Without the baseline the earlier run's counts are this run's: over by one each.
    let mut raw = observed.clone();
    raw.baseline.clear();
    let results = run_all(&s.expectation(), &raw, &Thresholds::default());
    let parity = check(&results, CheckId::CounterParity);
    assert!(!parity.passed);
    assert_eq!(parity.duplicated.len(), 4, "{:?}", parity.duplicated);
    assert!(parity.missing.is_empty());
    assert!(
        parity.summary.starts_with("4 series over") && !parity.summary.contains("short"),
        "{}",
        parity.summary
    );
}

#[test]
fn a_counter_reset_since_the_baseline_counts_the_whole_value() {
    let s = Scenario::clean("wf");
    let mut observed = s.observed();
    // The backend restarted: its value then was higher than now.
    observed.baseline = observed
        .success_counters
        .iter()
        .map(|c| Sample {
            value: 10.0,
            ..c.clone()
        })
        .collect();
    let results = run_all(&s.expectation(), &observed, &Thresholds::default());
    assert!(check(&results, CheckId::CounterParity).passed);
}

#[test]
fn recorded_runs_that_finished_before_the_baseline_are_not_expected() {
    let s = Scenario::clean("wf-2");
    let mut earlier = Scenario::clean("wf-1").record;
    earlier.status.started_at = Some("2026-11-23T17:30:00Z".into());
    earlier.status.finished_at = Some("2026-11-23T17:35:00Z".into());
    let expectation = Expectation::new(vec![s.record.clone()], &[earlier, s.record.clone()]);
    assert_eq!(expectation.counter_attempts.len(), 4);
    assert_eq!(expectation.compared_runs, ["wf-2"]);
    assert_eq!(expectation.baseline, 1_795_455_600_000_000_000);
    let results = run_all(&expectation, &with_history(&s), &Thresholds::default());
    assert!(check(&results, CheckId::CounterParity).passed);
}

#[test]
fn a_recorded_run_going_on_at_the_baseline_moves_it_and_is_expected() {
    let s = Scenario::clean("wf-2");
    let mut earlier = Scenario::clean("wf-1").record;
    earlier.status.started_at = Some("2026-11-23T17:30:00Z".into());
    let expectation = Expectation::new(vec![s.record.clone()], &[earlier, s.record.clone()]);
    assert_eq!(expectation.baseline, 1_795_455_000_000_000_000);
    assert_eq!(expectation.compared_runs, ["wf-1", "wf-2"]);
    assert_eq!(expectation.counter_attempts.len(), 8);
    // The histogram carries the run name: only wf-2's attempts are expected in its series.
    assert_eq!(expectation.histogram_attempts.len(), 4);
    let mut observed = s.observed();
    for c in observed
        .success_counters
        .iter_mut()
        .chain(observed.fail_counters.iter_mut())
    {
        c.value *= 2.0;
    }
    let results = run_all(&expectation, &observed, &Thresholds::default());
    let parity = check(&results, CheckId::CounterParity);
    assert!(parity.passed, "{:?}", parity.missing);
    assert!(parity.summary.contains("of 2 runs"), "{}", parity.summary);
}

#[test]
fn an_exemplar_pointing_at_a_missing_trace_fails() {
    let mut s = Scenario::clean("wf");
    let ghost = TraceId::from_hex("0badc0ffee0000000000000000000001").unwrap();
    s.exemplars[2].labels.remove("span_id");
    s.exemplars[2]
        .labels
        .insert("trace_id".into(), ghost.to_hex());
    let mut observed = s.observed();
    observed.traces.insert(ghost, None);
    let results = run_all(&s.expectation(), &observed, &Thresholds::default());
    let exemplars = check(&results, CheckId::Exemplars);
    assert!(!exemplars.passed);
    assert_eq!((exemplars.expected, exemplars.found), (4, 3));
    assert_eq!(exemplars.missing.len(), 1);
    assert!(exemplars.missing[0].contains(&ghost.to_hex()));
    assert_eq!(failing(&results), [CheckId::Exemplars]);
}

#[test]
fn no_exemplars_at_all_fails() {
    let mut s = Scenario::clean("wf");
    s.exemplars.clear();
    let results = run_all(&s.expectation(), &s.observed(), &Thresholds::default());
    let exemplars = check(&results, CheckId::Exemplars);
    assert!(!exemplars.passed);
    assert!(
        exemplars.summary.contains("no exemplars"),
        "{}",
        exemplars.summary
    );
}

#[test]
fn a_log_line_without_ids_fails_log_correlation() {
    let mut s = Scenario::clean("wf");
    s.logs[0].structured_metadata.remove("trace_id");
    s.logs[0].structured_metadata.remove("span_id");
    let results = run_all(&s.expectation(), &s.observed(), &Thresholds::default());
    let logs = check(&results, CheckId::LogCorrelation);
    assert!(!logs.passed);
    // clippy/verify still has its "finished" line with ids.
    assert_eq!((logs.expected, logs.found), (4, 4));
    assert_eq!(logs.problems.len(), 1, "{:?}", logs.problems);
    assert!(logs.problems[0].starts_with("1 log line(s) of the task carry no trace_id/span_id"));
    assert!(logs.problems[0].contains("clippy/verify: step started"));
    assert_eq!(failing(&results), [CheckId::LogCorrelation]);
}

#[test]
fn a_step_with_no_correlated_logs_and_a_blind_selector_fail() {
    let mut s = Scenario::clean("wf");
    let deploy = s.steps[3].span_id.to_hex();
    s.logs
        .retain(|l| l.structured_metadata.get("span_id") != Some(&deploy));
    let mut observed = s.observed();
    observed.log_selections[1].entries.clear(); // prNumber selects nothing
    let results = run_all(&s.expectation(), &observed, &Thresholds::default());
    let logs = check(&results, CheckId::LogCorrelation);
    assert_eq!((logs.expected, logs.found), (4, 3));
    assert!(logs.missing[0].contains("deploy/preview"));
    assert_eq!(
        logs.problems,
        [
            r#"selecting logs by repo="acme/widgets" misses the lines of 1 of 4 step attempts"#,
            r#"selecting logs by prNumber="42" misses the lines of 4 of 4 step attempts"#,
        ]
    );
}

#[test]
fn a_missing_or_malformed_output_fails() {
    let mut s = Scenario::clean("wf");
    let outputs = s.record.status.outputs.as_mut().unwrap();
    outputs.parameters.retain(|p| p.name != "previewUrl");
    outputs.parameters[1].value = "actions/runs/777".into();
    let results = run_all(&s.expectation(), &s.observed(), &Thresholds::default());
    let out = check(&results, CheckId::WorkflowOutputs);
    assert!(!out.passed);
    assert_eq!((out.expected, out.found), (3, 1));
    assert_eq!(out.missing.len(), 2);
    assert!(out.missing.iter().any(|m| m.contains("previewUrl missing")));
    assert!(
        out.missing
            .iter()
            .any(|m| m.contains("actionsRunUrl \"actions/runs/777\" is not a URL"))
    );
    assert_eq!(failing(&results), [CheckId::WorkflowOutputs]);
}

#[test]
fn a_metric_over_its_series_budget_fails_cardinality() {
    let s = Scenario::clean("wf");
    let mut observed = s.observed();
    observed.series[2] = SeriesCount {
        metric: "agent_step_duration_ms_count".into(),
        series: 1500,
    };
    let results = run_all(&s.expectation(), &observed, &Thresholds::default());
    let card = check(&results, CheckId::Cardinality);
    assert!(!card.passed);
    assert_eq!((card.expected, card.found), (1000, 1500));
    assert_eq!(
        card.problems,
        ["agent_step_duration_ms_count has 1500 series, over the budget of 1000"]
    );
}

#[test]
fn nothing_in_the_backends_fails_every_telemetry_check() {
    let s = Scenario::clean("wf");
    let mut observed = s.observed();
    observed.traces.insert(s.trace_id(), None);
    observed.success_counters.clear();
    observed.fail_counters.clear();
    observed.histogram_counts = Vec::<Sample>::new();
    observed.exemplars.clear();
    observed.logs.clear();
    observed.log_selections.clear();
    let results = run_all(&s.expectation(), &observed, &Thresholds::default());
    assert_eq!(
        failing(&results),
        [
            CheckId::SpanCoverage,
            CheckId::NoOrphans,
            CheckId::CounterParity,
            CheckId::Exemplars,
            CheckId::LogCorrelation,
        ]
    );
    assert_eq!(check(&results, CheckId::SpanCoverage).missing.len(), 4);
    assert_eq!(check(&results, CheckId::CounterParity).found, 0);
}

#[test]
fn counts_read_as_whole_numbers_and_never_minus_zero() {
    use obsctl::checks::collect::count;
    assert_eq!(count(-0.0), "0");
    assert_eq!(count(8.0), "8");
    assert_eq!(count(2.5), "2.5");
}

#[test]
fn a_short_counter_is_reported_without_blaming_double_counting() {
    let s = Scenario::clean("wf");
    let mut observed = s.observed();
    observed.success_counters[0].value = -0.0;
    let results = run_all(&s.expectation(), &observed, &Thresholds::default());
    let parity = check(&results, CheckId::CounterParity);
    assert_eq!(
        parity.summary,
        "1 series short of the records (compared with 1 run)"
    );
    assert_eq!(
        parity.missing,
        ["agent_step_success_total clippy/verify: expected 1, found 0"]
    );
    let exemplars = {
        let mut observed = s.observed();
        observed.exemplars.clear();
        run_all(&s.expectation(), &observed, &Thresholds::default())
    };
    assert_eq!(
        check(&exemplars, CheckId::Exemplars).summary,
        "no exemplars on agent_step_duration_ms for run wf"
    );
}

/// A run left unsampled by `--sampler-ratio` has no spans, no root span and no exemplars by
/// design: the span checks judge the sampled runs only and say how many were not sampled, while
/// counters, the histogram and the logs are still checked in full.
#[test]
fn an_unsampled_run_is_left_out_of_span_checks_and_counted() {
    let sampled = Scenario::clean("wf-sampled");
    let mut unsampled = Scenario::clean("wf-unsampled");
    unsampled.record.sampled = Some(false);
    // A trace of its own, as every run has (the scenario's trace id is fixed).
    let own = TraceId::random();
    unsampled.record.trace_id = own;
    for node in unsampled.record.status.nodes.values_mut() {
        if let Some(t) = &mut node.telemetry {
            t.trace_id = own;
        }
    }
    let all = [sampled.record.clone(), unsampled.record.clone()];
    let expectation = Expectation::new(all.to_vec(), &all);
    assert_eq!(
        expectation.unsampled_runs.iter().collect::<Vec<_>>(),
        ["wf-unsampled"]
    );
    assert!(!expectation.trace_ids().contains(&unsampled.trace_id()));
    // Only the sampled run's spans reached the trace backend.
    let observed = sampled.observed();
    let results = run_all(&expectation, &observed, &Thresholds::default());
    let coverage = check(&results, CheckId::SpanCoverage);
    assert!(coverage.passed, "{}", coverage.summary);
    assert_eq!((coverage.expected, coverage.found), (4, 4));
    assert!(
        coverage
            .summary
            .contains("1 run(s) not sampled (4 step attempts without spans by design)"),
        "{}",
        coverage.summary
    );
    assert!(check(&results, CheckId::NoOrphans).passed);

    // Nothing sampled: nothing to judge spans by, which fails rather than passes silently.
    let alone = [unsampled.record.clone()];
    let expectation = Expectation::new(alone.to_vec(), &alone);
    let results = run_all(&expectation, &unsampled.observed(), &Thresholds::default());
    let coverage = check(&results, CheckId::SpanCoverage);
    assert!(!coverage.passed);
    assert!(
        coverage.summary.starts_with("no sampled run"),
        "{}",
        coverage.summary
    );
}

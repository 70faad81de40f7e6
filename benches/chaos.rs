//! `cargo bench --bench chaos`: `obsctl chaos all` on the embedded runtime with the default
//! 10 s outage, then bursts of 50 and 500 steps. Prints the total time, each outage mode's step
//! time during the fault against the same run's steps outside it (the ratio), and the ingest lag
//! after each burst, next to the targets. A smoke pass (short outage, small burst) runs
//! under `cargo test --all-targets`, where no `--bench` flag is given.

use serde_json::Value;

#[path = "../tests/common/mod.rs"]
mod common;

use common::chaos::{measure, scenario};

/// `obsctl chaos ARGS`, which must pass.
fn chaos(args: &[&str]) -> Value {
    let (code, report) = common::chaos::run(args, &[]);
    assert_eq!(code, 0, "chaos failed: {report:#}");
    report
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (outage, small, large) = if full {
        ("10s", "50", "500")
    } else {
        ("2s", "10", "20")
    };
    let all = chaos(&["all", "--outage", outage, "--steps", small]);
    let total_s = all["elapsed_ms"].as_f64().unwrap() / 1000.0;
    let large_burst = chaos(&["burst", "--steps", large]);

    println!("\nobsctl chaos, embedded runtime (outage {outage})");
    println!(
        "{:<40} {:>12} {:>12} {:>10}",
        "figure", "measured", "target", "ratio"
    );
    println!(
        "{:<40} {:>10.1} s {:>10} s {:>10.2}",
        "chaos all, total",
        total_s,
        120,
        total_s / 120.0
    );
    for s in all["scenarios"].as_array().unwrap() {
        println!(
            "{:<40} {:>10.1} s",
            format!("  {}", s["scenario"].as_str().unwrap()),
            s["elapsed_ms"].as_f64().unwrap() / 1000.0
        );
    }
    let budget_ms = 1000.0;
    for mode in ["stop", "kill", "pause", "partition"] {
        let s = scenario(&all, &format!("collector-outage/{mode}"));
        let during = measure(s, "step_ms_during_outage");
        let otherwise = measure(s, "step_ms_otherwise");
        println!(
            "{:<40} {:>9.0} ms {:>9.0} ms {:>10.2}",
            format!("step during {mode} (vs {otherwise:.0} ms)"),
            during,
            otherwise + budget_ms,
            measure(s, "step_time_ratio")
        );
        println!(
            "{:<40} {:>9.0} ms {:>9.0} ms {:>10.2}",
            format!("  worst added delay ({mode})"),
            measure(s, "worst_added_delay_ms"),
            budget_ms,
            measure(s, "worst_added_delay_ms") / budget_ms
        );
    }
    for (label, report) in [(small, &all), (large, &large_burst)] {
        let s = scenario(report, "burst");
        let lag = measure(s, "ingest_lag_ms");
        println!(
            "{:<40} {:>9.0} ms {:>9} ms {:>10.2}",
            format!("ingest lag after {label}-step burst"),
            lag,
            2000,
            lag / 2000.0
        );
        println!(
            "{:<40} {:>9.2} ms",
            format!("  step overhead ({label} steps)"),
            measure(s, "run_ms_per_step")
        );
        println!(
            "{:<40} {:>8.0} B {:>9.1} ms",
            format!("  one scrape ({label} steps)"),
            measure(s, "scrape_bytes"),
            measure(s, "scrape_ms")
        );
    }
}

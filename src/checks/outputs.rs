//! Workflow outputs: `prHtmlUrl`, `actionsRunUrl` and `previewUrl` (seed 000, subtask 5) are in
//! `status.outputs.parameters` and are absolute http(s) URLs a person can click. A run that did
//! not succeed may lack them (its deploy step may not have run); a malformed one always fails.

use std::collections::BTreeSet;

use super::expect::Expectation;
use super::{CheckId, CheckResult};
use crate::workflow::record::Phase;

pub const PR_HTML_URL: &str = "prHtmlUrl";
pub const ACTIONS_RUN_URL: &str = "actionsRunUrl";
pub const PREVIEW_URL: &str = "previewUrl";
/// The link outputs the check knows; a run is held to those its workflow declares.
pub const LINK_OUTPUTS: [&str; 3] = [PR_HTML_URL, ACTIONS_RUN_URL, PREVIEW_URL];

/// Why `value` is not a clickable URL, or `None` when it is one.
pub fn url_fault(value: &str) -> Option<String> {
    if value.trim() != value || value.is_empty() {
        return Some("is empty or has surrounding whitespace".into());
    }
    match reqwest::Url::parse(value) {
        Err(e) => Some(format!("is not a URL ({e})")),
        Ok(url) if !matches!(url.scheme(), "http" | "https") => Some(format!(
            "has scheme \"{}\", expected http or https",
            url.scheme()
        )),
        Ok(url) if url.host_str().is_none_or(str::is_empty) => Some("has no host".into()),
        Ok(_) => None,
    }
}

pub fn workflow_outputs(expectation: &Expectation) -> CheckResult {
    let declared = |name: &str| {
        expectation
            .declared_links
            .get(name)
            .map_or(0, BTreeSet::len)
    };
    let expected: usize = expectation.runs.iter().map(|r| declared(&r.name)).sum();
    let mut result = CheckResult::new(CheckId::WorkflowOutputs, expected as u64, 0);
    if expected == 0 {
        result.set_not_applicable();
        result.summary = "not applicable: the workflows declare no link outputs".to_string();
        return result;
    }
    let mut failing = false;
    for run in &expectation.runs {
        let succeeded = run.status.phase == Phase::Succeeded;
        let Some(names) = expectation.declared_links.get(&run.name) else {
            continue;
        };
        for name in names {
            match run.output(name) {
                None => {
                    let item = format!("run {}: output {name} missing", run.name);
                    if succeeded {
                        failing = true;
                        result.missing.push(item);
                    } else {
                        result.problems.push(format!(
                            "{item} (run {}, not required)",
                            run.status.phase.as_str()
                        ));
                    }
                }
                Some(value) => match url_fault(value) {
                    None => result.found += 1,
                    Some(fault) => {
                        failing = true;
                        result.missing.push(format!(
                            "run {}: output {name} \"{value}\" {fault}",
                            run.name
                        ));
                    }
                },
            }
        }
    }
    result.set_passed(!failing);
    result.summary = format!(
        "{} of {expected} declared link outputs present and well-formed",
        result.found
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_absolute_http() {
        assert_eq!(url_fault("https://github.com/acme/widgets/pull/42"), None);
        assert!(url_fault("").is_some());
        assert!(url_fault("github.com/acme").is_some());
        assert!(url_fault("ftp://x/y").is_some());
        assert!(url_fault(" https://x").is_some());
        assert!(url_fault("https://").is_some());
    }
}

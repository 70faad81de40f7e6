//! The step's identity: agent, step and correlation values from flags, then the environment
//! (with Argo's own variables as fallbacks). Span attributes and metric labels derive from it.

use crate::conventions::{attr, env, metric};
use crate::otlp::attrs;
use crate::otlp::proto::common::v1::KeyValue;

/// `agent` when neither `--agent` nor `AGENT` says.
pub const UNKNOWN_AGENT: &str = "unknown";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepContext {
    /// Correlation values keyed by span attribute name, in `attr::REQUIRED` order, then the
    /// optional ones that are known.
    values: Vec<(&'static str, String)>,
    /// `--attr` pairs whose key is not a correlation attribute.
    extra: Vec<(String, String)>,
}

impl StepContext {
    /// Flags win over the environment; `--attr repo=x` sets a correlation value like `REPO=x`.
    /// The step name falls back to the command's file name, so a span is always named.
    pub fn resolve(
        agent: Option<&str>,
        step: Option<&str>,
        flag_attrs: &[(String, String)],
        command_name: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.is_empty());
        let flag = |key: &str| {
            flag_attrs
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let pick = |key: &'static str, var: &str, fallback: Option<&str>| {
            flag(key)
                .or_else(|| get(var))
                .or_else(|| fallback.and_then(get))
        };
        let agent = agent
            .map(str::to_string)
            .or_else(|| pick(attr::AGENT, env::AGENT, None))
            .unwrap_or_else(|| UNKNOWN_AGENT.to_string());
        let step = step
            .map(str::to_string)
            .or_else(|| pick(attr::STEP_NAME, env::STEP, None))
            .unwrap_or_else(|| command_name.to_string());
        let mut values = vec![
            (
                attr::REPO,
                pick(attr::REPO, env::REPO, None).unwrap_or_default(),
            ),
            (
                attr::PR_NUMBER,
                pick(attr::PR_NUMBER, env::PR_NUMBER, None).unwrap_or_default(),
            ),
            (
                attr::REF,
                pick(attr::REF, env::REF, None).unwrap_or_default(),
            ),
            (
                attr::TASK_ID,
                pick(attr::TASK_ID, env::TASK_ID, None).unwrap_or_default(),
            ),
            (attr::AGENT, agent),
            (
                attr::WORKFLOW_NAME,
                pick(
                    attr::WORKFLOW_NAME,
                    env::WORKFLOW_NAME,
                    Some(env::ARGO_WORKFLOW_NAME),
                )
                .unwrap_or_default(),
            ),
            (
                attr::NODE_ID,
                pick(attr::NODE_ID, env::NODE_ID, Some(env::ARGO_NODE_ID)).unwrap_or_default(),
            ),
            (attr::STEP_NAME, step),
        ];
        for (key, var) in [
            (attr::COMMIT_SHA, env::COMMIT_SHA),
            (attr::NAMESPACE, env::NAMESPACE),
        ] {
            if let Some(v) = pick(key, var, None) {
                values.push((key, v));
            }
        }
        let known: Vec<&str> = values.iter().map(|(k, _)| *k).collect();
        let extra = flag_attrs
            .iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .cloned()
            .collect();
        Self { values, extra }
    }

    /// The value of a correlation attribute (`attr::*`), empty when unknown.
    pub fn get(&self, key: &str) -> &str {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("", |(_, v)| v.as_str())
    }

    pub fn agent(&self) -> &str {
        self.get(attr::AGENT)
    }

    pub fn step(&self) -> &str {
        self.get(attr::STEP_NAME)
    }

    pub fn span_name(&self) -> String {
        format!("{}/{}", self.agent(), self.step())
    }

    /// The correlation attributes, then the extra `--attr` pairs; `map` redacts values.
    pub fn span_attributes(&self, map: impl Fn(&str) -> String) -> Vec<KeyValue> {
        self.values
            .iter()
            .map(|(k, v)| attrs::string(k, map(v)))
            .chain(self.extra.iter().map(|(k, v)| attrs::string(k, map(v))))
            .collect()
    }

    /// The correlation attributes a log record carries so logs filter like spans do.
    pub fn log_attributes(&self, map: impl Fn(&str) -> String) -> Vec<KeyValue> {
        self.values
            .iter()
            .map(|(k, v)| attrs::string(k, map(v)))
            .collect()
    }

    /// Metric labels in the order `keys` lists them; `outcome` fills `metric::OUTCOME`.
    pub fn labels(
        &self,
        keys: &[&str],
        outcome: &str,
        map: impl Fn(&str) -> String,
    ) -> Vec<KeyValue> {
        keys.iter()
            .map(|k| {
                if *k == metric::OUTCOME {
                    attrs::string(k, outcome)
                } else {
                    attrs::string(k, map(self.get(k)))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn flags_win_over_env_and_argo_variables_are_fallbacks() {
        let ctx = StepContext::resolve(
            Some("clippy"),
            None,
            &[
                ("repo".into(), "org/flag".into()),
                ("team".into(), "a".into()),
            ],
            "true",
            lookup(&[
                (env::AGENT, "ignored"),
                (env::STEP, "verify"),
                (env::REPO, "org/env"),
                (env::ARGO_WORKFLOW_NAME, "wf-1"),
                (env::ARGO_NODE_ID, "wf-1-123"),
                (env::NODE_ID, "node-explicit"),
                (env::COMMIT_SHA, "abc"),
            ]),
        );
        assert_eq!(ctx.span_name(), "clippy/verify");
        assert_eq!(ctx.get(attr::REPO), "org/flag");
        assert_eq!(ctx.get(attr::WORKFLOW_NAME), "wf-1");
        assert_eq!(ctx.get(attr::NODE_ID), "node-explicit");
        let keys: Vec<String> = ctx
            .span_attributes(str::to_string)
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        let mut expected: Vec<&str> = attr::REQUIRED.to_vec();
        expected.extend([attr::COMMIT_SHA, "team"]);
        assert_eq!(keys, expected);
    }

    #[test]
    fn defaults_name_the_span_after_the_command() {
        let ctx = StepContext::resolve(None, None, &[], "make", lookup(&[]));
        assert_eq!(ctx.span_name(), "unknown/make");
        let labels = ctx.labels(&metric::DURATION_LABELS, "success", str::to_string);
        assert_eq!(labels.len(), 7);
        assert_eq!(attrs::get(&labels, metric::OUTCOME).unwrap(), "success");
        assert_eq!(attrs::get(&labels, attr::REPO).unwrap(), "");
    }
}

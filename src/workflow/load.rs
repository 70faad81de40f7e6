//! Reading a Workflow file and refusing, before anything runs, what `obsctl run` cannot run
//! faithfully: malformed YAML, fields outside the subset, unknown templates, dependency cycles,
//! missing parameters. Every error names the file, and the line and column of the node it is
//! about as the YAML parser marked it (see `position`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

mod defaults;
mod position;

use self::position::{YamlPath, locate};
use super::expr;
use super::expression::{self, ExpressionError};
use super::spec::{EXIT_HOOK, Hooks, Parameter, Step, Template, TemplateKind, Workflow};
use super::vars;

/// Why a workflow file was refused.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", location(path, *line, *column))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
}

fn location(path: &Path, line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("{}:{l}:{c}", path.display()),
        (Some(l), None) => format!("{}:{l}", path.display()),
        _ => path.display().to_string(),
    }
}

/// Fields Argo has that this executor deliberately leaves out; naming them makes the refusal
/// say "not supported" rather than suggest a typo.
const UNSUPPORTED: &[&str] = &[
    "artifacts",
    "resource",
    "http",
    "plugin",
    "data",
    "containerSet",
    "templateRef",
    "inline",
    "volumes",
    "volumeMounts",
    "sidecars",
    "initContainers",
    "daemon",
    "synchronization",
    "podSpecPatch",
    "workflowTemplateRef",
    "expression",
    "jsonPath",
    "supplied",
    "configMapKeyRef",
    "envFrom",
    "volumeClaimTemplates",
    "artifactRepositoryRef",
    "archiveLocation",
];

/// A workflow accepted for running, with its parameters resolved.
#[derive(Debug, Clone)]
pub struct LoadedWorkflow {
    pub path: PathBuf,
    pub workflow: Workflow,
    /// `spec.arguments.parameters` after `-p` overrides, in declaration order.
    pub parameters: Vec<(String, String)>,
    /// The Kubernetes-only fields the file sets (each named once, sorted): accepted, ignored.
    pub kubernetes_only: Vec<&'static str>,
    /// The templates with `memoize`: accepted, but nothing is cached, so they always run.
    pub memoized: Vec<String>,
}

struct Checker<'a> {
    path: &'a Path,
    source: &'a str,
}

impl Checker<'_> {
    /// An error at the node `node` of the document, as the YAML parser marked it.
    fn at(&self, node: &YamlPath, message: String) -> LoadError {
        let found = locate(self.source, node);
        LoadError::Invalid {
            path: self.path.to_path_buf(),
            line: found.map(|f| f.0),
            column: found.map(|f| f.1),
            message,
        }
    }

    /// An error at `needle`, found at byte `offset` of the string `value` that the node `node`
    /// holds: the same occurrence of `needle` in the source, counted from where the node starts
    /// (a block scalar's text differs from its source only in indentation and line breaks).
    fn at_text(
        &self,
        node: &YamlPath,
        value: &str,
        offset: usize,
        needle: &str,
        message: String,
    ) -> LoadError {
        let nth = value[..offset.min(value.len())].matches(needle).count();
        let found = locate(self.source, node).and_then(|(line, column)| {
            let start = self
                .source
                .split_inclusive('\n')
                .take(line - 1)
                .map(str::len)
                .sum::<usize>()
                + column
                - 1;
            let at = self.source.get(start..)?.match_indices(needle).nth(nth)?.0 + start;
            let before = &self.source[..at];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            Some((line, column))
        });
        match found {
            Some((line, column)) => LoadError::Invalid {
                path: self.path.to_path_buf(),
                line: Some(line),
                column: Some(column),
                message,
            },
            None => self.at(node, message),
        }
    }

    fn plain(&self, message: String) -> LoadError {
        LoadError::Invalid {
            path: self.path.to_path_buf(),
            line: None,
            column: None,
            message,
        }
    }
}

/// Reads, parses and checks `path`; `overrides` are the `-p NAME=VALUE` pairs.
pub fn load(path: &Path, overrides: &[(String, String)]) -> Result<LoadedWorkflow, LoadError> {
    let source = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &source, overrides)
}

/// [`load`] over text already read.
pub fn parse(
    path: &Path,
    source: &str,
    overrides: &[(String, String)],
) -> Result<LoadedWorkflow, LoadError> {
    let c = Checker { path, source };
    let mut workflow: Workflow = serde_norway::from_str(source).map_err(|e| {
        let (line, column) = e
            .location()
            .map_or((None, None), |l| (Some(l.line()), Some(l.column())));
        LoadError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message: explain_serde(&e.to_string()),
        }
    })?;
    defaults::apply(&mut workflow).map_err(|m| c.at(&spec().key("templateDefaults"), m))?;
    check(&c, &workflow)?;
    check_expressions(&c, &workflow)?;
    let parameters = resolve_parameters(&c, &workflow, overrides)?;
    let mut kubernetes_only = workflow.spec.kubernetes_only();
    for t in &workflow.spec.templates {
        kubernetes_only.extend(t.kubernetes_only());
    }
    kubernetes_only.sort_unstable();
    kubernetes_only.dedup();
    let memoized = workflow
        .spec
        .templates
        .iter()
        .filter(|t| t.memoize.is_some())
        .map(|t| t.name.clone())
        .collect();
    Ok(LoadedWorkflow {
        path: path.to_path_buf(),
        workflow,
        parameters,
        kubernetes_only,
        memoized,
    })
}

/// Every expression, in a `{{=...}}` tag anywhere in the spec or in an `expression` field,
/// parses and calls only functions obsctl provides. A function it lacks is refused at the line
/// and column of its own name.
fn check_expressions(c: &Checker, wf: &Workflow) -> Result<(), LoadError> {
    let json = serde_json::to_value(&wf.spec).expect("workflows always serialize");
    let mut strings = Vec::new();
    collect_strings(&json, spec(), None, &mut strings);
    for (path, key, value) in strings {
        let mut found: Vec<(usize, &str)> = Vec::new();
        if key == Some("expression") {
            found.push((0, value));
        }
        let mut from = 0;
        while let Some(start) = value[from..].find("{{=").map(|i| from + i) {
            let body = start + 3;
            let Some(len) = value[body..].find("}}") else {
                break;
            };
            found.push((body, &value[body..body + len]));
            from = body + len;
        }
        for (at, text) in found {
            let Err(e) = expression::check(text) else {
                continue;
            };
            let message = format!("{path}: {e}");
            return Err(match &e {
                ExpressionError::UnknownFunction { name, offset, .. } => {
                    c.at_text(&path, value, at + offset, name, message)
                }
                _ => c.at(&path, message),
            });
        }
    }
    Ok(())
}

/// Every string under `value`, with its path and the key it sits under.
fn collect_strings<'v>(
    value: &'v serde_json::Value,
    at: YamlPath,
    key: Option<&'v str>,
    out: &mut Vec<(YamlPath, Option<&'v str>, &'v str)>,
) {
    match value {
        serde_json::Value::String(s) => out.push((at, key, s)),
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_strings(v, at.index(i), key, out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                collect_strings(v, at.key(k), Some(k), out);
            }
        }
        _ => {}
    }
}

/// Turns serde's "unknown field" wording into a refusal that names the field as unsupported,
/// and drops the location suffix that the error already carries separately.
fn explain_serde(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    if let Some(start) = message.find("unknown field `") {
        let rest = &message[start + "unknown field `".len()..];
        if let Some(end) = rest.find('`') {
            let field = &rest[..end];
            let at = message[..start].trim_end_matches(": ");
            let at = if at.is_empty() { "top level" } else { at };
            let expected = rest[end + 1..].trim_start_matches(", ");
            if UNSUPPORTED.contains(&field) {
                return format!(
                    "`{field}` (in {at}) is outside the subset obsctl run supports; {expected}"
                );
            }
            let hint = nearest(field, expected)
                .map(|known| format!("did you mean `{known}`? "))
                .unwrap_or_default();
            return format!(
                "`{field}` (in {at}) is not a field Argo or obsctl knows here; {hint}{expected}"
            );
        }
    }
    message.to_string()
}

/// The field in serde's "expected one of `a`, `b`" list nearest to the unknown `field`: the
/// same but for case, else at most a third of its letters away.
fn nearest<'a>(field: &str, expected: &'a str) -> Option<&'a str> {
    let known = expected.split('`').skip(1).step_by(2);
    let lower = field.to_lowercase();
    known
        .map(|k| (edit_distance(&lower, &k.to_lowercase()), k))
        .filter(|(d, _)| *d <= (field.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance, by characters (also names the nearest valid key when a `stack/` config
/// is checked against its pinned release, tests/common/upstream.rs).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn root() -> YamlPath {
    YamlPath::root()
}

fn spec() -> YamlPath {
    root().key("spec")
}

fn check(c: &Checker, wf: &Workflow) -> Result<(), LoadError> {
    if wf.api_version != "argoproj.io/v1alpha1" {
        return Err(c.at(
            &root().key("apiVersion"),
            format!(
                "apiVersion must be argoproj.io/v1alpha1, not {:?}",
                wf.api_version
            ),
        ));
    }
    if wf.kind != "Workflow" {
        return Err(c.at(
            &root().key("kind"),
            format!("kind must be Workflow, not {:?}", wf.kind),
        ));
    }
    if wf.metadata.name.is_none() && wf.metadata.generate_name.is_none() {
        return Err(c.at(
            &root().key("metadata"),
            "metadata needs `name` or `generateName`".into(),
        ));
    }
    let mut names = HashSet::new();
    for (i, t) in wf.spec.templates.iter().enumerate() {
        if !names.insert(t.name.as_str()) {
            return Err(c.at(
                &spec().key("templates").index(i).key("name"),
                format!(
                    "spec.templates[{i}]: template name `{}` is used twice",
                    t.name
                ),
            ));
        }
        check_template(c, wf, i, t)?;
    }
    let known = |name: &str, field: &str| -> Result<(), LoadError> {
        if wf.template(name).is_none() {
            return Err(c.at(
                &spec().key(field),
                format!("spec.{field}: unknown template `{name}`"),
            ));
        }
        Ok(())
    };
    known(&wf.spec.entrypoint, "entrypoint")?;
    if let Some(exit) = &wf.spec.on_exit {
        known(exit, "onExit")?;
    }
    check_hooks(c, wf, "spec", &spec(), &wf.spec.hooks)?;
    if let Some(secs) = &wf.spec.active_deadline_seconds {
        vars::parse_seconds(secs.as_str()).ok_or_else(|| {
            c.at(
                &spec().key("activeDeadlineSeconds"),
                format!(
                    "spec.activeDeadlineSeconds: expected a whole number of seconds, got {:?}",
                    secs.as_str()
                ),
            )
        })?;
    }
    check_variables(c, wf)
}

fn check_template(c: &Checker, wf: &Workflow, i: usize, t: &Template) -> Result<(), LoadError> {
    let at = format!("spec.templates[{i}] ({})", t.name);
    let tp = spec().key("templates").index(i);
    let kind = t.kind().ok_or_else(|| {
        c.at(
            &tp.key("name"),
            format!(
                "{at}: a template needs exactly one of container, script, steps, dag or suspend"
            ),
        )
    })?;
    if let Some(suspend) = &t.suspend {
        check_suspend(c, &at, &tp, suspend)?;
    }
    for (j, p) in t.outputs.parameters.iter().enumerate() {
        let field = format!("{at}.outputs.parameters[{j}] ({})", p.name);
        let op = tp.key("outputs").key("parameters").index(j);
        match (&p.value_from, kind) {
            (Some(vf), TemplateKind::Container | TemplateKind::Script) => {
                if vf.expression.is_some() {
                    return Err(c.at(
                        &op.key("valueFrom").key("expression"),
                        format!(
                            "{field}: valueFrom.expression is for steps and dag templates; a pod \
                             template's output comes from valueFrom.path"
                        ),
                    ));
                }
                let path = vf.path.as_deref().ok_or_else(|| {
                    c.at(
                        &op.key("valueFrom"),
                        format!("{field}: a pod template's output needs valueFrom.path"),
                    )
                })?;
                if !path.starts_with('/') {
                    return Err(c.at(
                        &op.key("valueFrom").key("path"),
                        format!("{field}: valueFrom.path must be absolute, got {path:?}"),
                    ));
                }
                if !path.starts_with("/tmp/") {
                    return Err(c.at(
                        &op.key("valueFrom").key("path"),
                        format!(
                            "{field}: valueFrom.path {path:?} is outside /tmp; the process runner \
                             gives each step a private /tmp only, so other paths would be shared \
                             between parallel steps"
                        ),
                    ));
                }
            }
            (Some(_), TemplateKind::Suspend) => {
                return Err(c.at(
                    &op.key("valueFrom"),
                    format!(
                        "{field}: a suspend template's outputs (valueFrom.supplied) are outside \
                         the subset obsctl run supports"
                    ),
                ));
            }
            (Some(vf), TemplateKind::Steps | TemplateKind::Dag) => {
                if vf.parameter.is_some() == vf.expression.is_some() {
                    return Err(c.at(
                        &op.key("valueFrom"),
                        format!(
                            "{field}: a steps or dag template's output needs one of \
                             valueFrom.parameter or valueFrom.expression"
                        ),
                    ));
                }
            }
            (None, _) if p.value.is_none() => {
                return Err(c.at(
                    &op.key("name"),
                    format!("{field}: an output parameter needs `value` or `valueFrom`"),
                ));
            }
            (None, _) => {}
        }
    }
    if (t.timeout.is_some() || t.active_deadline_seconds.is_some()) && !t.is_pod() {
        let field = if t.timeout.is_some() {
            "timeout"
        } else {
            "activeDeadlineSeconds"
        };
        return Err(c.at(
            &tp.key(field),
            format!("{at}: timeout and activeDeadlineSeconds apply to container and script templates only"),
        ));
    }
    if let Some(secs) = &t.active_deadline_seconds
        && !secs.as_str().contains("{{")
        && vars::parse_seconds(secs.as_str()).is_none()
    {
        return Err(c.at(
            &tp.key("activeDeadlineSeconds"),
            format!(
                "{at}.activeDeadlineSeconds: expected whole seconds, got {:?}",
                secs.as_str()
            ),
        ));
    }
    if let Some(timeout) = &t.timeout
        && !timeout.as_str().contains("{{")
        && vars::parse_duration(timeout.as_str()).is_none()
    {
        return Err(c.at(
            &tp.key("timeout"),
            format!(
                "{at}.timeout: expected a duration such as 30s or 2m, got {:?}",
                timeout.as_str()
            ),
        ));
    }
    if let Some(rs) = &t.retry_strategy {
        let rp = tp.key("retryStrategy");
        if let Some(limit) = &rs.limit
            && !limit.as_str().contains("{{")
            && limit.as_str().parse::<u32>().is_err()
        {
            return Err(c.at(
                &rp.key("limit"),
                format!(
                    "{at}.retryStrategy.limit: expected a whole number, got {:?}",
                    limit.as_str()
                ),
            ));
        }
        if let Some(b) = &rs.backoff {
            for (name, v) in [
                ("duration", &b.duration),
                ("cap", &b.cap),
                ("maxDuration", &b.max_duration),
            ] {
                if let Some(v) = v
                    && vars::parse_duration(v.as_str()).is_none()
                {
                    return Err(c.at(
                        &rp.key("backoff").key(name),
                        format!(
                            "{at}.retryStrategy.backoff.{name}: expected a duration, got {:?}",
                            v.as_str()
                        ),
                    ));
                }
            }
            if let Some(f) = &b.factor
                && f.as_str().parse::<f64>().is_err()
            {
                return Err(c.at(
                    &rp.key("backoff").key("factor"),
                    format!(
                        "{at}.retryStrategy.backoff.factor: expected a number, got {:?}",
                        f.as_str()
                    ),
                ));
            }
        }
    }
    if let Some(groups) = &t.steps {
        for (g, group) in groups.iter().enumerate() {
            for (s, step) in group.iter().enumerate() {
                check_call(
                    c,
                    wf,
                    &format!("{at}.steps[{g}][{s}] ({})", step.name),
                    &tp.key("steps").index(g).index(s),
                    step,
                )?;
            }
        }
    }
    if let Some(dag) = &t.dag {
        let tasks: HashMap<&str, usize> = dag
            .tasks
            .iter()
            .enumerate()
            .map(|(k, task)| (task.name.as_str(), k))
            .collect();
        let tasks_path = tp.key("dag").key("tasks");
        if tasks.len() != dag.tasks.len() {
            let clash = (0..dag.tasks.len())
                .find(|&k| tasks[dag.tasks[k].name.as_str()] != k)
                .unwrap_or(0);
            return Err(c.at(
                &tasks_path.index(clash).key("name"),
                format!("{at}.dag: task names must be unique"),
            ));
        }
        let mut edges: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (k, task) in dag.tasks.iter().enumerate() {
            let field = format!("{at}.dag.tasks[{k}] ({})", task.name);
            let kp = tasks_path.index(k);
            check_call(c, wf, &field, &kp, &Step::from(task))?;
            if task.depends.is_some() && !task.dependencies.is_empty() {
                return Err(c.at(
                    &kp.key("depends"),
                    format!("{field}: use either `depends` or `dependencies`, not both"),
                ));
            }
            let deps = match &task.depends {
                Some(depends) => depends.parsed().tasks(),
                None => task.dependencies.clone(),
            };
            for dep in &deps {
                if !tasks.contains_key(dep.as_str()) {
                    let listed = if task.depends.is_some() {
                        "depends"
                    } else {
                        "dependencies"
                    };
                    return Err(c.at(
                        &kp.key(listed),
                        format!("{field}: depends on unknown task `{dep}`"),
                    ));
                }
            }
            edges.insert(task.name.as_str(), deps);
        }
        if let Some(cycle) = find_cycle(&edges) {
            let first = tasks[cycle[0].as_str()];
            return Err(c.at(
                &tasks_path.index(first).key("name"),
                format!("{at}.dag: dependency cycle {}", cycle.join(" -> ")),
            ));
        }
        // A templated target is resolved, and its names checked, when the DAG runs.
        if let Some(target) = dag.target.as_ref().filter(|t| !t.contains("{{")) {
            for name in target.split_whitespace() {
                if !tasks.contains_key(name) {
                    return Err(c.at(
                        &tp.key("dag").key("target"),
                        format!("{at}.dag.target: unknown task `{name}`"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A suspend template needs a `duration`: without one it waits for `argo resume`, which a local
/// run cannot receive.
fn check_suspend(
    c: &Checker,
    at: &str,
    tp: &YamlPath,
    suspend: &super::spec::Suspend,
) -> Result<(), LoadError> {
    let Some(duration) = &suspend.duration else {
        return Err(c.at(
            &tp.key("suspend"),
            format!(
                "{at}.suspend: a suspend without a duration waits for `argo resume`, which \
                 obsctl run has no counterpart for; give it a `duration` such as \"30\" or \"2m\""
            ),
        ));
    };
    if !duration.as_str().contains("{{") && vars::parse_duration(duration.as_str()).is_none() {
        return Err(c.at(
            &tp.key("suspend").key("duration"),
            format!(
                "{at}.suspend.duration: expected seconds or a duration such as 2m, got {:?}",
                duration.as_str()
            ),
        ));
    }
    Ok(())
}

impl From<&super::spec::DagTask> for Step {
    fn from(t: &super::spec::DagTask) -> Self {
        Step {
            name: t.name.clone(),
            template: t.template.clone(),
            arguments: t.arguments.clone(),
            when: t.when.clone(),
            with_items: t.with_items.clone(),
            with_param: t.with_param.clone(),
            with_sequence: t.with_sequence.clone(),
            continue_on: t.continue_on.clone(),
            on_exit: t.on_exit.clone(),
            hooks: t.hooks.clone(),
        }
    }
}

/// A step or task calling a template: the template exists, its required inputs are given.
fn check_call(
    c: &Checker,
    wf: &Workflow,
    field: &str,
    sp: &YamlPath,
    step: &Step,
) -> Result<(), LoadError> {
    let Some(tmpl) = wf.template(&step.template) else {
        return Err(c.at(
            &sp.key("template"),
            format!("{field}: unknown template `{}`", step.template),
        ));
    };
    if let Some(exit) = &step.on_exit
        && wf.template(exit).is_none()
    {
        return Err(c.at(
            &sp.key("onExit"),
            format!("{field}.onExit: unknown template `{exit}`"),
        ));
    }
    check_hooks(c, wf, field, sp, &step.hooks)?;
    let loops = [
        step.with_items.is_some(),
        step.with_param.is_some(),
        step.with_sequence.is_some(),
    ];
    if loops.iter().filter(|l| **l).count() > 1 {
        return Err(c.at(
            &sp.key("name"),
            format!("{field}: use only one of withItems, withParam, withSequence"),
        ));
    }
    if let Some(seq) = &step.with_sequence
        && seq.count.is_some()
        && seq.end.is_some()
    {
        return Err(c.at(
            &sp.key("withSequence"),
            format!("{field}.withSequence: use either count or end, not both"),
        ));
    }
    if let Some(when) = &step.when
        && !when.contains("{{")
    {
        expr::eval_when(when).map_err(|e| c.at(&sp.key("when"), format!("{field}.when: {e}")))?;
    }
    for input in &tmpl.inputs.parameters {
        let given = step
            .arguments
            .parameters
            .iter()
            .any(|a| a.name == input.name);
        if !given && input.value.is_none() && input.default.is_none() {
            return Err(c.at(
                &sp.key("template"),
                format!(
                    "{field}: missing parameter `{}` required by template `{}`",
                    input.name, tmpl.name
                ),
            ));
        }
    }
    for (a, arg) in step.arguments.parameters.iter().enumerate() {
        let ap = sp.key("arguments").key("parameters").index(a);
        if arg.value.is_none() && arg.value_from.is_none() {
            return Err(c.at(
                &ap.key("name"),
                format!("{field}.arguments: parameter `{}` has no value", arg.name),
            ));
        }
        if arg.value_from.is_some() {
            return Err(c.at(
                &ap.key("valueFrom"),
                format!("{field}.arguments: `valueFrom` in arguments is outside the subset obsctl run supports"),
            ));
        }
    }
    Ok(())
}

/// Each hook names a template, and every hook but `exit` has the `expression` that fires it.
fn check_hooks(
    c: &Checker,
    wf: &Workflow,
    field: &str,
    at: &YamlPath,
    hooks: &Hooks,
) -> Result<(), LoadError> {
    for (name, hook) in hooks {
        let hp = at.key("hooks").key(name);
        if wf.template(&hook.template).is_none() {
            return Err(c.at(
                &hp.key("template"),
                format!("{field}.hooks.{name}: unknown template `{}`", hook.template),
            ));
        }
        if name != EXIT_HOOK && hook.expression.is_none() {
            return Err(c.at(
                &hp,
                format!(
                    "{field}.hooks.{name}: a hook other than `exit` needs an `expression` that \
                     says when it runs"
                ),
            ));
        }
    }
    Ok(())
}

/// The first cycle found in `edges` (task -> its dependencies), as task names.
fn find_cycle(edges: &BTreeMap<&str, Vec<String>>) -> Option<Vec<String>> {
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, Vec<String>>,
        state: &mut HashMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        state.insert(node, 1);
        stack.push(node);
        for dep in edges.get(node).into_iter().flatten() {
            let Some((dep, _)) = edges.get_key_value(dep.as_str()) else {
                continue;
            };
            match state.get(dep) {
                Some(1) => {
                    let start = stack.iter().position(|n| n == dep).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(dep.to_string());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(cycle) = visit(dep, edges, state, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node, 2);
        None
    }
    let mut state = HashMap::new();
    for node in edges.keys() {
        if !state.contains_key(node)
            && let Some(cycle) = visit(node, edges, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

/// `{{inputs.parameters.X}}` and `{{workflow.parameters.X}}` must name declared parameters.
fn check_variables(c: &Checker, wf: &Workflow) -> Result<(), LoadError> {
    let globals: HashSet<&str> = wf
        .spec
        .arguments
        .parameters
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    for (i, t) in wf.spec.templates.iter().enumerate() {
        let inputs: HashSet<&str> = t
            .inputs
            .parameters
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        let json = serde_json::to_value(t).expect("templates always serialize");
        let text = json.to_string();
        for var in vars::references(&text) {
            let problem = if let Some(name) = var.strip_prefix("inputs.parameters.") {
                (!inputs.contains(name))
                    .then(|| format!("template `{}` declares no input parameter `{name}`", t.name))
            } else if let Some(name) = var.strip_prefix("workflow.parameters.") {
                (!globals.contains(name))
                    .then(|| format!("spec.arguments declares no parameter `{name}`"))
            } else {
                None
            };
            if let Some(problem) = problem {
                let tp = spec().key("templates").index(i);
                let at = find_reference(&json, &var, tp.clone()).unwrap_or(tp);
                return Err(c.at(
                    &at,
                    format!(
                        "spec.templates[{i}] ({}): missing parameter: {{{{{var}}}}}: {problem}",
                        t.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The path of the first string in `value` (a template as JSON, whose keys and indices are the
/// YAML's) that references `var`.
fn find_reference(value: &serde_json::Value, var: &str, at: YamlPath) -> Option<YamlPath> {
    match value {
        serde_json::Value::String(s) => vars::references(s).iter().any(|r| r == var).then_some(at),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| find_reference(v, var, at.index(i))),
        serde_json::Value::Object(map) => map
            .iter()
            .find_map(|(k, v)| find_reference(v, var, at.key(k))),
        _ => None,
    }
}

fn resolve_parameters(
    c: &Checker,
    wf: &Workflow,
    overrides: &[(String, String)],
) -> Result<Vec<(String, String)>, LoadError> {
    let declared: &[Parameter] = &wf.spec.arguments.parameters;
    for (name, _) in overrides {
        if !declared.iter().any(|p| &p.name == name) {
            let names: Vec<&str> = declared.iter().map(|p| p.name.as_str()).collect();
            return Err(c.plain(format!(
                "-p {name}: the workflow declares no parameter `{name}` (declared: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )));
        }
    }
    let mut out = Vec::new();
    for (k, p) in declared.iter().enumerate() {
        let pp = spec().key("arguments").key("parameters").index(k);
        let value = overrides
            .iter()
            .rev()
            .find(|(n, _)| n == &p.name)
            .map(|(_, v)| v.clone())
            .or_else(|| p.value.as_ref().map(|v| v.0.clone()))
            .or_else(|| p.default.as_ref().map(|v| v.0.clone()));
        let Some(value) = value else {
            return Err(c.at(
                &pp.key("name"),
                format!(
                    "spec.arguments.parameters: missing parameter `{}`: give it a value in the file or with -p {}=VALUE",
                    p.name, p.name
                ),
            ));
        };
        if let Some(allowed) = &p.enum_values
            && !allowed.iter().any(|a| a.0 == value)
        {
            let allowed: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
            return Err(c.at(
                &pp.key("enum"),
                format!(
                    "parameter `{}` = {value:?} is not one of its enum values: {}",
                    p.name,
                    allowed.join(", ")
                ),
            ));
        }
        out.push((p.name.clone(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> String {
        parse(Path::new("wf.yaml"), src, &[])
            .unwrap_err()
            .to_string()
    }

    const HEAD: &str =
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: t-\nspec:\n";

    #[test]
    fn unsupported_field_is_named_with_its_location() {
        let src = format!(
            "{HEAD}  entrypoint: a\n  templates:\n  - name: a\n    resource:\n      action: create\n"
        );
        let e = err(&src);
        assert!(e.starts_with("wf.yaml:9:5: `resource`"), "{e}");
        assert!(e.contains("outside the subset"), "{e}");
    }

    #[test]
    fn malformed_yaml_has_line_and_column() {
        let e = err("apiVersion: [\n");
        assert!(e.starts_with("wf.yaml:"), "{e}");
        assert!(e.split(':').nth(1).unwrap().parse::<usize>().is_ok(), "{e}");
    }

    #[test]
    fn unknown_template_cycle_and_missing_parameter_are_refused() {
        let unknown = format!(
            "{HEAD}  entrypoint: a\n  templates:\n  - name: a\n    steps:\n    - - name: s\n        template: nope\n"
        );
        let e = err(&unknown);
        assert!(
            e.contains("unknown template `nope`") && e.starts_with("wf.yaml:11:"),
            "{e}"
        );

        let cycle = format!(
            "{HEAD}  entrypoint: a\n  templates:\n  - name: a\n    dag:\n      tasks:\n      - {{name: x, template: b, depends: y}}\n      - {{name: y, template: b, depends: x}}\n  - name: b\n    container: {{image: busybox, command: [true]}}\n"
        );
        let e = err(&cycle);
        assert!(e.contains("dependency cycle x -> y -> x"), "{e}");

        let missing = format!(
            "{HEAD}  entrypoint: a\n  arguments:\n    parameters:\n    - name: repo\n  templates:\n  - name: a\n    container: {{image: busybox, command: [echo, \"{{{{workflow.parameters.repo}}}}\"]}}\n"
        );
        let e = err(&missing);
        assert!(e.contains("missing parameter `repo`"), "{e}");
        let ok = parse(
            Path::new("wf.yaml"),
            &missing,
            &[("repo".into(), "o/r".into())],
        )
        .unwrap();
        assert_eq!(ok.parameters, [("repo".to_string(), "o/r".to_string())]);
    }

    #[test]
    fn expressions_are_accepted_and_unknown_functions_refused_at_their_own_position() {
        let ok = format!(
            "{HEAD}  entrypoint: a\n  templates:\n  - name: a\n    container: {{image: busybox, command: [echo, \"{{{{=sprig.trim(workflow.name) + string(asInt('1'))}}}}\"]}}\n"
        );
        assert!(parse(Path::new("wf.yaml"), &ok, &[]).is_ok());

        // In a quoted flow scalar: the column of `sprig.date2` itself.
        let quoted = format!(
            "{HEAD}  entrypoint: a\n  templates:\n  - name: a\n    container: {{image: busybox, command: [echo, \"x {{{{=sprig.date2('2006', 1)}}}}\"]}}\n"
        );
        let e = err(&quoted);
        assert!(
            e.starts_with("wf.yaml:9:55: spec.templates[0].container.command[1]: "),
            "{e}"
        );
        assert!(
            e.contains("calls `sprig.date2`, which obsctl run does not provide"),
            "{e}"
        );

        // In a block scalar, on its second line, after the same name used as a variable.
        let block = format!(
            "{HEAD}  entrypoint: a\n  templates:\n  - name: a\n    retryStrategy:\n      limit: 2\n      expression: >-\n        lastRetry.status != 'now' &&\n          now() > 1\n    container: {{image: busybox, command: [true]}}\n"
        );
        let e = err(&block);
        assert!(
            e.starts_with("wf.yaml:13:11: spec.templates[0].retryStrategy.expression: "),
            "{e}"
        );
        assert!(e.contains("calls `now`"), "{e}");

        let syntax = format!(
            "{HEAD}  entrypoint: a\n  templates:\n  - name: a\n    steps: [[{{name: s, template: b}}]]\n    outputs:\n      parameters:\n      - name: o\n        valueFrom: {{expression: \"steps.s.outputs.result ==\"}}\n  - {{name: b, container: {{image: busybox, command: [true]}}}}\n"
        );
        let e = err(&syntax);
        assert!(
            e.starts_with(
                "wf.yaml:13:33: spec.templates[0].outputs.parameters[0].valueFrom.expression: "
            ),
            "{e}"
        );
        assert!(e.contains("does not parse"), "{e}");
    }

    #[test]
    fn errors_point_at_the_node_they_are_about_not_the_first_line_with_its_word() {
        let limit = format!(
            "{HEAD}  entrypoint: a\n  templates:\n  - name: a\n    retryStrategy: {{limit: 2}}\n    container: {{image: busybox, command: [true]}}\n  - name: b\n    retryStrategy:\n      limit: many\n    container: {{image: busybox, command: [true]}}\n"
        );
        let e = err(&limit);
        assert!(e.starts_with("wf.yaml:13:14: "), "{e}");
        assert!(
            e.contains("retryStrategy.limit: expected a whole number"),
            "{e}"
        );

        let twice = format!(
            "{HEAD}  entrypoint: a\n  templates:\n  - name: a\n    container: {{image: busybox, command: [true]}}\n  - {{name: a, container: {{image: busybox, command: [true]}}}}\n"
        );
        let e = err(&twice);
        assert!(e.starts_with("wf.yaml:10:12: "), "{e}");
        assert!(e.contains("template name `a` is used twice"), "{e}");

        let undeclared = format!(
            "{HEAD}  entrypoint: a\n  templates:\n  - name: a\n    container:\n      image: busybox\n      command: [echo, x, \"{{{{inputs.parameters.m}}}}\"]\n"
        );
        let e = err(&undeclared);
        assert!(e.starts_with("wf.yaml:11:26: "), "{e}");
        assert!(e.contains("declares no input parameter `m`"), "{e}");
    }

    #[test]
    fn depends_and_retry_policy_are_typed_when_read_with_their_position() {
        let depends = format!(
            "{HEAD}  entrypoint: a\n  templates:\n  - name: a\n    dag:\n      tasks:\n      - {{name: x, template: b}}\n      - {{name: y, template: b, depends: \"x.Bogus\"}}\n  - {{name: b, container: {{image: busybox, command: [true]}}}}\n"
        );
        let e = err(&depends);
        assert!(e.starts_with("wf.yaml:12:41: "), "{e}");
        assert!(e.contains("unknown task result `.Bogus`"), "{e}");

        let policy = format!(
            "{HEAD}  entrypoint: a\n  templates:\n  - name: a\n    retryStrategy: {{retryPolicy: Sometimes}}\n    container: {{image: busybox, command: [true]}}\n"
        );
        let e = err(&policy);
        assert!(e.starts_with("wf.yaml:9:34: "), "{e}");
        assert!(e.contains("unknown variant `Sometimes`"), "{e}");
        assert!(e.contains("OnTransientError"), "{e}");
    }

    #[test]
    fn kubernetes_only_fields_are_accepted_and_named_and_a_typo_gets_a_suggestion() {
        let k8s = format!(
            "{HEAD}  entrypoint: a\n  priority: 3\n  podGC: {{strategy: OnPodSuccess}}\n  nodeSelector: {{disk: ssd}}\n  templates:\n  - name: a\n    tolerations: [{{key: k, operator: Exists}}]\n    container:\n      image: busybox\n      command: [true]\n      securityContext: {{runAsUser: 1000}}\n"
        );
        let loaded = parse(Path::new("wf.yaml"), &k8s, &[]).unwrap();
        assert_eq!(
            loaded.kubernetes_only,
            [
                "nodeSelector",
                "podGC",
                "priority",
                "securityContext",
                "tolerations"
            ]
        );

        let typo = format!(
            "{HEAD}  entrypoint: a\n  nodeselector: {{disk: ssd}}\n  templates:\n  - {{name: a, container: {{image: busybox, command: [true]}}}}\n"
        );
        let e = err(&typo);
        assert!(
            e.starts_with("wf.yaml:7:3: `nodeselector` (in spec) is not a field"),
            "{e}"
        );
        assert!(e.contains("did you mean `nodeSelector`?"), "{e}");

        let far = format!(
            "{HEAD}  entrypoint: a\n  colour: blue\n  templates:\n  - {{name: a, container: {{image: busybox, command: [true]}}}}\n"
        );
        let e = err(&far);
        assert!(e.contains("`colour` (in spec) is not a field"), "{e}");
        assert!(!e.contains("did you mean"), "{e}");

        let unsupported = format!(
            "{HEAD}  entrypoint: a\n  synchronization: {{mutex: {{name: m}}}}\n  templates:\n  - {{name: a, container: {{image: busybox, command: [true]}}}}\n"
        );
        let e = err(&unsupported);
        assert!(
            e.contains("`synchronization` (in spec) is outside the subset"),
            "{e}"
        );
    }

    #[test]
    fn hooks_are_refused_at_their_position_for_a_missing_template_or_expression() {
        let steps = |hook: &str| {
            format!(
                "{HEAD}  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - name: s\n        template: a\n        hooks:\n          {hook}\n  - {{name: a, container: {{image: busybox, command: [true]}}}}\n"
            )
        };
        let e = err(&steps("exit: {template: nope}"));
        assert!(
            e.starts_with(
                "wf.yaml:13:28: spec.templates[0] (main).steps[0][0] (s).hooks.exit: unknown template `nope`"
            ),
            "{e}"
        );
        let e = err(&steps("started: {template: a}"));
        assert!(
            e.starts_with("wf.yaml:13:20: spec.templates[0] (main).steps[0][0] (s).hooks.started: a hook other than `exit` needs an `expression`"),
            "{e}"
        );
        let e = err(&steps(
            "started: {template: a, expression: 'sprig.uuidv4() != \"\"'}",
        ));
        assert!(e.starts_with("wf.yaml:13:47: "), "{e}");
        assert!(e.contains("calls `sprig.uuidv4`"), "{e}");
        let e = err(&format!(
            "{HEAD}  entrypoint: a\n  hooks:\n    exit: {{template: a}}\n    done: {{template: b, expression: 'true'}}\n  templates:\n  - {{name: a, container: {{image: busybox, command: [true]}}}}\n"
        ));
        assert!(
            e.starts_with("wf.yaml:9:22: spec.hooks.done: unknown template `b`"),
            "{e}"
        );
        let e = err(&format!(
            "{HEAD}  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n      - {{name: t, template: a, onExit: gone}}\n  - {{name: a, container: {{image: busybox, command: [true]}}}}\n"
        ));
        assert!(
            e.starts_with("wf.yaml:11:40: spec.templates[0] (main).dag.tasks[0] (t).onExit: unknown template `gone`"),
            "{e}"
        );
    }

    #[test]
    fn template_defaults_merge_under_each_template_keeping_its_kind() {
        let src = format!(
            "{HEAD}  entrypoint: main\n  templateDefaults:\n    timeout: 30s\n    retryStrategy: {{limit: 2}}\n    metadata: {{labels: {{team: a}}}}\n    container: {{image: busybox, env: [{{name: A, value: a}}]}}\n  templates:\n  - name: main\n    steps: [[{{name: s, template: pod}}]]\n  - name: pod\n    metadata: {{labels: {{step: s}}}}\n    container: {{image: alpine, command: [true]}}\n"
        );
        let wf = parse(Path::new("wf.yaml"), &src, &[]).unwrap().workflow;
        let main = wf.template("main").unwrap();
        assert!(main.container.is_none() && main.steps.is_some());
        assert!(
            main.timeout.is_none(),
            "timeout applies to pod templates only"
        );
        assert_eq!(
            main.retry_strategy
                .as_ref()
                .unwrap()
                .limit
                .as_ref()
                .unwrap()
                .as_str(),
            "2"
        );
        let pod = wf.template("pod").unwrap();
        assert_eq!(pod.timeout.as_ref().unwrap().as_str(), "30s");
        let c = pod.container.as_ref().unwrap();
        assert_eq!((c.image.as_str(), c.env.len()), ("alpine", 1));
        assert_eq!(pod.metadata.labels.len(), 2);

        let bad = format!(
            "{HEAD}  entrypoint: a\n  templateDefaults:\n    retryStrategy: {{limt: 2}}\n  templates:\n  - {{name: a, container: {{image: busybox, command: [true]}}}}\n"
        );
        let e = err(&bad);
        assert!(
            e.starts_with("wf.yaml:8:5: spec.templateDefaults, merged into template `a`"),
            "{e}"
        );
        assert!(e.contains("unknown field `limt`"), "{e}");
    }

    #[test]
    fn a_suspend_without_a_duration_is_refused_at_its_position() {
        let src = format!("{HEAD}  entrypoint: a\n  templates:\n  - name: a\n    suspend: {{}}\n");
        let e = err(&src);
        assert!(
            e.starts_with(
                "wf.yaml:9:14: spec.templates[0] (a).suspend: a suspend without a duration"
            ),
            "{e}"
        );
    }
}

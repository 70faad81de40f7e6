//! Each `stack/` config checked against the release obsctl pins (src/stack/pins.rs), through the
//! references extracted from that release's own repository (tests/fixtures/upstream/): every
//! Tempo and Loki key path, every collector component, setting and OTTL function, every
//! Prometheus key, rule field and command-line flag, every Grafana dashboard and provisioning
//! key. These releases cannot run here (no registry), so this is what stands between a renamed
//! key and a crash-looping container. Each config also has a test with a deliberate mistake,
//! which must be reported with the file, the key path and the nearest valid key. No network: the
//! references are in the repository. Where a reference could not come from the pinned tag, its
//! header says where it came from (docs/upgrading-pins.md, Known gaps).

mod common;

use common::upstream::{Finding, Fixture, KeyTree, nearest, yaml};
use obsctl::stack::definition::{Component, service};
use obsctl::stack::{files, pins};
use serde_json::Value;

fn file(path: &str) -> &'static str {
    files::get(path).unwrap_or_else(|| panic!("{path} is embedded"))
}

fn assert_clean(findings: &[Finding]) {
    let lines: Vec<String> = findings.iter().map(Finding::to_string).collect();
    assert!(lines.is_empty(), "\n{}", lines.join("\n"));
}

/// The one finding a deliberate mistake must produce.
fn assert_one(findings: &[Finding], file: &str, path: &str, nearest: &str) {
    let lines: Vec<String> = findings.iter().map(Finding::to_string).collect();
    assert_eq!(findings.len(), 1, "{lines:#?}");
    let f = &findings[0];
    assert_eq!((f.file.as_str(), f.path.as_str()), (file, path), "{f}");
    assert!(
        f.problem.contains(nearest),
        "{f} should name the nearest valid key {nearest}"
    );
}

/// `stack/` text with one substring replaced; panics when it is absent, so a mistake test can
/// never silently test the unchanged file.
fn mistake(path: &str, from: &str, to: &str) -> String {
    let text = file(path);
    assert!(text.contains(from), "{path} has no {from:?}");
    text.replacen(from, to, 1)
}

#[test]
fn every_reference_comes_from_the_pinned_release() {
    for (fixture, pin) in [
        ("tempo/config-keys.txt", pins::TEMPO),
        ("loki/config-keys.txt", pins::LOKI),
        ("prometheus/config-keys.txt", pins::PROMETHEUS),
        ("prometheus/rule-keys.txt", pins::PROMETHEUS),
        ("prometheus/flags.txt", pins::PROMETHEUS),
        ("collector/components.txt", pins::COLLECTOR),
        ("collector/deprecated-types.txt", pins::COLLECTOR),
    ] {
        let f = Fixture::load(fixture);
        assert_eq!(
            f.origin(),
            format!("{} {}", pin.repository, pin.release),
            "{fixture} was extracted from another release than the pin: run \
             scripts/refresh-upstream-refs.py (docs/upgrading-pins.md)"
        );
        assert!(f.entries.len() > 1, "{fixture} is empty");
    }
    // Grafana's schemas are published per release line (`v11.6.x`), not per tag.
    let grafana = Fixture::load("grafana/dashboard-keys.txt");
    let line = grafana
        .header
        .iter()
        .find_map(|l| l.strip_prefix("# grafana release line: "))
        .expect("grafana/dashboard-keys.txt names its release line");
    let (major_minor, _) = pins::GRAFANA.release.rsplit_once('.').expect("vX.Y.Z");
    assert_eq!(
        line,
        format!("{} {major_minor}.x", pins::GRAFANA.repository),
        "grafana/dashboard-keys.txt was extracted for another Grafana line than the pin: run \
         scripts/refresh-upstream-refs.py (docs/upgrading-pins.md)"
    );
    assert!(
        grafana.entries.len() > 1,
        "grafana/dashboard-keys.txt is empty"
    );
    // The provisioning structs come from grafana/grafana copies that are not the pinned tag
    // (docs/upgrading-pins.md, Known gaps); the header must keep saying so until they are.
    let provisioning = Fixture::load("grafana/provisioning-keys.txt");
    let origin = provisioning.origin();
    let pinned = format!("{} {}", pins::GRAFANA.repository, pins::GRAFANA.release);
    assert!(
        origin == pinned
            || origin.starts_with(pins::GRAFANA.repository)
                && origin.contains(&format!("not the {} tag", pins::GRAFANA.release)),
        "grafana/provisioning-keys.txt: {origin}"
    );
    // The collector's fields come from the core repository, tagged with the same version.
    let fields = Fixture::load("collector/component-fields.txt");
    assert_eq!(
        fields.origin(),
        format!(
            "open-telemetry/opentelemetry-collector {}",
            pins::COLLECTOR.release
        )
    );
    // The contrib parts (extension fields, OTTL functions) come from the newest contrib release
    // whose files could be read here, never from one newer than the pin.
    let ottl = Fixture::load("collector/ottl-functions.txt");
    let contrib = ottl
        .origin()
        .strip_prefix("open-telemetry/opentelemetry-collector-contrib ")
        .expect("the OTTL functions come from opentelemetry-collector-contrib");
    let minor = |release: &str| -> u32 {
        let mut parts = release.trim_start_matches('v').split(['.', ' ']);
        assert_eq!(parts.next(), Some("0"), "{release}");
        parts.next().and_then(|m| m.parse().ok()).expect("v0.MINOR")
    };
    assert!(
        minor(contrib) <= minor(pins::COLLECTOR.release),
        "{contrib} is newer than the pinned {}",
        pins::COLLECTOR.release
    );
    assert!(
        fields
            .header
            .iter()
            .any(|l| l
                == &format!("# origin: open-telemetry/opentelemetry-collector-contrib {contrib}")),
        "collector/component-fields.txt and collector/ottl-functions.txt name different contrib releases"
    );
    assert!(
        ottl.entries.len() > 50,
        "{} OTTL functions",
        ottl.entries.len()
    );
}

// --- Tempo ------------------------------------------------------------------------------------

const TEMPO: &str = "tempo/tempo.yaml";

fn check_tempo(text: &str) -> Vec<Finding> {
    KeyTree::load("tempo/config-keys.txt").check(TEMPO, "", "", &yaml(TEMPO, text))
}

#[test]
fn every_tempo_key_is_in_the_pinned_manifest() {
    assert_clean(&check_tempo(file(TEMPO)));
}

#[test]
fn a_misspelt_tempo_key_is_named_with_the_nearest_valid_one() {
    let text = mistake(TEMPO, "max_trace_idle:", "max_trace_idel:");
    assert_one(
        &check_tempo(&text),
        TEMPO,
        "live_store.max_trace_idel",
        "live_store.max_trace_idle",
    );
    // A Tempo 2 block that Tempo 3 removed fails the same way.
    let text = format!("{}\ningester:\n  trace_idle_period: 1s\n", file(TEMPO));
    let findings = check_tempo(&text);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].path, "ingester");
}

// --- Loki -------------------------------------------------------------------------------------

const LOKI: &str = "loki/loki.yaml";

fn check_loki(text: &str) -> Vec<Finding> {
    KeyTree::load("loki/config-keys.txt").check(LOKI, "", "", &yaml(LOKI, text))
}

#[test]
fn every_loki_key_and_limit_is_in_the_pinned_reference() {
    let config = yaml(LOKI, file(LOKI));
    assert_clean(&check_loki(file(LOKI)));
    // The limits are the part most often renamed: each one set is checked by name, so an empty
    // limits_config could not pass this test by accident.
    let refs = KeyTree::load("loki/config-keys.txt");
    let limits = config["limits_config"].as_object().expect("limits_config");
    assert!(limits.len() >= 3, "{limits:?}");
    for key in limits.keys() {
        assert!(refs.has(&format!("limits_config.{key}")), "{key}");
    }
}

#[test]
fn a_misspelt_loki_limit_is_named_with_the_nearest_valid_one() {
    let text = mistake(
        LOKI,
        "allow_structured_metadata:",
        "allow_structured_metdata:",
    );
    assert_one(
        &check_loki(&text),
        LOKI,
        "limits_config.allow_structured_metdata",
        "limits_config.allow_structured_metadata",
    );
    let text = mistake(LOKI, "- action: index_label", "- actoin: index_label");
    assert_one(
        &check_loki(&text),
        LOKI,
        "limits_config.otlp_config.resource_attributes.attributes_config[0].actoin",
        "attributes_config[0].action",
    );
}

// --- Collector --------------------------------------------------------------------------------

const COLLECTOR: &str = "collector/config.yaml";
const KINDS: [&str; 5] = [
    "receivers",
    "processors",
    "exporters",
    "extensions",
    "connectors",
];

/// Every component of the config exists in the contrib distribution of the pinned release under
/// its current (not deprecated) type, and every setting is one of its configuration fields.
fn check_collector(text: &str) -> Vec<Finding> {
    let config = yaml(COLLECTOR, text);
    let components: Vec<String> = Fixture::load("collector/components.txt").entries;
    let deprecated = Fixture::load("collector/deprecated-types.txt");
    let fields = KeyTree::load("collector/component-fields.txt");
    let origin = Fixture::load("collector/components.txt")
        .origin()
        .to_string();
    let mut out = Vec::new();
    for kind in KINDS {
        let Some(section) = config.get(kind).and_then(Value::as_object) else {
            continue;
        };
        for (name, settings) in section {
            let typ = name.split('/').next().unwrap_or_default();
            let key = format!("{kind}.{typ}");
            let shown = format!("{kind}.{name}");
            let finding = |problem: String| Finding {
                file: COLLECTOR.to_string(),
                path: shown.clone(),
                problem,
            };
            if let Some(current) = deprecated
                .entries
                .iter()
                .find_map(|l| l.strip_prefix(&format!("{key} ")))
            {
                out.push(finding(format!(
                    "{typ} is a deprecated alias in {origin}; nearest valid key: {current}"
                )));
            } else if !components.contains(&key) {
                let of_kind: Vec<&str> = components
                    .iter()
                    .filter_map(|c| c.strip_prefix(&format!("{kind}.")))
                    .collect();
                let (unread, read): (Vec<&str>, Vec<&str>) =
                    of_kind.into_iter().partition(|c| c.starts_with('?'));
                let module_of_type = unread.iter().find(|m| {
                    m.rsplit('/')
                        .next()
                        .is_some_and(|dir| dir.starts_with(&typ.replace('_', "")))
                });
                out.push(finding(match module_of_type {
                    Some(module) => format!(
                        "{typ} may be {}, whose type was not extracted: rerun \
                         scripts/refresh-upstream-refs.py with a contrib checkout",
                        &module[1..]
                    ),
                    None => {
                        let read: Vec<String> = read.iter().map(|t| t.to_string()).collect();
                        let near = nearest(typ, &read).unwrap_or("none of this kind");
                        format!(
                            "{typ} is not a component of {origin}; nearest valid key: {kind}.{near}"
                        )
                    }
                }));
            } else if !fields.has(&key) {
                out.push(finding(format!(
                    "no field reference was extracted for {key}: add it to \
                     scripts/refresh-upstream-refs.py"
                )));
            } else if !settings.is_null() {
                out.extend(fields.check(COLLECTOR, &key, &shown, settings));
            }
        }
    }
    out
}

#[test]
fn every_collector_component_and_setting_is_in_the_pinned_release() {
    assert_clean(&check_collector(file(COLLECTOR)));
    // The check saw the stack's components: all five kinds that the config uses are there.
    let config = yaml(COLLECTOR, file(COLLECTOR));
    let used: usize = KINDS
        .iter()
        .filter_map(|k| config.get(*k).and_then(Value::as_object))
        .map(|s| s.len())
        .sum();
    assert!(used >= 8, "{used} components");
    assert_clean(&check_ottl(file(COLLECTOR)));
}

// --- OTTL -------------------------------------------------------------------------------------

/// The component types whose settings hold OTTL statements and conditions.
const OTTL_COMPONENTS: [&str; 3] = [
    "processors.transform",
    "processors.filter",
    "connectors.routing",
];
/// The filter processor's per-context condition lists (`traces: {span: [...]}`).
const OTTL_CONTEXTS: [&str; 8] = [
    "resource",
    "scope",
    "span",
    "spanevent",
    "metric",
    "datapoint",
    "log_record",
    "profile",
];

/// Whether a setting's key holds OTTL: `statements`, `trace_statements`, `condition`, ...
fn holds_ottl(key: &str) -> bool {
    ["statement", "statements", "condition", "conditions"]
        .iter()
        .any(|k| key == *k || key.ends_with(&format!("_{k}")))
        || OTTL_CONTEXTS.contains(&key)
}

/// Every OTTL statement or condition of an OTTL component, with its shown path.
fn ottl_statements(config: &Value) -> Vec<(String, String)> {
    fn walk(value: &Value, shown: &str, in_ottl: bool, out: &mut Vec<(String, String)>) {
        match value {
            Value::String(s) if in_ottl => out.push((shown.to_string(), s.clone())),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{shown}[{i}]"), in_ottl, out);
                }
            }
            Value::Object(map) => {
                for (k, v) in map {
                    walk(v, &format!("{shown}.{k}"), holds_ottl(k), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (kind, section) in KINDS
        .iter()
        .filter_map(|k| Some((*k, config.get(*k)?.as_object()?)))
    {
        for (name, settings) in section {
            let typ = name.split('/').next().unwrap_or_default();
            if OTTL_COMPONENTS.contains(&format!("{kind}.{typ}").as_str()) {
                walk(settings, &format!("{kind}.{name}"), false, &mut out);
            }
        }
    }
    out
}

/// The functions an OTTL statement calls: each name before a `(`, outside string literals
/// (the operators `not`, `and`, `or` and `where` may precede a parenthesis too).
fn ottl_calls(statement: &str) -> Vec<String> {
    let mut code = String::new();
    let mut chars = statement.chars();
    while let Some(c) = chars.next() {
        if c == '"' {
            while let Some(s) = chars.next() {
                match s {
                    '\\' => {
                        chars.next();
                    }
                    '"' => break,
                    _ => {}
                }
            }
            code.push_str("\"\"");
        } else {
            code.push(c);
        }
    }
    let mut calls = Vec::new();
    let mut word = String::new();
    let mut after_space = false;
    for c in code.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            if after_space {
                word.clear();
                after_space = false;
            }
            word.push(c);
        } else if c.is_whitespace() {
            after_space = true;
        } else {
            if c == '('
                && !word.is_empty()
                && !["not", "and", "or", "where"].contains(&word.as_str())
            {
                calls.push(word.clone());
            }
            word.clear();
            after_space = false;
        }
    }
    calls
}

/// Every function an OTTL statement of the config calls that the release's OTTL lacks.
fn check_ottl(text: &str) -> Vec<Finding> {
    let functions = Fixture::load("collector/ottl-functions.txt");
    let mut out = Vec::new();
    for (path, statement) in ottl_statements(&yaml(COLLECTOR, text)) {
        for call in ottl_calls(&statement) {
            if !functions.entries.contains(&call) {
                out.push(Finding {
                    file: COLLECTOR.to_string(),
                    path: path.clone(),
                    problem: format!(
                        "{call}() is not an OTTL function of {}; nearest valid key: {}",
                        functions.origin(),
                        nearest(&call, &functions.entries).unwrap_or_default()
                    ),
                });
            }
        }
    }
    out
}

/// The stack's collector config with one more processor, `transform`, in the traces pipeline.
fn with_transform(statements: &str) -> String {
    let text = mistake(
        COLLECTOR,
        "processors:\n",
        &format!("processors:\n  transform:\n    error_mode: ignore\n{statements}"),
    );
    text.replacen(
        "processors: [memory_limiter, batch]",
        "processors: [memory_limiter, transform, batch]",
        1,
    )
}

#[test]
fn every_ottl_statement_uses_functions_the_release_has() {
    let text = with_transform(concat!(
        "    trace_statements:\n",
        "      - context: span\n",
        "        statements:\n",
        "          - set(attributes[\"step\"], Concat([attributes[\"agent\"], name], \"/\")) where IsMatch(name, \"^run(\")\n",
        "          - delete_key(attributes, \"secret\") where not (kind == SPAN_KIND_SERVER)\n",
    ));
    let found = ottl_statements(&yaml(COLLECTOR, &text));
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        found[0].0,
        "processors.transform.trace_statements[0].statements[0]"
    );
    let calls: Vec<String> = found.iter().flat_map(|(_, s)| ottl_calls(s)).collect();
    // `run(` is inside a string: no call.
    assert_eq!(calls, ["set", "Concat", "IsMatch", "delete_key"]);
    assert_clean(&check_ottl(&text));
}

#[test]
fn a_misspelt_ottl_function_is_named_with_the_nearest_valid_one() {
    let text = with_transform(concat!(
        "    log_statements:\n",
        "      - set(attributes[\"level\"], ConvertCase(severity_text, \"lower\"))\n",
        "      - set(attributes[\"id\"], Concatt([trace_id.string, span_id.string], \"-\"))\n",
    ));
    assert_one(
        &check_ottl(&text),
        COLLECTOR,
        "processors.transform.log_statements[1]",
        "Concatt() is not an OTTL function",
    );
    assert!(
        check_ottl(&text)[0]
            .problem
            .ends_with("nearest valid key: Concat")
    );
    // A filter processor's conditions are OTTL too.
    let text = mistake(
        COLLECTOR,
        "processors:\n",
        "processors:\n  filter/drop:\n    traces:\n      span:\n        - IsMatchh(name, \"^health\")\n",
    );
    assert_one(
        &check_ottl(&text),
        COLLECTOR,
        "processors.filter/drop.traces.span[0]",
        "nearest valid key: IsMatch",
    );
}

#[test]
fn a_misspelt_collector_setting_or_a_missing_component_is_named() {
    let text = mistake(COLLECTOR, "storage: file_storage", "storag: file_storage");
    assert_one(
        &check_collector(&text),
        COLLECTOR,
        "exporters.otlp_grpc/tempo.sending_queue.storag",
        "exporters.otlp_grpc/tempo.sending_queue.storage",
    );
    // The contrib extensions' fields are their `mapstructure` fields.
    let text = mistake(COLLECTOR, "    path: /ready", "    pth: /ready");
    assert_one(
        &check_collector(&text),
        COLLECTOR,
        "extensions.health_check.pth",
        "extensions.health_check.path",
    );
    let text = mistake(COLLECTOR, "create_directory:", "create_dirctory:");
    assert_one(
        &check_collector(&text),
        COLLECTOR,
        "extensions.file_storage.create_dirctory",
        "extensions.file_storage.create_directory",
    );
    // The loki exporter left contrib long ago; its name is refused.
    let text = mistake(COLLECTOR, "otlp_http/loki:", "loki:");
    assert_one(
        &check_collector(&text),
        COLLECTOR,
        "exporters.loki",
        "not a component of open-telemetry/opentelemetry-collector-releases",
    );
    // A component of the distribution whose type the references do not hold yet is named as
    // such, not as missing.
    let text = mistake(
        COLLECTOR,
        "processors:\n",
        "processors:\n  transform:\n    error_mode: ignore\n",
    );
    let findings = check_collector(&text);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0]
            .problem
            .contains("processor/transformprocessor, whose type was not extracted"),
        "{}",
        findings[0]
    );
    // The pre-0.144 exporter name is only a deprecated alias now.
    let text = mistake(COLLECTOR, "otlp_grpc/tempo:", "otlp/tempo:");
    assert_one(
        &check_collector(&text),
        COLLECTOR,
        "exporters.otlp/tempo",
        "otlp_grpc",
    );
}

// --- Prometheus -------------------------------------------------------------------------------

const PROMETHEUS: &str = "prometheus/prometheus.yml";
const RULES: &str = "prometheus/rules/agent-steps.yml";

fn check_prometheus(text: &str) -> Vec<Finding> {
    KeyTree::load("prometheus/config-keys.txt").check(PROMETHEUS, "", "", &yaml(PROMETHEUS, text))
}

fn check_rules(text: &str) -> Vec<Finding> {
    KeyTree::load("prometheus/rule-keys.txt").check(RULES, "", "", &yaml(RULES, text))
}

/// The flags obsctl starts Prometheus with that the pinned release does not have.
fn check_flags(command: &[&str]) -> Vec<Finding> {
    let flags = Fixture::load("prometheus/flags.txt");
    let mut out = Vec::new();
    for arg in command {
        let (flag, value) = arg.split_once('=').unwrap_or((arg, ""));
        let known = if flag == "--enable-feature" {
            value
                .split(',')
                .all(|f| flags.entries.contains(&format!("--enable-feature={f}")))
        } else {
            flags.entries.contains(&flag.to_string())
        };
        if !known {
            let near = nearest(arg, &flags.entries).unwrap_or_default();
            out.push(Finding {
                file: "src/stack/definition.rs (prometheus command)".to_string(),
                path: arg.to_string(),
                problem: format!(
                    "not a flag of {}; nearest valid key: {near}",
                    flags.origin()
                ),
            });
        }
    }
    out
}

#[test]
fn prometheus_config_rules_and_flags_are_in_the_pinned_release() {
    // promtool (Debian's, older than the pin) checks them too: tests/stack_static.rs.
    assert_clean(&check_prometheus(file(PROMETHEUS)));
    assert_clean(&check_rules(file(RULES)));
    let command = service(Component::Prometheus).command;
    assert!(command.contains(&"--enable-feature=exemplar-storage"));
    assert_clean(&check_flags(&command));
}

#[test]
fn a_misspelt_prometheus_key_rule_field_or_flag_is_named() {
    let text = mistake(PROMETHEUS, "scrape_interval:", "scrape_intervall:");
    assert_one(
        &check_prometheus(&text),
        PROMETHEUS,
        "global.scrape_intervall",
        "global.scrape_interval",
    );
    let text = mistake(RULES, "annotations:", "anotations:");
    assert_one(
        &check_rules(&text),
        RULES,
        "groups[0].rules[0].anotations",
        "groups[0].rules[0].annotations",
    );
    let findings = check_flags(&["--enable-feature=exemplar-storag"]);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0]
            .problem
            .contains("--enable-feature=exemplar-storage"),
        "{}",
        findings[0]
    );
}

// --- Grafana ----------------------------------------------------------------------------------

const DASHBOARD: &str = "grafana/dashboards/agent-steps.json";

/// Every key of the dashboard is one Grafana's dashboard schema has; every panel's type is a
/// panel plugin of that schema, and its `options`, its `fieldConfig.defaults.custom` and the
/// `custom.*` properties its overrides set are that plugin's (the dashboard schema leaves them
/// open, each plugin's own schema closes them).
fn check_dashboard(text: &str) -> Vec<Finding> {
    let refs = KeyTree::load("grafana/dashboard-keys.txt");
    let dashboard: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    let mut out = refs.check(DASHBOARD, "dashboard", "", &dashboard);
    let panels = dashboard["panels"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, panel) in panels.iter().enumerate() {
        let shown = format!("panels[{i}]");
        let typ = panel["type"].as_str().unwrap_or_default();
        let node = format!("panels.{typ}");
        if !refs.has(&node) {
            let types = refs.keys_of("panels");
            out.push(Finding {
                file: DASHBOARD.to_string(),
                path: format!("{shown}.type"),
                problem: format!(
                    "{typ:?} is not a panel type in {}; nearest valid key: {}",
                    refs.origin(),
                    nearest(typ, &types).unwrap_or_default()
                ),
            });
            continue;
        }
        let options = format!("{node}.options");
        out.extend(refs.check(
            DASHBOARD,
            &options,
            &format!("{shown}.options"),
            &panel["options"],
        ));
        let custom = format!("{node}.custom");
        let defaults = &panel["fieldConfig"]["defaults"]["custom"];
        let shown_custom = format!("{shown}.fieldConfig.defaults.custom");
        out.extend(refs.check(DASHBOARD, &custom, &shown_custom, defaults));
        out.extend(override_ids(&refs, panel, &shown, &custom));
    }
    out
}

/// Each override property id names a field config key: `custom.X` one of the panel plugin's,
/// any other a key of Grafana's field config.
fn override_ids(refs: &KeyTree, panel: &Value, shown: &str, custom: &str) -> Vec<Finding> {
    let overrides = panel["fieldConfig"]["overrides"].as_array();
    let mut out = Vec::new();
    for (o, rule) in overrides.into_iter().flatten().enumerate() {
        let props = rule["properties"].as_array().into_iter().flatten();
        for (p, prop) in props.enumerate() {
            let id = prop["id"].as_str().unwrap_or_default();
            let (node, key) = match id.strip_prefix("custom.") {
                Some(key) => (custom.to_string(), key),
                None => ("field_config".to_string(), id),
            };
            if !refs.has(&format!("{node}.{key}")) {
                let near = nearest(key, &refs.keys_of(&node))
                    .unwrap_or_default()
                    .to_string();
                let near = if node == "field_config" {
                    near
                } else {
                    format!("custom.{near}")
                };
                out.push(Finding {
                    file: DASHBOARD.to_string(),
                    path: format!("{shown}.fieldConfig.overrides[{o}].properties[{p}].id"),
                    problem: format!(
                        "{id:?} is not a field config key in {}; nearest valid key: {near}",
                        refs.origin()
                    ),
                });
            }
        }
    }
    out
}

const DATASOURCES: &str = "grafana/provisioning/datasources/datasources.yaml";
const PROVIDERS: &str = "grafana/provisioning/dashboards/dashboards.yaml";

/// Every key of a provisioning file is a field of the struct Grafana reads it into (`node` is
/// `datasources` or `dashboards`); a data source's `jsonData` is its plugin's and stays open.
fn check_provisioning(path: &str, node: &str, text: &str) -> Vec<Finding> {
    KeyTree::load("grafana/provisioning-keys.txt").check(path, node, "", &yaml(path, text))
}

#[test]
fn every_grafana_provisioning_key_is_a_field_grafana_reads() {
    assert_clean(&check_provisioning(
        DATASOURCES,
        "datasources",
        file(DATASOURCES),
    ));
    assert_clean(&check_provisioning(
        PROVIDERS,
        "dashboards",
        file(PROVIDERS),
    ));
    // The walk reached the provider's options, which the file provider reads by name.
    let refs = KeyTree::load("grafana/provisioning-keys.txt");
    let providers = yaml(PROVIDERS, file(PROVIDERS));
    for key in providers["providers"][0]["options"]
        .as_object()
        .expect("options")
        .keys()
    {
        assert!(
            refs.has(&format!("dashboards.providers.[].options.{key}")),
            "{key}"
        );
    }
}

#[test]
fn a_misspelt_provisioning_key_is_named_with_the_nearest_valid_one() {
    let text = mistake(DATASOURCES, "    isDefault: true", "    isDefualt: true");
    assert_one(
        &check_provisioning(DATASOURCES, "datasources", &text),
        DATASOURCES,
        "datasources[0].isDefualt",
        "datasources[0].isDefault",
    );
    let text = mistake(PROVIDERS, "allowUiUpdates:", "allowUIUpdates:");
    assert_one(
        &check_provisioning(PROVIDERS, "dashboards", &text),
        PROVIDERS,
        "providers[0].allowUIUpdates",
        "providers[0].allowUiUpdates",
    );
    let text = mistake(
        PROVIDERS,
        "foldersFromFilesStructure:",
        "foldersFromFileStructure:",
    );
    assert_one(
        &check_provisioning(PROVIDERS, "dashboards", &text),
        PROVIDERS,
        "providers[0].options.foldersFromFileStructure",
        "providers[0].options.foldersFromFilesStructure",
    );
}

#[test]
fn every_dashboard_key_panel_type_and_option_is_in_grafanas_schema() {
    assert_clean(&check_dashboard(file(DASHBOARD)));
    // The check saw the panels and their options: the stack's dashboard has options on some
    // panels and a custom override, so an empty walk could not pass by accident.
    let refs = KeyTree::load("grafana/dashboard-keys.txt");
    let dashboard: Value = serde_json::from_str(file(DASHBOARD)).unwrap();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 5, "{} panels", panels.len());
    for panel in panels {
        let typ = panel["type"].as_str().expect("panel type");
        assert!(refs.has(&format!("panels.{typ}")), "{typ}");
        for key in panel["options"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            assert!(
                refs.has(&format!("panels.{typ}.options.{key}")),
                "{typ}: {key}"
            );
        }
    }
}

#[test]
fn a_misspelt_dashboard_option_or_unknown_panel_type_is_named() {
    let text = mistake(DASHBOARD, "\"wrapLogMessage\"", "\"wrapLogMesage\"");
    let findings = check_dashboard(&text);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0].path.ends_with(".options.wrapLogMesage"),
        "{}",
        findings[0]
    );
    assert!(
        findings[0].problem.contains(".options.wrapLogMessage"),
        "{}",
        findings[0]
    );

    let text = mistake(
        DASHBOARD,
        "\"type\": \"bargauge\"",
        "\"type\": \"bargauges\"",
    );
    let findings = check_dashboard(&text);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(findings[0].path.ends_with(".type"), "{}", findings[0]);
    assert!(
        findings[0].problem.contains("nearest valid key: bargauge"),
        "{}",
        findings[0]
    );

    let text = mistake(
        DASHBOARD,
        "\"custom.axisPlacement\"",
        "\"custom.axisPlacment\"",
    );
    let findings = check_dashboard(&text);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0].problem.contains("custom.axisPlacement"),
        "{}",
        findings[0]
    );

    // A dashboard-level key Grafana does not have.
    let text = mistake(DASHBOARD, "\"graphTooltip\"", "\"graphTooltips\"");
    assert_one(
        &check_dashboard(&text),
        DASHBOARD,
        "graphTooltips",
        "nearest valid key: graphTooltip",
    );
}

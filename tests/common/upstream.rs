//! The references extracted from the pinned releases (`tests/fixtures/upstream/`, written by
//! `scripts/refresh-upstream-refs.py`) and the check of a config's key paths against one: every
//! key must be one the release documents, and a key that is not is reported with the file, its
//! path and the nearest valid key at that place.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use obsctl::workflow::load::edit_distance;
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/upstream/");

/// One extracted reference file: its header (origin lines) and its entries.
pub struct Fixture {
    pub name: String,
    pub header: Vec<String>,
    pub entries: Vec<String>,
}

impl Fixture {
    pub fn load(name: &str) -> Fixture {
        let text = std::fs::read_to_string(format!("{DIR}{name}"))
            .unwrap_or_else(|e| panic!("tests/fixtures/upstream/{name}: {e}"));
        let (header, entries): (Vec<&str>, Vec<&str>) = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .partition(|l| l.starts_with('#'));
        Fixture {
            name: name.to_string(),
            header: header.into_iter().map(str::to_string).collect(),
            entries: entries.into_iter().map(str::to_string).collect(),
        }
    }

    /// The `# origin: REPOSITORY TAG` line, without its marker.
    pub fn origin(&self) -> &str {
        self.header
            .iter()
            .find_map(|l| l.strip_prefix("# origin: "))
            .unwrap_or_else(|| panic!("{} has no origin line", self.name))
    }
}

/// A problem found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub path: String,
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file, self.path, self.problem)
    }
}

/// The valid key paths of one reference as a tree: each node's child keys (`*` any key, `[]` a
/// list element) and the nodes below which anything goes (`.**`).
pub struct KeyTree {
    origin: String,
    children: BTreeMap<String, BTreeSet<String>>,
    free: BTreeSet<String>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// The candidate nearest to `key` (by edit distance, case-insensitive).
pub fn nearest<'a>(key: &str, candidates: impl IntoIterator<Item = &'a String>) -> Option<&'a str> {
    let lower = key.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| c.as_str() != "*" && c.as_str() != "[]")
        .min_by_key(|c| edit_distance(&lower, &c.to_lowercase()))
        .map(String::as_str)
}

impl KeyTree {
    pub fn load(name: &str) -> KeyTree {
        let fixture = Fixture::load(name);
        let mut tree = KeyTree {
            origin: fixture.origin().to_string(),
            children: BTreeMap::new(),
            free: BTreeSet::new(),
        };
        for entry in &fixture.entries {
            let mut parent = String::new();
            for seg in entry.split('.') {
                if seg == "**" {
                    tree.free.insert(parent.clone());
                    break;
                }
                tree.children
                    .entry(parent.clone())
                    .or_default()
                    .insert(seg.to_string());
                parent = join(&parent, seg);
            }
        }
        tree
    }

    /// The repository and tag (or label) the reference was extracted from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The keys valid directly below `node`.
    pub fn keys_of(&self, node: &str) -> Vec<String> {
        self.children
            .get(node)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn has(&self, node: &str) -> bool {
        let (parent, key) = node.rsplit_once('.').unwrap_or(("", node));
        self.children.get(parent).is_some_and(|c| c.contains(key))
    }

    /// Every key path in `value` (read from `file`, at reference node `node`, shown as `shown`)
    /// that the reference lacks.
    pub fn check(&self, file: &str, node: &str, shown: &str, value: &Value) -> Vec<Finding> {
        let mut out = Vec::new();
        self.walk(file, node, shown, value, &mut out);
        out
    }

    fn walk(&self, file: &str, node: &str, shown: &str, value: &Value, out: &mut Vec<Finding>) {
        if self.free.contains(node) {
            return;
        }
        let keys = self.children.get(node);
        let accepts = |k: &str| keys.is_some_and(|c| c.contains(k));
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let path = join(shown, k);
                    if accepts(k) {
                        self.walk(file, &join(node, k), &path, v, out);
                    } else if accepts("*") {
                        self.walk(file, &join(node, "*"), &path, v, out);
                    } else {
                        let hint = match keys.and_then(|c| nearest(k, c)) {
                            Some(n) => format!("nearest valid key: {}", join(shown, n)),
                            None => format!("{} takes no keys there", self.origin),
                        };
                        out.push(Finding {
                            file: file.to_string(),
                            path,
                            problem: format!("not a key in {}; {hint}", self.origin),
                        });
                    }
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{shown}[{i}]");
                    self.walk(file, &join(node, "[]"), &path, item, out);
                }
            }
            _ => {}
        }
    }
}

/// A YAML config as JSON values (keys are strings in every config the stack has).
pub fn yaml(file: &str, text: &str) -> Value {
    serde_norway::from_str(text).unwrap_or_else(|e| panic!("{file}: {e}"))
}

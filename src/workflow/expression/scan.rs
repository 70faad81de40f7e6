//! A lexical pass over an expression, before the `expr-lang` parser sees it: where it calls a
//! function (so that a function obsctl does not provide is refused at load with its position),
//! and the spelling the parser accepts for Argo's `sprig.name(...)`: expr-lang calls methods on
//! date values only, so `sprig.trim(x)` becomes the plain function `sprig_trim(x)`, the same length,
//! which keeps every offset in the text.

/// A function called in an expression: its name as written (`sprig.trim`, `.Year` for a method
/// call) and the byte offset where the name starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSite {
    pub name: String,
    pub offset: usize,
}

/// Words of the grammar that may be followed by `(` without calling anything.
const KEYWORDS: &[&str] = &[
    "if",
    "else",
    "not",
    "in",
    "and",
    "or",
    "contains",
    "startsWith",
    "endsWith",
    "matches",
    "let",
    "nil",
    "true",
    "false",
];

/// The prefix under which Argo exposes the Sprig functions.
pub const SPRIG: &str = "sprig";

/// The function calls in `text`, in order; string literals and comments are skipped.
pub fn calls(text: &str) -> Vec<CallSite> {
    scan(text).0
}

/// `text` with `sprig.name(` spelled `sprig_name(`.
pub fn rewrite(text: &str) -> String {
    let (_, dots) = scan(text);
    let mut bytes = text.as_bytes().to_vec();
    for dot in dots {
        bytes[dot] = b'_';
    }
    String::from_utf8(bytes).expect("only an ASCII '.' was replaced")
}

/// The calls, and the offsets of the dots of `sprig.` calls.
fn scan(text: &str) -> (Vec<CallSite>, Vec<usize>) {
    let b = text.as_bytes();
    let mut calls = Vec::new();
    let mut sprig_dots = Vec::new();
    // The identifier before the last `.`, when that `.` follows one directly.
    let mut member_of: Option<(usize, usize)> = None;
    let mut last_ident: Option<(usize, usize)> = None;
    let mut after_dot = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\'' | b'"' | b'`' => {
                i = skip_string(b, i);
                last_ident = None;
                after_dot = false;
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                i = text[i..].find('\n').map_or(b.len(), |n| i + n);
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = text[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
            }
            b'.' if b.get(i + 1) != Some(&b'.') => {
                member_of = last_ident.filter(|(_, end)| *end == i);
                after_dot = true;
                last_ident = None;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' || c == b'#' => {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let word = &text[start..i];
                let called = text[i..].trim_start().starts_with('(');
                if called && after_dot {
                    match member_of {
                        Some((s, e)) if &text[s..e] == SPRIG => {
                            sprig_dots.push(e);
                            calls.push(CallSite {
                                name: format!("{SPRIG}.{word}"),
                                offset: s,
                            });
                        }
                        _ => calls.push(CallSite {
                            name: format!(".{word}"),
                            offset: start,
                        }),
                    }
                } else if called && !KEYWORDS.contains(&word) {
                    calls.push(CallSite {
                        name: word.to_string(),
                        offset: start,
                    });
                }
                last_ident = Some((start, i));
                after_dot = false;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                last_ident = None;
                after_dot = false;
                i += 1;
            }
        }
    }
    (calls, sprig_dots)
}

/// The offset just past the string literal that starts at `start`.
fn skip_string(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while i < b.len() {
        if b[i] == b'\\' && quote != b'`' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        calls(text).into_iter().map(|c| c.name).collect()
    }

    #[test]
    fn finds_functions_sprig_and_methods_but_not_strings_keywords_or_members() {
        assert_eq!(
            names("asInt(inputs.parameters['a-b']) * 10 + len('x(') // f(\n"),
            ["asInt", "len"]
        );
        assert_eq!(
            names("sprig.trim(x) + sprig.upper (y) + a.b.c"),
            ["sprig.trim", "sprig.upper"]
        );
        assert_eq!(names("x.Year() == 2 && not (a in [1])"), [".Year"]);
        assert_eq!(
            names("filter([1, 3], {# > 1}) | map(# * 2)"),
            ["filter", "map"]
        );
        assert_eq!(calls("1 + nope(2)")[0].offset, 4);
    }

    #[test]
    fn rewrite_spells_sprig_calls_as_functions_and_keeps_offsets() {
        let text = "sprig.trim(s.x) + 'sprig.no(' + sprig.upper(t)";
        let out = rewrite(text);
        assert_eq!(out, "sprig_trim(s.x) + 'sprig.no(' + sprig_upper(t)");
        assert_eq!(out.len(), text.len());
    }
}

//! The two small expression languages of Argo that the subset supports: `when` conditions
//! (govaluate, where bare words are strings, as Argo treats them, with `=~`/`!~` regular
//! expressions) and DAG `depends` logic (`A.Succeeded && (B.Failed || C)`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} in {expression:?}")]
pub struct ExprError {
    pub expression: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(f64),
    Str(String),
    Bool(bool),
    Op(&'static str),
    LParen,
    RParen,
}

const OPS: [&str; 12] = [
    "==", "!=", "<=", ">=", "&&", "||", "=~", "!~", "<", ">", "!", "-",
];

fn tokenize(src: &str, err: &dyn Fn(String) -> ExprError) -> Result<Vec<Token>, ExprError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '(' {
            out.push(Token::LParen);
            i += 1;
        } else if ch == ')' {
            out.push(Token::RParen);
            i += 1;
        } else if ch == '"' || ch == '\'' {
            let end = chars[i + 1..]
                .iter()
                .position(|c| *c == ch)
                .ok_or_else(|| err("unterminated string".into()))?;
            out.push(Token::Str(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if let Some(op) = OPS.iter().find(|op| {
            let n = op.len();
            i + n <= chars.len() && chars[i..i + n].iter().collect::<String>() == **op
        }) {
            out.push(Token::Op(op));
            i += op.len();
        } else {
            let start = i;
            while i < chars.len()
                && !chars[i].is_whitespace()
                && !"()\"'".contains(chars[i])
                && !OPS.iter().any(|op| {
                    let n = op.len();
                    op.len() > 1
                        && i + n <= chars.len()
                        && chars[i..i + n].iter().collect::<String>() == **op
                })
                && !"<>!".contains(chars[i])
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.is_empty() {
                return Err(err(format!("unexpected character {:?}", chars[i])));
            }
            out.push(match word.as_str() {
                "true" => Token::Bool(true),
                "false" => Token::Bool(false),
                _ => match word.parse::<f64>() {
                    Ok(n) => Token::Num(n),
                    Err(_) => Token::Str(word),
                },
            });
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Num(f64),
    Str(String),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Value::Num(n) => write!(f, "{n}"),
            Value::Str(s) => f.write_str(s),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

struct WhenParser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    err: &'a dyn Fn(String) -> ExprError,
}

impl WhenParser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Token::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Value, ExprError> {
        let mut left = self.and()?;
        while self.eat_op("||") {
            let right = self.and()?;
            left = Value::Bool(self.truthy(&left)? || self.truthy(&right)?);
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Value, ExprError> {
        let mut left = self.cmp()?;
        while self.eat_op("&&") {
            let right = self.cmp()?;
            left = Value::Bool(self.truthy(&left)? && self.truthy(&right)?);
        }
        Ok(left)
    }

    fn truthy(&self, v: &Value) -> Result<bool, ExprError> {
        match v {
            Value::Bool(b) => Ok(*b),
            other => Err((self.err)(format!("expected a boolean, got {other}"))),
        }
    }

    fn cmp(&mut self) -> Result<Value, ExprError> {
        let left = self.unary()?;
        for op in ["==", "!=", "<=", ">=", "<", ">", "=~", "!~"] {
            if self.eat_op(op) {
                let right = self.unary()?;
                return self.compare(op, left, right);
            }
        }
        Ok(left)
    }

    fn compare(&self, op: &str, left: Value, right: Value) -> Result<Value, ExprError> {
        use std::cmp::Ordering;
        let ordering = match (&left, &right) {
            (Value::Num(a), Value::Num(b)) => a.partial_cmp(b),
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            _ => None,
        };
        let result = match op {
            "==" => ordering == Some(Ordering::Equal),
            "!=" => ordering != Some(Ordering::Equal),
            "=~" | "!~" => self.matches(&left, &right)? == (op == "=~"),
            _ => {
                let ordering = match (&left, &right) {
                    (Value::Num(_), Value::Num(_)) | (Value::Str(_), Value::Str(_)) => ordering,
                    _ => None,
                }
                .ok_or_else(|| (self.err)(format!("cannot compare {left} {op} {right}")))?;
                match op {
                    "<" => ordering == Ordering::Less,
                    ">" => ordering == Ordering::Greater,
                    "<=" => ordering != Ordering::Greater,
                    _ => ordering != Ordering::Less,
                }
            }
        };
        Ok(Value::Bool(result))
    }

    /// govaluate's `=~`: whether the regular expression on the right (Go's RE2 syntax, which
    /// the `regex` crate shares) matches anywhere in the text on the left.
    fn matches(&self, text: &Value, pattern: &Value) -> Result<bool, ExprError> {
        let Value::Str(pattern) = pattern else {
            return Err((self.err)(format!(
                "the right of =~ must be a regular expression, got {pattern}"
            )));
        };
        if let Value::Bool(_) = text {
            return Err((self.err)(format!(
                "cannot match {text} against a regular expression"
            )));
        }
        let re = regex::Regex::new(pattern)
            .map_err(|e| (self.err)(format!("invalid regular expression {pattern:?}: {e}")))?;
        Ok(re.is_match(&text.to_string()))
    }

    fn unary(&mut self) -> Result<Value, ExprError> {
        if self.eat_op("!") {
            let v = self.unary()?;
            return Ok(Value::Bool(!self.truthy(&v)?));
        }
        if self.eat_op("-") {
            return match self.unary()? {
                Value::Num(n) => Ok(Value::Num(-n)),
                other => Err((self.err)(format!("cannot negate {other}"))),
            };
        }
        match self.tokens.get(self.pos).cloned() {
            Some(Token::LParen) => {
                self.pos += 1;
                let v = self.or()?;
                if self.peek() != Some(&Token::RParen) {
                    return Err((self.err)("missing `)`".into()));
                }
                self.pos += 1;
                Ok(v)
            }
            Some(Token::Num(n)) => {
                self.pos += 1;
                Ok(Value::Num(n))
            }
            Some(Token::Str(s)) => {
                self.pos += 1;
                Ok(Value::Str(s))
            }
            Some(Token::Bool(b)) => {
                self.pos += 1;
                Ok(Value::Bool(b))
            }
            Some(other) => Err((self.err)(format!("unexpected {other:?}"))),
            None => Err((self.err)("unexpected end".into())),
        }
    }
}

/// Evaluates a `when` condition after its `{{...}}` variables were substituted.
pub fn eval_when(expression: &str) -> Result<bool, ExprError> {
    let err = |message: String| ExprError {
        expression: expression.to_string(),
        message,
    };
    let tokens = tokenize(expression, &err)?;
    let mut p = WhenParser {
        tokens,
        pos: 0,
        err: &err,
    };
    let v = p.or()?;
    if p.pos != p.tokens.len() {
        return Err(err(format!("unexpected {:?}", p.tokens[p.pos])));
    }
    match v {
        Value::Bool(b) => Ok(b),
        other => Err(err(format!("expected a boolean result, got {other}"))),
    }
}

/// A task result as `depends` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskResult {
    Succeeded,
    Failed,
    Errored,
    Skipped,
    Omitted,
    Daemoned,
    AnySucceeded,
    AllFailed,
}

impl TaskResult {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Succeeded" => Self::Succeeded,
            "Failed" => Self::Failed,
            "Errored" => Self::Errored,
            "Skipped" => Self::Skipped,
            "Omitted" => Self::Omitted,
            "Daemoned" => Self::Daemoned,
            "AnySucceeded" => Self::AnySucceeded,
            "AllFailed" => Self::AllFailed,
            _ => return None,
        })
    }
}

/// A parsed `depends` expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Depends {
    /// `task` alone, or `task.Result`.
    Task(String, Option<TaskResult>),
    Not(Box<Depends>),
    And(Box<Depends>, Box<Depends>),
    Or(Box<Depends>, Box<Depends>),
}

impl Depends {
    pub fn parse(expression: &str) -> Result<Self, ExprError> {
        let err = |message: String| ExprError {
            expression: expression.to_string(),
            message,
        };
        let mut tokens = Vec::new();
        let chars: Vec<char> = expression.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let ch = chars[i];
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if ch.is_whitespace() {
                i += 1;
            } else if two == "&&" || two == "||" {
                tokens.push(two);
                i += 2;
            } else if "()!".contains(ch) {
                tokens.push(ch.to_string());
                i += 1;
            } else if ch.is_alphanumeric() || "-_.".contains(ch) {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || "-_.".contains(chars[i])) {
                    i += 1;
                }
                tokens.push(chars[start..i].iter().collect());
            } else {
                return Err(err(format!("unexpected character {ch:?}")));
            }
        }
        let mut pos = 0;
        let tree = Self::parse_or(&tokens, &mut pos, &err)?;
        if pos != tokens.len() {
            return Err(err(format!("unexpected {:?}", tokens[pos])));
        }
        Ok(tree)
    }

    fn parse_or(
        t: &[String],
        pos: &mut usize,
        err: &dyn Fn(String) -> ExprError,
    ) -> Result<Self, ExprError> {
        let mut left = Self::parse_and(t, pos, err)?;
        while t.get(*pos).map(String::as_str) == Some("||") {
            *pos += 1;
            left = Self::Or(Box::new(left), Box::new(Self::parse_and(t, pos, err)?));
        }
        Ok(left)
    }

    fn parse_and(
        t: &[String],
        pos: &mut usize,
        err: &dyn Fn(String) -> ExprError,
    ) -> Result<Self, ExprError> {
        let mut left = Self::parse_atom(t, pos, err)?;
        while t.get(*pos).map(String::as_str) == Some("&&") {
            *pos += 1;
            left = Self::And(Box::new(left), Box::new(Self::parse_atom(t, pos, err)?));
        }
        Ok(left)
    }

    fn parse_atom(
        t: &[String],
        pos: &mut usize,
        err: &dyn Fn(String) -> ExprError,
    ) -> Result<Self, ExprError> {
        let Some(tok) = t.get(*pos) else {
            return Err(err("unexpected end".into()));
        };
        *pos += 1;
        match tok.as_str() {
            "!" => Ok(Self::Not(Box::new(Self::parse_atom(t, pos, err)?))),
            "(" => {
                let inner = Self::parse_or(t, pos, err)?;
                if t.get(*pos).map(String::as_str) != Some(")") {
                    return Err(err("missing `)`".into()));
                }
                *pos += 1;
                Ok(inner)
            }
            "&&" | "||" | ")" => Err(err(format!("unexpected {tok:?}"))),
            word => match word.rsplit_once('.') {
                Some((task, result)) => {
                    let result = TaskResult::parse(result).ok_or_else(|| {
                        err(format!(
                            "unknown task result `.{result}` (expected Succeeded, Failed, Errored, Skipped, Omitted, Daemoned, AnySucceeded or AllFailed)"
                        ))
                    })?;
                    Ok(Self::Task(task.to_string(), Some(result)))
                }
                None => Ok(Self::Task(word.to_string(), None)),
            },
        }
    }

    /// The tasks this expression waits for, in order of first mention.
    pub fn tasks(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<String>) {
        match self {
            Self::Task(name, _) => {
                if !out.contains(name) {
                    out.push(name.clone());
                }
            }
            Self::Not(a) => a.collect(out),
            Self::And(a, b) | Self::Or(a, b) => {
                a.collect(out);
                b.collect(out);
            }
        }
    }

    /// Evaluates with `test(task, result)` saying whether `task` ended with `result`; a bare task
    /// name is tested with `None`.
    pub fn eval(&self, test: &dyn Fn(&str, Option<TaskResult>) -> bool) -> bool {
        match self {
            Self::Task(name, result) => test(name, *result),
            Self::Not(a) => !a.eval(test),
            Self::And(a, b) => a.eval(test) && b.eval(test),
            Self::Or(a, b) => a.eval(test) || b.eval(test),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_compares_bare_words_as_strings_and_numbers_numerically() {
        assert!(eval_when("even == even").unwrap());
        assert!(!eval_when("odd == even").unwrap());
        assert!(eval_when("Failed != Succeeded").unwrap());
        assert!(eval_when("10 > 9").unwrap());
        assert!(eval_when("'a b' == \"a b\" && (1 < 2 || false)").unwrap());
        assert!(eval_when("!(heads == tails)").unwrap());
        assert!(eval_when("true").unwrap());
        assert!(eval_when("heads").is_err());
        assert!(eval_when("heads =~ hea").unwrap());
        assert!(eval_when("tails !~ '^hea'").unwrap());
        assert!(!eval_when("'tails' =~ \"^(heads|x)$\"").unwrap());
        assert!(eval_when("42 =~ '^4'").unwrap());
        assert!(eval_when("a =~ '('").is_err());
        assert!(eval_when("1 == ").is_err());
    }

    #[test]
    fn depends_parses_results_and_hyphenated_names() {
        let d = Depends::parse("should-execute-2.Succeeded || (B.Failed && !C)").unwrap();
        assert_eq!(d.tasks(), ["should-execute-2", "B", "C"]);
        // B failed, C did not succeed: the right-hand side holds.
        let ok = d.eval(&|task, result| task == "B" && result == Some(TaskResult::Failed));
        assert!(ok);
        let none = d.eval(&|_, _| false);
        assert!(!none);
        assert!(Depends::parse("A.Bogus").is_err());
        assert!(Depends::parse("A &&").is_err());
    }
}

//! Label and field selectors: the string syntax of `?labelSelector=` / `?fieldSelector=`
//! (as `k8s.io/apimachinery/pkg/labels` and `pkg/fields` parse it), the structured
//! `metav1.LabelSelector` form, and matching against objects.

use std::fmt;

use serde_json::{Map, Value};

use crate::status::ApiError;

/// Why a selector could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The selector text does not follow the grammar.
    #[error("unable to parse requirement: {0}")]
    Syntax(String),
    /// A label key is not a valid qualified name.
    #[error("invalid label key {key:?}: {}", reason.describe("name part"))]
    InvalidKey {
        /// The offending key.
        key: String,
        /// What is wrong with it.
        reason: NameProblem,
    },
    /// A label value is not valid.
    #[error("invalid label value {value:?}: {}", reason.describe("a valid label"))]
    InvalidValue {
        /// The offending value.
        value: String,
        /// What is wrong with it.
        reason: NameProblem,
    },
    /// The operator and values do not fit together (e.g. `in ()`).
    #[error("{0}")]
    Requirement(String),
}

/// What is wrong with a label key or value (the rules of a Kubernetes qualified name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    /// The name part is empty.
    Empty,
    /// The name part is longer than 63 characters.
    TooLong,
    /// A character other than alphanumerics, `-`, `_` and `.`, or a non-alphanumeric end.
    Characters,
    /// More than one `/` in a key.
    Slashes,
    /// The prefix before `/` is not a DNS-1123 subdomain.
    Prefix,
    /// A `matchLabels` value that is not a JSON string.
    NotAString,
}

impl NameProblem {
    /// The message kube-apiserver gives, naming the checked thing `subject` (`name part`,
    /// `a valid label`).
    fn describe(self, subject: &str) -> String {
        match self {
            NameProblem::Empty => format!("{subject} must be non-empty"),
            NameProblem::TooLong => format!("{subject} must be no more than 63 characters"),
            NameProblem::Characters => format!(
                "{subject} must consist of alphanumeric characters, '-', '_' or '.', and must start and end with \
                 an alphanumeric character"
            ),
            NameProblem::Slashes => "a qualified name must consist of at most one '/'".to_owned(),
            NameProblem::Prefix => {
                "prefix part must be a lowercase RFC 1123 subdomain of at most 253 characters".to_owned()
            }
            NameProblem::NotAString => "must be a string".to_owned(),
        }
    }
}

impl From<SelectorError> for ApiError {
    /// Invalid selectors are a 400 BadRequest, as kube-apiserver answers.
    fn from(e: SelectorError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// A label selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabelOp {
    /// `=` / `==` (and `matchLabels`)
    Equals,
    /// `!=`
    NotEquals,
    /// `in (…)`
    In,
    /// `notin (…)`
    NotIn,
    /// bare `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key > n` (integer comparison)
    GreaterThan,
    /// `key < n` (integer comparison)
    LessThan,
}

/// One requirement of a label selector; all of a selector's requirements must hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: LabelOp,
    /// The values (sorted, deduplicated); empty for `Exists`/`DoesNotExist`.
    pub values: Vec<String>,
}

impl LabelRequirement {
    /// Builds a requirement, validating the key, the values and their number.
    pub fn new(key: &str, op: LabelOp, mut values: Vec<String>) -> Result<Self, SelectorError> {
        validate_label_key(key)?;
        values.sort();
        values.dedup();
        match op {
            LabelOp::In | LabelOp::NotIn if values.is_empty() => {
                return Err(SelectorError::Requirement(
                    "for 'in', 'notin' operators, values set can't be empty".into(),
                ));
            }
            LabelOp::Equals | LabelOp::NotEquals if values.len() != 1 => {
                return Err(SelectorError::Requirement("exact-match compatibility requires one single value".into()));
            }
            LabelOp::Exists | LabelOp::DoesNotExist if !values.is_empty() => {
                return Err(SelectorError::Requirement(
                    "values set must be empty for exists and does not exist".into(),
                ));
            }
            LabelOp::GreaterThan | LabelOp::LessThan => {
                if values.len() != 1 {
                    return Err(SelectorError::Requirement(
                        "for 'Gt', 'Lt' operators, exactly one value is required".into(),
                    ));
                }
                if values[0].parse::<i64>().is_err() {
                    return Err(SelectorError::Requirement(
                        "for 'Gt', 'Lt' operators, the value must be an integer".into(),
                    ));
                }
            }
            _ => {}
        }
        for v in &values {
            validate_label_value(v)?;
        }
        Ok(LabelRequirement { key: key.to_string(), op, values })
    }

    /// Whether a label set satisfies this requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = labels.and_then(|l| l.get(&self.key)).and_then(Value::as_str);
        let contains = |v: &str| self.values.iter().any(|x| x == v);
        match self.op {
            LabelOp::Equals | LabelOp::In => value.is_some_and(contains),
            LabelOp::NotEquals | LabelOp::NotIn => !value.is_some_and(contains),
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
            LabelOp::GreaterThan | LabelOp::LessThan => {
                let (Some(have), Some(want)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.op == LabelOp::GreaterThan { have > want } else { have < want }
            }
        }
    }
}

impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        match self.op {
            LabelOp::Equals => write!(f, "{}={first}", self.key),
            LabelOp::NotEquals => write!(f, "{}!={first}", self.key),
            LabelOp::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            LabelOp::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
            LabelOp::Exists => write!(f, "{}", self.key),
            LabelOp::DoesNotExist => write!(f, "!{}", self.key),
            LabelOp::GreaterThan => write!(f, "{}>{first}", self.key),
            LabelOp::LessThan => write!(f, "{}<{first}", self.key),
        }
    }
}

/// A label selector: a conjunction of requirements. The empty selector matches everything;
/// [`LabelSelector::nothing`] matches nothing (what a `null` structured selector means).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<LabelRequirement>,
    nothing: bool,
}

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn check_name_part(s: &str) -> Result<(), NameProblem> {
    if s.is_empty() {
        return Err(NameProblem::Empty);
    }
    if s.len() > 63 {
        return Err(NameProblem::TooLong);
    }
    let ok_ends = s.starts_with(is_alnum) && s.ends_with(is_alnum);
    if !ok_ends || !s.chars().all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.')) {
        return Err(NameProblem::Characters);
    }
    Ok(())
}

/// A DNS-1123 subdomain: lowercase alphanumerics, `-` and `.`, at most 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    let valid_label = |l: &str| {
        !l.is_empty()
            && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    !s.is_empty() && s.len() <= 253 && s.split('.').all(valid_label)
}

/// Validates a label key: `[prefix/]name` (a qualified name).
pub fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let err = |reason| SelectorError::InvalidKey { key: key.to_string(), reason };
    let mut parts = key.split('/');
    let (prefix, name) = match (parts.next(), parts.next(), parts.next()) {
        (Some(name), None, _) => (None, name),
        (Some(prefix), Some(name), None) => (Some(prefix), name),
        _ => return Err(err(NameProblem::Slashes)),
    };
    if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
        return Err(err(NameProblem::Prefix));
    }
    check_name_part(name).map_err(err)
}

/// Validates a label value: empty, or a name part of at most 63 characters.
pub fn validate_label_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() {
        return Ok(());
    }
    check_name_part(value).map_err(|reason| SelectorError::InvalidValue { value: value.to_string(), reason })
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Not,
    NotEq,
    Eq,
    DoubleEq,
    In,
    NotIn,
    Gt,
    Lt,
    Open,
    Close,
    Comma,
    End,
}

impl Tok {
    fn literal(&self) -> &str {
        match self {
            Tok::Ident(s) => s,
            Tok::Not => "!",
            Tok::NotEq => "!=",
            Tok::Eq => "=",
            Tok::DoubleEq => "==",
            Tok::In => "in",
            Tok::NotIn => "notin",
            Tok::Gt => ">",
            Tok::Lt => "<",
            Tok::Open => "(",
            Tok::Close => ")",
            Tok::Comma => ",",
            Tok::End => "",
        }
    }

    /// In value context the keywords are plain identifiers.
    fn as_value(&self) -> Option<String> {
        match self {
            Tok::Ident(s) => Some(s.clone()),
            Tok::In => Some("in".into()),
            Tok::NotIn => Some("notin".into()),
            _ => None,
        }
    }
}

fn lex(input: &str) -> Vec<Tok> {
    let special = |c: char| matches!(c, '!' | '=' | '(' | ')' | ',' | '>' | '<');
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (tok, len) = match (c, next) {
            ('!', Some('=')) => (Tok::NotEq, 2),
            ('!', _) => (Tok::Not, 1),
            ('=', Some('=')) => (Tok::DoubleEq, 2),
            ('=', _) => (Tok::Eq, 1),
            ('>', _) => (Tok::Gt, 1),
            ('<', _) => (Tok::Lt, 1),
            ('(', _) => (Tok::Open, 1),
            (')', _) => (Tok::Close, 1),
            (',', _) => (Tok::Comma, 1),
            _ => {
                let start = i;
                let mut j = i;
                while j < chars.len() && !chars[j].is_whitespace() && !special(chars[j]) {
                    j += 1;
                }
                let word: String = chars[start..j].iter().collect();
                let tok = match word.as_str() {
                    "in" => Tok::In,
                    "notin" => Tok::NotIn,
                    _ => Tok::Ident(word),
                };
                (tok, j - start)
            }
        };
        out.push(tok);
        i += len;
    }
    out.push(Tok::End);
    out
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).unwrap_or(&Tok::End)
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn syntax(msg: String) -> SelectorError {
        SelectorError::Syntax(msg)
    }

    fn requirement(&mut self) -> Result<LabelRequirement, SelectorError> {
        let mut first = self.next();
        let negated = first == Tok::Not;
        if negated {
            first = self.next();
        }
        let Some(key) = first.as_value() else {
            return Err(Self::syntax(format!("found '{}', expected: identifier", first.literal())));
        };
        validate_label_key(&key)?;
        if negated {
            return LabelRequirement::new(&key, LabelOp::DoesNotExist, vec![]);
        }
        if matches!(self.peek(), Tok::End | Tok::Comma) {
            return LabelRequirement::new(&key, LabelOp::Exists, vec![]);
        }
        let op_tok = self.next();
        let op = match op_tok {
            Tok::In => LabelOp::In,
            Tok::NotIn => LabelOp::NotIn,
            Tok::Eq | Tok::DoubleEq => LabelOp::Equals,
            Tok::NotEq => LabelOp::NotEquals,
            Tok::Gt => LabelOp::GreaterThan,
            Tok::Lt => LabelOp::LessThan,
            other => {
                return Err(Self::syntax(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    other.literal()
                )));
            }
        };
        let values = match op {
            LabelOp::In | LabelOp::NotIn => self.value_set()?,
            _ => self.exact_value()?,
        };
        LabelRequirement::new(&key, op, values)
    }

    fn exact_value(&mut self) -> Result<Vec<String>, SelectorError> {
        if matches!(self.peek(), Tok::End | Tok::Comma) {
            return Ok(vec![String::new()]);
        }
        let t = self.next();
        t.as_value()
            .map(|v| vec![v])
            .ok_or_else(|| Self::syntax(format!("found '{}', expected: identifier", t.literal())))
    }

    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        let open = self.next();
        if open != Tok::Open {
            return Err(Self::syntax(format!("found '{}', expected: '('", open.literal())));
        }
        let mut values = Vec::new();
        if *self.peek() == Tok::Close {
            self.next();
            return Ok(values);
        }
        // Values separated by commas; an empty slot (`(a,)`, `(,a)`) is the empty value.
        let mut expect_value = true;
        loop {
            let t = self.next();
            match t {
                Tok::Close => {
                    if expect_value {
                        values.push(String::new());
                    }
                    return Ok(values);
                }
                Tok::Comma => {
                    if expect_value {
                        values.push(String::new());
                    }
                    expect_value = true;
                }
                ref other if expect_value && other.as_value().is_some() => {
                    values.extend(other.as_value());
                    expect_value = false;
                }
                other => {
                    return Err(Self::syntax(format!("found '{}', expected: ',', ')' or identifier", other.literal())));
                }
            }
        }
    }
}

impl LabelSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// The selector that matches nothing.
    pub fn nothing() -> Self {
        LabelSelector { requirements: Vec::new(), nothing: true }
    }

    /// Parses the string syntax (`a=b,c in (x,y),!d`). The empty string matches everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut p = Parser { toks: lex(s), pos: 0 };
        let mut requirements = Vec::new();
        loop {
            match p.peek() {
                Tok::End => break,
                Tok::Not | Tok::Ident(_) | Tok::In | Tok::NotIn => {}
                other => {
                    return Err(Parser::syntax(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        other.literal()
                    )));
                }
            }
            requirements.push(p.requirement()?);
            match p.next() {
                Tok::End => break,
                Tok::Comma => {
                    if !matches!(p.peek(), Tok::Not | Tok::Ident(_) | Tok::In | Tok::NotIn) {
                        return Err(Parser::syntax(format!(
                            "found '{}', expected: identifier after ','",
                            p.peek().literal()
                        )));
                    }
                }
                other => {
                    return Err(Parser::syntax(format!(
                        "found '{}', expected: ',' or 'end of string'",
                        other.literal()
                    )));
                }
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements, nothing: false })
    }

    /// Builds a selector from the structured `metav1.LabelSelector` JSON
    /// (`{matchLabels, matchExpressions: [{key, operator, values}]}`). `null` matches nothing,
    /// `{}` matches everything, as `LabelSelectorAsSelector` does.
    pub fn from_json(v: &Value) -> Result<Self, SelectorError> {
        let obj = match v {
            Value::Null => return Ok(Self::nothing()),
            Value::Object(o) => o,
            _ => return Err(SelectorError::Syntax("label selector must be an object".into())),
        };
        let mut requirements = Vec::new();
        if let Some(ml) = obj.get("matchLabels").filter(|v| !v.is_null()) {
            let Value::Object(ml) = ml else {
                return Err(SelectorError::Syntax("matchLabels must be an object".into()));
            };
            let mut sel = Self::from_match_labels(ml)?;
            requirements.append(&mut sel.requirements);
        }
        if let Some(exprs) = obj.get("matchExpressions").filter(|v| !v.is_null()) {
            let Value::Array(exprs) = exprs else {
                return Err(SelectorError::Syntax("matchExpressions must be a list".into()));
            };
            for e in exprs {
                let key = e.get("key").and_then(Value::as_str).unwrap_or("");
                let op = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                    "In" => LabelOp::In,
                    "NotIn" => LabelOp::NotIn,
                    "Exists" => LabelOp::Exists,
                    "DoesNotExist" => LabelOp::DoesNotExist,
                    other => {
                        return Err(SelectorError::Requirement(format!(
                            "{other:?} is not a valid label selector operator"
                        )));
                    }
                };
                let mut values = Vec::new();
                for v in e.get("values").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]) {
                    let Some(s) = v.as_str() else {
                        return Err(SelectorError::Syntax("matchExpressions values must be strings".into()));
                    };
                    values.push(s.to_string());
                }
                requirements.push(LabelRequirement::new(key, op, values)?);
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements, nothing: false })
    }

    /// Builds an equality selector from a plain label map (a Service's `spec.selector`,
    /// `matchLabels`). Non-string values are rejected.
    pub fn from_match_labels(labels: &Map<String, Value>) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (k, v) in labels {
            let Some(s) = v.as_str() else {
                return Err(SelectorError::InvalidValue { value: v.to_string(), reason: NameProblem::NotAString });
            };
            requirements.push(LabelRequirement::new(k, LabelOp::Equals, vec![s.to_string()])?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements, nothing: false })
    }

    /// Whether the object labels satisfy every requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True for the match-everything selector.
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[LabelRequirement] {
        &self.requirements
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.requirements.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// A field selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldOp {
    /// `=` or `==`
    Equals,
    /// `!=`
    NotEquals,
}

/// One `field=value` / `field!=value` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The dotted field path, e.g. `spec.nodeName`.
    pub field: String,
    /// The operator.
    pub op: FieldOp,
    /// The unescaped value.
    pub value: String,
}

/// A field selector: a conjunction of [`FieldRequirement`]s. Empty matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    terms: Vec<FieldRequirement>,
}

/// Splits on commas not preceded by a backslash escape.
fn split_unescaped_commas(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            cur.push(c);
            escaped = true;
        } else if c == ',' {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

/// Undoes `\\`, `\,`, `\=`; rejects other escapes and unescaped `,`/`=` (as `fields.UnescapeValue`).
fn unescape_field_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(SelectorError::Syntax(format!("invalid field selector: invalid escape sequence: \\{c}")));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(SelectorError::Syntax(format!("invalid field selector: unescaped character {c:?}")));
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::Syntax("invalid field selector: invalid escape sequence: \\".into()));
    }
    Ok(out)
}

/// Resolves a dotted path to the string form a field set would hold (missing/null: `""`).
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for seg in path.split('.') {
        match cur.get(seg) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl FieldSelector {
    /// Parses `a=b,c!=d` (also `==`); values may escape `\,` `\=` `\\`. Empty matches everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in split_unescaped_commas(s) {
            if part.is_empty() {
                continue;
            }
            let (field, op, raw) = split_term(&part)
                .ok_or_else(|| SelectorError::Syntax(format!("invalid selector: '{s}'; can't understand '{part}'")))?;
            let field = field.trim();
            if field.is_empty() {
                return Err(SelectorError::Syntax(format!("invalid selector: '{s}'; empty field in '{part}'")));
            }
            terms.push(FieldRequirement { field: field.to_string(), op, value: unescape_field_value(raw)? });
        }
        Ok(FieldSelector { terms })
    }

    /// The field paths the selector uses, in order (so a server can reject unsupported ones).
    pub fn requirements(&self) -> Vec<&str> {
        self.terms.iter().map(|t| t.field.as_str()).collect()
    }

    /// The full terms.
    pub fn terms(&self) -> &[FieldRequirement] {
        &self.terms
    }

    /// The value required by an `=` term on `field`, if any (e.g. `metadata.name` for a watch
    /// of one object).
    pub fn exact_match(&self, field: &str) -> Option<&str> {
        self.terms.iter().find(|t| t.field == field && t.op == FieldOp::Equals).map(|t| t.value.as_str())
    }

    /// True when the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// Whether the object satisfies every term.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let have = field_value(obj, &t.field);
            match t.op {
                FieldOp::Equals => have == t.value,
                FieldOp::NotEquals => have != t.value,
            }
        })
    }
}

/// Finds the first unescaped operator (`!=`, `==`, `=`), as `fields.splitTerm`.
fn split_term(term: &str) -> Option<(&str, FieldOp, &str)> {
    let mut chars = term.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            // Skip the escaped character, whatever its width.
            chars.next();
            continue;
        }
        for (op, kind) in [("!=", FieldOp::NotEquals), ("==", FieldOp::Equals), ("=", FieldOp::Equals)] {
            if term[i..].starts_with(op) {
                return Some((&term[..i], kind, &term[i + op.len()..]));
            }
        }
    }
    None
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| {
                let v = t.value.replace('\\', "\\\\").replace(',', "\\,").replace('=', "\\=");
                match t.op {
                    FieldOp::Equals => format!("{}={v}", t.field),
                    FieldOp::NotEquals => format!("{}!={v}", t.field),
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selectors_with_non_ascii_text_do_not_panic() {
        assert!(FieldSelector::parse("é").is_err(), "no operator");
        let s = FieldSelector::parse("metadata.name=café,spec.nodeName!=é").unwrap();
        assert!(s.matches(&serde_json::json!({"metadata":{"name":"café"}})));
        // An escaped multi-byte character before the operator used to slice inside it.
        let escaped = FieldSelector::parse("a\\é=x");
        assert_eq!(escaped.unwrap().requirements(), vec!["a\\é"]);
    }
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn equality() {
        let l = labels(json!({"app": "web", "tier": "fe"}));
        assert!(sel("app=web").matches(Some(&l)));
        assert!(sel("app==web").matches(Some(&l)));
        assert!(!sel("app=db").matches(Some(&l)));
        assert!(sel("app!=db").matches(Some(&l)));
        assert!(sel("missing!=x").matches(Some(&l)));
        assert!(!sel("app!=web").matches(Some(&l)));
        assert!(sel("app=web,tier=fe").matches(Some(&l)));
        assert!(!sel("app=web,tier=be").matches(Some(&l)));
        assert!(!sel("app=web").matches(None));
        assert!(sel("app!=web").matches(None));
    }

    #[test]
    fn sets_and_existence() {
        let l = labels(json!({"env": "prod", "team": "a"}));
        assert!(sel("env in (prod, staging)").matches(Some(&l)));
        assert!(!sel("env in (dev)").matches(Some(&l)));
        assert!(sel("env notin (dev,qa)").matches(Some(&l)));
        assert!(!sel("env notin (prod)").matches(Some(&l)));
        assert!(sel("absent notin (prod)").matches(Some(&l)));
        assert!(sel("team").matches(Some(&l)));
        assert!(!sel("nope").matches(Some(&l)));
        assert!(sel("!nope").matches(Some(&l)));
        assert!(!sel("!team").matches(Some(&l)));
        assert!(sel("  env in (prod) ,  team , ! nope ").matches(Some(&l)));
        let l2 = labels(json!({"n": "5"}));
        assert!(sel("n>3").matches(Some(&l2)));
        assert!(!sel("n<3").matches(Some(&l2)));
    }

    #[test]
    fn empty_values() {
        let l = labels(json!({"a": ""}));
        assert!(sel("a=").matches(Some(&l)));
        assert!(sel("a in (,x)").matches(Some(&l)));
        assert!(sel("a in (x,)").matches(Some(&l)));
        assert!(!sel("a in (x)").matches(Some(&l)));
    }

    #[test]
    fn keys_with_prefix_and_keyword_values() {
        let l = labels(json!({"node-role.kubernetes.io/edge": "", "x": "in"}));
        assert!(sel("node-role.kubernetes.io/edge").matches(Some(&l)));
        assert!(sel("x=in").matches(Some(&l)));
        assert!(sel("x in (in,notin)").matches(Some(&l)));
    }

    #[test]
    fn empty_selector() {
        let s = sel("");
        assert!(s.is_empty());
        assert!(s.matches(None));
        assert!(sel("   ").is_empty());
        assert!(!LabelSelector::nothing().matches(None));
        assert!(!LabelSelector::nothing().is_empty());
    }

    #[test]
    fn syntax_errors() {
        for bad in [
            "a=b,",
            ",a",
            "a in (x",
            "a in x",
            "a in ()",
            "a notin ()",
            "=b",
            "a b",
            "!a=b",
            "a=(b)",
            "a==",
            "a=b=c",
            "a>x",
            "a=b c",
            "-a=b",
            "a/b/c=d",
            "Foo.com/a=b",
            "a=-bad",
            "a in (b c)",
        ] {
            if bad == "a==" {
                // `a==` is the empty value, like `a=`.
                assert!(LabelSelector::parse(bad).is_ok());
                continue;
            }
            assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should fail");
        }
        let long = "a".repeat(64);
        assert!(matches!(LabelSelector::parse(&long), Err(SelectorError::InvalidKey { .. })));
        assert!(matches!(LabelSelector::parse(&format!("a={long}")), Err(SelectorError::InvalidValue { .. })));
        assert!(LabelSelector::parse(&format!("example.com/{}", "a".repeat(63))).is_ok());
    }

    #[test]
    fn display_is_canonical() {
        assert_eq!(sel("b in (y,x), a=1, !c").to_string(), "a=1,b in (x,y),!c");
    }

    #[test]
    fn structured_form() {
        let s = LabelSelector::from_json(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "qa"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .expect("valid");
        assert!(s.matches(Some(&labels(json!({"app": "web", "env": "qa"})))));
        assert!(!s.matches(Some(&labels(json!({"app": "web", "env": "qa", "canary": "1"})))));
        assert!(LabelSelector::from_json(&json!({})).expect("empty").is_empty());
        assert!(!LabelSelector::from_json(&Value::Null).expect("null").matches(None));
        assert!(LabelSelector::from_json(&json!({"matchExpressions": [{"key": "a", "operator": "Foo"}]})).is_err());
        assert!(LabelSelector::from_json(&json!({"matchExpressions": [{"key": "a", "operator": "In"}]})).is_err());
        assert!(
            LabelSelector::from_json(
                &json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})
            )
            .is_err()
        );
        let svc = LabelSelector::from_match_labels(&labels(json!({"app": "web"}))).expect("map");
        assert!(svc.matches(Some(&labels(json!({"app": "web", "x": "y"})))));
    }

    #[test]
    fn field_selector_basics() {
        let pod = json!({"metadata": {"name": "p1", "namespace": "default"},
                         "spec": {"nodeName": "edge-1", "hostNetwork": true},
                         "status": {"phase": "Running"}});
        let f = FieldSelector::parse("spec.nodeName=edge-1,status.phase!=Failed").expect("valid");
        assert_eq!(f.requirements(), vec!["spec.nodeName", "status.phase"]);
        assert!(f.matches(&pod));
        assert!(FieldSelector::parse("metadata.name==p1").expect("v").matches(&pod));
        assert!(!FieldSelector::parse("metadata.name=p2").expect("v").matches(&pod));
        assert!(FieldSelector::parse("spec.hostNetwork=true").expect("v").matches(&pod));
        assert!(FieldSelector::parse("spec.missing=").expect("v").matches(&pod));
        assert!(FieldSelector::parse("spec.missing!=x").expect("v").matches(&pod));
        assert!(FieldSelector::parse("").expect("empty").is_empty());
        assert!(FieldSelector::parse("a=b,").expect("trailing comma is skipped").matches(&json!({"a": "b"})));
        assert_eq!(FieldSelector::parse("metadata.name=x").expect("v").exact_match("metadata.name"), Some("x"));
        let ev = json!({"involvedObject": {"kind": "Pod"}, "type": "Warning", "reason": "Failed", "count": 3});
        assert!(
            FieldSelector::parse("involvedObject.kind=Pod,type=Warning,reason=Failed,count=3").expect("v").matches(&ev)
        );
    }

    #[test]
    fn errors_become_bad_requests() {
        let e: ApiError = LabelSelector::parse("a in (").map(|_| ()).expect_err("invalid").into();
        assert_eq!(e.code, 400);
        assert!(e.message.starts_with("unable to parse requirement"), "{}", e.message);
    }

    #[test]
    fn field_selector_escapes() {
        let f = FieldSelector::parse(r"metadata.name=a\,b\=c\\d,x!=y").expect("valid");
        assert_eq!(f.terms()[0].value, r"a,b=c\d");
        assert_eq!(f.terms()[1].op, FieldOp::NotEquals);
        assert!(f.matches(&json!({"metadata": {"name": "a,b=c\\d"}})));
        assert_eq!(f.to_string(), r"metadata.name=a\,b\=c\\d,x!=y");
        assert!(FieldSelector::parse(r"a=b\x").is_err());
        assert!(FieldSelector::parse(r"a=b\").is_err());
        assert!(FieldSelector::parse("a=b=c").is_err());
        assert!(FieldSelector::parse("novalue").is_err());
        assert!(FieldSelector::parse("=x").is_err());
    }
}

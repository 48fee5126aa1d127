//! The template functions the chart uses, each behaving as Go's text/template, Helm or sprig
//! define it. A template calling any other function fails to parse, as Go's does, so the
//! chart cannot drift into what keadm does not implement.

use kubeedge_model::go::quote as go_quote;

use super::exec::Exec;
use crate::chart::value::Value;

/// Every function name a template may call.
pub const KNOWN: &[&str] =
    &["and", "or", "not", "eq", "include", "toYaml", "nindent", "quote", "required", "first", "compact"];

/// Calls `name` with evaluated `args` (a piped value is the last one).
pub fn call(exec: &Exec<'_>, name: &str, args: Vec<Value>) -> Result<Value, String> {
    match (name, args.as_slice()) {
        ("not", [v]) => Ok(Value::Bool(!v.truthy())),
        ("eq", [first, rest @ ..]) if !rest.is_empty() => {
            for other in rest {
                if equal(first, other)? {
                    return Ok(Value::Bool(true));
                }
            }
            Ok(Value::Bool(false))
        }
        ("include", [Value::Str(template), data]) => {
            exec.include(template, data).map(Value::Str).map_err(|e| e.to_string())
        }
        // Helm: yaml.Marshal, without the final newline.
        ("toYaml", [v]) => {
            let yaml = yaml_serde::to_string(&v.to_json()).map_err(|e| e.to_string())?;
            Ok(Value::Str(quote_yaml11_words(yaml.trim_end_matches('\n'))))
        }
        // sprig: a newline, then every line indented.
        ("nindent", [spaces, Value::Str(s)]) => {
            let pad = " ".repeat(count(spaces)?);
            Ok(Value::Str(format!("\n{pad}{}", s.replace('\n', &format!("\n{pad}")))))
        }
        // sprig: each non-nil argument as a Go-quoted string, space-separated.
        ("quote", args) => {
            let quoted: Vec<String> = args
                .iter()
                .filter(|v| **v != Value::Nil)
                .map(|v| {
                    let mut s = String::new();
                    v.print(&mut s);
                    go_quote(&s)
                })
                .collect();
            Ok(Value::Str(quoted.join(" ")))
        }
        // Helm: nil and "" are missing.
        ("required", [Value::Str(msg), v]) => match v {
            Value::Nil => Err(msg.clone()),
            Value::Str(s) if s.is_empty() => Err(msg.clone()),
            v => Ok(v.clone()),
        },
        ("first", [Value::List(l)]) => Ok(l.first().cloned().unwrap_or(Value::Nil)),
        ("compact", [Value::List(l)]) => Ok(Value::List(l.iter().filter(|v| v.truthy()).cloned().collect())),
        (_, args) => {
            Err(format!("wrong arguments: {}", args.iter().map(Value::type_name).collect::<Vec<_>>().join(", ")))
        }
    }
}

/// Go's `eq` for basic values: the same kind and value; anything else is an error.
fn equal(a: &Value, b: &Value) -> Result<bool, String> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Ok(x == y),
        (Value::Bool(x), Value::Bool(y)) => Ok(x == y),
        (Value::Int(x), Value::Int(y)) => Ok(x == y),
        (Value::Float(x), Value::Float(y)) => Ok(x == y),
        (x, y) => Err(format!("incompatible types for comparison: {} and {}", x.type_name(), y.type_name())),
    }
}

fn count(v: &Value) -> Result<usize, String> {
    match v {
        Value::Int(i) if *i >= 0 => Ok(*i as usize),
        Value::Float(f) if *f >= 0.0 && f.fract() == 0.0 => Ok(*f as usize),
        other => Err(format!("expected a count, got {}", other.type_name())),
    }
}

/// Words a YAML 1.1 reader (go-yaml v2: kubectl, helm) takes for booleans, which a YAML 1.2
/// emitter writes unquoted as strings. `true`/`false` are not among them: a 1.2 emitter quotes
/// those strings already, and an unquoted one is a real boolean.
const YAML11_WORDS: &[&str] =
    &["y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF"];

/// Double-quotes plain scalars (keys, values, list items) that are [`YAML11_WORDS`], as helm's
/// yaml.Marshal does, so `toYaml` output read by kubectl keeps them strings. Lines inside block
/// scalars (`|`, `>`) are content and stay as they are.
pub(super) fn quote_yaml11_words(yaml: &str) -> String {
    let word = |s: &str| YAML11_WORDS.contains(&s);
    let mut out = Vec::new();
    let mut block: Option<usize> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(b) = block {
            if line.trim().is_empty() || indent > b {
                out.push(line.to_owned());
                continue;
            }
            block = None;
        }
        let mut rest = &line[indent..];
        let mut prefix = line[..indent].to_owned();
        while let Some(r) = rest.strip_prefix("- ") {
            prefix.push_str("- ");
            rest = r;
        }
        let (key, value) = match rest.split_once(": ") {
            Some((k, v)) => (Some(k), Some(v)),
            None => match rest.strip_suffix(':') {
                Some(k) => (Some(k), None),
                None => (None, Some(rest)),
            },
        };
        let mut text = prefix;
        if let Some(k) = key {
            text.push_str(&if word(k) { format!("\"{k}\"") } else { k.to_owned() });
            text.push(':');
            if value.is_some() {
                text.push(' ');
            }
        }
        if let Some(v) = value {
            if v.starts_with('|') || v.starts_with('>') {
                block = Some(indent);
            }
            text.push_str(&if word(v) { format!("\"{v}\"") } else { v.to_owned() });
        }
        out.push(text);
    }
    out.join("\n")
}

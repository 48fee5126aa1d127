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
            Ok(Value::Str(yaml.trim_end_matches('\n').to_owned()))
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

//! Executing a parsed template against values, with Go's semantics: dot and `$`, variables
//! scoped to their block, fields of maps (a missing key is nil; a field of nil is an error),
//! pipelines passing the previous result as the last argument, `range` over lists and over
//! maps in key order.

use std::collections::HashMap;

use super::Error;
use super::funcs;
use super::parse::{Arg, BlockKind, Node, Pipeline};
use crate::chart::value::Value;

/// Helm's limit on nested `include`s (a template that includes itself).
const MAX_DEPTH: usize = 1000;

/// What executing one file needs: the named templates of the whole chart.
pub struct Exec<'a> {
    pub(super) defines: &'a HashMap<String, Vec<Node>>,
    /// The file being rendered, for errors.
    pub(super) file: &'a str,
    pub(super) depth: usize,
}

/// The variables in scope: a stack of `(name, value)`, cut back at the end of each block.
struct Scope {
    vars: Vec<(String, Value)>,
}

impl Scope {
    fn get(&self, name: &str) -> Option<&Value> {
        self.vars.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn set(&mut self, name: &str, v: Value) -> bool {
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = v;
                true
            }
            None => false,
        }
    }
}

impl Exec<'_> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Exec { file: self.file.to_owned(), msg: msg.into() }
    }

    /// Renders `nodes` with `dot` as both `.` and `$`.
    pub fn run(&self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), Error> {
        let mut scope = Scope { vars: vec![("$".to_owned(), dot.clone())] };
        self.walk(nodes, dot, &mut scope, out)
    }

    fn walk(&self, nodes: &[Node], dot: &Value, scope: &mut Scope, out: &mut String) -> Result<(), Error> {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipeline(p, dot, scope)?;
                    if p.vars.is_empty() {
                        v.print(out);
                    }
                }
                Node::Template { name, pipe } => {
                    let data = match pipe {
                        Some(p) => self.pipeline(p, dot, scope)?,
                        None => Value::Nil,
                    };
                    out.push_str(&self.include(name, &data)?);
                }
                Node::Block { kind, pipe, body, otherwise } => {
                    let mark = scope.vars.len();
                    let v = self.pipeline(pipe, dot, scope)?;
                    match kind {
                        BlockKind::If if v.truthy() => self.walk(body, dot, scope, out)?,
                        BlockKind::With if v.truthy() => self.walk(body, &v, scope, out)?,
                        BlockKind::Range => self.range(pipe, &v, body, otherwise, dot, scope, out)?,
                        _ => self.walk(otherwise, dot, scope, out)?,
                    }
                    scope.vars.truncate(mark);
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn range(
        &self,
        pipe: &Pipeline,
        v: &Value,
        body: &[Node],
        otherwise: &[Node],
        dot: &Value,
        scope: &mut Scope,
        out: &mut String,
    ) -> Result<(), Error> {
        let items: Vec<(Value, Value)> = match v {
            Value::List(l) => l.iter().enumerate().map(|(i, x)| (Value::Int(i as i64), x.clone())).collect(),
            Value::Map(m) => m.iter().map(|(k, x)| (Value::Str(k.clone()), x.clone())).collect(),
            Value::Nil => Vec::new(),
            other => return Err(self.err(format!("range can't iterate over {}", other.type_name()))),
        };
        if items.is_empty() {
            return self.walk(otherwise, dot, scope, out);
        }
        let mark = scope.vars.len();
        for (key, item) in items {
            // `range $v := …` binds the element; `range $k, $v := …` the key and element.
            match pipe.vars.as_slice() {
                [v] => scope.vars.push((v.clone(), item.clone())),
                [k, v] => {
                    scope.vars.push((k.clone(), key));
                    scope.vars.push((v.clone(), item.clone()));
                }
                _ => {}
            }
            self.walk(body, &item, scope, out)?;
            scope.vars.truncate(mark);
        }
        Ok(())
    }

    fn pipeline(&self, p: &Pipeline, dot: &Value, scope: &mut Scope) -> Result<Value, Error> {
        let mut last: Option<Value> = None;
        for cmd in &p.cmds {
            last = Some(self.command(cmd, dot, scope, last.take())?);
        }
        let v = last.unwrap_or(Value::Nil);
        for name in &p.vars {
            if p.assign {
                if !scope.set(name, v.clone()) {
                    return Err(self.err(format!("undefined variable: {name}")));
                }
            } else {
                scope.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn command(&self, cmd: &[Arg], dot: &Value, scope: &mut Scope, piped: Option<Value>) -> Result<Value, Error> {
        if let Some(Arg::Func(name)) = cmd.first() {
            // `and`/`or` stop at the first falsy/truthy argument, as Go's do.
            if name == "and" || name == "or" {
                let want = name == "and";
                let mut last = Value::Nil;
                for a in &cmd[1..] {
                    last = self.arg(a, dot, scope)?;
                    if last.truthy() != want {
                        return Ok(last);
                    }
                }
                return Ok(piped.unwrap_or(last));
            }
            let mut args = cmd[1..].iter().map(|a| self.arg(a, dot, scope)).collect::<Result<Vec<_>, _>>()?;
            args.extend(piped);
            return funcs::call(self, name, args).map_err(|msg| self.err(format!("{name}: {msg}")));
        }
        if piped.is_some() || cmd.len() > 1 {
            return Err(self.err("can't give an argument to a non-function"));
        }
        self.arg(&cmd[0], dot, scope)
    }

    fn arg(&self, a: &Arg, dot: &Value, scope: &mut Scope) -> Result<Value, Error> {
        match a {
            Arg::Dot(fields) => self.fields(dot.clone(), fields),
            Arg::Var(name, fields) => {
                let v = scope.get(name).cloned().ok_or_else(|| self.err(format!("undefined variable: {name}")))?;
                self.fields(v, fields)
            }
            Arg::Paren(p, fields) => {
                let v = self.pipeline(p, dot, scope)?;
                self.fields(v, fields)
            }
            Arg::Lit(v) => Ok(v.clone()),
            Arg::Func(name) => funcs::call(self, name, Vec::new()).map_err(|m| self.err(format!("{name}: {m}"))),
        }
    }

    fn fields(&self, mut v: Value, fields: &[String]) -> Result<Value, Error> {
        for f in fields {
            v = match v {
                Value::Map(mut m) => m.remove(f).unwrap_or(Value::Nil),
                Value::Nil => return Err(self.err(format!("nil pointer evaluating interface {{}}.{f}"))),
                other => return Err(self.err(format!("can't evaluate field {f} in type {}", other.type_name()))),
            };
        }
        Ok(v)
    }

    /// Renders the named template with `data` as dot (`include`, `{{ template }}`).
    pub(super) fn include(&self, name: &str, data: &Value) -> Result<String, Error> {
        let body = self.defines.get(name).ok_or_else(|| self.err(format!("no template {name:?}")))?;
        if self.depth >= MAX_DEPTH {
            return Err(self.err(format!("rendering template {name:?} has a nested reference to itself")));
        }
        let inner = Exec { defines: self.defines, file: self.file, depth: self.depth + 1 };
        let mut out = String::new();
        inner.run(body, data, &mut out)?;
        Ok(out)
    }
}

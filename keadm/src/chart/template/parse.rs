//! Parsing Go's text/template syntax into a tree: text, `{{ }}` actions with `{{-`/`-}}`
//! trimming and `/* */` comments, pipelines (`a | f b`), variables (`$x := …`), and the
//! `if`/`else if`/`else`, `with`, `range`, `define` and `template` actions.

use super::Error;

/// One node of a parsed template.
#[derive(Debug, Clone)]
pub enum Node {
    /// Literal text.
    Text(String),
    /// `{{ pipeline }}`: prints its value unless it declares a variable.
    Action(Pipeline),
    /// `{{ if }}`, `{{ with }}` (which sets dot) or `{{ range }}`, each with an else branch.
    Block { kind: BlockKind, pipe: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
    /// `{{ template "name" pipeline }}`.
    Template { name: String, pipe: Option<Pipeline> },
}

/// Which control action a [`Node::Block`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// `if`.
    If,
    /// `with`.
    With,
    /// `range`.
    Range,
}

/// `$a, $b := cmd | cmd …`.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    /// Variables declared (`:=`) or assigned (`=`).
    pub vars: Vec<String>,
    /// Whether the variables are assigned rather than declared.
    pub assign: bool,
    /// The commands; each one's result is the last argument of the next.
    pub cmds: Vec<Vec<Arg>>,
}

/// One argument (or the function name) of a command.
#[derive(Debug, Clone)]
pub enum Arg {
    /// `.` or `.A.B` (fields of dot).
    Dot(Vec<String>),
    /// `$` or `$x.A.B`.
    Var(String, Vec<String>),
    /// A function name.
    Func(String),
    /// `( pipeline )` with optional fields after it.
    Paren(Box<Pipeline>, Vec<String>),
    /// A literal.
    Lit(crate::chart::value::Value),
}

/// A parsed file: its top-level nodes and the templates it defines.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The body.
    pub nodes: Vec<Node>,
    /// `{{ define "name" }}` bodies.
    pub defines: Vec<(String, Vec<Node>)>,
}

/// Parses `src` (named `file` in errors); `known` says whether a function exists.
pub fn parse(file: &str, src: &str, known: &dyn Fn(&str) -> bool) -> Result<Parsed, Error> {
    let items = split(file, src)?;
    let mut p = Parser { file, items, pos: 0, known, defines: Vec::new() };
    let (nodes, end) = p.nodes()?;
    if let Some(end) = end {
        return Err(p.err(end.1, format!("unexpected {{{{{}}}}}", end.0)));
    }
    Ok(Parsed { nodes, defines: p.defines })
}

/// Text and actions, with trimming applied; an action keeps its line for errors.
enum Item {
    Text(String),
    Action(String, usize),
}

fn split(file: &str, src: &str) -> Result<Vec<Item>, Error> {
    let mut items = Vec::new();
    let mut rest = src;
    let mut line = 1;
    let mut trim_next = false;
    while !rest.is_empty() {
        let (text, after) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut text = if trim_next { text.trim_start() } else { text };
        line += rest[..rest.len() - after.map_or(0, |a| a.len() + 2)].matches('\n').count();
        let Some(after) = after else {
            items.push(Item::Text(text.to_owned()));
            break;
        };
        // `{{- ` trims the text before; the dash must be followed by a space.
        let (trim_before, body) = match after.strip_prefix("- ").or_else(|| after.strip_prefix("-\n")) {
            Some(b) => (true, b),
            None => (false, after),
        };
        if trim_before {
            text = text.trim_end();
        }
        if !text.is_empty() {
            items.push(Item::Text(text.to_owned()));
        }
        let end = find_close(body).ok_or_else(|| Error::Parse {
            file: file.to_owned(),
            line,
            msg: "unclosed action".into(),
        })?;
        let mut inner = &body[..end];
        trim_next = inner.ends_with(" -") || inner.ends_with("\n-");
        if trim_next {
            inner = &inner[..inner.len() - 2];
        }
        let inner = inner.trim();
        if !(inner.starts_with("/*") && inner.ends_with("*/")) {
            items.push(Item::Action(inner.to_owned(), line));
        }
        line += body[..end].matches('\n').count();
        rest = &body[end + 2..];
    }
    Ok(items)
}

/// The offset of the `}}` closing an action, skipping quoted strings and comments.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => i += s[i + 1..].find('`')? + 1,
            b'/' if b[i + 1] == b'*' => i += s[i..].find("*/")? + 1,
            b'}' if b[i + 1] == b'}' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The action that ended a list of nodes (`end`, `else …`) and its line; `None` at the end of
/// the input.
type Ending = Option<(String, usize)>;

struct Parser<'a> {
    file: &'a str,
    items: Vec<Item>,
    pos: usize,
    known: &'a dyn Fn(&str) -> bool,
    defines: Vec<(String, Vec<Node>)>,
}

impl Parser<'_> {
    fn err(&self, line: usize, msg: String) -> Error {
        Error::Parse { file: self.file.to_owned(), line, msg }
    }

    /// Nodes up to an `else …` or `end` (returned with its line) or the end of input.
    fn nodes(&mut self) -> Result<(Vec<Node>, Ending), Error> {
        let mut out = Vec::new();
        while self.pos < self.items.len() {
            let (action, line) = match &self.items[self.pos] {
                Item::Text(t) => {
                    out.push(Node::Text(t.clone()));
                    self.pos += 1;
                    continue;
                }
                Item::Action(a, line) => (a.clone(), *line),
            };
            self.pos += 1;
            let (word, rest) = action.split_once(char::is_whitespace).unwrap_or((&action, ""));
            let rest = rest.trim();
            match word {
                "end" | "else" => return Ok((out, Some((action.clone(), line)))),
                "if" | "with" | "range" => out.push(self.block(word, rest, line)?),
                "define" => {
                    let name = string_literal(rest).ok_or_else(|| self.err(line, "define needs a name".into()))?;
                    let (body, end) = self.nodes()?;
                    if end.as_ref().map(|e| e.0.as_str()) != Some("end") {
                        return Err(self.err(line, format!("define {name:?} has no {{{{end}}}}")));
                    }
                    self.defines.push((name, body));
                }
                "template" => {
                    let (name_src, arg) = match rest.find(char::is_whitespace) {
                        Some(i) => (&rest[..i], rest[i..].trim()),
                        None => (rest, ""),
                    };
                    let name =
                        string_literal(name_src).ok_or_else(|| self.err(line, "template needs a name".into()))?;
                    let pipe = if arg.is_empty() { None } else { Some(self.pipeline(arg, line)?) };
                    out.push(Node::Template { name, pipe });
                }
                _ => out.push(Node::Action(self.pipeline(&action, line)?)),
            }
        }
        Ok((out, None))
    }

    fn block(&mut self, word: &str, src: &str, line: usize) -> Result<Node, Error> {
        let kind = match word {
            "if" => BlockKind::If,
            "with" => BlockKind::With,
            _ => BlockKind::Range,
        };
        let pipe = self.pipeline(src, line)?;
        let (body, end) = self.nodes()?;
        let Some((end, end_line)) = end else {
            return Err(self.err(line, format!("{{{{{word}}}}} has no {{{{end}}}}")));
        };
        let otherwise = if end == "end" {
            Vec::new()
        } else if end == "else" {
            let (nodes, end) = self.nodes()?;
            if end.as_ref().map(|e| e.0.as_str()) != Some("end") {
                return Err(self.err(end_line, format!("{{{{else}}}} of {word} has no {{{{end}}}}")));
            }
            nodes
        } else {
            // `else if …` / `else with …`: a nested block sharing the outer `end`.
            let chained = end["else".len()..].trim();
            let (w, rest) = chained.split_once(char::is_whitespace).unwrap_or((chained, ""));
            if w != word || word == "range" {
                return Err(self.err(end_line, format!("unexpected {{{{{end}}}}}")));
            }
            vec![self.block(w, rest.trim(), end_line)?]
        };
        Ok(Node::Block { kind, pipe, body, otherwise })
    }

    fn pipeline(&self, src: &str, line: usize) -> Result<Pipeline, Error> {
        let tokens = lex(src).map_err(|m| self.err(line, m))?;
        let mut pos = 0;
        let p = self.pipe_tokens(&tokens, &mut pos, line)?;
        if pos != tokens.len() {
            return Err(self.err(line, format!("unexpected {:?} in {src:?}", tokens[pos])));
        }
        Ok(p)
    }

    fn pipe_tokens(&self, t: &[Tok], pos: &mut usize, line: usize) -> Result<Pipeline, Error> {
        let mut p = Pipeline::default();
        // Declarations: `$x :=`, `$i, $v :=`, `$x =`.
        let mut look = *pos;
        let mut vars = Vec::new();
        while let Some(Tok::Var(v, f)) = t.get(look)
            && f.is_empty()
        {
            vars.push(v.clone());
            look += 1;
            match t.get(look) {
                Some(Tok::Comma) => look += 1,
                Some(Tok::Declare) | Some(Tok::Assign) => {
                    p.assign = t[look] == Tok::Assign;
                    p.vars = std::mem::take(&mut vars);
                    *pos = look + 1;
                    break;
                }
                _ => break,
            }
        }
        let mut cmd = Vec::new();
        while let Some(tok) = t.get(*pos) {
            *pos += 1;
            let arg = match tok {
                Tok::Pipe => {
                    if cmd.is_empty() {
                        return Err(self.err(line, "missing command before |".into()));
                    }
                    p.cmds.push(std::mem::take(&mut cmd));
                    continue;
                }
                Tok::Close => {
                    *pos -= 1;
                    break;
                }
                Tok::Open => {
                    let inner = self.pipe_tokens(t, pos, line)?;
                    if t.get(*pos) != Some(&Tok::Close) {
                        return Err(self.err(line, "unclosed (".into()));
                    }
                    *pos += 1;
                    // Only `(…).a.b`, written with no space: `(…) .a` is two arguments, as in Go.
                    let fields = match t.get(*pos) {
                        Some(Tok::Chain(f)) => {
                            *pos += 1;
                            f.clone()
                        }
                        _ => Vec::new(),
                    };
                    Arg::Paren(Box::new(inner), fields)
                }
                Tok::Fields(f) => Arg::Dot(f.clone()),
                Tok::Var(v, f) => Arg::Var(v.clone(), f.clone()),
                Tok::Ident(name) => match name.as_str() {
                    "true" | "false" => Arg::Lit(crate::chart::value::Value::Bool(name == "true")),
                    "nil" => Arg::Lit(crate::chart::value::Value::Nil),
                    f if (self.known)(f) => Arg::Func(f.to_owned()),
                    f => return Err(self.err(line, format!("function {f:?} not defined"))),
                },
                Tok::Lit(v) => Arg::Lit(v.clone()),
                Tok::Comma | Tok::Declare | Tok::Assign | Tok::Chain(_) => {
                    return Err(self.err(line, format!("unexpected {tok:?}")));
                }
            };
            cmd.push(arg);
        }
        if cmd.is_empty() {
            return Err(self.err(line, "missing value for command".into()));
        }
        p.cmds.push(cmd);
        Ok(p)
    }
}

/// A `"quoted"` or `` `raw` `` string literal, unquoted.
fn string_literal(s: &str) -> Option<String> {
    match lex(s).ok()?.as_slice() {
        [Tok::Lit(crate::chart::value::Value::Str(s))] => Some(s.clone()),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Fields(Vec<String>),
    /// Fields right after `)`, with no space: `(pipe).a.b`.
    Chain(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Lit(crate::chart::value::Value),
    Pipe,
    Open,
    Close,
    Comma,
    Declare,
    Assign,
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    use crate::chart::value::Value;
    let s: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word = |i: &mut usize| {
        let start = *i;
        while *i < s.len() && (s[*i].is_alphanumeric() || s[*i] == '_') {
            *i += 1;
        }
        s[start..*i].iter().collect::<String>()
    };
    let fields = |i: &mut usize| {
        let mut f = Vec::new();
        while *i < s.len() && s[*i] == '.' && s.get(*i + 1).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
            *i += 1;
            f.push(word(i));
        }
        f
    };
    while i < s.len() {
        let c = s[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => (out.push(Tok::Pipe), i += 1).1,
            '(' => (out.push(Tok::Open), i += 1).1,
            ')' => {
                out.push(Tok::Close);
                i += 1;
                if s.get(i) == Some(&'.') {
                    let f = fields(&mut i);
                    if !f.is_empty() {
                        out.push(Tok::Chain(f));
                    }
                }
            }
            ',' => (out.push(Tok::Comma), i += 1).1,
            ':' if s.get(i + 1) == Some(&'=') => (out.push(Tok::Declare), i += 2).1,
            '=' => (out.push(Tok::Assign), i += 1).1,
            '.' => {
                let f = fields(&mut i);
                if f.is_empty() {
                    i += 1;
                }
                out.push(Tok::Fields(f));
            }
            '$' => {
                i += 1;
                let name = format!("${}", word(&mut i));
                out.push(Tok::Var(name, fields(&mut i)));
            }
            '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match s.get(i) {
                        None => return Err("unterminated quoted string".into()),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            v.push(match s.get(i) {
                                Some('n') => '\n',
                                Some('t') => '\t',
                                Some('r') => '\r',
                                Some('\\') => '\\',
                                Some('"') => '"',
                                other => return Err(format!("unsupported escape \\{other:?}")),
                            });
                        }
                        Some(c) => v.push(*c),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Tok::Lit(Value::Str(v)));
            }
            '`' => {
                let end = s[i + 1..].iter().position(|c| *c == '`').ok_or("unterminated raw string")?;
                out.push(Tok::Lit(Value::Str(s[i + 1..i + 1 + end].iter().collect())));
                i += end + 2;
            }
            c if c.is_ascii_digit() || (c == '-' && s.get(i + 1).is_some_and(char::is_ascii_digit)) => {
                let start = i;
                i += 1;
                while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.' || s[i] == '_') {
                    i += 1;
                }
                let n: String = s[start..i].iter().collect();
                let v = match n.parse::<i64>() {
                    Ok(i) => Value::Int(i),
                    Err(_) => Value::Float(n.parse().map_err(|_| format!("bad number syntax: {n:?}"))?),
                };
                out.push(Tok::Lit(v));
            }
            c if c.is_alphabetic() || c == '_' => out.push(Tok::Ident(word(&mut i))),
            c => return Err(format!("unexpected {c:?}")),
        }
    }
    Ok(out)
}

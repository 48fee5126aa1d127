//! A Go text/template engine for the chart's templates, with Helm's functions: keadm renders
//! the cloudcore chart itself, so a host needs no helm. It implements the subset the chart
//! uses (`manifests/charts/cloudcore/README.md` lists it) exactly as helm does; the keadm tests compare
//! its output with `helm template`.
//!
//! Why not the `gtmpl` crate: its functions are plain `fn(&[Value])` with no access to the
//! templates, so Helm's `include` cannot be written, and it has had no release since 2021.

mod exec;
mod funcs;
mod parse;

use std::collections::HashMap;

use crate::chart::value::Value;
use parse::Node;

/// Why a template could not be parsed or rendered.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad syntax, or a function the engine does not have.
    #[error("template: {file}:{line}: {msg}")]
    Parse {
        /// The template file.
        file: String,
        /// Its line.
        line: usize,
        /// What is wrong.
        msg: String,
    },
    /// Rendering failed (`required` value missing, a field of nil, wrong arguments…).
    #[error("template: {file}: {msg}")]
    Exec {
        /// The template file.
        file: String,
        /// What went wrong.
        msg: String,
    },
}

/// The parsed templates of a chart: every file's body and the named templates of all of them
/// (Helm shares `define`s between files, e.g. `_helpers.tpl`).
pub struct Templates {
    files: Vec<(String, Vec<Node>)>,
    defines: HashMap<String, Vec<Node>>,
}

impl Templates {
    /// Parses `(path, text)` pairs.
    pub fn parse<'a>(files: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, Error> {
        let known = |f: &str| funcs::KNOWN.contains(&f);
        let mut out = Templates { files: Vec::new(), defines: HashMap::new() };
        for (path, text) in files {
            let parsed = parse::parse(path, text, &known)?;
            out.defines.extend(parsed.defines);
            out.files.push((path.to_owned(), parsed.nodes));
        }
        Ok(out)
    }

    /// Renders every file whose name does not start with `_` (Helm's partials), in order.
    pub fn render(&self, dot: &Value) -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::new();
        for (path, nodes) in &self.files {
            let base = path.rsplit('/').next().unwrap_or(path);
            if base.starts_with('_') {
                continue;
            }
            let exec = exec::Exec { defines: &self.defines, file: path, depth: 0 };
            let mut text = String::new();
            exec.run(nodes, dot, &mut text)?;
            out.push((path.clone(), text));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;

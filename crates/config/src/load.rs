//! Reading config files (collecting unknown keys) and writing them back as YAML.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Errors from loading a config file. Validation problems are reported separately by
/// `validate()` as [`crate::ValidationErrors`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("reading config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
    /// The document is empty (or only comments / `null`).
    #[error("config is empty")]
    Empty,
    /// The document is valid YAML but its top level is not a mapping.
    #[error("config must be a YAML mapping at the top level")]
    NotAMapping,
    /// YAML syntax error or a value of the wrong type. `message` starts with the dotted field
    /// path when the deserializer knows it (e.g. `modules.edgeHub.heartbeat: invalid type ...`).
    #[error("{message}{}", location_suffix(*line, *column))]
    Parse {
        /// What went wrong, prefixed by the field path when known.
        message: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
    },
}

/// Shorthand for results of this crate's loading functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn location_suffix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" (line {l}, column {c})"),
        (Some(l), None) => format!(" (line {l})"),
        _ => String::new(),
    }
}

impl Error {
    fn from_yaml(err: &yaml_serde::Error) -> Self {
        let location = err.location();
        let mut message = err.to_string();
        // yaml_serde appends " at line L column C"; we report the location in our own fields.
        if let Some(loc) = &location {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
        }
        Error::Parse {
            message,
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
        }
    }

    /// The 1-based line of a parse error, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Error::Parse { line, .. } => *line,
            _ => None,
        }
    }
}

/// A loaded config plus the keys the file contained that this crate does not know.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded<T> {
    /// The config, with upstream defaults for every key the file omitted.
    pub config: T,
    /// Dotted paths of ignored keys, e.g. `modules.edgeHub.fooBar`, in file order.
    /// Not an error: the binaries log one warning listing them.
    pub unknown_keys: Vec<String>,
}

/// Parses a YAML config. Missing keys take their upstream defaults; unknown keys are collected
/// in [`Loaded::unknown_keys`]. Fails on YAML syntax errors, wrong value types and empty files.
/// `apiVersion`/`kind` are not checked here (see `validate()`).
pub fn load<T: DeserializeOwned>(yaml: &str) -> Result<Loaded<T>> {
    // A cheap first pass to give clear errors for empty and non-mapping documents.
    let value: yaml_serde::Value = yaml_serde::from_str(yaml).map_err(|e| Error::from_yaml(&e))?;
    match value {
        yaml_serde::Value::Null => return Err(Error::Empty),
        yaml_serde::Value::Mapping(_) => {}
        yaml_serde::Value::Tagged(t) if matches!(t.value, yaml_serde::Value::Mapping(_)) => {}
        _ => return Err(Error::NotAMapping),
    }

    let mut unknown_keys = Vec::new();
    let de = yaml_serde::Deserializer::from_str(yaml);
    let config: T = serde_ignored::deserialize(de, |path| {
        unknown_keys.push(clean_path(&path.to_string()));
    })
    .map_err(|e| Error::from_yaml(&e))?;
    Ok(Loaded { config, unknown_keys })
}

/// Reads and parses a config file, see [`load`].
pub fn load_file<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<Loaded<T>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read { path: path.to_owned(), source })?;
    load(&text)
}

/// serde_ignored marks `Option`/newtype levels with `?`; they carry no YAML key.
fn clean_path(path: &str) -> String {
    path.split('.').filter(|seg| *seg != "?").collect::<Vec<_>>().join(".")
}

/// Serialises a config to YAML. Our types only have string map keys, so this cannot fail in
/// practice; if it ever does, the output is a YAML comment naming the error.
pub(crate) fn to_yaml<T: Serialize>(value: &T) -> String {
    yaml_serde::to_string(value).unwrap_or_else(|e| format!("# cannot serialise config: {e}\n"))
}

/// Serialises `value` and keeps only the listed dotted paths (a path naming a mapping keeps the
/// whole subtree). Used for the `--minconfig` output.
pub(crate) fn to_pruned_yaml<T: Serialize>(value: &T, keep: &[&str]) -> String {
    match yaml_serde::to_value(value) {
        Ok(tree) => to_yaml(&prune(&tree, keep, "")),
        Err(e) => format!("# cannot serialise config: {e}\n"),
    }
}

fn prune(value: &yaml_serde::Value, keep: &[&str], prefix: &str) -> yaml_serde::Value {
    let yaml_serde::Value::Mapping(map) = value else {
        return value.clone();
    };
    let mut out = yaml_serde::Mapping::new();
    for (k, v) in map {
        let Some(key) = k.as_str() else { continue };
        let path = if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") };
        if keep.contains(&path.as_str()) {
            out.insert(k.clone(), v.clone());
        } else if keep.iter().any(|p| p.starts_with(&format!("{path}."))) {
            out.insert(k.clone(), prune(v, keep, &path));
        }
    }
    yaml_serde::Value::Mapping(out)
}

/// Field helpers for `skip_serializing_if`, mirroring Go's `omitempty` for keys whose upstream
/// default is the zero value (so skipping them never changes what a re-load produces).
pub(crate) fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

pub(crate) fn is_false(v: &bool) -> bool {
    !*v
}

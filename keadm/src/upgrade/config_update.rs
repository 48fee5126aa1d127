//! `keadm config-update --set k1=v1,k2=v2`: sets dotted keys of edgecore.yaml (each value read
//! as a YAML scalar: `20` is a number, `true` a boolean, anything else, shell syntax included,
//! a plain string). The result must load as edgecore loads it (no new unknown key, no wrong
//! type) and pass its validation, or the file is not touched and the error names the field.
//! Then: the old file kept as `{config}.bak`, the new one written atomically with the old
//! mode, edgecore.service restarted, and a wait for EdgeHub to connect; if it does not, the
//! old file is put back and edgecore restarted again. The file is rewritten from its parsed
//! form, so YAML comments are not kept (they are in `.bak`).

use std::path::Path;
use std::time::Duration;

use kubeedge_apis::operations::task::{UpgradeReport, report_event};
use kubeedge_config::edgecore::EdgeCoreConfig;

use super::{Base, DEFAULT_CONNECT_TIMEOUT, Error, Node, files, service};
use crate::join::config as join_config;

/// The largest edgecore.yaml read.
const MAX_CONFIG: u64 = 1024 * 1024;

/// `keadm config-update` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub base: Base,
    /// The edgecore.yaml values to set, key=value by dotted key path (comma-separated, repeatable).
    #[arg(long = "set", required = true)]
    set: Vec<String>,
    /// Seconds to wait for edgecore to connect with the new config before restoring the old one.
    #[arg(long = "connect-timeout", default_value_t = DEFAULT_CONNECT_TIMEOUT)]
    connect_timeout: u64,
}

/// `keadm config-update`.
pub fn run(node: &Node, args: &Args) -> UpgradeReport {
    let mut report = UpgradeReport { event: report_event::CONFIG_UPDATE.into(), ..Default::default() };
    match update(&node.config_path, &args.set, Duration::from_secs(args.connect_timeout)) {
        Ok(()) => {
            println!("[config-update] {} is updated and edgecore is connected.", node.config_path.display());
            report.success = true;
        }
        Err(e) => report.error_message = e.to_string(),
    }
    report
}

fn update(path: &Path, sets: &[String], timeout: Duration) -> Result<(), Error> {
    let (old, mode) = read(path)?;
    let new = plan(&old, sets)?;
    service::require_systemd()?;
    let mut bak = path.as_os_str().to_owned();
    bak.push(".bak");
    files::write_atomic(Path::new(&bak), old.as_bytes(), mode)?;
    files::write_atomic(path, new.as_bytes(), mode)?;
    let monitor = kubeedge_config::load::<EdgeCoreConfig>(&new)
        .map(|l| l.config.common_config.monitor_server.bind_address)
        .unwrap_or_default();
    let why = match service::restart() {
        Ok(()) => match service::wait_connected(&monitor, timeout) {
            Ok(()) => return Ok(()),
            Err(why) => why,
        },
        Err(e) => e.to_string(),
    };
    // Not connected with the new config: the old one back.
    let restored = files::write_atomic(path, old.as_bytes(), mode).and_then(|()| service::restart());
    Err(Error::Failed(match restored {
        Ok(()) => format!("edgecore with the new config: {why}; the old config is restored"),
        Err(e) => format!("edgecore with the new config: {why}; restoring the old config failed: {e}"),
    }))
}

/// The file's text (bounded) and its permission bits.
fn read(path: &Path) -> Result<(String, u32), Error> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let f = std::fs::File::open(path).map_err(|e| Error::io("reading --config", path, e))?;
    let mode = f.metadata().map_err(|e| Error::io("reading --config", path, e))?.permissions().mode() & 0o7777;
    let mut text = String::new();
    f.take(MAX_CONFIG + 1).read_to_string(&mut text).map_err(|e| Error::io("reading --config", path, e))?;
    if text.len() as u64 > MAX_CONFIG {
        return Err(Error::Failed(format!("{} is larger than {MAX_CONFIG} bytes", path.display())));
    }
    Ok((text, mode))
}

/// The new config text: `old` with `sets` applied, loaded and validated as edgecore does.
fn plan(old: &str, sets: &[String]) -> Result<String, Error> {
    let field = |e: join_config::Error| Error::Usage(format!("--set: {e}"));
    let sets = join_config::parse_sets(sets).map_err(field)?;
    let before = kubeedge_config::load::<EdgeCoreConfig>(old)
        .map_err(|e| Error::Failed(format!("the current edgecore.yaml does not load: {e}")))?
        .unknown_keys;
    let mut doc: yaml_serde::Value =
        yaml_serde::from_str(old).map_err(|e| Error::Failed(format!("the current edgecore.yaml: {e}")))?;
    for (key, raw) in &sets {
        join_config::set(&mut doc, key, join_config::set_value(raw)).map_err(field)?;
    }
    let text = yaml_serde::to_string(&doc).map_err(|e| Error::Failed(format!("writing edgecore.yaml: {e}")))?;
    let loaded = kubeedge_config::load::<EdgeCoreConfig>(&text).map_err(|e| Error::Usage(format!("--set: {e}")))?;
    // Keys unknown before (a config written for a newer edgecore) are left alone; new ones are typos.
    if let Some(k) = loaded.unknown_keys.iter().find(|k| !before.contains(k)) {
        return Err(Error::Usage(format!("--set: unknown key {k} in edgecore.yaml")));
    }
    loaded.config.validate().map_err(|e| Error::Usage(format!("--set: {e}")))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> String {
        EdgeCoreConfig::default_for(&kubeedge_config::HostInfo::placeholder()).to_yaml()
    }

    fn load(text: &str) -> EdgeCoreConfig {
        kubeedge_config::load::<EdgeCoreConfig>(text).unwrap().config
    }

    #[test]
    fn a_good_set_changes_only_that_key_with_its_type() {
        let new = plan(&current(), &["modules.edgeHub.heartbeat=20,modules.edged.nodeLabels.zone=a".into()]).unwrap();
        let c = load(&new);
        assert_eq!(c.modules.edge_hub.heartbeat, 20);
        assert_eq!(c.modules.edged.node_labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(c.database.data_source, load(&current()).database.data_source);
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_is_named_and_the_file_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edgecore.yaml");
        std::fs::write(&path, current()).unwrap();
        let before = std::fs::read(&path).unwrap();
        let e = update(&path, &["modules.edgeHub.heartbeatt=20".into()], Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("unknown key modules.edgeHub.heartbeatt"), "{e}");
        let e = update(&path, &["modules.edgeHub.heartbeat=0".into()], Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("modules.edgeHub.heartbeat"), "{e}");
        let e = update(&path, &["modules.edgeHub.heartbeat=abc".into()], Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("modules.edgeHub.heartbeat"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(!dir.path().join("edgecore.yaml.bak").exists());
    }

    #[test]
    fn shell_syntax_in_a_value_is_just_a_string() {
        let value = "$(touch /tmp/pwned); `id` | rm -rf / && echo";
        let new = plan(&current(), &[format!("modules.edged.nodeLabels.note={value}")]).unwrap();
        assert_eq!(load(&new).modules.edged.node_labels.get("note").map(String::as_str), Some(value));
        assert!(!Path::new("/tmp/pwned").exists());
    }
}

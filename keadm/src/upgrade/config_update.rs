//! `keadm config-update --set k1=v1,k2=v2`: sets dotted keys of edgecore.yaml (each value read
//! as a YAML scalar: `20` is a number, `true` a boolean, anything else, shell syntax included,
//! a plain string). The result must load as edgecore loads it (no new unknown key, no wrong
//! type) and pass its validation, or the file is not touched and the error names the field.
//! Then: the old file kept as `{config}.bak`, the new one written atomically with the old
//! mode, edgecore.service restarted, and a wait for EdgeHub to connect; if it does not, the
//! old file is put back and edgecore restarted again. The file is rewritten from its parsed
//! form, so YAML comments are not kept (they are in `.bak`).
//!
//! Keys under `modules.taskManager.` and `database.` (and the keys holding them, `modules`,
//! `database`) are refused, as the cloud refuses them in a ConfigUpdateJob
//! ([`PROTECTED_CONFIG_KEYS`]): `keadmPath` is what the edge executes as root, and the
//! database is the node's state. keadm is also run by hand, and from jobs of older clouds.

use std::path::Path;
use std::time::Duration;

use kubeedge_apis::operations::task::{PROTECTED_CONFIG_KEYS, UpgradeReport, report_event};
use kubeedge_config::edgecore::EdgeCoreConfig;

use super::{Base, DEFAULT_CONNECT_TIMEOUT, Error, Node, files, service};
use crate::join::config as join_config;

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
    use std::os::unix::fs::PermissionsExt as _;
    let mode =
        std::fs::metadata(path).map_err(|e| Error::io("reading --config", path, e))?.permissions().mode() & 0o7777;
    let text = crate::ctl::edge::read_config(path).map_err(|e| Error::io("reading --config", path, e))?;
    Ok((text, mode))
}

/// The new config text: `old` with `sets` applied, loaded and validated as edgecore does.
fn plan(old: &str, sets: &[String]) -> Result<String, Error> {
    let field = |e: join_config::Error| Error::Usage(format!("--set: {e}"));
    let sets = join_config::parse_sets(sets).map_err(field)?;
    for (key, _) in &sets {
        refuse_protected(key)?;
    }
    let before = kubeedge_config::load::<EdgeCoreConfig>(old)
        .map_err(|e| Error::Failed(format!("the current edgecore.yaml does not load: {e}")))?;
    let mut doc: yaml_serde::Value =
        yaml_serde::from_str(old).map_err(|e| Error::Failed(format!("the current edgecore.yaml: {e}")))?;
    for (key, raw) in &sets {
        join_config::set(&mut doc, key, join_config::set_value(raw)).map_err(field)?;
    }
    let text = yaml_serde::to_string(&doc).map_err(|e| Error::Failed(format!("writing edgecore.yaml: {e}")))?;
    let loaded = kubeedge_config::load::<EdgeCoreConfig>(&text).map_err(|e| Error::Usage(format!("--set: {e}")))?;
    // Keys unknown before (a config written for a newer edgecore) are left alone; new ones are typos.
    if let Some(k) = loaded.unknown_keys.iter().find(|k| !before.unknown_keys.contains(k)) {
        return Err(Error::Usage(format!("--set: unknown key {k} in edgecore.yaml")));
    }
    // Whatever path a value took (a YAML merge key, say), the protected settings are as they were.
    let (old_config, new_config) = (&before.config, &loaded.config);
    if new_config.modules.task_manager != old_config.modules.task_manager || new_config.database != old_config.database
    {
        return Err(Error::Usage(format!(
            "--set: the result changes {}, which may not be changed by config-update",
            PROTECTED_CONFIG_KEYS.map(|p| format!("{p}*")).join(" or ")
        )));
    }
    loaded.config.validate().map_err(|e| Error::Usage(format!("--set: {e}")))?;
    Ok(text)
}

/// Refuses a key under a protected prefix, or one holding such keys (`database`, `modules`).
fn refuse_protected(key: &str) -> Result<(), Error> {
    let Some(prefix) = PROTECTED_CONFIG_KEYS.iter().find(|p| key.starts_with(*p) || p.starts_with(&format!("{key}.")))
    else {
        return Ok(());
    };
    Err(Error::Usage(format!("--set: the key {key} may not be changed by config-update (it is or holds {prefix}*)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> String {
        EdgeCoreConfig::default_for(&kubeedge_config::HostInfo::placeholder()).to_yaml()
    }

    /// A directory holding edgecore.yaml with upstream defaults: the directory, the file and
    /// its bytes.
    fn config_file() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edgecore.yaml");
        std::fs::write(&path, current()).unwrap();
        let before = std::fs::read(&path).unwrap();
        (dir, path, before)
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
        let (dir, path, before) = config_file();
        let e = update(&path, &["modules.edgeHub.heartbeatt=20".into()], Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("unknown key modules.edgeHub.heartbeatt"), "{e}");
        let e = update(&path, &["modules.edgeHub.heartbeat=0".into()], Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("modules.edgeHub.heartbeat"), "{e}");
        let e = update(&path, &["modules.edgeHub.heartbeat=abc".into()], Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("modules.edgeHub.heartbeat"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(!dir.path().join("edgecore.yaml.bak").exists());
    }

    /// Regression (#21 review): a ConfigUpdateJob (or a hand-run `--set`) could point
    /// `keadmPath` at any executable, which the edge then runs as root, or move the database.
    #[test]
    fn the_task_managers_settings_and_the_database_may_not_be_set() {
        let (dir, path, before) = config_file();
        for (set, key) in [
            ("modules.taskManager.keadmPath=/tmp/evil", "modules.taskManager.keadmPath"),
            ("modules.taskManager.enable=true", "modules.taskManager.enable"),
            ("database.dataSource=/tmp/x.db", "database.dataSource"),
            // A key holding protected ones, with a mapping as its value.
            ("modules.taskManager={keadmPath: /tmp/evil}", "modules.taskManager"),
            ("database={dataSource: /tmp/x.db}", "database"),
            ("modules={taskManager: {keadmPath: /tmp/evil}}", "modules"),
            ("modules.edgeHub.heartbeat=20,database.dataSource=/tmp/x.db", "database.dataSource"),
        ] {
            let e = update(&path, &[set.into()], Duration::from_secs(1)).unwrap_err();
            let want = format!("the key {key} may not be changed by config-update");
            assert!(e.to_string().contains(&want), "{set}: {e}");
        }
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(!dir.path().join("edgecore.yaml.bak").exists());
        // Keys that merely look alike are others' and allowed.
        assert!(plan(&current(), &["modules.edgeHub.heartbeat=20".into()]).is_ok());
        refuse_protected("databases.x").unwrap();
        refuse_protected("modules.taskManagerX").unwrap();
    }

    #[test]
    fn shell_syntax_in_a_value_is_just_a_string() {
        let value = "$(touch /tmp/pwned); `id` | rm -rf / && echo";
        let new = plan(&current(), &[format!("modules.edged.nodeLabels.note={value}")]).unwrap();
        assert_eq!(load(&new).modules.edged.node_labels.get("note").map(String::as_str), Some(value));
        assert!(!Path::new("/tmp/pwned").exists());
    }
}

//! What the edgecore process tests share: a scripted cloud on a real WebSocket link (viaduct,
//! mTLS) and the edgecore binary started on a config in the test's folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kubeedge_model::{Content, Message};
pub use kubeedge_testkit::free_port;
use kubeedge_testkit::{Process, set_yaml_path};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::mpsc;

pub const NODE: &str = "edge-1";

/// The scripted cloud: accepts the edge, records what it sends, confirms reports while
/// `confirm` is set, and sends what the test pushes.
pub struct Cloud {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Message>>>,
    pub confirm: Arc<std::sync::atomic::AtomicBool>,
    pub to_edge: mpsc::UnboundedSender<Message>,
}

impl Cloud {
    pub async fn start(dir: &Path) -> Cloud {
        let ca = kubeedge_pki::Ca::generate().unwrap();
        let server = ca.issue_server(&["127.0.0.1".parse().unwrap()], &[]).unwrap();
        let (csr, key) = kubeedge_pki::edge_csr(NODE).unwrap();
        let cert = ca.issue_node_client(&csr, NODE, Duration::from_secs(86_400)).unwrap();
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        std::fs::write(dir.join("certs/ca.crt"), kubeedge_pki::pem("CERTIFICATE", ca.cert_der())).unwrap();
        std::fs::write(dir.join("certs/edge.crt"), kubeedge_pki::pem("CERTIFICATE", &cert)).unwrap();
        std::fs::write(dir.join("certs/edge.key"), kubeedge_pki::pem("EC PRIVATE KEY", &key)).unwrap();
        let tls = kubeedge_viaduct::server_tls(ca.cert_der(), &server.cert_der, &server.key_sec1).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let confirm = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (to_edge, rx) = mpsc::unbounded_channel::<Message>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let (rec, conf) = (received.clone(), confirm.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let Ok((_, mut conn)) =
                    kubeedge_viaduct::accept(tcp, acceptor.clone(), &kubeedge_viaduct::ServerOptions::default()).await
                else {
                    continue;
                };
                let (rec, conf, rx) = (rec.clone(), conf.clone(), rx.clone());
                tokio::spawn(async move {
                    let mut rx = rx.lock().await;
                    loop {
                        tokio::select! {
                            m = rx.recv() => {
                                let Some(m) = m else { return };
                                if conn.send(&m).await.is_err() { return; }
                            }
                            m = conn.recv() => {
                                let Ok(Some(m)) = m else { return };
                                let r = m.router.resource.clone();
                                let report = r.ends_with("/twin/edge_updated") || r.ends_with("/state/update");
                                rec.lock().push(m.clone());
                                if report && conf.load(std::sync::atomic::Ordering::Relaxed) {
                                    let mut ok = Message::build("devicecontroller", "twin", "twin", "response", Content::string("OK"));
                                    ok.header.parent_id = m.header.id.clone();
                                    if conn.send(&ok).await.is_err() { return; }
                                }
                            }
                        }
                    }
                });
            }
        });
        Cloud { port, received, confirm, to_edge }
    }

    pub fn send(&self, source: &str, group: &str, resource: &str, op: &str, content: Value) {
        let m = Message::build(source, group, resource, op, Content::from_value(&content));
        self.to_edge.send(m).unwrap();
    }

    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Message) -> bool) -> Message {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(m) = self.received.lock().iter().find(|m| pred(m)).cloned() {
                return m;
            }
            assert!(tokio::time::Instant::now() < deadline, "the cloud never received {what}: {:?}", self.resources());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn resources(&self) -> Vec<String> {
        self.received.lock().iter().map(|m| format!("{} {}", m.router.operation, m.router.resource)).collect()
    }
}

/// An edgecore config in `dir` joining the cloud on `cloud_port`, with EventBus in `mode` on
/// the given ports (EventBus off when `mode` is `None`) and DMI served in `dir`.
pub fn edgecore_config(
    dir: &Path,
    cloud_port: u16,
    mode: Option<u8>,
    internal_port: u16,
    external_port: u16,
) -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_edgecore"));
    let out = std::process::Command::new(bin).arg("--defaultconfig").output().unwrap();
    let mut y = String::from_utf8(out.stdout).unwrap();
    y = kubeedge_testkit::set_yaml_line(&y, "bindAddress", "127.0.0.1:0");
    let q = |p: PathBuf| format!("\"{}\"", p.display());
    let settings: Vec<(&[&str], String)> = vec![
        (&["modules", "edged", "enable"], "false".into()),
        (&["modules", "edged", "hostnameOverride"], NODE.into()),
        (&["modules", "edgeHub", "websocket", "server"], format!("127.0.0.1:{cloud_port}")),
        (&["modules", "edgeHub", "httpServer"], format!("https://127.0.0.1:{cloud_port}")),
        (&["modules", "edgeHub", "tlsCaFile"], q(dir.join("certs/ca.crt"))),
        (&["modules", "edgeHub", "tlsCertFile"], q(dir.join("certs/edge.crt"))),
        (&["modules", "edgeHub", "tlsPrivateKeyFile"], q(dir.join("certs/edge.key"))),
        (&["modules", "edgeHub", "heartbeat"], "2".into()),
        (&["modules", "eventBus", "enable"], mode.is_some().to_string()),
        (&["modules", "eventBus", "mqttMode"], mode.unwrap_or(2).to_string()),
        (&["modules", "eventBus", "mqttServerInternal"], format!("tcp://127.0.0.1:{internal_port}")),
        (&["modules", "eventBus", "mqttServerExternal"], format!("tcp://127.0.0.1:{external_port}")),
        // The bursts of the device tests fit a subscriber's queue in the embedded broker.
        (&["modules", "eventBus", "mqttSessionQueueSize"], "2000".into()),
        (&["modules", "deviceTwin", "dmiSockPath"], q(dir.to_path_buf())),
        (&["database", "dataSource"], q(dir.join("edgecore.db"))),
    ];
    for (path, value) in settings {
        y = set_yaml_path(&y, path, &value);
    }
    let path = dir.join("edgecore.yaml");
    std::fs::write(&path, y).unwrap();
    path
}

/// Starts edgecore on `config` and waits until it has started.
pub fn spawn_edgecore(config: &Path) -> Process {
    let bin = Path::new(env!("CARGO_BIN_EXE_edgecore"));
    let mut p = Process::spawn(bin, &["--config", config.to_str().unwrap()]).unwrap();
    p.wait_for_line("Started.");
    p
}

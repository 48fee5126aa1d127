//! Shared by cloudcore's process tests that script edges: apiserver-lite in the test, the real
//! cloudcore binary, and scripted edges speaking the wire protocol over mTLS (as MetaManager and
//! edged would).

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kubeedge_model::{Content, Message};
use kubeedge_pki::{Ca, ExtKeyUsage};
use kubeedge_testkit::link::{self, Cloud};
use kubeedge_testkit::{Process, free_port};
use kubeedge_viaduct::{ClientOptions, Connection};

pub const PATIENCE: Duration = Duration::from_secs(60);
type Conn = Connection<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A scripted edge.
pub struct Edge {
    pub conn: Conn,
    /// Messages read while waiting for another one: later waits look here first.
    pub backlog: std::collections::VecDeque<Message>,
}

/// A client certificate for `node` signed by `ca` (as the test holds the cluster CA).
pub fn node_cert(ca: &Ca, node: &str) -> (Vec<u8>, Vec<u8>) {
    let (csr, key) = kubeedge_pki::edge_csr(node).unwrap();
    (ca.sign_csr(&csr, 1, &[ExtKeyUsage::ClientAuth]).unwrap(), key)
}

impl Edge {
    pub async fn connect(ca: &Ca, addr: &str, node: &str) -> Self {
        let (cert, key) = node_cert(ca, node);
        Self::connect_with(ca, addr, node, &cert, &key).await.unwrap()
    }

    /// Connects with a given certificate; the error is the transport's (a refused handshake).
    pub async fn connect_with(
        ca: &Ca,
        addr: &str,
        node: &str,
        cert: &[u8],
        key: &[u8],
    ) -> Result<Self, kubeedge_viaduct::Error> {
        let tls = kubeedge_viaduct::client_tls(ca.cert_der(), cert, key).unwrap();
        let opts = ClientOptions {
            server: addr.to_owned(),
            node_id: node.to_owned(),
            project_id: "e632aba927ea4ac2b575ec1603d56f10".into(),
            max_message: kubeedge_model::MAX_MESSAGE_SIZE,
            handshake_timeout: PATIENCE,
            features: Vec::new(),
        };
        Ok(Self { conn: kubeedge_viaduct::connect(&opts, Arc::new(tls)).await?, backlog: Default::default() })
    }

    /// The next message matching `want` (messages arrive in any order: others are kept for
    /// later waits), ACKing every message as it is read, as MetaManager does.
    pub async fn expect(&mut self, what: &str, want: impl Fn(&Message) -> bool) -> Result<Message, Missed> {
        self.expect_within(what, PATIENCE, want).await
    }

    /// [`Edge::expect`] with a deadline.
    pub async fn expect_within(
        &mut self,
        what: &str,
        patience: Duration,
        want: impl Fn(&Message) -> bool,
    ) -> Result<Message, Missed> {
        if let Some(i) = self.backlog.iter().position(&want) {
            return Ok(self.backlog.remove(i).expect("present"));
        }
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, self.conn.recv())
                .await
                .map_err(|_| Missed::TimedOut(what.to_owned()))?
                .map_err(|e| Missed::Failed(what.to_owned(), e.to_string()))?
                .ok_or_else(|| Missed::Closed(what.to_owned()))?;
            if msg.router.operation != "response" || !msg.header.resource_version.is_empty() {
                self.conn.send(&Message::response_to(&msg, Content::string("OK"))).await.unwrap();
            }
            if want(&msg) {
                return Ok(msg);
            }
            self.backlog.push_back(msg);
        }
    }

    pub async fn send(&mut self, msg: &Message) {
        self.conn.send(msg).await.unwrap();
    }

    /// Sends `msg` and returns the cloud's reply to it.
    pub async fn ask(&mut self, msg: &Message) -> Result<Message, Missed> {
        self.send(msg).await;
        let id = msg.header.id.clone();
        self.expect(&format!("the reply to {} {}", msg.router.operation, msg.router.resource), |m| {
            m.header.parent_id == id
        })
        .await
    }
}

/// Why an expected message did not come.
#[derive(Debug, thiserror::Error)]
pub enum Missed {
    /// Nothing matching arrived in time.
    #[error("timed out waiting for {0}")]
    TimedOut(String),
    /// The connection failed.
    #[error("connection failed waiting for {0}: {1}")]
    Failed(String, String),
    /// The cloud closed the connection.
    #[error("connection closed waiting for {0}")]
    Closed(String),
}

/// A message as edged sends it through MetaManager.
pub fn upstream(resource: &str, op: &str, content: Content) -> Message {
    Message::build("edged", "meta", resource, op, content)
}

#[allow(unused_imports)] // not every test file that shares this module polls
pub use kubeedge_testkit::eventually_async as until;

/// apiserver-lite, a client of it, the cluster CA (the test's, so scripted edges can have
/// certificates) and a running cloudcore.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub api: apiserver_lite::ApiServer,
    pub client: kube::Client,
    pub ca: Ca,
    pub cloud: Process,
    /// CloudHub's WebSocket address.
    pub ws: String,
    /// The join API's address.
    pub https: String,
}

impl Cluster {
    /// Starts everything; `settings` are extra cloudcore.yaml paths and values.
    pub async fn start(settings: &[(&[&str], &str)]) -> Self {
        Self::start_with(settings, Default::default()).await
    }

    /// [`Cluster::start`] with the API server's options.
    pub async fn start_with(settings: &[(&[&str], &str)], api: apiserver_lite::Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let api = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            apiserver_lite::ApiServer::start(l, api).await.unwrap()
        };
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
        let kc = kube::config::Kubeconfig::from_yaml(&api.kubeconfig()).unwrap();
        let client =
            kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap())
                .unwrap();
        let ca = Ca::generate().unwrap();
        std::fs::create_dir_all(dir.path().join("cloud")).unwrap();
        std::fs::write(dir.path().join("cloud/ca.crt"), ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("cloud/ca.key"), kubeedge_pki::pem("EC PRIVATE KEY", ca.key_sec1())).unwrap();
        let (ws_port, https_port) = (free_port(), free_port());
        let bin = Path::new(env!("CARGO_BIN_EXE_cloudcore"));
        let cfg =
            link::cloudcore(bin, dir.path(), &Cloud { kubeconfig: &kubeconfig, ip: "127.0.0.1", ws_port, https_port });
        let mut yaml = std::fs::read_to_string(&cfg).unwrap();
        for (path, value) in settings {
            yaml = kubeedge_testkit::set_yaml_path(&yaml, path, value);
        }
        std::fs::write(&cfg, yaml).unwrap();
        let mut cloud = Process::spawn(bin, &["--config", cfg.to_str().unwrap()]).unwrap();
        cloud.wait_for_line("CloudHub WebSocket server listening");
        cloud.wait_for_line("EdgeController started.");
        Self {
            dir,
            api,
            client,
            ca,
            cloud,
            ws: format!("127.0.0.1:{ws_port}"),
            https: format!("127.0.0.1:{https_port}"),
        }
    }

    /// Stops cloudcore and the API server.
    pub async fn stop(mut self) {
        self.cloud.signal("TERM");
        assert!(self.cloud.wait_exit(PATIENCE).is_some_and(|s| s.success()), "{}", self.cloud.log());
        self.api.shutdown().await;
    }
}

/// A GET to the join API at `addr` (with a body, as upstream's `/edge.crt` is) over TLS trusting
/// `ca_der`, optionally presenting a client certificate: (status, body).
pub async fn join_get(
    addr: &str,
    ca_der: &[u8],
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    cert: Option<(&[u8], &[u8])>,
) -> (u16, Vec<u8>) {
    use http_body_util::{BodyExt, Full};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der.to_vec().into()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        Some((c, k)) => builder.with_client_auth_cert(vec![c.to_vec().into()], kubeedge_pki::rustls_key(k)).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect("127.0.0.1".try_into().unwrap(), tcp).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", addr);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send.send_request(req.body(Full::new(bytes::Bytes::from(body))).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes().to_vec())
}

//! A real TCP load balancer for tests and benchmarks: haproxy (the Debian package,
//! `hack/install-deps.sh`) in front of several cloudcore replicas, as upstream deploys them.
//!
//! It runs in TCP mode, so TLS passes through to cloudcore (edges' client certificates reach
//! CloudHub unchanged), as a child process in the foreground (`-db`), its config in a temp
//! dir and its frontends on free loopback ports; dropping [`Haproxy`] kills it. Backends are
//! health-checked every second (`check inter 1s fall 2 rise 1`): a TCP connect, or an HTTP
//! `GET /readyz` on the server's monitor port when one is given. A connection to a server
//! that refuses it is retried and redispatched to another (`option redispatch`), so an edge
//! reconnecting right after a replica died is not refused for the up to two seconds the checks
//! take to mark it down.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Process, TempDir, free_port};

/// How a backend spreads new connections over its servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// To the server with the fewest connections (`balance leastconn`): what long-lived edge
    /// sessions want, and what spreads the edges of a failed replica over the others evenly.
    LeastConn,
    /// In turn (`balance roundrobin`).
    RoundRobin,
}

impl Balance {
    fn as_str(self) -> &'static str {
        match self {
            Balance::LeastConn => "leastconn",
            Balance::RoundRobin => "roundrobin",
        }
    }
}

/// One server of a backend.
#[derive(Debug, Clone)]
pub struct Server {
    /// Where connections go (e.g. a replica's CloudHub WebSocket port).
    pub addr: SocketAddr,
    /// A monitor port on the same host whose `GET /readyz` must answer 200 for the server to
    /// take connections; `None`: a TCP connect to `addr` is the check.
    pub ready_port: Option<u16>,
}

/// One frontend (a listening port) and the servers behind it.
#[derive(Debug, Clone)]
pub struct Frontend {
    /// Its name in the config (letters, digits, `-`, `_`).
    pub name: String,
    /// The servers.
    pub servers: Vec<Server>,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The frontends.
    pub frontends: Vec<Frontend>,
    /// How each spreads connections.
    pub balance: Balance,
    /// Sessions at most, for the whole process and each frontend. haproxy raises its own
    /// open-file limit to about twice this (a session holds a client and a server socket) and
    /// refuses to start when the hard limit is lower.
    pub maxconn: usize,
}

/// Whether haproxy is installed.
pub fn available() -> bool {
    std::process::Command::new("haproxy")
        .arg("-v")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The config text for `cfg` with frontend `i` bound to `ports[i]`.
pub fn config_text(cfg: &Config, ports: &[u16]) -> String {
    let mut out = String::new();
    let maxconn = cfg.maxconn.max(1);
    // Edge sessions live for hours and are kept alive by their own heartbeats (15 s): the
    // idle timeouts must be well above that. `timeout connect` is short so a dead server is
    // retried elsewhere quickly.
    let _ = write!(
        out,
        "global\n    maxconn {maxconn}\n\ndefaults\n    mode tcp\n    maxconn {maxconn}\n    timeout connect 1s\n    \
         timeout client 1h\n    timeout server 1h\n    timeout check 1s\n    retries 2\n    option redispatch\n"
    );
    for (f, port) in cfg.frontends.iter().zip(ports) {
        let _ = write!(
            out,
            "\nfrontend {name}\n    bind 127.0.0.1:{port}\n    default_backend {name}\n\nbackend {name}\n    balance {balance}\n",
            name = f.name,
            balance = cfg.balance.as_str()
        );
        if f.servers.iter().any(|s| s.ready_port.is_some()) {
            out.push_str(
                "    option httpchk\n    http-check send meth GET uri /readyz\n    http-check expect status 200\n",
            );
        }
        for (i, s) in f.servers.iter().enumerate() {
            let port = s.ready_port.map(|p| format!(" port {p}")).unwrap_or_default();
            let _ = writeln!(out, "    server s{i} {} check{port} inter 1s fall 2 rise 1", s.addr);
        }
    }
    out
}

/// A running haproxy.
pub struct Haproxy {
    proc: Process,
    addrs: Vec<(String, SocketAddr)>,
    _dir: TempDir,
}

impl Haproxy {
    /// Writes the config on free ports, checks it (`haproxy -c`), starts haproxy and waits
    /// until every frontend accepts connections.
    pub fn start(cfg: &Config) -> std::io::Result<Self> {
        let dir = TempDir::new();
        let ports: Vec<u16> = cfg.frontends.iter().map(|_| free_port()).collect();
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config_text(cfg, &ports))?;
        check(&path)?;
        let path_arg = path.to_str().ok_or_else(|| std::io::Error::other("non-UTF-8 temp path"))?;
        let mut proc = Process::spawn(Path::new("haproxy"), &["-db", "-f", path_arg])?;
        let addrs: Vec<(String, SocketAddr)> = cfg
            .frontends
            .iter()
            .zip(&ports)
            .map(|(f, p)| (f.name.clone(), SocketAddr::from(([127, 0, 0, 1], *p))))
            .collect();
        // Not by connecting: a probe would be passed on to a server as a connection.
        let deadline = Instant::now() + crate::patience();
        for (_, addr) in &addrs {
            while !listening(addr.port()) {
                if Instant::now() > deadline || proc.wait_exit(Duration::ZERO).is_some() {
                    return Err(std::io::Error::other(format!(
                        "haproxy does not listen on {addr}; its log:\n{}",
                        proc.log()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(Self { proc, addrs, _dir: dir })
    }

    /// The address of frontend `name`.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no haproxy frontend {name:?}"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// What haproxy logged (its warnings and alerts: servers going down and up).
    pub fn log(&mut self) -> String {
        self.proc.log()
    }
}

/// Whether a socket listens on TCP `port` (IPv4), from `/proc/net/tcp`.
fn listening(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    // Columns: sl, local_address (hex ip:port), rem_address, st (0A = LISTEN), …
    table.lines().skip(1).any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.get(1).is_some_and(|a| a.ends_with(&local)) && cols.get(3) == Some(&"0A")
    })
}

/// `haproxy -c -f path`: the config is valid.
fn check(path: &Path) -> std::io::Result<()> {
    let out = std::process::Command::new("haproxy").arg("-c").arg("-f").arg(path).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(std::io::Error::other(format!(
        "haproxy refused its config: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;

    fn server(addr: SocketAddr) -> Server {
        Server { addr, ready_port: None }
    }

    #[test]
    fn the_config_has_every_server_health_checked() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        let cfg = Config {
            frontends: vec![
                Frontend { name: "ws".into(), servers: vec![server(a), server(b)] },
                Frontend { name: "https".into(), servers: vec![Server { addr: a, ready_port: Some(9) }] },
            ],
            balance: Balance::LeastConn,
            maxconn: 100,
        };
        let text = config_text(&cfg, &[2000, 2001]);
        assert!(text.contains("mode tcp") && text.contains("balance leastconn"), "{text}");
        assert!(text.contains("bind 127.0.0.1:2000") && text.contains("bind 127.0.0.1:2001"), "{text}");
        assert!(text.contains("server s1 127.0.0.1:1001 check inter 1s fall 2 rise 1"), "{text}");
        assert!(text.contains("server s0 127.0.0.1:1000 check port 9 inter 1s fall 2 rise 1"), "{text}");
        assert_eq!(text.matches("option httpchk").count(), 1, "{text}");
    }

    /// A real haproxy passes bytes through to the one live server and skips the dead one.
    #[test]
    fn passes_tcp_through_to_live_servers() {
        if !available() {
            crate::skip("passes_tcp_through_to_live_servers", "haproxy is not installed (hack/install-deps.sh)");
            return;
        }
        let live = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let cfg = Config {
            frontends: vec![Frontend {
                name: "echo".into(),
                servers: vec![server(dead), server(live.local_addr().unwrap())],
            }],
            balance: Balance::RoundRobin,
            maxconn: 100,
        };
        let lb = Haproxy::start(&cfg).unwrap();
        // Detached: it ends with the test process.
        std::thread::spawn(move || {
            while let Ok((mut s, _)) = live.accept() {
                let mut buf = [0u8; 5];
                if s.read_exact(&mut buf).is_ok() {
                    let _ = s.write_all(&buf);
                }
            }
        });
        // Round robin meets the dead server too: each connection must still be served.
        for _ in 0..4 {
            let mut c = TcpStream::connect(lb.addr("echo")).unwrap();
            c.set_read_timeout(Some(crate::patience())).unwrap();
            c.write_all(b"hello").unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            assert_eq!(&buf, b"hello");
        }
        drop(lb);
    }
}

//! `keadm ctl exec POD -- CMD…`: a command in a container through Edged's kubelet server
//! (`/exec/{ns}/{pod}/{container}`), which has the runtime prepare the session and proxies the
//! WebSocket upgrade to the runtime's streaming server. The session speaks kubelet's
//! `v4.channel.k8s.io`: every frame starts with its channel (0 stdin, 1 stdout, 2 stderr,
//! 3 the final `Status`); the command's exit code comes back in that `Status`.
//!
//! `-t` asks for a TTY but does not put the local terminal into raw mode, and v4 has no way to
//! say "stdin closed", so `-i` suits commands that stop reading by themselves (`head -n1`).

use std::io::{Read, Write};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

use super::client::{CONNECT_TIMEOUT, TIMEOUT, encode};
use super::edge::Edge;
use super::{Error, container_of};

/// The subprotocol offered (the newest the runtimes' streaming servers all speak).
pub const PROTOCOL: &str = "v4.channel.k8s.io";
/// Bytes of stdin sent per frame.
const STDIN_CHUNK: usize = 8 * 1024;
/// Stdin chunks buffered between the reading thread and the session.
const STDIN_QUEUE: usize = 16;
/// The largest frame accepted from the server.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// `keadm ctl exec` flags (kubectl's).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pod.
    pub pod: String,
    /// The container (default: the pod's default container, or its only one).
    #[arg(short = 'c', long = "container")]
    pub container: Option<String>,
    /// The namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    pub namespace: String,
    /// Pass stdin to the command.
    #[arg(short = 'i', long = "stdin")]
    pub stdin: bool,
    /// Ask for a TTY (stderr is then merged into stdout).
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

impl Args {
    /// The query of `/exec`.
    pub fn query(&self) -> String {
        let mut q: Vec<String> = self.command.iter().map(|c| format!("command={}", encode(c))).collect();
        q.push("output=1".into());
        if self.tty {
            q.push("tty=1".into());
        } else {
            q.push("error=1".into());
        }
        if self.stdin {
            q.push("input=1".into());
        }
        q.join("&")
    }
}

/// The exit code a v4 `Status` reports: 0 for `Success`, the `ExitCode` cause of a
/// `NonZeroExitCode` failure, else the failure's message as an error.
pub fn exit_code(status: Option<&Value>) -> Result<u8, String> {
    // v4 always ends with a Status (Success included): none means the session broke.
    let Some(status) = status else { return Err("the session ended without an exit status".into()) };
    match status.get("status").and_then(Value::as_str) {
        Some("Success") => Ok(0),
        _ if status.get("reason").and_then(Value::as_str) == Some("NonZeroExitCode") => {
            let causes = status.pointer("/details/causes").and_then(Value::as_array);
            let code = causes
                .into_iter()
                .flatten()
                .find(|c| c.get("reason").and_then(Value::as_str) == Some("ExitCode"))
                .and_then(|c| c.get("message").and_then(Value::as_str))
                .and_then(|m| m.parse::<i64>().ok())
                .ok_or_else(|| format!("a NonZeroExitCode status without an exit code: {status}"))?;
            // Exit codes past 255 (Windows) are reported as a plain failure.
            Ok(u8::try_from(code).unwrap_or(1))
        }
        _ => Err(status.get("message").and_then(Value::as_str).unwrap_or("the command failed").to_owned()),
    }
}

pub async fn run(args: &Args, edge: &Edge) -> Result<(), Error> {
    let kubelet = edge.kubelet()?;
    let container = container_of(edge, &args.namespace, &args.pod, args.container.as_deref()).await?;
    let path =
        format!("/exec/{}/{}/{}?{}", encode(&args.namespace), encode(&args.pod), encode(&container), args.query());
    let mut req = format!("ws://{}{path}", kubelet.addr).into_client_request().map_err(|e| kubelet.protocol(e))?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", http::HeaderValue::from_static(PROTOCOL));
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(kubelet.addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))
        .and_then(|r| r)
        .map_err(|source| Error::Connect { what: kubelet.what, addr: kubelet.addr, source })?;
    let config = tungstenite::protocol::WebSocketConfig::default().max_message_size(Some(MAX_FRAME));
    let handshake = tokio_tungstenite::client_async_with_config(req, tcp, Some(config));
    let (mut ws, _) = match tokio::time::timeout(TIMEOUT, handshake).await {
        Err(_) => return Err(kubelet.protocol("no answer to the exec upgrade in time")),
        Ok(Err(tungstenite::Error::Http(resp))) => {
            let body = resp.body().clone().unwrap_or_default();
            return Err(kubelet.status(&path, resp.status(), &body));
        }
        Ok(Err(e)) => return Err(kubelet.protocol(e)),
        Ok(Ok(pair)) => pair,
    };

    let mut stdin_rx = args.stdin.then(spawn_stdin);
    let mut status: Option<Value> = None;
    let (mut stdout, mut stderr) = (std::io::stdout(), std::io::stderr());
    loop {
        tokio::select! {
            msg = ws.next() => {
                let data = match msg {
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(kubelet.protocol(e)),
                };
                let Some((&channel, rest)) = data.split_first() else { continue };
                match channel {
                    1 => stdout.write_all(rest).and_then(|()| stdout.flush()).map_err(Error::Output)?,
                    2 => stderr.write_all(rest).and_then(|()| stderr.flush()).map_err(Error::Output)?,
                    3 => {
                        status = Some(serde_json::from_slice(rest).unwrap_or_else(|e| {
                            serde_json::json!({"status": "Failure", "message": format!("unreadable exit status: {e}")})
                        }));
                    }
                    _ => {}
                }
            }
            chunk = recv(&mut stdin_rx) => match chunk {
                Some(mut bytes) => {
                    bytes.insert(0, 0);
                    ws.send(Message::Binary(bytes.into())).await.map_err(|e| kubelet.protocol(e))?;
                }
                // Stdin ended: nothing more to send (v4 cannot say so), keep reading output.
                None => stdin_rx = None,
            },
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
    match exit_code(status.as_ref()) {
        Ok(0) => Ok(()),
        Ok(code) => Err(Error::ExitCode(code)),
        Err(message) => Err(kubelet.protocol(message)),
    }
}

/// The next stdin chunk; never ready without stdin.
async fn recv(rx: &mut Option<mpsc::Receiver<Vec<u8>>>) -> Option<Vec<u8>> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads stdin on its own thread (blocking reads stay off the runtime); the channel closes at
/// end of input.
fn spawn_stdin() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(STDIN_QUEUE);
    let _ = std::thread::Builder::new().name("stdin".into()).spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; STDIN_CHUNK];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn the_command_goes_after_the_double_dash() {
        let a = Cli::try_parse_from(["exec", "web", "-c", "main", "--", "sh", "-c", "echo a b"]).unwrap().args;
        assert_eq!(a.command, ["sh", "-c", "echo a b"]);
        assert_eq!(a.query(), "command=sh&command=-c&command=echo%20a%20b&output=1&error=1");
        let a = Cli::try_parse_from(["exec", "-it", "web", "--", "sh"]).unwrap().args;
        assert_eq!(a.query(), "command=sh&output=1&tty=1&input=1");
        assert!(Cli::try_parse_from(["exec", "web"]).is_err(), "a command is required");
    }

    #[test]
    fn exit_codes_come_from_the_status_channel() {
        assert!(exit_code(None).is_err(), "no status: the session broke");
        assert_eq!(exit_code(Some(&json!({"metadata": {}, "status": "Success"}))), Ok(0));
        let failed = json!({"status": "Failure", "reason": "NonZeroExitCode",
            "message": "command terminated with non-zero exit code: exit status 3",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}});
        assert_eq!(exit_code(Some(&failed)), Ok(3));
        let other = json!({"status": "Failure", "reason": "InternalError", "message": "no such file"});
        assert_eq!(exit_code(Some(&other)), Err("no such file".into()));
    }
}

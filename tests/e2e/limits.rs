//! cloudcore out of file descriptors (issue #18): with its limit lowered to 128 and 300 idle
//! connections held open on CloudHub's ports, its accept loops pause instead of spinning, warn
//! a bounded number of times, shed their oldest pending handshakes to free descriptors, and
//! once the connections go, an honest edge joins and connects and the monitor server answers
//! `/readyz`.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use kubeedge_e2e::CloudSide;
use kubeedge_e2e::measure::cpu_ticks;
use kubeedge_testkit::{Process, link};

#[test]
fn out_of_file_descriptors_cloudcore_pauses_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cloud = CloudSide::start(dir.path());
    let pid = cloud.proc.pid();
    let limit = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), "--nofile=128:128"])
        .status()
        .expect("prlimit (util-linux)");
    assert!(limit.success());
    let (mark, started) = (cloud.proc.mark(), Instant::now());

    // 300 idle connections: past the limit, so accept fails with EMFILE (and within what the
    // two listen backlogs hold, so connecting does not wait on SYN retries).
    let ports = [cloud.https_port, cloud.ws_port];
    let mut held = Vec::new();
    for i in 0..300 {
        held.push(TcpStream::connect(("127.0.0.1", ports[i % 2])).unwrap());
    }
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    std::thread::sleep(Duration::from_secs(5));
    let ticks = cpu_ticks(pid) - c0;
    let secs = t0.elapsed().as_secs_f64();
    eprintln!("cloudcore out of fds: {ticks} CPU ticks in {secs:.1} s");
    // A spinning loop burns a core: 100 ticks a second.
    assert!(ticks < 100, "cloudcore used {ticks} ticks of CPU in {secs:.1} s out of fds");
    drop(held);

    // The attackers are gone: an honest edge joins (the join API on :10002) and connects.
    let edge_bin = kubeedge_testkit::workspace_bin("edgecore");
    let cfg = link::edgecore(&edge_bin, dir.path(), "edge-honest", &cloud.token(), &cloud.link(), &[]);
    let mut edge = Process::spawn(&edge_bin, &["--config", cfg.to_str().unwrap()]).unwrap();
    edge.wait_for_line("Connected to CloudHub.");
    let (code, _) = kubeedge_testkit::http_get(cloud.monitor, "/readyz").unwrap();
    assert_eq!(code, 200);
    let log = cloud.proc.log();
    let warnings = log.lines().skip(mark).filter(|l| l.contains("Cannot accept connections")).count();
    // Two loops, each warning at its first failure and then at most once per 10 s (a loop that
    // warned per failure would have written thousands of lines).
    let most = 2 * (started.elapsed().as_secs() / 10 + 2);
    assert!(warnings >= 1 && warnings as u64 <= most, "{warnings} accept warnings (at most {most}):\n{log}");
    // Out of descriptors, the loops closed their oldest pending handshakes (rate-limited too).
    let shed = log.lines().skip(mark).filter(|l| l.contains("Closed the oldest idle connection")).count();
    assert!(shed >= 1 && shed as u64 <= most, "{shed} shedding warnings (at most {most}):\n{log}");
    edge.signal("TERM");
    edge.wait_exit(Duration::from_secs(20));
    cloud.stop();
}

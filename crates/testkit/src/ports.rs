//! Ports for daemons that a test must name in a config before the daemon binds them.
//!
//! A port the kernel hands out for `bind(…:0)` comes from its ephemeral range, the same range
//! every outgoing connection on the machine takes its local port from: released, it can be
//! taken by another test's connection before the daemon binds it ("Address already in use").
//! So a port here comes from below that range (above it when the range starts too low), where
//! the kernel never puts a connection: only a listener that names the port can take it. It
//! is checked free, chosen at random (other test processes choose theirs the same way), and
//! handed out once per process.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::ops::RangeInclusive;
use std::sync::{Mutex, PoisonError};

/// Where ports are chosen when the ephemeral range leaves room: above the ports daemons and
/// services use by default (KubeEdge's 10000–10550, mosquitto's 1883, …).
const LOWEST: u16 = 20_000;
/// The fewest ports a range must hold to be used.
const ENOUGH: u16 = 2_000;
/// Random ports tried before the kernel is asked for one.
const TRIES: usize = 200;

/// A free TCP port on 127.0.0.1 for a daemon config (checked free and released: for daemons
/// whose peers must be told the port before they start).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(range) = outside_ephemeral(&ephemeral_range()) {
        for _ in 0..TRIES {
            let port = rand::random_range(range.clone());
            if !given.contains(&port) && free(port) {
                given.insert(port);
                return port;
            }
        }
    }
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        eprintln!(
            "free_port: no free port outside the ephemeral range {:?}; asking the OS for one (another test's \
             connection may take it before the daemon binds it)",
            ephemeral_range()
        );
    });
    for _ in 0..TRIES {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        if given.insert(port) {
            return port;
        }
    }
    panic!("free_port: the OS gave only ports this test process was given already");
}

/// The kernel's ephemeral port range (Linux's default when it cannot be read).
fn ephemeral_range() -> RangeInclusive<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = text.split_whitespace().filter_map(|n| n.parse::<u16>().ok());
    match (bounds.next(), bounds.next()) {
        (Some(low), Some(high)) if low <= high => low..=high,
        _ => 32_768..=60_999,
    }
}

/// The ports to choose from outside `ephemeral`: from [`LOWEST`] up to it, else above it;
/// `None` when neither holds [`ENOUGH`] ports.
fn outside_ephemeral(ephemeral: &RangeInclusive<u16>) -> Option<RangeInclusive<u16>> {
    let below = ephemeral.start().checked_sub(1).filter(|&high| high >= LOWEST + ENOUGH).map(|high| LOWEST..=high);
    let above = || {
        let low = ephemeral.end().checked_add(1)?.max(LOWEST);
        (u16::MAX - low >= ENOUGH).then_some(low..=u16::MAX)
    };
    below.or_else(above)
}

/// Whether nothing listens on `port`, on loopback or on every address (IPv4, and IPv6 where
/// the machine has it).
fn free(port: u16) -> bool {
    let v6 = || match TcpListener::bind(("::", port)) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
    };
    TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok() && v6()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_outside_the_ephemeral_range_and_once_each() {
        let ephemeral = ephemeral_range();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        if outside_ephemeral(&ephemeral).is_some() {
            assert!(ports.iter().all(|p| !ephemeral.contains(p) && *p >= LOWEST), "{ports:?} vs {ephemeral:?}");
        }
        for p in ports {
            assert!(TcpListener::bind(("127.0.0.1", p)).is_ok(), "port {p} is free");
        }
    }

    #[test]
    fn the_range_is_below_the_ephemeral_one_else_above_else_none() {
        assert_eq!(outside_ephemeral(&(32_768..=60_999)), Some(LOWEST..=32_767));
        assert_eq!(outside_ephemeral(&(1_024..=40_000)), Some(40_001..=u16::MAX));
        assert_eq!(outside_ephemeral(&(10_000..=50_000)), Some(50_001..=u16::MAX));
        assert_eq!(outside_ephemeral(&(1_024..=u16::MAX)), None);
        assert_eq!(outside_ephemeral(&(21_000..=65_000)), None);
    }

    #[test]
    fn a_port_with_a_listener_is_not_free() {
        let held = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        assert!(!free(port));
        drop(held);
    }
}

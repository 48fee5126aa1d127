//! The machine facts upstream puts into default configs: host name and primary IPv4 address.

use kubeedge_config::HostInfo;

/// Reads the host name (lower-cased, as upstream) and the first non-loopback local IPv4
/// address from `/proc`; falls back to [`HostInfo::placeholder`] values.
pub fn detect_host() -> HostInfo {
    let fallback = HostInfo::placeholder();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or(fallback.hostname);
    let ip =
        std::fs::read_to_string("/proc/net/fib_trie").ok().and_then(|t| first_local_ipv4(&t)).unwrap_or(fallback.ip);
    HostInfo::new(hostname, ip)
}

/// In `/proc/net/fib_trie`, a local address is a `|-- a.b.c.d` line followed by
/// `/32 host LOCAL`.
fn first_local_ipv4(fib_trie: &str) -> Option<String> {
    let mut last: Option<&str> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(ip) = line.strip_prefix("|-- ") {
            last = Some(ip);
        } else if line.starts_with("/32 host LOCAL")
            && let Some(ip) = last
            && !ip.starts_with("127.")
        {
            return Some(ip.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_first_non_loopback_local() {
        let t = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 10.1.2.0\n        /32 link BROADCAST\n     |-- 10.1.2.3\n        /32 host LOCAL\n";
        assert_eq!(first_local_ipv4(t).as_deref(), Some("10.1.2.3"));
        assert_eq!(first_local_ipv4("Main:\n"), None);
    }
}

//! The rules the iptables manager keeps, as argv (never a shell string), and the parsing of
//! `iptables -t nat -S TUNNEL-PORT` to compare them with what is there.

use std::collections::BTreeSet;

use crate::cloudstream::tunnelport::Record;

/// Upstream's chain in the nat table.
pub const CHAIN: &str = "TUNNEL-PORT";
/// The comment on the jumps from OUTPUT and PREROUTING (upstream's).
pub const COMMENT: &str = "kubeedge tunnel port";
/// The chains that jump to [`CHAIN`].
pub const JUMP_FROM: [&str; 2] = ["OUTPUT", "PREROUTING"];

/// One DNAT: traffic to `port` (any destination address) goes to `to` (`ip:streamPort`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dnat {
    /// The tunnel port the API server dials.
    pub port: u16,
    /// The stream server: `ip:port`.
    pub to: String,
}

impl Dnat {
    /// The rule's arguments after `-A CHAIN`/`-D CHAIN` (upstream's:
    /// `-p tcp -j DNAT --dport PORT --to IP:STREAMPORT`).
    pub fn args(&self) -> Vec<String> {
        ["-p", "tcp", "-m", "tcp", "--dport", &self.port.to_string(), "-j", "DNAT", "--to-destination", &self.to]
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }
}

/// The DNATs a record asks for: one per cloudcore, to its stream server; and the entries
/// `iptables` (IPv4) cannot DNAT to, left out.
pub fn wanted(record: &Record, stream_port: u32) -> (BTreeSet<Dnat>, Vec<String>) {
    let mut refused = Vec::new();
    let mut want = BTreeSet::new();
    for (ip, port) in &record.ip_tunnel_port {
        match ip.parse::<std::net::Ipv4Addr>() {
            Ok(v4) => {
                want.insert(Dnat { port: *port, to: format!("{v4}:{stream_port}") });
            }
            Err(_) => refused.push(ip.clone()),
        }
    }
    (want, refused)
}

/// The rules of [`CHAIN`] in `iptables -S` output: each DNAT we understand, and the argv of
/// every rule (after `-A CHAIN`) for deleting it.
pub fn present(listing: &str) -> Vec<(Option<Dnat>, Vec<String>)> {
    let prefix = format!("-A {CHAIN} ");
    listing
        .lines()
        .filter_map(|line| line.trim().strip_prefix(&prefix))
        .map(|rest| {
            let args: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
            let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
            let dnat = match (value("--dport").and_then(|p| p.parse().ok()), value("--to-destination"), value("-j")) {
                (Some(port), Some(to), Some(j)) if j == "DNAT" => Some(Dnat { port, to }),
                _ => None,
            };
            (dnat, args)
        })
        .collect()
}

/// The jump rule's arguments after `-A FROM`.
pub fn jump_args() -> Vec<String> {
    ["-m", "comment", "--comment", COMMENT, "-j", CHAIN].iter().map(|s| (*s).to_owned()).collect()
}

/// What to change so the chain holds exactly `wanted`: rules to delete (argv after
/// `-D CHAIN`), then rules to add.
pub fn diff(wanted: &BTreeSet<Dnat>, listing: &str) -> (Vec<Vec<String>>, Vec<Dnat>) {
    let mut kept = BTreeSet::new();
    let mut delete = Vec::new();
    for (dnat, args) in present(listing) {
        match dnat {
            // A duplicate of a kept rule goes too.
            Some(d) if wanted.contains(&d) && kept.insert(d.clone()) => {}
            _ => delete.push(args),
        }
    }
    let add = wanted.iter().filter(|d| !kept.contains(*d)).cloned().collect();
    (delete, add)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_is_brought_to_exactly_the_record() {
        let record: Record = serde_json::from_str(
            r#"{"ipTunnelPort":{"10.0.0.1":10351,"10.0.0.2":10352},"port":{"10351":true,"10352":true}}"#,
        )
        .unwrap();
        let (want, refused) = wanted(&record, 10003);
        assert_eq!(want.len(), 2);
        assert!(refused.is_empty());
        let odd: Record = serde_json::from_str(r#"{"ipTunnelPort":{"fd00::1":10351,"host.example":10352}}"#).unwrap();
        assert_eq!(wanted(&odd, 10003), (BTreeSet::new(), vec!["fd00::1".to_owned(), "host.example".to_owned()]));
        // What iptables-nft prints for a chain with a kept rule, a stale one and a duplicate.
        let listing = "-N TUNNEL-PORT\n\
            -A TUNNEL-PORT -p tcp -m tcp --dport 10351 -j DNAT --to-destination 10.0.0.1:10003\n\
            -A TUNNEL-PORT -p tcp -m tcp --dport 10353 -j DNAT --to-destination 10.0.0.9:10003\n\
            -A TUNNEL-PORT -p tcp -m tcp --dport 10351 -j DNAT --to-destination 10.0.0.1:10003\n";
        let (delete, add) = diff(&want, listing);
        assert_eq!(delete.len(), 2);
        assert_eq!(delete[0].join(" "), "-p tcp -m tcp --dport 10353 -j DNAT --to-destination 10.0.0.9:10003");
        assert_eq!(add, vec![Dnat { port: 10352, to: "10.0.0.2:10003".into() }]);
        assert_eq!(add[0].args().join(" "), "-p tcp -m tcp --dport 10352 -j DNAT --to-destination 10.0.0.2:10003");
        let (delete, add) = diff(&BTreeSet::new(), "-N TUNNEL-PORT\n");
        assert!(delete.is_empty() && add.is_empty());
    }
}

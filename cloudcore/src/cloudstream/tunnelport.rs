//! Tunnel port negotiation, as upstream's `NegotiateTunnelPort`: each cloudcore takes a port
//! from 10351 up, recorded in ConfigMap `kubeedge/tunnelport` under the annotation
//! `tunnelportrecord.kubeedge.io` = `{"ipTunnelPort":{"<cloudcoreIP>":10351},"port":{"10351":true}}`.
//! The API server reaches an edge's "kubelet" at `nodeIP:tunnelPort`, which the iptables
//! manager DNATs to the stream server of the cloudcore holding that port, so several
//! cloudcores behind one API server each serve their own edges.
//!
//! Unlike upstream (a blind Update after a random sleep of up to 10 s), the record is written
//! with the ConfigMap's resourceVersion and retried on a conflict, so two cloudcores starting
//! together never take the same port.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use serde::{Deserialize, Serialize};
use tracing::info;

use crate::cloudhub::certs::NAMESPACE;

/// The ConfigMap's name.
pub const CONFIGMAP: &str = "tunnelport";
/// The annotation holding the record.
pub const ANNOTATION: &str = "tunnelportrecord.kubeedge.io";
/// Ports are taken from above this one (upstream's `constants.ServerPort`, Edged's port).
pub const BASE_PORT: u16 = 10350;
/// Conflicting writes retried at most this many times.
const ATTEMPTS: usize = 20;

/// Why no tunnel port could be negotiated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The annotation holds something else than a record.
    #[error("ConfigMap {NAMESPACE}/{CONFIGMAP}: annotation {ANNOTATION} is not a record")]
    Record(#[source] serde_json::Error),
    /// Every port above 10350 is taken.
    #[error("ConfigMap {NAMESPACE}/{CONFIGMAP}: no tunnel port is free")]
    NoPort,
    /// The API refused a read or write.
    #[error("{what} ConfigMap {NAMESPACE}/{CONFIGMAP}")]
    Api {
        /// Reading, creating or updating.
        what: &'static str,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// Other cloudcores kept writing first.
    #[error("ConfigMap {NAMESPACE}/{CONFIGMAP}: {ATTEMPTS} conflicting writes in a row")]
    Conflicts,
}

/// Upstream's `TunnelPortRecord`: ports by cloudcore IP, and the ports taken (Go marshals the
/// `map[int]bool` keys as strings).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The port of each cloudcore, by its IP.
    #[serde(rename = "ipTunnelPort", default)]
    pub ip_tunnel_port: BTreeMap<String, u16>,
    /// The ports taken.
    #[serde(default)]
    pub port: BTreeMap<String, bool>,
}

impl Record {
    /// The record in `cm`'s annotation; a ConfigMap without one reads as empty.
    pub fn of(cm: &ConfigMap) -> Result<Self, Error> {
        match cm.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION)) {
            Some(text) => serde_json::from_str(text).map_err(Error::Record),
            None => Ok(Self::default()),
        }
    }

    /// `ip`'s port, taking the lowest free one above [`BASE_PORT`] if it has none yet.
    /// Returns the port and whether the record changed.
    pub fn claim(&mut self, ip: &str) -> Result<(u16, bool), Error> {
        if let Some(port) = self.ip_tunnel_port.get(ip) {
            return Ok((*port, false));
        }
        let taken = |p: u16| self.port.contains_key(&p.to_string()) || self.ip_tunnel_port.values().any(|v| *v == p);
        let port = (BASE_PORT + 1..=u16::MAX).find(|p| !taken(*p)).ok_or(Error::NoPort)?;
        self.ip_tunnel_port.insert(ip.to_owned(), port);
        self.port.insert(port.to_string(), true);
        Ok((port, true))
    }

    fn annotate(&self, cm: &mut ConfigMap) {
        let text = serde_json::to_string(self).unwrap_or_default();
        cm.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(ANNOTATION.to_owned(), text);
    }
}

/// Negotiates this cloudcore's tunnel port for `ip` (its advertised address).
pub async fn negotiate(client: &kube::Client, ip: &str) -> Result<u16, Error> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    for _ in 0..ATTEMPTS {
        let current = maps.get_opt(CONFIGMAP).await.map_err(|source| Error::Api { what: "reading", source })?;
        let result = match current {
            Some(mut cm) => {
                let mut record = Record::of(&cm)?;
                let (port, changed) = record.claim(ip)?;
                if !changed {
                    return Ok(port);
                }
                record.annotate(&mut cm);
                maps.replace(CONFIGMAP, &PostParams::default(), &cm).await.map(|_| port).map_err(|e| ("updating", e))
            }
            None => {
                let mut record = Record::default();
                let (port, _) = record.claim(ip)?;
                let mut cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(CONFIGMAP.to_owned()),
                        namespace: Some(NAMESPACE.to_owned()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                record.annotate(&mut cm);
                maps.create(&PostParams::default(), &cm).await.map(|_| port).map_err(|e| ("creating", e))
            }
        };
        match result {
            Ok(port) => {
                info!(ip, port, "Negotiated the tunnel port (ConfigMap kubeedge/tunnelport).");
                return Ok(port);
            }
            // Another cloudcore wrote first: read again.
            Err((_, kube::Error::Api(s))) if s.code == 409 => {}
            Err((what, source)) => return Err(Error::Api { what, source }),
        }
    }
    Err(Error::Conflicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_claimed_from_10351_and_kept() {
        let mut r: Record =
            serde_json::from_str(r#"{"ipTunnelPort":{"10.0.0.1":10351},"port":{"10351":true}}"#).unwrap();
        assert_eq!(r.claim("10.0.0.1").unwrap(), (10351, false));
        assert_eq!(r.claim("10.0.0.2").unwrap(), (10352, true));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#"{"ipTunnelPort":{"10.0.0.1":10351,"10.0.0.2":10352},"port":{"10351":true,"10352":true}}"#);
        let mut empty = Record::default();
        assert_eq!(empty.claim("1.2.3.4").unwrap(), (10351, true));
    }
}

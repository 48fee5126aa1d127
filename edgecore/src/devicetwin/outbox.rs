//! The reports to the cloud: kept in `device_report_outbox` until the cloud confirms them,
//! coalesced per twin (and per device state), one message in flight per device and kind.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use kubeedge_beehive::Bus;
use kubeedge_metastore::Op;
use kubeedge_model::constants::{group, module, operation};
use kubeedge_model::{Content, Message, now_millis};
use tracing::debug;

use super::types::*;
use super::{DeviceTwinModule, FLUSH_MAX, RESEND_AFTER, json, store, uuid};

/// A pending report in the outbox.
#[derive(Debug, Clone)]
pub(super) struct Report {
    pub(super) device: String,
    /// `twin` or `state`.
    pub(super) kind: &'static str,
    /// Twin property name (empty for state).
    pub(super) name: String,
    pub(super) value: String,
    pub(super) seq: i64,
    pub(super) sent: Option<Instant>,
}

/// The reports the cloud has not confirmed.
#[derive(Default)]
pub(super) struct Outbox {
    pub(super) rows: BTreeMap<String, Report>,
    pub(super) in_flight: HashMap<String, Vec<(String, i64)>>,
    /// The unconfirmed message of each (device, kind) and when it went: one in flight per
    /// device and kind, so newer values wait here, coalesced, instead of queueing behind
    /// EdgeHub's `messageQPS` as stale messages.
    pub(super) busy: HashMap<(String, &'static str), (String, Instant)>,
    pub(super) seq: i64,
    pub(super) connected: bool,
}

impl Outbox {
    pub(super) fn twin_key(device: &str, name: &str) -> String {
        format!("{device}\ttwin\t{name}")
    }

    pub(super) fn state_key(device: &str) -> String {
        format!("{device}\tstate")
    }

    /// The op storing a twin report (merged with a pending one), and the row to hold after
    /// the commit.
    pub(super) fn twin(&mut self, device: &str, name: &str, t: &MsgTwin) -> (Op, String, Report) {
        let key = Self::twin_key(device, name);
        let merged = match self.rows.get(&key).and_then(|r| serde_json::from_str::<MsgTwin>(&r.value).ok()) {
            Some(old) => old.merged_with(t),
            None => t.clone(),
        };
        self.seq += 1;
        let value = serde_json::to_string(&merged).unwrap_or_default();
        let op = store::put_report(&key, device, "twin", name, &value, self.seq);
        let r =
            Report { device: device.to_owned(), kind: "twin", name: name.to_owned(), value, seq: self.seq, sent: None };
        (op, key, r)
    }

    pub(super) fn state(&mut self, device: &str, msg: &DeviceCloudMsg) -> (Op, String, Report) {
        let key = Self::state_key(device);
        self.seq += 1;
        let value = serde_json::to_string(msg).unwrap_or_default();
        let op = store::put_report(&key, device, "state", "", &value, self.seq);
        let r =
            Report { device: device.to_owned(), kind: "state", name: String::new(), value, seq: self.seq, sent: None };
        (op, key, r)
    }
}

impl DeviceTwinModule {
    /// The cloud confirmed a report.
    pub(super) fn confirm(&mut self, parent: &str) {
        self.outbox.busy.retain(|_, (id, _)| id != parent);
        let Some(sent) = self.outbox.in_flight.remove(parent) else {
            debug!(parent, "A confirmation of no pending report.");
            return;
        };
        let mut ops = Vec::new();
        for (key, seq) in sent {
            if self.outbox.rows.get(&key).is_some_and(|r| r.seq == seq) {
                self.outbox.rows.remove(&key);
                ops.push(store::confirm_report(&key, seq));
            }
        }
        // Should the batch fail, the rows are read back and sent again.
        self.commit(ops, Vec::new(), Vec::new());
    }

    /// Sends the reports not sent yet or unconfirmed for [`RESEND_AFTER`], one message per
    /// device and kind.
    pub(super) async fn flush(&mut self, bus: &Bus) {
        if !self.outbox.connected || self.outbox.rows.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut groups: BTreeMap<(String, &'static str), Vec<String>> = BTreeMap::new();
        let mut n = 0;
        for (key, r) in &self.outbox.rows {
            if r.sent.is_some_and(|t| now.duration_since(t) < RESEND_AFTER) {
                continue;
            }
            if self
                .outbox
                .busy
                .get(&(r.device.clone(), r.kind))
                .is_some_and(|(_, t)| now.duration_since(*t) < RESEND_AFTER)
            {
                continue;
            }
            groups.entry((r.device.clone(), r.kind)).or_default().push(key.clone());
            n += 1;
            if n >= FLUSH_MAX {
                break;
            }
        }
        for ((device, kind), keys) in groups {
            let (resource, content) = if kind == "state" {
                let Some(r) = self.outbox.rows.get(&keys[0]) else { continue };
                let dev: DeviceCloudMsg = serde_json::from_str(&r.value).unwrap_or_default();
                let payload = DeviceMsg { event_id: uuid(), timestamp: now_millis(), device: dev };
                (format!("device/{device}/state/update"), Content::string(&String::from_utf8_lossy(&json(&payload))))
            } else {
                let twin: Twins = keys
                    .iter()
                    .filter_map(|k| self.outbox.rows.get(k))
                    .map(|r| (r.name.clone(), serde_json::from_str::<MsgTwin>(&r.value).ok()))
                    .collect();
                let payload = DeviceTwinResult { event_id: uuid(), timestamp: now_millis(), twin };
                (
                    format!("device/{device}/twin/edge_updated"),
                    Content::json(&payload).unwrap_or_else(|_| Content::null()),
                )
            };
            let msg = Message::build(module::TWIN, group::RESOURCE, resource, operation::UPDATE, content);
            let id = msg.header.id.clone();
            let mut sent = Vec::new();
            for k in &keys {
                if let Some(r) = self.outbox.rows.get_mut(k) {
                    r.sent = Some(now);
                    sent.push((k.clone(), r.seq));
                }
            }
            if bus.send_to_group(group::HUB, msg).await.is_err() {
                debug!("No EdgeHub to report to.");
                return;
            }
            self.outbox.busy.insert((device, kind), (id.clone(), now));
            self.outbox.in_flight.insert(id, sent);
        }
        // Forget sends whose confirmation can no longer matter (their rows were resent).
        if self.outbox.in_flight.len() > 4 * FLUSH_MAX {
            let live: std::collections::HashSet<i64> = self.outbox.rows.values().map(|r| r.seq).collect();
            self.outbox.in_flight.retain(|_, v| v.iter().any(|(_, s)| live.contains(s)));
        }
    }
}

//! Twin updates from mappers (`twin/update`, `twin/get`) and desired values from the cloud.

use std::collections::BTreeMap;

use kubeedge_model::now_millis;
use tracing::warn;

use super::rules::*;
use super::store::{self, TwinRow};
use super::types::*;
use super::{DEVICE_PREFIX, DeviceTwinModule, TYPE_DELETED, json, uuid};

impl DeviceTwinModule {
    /// `twin/update` from a mapper or app (upstream `dealTwinUpdate`, REST deal type).
    pub(super) fn twin_update(&mut self, id: &str, payload: &[u8]) {
        let topic = format!("{DEVICE_PREFIX}{id}/twin/update/result");
        let req: DeviceTwinUpdate = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(_) => return self.error_result(topic, "", 400, reason::UNMARSHAL),
        };
        let Some(twins) = req.twin else {
            return self.error_result(topic, "", 400, reason::NO_TWIN);
        };
        for (k, v) in &twins {
            if !valid_token(k, 128) {
                return self.error_result(topic, "", 400, reason::KEY);
            }
            let Some(v) = v else { continue };
            for tv in [&v.expected, &v.actual].into_iter().flatten() {
                if let Some(s) = tv.value.as_deref().filter(|s| !s.is_empty())
                    && !valid_token(s, 512)
                {
                    return self.error_result(topic, "", 400, reason::VALUE);
                }
            }
        }
        let Some(device) = self.devices.get(id).cloned() else {
            return self.error_result(topic, &req.event_id, 404, reason::NO_DEVICE);
        };
        let now = now_millis();
        let mut dev = device.clone();
        let mut ops = Vec::new();
        let mut result = Twins::new();
        let mut sync = BTreeMap::new();
        let mut docs = BTreeMap::new();
        for (key, msg_twin) in &twins {
            let outcome = match (dev.twins.get(key).cloned(), msg_twin) {
                (Some(old), None) => Ok(delete_twin(&old, now)),
                (Some(old), Some(m)) => compare_twin(&old, m, now),
                (None, Some(m)) => add_twin(m, now).map(Change::added),
                (None, None) => Err("the request body is wrong"),
            };
            let change = match outcome {
                Ok(c) => c,
                Err(reason) => return self.error_result(topic, &req.event_id, 400, reason),
            };
            let Some(change) = change else { continue };
            let old = dev.twins.get(key);
            ops.push(match old {
                Some(_) => store::update_twin(id, key, &change.row),
                None => store::insert_twin(id, key, &change.row),
            });
            docs.insert(
                key.clone(),
                TwinDoc {
                    last: old.filter(|o| !o.is_deleted()).map(|o| o.to_msg().without_versions()),
                    current: (!change.row.is_deleted()).then(|| change.row.to_msg().without_versions()),
                },
            );
            result.insert(key.clone(), change.result.as_ref().map(MsgTwin::without_versions));
            sync.insert(key.clone(), change.sync.clone());
            dev.twins.insert(key.clone(), change.row);
        }
        let mut reports = Vec::new();
        for (k, t) in &sync {
            let (op, key, r) = self.outbox.twin(id, k, t);
            ops.push(op);
            reports.push((key, r));
        }
        let base = BaseMessage { event_id: req.event_id.clone(), timestamp: now };
        // The result skips deleted twins but keeps `null` ones, as upstream's BuildDeviceTwinResult.
        let shown: Twins = result.into_iter().filter(|(_, v)| !v.as_ref().is_some_and(MsgTwin::is_deleted)).collect();
        let mut pubs = vec![(
            topic.clone(),
            json(&DeviceTwinResult { event_id: base.event_id.clone(), timestamp: now, twin: shown }),
        )];
        if !docs.is_empty() {
            let doc = DeviceTwinDocument { event_id: base.event_id.clone(), timestamp: now, twin: docs };
            pubs.push((format!("{DEVICE_PREFIX}{id}/twin/update/document"), json(&doc)));
        }
        if let Some(delta) = delta_of(&dev) {
            pubs.push((format!("{DEVICE_PREFIX}{id}/twin/update/delta"), json(&delta)));
        }
        self.devices.insert(id.to_owned(), dev);
        let failed = ErrorResult {
            event_id: req.event_id.clone(),
            timestamp: now,
            code: 500,
            reason: "writing the device twin failed".to_owned(),
        };
        self.stage(ops, reports, pubs, Some((topic, json(&failed))));
    }

    /// `twin/get` (upstream `DealGetTwin`).
    pub(super) fn twin_get(&mut self, id: &str, payload: &[u8]) {
        let topic = format!("{DEVICE_PREFIX}{id}/twin/get/result");
        let req: BaseMessage = match serde_json::from_slice(payload) {
            Ok(r) => r,
            Err(e) => {
                let reason = format!("Unmarshal twin info failed, err: {e}");
                return self.error_result(topic, "", 400, &reason);
            }
        };
        let Some(dev) = self.devices.get(id) else {
            let reason = format!("Device {id} not found while getting twin");
            return self.error_result(topic, &req.event_id, 404, &reason);
        };
        let twin: Twins = dev
            .twins
            .iter()
            .filter(|(_, t)| !t.is_deleted())
            .map(|(k, t)| (k.clone(), Some(t.to_msg().without_versions())))
            .collect();
        let r = DeviceTwinResult { event_id: req.event_id, timestamp: now_millis(), twin };
        self.emit(topic, json(&r));
    }

    /// Expected values from the cloud (`twin/cloud_updated`, the membership's twins, a Device's
    /// desired values): the twins' expected values and cloud versions; document and delta on
    /// MQTT. Nothing is reported back.
    pub(super) fn apply_desired(&mut self, id: &str, event_id: &str, desired: &BTreeMap<String, (String, String)>) {
        let Some(mut dev) = self.devices.get(id).cloned() else { return };
        let now = now_millis();
        let mut ops = Vec::new();
        let mut docs = BTreeMap::new();
        for (key, (value, ty)) in desired {
            let old = dev.twins.get(key).cloned();
            if old.as_ref().is_some_and(|o| !o.is_deleted() && o.expected.as_deref() == Some(value.as_str())) {
                continue;
            }
            let mut row = old.clone().unwrap_or_else(|| TwinRow {
                optional: true,
                attr_type: if ty.is_empty() { "string".into() } else { ty.clone() },
                ..TwinRow::default()
            });
            if row.is_deleted() {
                row.attr_type = if ty.is_empty() { "string".into() } else { ty.clone() };
            }
            let mut v = row.expected_version.unwrap_or_default();
            v.cloud += 1;
            row.expected = Some(value.clone());
            row.expected_meta = Some(ValueMetadata { timestamp: now });
            row.expected_version = Some(v);
            ops.push(match &old {
                Some(_) => store::update_twin(id, key, &row),
                None => store::insert_twin(id, key, &row),
            });
            docs.insert(
                key.clone(),
                TwinDoc {
                    last: old.filter(|o| !o.is_deleted()).map(|o| o.to_msg().without_versions()),
                    current: Some(row.to_msg().without_versions()),
                },
            );
            dev.twins.insert(key.clone(), row);
        }
        if ops.is_empty() {
            return;
        }
        let mut pubs = Vec::new();
        let event_id = if event_id.is_empty() { uuid() } else { event_id.to_owned() };
        let doc = DeviceTwinDocument { event_id, timestamp: now, twin: docs };
        pubs.push((format!("{DEVICE_PREFIX}{id}/twin/update/document"), json(&doc)));
        if let Some(delta) = delta_of(&dev) {
            pubs.push((format!("{DEVICE_PREFIX}{id}/twin/update/delta"), json(&delta)));
        }
        self.devices.insert(id.to_owned(), dev);
        self.commit(ops, Vec::new(), pubs);
    }

    /// Desired values the cloud took back: a twin whose property left the Device is marked
    /// `deleted` (`delete`), one whose property no longer has a desired value keeps its reported
    /// value; either way the expected value is cleared and the cloud version bumped, as
    /// upstream's cloud-side `dealTwinDelete`; the document (and the delta, if any remains) on
    /// MQTT. Nothing is reported back.
    pub(super) fn remove_desired(&mut self, id: &str, names: &[String], delete: bool) {
        let Some(mut dev) = self.devices.get(id).cloned() else { return };
        let mut ops = Vec::new();
        let mut docs = BTreeMap::new();
        for key in names {
            let Some(old) = dev.twins.get(key).filter(|t| !t.is_deleted()).cloned() else { continue };
            let mut row = old.clone();
            let mut v = row.expected_version.unwrap_or_default();
            v.cloud += 1;
            row.expected = None;
            row.expected_meta = None;
            row.expected_version = Some(v);
            if delete {
                row.attr_type = TYPE_DELETED.into();
            }
            ops.push(store::update_twin(id, key, &row));
            let current = (!delete).then(|| row.to_msg().without_versions());
            docs.insert(key.clone(), TwinDoc { last: Some(old.to_msg().without_versions()), current });
            dev.twins.insert(key.clone(), row);
        }
        if ops.is_empty() {
            return;
        }
        let mut pubs = Vec::new();
        let doc = DeviceTwinDocument { event_id: uuid(), timestamp: now_millis(), twin: docs };
        pubs.push((format!("{DEVICE_PREFIX}{id}/twin/update/document"), json(&doc)));
        if let Some(delta) = delta_of(&dev) {
            pubs.push((format!("{DEVICE_PREFIX}{id}/twin/update/delta"), json(&delta)));
        }
        self.devices.insert(id.to_owned(), dev);
        self.commit(ops, Vec::new(), pubs);
    }

    /// `twin/cloud_updated` (legacy): the expected values of the update.
    pub(super) fn cloud_sync(&mut self, id: &str, payload: &[u8]) {
        let Ok(req) = serde_json::from_slice::<DeviceTwinUpdate>(payload) else {
            warn!(device = id, "Dropped an undecodable twin sync from the cloud.");
            return;
        };
        let desired = desired_of(req.twin.unwrap_or_default());
        self.apply_desired(id, &req.event_id, &desired);
    }
}

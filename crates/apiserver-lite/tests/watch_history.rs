//! The watch history and selectors over the stored JSON: a window per resource type bounded by
//! count and bytes (resuming inside it replays exactly what followed, outside it is 410 Gone),
//! selector transitions on watches, and paged lists with selectors.

mod common;

use std::time::Duration;

use apiserver_lite::Options;
use common::Cluster;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;

const PATIENCE: Duration = Duration::from_secs(30);

fn cm(name: &str, data: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "a"}}, "data": {"v": data}})).unwrap()
}

fn pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap()
}

/// (type, name) of the next event that is not a bookmark.
async fn next<K: kube::Resource>(
    stream: &mut (impl Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> (&'static str, String) {
    loop {
        let ev = tokio::time::timeout(PATIENCE, stream.next()).await.expect("likely deadlocked").expect("stream ended");
        let name = |o: &K| o.meta().name.clone().unwrap_or_default();
        return match ev.expect("watch event") {
            WatchEvent::Added(o) => ("ADDED", name(&o)),
            WatchEvent::Modified(o) => ("MODIFIED", name(&o)),
            WatchEvent::Deleted(o) => ("DELETED", name(&o)),
            WatchEvent::Error(e) => ("ERROR", e.code.to_string()),
            WatchEvent::Bookmark(_) => continue,
        };
    }
}

fn rv<K: kube::Resource>(o: &K) -> String {
    o.meta().resource_version.clone().unwrap()
}

#[test]
fn a_watch_resumes_inside_its_types_window_and_gets_410_outside_it() {
    let c = Cluster::start_with(Options { history: 3, ..Options::default() });
    let client = c.client();
    c.rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let pods: Api<Pod> = Api::namespaced(client, "default");
        let before_pod = rv(&cms.create(&PostParams::default(), &cm("first", "x")).await.unwrap());
        pods.create(&PostParams::default(), &pod("p", "n1")).await.unwrap();
        let mut versions = Vec::new();
        for i in 0..6 {
            versions.push(rv(&cms.create(&PostParams::default(), &cm(&format!("c{i}"), "x")).await.unwrap()));
        }
        // The last three configmap events are kept: from c2's version, c3..c5 follow.
        let mut s = cms.watch(&WatchParams::default(), &versions[2]).await.unwrap().boxed();
        for i in 3..6 {
            assert_eq!(next(&mut s).await, ("ADDED", format!("c{i}")));
        }
        // c2 itself has gone from the window: resuming before it is 410.
        let mut s = cms.watch(&WatchParams::default(), &versions[1]).await.unwrap().boxed();
        assert_eq!(next(&mut s).await, ("ERROR", "410".to_owned()));
        // The configmaps' churn did not push the pod's event out of the pods' window.
        let mut s = pods.watch(&WatchParams::default(), &before_pod).await.unwrap().boxed();
        assert_eq!(next(&mut s).await, ("ADDED", "p".to_owned()));
    });
}

#[test]
fn the_byte_bound_drops_the_oldest_events_first() {
    // Room for about three of these configmaps' events.
    let c = Cluster::start_with(Options { history_bytes: 3 * 1300, ..Options::default() });
    let client = c.client();
    c.rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(client, "default");
        let big = "x".repeat(1000);
        let mut versions = Vec::new();
        for i in 0..8 {
            versions.push(rv(&cms.create(&PostParams::default(), &cm(&format!("b{i}"), &big)).await.unwrap()));
        }
        let mut s = cms.watch(&WatchParams::default(), &versions[0]).await.unwrap().boxed();
        assert_eq!(next(&mut s).await, ("ERROR", "410".to_owned()));
        let mut s = cms.watch(&WatchParams::default(), &versions[5]).await.unwrap().boxed();
        assert_eq!(next(&mut s).await, ("ADDED", "b6".to_owned()));
        assert_eq!(next(&mut s).await, ("ADDED", "b7".to_owned()));
        // The newest event stays whatever its size.
        let huge = cms.create(&PostParams::default(), &cm("huge", &"y".repeat(10_000))).await.unwrap();
        let mut s = cms.watch(&WatchParams::default(), &versions[7]).await.unwrap().boxed();
        assert_eq!(next(&mut s).await, ("ADDED", "huge".to_owned()));
        let mut s = cms.watch(&WatchParams::default(), &rv(&huge)).await.unwrap().boxed();
        cms.create(&PostParams::default(), &cm("after", "z")).await.unwrap();
        assert_eq!(next(&mut s).await, ("ADDED", "after".to_owned()));
    });
}

#[test]
fn selectors_on_a_watch_turn_changes_into_added_and_deleted() {
    let c = Cluster::start();
    let client = c.client();
    c.rt.block_on(async {
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let start = rv(&cms.create(&PostParams::default(), &cm("sel", "1")).await.unwrap());
        cms.create(&PostParams::default(), &cm("other", "1")).await.unwrap();
        let mut by_label = cms.watch(&WatchParams::default().labels("app=a"), &start).await.unwrap().boxed();
        let mut by_name = cms.watch(&WatchParams::default().fields("metadata.name=sel"), &start).await.unwrap().boxed();
        let label = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"app": v}}}));
        cms.patch("sel", &PatchParams::default(), &label("b")).await.unwrap();
        cms.patch("sel", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": "2"}}))).await.unwrap();
        cms.patch("sel", &PatchParams::default(), &label("a")).await.unwrap();
        cms.delete("sel", &Default::default()).await.unwrap();
        assert_eq!(next(&mut by_label).await, ("ADDED", "other".to_owned()));
        assert_eq!(next(&mut by_label).await, ("DELETED", "sel".to_owned()), "stopped matching");
        assert_eq!(next(&mut by_label).await, ("ADDED", "sel".to_owned()), "the unlabelled change was not sent");
        assert_eq!(next(&mut by_label).await, ("DELETED", "sel".to_owned()));
        for kind in ["MODIFIED", "MODIFIED", "MODIFIED", "DELETED"] {
            assert_eq!(next(&mut by_name).await, (kind, "sel".to_owned()));
        }

        // A watch of a namespace from now starts with that namespace's objects only.
        let all: Api<ConfigMap> = Api::namespaced(client, "kube-public");
        let mut s = all.watch(&WatchParams::default(), "0").await.unwrap().boxed();
        assert_eq!(next(&mut s).await, ("ADDED", "kube-root-ca.crt".to_owned()));
    });
}

#[test]
fn paged_lists_with_selectors_read_every_page() {
    let c = Cluster::start();
    let client = c.client();
    c.rt.block_on(async {
        let pods: Api<Pod> = Api::namespaced(client, "default");
        for i in 0..9 {
            pods.create(&PostParams::default(), &pod(&format!("p{i}"), if i % 3 == 0 { "n0" } else { "n1" }))
                .await
                .unwrap();
        }
        let first = pods.list(&ListParams::default().limit(4)).await.unwrap();
        assert_eq!(first.metadata.remaining_item_count, Some(5), "counted without a selector");
        let mut names = Vec::new();
        let mut lp = ListParams::default().fields("spec.nodeName=n1").limit(2);
        loop {
            let page = pods.list(&lp).await.unwrap();
            assert_eq!(page.metadata.remaining_item_count, None, "left out with a selector, as kube-apiserver does");
            names.extend(page.items.into_iter().filter_map(|p| p.metadata.name));
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => lp = lp.continue_token(&token),
                _ => break,
            }
        }
        assert_eq!(names, ["p1", "p2", "p4", "p5", "p7", "p8"]);
    });
}

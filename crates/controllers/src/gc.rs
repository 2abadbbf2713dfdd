//! The garbage collector over ownerReferences and the namespace lifecycle (upstream
//! `pkg/controller/garbagecollector` and `pkg/controller/namespace/deletion`).
//!
//! Decisions are the pure [`plan`] over an [`OwnerGraph`] built from metadata-only caches of every served
//! resource; [`run`] declares those watches to the controller runtime, which plans only over complete
//! caches, and executes the actions through the API. An action that rests on an owner being gone (the
//! owner is missing from the caches) is executed only after a live read confirms it (upstream
//! `attemptToDeleteItem` → `isDangling`): at a cold start, a cache that lags must never delete a
//! StatefulSet's pods or claims.
//!
//! A pass is woken only by the events that can change the owner graph (`Interest::Ownership`: an object
//! with ownerReferences now or before, one being deleted, a removal), as upstream's graph builder queues
//! only such objects; creating a pod or ConfigMap without owners costs the collector nothing until the
//! next pass, which reads it from the cache.
//!
//! Rules (as upstream's `attemptToDeleteItem`, `orphanDependents` and `processDeletingDependentsItem`):
//! - a dependent whose owners are all gone is deleted (Background);
//! - a dependent with some owners gone loses the dangling ownerReferences;
//! - an owner being deleted with the `orphan` finalizer: its dependents lose their reference to it, then
//!   the finalizer is removed;
//! - an owner being deleted with `foregroundDeletion`: its dependents are deleted (Foreground when they
//!   block the owner), and once no dependent with `blockOwnerDeletion` remains the finalizer is removed;
//! - a Namespace being deleted: everything in it is deleted, then `kubernetes` is removed from its
//!   `spec.finalizers` through `/finalize`.

use controller_runtime::live::{self, Presence, Unconfirmed};
use controller_runtime::{Informers, Interest, Settings, SharedInformers};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::core::{ObjectMeta, PartialObjectMeta};
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One object as the collector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Index into `api::resources::RESOURCES`.
    pub resource: usize,
    /// Namespace (None for cluster-scoped).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// ownerReferences.
    pub owners: Vec<Owner>,
    /// Whether deletionTimestamp is set.
    pub deleting: bool,
    /// metadata.finalizers.
    pub finalizers: Vec<String>,
    /// For Namespaces: spec.finalizers.
    pub spec_finalizers: Vec<String>,
}

/// One ownerReference of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    /// The owner's uid.
    pub uid: String,
    /// `blockOwnerDeletion`.
    pub block: bool,
    /// The owner's `apiVersion`, `kind` and `name`, for the live read that confirms it is gone.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
}

/// Every object of the cluster, by uid. The collector keeps one graph for its whole life and updates it
/// from the caches before each pass ([`Tracker`]): only objects whose resourceVersion changed are
/// converted again (upstream's graph builder is likewise incremental, fed by its informers' events).
#[derive(Debug, Default)]
pub struct OwnerGraph {
    /// Objects by uid.
    pub nodes: FastMap<String, Arc<Node>>,
}

/// One step of the collector.
#[derive(Debug, Clone, PartialEq)]
pub enum GcAction {
    /// Delete the object with this propagation policy.
    Delete {
        /// Object uid.
        uid: String,
        /// `true` = Foreground, `false` = Background.
        foreground: bool,
        /// Owners (uids) the caches say are gone: each must be confirmed absent by a live read first.
        confirm_gone: Vec<String>,
    },
    /// Drop these ownerReferences (by owner uid) from the object.
    RemoveOwnerRefs {
        /// Object uid.
        uid: String,
        /// Owner uids to drop.
        owners: Vec<String>,
        /// Those of `owners` the caches say are gone: each must be confirmed absent by a live read first.
        confirm_gone: Vec<String>,
    },
    /// Remove a metadata finalizer from the object.
    RemoveFinalizer {
        /// Object uid.
        uid: String,
        /// The finalizer.
        finalizer: String,
    },
    /// Remove `kubernetes` from a Namespace's `spec.finalizers` (`/finalize`).
    FinalizeNamespace {
        /// Namespace name.
        name: String,
    },
}

fn is_namespace(n: &Node) -> bool {
    let r = &api::resources::RESOURCES[n.resource];
    r.group.is_empty() && r.kind == "Namespace"
}

/// Decide the collector's next actions (pure: no I/O, no clock).
pub fn plan(graph: &OwnerGraph) -> Vec<GcAction> {
    let mut actions = Vec::new();
    // Only objects with owners or being deleted can lead to an action; they are visited in uid order, so
    // the plan does not depend on the map's order.
    let mut relevant: Vec<&Node> = graph
        .nodes
        .values()
        .map(|n| &**n)
        .filter(|n| !n.owners.is_empty() || n.deleting)
        .collect();
    relevant.sort_unstable_by(|a, b| a.uid.cmp(&b.uid));
    // Which live objects reference which owner uid.
    let mut dependents: BTreeMap<&str, Vec<&Node>> = BTreeMap::new();
    for n in &relevant {
        for o in &n.owners {
            dependents.entry(o.uid.as_str()).or_default().push(n);
        }
    }
    // An owner is usable only in the dependent's namespace (or cluster-scoped).
    let owner_of = |dep: &Node, uid: &str| -> Option<&Node> {
        graph
            .nodes
            .get(uid)
            .map(|o| &**o)
            .filter(|o| o.namespace.is_none() || o.namespace == dep.namespace)
    };
    for &n in &relevant {
        if n.owners.is_empty() {
            continue;
        }
        let mut solid = false;
        let mut waiting = false;
        let mut drop = Vec::new();
        let mut gone = Vec::new();
        for Owner { uid, .. } in &n.owners {
            match owner_of(n, uid) {
                None => {
                    drop.push(uid.clone());
                    gone.push(uid.clone());
                }
                Some(o) if o.deleting && o.finalizers.iter().any(|f| f == "orphan") => drop.push(uid.clone()),
                Some(o) if o.deleting && o.finalizers.iter().any(|f| f == "foregroundDeletion") => {
                    waiting = true
                }
                Some(o) if o.deleting => {}
                Some(_) => solid = true,
            }
        }
        if gone.len() == n.owners.len() {
            if !n.deleting {
                actions.push(GcAction::Delete {
                    uid: n.uid.clone(),
                    foreground: false,
                    confirm_gone: gone,
                });
            }
            continue;
        }
        if !drop.is_empty() {
            actions.push(GcAction::RemoveOwnerRefs {
                uid: n.uid.clone(),
                owners: drop,
                confirm_gone: gone,
            });
            continue;
        }
        if !solid && waiting && !n.deleting {
            let blocks = n.owners.iter().any(|o| o.block);
            actions.push(GcAction::Delete {
                uid: n.uid.clone(),
                foreground: blocks,
                confirm_gone: Vec::new(),
            });
        }
    }
    for o in relevant.iter().filter(|o| o.deleting) {
        let deps = dependents.get(o.uid.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        if o.finalizers.iter().any(|f| f == "orphan") && deps.is_empty() {
            actions.push(GcAction::RemoveFinalizer {
                uid: o.uid.clone(),
                finalizer: "orphan".into(),
            });
        }
        if o.finalizers.iter().any(|f| f == "foregroundDeletion") {
            let blocking = deps
                .iter()
                .any(|d| d.owners.iter().any(|x| x.uid == o.uid && x.block));
            if !blocking {
                actions.push(GcAction::RemoveFinalizer {
                    uid: o.uid.clone(),
                    finalizer: "foregroundDeletion".into(),
                });
            }
        }
        if is_namespace(o) && o.spec_finalizers.iter().any(|f| f == "kubernetes") {
            let mut contents: Vec<&Node> = graph
                .nodes
                .values()
                .map(|n| &**n)
                .filter(|n| n.namespace.as_deref() == Some(o.name.as_str()))
                .collect();
            contents.sort_unstable_by(|a, b| a.uid.cmp(&b.uid));
            if contents.is_empty() {
                actions.push(GcAction::FinalizeNamespace { name: o.name.clone() });
            } else {
                for n in contents.into_iter().filter(|n| !n.deleting) {
                    actions.push(GcAction::Delete {
                        uid: n.uid.clone(),
                        foreground: false,
                        confirm_gone: Vec::new(),
                    });
                }
            }
        }
    }
    actions.dedup();
    actions
}

fn api_resource(r: &api::resources::Resource) -> ApiResource {
    ApiResource {
        group: r.group.into(),
        version: r.version.into(),
        api_version: r.api_version(),
        kind: r.kind.into(),
        plural: r.plural.into(),
    }
}

fn node_of(resource: usize, m: &ObjectMeta, spec_finalizers: Vec<String>) -> Option<Node> {
    Some(Node {
        resource,
        namespace: m.namespace.clone(),
        name: m.name.clone()?,
        uid: m.uid.clone()?,
        owners: m
            .owner_references
            .iter()
            .flatten()
            .map(|r| Owner {
                uid: r.uid.clone(),
                block: r.block_owner_deletion.unwrap_or(false),
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
            })
            .collect(),
        deleting: m.deletion_timestamp.is_some(),
        finalizers: m.finalizers.clone().unwrap_or_default(),
        spec_finalizers,
    })
}

/// A reflector cache: metadata only for every kind (as upstream's collector uses metadata informers),
/// except Namespaces, whose `spec.finalizers` the namespace lifecycle needs.
enum Cache {
    Metadata(reflector::Store<PartialObjectMeta<DynamicObject>>),
    Full(reflector::Store<DynamicObject>),
}

/// What [`OwnerGraph`]'s nodes were made from: each uid's resource and resourceVersion, and the last
/// update that saw it. An object unchanged since the last pass costs one map lookup (a pass over 10,000
/// pods then allocates nothing); an object no longer in any cache is removed.
#[derive(Debug, Default)]
struct Tracker {
    versions: FastMap<String, Version>,
    update: u64,
}

#[derive(Debug)]
struct Version {
    resource: usize,
    resource_version: String,
    update: u64,
}

/// Bring `graph` up to date with everything in the caches.
fn update_graph(caches: &[(usize, Cache)], graph: &mut OwnerGraph, tracker: &mut Tracker) {
    tracker.update += 1;
    let update = tracker.update;
    let versions = &mut tracker.versions;
    let nodes = &mut graph.nodes;
    let mut add = |i: usize, m: &ObjectMeta, spec_finalizers: &dyn Fn() -> Vec<String>| {
        let (Some(uid), rv) = (m.uid.as_deref(), m.resource_version.as_deref().unwrap_or("")) else {
            return;
        };
        if let Some(v) = versions.get_mut(uid)
            && v.resource == i
            && v.resource_version == rv
        {
            v.update = update;
            return;
        }
        let Some(node) = node_of(i, m, spec_finalizers()) else {
            return;
        };
        nodes.insert(uid.to_string(), Arc::new(node));
        versions.insert(
            uid.to_string(),
            Version {
                resource: i,
                resource_version: rv.to_string(),
                update,
            },
        );
    };
    for (i, cache) in caches {
        match cache {
            Cache::Metadata(store) => {
                for o in store.state() {
                    add(*i, &o.metadata, &Vec::new);
                }
            }
            Cache::Full(store) => {
                for o in store.state() {
                    let spec_finalizers = || {
                        o.data
                            .pointer("/spec/finalizers")
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                            .unwrap_or_default()
                    };
                    add(*i, &o.metadata, &spec_finalizers);
                }
            }
        }
    }
    versions.retain(|uid, v| {
        let seen = v.update == update;
        if !seen {
            nodes.remove(uid);
        }
        seen
    });
}

/// Run the collector until the process ends: a cache of every served kind, and a pass over the owner
/// graph once every cache has listed (controller-runtime), each action confirmed live where it rests on
/// an owner being gone.
pub async fn run(client: kube::Client, shared: SharedInformers) {
    let mut informers = Informers::new();
    let mut caches = Vec::new();
    for (i, r) in api::resources::RESOURCES.iter().enumerate() {
        // core/v1 Events and events.k8s.io Events are the same objects; watch one of them.
        if r.group == "events.k8s.io" {
            continue;
        }
        let ar = api_resource(r);
        let cfg = watcher::Config::default().any_semantic();
        let cache = if r.kind == "Namespace" {
            let api = Api::all_with(client.clone(), &ar);
            Cache::Full(informers.watch_shared_for(&shared, api, cfg, ar, Interest::Ownership))
        } else {
            // `Api<PartialObjectMeta<_>>` lists and watches with `as=PartialObjectMetadata[List]`.
            let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client.clone(), &ar);
            Cache::Metadata(informers.watch_shared_for(&shared, api, cfg, ar, Interest::Ownership))
        };
        caches.push((i, cache));
    }
    let mut passes = informers.into_loop("garbage-collector", Settings::default());
    let mut graph = OwnerGraph::default();
    let mut tracker = Tracker::default();
    while let Some(mut pass) = passes.next_pass().await {
        update_graph(&caches, &mut graph, &mut tracker);
        for action in plan(&graph) {
            let key = match action_uid(&action).and_then(|u| graph.nodes.get(u)) {
                Some(n) => object_key(n),
                None => format!("{action:?}"),
            };
            pass.step(&key, execute(&client, &graph, &action)).await;
        }
    }
}

fn action_uid(a: &GcAction) -> Option<&str> {
    match a {
        GcAction::Delete { uid, .. }
        | GcAction::RemoveOwnerRefs { uid, .. }
        | GcAction::RemoveFinalizer { uid, .. } => Some(uid),
        GcAction::FinalizeNamespace { .. } => None,
    }
}

fn object_key(n: &Node) -> String {
    let kind = api::resources::RESOURCES[n.resource].kind;
    match &n.namespace {
        Some(ns) => format!("{kind} {ns}/{}", n.name),
        None => format!("{kind} {}", n.name),
    }
}

/// Whether every owner in `uids` of `node` is gone, read live (upstream `isDangling`): absent, or its
/// name now taken by another uid. An owner kind Berth does not serve cannot be confirmed.
async fn owners_gone(client: &kube::Client, node: &Node, uids: &[String]) -> Result<bool, Unconfirmed> {
    for uid in uids {
        let Some(o) = node.owners.iter().find(|o| &o.uid == uid) else {
            continue;
        };
        let group = o.api_version.split_once('/').map_or("", |(g, _)| g);
        let Some(r) = api::resources::find_kind(group, &o.kind) else {
            return Err(Unconfirmed(format!(
                "owner {} {} has a kind that is not served",
                o.api_version, o.kind
            )));
        };
        let ar = api_resource(r);
        let api: Api<DynamicObject> = match (&node.namespace, r.namespaced) {
            (_, false) => Api::all_with(client.clone(), &ar),
            (Some(ns), true) => Api::namespaced_with(client.clone(), ns, &ar),
            // A namespaced owner of a cluster-scoped dependent cannot exist (upstream treats the
            // reference as dangling).
            (None, true) => continue,
        };
        if live::presence(&api, &o.name, uid).await? == Presence::Present {
            tracing::info!(object = %object_key(node), owner = %o.name, "owner still exists (cache behind); not collecting");
            return Ok(false);
        }
    }
    Ok(true)
}

type StepError = Box<dyn std::error::Error + Send + Sync>;

async fn execute(client: &kube::Client, graph: &OwnerGraph, action: &GcAction) -> Result<(), StepError> {
    let uid = match action {
        GcAction::Delete { uid, .. }
        | GcAction::RemoveOwnerRefs { uid, .. }
        | GcAction::RemoveFinalizer { uid, .. } => uid.clone(),
        GcAction::FinalizeNamespace { name } => {
            let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
            let mut ns = api.get(name).await?;
            if let Some(spec) = ns.spec.as_mut() {
                spec.finalizers = spec
                    .finalizers
                    .take()
                    .map(|f| f.into_iter().filter(|x| x != "kubernetes").collect());
            }
            api.replace_subresource("finalize", name, &PostParams::default(), &ns)
                .await?;
            return Ok(());
        }
    };
    let Some(node) = graph.nodes.get(&uid) else {
        return Ok(());
    };
    if let GcAction::Delete { confirm_gone, .. } | GcAction::RemoveOwnerRefs { confirm_gone, .. } = action
        && !owners_gone(client, node, confirm_gone).await?
    {
        return Ok(());
    }
    let ar = api_resource(&api::resources::RESOURCES[node.resource]);
    let api: Api<DynamicObject> = match &node.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let ignore_gone = |r: Result<(), kube::Error>| match r {
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        other => other,
    };
    match action {
        GcAction::Delete { foreground, .. } => {
            let dp = DeleteParams {
                propagation_policy: Some(if *foreground {
                    PropagationPolicy::Foreground
                } else {
                    PropagationPolicy::Background
                }),
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            ignore_gone(api.delete(&node.name, &dp).await.map(|_| ()))?;
        }
        GcAction::RemoveOwnerRefs { owners, .. } => {
            let current = api.get(&node.name).await?;
            let kept: Vec<_> = current
                .metadata
                .owner_references
                .unwrap_or_default()
                .into_iter()
                .filter(|r| !owners.contains(&r.uid))
                .collect();
            let patch = json!({"metadata": {"ownerReferences": kept, "resourceVersion": current.metadata.resource_version}});
            ignore_gone(
                api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
            )?;
        }
        GcAction::RemoveFinalizer { finalizer, .. } => {
            let current = api.get(&node.name).await?;
            let kept: Vec<String> = current
                .metadata
                .finalizers
                .unwrap_or_default()
                .into_iter()
                .filter(|f| f != finalizer)
                .collect();
            let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": current.metadata.resource_version}});
            ignore_gone(
                api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ()),
            )?;
        }
        GcAction::FinalizeNamespace { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(kind: &str) -> usize {
        api::resources::RESOURCES
            .iter()
            .position(|r| r.kind == kind)
            .expect("served")
    }

    fn node(kind: &str, name: &str, uid: &str, owners: &[(&str, bool)]) -> Node {
        Node {
            resource: idx(kind),
            namespace: if kind == "Namespace" {
                None
            } else {
                Some("default".into())
            },
            name: name.into(),
            uid: uid.into(),
            owners: owners
                .iter()
                .map(|(u, b)| Owner {
                    uid: u.to_string(),
                    block: *b,
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: u.to_string(),
                })
                .collect(),
            deleting: false,
            finalizers: vec![],
            spec_finalizers: vec![],
        }
    }

    #[test]
    fn the_graph_converts_only_changed_objects_and_drops_objects_gone_from_the_caches() {
        use kube::runtime::watcher::Event;
        let ar = api_resource(&api::resources::RESOURCES[idx("ConfigMap")]);
        let mut writer = reflector::store::Writer::<PartialObjectMeta<DynamicObject>>::new(ar);
        let cm = |name: &str, rv: &str| PartialObjectMeta::<DynamicObject> {
            types: None,
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            _phantom: std::marker::PhantomData,
        };
        writer.apply_watcher_event(&Event::Apply(cm("a", "1")));
        writer.apply_watcher_event(&Event::Apply(cm("b", "2")));
        let caches = vec![(idx("ConfigMap"), Cache::Metadata(writer.as_reader()))];
        let (mut graph, mut tracker) = (OwnerGraph::default(), Tracker::default());
        update_graph(&caches, &mut graph, &mut tracker);
        assert_eq!(graph.nodes.len(), 2);
        let (a1, b1) = (graph.nodes["uid-a"].clone(), graph.nodes["uid-b"].clone());
        // b changes, a does not, c appears.
        writer.apply_watcher_event(&Event::Apply(cm("b", "3")));
        writer.apply_watcher_event(&Event::Apply(cm("c", "4")));
        update_graph(&caches, &mut graph, &mut tracker);
        assert!(
            Arc::ptr_eq(&graph.nodes["uid-a"], &a1),
            "an unchanged object keeps its node"
        );
        assert!(
            !Arc::ptr_eq(&graph.nodes["uid-b"], &b1),
            "a changed object is converted again"
        );
        assert!(graph.nodes.contains_key("uid-c"));
        // a is deleted: gone from the graph and the tracker.
        writer.apply_watcher_event(&Event::Delete(cm("a", "5")));
        update_graph(&caches, &mut graph, &mut tracker);
        let mut uids: Vec<&str> = graph.nodes.keys().map(String::as_str).collect();
        uids.sort_unstable();
        assert_eq!(uids, ["uid-b", "uid-c"]);
        assert_eq!(tracker.versions.len(), 2);
    }

    fn graph(nodes: Vec<Node>) -> OwnerGraph {
        OwnerGraph {
            nodes: nodes.into_iter().map(|n| (n.uid.clone(), Arc::new(n))).collect(),
        }
    }

    #[test]
    fn dependents_of_a_gone_owner_are_deleted_in_background() {
        let g = graph(vec![node("Pod", "web-0", "p", &[("sts", true)])]);
        assert_eq!(
            plan(&g),
            vec![GcAction::Delete {
                uid: "p".into(),
                foreground: false,
                confirm_gone: vec!["sts".into()],
            }]
        );
    }

    #[test]
    fn a_dangling_reference_is_dropped_when_another_owner_lives() {
        let g = graph(vec![
            node("ConfigMap", "owner", "o", &[]),
            node("Pod", "p", "p", &[("o", false), ("gone", false)]),
        ]);
        assert_eq!(
            plan(&g),
            vec![GcAction::RemoveOwnerRefs {
                uid: "p".into(),
                owners: vec!["gone".into()],
                confirm_gone: vec!["gone".into()],
            }]
        );
    }

    #[test]
    fn orphan_strips_references_then_releases_the_owner() {
        let mut owner = node("ReplicaSet", "rs", "rs", &[]);
        owner.deleting = true;
        owner.finalizers = vec!["orphan".into()];
        let g = graph(vec![owner.clone(), node("Pod", "p", "p", &[("rs", true)])]);
        assert_eq!(
            plan(&g),
            vec![GcAction::RemoveOwnerRefs {
                uid: "p".into(),
                owners: vec!["rs".into()],
                confirm_gone: vec![],
            }]
        );
        let g = graph(vec![owner, node("Pod", "p", "p", &[])]);
        assert_eq!(
            plan(&g),
            vec![GcAction::RemoveFinalizer {
                uid: "rs".into(),
                finalizer: "orphan".into()
            }]
        );
    }

    #[test]
    fn foreground_deletes_blocking_dependents_first_down_a_chain() {
        let mut deploy = node("Deployment", "d", "d", &[]);
        deploy.deleting = true;
        deploy.finalizers = vec!["foregroundDeletion".into()];
        let rs = node("ReplicaSet", "rs", "rs", &[("d", true)]);
        let pod = node("Pod", "p", "p", &[("rs", true)]);
        let g = graph(vec![deploy.clone(), rs.clone(), pod.clone()]);
        assert_eq!(
            plan(&g),
            vec![GcAction::Delete {
                uid: "rs".into(),
                foreground: true,
                confirm_gone: vec![],
            }]
        );
        let mut rs_deleting = rs;
        rs_deleting.deleting = true;
        rs_deleting.finalizers = vec!["foregroundDeletion".into()];
        let g = graph(vec![deploy.clone(), rs_deleting, pod]);
        assert_eq!(
            plan(&g),
            vec![GcAction::Delete {
                uid: "p".into(),
                foreground: true,
                confirm_gone: vec![],
            }]
        );
        let g = graph(vec![deploy]);
        assert_eq!(
            plan(&g),
            vec![GcAction::RemoveFinalizer {
                uid: "d".into(),
                finalizer: "foregroundDeletion".into()
            }]
        );
    }

    #[test]
    fn an_owner_in_another_namespace_does_not_count() {
        let mut owner = node("ConfigMap", "o", "o", &[]);
        owner.namespace = Some("other".into());
        let g = graph(vec![owner, node("Pod", "p", "p", &[("o", false)])]);
        assert_eq!(
            plan(&g),
            vec![GcAction::Delete {
                uid: "p".into(),
                foreground: false,
                confirm_gone: vec!["o".into()],
            }]
        );
    }

    #[test]
    fn a_terminating_namespace_is_emptied_then_finalized() {
        let mut ns = node("Namespace", "demo", "ns", &[]);
        ns.deleting = true;
        ns.spec_finalizers = vec!["kubernetes".into()];
        let mut cm = node("ConfigMap", "c", "c", &[]);
        cm.namespace = Some("demo".into());
        let g = graph(vec![ns.clone(), cm]);
        assert_eq!(
            plan(&g),
            vec![GcAction::Delete {
                uid: "c".into(),
                foreground: false,
                confirm_gone: vec![],
            }]
        );
        let g = graph(vec![ns]);
        assert_eq!(
            plan(&g),
            vec![GcAction::FinalizeNamespace { name: "demo".into() }]
        );
    }
}

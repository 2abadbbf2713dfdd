//! The resource quota controller (upstream `pkg/controller/resourcequota`): keeps each ResourceQuota's
//! `status.hard` (= `spec.hard`) and `status.used` (what the objects of its namespace use now,
//! `api::quota`), so the charges the ResourceQuota admission plugin makes at create time are released
//! when objects go away. Pods come from a cache; the other kinds a quota names (`count/<resource>`,
//! `configmaps`, …) are listed on each pass, only for the quotas that name them.

use controller_runtime::{Informers, Settings, SharedInformers};
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::ApiResource;
use kube::runtime::watcher;
use serde_json::{Map, Value, json};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// The `(group, plural)` whose objects a quota's resource name counts (`None`: nothing Berth counts).
pub fn counted_by(resource: &str) -> Option<(String, String)> {
    let core = |p: &str| Some((String::new(), p.to_string()));
    match resource {
        "pods"
        | "cpu"
        | "memory"
        | "requests.cpu"
        | "requests.memory"
        | "limits.cpu"
        | "limits.memory"
        | "requests.ephemeral-storage"
        | "limits.ephemeral-storage" => core("pods"),
        "persistentvolumeclaims" | "requests.storage" => core("persistentvolumeclaims"),
        "services" | "services.loadbalancers" | "services.nodeports" => core("services"),
        "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => core(resource),
        r if r.contains(".storageclass.storage.k8s.io/") => core("persistentvolumeclaims"),
        r => {
            let counted = r.strip_prefix("count/")?;
            match counted.split_once('.') {
                Some((plural, group)) => Some((group.to_string(), plural.to_string())),
                None => core(counted),
            }
        }
    }
}

/// `status.used` for `quota` over the objects of its namespace, each with its `(group, plural)`.
pub fn used(quota: &Value, objects: &[(String, String, Value)]) -> Map<String, Value> {
    let hard = quota
        .pointer("/spec/hard")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut total = api::quota::Usage::new();
    for (group, plural, obj) in objects {
        if !api::quota::scopes_match(quota, plural, obj) {
            continue;
        }
        for (k, v) in api::quota::usage(group, plural, obj) {
            *total.entry(k).or_insert(0) += v;
        }
    }
    api::quota::used_from(&hard, &total)
}

fn same(a: Option<&Value>, b: &Map<String, Value>) -> bool {
    let norm = |m: &Map<String, Value>| -> Vec<(String, Option<i128>)> {
        m.iter().map(|(k, v)| (k.clone(), api::quota::milli(v))).collect()
    };
    a.and_then(Value::as_object).is_some_and(|a| norm(a) == norm(b))
}

/// Run until the process ends: caches of quotas and pods; each pass recomputes every quota's status.
pub async fn run(client: kube::Client, shared: SharedInformers) {
    let cfg = watcher::Config::default().any_semantic();
    let mut informers = Informers::new();
    let quotas = informers.watch_shared(&shared, Api::<ResourceQuota>::all(client.clone()), cfg.clone());
    let pods = informers.watch_shared(&shared, Api::<Pod>::all(client.clone()), cfg);
    let settings = Settings {
        // Upstream resyncs quotas every 5 minutes; objects other than pods are not watched here.
        resync: Duration::from_secs(15),
        ..Settings::default()
    };
    let mut passes = informers.into_loop("resourcequota", settings);
    while let Some(mut pass) = passes.next_pass().await {
        // Only the pods of a namespace with a quota are converted, once per pass and namespace (a
        // cluster without quotas pays nothing per pod).
        let all_pods = pods.state();
        let mut pods_by_ns: HashMap<String, Vec<Value>> = HashMap::new();
        for q in quotas.state() {
            let ns = q.metadata.namespace.clone().unwrap_or_default();
            let name = q.metadata.name.clone().unwrap_or_default();
            let Ok(quota) = serde_json::to_value(&*q) else {
                continue;
            };
            let hard = quota.pointer("/spec/hard").cloned().unwrap_or_else(|| json!({}));
            let kinds: BTreeSet<(String, String)> = hard
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| counted_by(k))
                .collect();
            let mut objects: Vec<(String, String, Value)> = Vec::new();
            let mut complete = true;
            for (group, plural) in &kinds {
                if group.is_empty() && plural == "pods" {
                    let in_ns = pods_by_ns.entry(ns.clone()).or_insert_with(|| {
                        all_pods
                            .iter()
                            .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
                            .filter_map(|p| serde_json::to_value(&**p).ok())
                            .collect()
                    });
                    objects.extend(
                        in_ns
                            .iter()
                            .map(|p| (String::new(), "pods".to_string(), p.clone())),
                    );
                    continue;
                }
                let Some(r) = api::resources::RESOURCES
                    .iter()
                    .find(|r| r.group == group && r.plural == plural && r.namespaced)
                else {
                    continue;
                };
                let ar = ApiResource {
                    group: r.group.into(),
                    version: r.version.into(),
                    api_version: r.api_version(),
                    kind: r.kind.into(),
                    plural: r.plural.into(),
                };
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
                match api.list(&ListParams::default()).await {
                    Ok(list) => objects.extend(list.items.into_iter().filter_map(|o| {
                        serde_json::to_value(o)
                            .ok()
                            .map(|v| (group.clone(), plural.clone(), v))
                    })),
                    Err(e) => {
                        tracing::warn!(%e, quota = %name, "listing {plural} for a quota failed");
                        complete = false;
                    }
                }
            }
            if !complete {
                continue;
            }
            let want = used(&quota, &objects);
            if same(quota.pointer("/status/used"), &want) && quota.pointer("/status/hard") == Some(&hard) {
                continue;
            }
            let api: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
            // Written with the cached resourceVersion: a charge the admission plugin made meanwhile wins,
            // and the next pass recomputes.
            let patch = json!({"metadata": {"resourceVersion": q.metadata.resource_version},
                               "status": {"hard": hard, "used": want}});
            pass.step(&format!("ResourceQuota {ns}/{name}"), async move {
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(|_| ())
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_names_map_to_what_they_count() {
        assert_eq!(counted_by("requests.cpu"), Some((String::new(), "pods".into())));
        assert_eq!(
            counted_by("count/deployments.apps"),
            Some(("apps".into(), "deployments".into()))
        );
        assert_eq!(
            counted_by("count/configmaps"),
            Some((String::new(), "configmaps".into()))
        );
        assert_eq!(counted_by("nvidia.com/gpu"), None);
    }

    #[test]
    fn used_sums_the_covered_objects() {
        let q = json!({"spec": {"hard": {"pods": "5", "requests.memory": "1Gi", "count/configmaps": "3"}}});
        let pod = |mem: &str| json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"memory": mem}}}]}});
        let objects = vec![
            (String::new(), "pods".to_string(), pod("64Mi")),
            (String::new(), "pods".to_string(), pod("64Mi")),
            (String::new(), "configmaps".to_string(), json!({})),
        ];
        let u = used(&q, &objects);
        assert_eq!(u["pods"], "2");
        assert_eq!(u["requests.memory"], "128Mi");
        assert_eq!(u["count/configmaps"], "1");
    }
}

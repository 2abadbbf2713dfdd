//! Discovery documents in both forms kubectl reads (kubectl-compat.md §2.2, §3.1, §3.2): aggregated
//! (`apidiscovery.k8s.io/v2`, chosen by the response Content-Type) and legacy (`APIVersions`,
//! `APIGroupList`, `APIResourceList`), plus the minimal OpenAPI v3 documents that let
//! `kubectl apply|create|replace|edit` send `fieldValidation=Strict` (kubectl-compat.md §3.3).

use api::resources::{self, RESOURCES, Resource, VERBS};
use serde_json::{Value, json};

/// The Content-Type that marks an aggregated discovery body.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the client accepts aggregated discovery (kubectl does; Python and kube-rs do not ask).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.contains("as=APIGroupDiscoveryList") && accept.contains("v=v2")
}

fn aggregated_resource(r: &Resource) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| {
            let (g, v, k) = s.response_kind().unwrap_or((r.group, r.version, r.kind));
            json!({"subresource": s.name(), "responseKind": {"group": g, "version": v, "kind": k}, "verbs": s.verbs()})
        })
        .collect();
    let mut o = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": VERBS,
    });
    if !r.short_names.is_empty() {
        o["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        o["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        o["subresources"] = Value::Array(subresources);
    }
    o
}

fn aggregated_group(group: &str, version: &str) -> Value {
    let res: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(aggregated_resource)
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null},
           "versions": [{"version": version, "resources": res, "freshness": "Current"}]})
}

/// Aggregated `/api` (core only) or `/apis` (every other group).
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![aggregated_group("", "v1")]
    } else {
        resources::groups()
            .into_iter()
            .map(|(g, v)| aggregated_group(g, v))
            .collect()
    };
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// Legacy `/api`.
pub fn api_versions(server_address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"],
           "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]})
}

fn api_group(group: &str, version: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
    json!({"name": group, "versions": [gv.clone()], "preferredVersion": gv})
}

/// Legacy `/apis`.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = resources::groups()
        .into_iter()
        .map(|(g, v)| api_group(g, v))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Legacy `/apis/<group>`, if served.
pub fn api_group_doc(group: &str) -> Option<Value> {
    resources::groups()
        .into_iter()
        .find(|(g, _)| *g == group)
        .map(|(g, v)| {
            let mut doc = api_group(g, v);
            doc["kind"] = json!("APIGroup");
            doc["apiVersion"] = json!("v1");
            doc
        })
}

/// Legacy `/api/v1` or `/apis/<group>/<version>`, if served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let served: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in served {
        let mut o = json!({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                           "kind": r.kind, "verbs": VERBS});
        if !r.short_names.is_empty() {
            o["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            o["categories"] = json!(r.categories);
        }
        list.push(o);
        for s in r.subresources {
            let mut sub = json!({"name": format!("{}/{}", r.plural, s.name()), "singularName": "",
                                 "namespaced": r.namespaced, "kind": r.kind, "verbs": s.verbs()});
            if let Some((g, v, k)) = s.response_kind() {
                sub["group"] = json!(g);
                sub["version"] = json!(v);
                sub["kind"] = json!(k);
            }
            list.push(sub);
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}))
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the index of group-version documents. `hash` busts kubectl's cache when the server changes.
pub fn openapi_index() -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs = vec![("", "v1")];
    gvs.extend(resources::groups());
    for (g, v) in gvs {
        let p = gv_path(g, v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", doc_hash(g, v))}),
        );
    }
    json!({"paths": paths})
}

fn doc_hash(group: &str, version: &str) -> String {
    use sha2::{Digest, Sha256};
    let doc = openapi_group_version(group, version)
        .map(|d| d.to_string())
        .unwrap_or_default();
    let digest = Sha256::digest(format!("{}{doc}", env!("CARGO_PKG_VERSION")).as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02X}")).collect()
}

/// `/openapi/v3/<gv path>`: one item path per kind with a PATCH operation carrying the kind's
/// `x-kubernetes-group-version-kind` and a `fieldValidation` parameter, and no request body, so kubectl
/// uses its compiled-in types for strategic merge patches (kubectl-compat.md §2.3).
pub fn openapi_group_version(group: &str, version: &str) -> Option<Value> {
    let served: Vec<&Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let base = gv_path(group, version);
    for r in served {
        let item = if r.namespaced {
            format!("/{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("/{base}/{}/{{name}}", r.plural)
        };
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
            {"name": "force", "in": "query", "schema": {"type": "boolean"}}
        ]);
        let op = |verb: &str| {
            json!({"operationId": format!("{verb}{}", r.kind), "x-kubernetes-action": verb,
                   "x-kubernetes-group-version-kind": gvk, "parameters": params,
                   "responses": {"200": {"description": "OK"}}})
        };
        paths.insert(
            item,
            json!({"get": op("get"), "put": op("put"), "patch": op("patch")}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.4"},
        "paths": paths,
        "components": {"schemas": {}}
    }))
}

/// Parse `/openapi/v3/api/v1` or `/openapi/v3/apis/<g>/<v>` into (group, version).
pub fn parse_openapi_path(rest: &str) -> Option<(String, String)> {
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", v] => Some((String::new(), (*v).to_string())),
        ["apis", g, v] => Some(((*g).to_string(), (*v).to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_core_lists_pods_with_subresources_and_categories() {
        let doc = aggregated(true);
        let pods = doc["items"][0]["versions"][0]["resources"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["resource"] == "pods"))
            .cloned()
            .expect("pods");
        assert_eq!(pods["categories"], json!(["all"]));
        assert!(
            pods["subresources"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x["subresource"] == "exec"))
        );
    }

    #[test]
    fn legacy_apps_list_has_scale_subresource_as_autoscaling_scale() {
        let doc = api_resource_list("apps", "v1").expect("served");
        let scale = doc["resources"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["name"] == "statefulsets/scale"))
            .cloned()
            .expect("scale");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
        assert!(api_resource_list("nope", "v1").is_none());
    }

    #[test]
    fn openapi_index_lists_every_group_version_and_documents_have_patch_with_field_validation() {
        let idx = openapi_index();
        assert!(
            idx["paths"]["apis/apps/v1"]["serverRelativeURL"]
                .as_str()
                .is_some()
        );
        let doc = openapi_group_version("apps", "v1").expect("served");
        let path = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/statefulsets/{name}"]["patch"];
        assert_eq!(path["x-kubernetes-group-version-kind"]["kind"], "StatefulSet");
        assert!(
            path["parameters"]
                .as_array()
                .is_some_and(|p| p.iter().any(|x| x["name"] == "fieldValidation"))
        );
    }
}

//! Patch tests: strategic merge cases (many re-expressed from upstream's `patch_test.go` scenarios and the
//! exact bodies kubectl sends, kubectl-compat.md §5.1), JSON/merge patch, and server-side apply.

use super::*;
use serde_json::json;

fn smp(kind: &str, original: Value, patch: Value) -> Value {
    let group = if matches!(kind, "StatefulSet" | "Deployment") {
        "apps"
    } else {
        ""
    };
    strategic_merge_patch(group, kind, &original, &patch).expect("patch applies")
}

fn pod(containers: Value) -> Value {
    json!({"metadata": {"name": "p"}, "spec": {"containers": containers}})
}

#[test]
fn null_deletes_and_maps_merge() {
    let out = smp(
        "Pod",
        json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
        json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
    );
    assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
}

#[test]
fn containers_merge_by_name_and_keep_other_fields() {
    let orig = pod(
        json!([{"name": "a", "image": "x:1", "ports": [{"containerPort": 80}]}, {"name": "b", "image": "y"}]),
    );
    let out = smp(
        "Pod",
        orig,
        json!({"spec": {"containers": [{"name": "a", "image": "x:2"}]}}),
    );
    assert_eq!(
        out["spec"]["containers"],
        json!([{"name": "a", "image": "x:2", "ports": [{"containerPort": 80}]}, {"name": "b", "image": "y"}])
    );
}

#[test]
fn kubectl_apply_body_with_set_element_order_and_delete_directive() {
    // kubectl-compat.md §5.1, the second `kubectl apply`.
    let orig = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.26", "ports": [{"containerPort": 80}, {"containerPort": 8080}]}]}}}});
    let patch = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "c"}], "containers": [{"$setElementOrder/ports": [{"containerPort": 8080}], "image": "nginx:1.27", "name": "c", "ports": [{"containerPort": 8080}, {"$patch": "delete", "containerPort": 80}]}]}}}});
    let out = smp("Deployment", orig, patch);
    assert_eq!(
        out["spec"]["template"]["spec"]["containers"],
        json!([{"name": "c", "image": "nginx:1.27", "ports": [{"containerPort": 8080}]}])
    );
}

#[test]
fn set_element_order_reorders_merged_lists() {
    let orig = pod(json!([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]));
    let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "a", "image": "3"}]}});
    let out = smp("Pod", orig, patch);
    let names: Vec<&str> = out["spec"]["containers"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["b", "a"]);
    assert_eq!(out["spec"]["containers"][1]["image"], "3");
}

#[test]
fn patch_replace_in_a_map_replaces_it_whole_as_rollout_undo_sends() {
    let orig = json!({"spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}, "annotations": {"x": "y"}}, "spec": {"containers": [{"name": "nginx", "image": "new"}]}}}});
    let patch = json!({"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "nginx", "image": "old"}]}}}});
    let out = smp("StatefulSet", orig, patch);
    assert_eq!(
        out["spec"]["template"],
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "nginx", "image": "old"}]}})
    );
    assert_eq!(out["spec"]["replicas"], 2);
}

#[test]
fn list_replace_directive_and_atomic_lists() {
    let orig = pod(json!([{"name": "a", "image": "1", "args": ["x", "y"]}]));
    let out = smp(
        "Pod",
        orig.clone(),
        json!({"spec": {"containers": [{"name": "a", "args": ["z"]}]}}),
    );
    assert_eq!(
        out["spec"]["containers"][0]["args"],
        json!(["z"]),
        "args is atomic"
    );
    let out = smp(
        "Pod",
        orig,
        json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "n", "image": "2"}]}}),
    );
    assert_eq!(out["spec"]["containers"], json!([{"name": "n", "image": "2"}]));
}

#[test]
fn finalizers_merge_as_a_set_and_delete_from_primitive_list() {
    let orig = json!({"metadata": {"finalizers": ["a", "b"]}});
    let out = smp(
        "Pod",
        orig.clone(),
        json!({"metadata": {"finalizers": ["b", "c"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "c"]));
    let out = smp(
        "Pod",
        orig,
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
    );
    assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
}

#[test]
fn retain_keys_clears_other_volume_sources() {
    let orig = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}});
    let patch = json!({"spec": {"volumes": [{"name": "v", "$retainKeys": ["configMap", "name"], "configMap": {"name": "cm"}}]}});
    let out = smp("Pod", orig, patch);
    assert_eq!(
        out["spec"]["volumes"],
        json!([{"name": "v", "configMap": {"name": "cm"}}])
    );
}

#[test]
fn map_delete_directive_and_item_delete() {
    let orig = json!({"spec": {"securityContext": {"runAsUser": 1}, "containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}});
    let out = smp(
        "Pod",
        orig,
        json!({"spec": {"securityContext": {"$patch": "delete"}, "containers": [{"name": "a", "$patch": "delete"}]}}),
    );
    assert!(out["spec"].get("securityContext").is_none());
    assert_eq!(out["spec"]["containers"], json!([{"name": "b", "image": "2"}]));
}

#[test]
fn owner_references_merge_by_uid_and_bad_patches_error() {
    let orig = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}});
    let out = smp(
        "Pod",
        orig.clone(),
        json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}}),
    );
    assert_eq!(
        out["metadata"]["ownerReferences"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(strategic_merge_patch("", "Pod", &orig, &json!([1])).is_err());
    assert!(
        strategic_merge_patch(
            "",
            "Pod",
            &orig,
            &json!({"spec": {"containers": [{"image": "no-name"}]}})
        )
        .is_err()
    );
}

#[test]
fn json_and_merge_patches() {
    let o = json!({"spec": {"replicas": 1, "x": [1, 2]}});
    assert_eq!(
        merge_patch(&o, &json!({"spec": {"x": [3], "replicas": null}})).expect("merge"),
        json!({"spec": {"x": [3]}})
    );
    let p = json!([{"op": "replace", "path": "/spec/replicas", "value": 4}, {"op": "add", "path": "/spec/x/-", "value": 9}]);
    assert_eq!(
        json_patch(&o, &p).expect("json"),
        json!({"spec": {"replicas": 4, "x": [1, 2, 9]}})
    );
    assert!(json_patch(&o, &json!([{"op": "test", "path": "/spec/replicas", "value": 2}])).is_err());
    assert!(json_patch(&o, &json!({"op": "bogus"})).is_err());
}

fn sts(replicas: i64, labels: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web", "labels": labels},
           "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]}}}})
}

#[test]
fn server_side_apply_is_idempotent_and_records_the_manager() {
    let now = "2026-01-01T00:00:00.000000Z";
    let created = server_side_apply(
        "apps",
        "StatefulSet",
        None,
        &sts(2, json!({"a": "1"})),
        "kubectl",
        false,
        now,
    )
    .expect("apply");
    let mf = &created["metadata"]["managedFields"][0];
    assert_eq!(mf["manager"], "kubectl");
    assert_eq!(mf["operation"], "Apply");
    assert!(mf["fieldsV1"]["f:spec"]["f:replicas"].is_object());
    assert!(
        mf["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["."]
            .is_object()
    );
    let again = server_side_apply(
        "apps",
        "StatefulSet",
        Some(&created),
        &sts(2, json!({"a": "1"})),
        "kubectl",
        false,
        now,
    )
    .expect("apply");
    assert_eq!(again, created);
}

#[test]
fn server_side_apply_removes_fields_the_manager_dropped() {
    let now = "t";
    let v1 = server_side_apply(
        "apps",
        "StatefulSet",
        None,
        &sts(2, json!({"a": "1", "b": "2"})),
        "m",
        false,
        now,
    )
    .expect("apply");
    let v2 = server_side_apply(
        "apps",
        "StatefulSet",
        Some(&v1),
        &sts(2, json!({"a": "1"})),
        "m",
        false,
        now,
    )
    .expect("apply");
    assert_eq!(v2["metadata"]["labels"], json!({"a": "1"}));
}

#[test]
fn conflicting_managers_are_reported_unless_forced() {
    let now = "t";
    let v1 = server_side_apply(
        "apps",
        "StatefulSet",
        None,
        &sts(2, json!({})),
        "first",
        false,
        now,
    )
    .expect("apply");
    let err = server_side_apply(
        "apps",
        "StatefulSet",
        Some(&v1),
        &sts(5, json!({})),
        "second",
        false,
        now,
    )
    .expect_err("conflict");
    match err {
        PatchError::Conflict(c) => assert_eq!(
            c,
            vec![ApplyConflict {
                manager: "first".into(),
                field: ".spec.replicas".into()
            }]
        ),
        other => panic!("unexpected {other}"),
    }
    let forced = server_side_apply(
        "apps",
        "StatefulSet",
        Some(&v1),
        &sts(5, json!({})),
        "second",
        true,
        now,
    )
    .expect("forced");
    assert_eq!(forced["spec"]["replicas"], 5);
    let first = forced["metadata"]["managedFields"]
        .as_array()
        .expect("mf")
        .iter()
        .find(|m| m["manager"] == "first")
        .cloned()
        .expect("first");
    assert!(
        first["fieldsV1"]["f:spec"].get("f:replicas").is_none(),
        "ownership moved"
    );
}

#[test]
fn updates_take_ownership_of_the_fields_they_change() {
    let now = "t";
    let v1 = server_side_apply(
        "apps",
        "StatefulSet",
        None,
        &sts(2, json!({})),
        "kubectl",
        false,
        now,
    )
    .expect("apply");
    let mut v2 = v1.clone();
    v2["spec"]["replicas"] = json!(4);
    record_update("apps", "StatefulSet", Some(&v1), &mut v2, "kubectl-scale", now);
    let err = server_side_apply(
        "apps",
        "StatefulSet",
        Some(&v2),
        &sts(2, json!({})),
        "kubectl",
        false,
        now,
    )
    .expect_err("conflict");
    assert!(matches!(err, PatchError::Conflict(ref c) if c[0].manager == "kubectl-scale"));
}

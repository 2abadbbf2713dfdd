//! Server-side apply and managedFields tracking (upstream `sigs.k8s.io/structured-merge-diff` as used by
//! `k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager`), reduced to what kubectl and kube-rs rely on:
//! per-manager field sets in `FieldsV1` form, removal of fields a manager stopped applying, conflicts with
//! other managers (forced away with `force`), and ownership taken by ordinary updates.

use super::schema::{self, Strategy};
use super::{ApplyConflict, PatchError, strip_directives};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// One path element: `f:name`, `k:{"name":"x"}` (list-map item) or `v:"x"` (set item).
type Path = Vec<String>;

/// Metadata fields the system owns; never part of a manager's set.
const SYSTEM_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

fn key_element(item: &Value, keys: &[&str]) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        match item.get(*k) {
            Some(v) => {
                m.insert((*k).to_string(), v.clone());
            }
            None if *k == "protocol" => {
                m.insert("protocol".into(), json!("TCP"));
            }
            None => return None,
        }
    }
    Some(format!("k:{}", Value::Object(m)))
}

/// Collect the leaf paths of `v` (typed by `ty`) into `out`.
fn collect(v: &Value, ty: &str, prefix: &mut Path, out: &mut BTreeSet<Path>, top: bool) {
    let Value::Object(m) = v else {
        out.insert(prefix.clone());
        return;
    };
    if m.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
        return;
    }
    for (k, child) in m {
        if top && (k == "apiVersion" || k == "kind" || k == "status") {
            continue;
        }
        if ty == "ObjectMeta" && SYSTEM_META.contains(&k.as_str()) {
            continue;
        }
        let info = schema::field(ty, k);
        let child_ty = info.and_then(|(_, c)| c).unwrap_or("Object");
        prefix.push(format!("f:{k}"));
        match (child, info.map(|(s, _)| s)) {
            (
                Value::Array(items),
                Some(strategy @ (Strategy::MergeByKey(_) | Strategy::MergeByKeyRetainKeys(_))),
            ) => {
                let keys = schema::list_map_keys(strategy, ty, k).unwrap_or_default();
                if items.is_empty() {
                    out.insert(prefix.clone());
                }
                for item in items {
                    match key_element(item, &keys) {
                        Some(el) => {
                            prefix.push(el);
                            let mut dot = prefix.clone();
                            dot.push(".".into());
                            out.insert(dot);
                            collect(item, child_ty, prefix, out, false);
                            prefix.pop();
                        }
                        None => {
                            out.insert(prefix.clone());
                        }
                    }
                }
            }
            (Value::Array(items), Some(Strategy::MergePrimitives)) => {
                if items.is_empty() {
                    out.insert(prefix.clone());
                }
                for item in items {
                    prefix.push(format!("v:{item}"));
                    out.insert(prefix.clone());
                    prefix.pop();
                }
            }
            (Value::Object(_), _) => collect(child, child_ty, prefix, out, false),
            _ => {
                out.insert(prefix.clone());
            }
        }
        prefix.pop();
    }
}

fn field_set(v: &Value, group: &str, kind: &str) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    collect(v, schema::root(group, kind), &mut Vec::new(), &mut out, true);
    out
}

/// Whether a list item has the key fields of a `k:` element (`protocol` defaults to TCP, as upstream).
fn item_matches(item: &Value, key: &Map<String, Value>) -> bool {
    key.iter().all(|(k, v)| match item.get(k) {
        Some(iv) => iv == v,
        None => k == "protocol" && v == "TCP",
    })
}

/// The value at a path, if present.
fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for el in path {
        if el == "." {
            return Some(cur);
        }
        if let Some(f) = el.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = el.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).ok()?;
            let km = key.as_object()?;
            cur = cur.as_array()?.iter().find(|item| item_matches(item, km))?;
        } else if let Some(x) = el.strip_prefix("v:") {
            let want: Value = serde_json::from_str(x).ok()?;
            return cur.as_array()?.iter().find(|i| **i == want);
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Remove the value at a path (a list-map item, a set item or a field).
fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    if last == "." {
        remove(v, parent_path);
        return;
    }
    let mut cur = v;
    for el in parent_path {
        let next = if let Some(f) = el.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = el.strip_prefix("k:") {
            let Ok(key) = serde_json::from_str::<Value>(k) else {
                return;
            };
            let Some(km) = key.as_object().cloned() else {
                return;
            };
            cur.as_array_mut()
                .and_then(|a| a.iter_mut().find(|item| item_matches(item, &km)))
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(key), Some(a)) = (serde_json::from_str::<Value>(k), cur.as_array_mut())
            && let Some(km) = key.as_object()
        {
            a.retain(|item| !item_matches(item, km));
        }
    } else if let Some(x) = last.strip_prefix("v:")
        && let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(x), cur.as_array_mut())
    {
        a.retain(|i| *i != want);
    }
}

fn to_fields_v1(set: &BTreeSet<Path>) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for el in path {
            let entry = cur.entry(el.clone()).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            cur = entry.as_object_mut().expect("object");
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value) -> BTreeSet<Path> {
    fn walk(v: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    prefix.push(k.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Managed-field entries keyed by (manager, operation, subresource).
type Managers = BTreeMap<(String, String, String), (Value, BTreeSet<Path>)>;

fn read_managers(obj: &Value) -> Managers {
    let mut out = Managers::new();
    for e in obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = (
            e.get("manager").and_then(Value::as_str).unwrap_or("").to_string(),
            e.get("operation")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            e.get("subresource")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        );
        let set = from_fields_v1(e.get("fieldsV1").unwrap_or(&Value::Null));
        out.insert(key, (e.clone(), set));
    }
    out
}

fn write_managers(obj: &mut Value, managers: &Managers) {
    let entries: Vec<Value> = managers
        .values()
        .filter(|(_, set)| !set.is_empty())
        .map(|(e, set)| {
            let mut e = e.clone();
            e["fieldsType"] = json!("FieldsV1");
            e["fieldsV1"] = to_fields_v1(set);
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

fn entry(manager: &str, operation: &str, api_version: &str, now: &str) -> Value {
    json!({"manager": manager, "operation": operation, "apiVersion": api_version, "time": now,
           "fieldsType": "FieldsV1", "fieldsV1": {}})
}

fn print_path(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if el == "." {
            continue;
        }
        if let Some(f) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = el.strip_prefix("k:") {
            s.push('[');
            s.push_str(k);
            s.push(']');
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push('[');
            s.push_str(v);
            s.push(']');
        }
    }
    s
}

/// Server-side apply of `applied` by `manager` onto `live` (None = create).
///
/// # Errors
/// [`PatchError::Conflict`] when fields owned by other managers would change and `force` is false;
/// [`PatchError::InvalidPatch`] when `applied` is not an object.
pub fn server_side_apply(
    group: &str,
    kind: &str,
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now_rfc3339: &str,
) -> Result<Value, PatchError> {
    if !applied.is_object() {
        return Err(PatchError::InvalidPatch(
            "apply configuration must be an object".into(),
        ));
    }
    let applied = strip_directives(applied);
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let new_set = field_set(&applied, group, kind);
    let base = live.cloned().unwrap_or_else(|| json!({}));
    let mut managers = read_managers(&base);
    let me = (manager.to_string(), "Apply".to_string(), String::new());
    // Conflicts: a leaf another manager owns whose value this apply changes.
    let mut conflicts = Vec::new();
    for path in &new_set {
        let differs = match (lookup(&base, path), lookup(&applied, path)) {
            (Some(a), Some(b)) => path.last().is_some_and(|l| l != ".") && a != b,
            (None, _) => false,
            (Some(_), None) => false,
        };
        if !differs {
            continue;
        }
        for (key, (_, set)) in &managers {
            if *key != me && set.contains(path) {
                conflicts.push(ApplyConflict {
                    manager: key.0.clone(),
                    field: print_path(path),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(PatchError::Conflict(conflicts));
    }
    // Merge, then drop what this manager applied before but no longer does (unless someone else owns it).
    let mut merged = super::strategic_merge_patch(group, kind, &base, &applied)?;
    let previous = managers.get(&me).map(|(_, s)| s.clone()).unwrap_or_default();
    for path in previous.difference(&new_set) {
        let owned_elsewhere = managers.iter().any(|(k, (_, s))| *k != me && s.contains(path));
        if !owned_elsewhere && path.last().is_some_and(|l| l != ".") {
            remove(&mut merged, path);
        }
    }
    // Ownership: fields whose value this apply changed (the forced conflicts) move to this manager;
    // fields applied with the same value become shared, as upstream.
    for (key, (_, set)) in managers.iter_mut() {
        if *key != me {
            for path in &new_set {
                if lookup(&base, path).is_some() && lookup(&base, path) != lookup(&applied, path) {
                    set.remove(path);
                }
            }
        }
    }
    managers.insert(me, (entry(manager, "Apply", &api_version, now_rfc3339), new_set));
    if let Some(meta) = base.get("metadata") {
        // System metadata stays as stored.
        for k in SYSTEM_META {
            if let Some(v) = meta.get(*k) {
                merged["metadata"][*k] = v.clone();
            }
        }
    }
    write_managers(&mut merged, &managers);
    Ok(merged)
}

/// Record that `manager` wrote the fields that differ between `old` and `new` (operation `Update`), taking
/// them from other managers, as upstream does for create, update and patch requests.
pub fn record_update(
    group: &str,
    kind: &str,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    now_rfc3339: &str,
) {
    if manager.is_empty() || !new.is_object() {
        return;
    }
    let new_set = field_set(new, group, kind);
    let changed: BTreeSet<Path> = new_set
        .iter()
        .filter(|p| match old {
            None => true,
            Some(o) => lookup(o, p) != lookup(new, p),
        })
        .cloned()
        .collect();
    let mut managers = read_managers(old.unwrap_or(&Value::Null));
    // Fields removed from the object are no longer owned by anyone.
    for (_, set) in managers.values_mut() {
        set.retain(|p| new_set.contains(p));
    }
    if changed.is_empty() {
        write_managers(new, &managers);
        return;
    }
    for (key, (_, set)) in managers.iter_mut() {
        if key.0 != manager || key.1 != "Update" {
            for p in &changed {
                set.remove(p);
            }
        }
    }
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let key = (manager.to_string(), "Update".to_string(), String::new());
    let mut set = managers.get(&key).map(|(_, s)| s.clone()).unwrap_or_default();
    set.extend(changed);
    managers.insert(key, (entry(manager, "Update", &api_version, now_rfc3339), set));
    write_managers(new, &managers);
}

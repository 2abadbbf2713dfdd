//! `meta.k8s.io/v1 Table` responses (kubectl-compat.md §2.5): columns and cells from `api::table`, each row
//! carrying the object as `PartialObjectMetadata` (or the full object with `includeObject=Object`).

use crate::registry::ListResult;
use crate::request::{Query, Target};
use serde_json::{Value, json};

fn row(target: &Target, obj: Value, include: &str, now: jiff::Timestamp) -> Value {
    let r = target.resource;
    let cells = api::table::row_cells(r.group, r.kind, &obj, now);
    let object = match include {
        "None" => Value::Null,
        "Object" => obj,
        _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))}),
    };
    if object.is_null() {
        json!({"cells": cells})
    } else {
        json!({"cells": cells, "object": object})
    }
}

fn columns(target: &Target) -> Value {
    serde_json::to_value(api::table::columns(target.resource.group, target.resource.kind))
        .unwrap_or(json!([]))
}

/// A Table for a list.
pub fn list_table(target: &Target, list: &ListResult, q: &Query) -> Value {
    let include = q.get("includeObject").unwrap_or("Metadata").to_string();
    let now = jiff::Timestamp::now();
    let rows: Vec<Value> = list
        .items
        .iter()
        .cloned()
        .map(|o| row(target, o, &include, now))
        .collect();
    let mut meta = json!({"resourceVersion": list.revision.to_string()});
    if let Some(c) = &list.continue_token {
        meta["continue"] = json!(c);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
           "columnDefinitions": columns(target), "rows": rows})
}

/// A Table for one object.
pub fn object_table(target: &Target, obj: &Value, q: &Query) -> Value {
    let include = q.get("includeObject").unwrap_or("Metadata").to_string();
    let rv = obj
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(json!(""));
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
           "columnDefinitions": columns(target), "rows": [row(target, obj.clone(), &include, jiff::Timestamp::now())]})
}

/// How a client asked to receive objects (its `Accept` header's `as=` parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Render {
    /// The objects themselves.
    Full,
    /// `as=Table`: server-side printing.
    Table,
    /// `as=PartialObjectMetadata` / `as=PartialObjectMetadataList`: metadata only (metadata informers,
    /// upstream `handlers/response.go` `asPartialObjectMetadata`).
    Metadata,
}

impl Render {
    /// From an `Accept` header.
    pub fn from_accept(accept: &str) -> Self {
        if accept.contains("as=Table") {
            Render::Table
        } else if accept.contains("as=PartialObjectMetadata") {
            Render::Metadata
        } else {
            Render::Full
        }
    }
}

/// `obj` as a `meta.k8s.io/v1 PartialObjectMetadata`.
pub fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
           "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// A list as a `meta.k8s.io/v1 PartialObjectMetadataList`.
pub fn partial_list(list: &ListResult) -> Value {
    let mut meta = json!({"resourceVersion": list.revision.to_string()});
    if let Some(c) = &list.continue_token {
        meta["continue"] = json!(c);
    }
    json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
           "items": list.items.iter().map(partial).collect::<Vec<_>>()})
}

/// Turns watch event objects into one-row Tables (only the first carries the column definitions) or
/// metadata-only objects when the client asked for them (upstream `handlers/response.go`).
pub struct WatchPrinter {
    target: Target,
    render: Render,
    include: String,
    sent_columns: bool,
}

impl WatchPrinter {
    /// A printer for one watch.
    pub fn new(target: Target, render: Render, q: &Query) -> Self {
        Self {
            target,
            render,
            include: q.get("includeObject").unwrap_or("Metadata").to_string(),
            sent_columns: false,
        }
    }

    /// The event's object as the client wants it.
    pub fn object(&mut self, obj: Value) -> Value {
        match self.render {
            Render::Full => return obj,
            Render::Metadata => return partial(&obj),
            Render::Table => {}
        }
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(json!(""));
        let cols = if self.sent_columns {
            json!([])
        } else {
            columns(&self.target)
        };
        self.sent_columns = true;
        json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv},
               "columnDefinitions": cols, "rows": [row(&self.target, obj, &self.include, jiff::Timestamp::now())]})
    }
}

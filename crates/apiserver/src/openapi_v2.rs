//! `/openapi/v2`: the Swagger 2.0 document kubectl's client-side validation reads (kubectl-compat.md
//! §3.3). kubectl asks for it only as protobuf (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`,
//! gnostic's `openapi.v2.Document`, client-go `DiscoveryClient.OpenAPISchema`), typically for a `kind: List`
//! manifest, whose items its server-side `fieldValidation` check cannot cover; without this document
//! `kubectl apply -f backup.yaml` of a `kubectl get -o yaml` list fails with "the server could not find the
//! requested resource".
//!
//! Every served kind has a definition under upstream's name (`io.k8s.api.core.v1.ConfigMap`).
//! **Deviation:** the definitions carry no schema and no `x-kubernetes-group-version-kind` yet. kubectl
//! uses any v2 definition it finds by GVK for its client-side validation **and** to compute strategic
//! merge patches (`kubectl apply` prefers it to its compiled-in types); a definition without the real
//! schema makes those patches wrong (tried: a re-apply of an unchanged PodDisruptionBudget was
//! "configured"). Without the extension kubectl finds no kind here, skips client-side validation and
//! patches with its compiled-in types, as before; the server's strict decoding (`fieldValidation=Strict`,
//! `api::schema`) stays the one judge of unknown fields, as for every non-List manifest. Serving
//! k8s-openapi's generated schemas (its `schemars` feature) with the extensions is the next step.
//! The document is built once and cached in both encodings.

use api::resources::{RESOURCES, Resource};
use prost::Message;
use serde_json::{Map, json};
use std::sync::OnceLock;

/// The protobuf media type of the response (kube-openapi's handler answers kubectl's
/// `…spec.v2@v1.0+protobuf` with this spelling: Go's `mime` parser refuses the `@`).
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// gnostic `openapi.v2.Schema` (the fields used here).
#[derive(Clone, PartialEq, Message)]
struct Schema {
    #[prost(string, tag = "4")]
    description: String,
}

/// gnostic `openapi.v2.NamedSchema`.
#[derive(Clone, PartialEq, Message)]
struct NamedSchema {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    value: Option<Schema>,
}

/// gnostic `openapi.v2.Definitions`.
#[derive(Clone, PartialEq, Message)]
struct Definitions {
    #[prost(message, repeated, tag = "1")]
    additional_properties: Vec<NamedSchema>,
}

/// gnostic `openapi.v2.Info`.
#[derive(Clone, PartialEq, Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

/// gnostic `openapi.v2.Paths` (empty: kubectl reads only definitions).
#[derive(Clone, PartialEq, Message)]
struct Paths {}

/// gnostic `openapi.v2.Document`.
#[derive(Clone, PartialEq, Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    definitions: Option<Definitions>,
}

/// Upstream's definition name of a served kind (`io.k8s.api.apps.v1.StatefulSet`).
pub fn definition_name(r: &Resource) -> String {
    if r.group == "apiregistration.k8s.io" {
        return format!(
            "io.k8s.kube-aggregator.pkg.apis.apiregistration.{}.{}",
            r.version, r.kind
        );
    }
    let pkg = match r.group {
        "" => "core",
        g => g.strip_suffix(".k8s.io").unwrap_or(g),
    };
    format!("io.k8s.api.{pkg}.{}.{}", r.version, r.kind)
}

const TITLE: &str = "Kubernetes";
const VERSION: &str = "v1.32.4";

fn definitions() -> Vec<(String, String)> {
    RESOURCES
        .iter()
        .map(|r| (definition_name(r), format!("{} {}", r.api_version(), r.kind)))
        .collect()
}

/// The document as JSON (cached).
pub fn json_document() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut defs = Map::new();
        for (name, description) in definitions() {
            defs.insert(name, json!({"description": description}));
        }
        let doc = json!({"swagger": "2.0", "info": {"title": TITLE, "version": VERSION},
                         "paths": {}, "definitions": defs});
        serde_json::to_vec(&doc).unwrap_or_default()
    })
}

/// The document as gnostic protobuf (cached).
pub fn protobuf_document() -> &'static [u8] {
    static DOC: OnceLock<Vec<u8>> = OnceLock::new();
    DOC.get_or_init(|| {
        let additional_properties = definitions()
            .into_iter()
            .map(|(name, description)| NamedSchema {
                value: Some(Schema { description }),
                name,
            })
            .collect();
        Document {
            swagger: "2.0".into(),
            info: Some(Info {
                title: TITLE.into(),
                version: VERSION.into(),
            }),
            paths: Some(Paths {}),
            definitions: Some(Definitions {
                additional_properties,
            }),
        }
        .encode_to_vec()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn every_served_kind_has_a_definition() {
        let doc: Value = serde_json::from_slice(json_document()).expect("json");
        let cm = &doc["definitions"]["io.k8s.api.core.v1.ConfigMap"];
        assert_eq!(cm["description"], "v1 ConfigMap");
        assert!(doc["definitions"]["io.k8s.api.networking.v1.Ingress"].is_object());
        assert!(doc["definitions"]["io.k8s.api.policy.v1.PodDisruptionBudget"].is_object());
        let pb = Document::decode(protobuf_document()).expect("protobuf");
        assert_eq!(pb.swagger, "2.0");
        assert_eq!(
            pb.definitions.expect("definitions").additional_properties.len(),
            RESOURCES.len()
        );
    }
}

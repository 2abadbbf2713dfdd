//! Berth's Kubernetes object model: pure rules over Kubernetes objects.
//!
//! Owns: field errors ([`field`]), the table of served resources ([`resources`]), per-kind
//! defaulting and validation ([`strategy`]), label and field selectors ([`selector`]),
//! server-side Table columns ([`table`]), strategic merge patch ([`patch`]), the Pod Security Standards
//! checks ([`podsecurity`]), resource quantities ([`quantity`]), ResourceQuota arithmetic ([`quota`]) and
//! LimitRange defaulting and limits ([`limits`]).
//!
//! Invariant: no I/O, no clock, no async. Time is passed in as a value.
//! Objects travel as `serde_json::Value` (the wire form) so that one generic registry in
//! `apiserver` can serve every kind; typed `k8s-openapi` structs are used where a rule needs them.

pub mod cron;
pub mod field;
pub mod hostports;
pub mod limits;
pub mod patch;
pub mod podsecurity;
pub mod quantity;
pub mod quota;
pub mod resources;
pub mod schema;
pub mod selector;
pub mod strategy;
pub mod table;
pub mod value;
pub mod wellknown;

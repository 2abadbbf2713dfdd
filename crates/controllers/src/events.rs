//! core/v1 Events as upstream's event recorder writes them (`k8s.io/client-go/tools/record`): one object per
//! occurrence, named `<involved object>.<random>`, with source and reporting component.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, PostParams};

/// Record an Event about `object` in `namespace`.
///
/// # Errors
/// The API error of the create.
pub async fn record(
    client: &kube::Client,
    namespace: &str,
    object: ObjectReference,
    type_: &str,
    reason: &str,
    message: &str,
    component: &str,
) -> Result<(), kube::Error> {
    let now = Time(jiff::Timestamp::now());
    let ev = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", object.name.clone().unwrap_or_default())),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        involved_object: object,
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        reporting_component: Some(component.into()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    api.create(&PostParams::default(), &ev).await.map(|_| ())
}

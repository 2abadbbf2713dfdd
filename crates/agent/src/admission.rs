//! The kubelet's resource admission of a pod bound to this node (upstream
//! `pkg/kubelet/lifecycle/predicate.go`, whose `GeneralPredicates` run the scheduler's
//! `noderesources.Fits`): the pod's requests plus the requests of the pods already admitted here must fit
//! the node's allocatable, else the pod is rejected `Failed` with reason `OutOf<resource>` and the
//! message `Pod was rejected: Node didn't have enough resource: <resource>, requested: …, used: …,
//! capacity: …`. Pure arithmetic; the agent (`crate::pods`) applies it.

use k8s_openapi::api::core::v1::{Container, Pod};

/// What a pod asks for, in upstream's units: milli-CPU and bytes (each quantity rounded up, as
/// `Quantity.MilliValue`/`Value` do).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// `requests.cpu` in millicores.
    pub milli_cpu: i64,
    /// `requests.memory` in bytes.
    pub memory: i64,
}

impl std::ops::AddAssign for Requests {
    fn add_assign(&mut self, o: Requests) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
    }
}

impl Requests {
    fn max(self, o: Requests) -> Requests {
        Requests {
            milli_cpu: self.milli_cpu.max(o.milli_cpu),
            memory: self.memory.max(o.memory),
        }
    }

    fn of_list(
        list: Option<
            &std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
        >,
    ) -> Requests {
        let get = |r: &str, scale: f64| {
            list.and_then(|m| m.get(r))
                .and_then(|q| api::quantity::parse(&q.0))
                .map_or(0, |v| (v * scale).ceil() as i64)
        };
        Requests {
            milli_cpu: get("cpu", 1000.0),
            memory: get("memory", 1.0),
        }
    }

    fn of_container(c: &Container) -> Requests {
        Requests::of_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()))
    }
}

/// The pod's effective requests (upstream `resource.PodRequests`): the sum over its containers and
/// restartable init containers (sidecars), or, if larger, what the init phase needs at its peak (each
/// regular init container plus the sidecars started before it); plus `spec.overhead`.
#[must_use]
pub fn pod_requests(p: &Pod) -> Requests {
    let Some(spec) = p.spec.as_ref() else {
        return Requests::default();
    };
    let mut sum = Requests::default();
    for c in &spec.containers {
        sum += Requests::of_container(c);
    }
    let mut sidecars = Requests::default();
    let mut init_peak = Requests::default();
    for c in spec.init_containers.iter().flatten() {
        let r = Requests::of_container(c);
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars += r;
            init_peak = init_peak.max(sidecars);
        } else {
            let mut at = sidecars;
            at += r;
            init_peak = init_peak.max(at);
        }
    }
    sum += sidecars;
    let mut total = sum.max(init_peak);
    total += Requests::of_list(spec.overhead.as_ref());
    total
}

/// The node's allocatable resources as the agent registers them (`crate::node`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocatable {
    /// Millicores.
    pub milli_cpu: i64,
    /// Bytes.
    pub memory: i64,
    /// Pods.
    pub pods: i64,
}

impl Allocatable {
    /// This machine's, as [`crate::node::node_object`] reports it.
    #[must_use]
    pub fn of_machine(m: &crate::node::Machine) -> Allocatable {
        Allocatable {
            milli_cpu: i64::try_from(m.cpus).unwrap_or(i64::MAX / 1000) * 1000,
            memory: i64::try_from(m.memory_kib).unwrap_or(i64::MAX / 1024) * 1024,
            pods: i64::from(crate::node::MAX_PODS),
        }
    }
}

/// One resource that does not fit (upstream `InsufficientResourceError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insufficient {
    /// `pods`, `cpu` or `memory`.
    pub resource: &'static str,
    /// What the pod asks for.
    pub requested: i64,
    /// What the admitted pods ask for together.
    pub used: i64,
    /// The node's allocatable.
    pub capacity: i64,
}

impl Insufficient {
    /// The pod's status reason: `OutOfcpu`, `OutOfmemory`, `OutOfpods` (upstream `OutOf` + the resource
    /// name, in the kubelet's `admit`).
    #[must_use]
    pub fn reason(&self) -> String {
        format!("OutOf{}", self.resource)
    }

    /// The pod's status message, as the kubelet's `rejectPod` writes it.
    #[must_use]
    pub fn message(&self) -> String {
        format!(
            "Pod was rejected: Node didn't have enough resource: {}, requested: {}, used: {}, capacity: {}",
            self.resource, self.requested, self.used, self.capacity
        )
    }
}

/// Whether a pod asking for `pod` fits a node with `alloc` where `admitted` pods asking for `used`
/// together already run; the first resource that does not fit, in upstream `fitsRequest`'s order (pod
/// count, cpu, memory). A pod that requests nothing is checked for the pod count only, and a resource
/// the pod does not request never fails it.
#[must_use]
pub fn fits(pod: Requests, used: Requests, admitted: i64, alloc: &Allocatable) -> Option<Insufficient> {
    if admitted + 1 > alloc.pods {
        return Some(Insufficient {
            resource: "pods",
            requested: 1,
            used: admitted,
            capacity: alloc.pods,
        });
    }
    if pod.milli_cpu > 0 && pod.milli_cpu > alloc.milli_cpu - used.milli_cpu {
        return Some(Insufficient {
            resource: "cpu",
            requested: pod.milli_cpu,
            used: used.milli_cpu,
            capacity: alloc.milli_cpu,
        });
    }
    if pod.memory > 0 && pod.memory > alloc.memory - used.memory {
        return Some(Insufficient {
            resource: "memory",
            requested: pod.memory,
            used: used.memory,
            capacity: alloc.memory,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "p"}, "spec": v})).expect("pod")
    }

    fn req(cpu: &str, mem: &str) -> serde_json::Value {
        serde_json::json!({"requests": {"cpu": cpu, "memory": mem}})
    }

    #[test]
    fn requests_sum_containers_and_sidecars_take_the_init_peak_and_add_overhead() {
        let p = pod(serde_json::json!({
            "containers": [{"name": "a", "resources": req("250m", "64Mi")},
                           {"name": "b", "resources": req("0.5", "1Gi")}, {"name": "c"}]}));
        assert_eq!(
            pod_requests(&p),
            Requests {
                milli_cpu: 750,
                memory: (64 + 1024) << 20
            }
        );
        // A regular init container larger than the app containers sets the cpu; memory stays the sum.
        let p = pod(serde_json::json!({
            "initContainers": [{"name": "i", "resources": req("2", "1Mi")}],
            "containers": [{"name": "a", "resources": req("1", "10Mi")}],
            "overhead": {"cpu": "100m", "memory": "1Mi"}}));
        assert_eq!(
            pod_requests(&p),
            Requests {
                milli_cpu: 2100,
                memory: 11 << 20
            }
        );
        // A sidecar counts with the app containers and with every init container after it.
        let p = pod(serde_json::json!({
            "initContainers": [{"name": "s", "restartPolicy": "Always", "resources": req("1", "1Mi")},
                               {"name": "i", "resources": req("2", "1Mi")}],
            "containers": [{"name": "a", "resources": req("1", "1Mi")}]}));
        assert_eq!(pod_requests(&p).milli_cpu, 3000);
        assert_eq!(pod_requests(&p).memory, 2 << 20);
        // 1m rounds up from a fraction (upstream MilliValue).
        let p = pod(serde_json::json!({"containers": [{"name": "a", "resources": req("0.0001", "1.5")}]}));
        assert_eq!(
            pod_requests(&p),
            Requests {
                milli_cpu: 1,
                memory: 2
            }
        );
    }

    #[test]
    fn fits_as_upstream_fits_request_with_its_messages() {
        let alloc = Allocatable {
            milli_cpu: 2000,
            memory: 1 << 30,
            pods: 3,
        };
        let used = Requests {
            milli_cpu: 1500,
            memory: 512 << 20,
        };
        let pod = |c, m| Requests {
            milli_cpu: c,
            memory: m,
        };
        assert_eq!(
            fits(pod(500, 512 << 20), used, 2, &alloc),
            None,
            "exactly full fits"
        );
        let e = fits(pod(501, 0), used, 2, &alloc).expect("cpu");
        assert_eq!(e.reason(), "OutOfcpu");
        assert_eq!(
            e.message(),
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 501, used: 1500, capacity: 2000"
        );
        let e = fits(pod(0, (512 << 20) + 1), used, 2, &alloc).expect("memory");
        assert_eq!(e.reason(), "OutOfmemory");
        assert_eq!(
            e.message(),
            format!(
                "Pod was rejected: Node didn't have enough resource: memory, requested: {}, used: {}, capacity: {}",
                (512 << 20) + 1,
                512 << 20,
                1 << 30
            )
        );
        // cpu is checked before memory; a pod without requests fits an overcommitted node.
        assert_eq!(
            fits(pod(4000, 4 << 30), used, 2, &alloc).map(|e| e.resource),
            Some("cpu")
        );
        let over = Requests {
            milli_cpu: 9000,
            memory: 9 << 30,
        };
        assert_eq!(fits(Requests::default(), over, 2, &alloc), None);
        // The pod count comes first.
        let e = fits(Requests::default(), used, 3, &alloc).expect("pods");
        assert_eq!(e.reason(), "OutOfpods");
        assert_eq!(
            e.message(),
            "Pod was rejected: Node didn't have enough resource: pods, requested: 1, used: 3, capacity: 3"
        );
    }
}

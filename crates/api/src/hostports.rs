//! Host ports of a pod and when two collide: the rule upstream's scheduler (`NodePorts` plugin) and the
//! kubelet's admission (`GeneralPredicates`) share (`HostPortInfo.CheckConflict`).

use k8s_openapi::api::core::v1::Pod;

/// One host port a pod asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// `hostIP`, `0.0.0.0` when unset.
    pub ip: String,
    /// `protocol`, `TCP` when unset.
    pub protocol: String,
    /// `hostPort`.
    pub port: i32,
}

impl HostPort {
    /// Whether the two collide: the same protocol and port, on the same address or either on all.
    #[must_use]
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.protocol == other.protocol
            && self.port == other.port
            && (self.ip == other.ip || self.ip == "0.0.0.0" || other.ip == "0.0.0.0")
    }
}

/// The host ports of the pod's containers (upstream `schedutil.GetHostPorts`).
#[must_use]
pub fn of(p: &Pod) -> Vec<HostPort> {
    p.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|port| port.host_port.is_some_and(|h| h > 0))
        .map(|port| HostPort {
            ip: port
                .host_ip
                .clone()
                .filter(|ip| !ip.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into()),
            protocol: port.protocol.clone().unwrap_or_else(|| "TCP".into()),
            port: port.host_port.unwrap_or(0),
        })
        .collect()
}

/// Whether any host port of `pod` collides with one in `used`.
#[must_use]
pub fn collide(pod: &Pod, used: &[HostPort]) -> bool {
    of(pod).iter().any(|w| used.iter().any(|u| w.conflicts(u)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(ip: &str, protocol: &str, port: i32) -> HostPort {
        HostPort {
            ip: ip.into(),
            protocol: protocol.into(),
            port,
        }
    }

    #[test]
    fn the_same_port_and_protocol_collide_unless_on_two_distinct_addresses() {
        assert!(hp("0.0.0.0", "TCP", 80).conflicts(&hp("10.0.0.1", "TCP", 80)));
        assert!(hp("10.0.0.1", "TCP", 80).conflicts(&hp("10.0.0.1", "TCP", 80)));
        assert!(!hp("10.0.0.1", "TCP", 80).conflicts(&hp("10.0.0.2", "TCP", 80)));
        assert!(!hp("0.0.0.0", "TCP", 80).conflicts(&hp("0.0.0.0", "UDP", 80)));
        assert!(!hp("0.0.0.0", "TCP", 80).conflicts(&hp("0.0.0.0", "TCP", 81)));
    }
}

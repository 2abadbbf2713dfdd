//! ClusterIP and NodePort allocation for Services (upstream `pkg/registry/core/service/ipallocator` and
//! `portallocator`). Allocation state is derived from the Services in the store, so nothing can leak
//! across a crash; the registry serialises Service writes while allocating.

use crate::registry::RegistryConfig;
use api::field::FieldError;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Parse `a.b.c.d/n` into (network, prefix length).
pub fn parse_cidr(cidr: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = cidr.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    if len > 30 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((Ipv4Addr::from(u32::from(ip) & mask), len))
}

/// The `n`th address of a CIDR (offset from the network address), if inside it.
pub fn nth_ip(cidr: &str, n: u32) -> Option<Ipv4Addr> {
    let (net, len) = parse_cidr(cidr)?;
    let size = 1u64 << (32 - len);
    if u64::from(n) >= size - 1 {
        return None;
    }
    Some(Ipv4Addr::from(u32::from(net) + n))
}

fn in_cidr(ip: Ipv4Addr, cidr: &str) -> bool {
    match parse_cidr(cidr) {
        Some((net, len)) => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(ip) & mask == u32::from(net)
        }
        None => false,
    }
}

/// Fill in `spec.clusterIP(s)` and `nodePort`s of a Service being created (`old = None`) or updated, taking
/// the values already used by `existing` Services into account. Errors are field errors (422).
pub fn allocate_service(
    svc: &mut Value,
    old: Option<&Value>,
    existing: &[Value],
    config: &RegistryConfig,
) -> Result<(), Vec<FieldError>> {
    let uid = svc
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let others: Vec<&Value> = existing
        .iter()
        .filter(|s| s.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("") != uid)
        .collect();
    let mut errors = Vec::new();
    if !svc.get("spec").is_some_and(Value::is_object) {
        svc["spec"] = json!({});
    }
    let svc_type = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if svc_type == "ExternalName" {
        return Ok(());
    }
    // ClusterIP: keep the old one on update when the client left it out.
    let mut cluster_ip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if cluster_ip.is_empty()
        && let Some(o) = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
    {
        cluster_ip = o.to_string();
    }
    let used: BTreeSet<Ipv4Addr> = others
        .iter()
        .filter_map(|s| s.pointer("/spec/clusterIP").and_then(Value::as_str))
        .filter_map(|s| s.parse().ok())
        .collect();
    if cluster_ip.is_empty() {
        // Lowest free address after the ones upstream and k3s hand out statically (.1 kubernetes, .10 DNS).
        let mut n = 11;
        loop {
            match nth_ip(&config.service_cidr, n) {
                Some(ip) if used.contains(&ip) => n += 1,
                Some(ip) => {
                    cluster_ip = ip.to_string();
                    break;
                }
                None => {
                    errors.push(FieldError::invalid(
                        "spec.clusterIPs",
                        Value::Null,
                        "failed to allocate IP: range is full",
                    ));
                    break;
                }
            }
        }
    } else if cluster_ip != "None" && old.is_none() {
        match cluster_ip.parse::<Ipv4Addr>() {
            Ok(ip) if !in_cidr(ip, &config.service_cidr) => errors.push(FieldError::invalid(
                "spec.clusterIPs",
                json!([cluster_ip]),
                format!(
                    "failed to allocate IP {cluster_ip}: the provided IP ({cluster_ip}) is not in the valid range. The range of valid IPs is {}",
                    config.service_cidr
                ),
            )),
            Ok(ip) if used.contains(&ip) => errors.push(FieldError::invalid(
                "spec.clusterIPs",
                json!([cluster_ip]),
                format!("failed to allocate IP {cluster_ip}: provided IP is already allocated"),
            )),
            Ok(_) => {}
            Err(_) => errors.push(FieldError::invalid(
                "spec.clusterIPs[0]",
                cluster_ip.clone(),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            )),
        }
    }
    if !cluster_ip.is_empty() {
        api::value::set_in(svc, &["spec", "clusterIP"], json!(cluster_ip));
        api::value::set_in(svc, &["spec", "clusterIPs"], json!([cluster_ip]));
        if cluster_ip != "None" {
            api::value::set_in(svc, &["spec", "ipFamilies"], json!(["IPv4"]));
            if svc.pointer("/spec/ipFamilyPolicy").is_none() {
                api::value::set_in(svc, &["spec", "ipFamilyPolicy"], json!("SingleStack"));
            }
        } else if svc.pointer("/spec/ipFamilyPolicy").is_none() {
            api::value::set_in(svc, &["spec", "ipFamilyPolicy"], json!("SingleStack"));
            api::value::set_in(svc, &["spec", "ipFamilies"], json!(["IPv4"]));
        }
    }
    // NodePorts for NodePort and LoadBalancer Services.
    let wants_node_ports = svc_type == "NodePort" || svc_type == "LoadBalancer";
    let mut used_ports: BTreeSet<i64> = others
        .iter()
        .filter_map(|s| s.pointer("/spec/ports").and_then(Value::as_array))
        .flatten()
        .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
        .collect();
    let old_ports: Vec<Value> = old
        .and_then(|o| o.pointer("/spec/ports"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (lo, hi) = (
        i64::from(config.node_port_range.0),
        i64::from(config.node_port_range.1),
    );
    if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for (i, port) in ports.iter_mut().enumerate() {
            if !wants_node_ports {
                if let Some(p) = port.as_object_mut() {
                    p.remove("nodePort");
                }
                continue;
            }
            let requested = port.get("nodePort").and_then(Value::as_i64).filter(|p| *p != 0);
            let carried = || {
                let this_port = port.get("port").and_then(Value::as_i64);
                old_ports
                    .iter()
                    .find(|o| o.get("port").and_then(Value::as_i64) == this_port)
                    .and_then(|o| o.get("nodePort").and_then(Value::as_i64))
            };
            let chosen = match requested.or_else(carried) {
                Some(p) => {
                    let was_ours = old_ports
                        .iter()
                        .any(|o| o.get("nodePort").and_then(Value::as_i64) == Some(p));
                    if !(lo..=hi).contains(&p) {
                        errors.push(FieldError::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            p,
                            format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"),
                        ));
                        continue;
                    }
                    if used_ports.contains(&p) && !was_ours {
                        errors.push(FieldError::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            p,
                            "provided port is already allocated",
                        ));
                        continue;
                    }
                    p
                }
                None => match (lo..=hi).find(|p| !used_ports.contains(p)) {
                    Some(p) => p,
                    None => {
                        errors.push(FieldError::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            Value::Null,
                            "range is full",
                        ));
                        continue;
                    }
                },
            };
            used_ports.insert(chosen);
            port["nodePort"] = json!(chosen);
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RegistryConfig {
        RegistryConfig::default()
    }

    #[test]
    fn cluster_ip_is_allocated_and_not_reused() {
        let mut a = json!({"metadata": {"uid": "a"}, "spec": {"ports": [{"port": 80}]}});
        allocate_service(&mut a, None, &[], &cfg()).expect("allocates");
        assert_eq!(a["spec"]["clusterIP"], "10.43.0.11");
        let mut b = json!({"metadata": {"uid": "b"}, "spec": {"ports": [{"port": 80}]}});
        allocate_service(&mut b, None, std::slice::from_ref(&a), &cfg()).expect("allocates");
        assert_eq!(b["spec"]["clusterIP"], "10.43.0.12");
    }

    #[test]
    fn headless_service_keeps_none_and_taken_ip_is_refused() {
        let mut h = json!({"metadata": {"uid": "h"}, "spec": {"clusterIP": "None"}});
        allocate_service(&mut h, None, &[], &cfg()).expect("headless");
        assert_eq!(h["spec"]["clusterIPs"], json!(["None"]));
        let taken = json!({"metadata": {"uid": "t"}, "spec": {"clusterIP": "10.43.0.50"}});
        let mut c = json!({"metadata": {"uid": "c"}, "spec": {"clusterIP": "10.43.0.50"}});
        let errs = allocate_service(&mut c, None, &[taken], &cfg()).expect_err("taken");
        assert_eq!(errs[0].field, "spec.clusterIPs");
    }

    #[test]
    fn node_ports_are_allocated_in_range_and_kept_on_update() {
        let mut s = json!({"metadata": {"uid": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        allocate_service(&mut s, None, &[], &cfg()).expect("allocates");
        assert_eq!(s["spec"]["ports"][0]["nodePort"], 30000);
        let old = s.clone();
        let mut upd =
            json!({"metadata": {"uid": "s"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        allocate_service(&mut upd, Some(&old), std::slice::from_ref(&old), &cfg()).expect("keeps");
        assert_eq!(upd["spec"]["ports"][0]["nodePort"], 30000);
        assert_eq!(upd["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        let mut bad = json!({"metadata": {"uid": "x"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
        assert!(allocate_service(&mut bad, None, &[], &cfg()).is_err());
    }
}

use super::*;
use serde_json::json;

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
        "spec": spec,
    }))
    .expect("pod")
}

fn decide_for(
    spec: serde_json::Value,
    image: &ImageUser,
    db: &UserDb,
    defaults: &Defaults,
) -> Result<Decision, String> {
    let p = pod(spec);
    let c = p.spec.as_ref().expect("spec").containers[0].clone();
    decide(&p, &c, image, db, defaults, &|path| {
        match path {
        "profiles/deny-mkdir.json" => Ok(br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#.to_vec()),
        other => Err(format!("cannot load seccomp profile {other:?}: no such file or directory")),
    }
    })
}

fn root() -> ImageUser {
    ImageUser::parse(None)
}

fn db() -> UserDb {
    UserDb {
        passwd:
            "root:x:0:0::/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/sh\npostgres:x:999:999::/:/bin/sh\n"
                .into(),
        group: "root:x:0:\nwww-data:x:33:\nssl-cert:x:110:postgres\npostgres:x:999:\n".into(),
    }
}

fn caps(d: &Decision) -> Vec<&str> {
    d.security.capabilities.iter().map(String::as_str).collect()
}

#[test]
fn a_pod_without_security_context_gets_containerds_defaults() {
    let d = decide_for(
        json!({"containers": [{"name": "c"}]}),
        &root(),
        &db(),
        &Defaults::default(),
    )
    .expect("ok");
    assert_eq!((d.uid, d.gid), (0, 0));
    assert_eq!(caps(&d), DEFAULT_CAPABILITIES.to_vec());
    assert!(!d.security.privileged && !d.security.no_new_privs && !d.security.readonly_rootfs);
    assert_eq!(
        d.security.seccomp, None,
        "Unconfined, as the kubelet without --seccomp-default"
    );
    assert!(d.security.masked_paths.contains(&"/proc/kcore".to_string()));
    assert!(d.security.readonly_paths.contains(&"/proc/sys".to_string()));
    assert_eq!(
        d.security,
        Security {
            groups: vec![0],
            ..Security::default()
        }
    );
    // With the node's seccomp default on, the same pod is RuntimeDefault.
    let on = Defaults {
        seccomp_runtime_default: true,
    };
    let d = decide_for(json!({"containers": [{"name": "c"}]}), &root(), &db(), &on).expect("ok");
    assert_eq!(
        d.security.seccomp,
        Some(runtime_default(&d.security.capabilities))
    );
}

#[test]
fn capabilities_add_and_drop_as_containerd_cri_orders_them() {
    let table: [(serde_json::Value, Vec<&str>); 5] = [
        (json!({"drop": ["ALL"]}), vec![]),
        (
            json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}),
            vec!["CAP_NET_BIND_SERVICE"],
        ),
        (
            json!({"add": ["ALL"], "drop": ["CHOWN"]}),
            ALL_CAPABILITIES[1..].to_vec(),
        ),
        (
            json!({"add": ["sys_time", "CAP_NET_ADMIN"], "drop": ["kill", "MKNOD"]}),
            DEFAULT_CAPABILITIES
                .iter()
                .copied()
                .filter(|c| *c != "CAP_KILL" && *c != "CAP_MKNOD")
                .chain(["CAP_SYS_TIME", "CAP_NET_ADMIN"])
                .collect(),
        ),
        (json!({"add": ["ALL"], "drop": ["ALL"]}), vec![]),
    ];
    for (c, want) in table {
        let d = decide_for(
            json!({"containers": [{"name": "c", "securityContext": {"capabilities": c}}]}),
            &root(),
            &db(),
            &Defaults::default(),
        )
        .expect("ok");
        let mut got = caps(&d);
        let mut want = want;
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "{c}");
    }
    let e = decide_for(
        json!({"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["FLY"]}}}]}),
        &root(),
        &db(),
        &Defaults::default(),
    )
    .unwrap_err();
    assert!(e.contains("unknown capability"), "{e}");
}

#[test]
fn privileged_gets_everything_and_no_walls() {
    let d = decide_for(
        json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
               "containers": [{"name": "c", "securityContext": {"privileged": true}}]}),
        &root(),
        &db(),
        &Defaults::default(),
    )
    .expect("ok");
    assert!(d.security.privileged);
    assert_eq!(caps(&d), ALL_CAPABILITIES.to_vec());
    assert_eq!(d.security.seccomp, None);
    assert!(d.security.masked_paths.is_empty() && d.security.readonly_paths.is_empty());
}

#[test]
fn users_groups_and_run_as_non_root_as_the_kubelet() {
    // Container fields win over the pod's; fsGroup and supplementalGroups join the groups.
    let d = decide_for(
        json!({"securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000, "supplementalGroups": [4000]},
               "containers": [{"name": "c", "securityContext": {"runAsUser": 999}}]}),
        &root(),
        &db(),
        &Defaults::default(),
    )
    .expect("ok");
    assert_eq!((d.uid, d.gid), (999, 3000));
    assert_eq!(d.security.groups, vec![3000, 110, 2000, 4000]);
    // The image's user by name, its primary group from /etc/passwd.
    let d = decide_for(
        json!({"containers": [{"name": "c"}]}),
        &ImageUser::parse(Some("www-data")),
        &db(),
        &Defaults::default(),
    )
    .expect("ok");
    assert_eq!((d.uid, d.gid), (33, 33));
    let e = decide_for(
        json!({"containers": [{"name": "c"}]}),
        &ImageUser::parse(Some("nobody")),
        &db(),
        &Defaults::default(),
    )
    .unwrap_err();
    assert!(e.contains("unable to find user nobody"), "{e}");
    // runAsNonRoot, with upstream's messages.
    let non_root = json!({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "c"}]});
    let e = decide_for(non_root.clone(), &root(), &db(), &Defaults::default()).unwrap_err();
    assert_eq!(
        e,
        "container has runAsNonRoot and image will run as root (pod: \"p_ns(u1)\", container: c)"
    );
    let e = decide_for(
        non_root.clone(),
        &ImageUser::parse(Some("www-data")),
        &db(),
        &Defaults::default(),
    )
    .unwrap_err();
    assert!(e.starts_with("container has runAsNonRoot and image has non-numeric user (www-data), cannot verify user is non-root"), "{e}");
    assert!(
        decide_for(
            non_root,
            &ImageUser::parse(Some("33:33")),
            &db(),
            &Defaults::default()
        )
        .is_ok()
    );
    let e = decide_for(
        json!({"containers": [{"name": "c", "securityContext": {"runAsNonRoot": true, "runAsUser": 0}}]}),
        &root(),
        &db(),
        &Defaults::default(),
    )
    .unwrap_err();
    assert!(
        e.starts_with("container's runAsUser breaks non-root policy"),
        "{e}"
    );
}

#[test]
fn the_other_fields_map_one_to_one() {
    let d = decide_for(
        json!({"securityContext": {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]},
               "containers": [{"name": "c", "securityContext": {
                   "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "procMount": "Unmasked",
                   "seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/deny-mkdir.json"}}}]}),
        &root(),
        &db(),
        &Defaults::default(),
    )
    .expect("ok");
    assert!(d.security.no_new_privs && d.security.readonly_rootfs);
    assert!(d.security.masked_paths.is_empty() && d.security.readonly_paths.is_empty());
    assert_eq!(
        d.security.sysctls,
        vec![("net.ipv4.ip_unprivileged_port_start".to_string(), "0".to_string())]
    );
    let p = d.security.seccomp.expect("localhost profile");
    assert_eq!(p.default_action, Action::Allow);
    assert_eq!(p.syscalls[0].action, Action::Errno(13));
    assert_eq!(p.compile().expect("compiles").len(), 1);
    for (spec, msg) in [
        (
            json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}, "containers": [{"name": "c"}]}),
            "forbidden sysctl: \"kernel.msgmax\" not allowlisted",
        ),
        (
            json!({"hostUsers": false, "hostNetwork": true, "containers": [{"name": "c"}]}),
            "hostUsers: false cannot be combined with hostNetwork: true",
        ),
        (
            json!({"hostUsers": false, "containers": [{"name": "c", "securityContext": {"privileged": true}}]}),
            "hostUsers: false cannot be combined with a privileged container",
        ),
        (
            json!({"containers": [{"name": "c", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "nope.json"}}}]}),
            "cannot load seccomp profile",
        ),
        (
            json!({"containers": [{"name": "c", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "../x.json"}}}]}),
            "invalid localhostProfile",
        ),
    ] {
        let e = decide_for(spec, &root(), &db(), &Defaults::default()).unwrap_err();
        assert!(e.contains(msg), "{e}");
    }
}

#[test]
fn the_runtime_default_profile_compiles_and_widens_with_capabilities() {
    let plain = runtime_default(&DEFAULT_CAPABILITIES.map(String::from));
    let programs = plain.compile().expect("compiles");
    // The allow-list with EPERM as default, then clone3's ENOSYS.
    assert_eq!(programs.len(), 2);
    let named = |p: &Profile, n: &str| {
        p.syscalls
            .iter()
            .any(|r| r.action == Action::Allow && r.args.is_empty() && r.names.iter().any(|x| x == n))
    };
    assert!(named(&plain, "read") && !named(&plain, "mount") && !named(&plain, "unshare"));
    let admin = runtime_default(&["CAP_SYS_ADMIN".to_string(), "CAP_SYS_TIME".to_string()]);
    assert!(named(&admin, "mount") && named(&admin, "unshare") && named(&admin, "clock_settime"));
    assert_eq!(
        admin.compile().expect("compiles").len(),
        1,
        "no clone3 ENOSYS rule with CAP_SYS_ADMIN"
    );
    // A profile survives spec.json.
    let back: Profile = serde_json::from_str(&serde_json::to_string(&plain).expect("json")).expect("back");
    assert_eq!(back, plain);
}

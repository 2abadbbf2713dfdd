//! What each container is started with, as the kubelet builds it (upstream `kuberuntime_container.go`
//! `generateContainerConfig`, `pkg/kubelet/kubelet_pods.go`): its argv, environment (with ConfigMap,
//! Secret and downward-API references), mounts, `/etc/hosts` and `/etc/resolv.conf`, cgroup limits,
//! security context and the image pull secrets.

use super::*;

/// Kubernetes' argv rule (`command` replaces the image's Entrypoint and drops its Cmd; `args` alone
/// replaces Cmd), with `$(VAR)` references expanded from `env` (`$$` escapes), as upstream
/// `kubecontainer.ExpandContainerCommandAndArgs`.
pub fn argv(
    entrypoint: Option<&[String]>,
    cmd: Option<&[String]>,
    command: Option<&[String]>,
    args: Option<&[String]>,
    env: &[(String, String)],
) -> Vec<String> {
    let expand = |v: &String| expand_vars(v, env);
    match (command, args) {
        (Some(c), a) => c.iter().chain(a.unwrap_or(&[])).map(expand).collect(),
        (None, Some(a)) => entrypoint
            .unwrap_or(&[])
            .iter()
            .cloned()
            .chain(a.iter().map(expand))
            .collect(),
        (None, None) => entrypoint
            .unwrap_or(&[])
            .iter()
            .chain(cmd.unwrap_or(&[]))
            .cloned()
            .collect(),
    }
}

/// Expand `$(NAME)` from `env`; unknown references stay as written; `$$` is a literal `$`.
pub fn expand_vars(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `/etc/hosts` as the kubelet writes it (`managedHostsFileContent`).
pub fn hosts_file(
    ip: &str,
    hostname: &str,
    subdomain: Option<&str>,
    namespace: &str,
    domain: &str,
) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    match subdomain.filter(|s| !s.is_empty()) {
        Some(sub) => s.push_str(&format!(
            "{ip}\t{hostname}.{sub}.{namespace}.svc.{domain}\t{hostname}\n"
        )),
        None => s.push_str(&format!("{ip}\t{hostname}\n")),
    }
    s
}

/// The pod's `/etc/resolv.conf` by its `dnsPolicy`, as the kubelet writes it (`pkg/kubelet/network/dns`):
/// `ClusterFirst` (the default; for `hostNetwork` pods only with `ClusterFirstWithHostNet`) names the
/// cluster DNS with the search path `<ns>.svc.<domain> svc.<domain> <domain>` and `ndots:5`; `Default`
/// (and `hostNetwork` with `ClusterFirst`) is the node's own file. `dnsConfig` nameservers, searches and
/// options are appended.
pub fn resolv_conf(cfg: &Config, p: &Pod) -> String {
    let spec = p.spec.clone().unwrap_or_default();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let hostnet = spec.host_network == Some(true);
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !hostnet,
        _ => false,
    };
    let ns = p.metadata.namespace.as_deref().unwrap_or("default");
    let d = &cfg.cluster_domain;
    let (mut servers, mut search, mut options) = if cluster {
        (
            vec![cfg.cluster_dns.to_string()],
            vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()],
            vec!["ndots:5".to_string()],
        )
    } else if policy == "None" {
        (Vec::new(), Vec::new(), Vec::new())
    } else {
        return std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    };
    if let Some(dc) = &spec.dns_config {
        servers.extend(dc.nameservers.clone().unwrap_or_default());
        search.extend(dc.searches.clone().unwrap_or_default());
        for o in dc.options.iter().flatten() {
            let o = match &o.value {
                Some(v) => format!("{}:{v}", o.name.clone().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            options.push(o);
        }
    }
    let mut out = String::new();
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}

/// The pod's ephemeral containers as containers (the same fields, less `targetContainerName`).
pub(super) fn ephemeral_containers(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<Container> {
    spec.ephemeral_containers
        .iter()
        .flatten()
        .filter_map(|e| {
            let mut v = serde_json::to_value(e).ok()?;
            v.as_object_mut()?.remove("targetContainerName");
            serde_json::from_value(v).ok()
        })
        .collect()
}

/// A container's cgroup limits from `resources` (limits; the CPU request for shares/weight).
pub fn resources_of(c: &Container) -> crate::cgroup::Resources {
    let get = |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
               k: &str| { m.and_then(|m| m.get(k)).and_then(|q| api::quantity::parse(&q.0)) };
    let r = c.resources.as_ref();
    let limits = r.and_then(|r| r.limits.as_ref());
    let requests = r.and_then(|r| r.requests.as_ref());
    crate::cgroup::Resources {
        memory_limit: get(limits, "memory").map(|b| b.ceil() as u64),
        cpu_limit_millis: get(limits, "cpu").map(|c| (c * 1000.0).ceil() as u64),
        cpu_request_millis: get(requests, "cpu")
            .or(get(limits, "cpu"))
            .map(|c| (c * 1000.0).ceil() as u64),
    }
}

impl Agent {
    pub(super) async fn container_spec(
        &self,
        p: &Pod,
        c: &Container,
        digest: &str,
        volumes: &HashMap<String, PathBuf>,
    ) -> Result<ContainerSpec, String> {
        let cfg = self.images.config(digest).map_err(|e| e.to_string())?;
        let rootfs = self.images.rootfs(digest).map_err(|e| e.to_string())?;
        let spec = p.spec.clone().unwrap_or_default();
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let mut env: Vec<(String, String)> = cfg
            .env
            .iter()
            .flatten()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect();
        let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
            env.retain(|(x, _)| x != &k);
            env.push((k, v));
        };
        if !env.iter().any(|(k, _)| k == "PATH") {
            set(
                &mut env,
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            );
        }
        let hostname = spec
            .hostname
            .clone()
            .unwrap_or_else(|| p.metadata.name.clone().unwrap_or_default());
        set(&mut env, "HOSTNAME".into(), hostname.clone());
        for e in c.env.iter().flatten() {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => expand_vars(v, &env),
                (None, Some(src)) => {
                    if let Some(f) = &src.field_ref {
                        field_value(p, &f.field_path, &self.cfg)?
                    } else if let Some(r) = &src.config_map_key_ref {
                        self.key_ref(&ns, &r.name, &r.key, false, r.optional == Some(true))
                            .await?
                    } else if let Some(r) = &src.secret_key_ref {
                        self.key_ref(&ns, &r.name, &r.key, true, r.optional == Some(true))
                            .await?
                    } else {
                        String::new()
                    }
                }
                (None, None) => String::new(),
            };
            set(&mut env, e.name.clone(), value);
        }
        let argv = argv(
            cfg.entrypoint.as_deref(),
            cfg.cmd.as_deref(),
            c.command.as_deref(),
            c.args.as_deref(),
            &env,
        );
        let mut binds = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let Some(src) = volumes.get(&m.name) else {
                return Err(format!("volume {:?} is not available", m.name));
            };
            let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sp) if !sp.split('/').any(|c| c == "..") => {
                    let s = src.join(sp);
                    let _ = std::fs::create_dir_all(&s);
                    s
                }
                Some(sp) => return Err(format!("subPath {sp:?} must not contain '..'")),
                None => src.clone(),
            };
            binds.push(Bind {
                source,
                target: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false),
            });
        }
        // Identity and walls (`crate::security`): the pod's and container's securityContext over the
        // image's user; Localhost seccomp profiles live under `<data-dir>/agent/seccomp`.
        let seccomp_dir = self.cfg.data_dir.join("agent/seccomp");
        let decision = crate::security::decide(
            p,
            c,
            &crate::security::ImageUser::parse(cfg.user.as_deref()),
            &crate::security::UserDb::read(&rootfs),
            &crate::security::Defaults {
                seccomp_runtime_default: self.cfg.seccomp_default,
            },
            &|path| {
                std::fs::read(seccomp_dir.join(path))
                    .map_err(|e| format!("cannot load seccomp profile {path:?}: {e}"))
            },
        )?;
        // fsGroup: the kubelet's SetVolumeOwnership, once per pod and volume (hostPath volumes excepted).
        if let Some(fs_group) = spec.security_context.as_ref().and_then(|s| s.fs_group) {
            let on_root_mismatch = spec
                .security_context
                .as_ref()
                .and_then(|s| s.fs_group_change_policy.as_deref())
                == Some("OnRootMismatch");
            let pdir = pod_dir(&self.cfg, p.metadata.uid.as_deref().unwrap_or(""));
            for m in c.volume_mounts.iter().flatten() {
                let host_path = spec
                    .volumes
                    .iter()
                    .flatten()
                    .any(|v| v.name == m.name && v.host_path.is_some());
                let marker = pdir.join("fsgroup").join(&m.name);
                if host_path || marker.exists() {
                    continue;
                }
                if let Some(src) = volumes.get(&m.name) {
                    let gid =
                        u32::try_from(fs_group).map_err(|_| format!("fsGroup {fs_group} is out of range"))?;
                    crate::security::apply::volume_ownership(
                        src,
                        gid,
                        m.read_only == Some(true),
                        on_root_mismatch,
                    )
                    .map_err(|e| format!("setting volume ownership of {:?}: {e}", m.name))?;
                    let _ = std::fs::create_dir_all(pdir.join("fsgroup"));
                    let _ = std::fs::write(&marker, b"");
                }
            }
        }
        let subdomain = spec.subdomain.clone();
        let domain = self.cfg.cluster_domain.as_str();
        let ip = pod_ip(&self.cfg, p).to_string();
        let netns = (!host_network(p)).then(|| {
            crate::network::netns_path(&pod_dir(&self.cfg, p.metadata.uid.as_deref().unwrap_or("")))
        });
        // `hostUsers: false`: the pod's own 64 Ki host ids (`crate::userns`).
        let id_map = if spec.host_users == Some(false) {
            crate::userns::supported()?;
            let pdir = pod_dir(&self.cfg, p.metadata.uid.as_deref().unwrap_or(""));
            Some(
                crate::userns::allocate(&self.cfg.data_dir.join("agent/pods"), &pdir)
                    .map_err(|e| format!("hostUsers: false: {e}"))?,
            )
        } else {
            None
        };
        Ok(ContainerSpec {
            id_map,
            netns,
            rootfs,
            argv,
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: c
                .working_dir
                .clone()
                .or(cfg.working_dir.clone())
                .filter(|w| !w.is_empty())
                .unwrap_or_else(|| "/".into()),
            hostname: hostname.clone(),
            domainname: subdomain
                .as_ref()
                .map(|s| format!("{s}.{ns}.svc.{domain}"))
                .unwrap_or_default(),
            uid: decision.uid,
            gid: decision.gid,
            security: decision.security,
            binds,
            hosts: hosts_file(&ip, &hostname, subdomain.as_deref(), &ns, domain),
            resolv_conf: resolv_conf(&self.cfg, p),
            resources: resources_of(c),
            cgroup: format!("{}/{}", p.metadata.uid.as_deref().unwrap_or(""), c.name),
            stdin: c.stdin == Some(true),
            stdin_once: c.stdin_once == Some(true),
            tty: c.tty == Some(true),
            pid_ns_of: spec
                .ephemeral_containers
                .iter()
                .flatten()
                .find(|e| e.name == c.name)
                .and_then(|e| e.target_container_name.as_deref())
                .filter(|t| !t.is_empty())
                .map(|t| {
                    pod_dir(&self.cfg, p.metadata.uid.as_deref().unwrap_or(""))
                        .join("containers")
                        .join(t)
                }),
        })
    }

    /// `.dockerconfigjson` documents of the pod's `imagePullSecrets`.
    pub(super) async fn pull_secrets(&self, p: &Pod) -> Vec<Vec<u8>> {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let mut out = Vec::new();
        for r in p
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
        {
            if let Ok(Some(sec)) = api.get_opt(&r.name).await
                && let Some(doc) = sec.data.and_then(|d| d.get(".dockerconfigjson").cloned())
            {
                out.push(doc.0);
            }
        }
        out
    }

    /// A key of a ConfigMap (`secret` false) or Secret; `Err` names what is missing (upstream:
    /// CreateContainerConfigError), `Ok("")` for a missing optional reference.
    pub(super) async fn key_ref(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        secret: bool,
        optional: bool,
    ) -> Result<String, String> {
        let value = if secret {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
            api.get_opt(name).await.map_err(|e| e.to_string())?.map(|s| {
                s.data
                    .unwrap_or_default()
                    .get(key)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            })
        } else {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
            api.get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .map(|m| m.data.unwrap_or_default().get(key).cloned())
        };
        let kind = if secret { "secret" } else { "configmap" };
        match value {
            Some(Some(v)) => Ok(v),
            _ if optional => Ok(String::new()),
            None => Err(format!("{kind} {name:?} not found")),
            Some(None) => Err(format!("couldn't find key {key} in {kind} {ns}/{name}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn argv_follows_the_kubernetes_rules_and_expands_env_references() {
        let ep = s(&["/entry"]);
        let cmd = s(&["default"]);
        let env = vec![("NAME".to_string(), "web-0".to_string())];
        assert_eq!(
            argv(Some(&ep), Some(&cmd), None, None, &env),
            s(&["/entry", "default"])
        );
        assert_eq!(
            argv(Some(&ep), Some(&cmd), None, Some(&s(&["x", "$(NAME)"])), &env),
            s(&["/entry", "x", "web-0"])
        );
        assert_eq!(
            argv(Some(&ep), Some(&cmd), Some(&s(&["/bin/sh"])), None, &env),
            s(&["/bin/sh"])
        );
        assert_eq!(
            argv(
                Some(&ep),
                Some(&cmd),
                Some(&s(&["/bin/sh"])),
                Some(&s(&["-c", "echo $$(NAME) $(MISSING)"])),
                &env
            ),
            s(&["/bin/sh", "-c", "echo $(NAME) $(MISSING)"])
        );
    }

    #[test]
    fn hosts_file_names_the_pod_by_its_stable_dns_name() {
        let h = hosts_file("10.42.0.5", "web-0", Some("nginx"), "default", "cluster.local");
        assert!(
            h.ends_with("10.42.0.5\tweb-0.nginx.default.svc.cluster.local\tweb-0\n"),
            "{h}"
        );
        assert!(hosts_file("10.42.0.5", "p", None, "default", "cluster.local").ends_with("10.42.0.5\tp\n"));
    }
}

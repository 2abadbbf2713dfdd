//! The pod network on this node, as the CNI `bridge` and `host-local` plugins make it (what k3s's
//! flannel sets up on one node): a Linux bridge (`berth0`) holding the first address of the node's slice
//! (`spec.podCIDR`, given by the node IPAM controller) as the pods' gateway; per pod, a network
//! namespace pinned at `<pod dir>/netns` (so it outlives the server, like `ip netns add`), loopback up,
//! and a veth pair, one end on the bridge, the other in the pod as `eth0` with the pod's IP and a
//! default route via the bridge. Every container of the pod joins that namespace.
//!
//! Pod IPs are allocated host-wide, one file per address under `/run/berth/ipam/` created with
//! `O_EXCL` (host-local's scheme), so agents and servers sharing this machine never hand out an address
//! twice. A pod's links, address and route are made through rtnetlink from the agent's process (a
//! thread that enters the pod's namespace for its side): no `ip`/`nsenter` processes per pod, each of
//! which costs milliseconds of a pod's start. The node's bridge, made once, is made with iproute2.
//!
//! Nothing here adds a route or NAT toward anything outside the machine: pods reach each other and the
//! host, and the host reaches them.

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where pod addresses are allocated (one file per address, holding the pod's uid).
pub const IPAM_DIR: &str = "/run/berth/ipam";

/// The node's bridge and slice.
#[derive(Debug, Clone)]
pub struct Bridge {
    /// Bridge name.
    pub name: String,
    /// The node's slice (`spec.podCIDR`).
    pub slice: Ipv4Net,
}

fn run(program: &str, args: &[&str]) -> std::io::Result<()> {
    let out = Command::new(program).args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Make a network namespace and pin it at `pin` (an existing empty file), as `ip netns add` does: a
/// fresh thread unshares its network namespace and bind-mounts it, then ends (no runtime thread changes
/// namespace, and no process is forked).
fn pin_new_netns(pin: &Path) -> std::io::Result<()> {
    let pin = pin.to_path_buf();
    std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &pin,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(std::io::Error::from)
    })
    .join()
    .map_err(|_| std::io::Error::other("pinning the network namespace: thread panicked"))?
}

/// Whether this network namespace has a link `name` (asked of the kernel for the agent's own namespace:
/// `/sys/class/net` shows the namespace sysfs was mounted in, which is not the agent's when it runs with
/// `nsenter --net`).
fn link_exists(name: &str) -> bool {
    nix::net::if_::if_nametoindex(name).is_ok()
}

/// The host end of a pod's veth pair: `bv` + 12 hex digits of its uid (15 bytes at most: IFNAMSIZ).
pub fn veth_name(uid: &str) -> String {
    let hex: String = uid.chars().filter(char::is_ascii_hexdigit).take(12).collect();
    format!("bv{hex}")
}

impl Bridge {
    /// The gateway: the slice's first address, held by the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        self.slice.hosts().next().unwrap_or(self.slice.addr())
    }

    /// Make the bridge if missing, give it the gateway address, bring it up. Idempotent.
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn ensure(&self) -> std::io::Result<()> {
        if !link_exists(&self.name) {
            // Another agent on this machine may make it at the same moment.
            if let Err(e) = run("ip", &["link", "add", &self.name, "type", "bridge"])
                && !link_exists(&self.name)
            {
                return Err(e);
            }
        }
        let addr = format!("{}/{}", self.gateway(), self.slice.prefix_len());
        run("ip", &["addr", "replace", &addr, "dev", &self.name])?;
        run("ip", &["link", "set", &self.name, "up"])?;
        // The bridge is the pods' gateway: this host forwards their packets to other slices (on this
        // bridge or, through `routes`, on other nodes), as the CNI bridge plugin enables with `isGateway`.
        std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1")
    }

    /// Allocate an address of the slice for `uid` (the one it already holds, if any). An address file
    /// holds `<uid>\n<pod dir>`; one whose pod directory is gone (its agent's data dir was removed, or a
    /// crash came between the pod's end and the release) is taken back.
    fn allocate(&self, uid: &str, pod_dir: &Path) -> std::io::Result<Ipv4Addr> {
        std::fs::create_dir_all(IPAM_DIR)?;
        let gateway = self.gateway();
        let broadcast = self.slice.broadcast();
        let candidates = || self.slice.hosts().filter(|a| *a != gateway && *a != broadcast);
        for a in candidates() {
            if std::fs::read_to_string(Path::new(IPAM_DIR).join(a.to_string()))
                .is_ok_and(|o| owner(&o) == uid)
            {
                return Ok(a);
            }
        }
        // Round-robin from the last address handed out, as host-local does (`last_reserved_ip`): a
        // replaced pod does not get its predecessor's address back at once, which neighbours may still
        // have cached with the old interface's MAC.
        let last_file = Path::new(IPAM_DIR).join(format!("last_reserved_ip.{}", self.slice.network()));
        let last: Option<Ipv4Addr> = std::fs::read_to_string(&last_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let all: Vec<Ipv4Addr> = candidates().collect();
        let start = last
            .and_then(|l| all.iter().position(|a| *a == l))
            .map_or(0, |i| i + 1);
        for a in all[start..].iter().chain(&all[..start]).copied() {
            let p = Path::new(IPAM_DIR).join(a.to_string());
            if let Ok(held) = std::fs::read_to_string(&p)
                && let Some(dir) = held.lines().nth(1)
                && !Path::new(dir).exists()
            {
                let _ = std::fs::remove_file(&p);
            }
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&p) {
                Ok(mut f) => {
                    std::io::Write::write_all(&mut f, format!("{uid}\n{}", pod_dir.display()).as_bytes())?;
                    let _ = std::fs::write(&last_file, a.to_string());
                    return Ok(a);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other(format!(
            "no free address in {}",
            self.slice
        )))
    }

    /// Give the pod whose directory is `pod_dir` its network namespace, veth and address; returns the
    /// address. Idempotent (a crash half-way is finished by the next call); the address is recorded
    /// in `<pod dir>/ip` last.
    ///
    /// # Errors
    /// When a command fails or no address is free.
    pub fn setup(&self, uid: &str, pod_dir: &Path) -> std::io::Result<Ipv4Addr> {
        if let Some(ip) = pod_ip(pod_dir) {
            return Ok(ip);
        }
        // (The bridge was made when the agent learnt its slice; made again only if it has gone.)
        if !link_exists(&self.name) {
            self.ensure()?;
        }
        let ip = self.allocate(uid, pod_dir)?;
        let pin = netns_path(pod_dir);
        if crate::capacity::mounted_source(&pin).is_none() {
            std::fs::create_dir_all(pod_dir)?;
            std::fs::write(&pin, b"")?;
            pin_new_netns(&pin)?;
        }
        plumb(Plumbing {
            veth: veth_name(uid),
            bridge: self.name.clone(),
            pin,
            ip,
            prefix_len: self.slice.prefix_len(),
            gateway: self.gateway(),
        })?;
        std::fs::write(pod_dir.join("ip"), ip.to_string())?;
        Ok(ip)
    }
}

/// The pinned network namespace of the pod whose directory is `pod_dir`.
pub fn netns_path(pod_dir: &Path) -> PathBuf {
    pod_dir.join("netns")
}

/// The pod's address, once its network is set up.
pub fn pod_ip(pod_dir: &Path) -> Option<Ipv4Addr> {
    std::fs::read_to_string(pod_dir.join("ip"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Undo [`Bridge::setup`] for a pod that is gone: its veth (and so the pair), its namespace's pin, its
/// address. Idempotent.
///
/// # Errors
/// When the pin cannot be unmounted.
pub fn teardown(uid: &str, pod_dir: &Path) -> std::io::Result<()> {
    let veth = veth_name(uid);
    if let Ok(index) = nix::net::if_::if_nametoindex(veth.as_str()) {
        // Deleting one end deletes the pair.
        let _ = on_netlink(None, move |h| async move {
            h.link().del(index).execute().await.map_err(netlink_err)
        });
    }
    let pin = netns_path(pod_dir);
    if crate::capacity::mounted_source(&pin).is_some() {
        nix::mount::umount2(&pin, nix::mount::MntFlags::MNT_DETACH).map_err(std::io::Error::from)?;
    }
    let _ = std::fs::remove_file(&pin);
    let _ = std::fs::remove_file(pod_dir.join("ip"));
    release(uid);
    Ok(())
}

/// What [`plumb`] makes for one pod.
struct Plumbing {
    veth: String,
    bridge: String,
    pin: PathBuf,
    ip: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
}

fn netlink_err(e: rtnetlink::Error) -> std::io::Error {
    std::io::Error::other(format!("netlink: {e}"))
}

/// Run `f` with an rtnetlink handle, on a thread of its own with a current-thread runtime (the callers
/// are synchronous). With `netns`, the thread first enters that network namespace, so its netlink socket
/// belongs there; the thread ends with it (no other thread changes namespace).
fn on_netlink<F, Fut>(netns: Option<std::fs::File>, f: F) -> std::io::Result<()>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>>,
{
    std::thread::spawn(move || -> std::io::Result<()> {
        if let Some(ns) = netns {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            tokio::spawn(conn);
            f(handle).await
        })
    })
    .join()
    .map_err(|_| std::io::Error::other("netlink thread panicked"))?
}

/// A link's index in the calling thread's network namespace.
fn index(name: &str) -> std::io::Result<u32> {
    nix::net::if_::if_nametoindex(name).map_err(|e| std::io::Error::other(format!("link {name}: {e}")))
}

/// The link work of [`Bridge::setup`], as `ip link add <veth> type veth peer name eth0 netns <pin>`,
/// `ip link set <veth> master <bridge> up`, `ip neigh flush to <ip>` on the host, then in the pod's
/// namespace `ip link set lo up`, `ip link set eth0 up`, `ip addr replace <ip>/<len> dev eth0` and
/// `ip route replace default via <gateway> dev eth0` (the CNI bridge plugin's steps): one netlink
/// thread in the agent's namespace, one in the pod's.
fn plumb(p: Plumbing) -> std::io::Result<()> {
    use futures::TryStreamExt;
    use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
    use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
    use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(&p.pin)?;
    let pod_ns = ns.try_clone()?;
    let Plumbing {
        veth,
        bridge,
        ip,
        prefix_len,
        gateway,
        ..
    } = p;
    // The host side: the pair (unless a crash left it), on the bridge, up; and forget whatever the host
    // had cached for this address (a previous pod's MAC).
    on_netlink(None, move |h| async move {
        if !link_exists(&veth) {
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name("eth0".to_string())
                .setns_by_fd(ns.as_raw_fd())
                .build();
            let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(veth.clone())
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            h.link().add(pair).execute().await.map_err(netlink_err)?;
        }
        let set = LinkUnspec::new_with_index(index(&veth)?)
            .controller(index(&bridge)?)
            .up()
            .build();
        h.link().set(set).execute().await.map_err(netlink_err)?;
        let stale: Vec<_> = h
            .neighbours()
            .get()
            .execute()
            .try_filter(|n| {
                let hit = n.attributes.iter().any(
                    |a| matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) if *d == ip),
                );
                std::future::ready(hit)
            })
            .try_collect()
            .await
            .map_err(netlink_err)?;
        for n in stale {
            let _ = h.neighbours().del(n).execute().await;
        }
        Ok(())
    })?;
    // The pod side, inside its namespace.
    on_netlink(Some(pod_ns), move |h| async move {
        let (lo, eth0) = (index("lo")?, index("eth0")?);
        for i in [lo, eth0] {
            let up = LinkUnspec::new_with_index(i).up().build();
            h.link().set(up).execute().await.map_err(netlink_err)?;
        }
        h.address()
            .add(eth0, ip.into(), prefix_len)
            .replace()
            .execute()
            .await
            .map_err(netlink_err)?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gateway)
            .output_interface(eth0)
            .build();
        h.route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(netlink_err)
    })
}

/// The pod uid an address file names (its first line).
fn owner(held: &str) -> &str {
    held.lines().next().unwrap_or("")
}

/// Free every address held by `uid`.
pub fn release(uid: &str) {
    for e in std::fs::read_dir(IPAM_DIR).into_iter().flatten().flatten() {
        if std::fs::read_to_string(e.path()).is_ok_and(|o| owner(&o) == uid) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_gateway() {
        assert_eq!(
            veth_name("7b54680c-d237-4e64-bea8-5a4f66336266"),
            "bv7b54680cd237"
        );
        assert!(veth_name("7b54680c-d237-4e64-bea8-5a4f66336266").len() <= 15);
        let b = Bridge {
            name: "berth0".into(),
            slice: "10.42.3.0/24".parse().expect("cidr"),
        };
        assert_eq!(b.gateway(), Ipv4Addr::new(10, 42, 3, 1));
    }
}

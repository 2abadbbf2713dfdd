//! Well-known label, annotation and name constants shared by the controllers and the agent (which never
//! import each other), with where upstream defines the upstream ones.

/// The provisioner name of Berth's local-path StorageClasses.
pub const LOCAL_PATH_PROVISIONER: &str = "berth.dev/local-path";
/// Claim annotation naming the node a WaitForFirstConsumer claim's volume must be on (upstream
/// `volume.kubernetes.io/selected-node`, set by the scheduler).
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// Volume annotation naming the provisioner that made it (upstream `pv.kubernetes.io/provisioned-by`).
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Volume annotation naming the PersistentVolume whose data the agent copies into a new volume.
pub const CLONE_FROM: &str = "berth.dev/clone-from";
/// Node annotation: the directory under which the node's agent keeps local-path volumes.
pub const VOLUMES_DIR: &str = "berth.dev/volumes-dir";
/// StorageClass annotation marking the default class (upstream `storageclass.kubernetes.io/is-default-class`).
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// Node label holding the node's name (upstream `kubernetes.io/hostname`).
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Namespace of node Leases (upstream `kube-node-lease`).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

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

/// Label (and selector key) naming a Job's uid on the Job's template and pods (upstream
/// `batch.kubernetes.io/controller-uid`, `batch.ControllerUidLabel`).
pub const JOB_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// Label naming the Job on its template and pods (upstream `batch.kubernetes.io/job-name`).
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// The pre-1.27 spellings of [`JOB_CONTROLLER_UID`] and [`JOB_NAME`], still set by upstream.
pub const LEGACY_JOB_CONTROLLER_UID: &str = "controller-uid";
/// See [`LEGACY_JOB_CONTROLLER_UID`].
pub const LEGACY_JOB_NAME: &str = "job-name";
/// Annotation and label of an Indexed Job's pod: its completion index (upstream
/// `batch.kubernetes.io/job-completion-index`).
pub const JOB_COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The finalizer the Job controller puts on every pod it creates, so a finished pod is counted before it
/// can disappear (upstream `batch.kubernetes.io/job-tracking`).
pub const JOB_TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Annotation of a Job created by a CronJob: its scheduled time, RFC 3339 in the CronJob's time zone
/// (upstream `batch.kubernetes.io/cronjob-scheduled-timestamp`).
pub const CRONJOB_SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

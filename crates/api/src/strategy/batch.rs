//! `batch/v1` Job and CronJob: the generated selector (upstream `pkg/registry/batch/job/strategy.go`
//! `generateSelector`) and validation (`pkg/apis/batch/validation/validation.go`), with upstream's paths
//! and messages.

use super::validate::{
    label_selector, non_negative, pod_spec, selector_is_empty, selector_matches, semantically_equal,
};
use crate::field::FieldError;
use crate::wellknown::{JOB_CONTROLLER_UID, JOB_NAME, LEGACY_JOB_CONTROLLER_UID, LEGACY_JOB_NAME};
use serde_json::{Map, Value, json};

/// Most indexes of an Indexed Job (upstream `maxParallelismForIndexedJob`, `maxCompletionsForIndexedJob`).
const MAX_INDEXED: i64 = 100_000;
/// Longest CronJob name: its Jobs are `<name>-<11 digits>` and must stay a label value.
const MAX_CRONJOB_NAME: usize = 52;

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

/// Unless `spec.manualSelector` is true: label the template with the Job's uid and name (both spellings)
/// and select on `batch.kubernetes.io/controller-uid` (upstream `generateSelector`). Needs `metadata.uid`.
pub(super) fn generate_selector(obj: &mut Value) {
    if obj.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return;
    }
    let uid = s(obj, "/metadata/uid").unwrap_or("").to_string();
    let name = s(obj, "/metadata/name").unwrap_or("").to_string();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let labels = spec
        .entry("template")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .map(|t| t.entry("metadata").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
        .map(|m| m.entry("labels").or_insert_with(|| json!({})));
    if let Some(Value::Object(l)) = labels {
        for (k, v) in [
            (LEGACY_JOB_CONTROLLER_UID, &uid),
            (LEGACY_JOB_NAME, &name),
            (JOB_CONTROLLER_UID, &uid),
            (JOB_NAME, &name),
        ] {
            l.entry(k).or_insert_with(|| json!(v));
        }
    }
    let sel = spec.entry("selector").or_insert_with(|| json!({}));
    if !sel.is_object() {
        *sel = json!({});
    }
    if let Some(m) = sel.as_object_mut() {
        let ml = m.entry("matchLabels").or_insert_with(|| json!({}));
        if let Some(ml) = ml.as_object_mut() {
            ml.entry(JOB_CONTROLLER_UID).or_insert_with(|| json!(uid));
        }
    }
}

/// Validate a Job or CronJob (other kinds: nothing).
pub(super) fn validate(group: &str, kind: &str, obj: &Value, errs: &mut Vec<FieldError>) {
    match (group, kind) {
        ("batch", "Job") => {
            let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
            job_spec(&spec, "spec", true, errs);
        }
        ("batch", "CronJob") => cron_job(obj, errs),
        _ => {}
    }
}

fn int(v: &Value, ptr: &str) -> Option<i64> {
    v.pointer(ptr).and_then(Value::as_i64)
}

/// `ValidateJobSpec` (with the selector checks when `selector_required`, as for a Job; a CronJob's
/// template must leave it unset).
fn job_spec(spec: &Value, path: &str, selector_required: bool, errs: &mut Vec<FieldError>) {
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        non_negative(spec, &format!("/{f}"), &format!("{path}.{f}"), errs);
    }
    let indexed = match s(spec, "/completionMode") {
        None | Some("NonIndexed") => false,
        Some("Indexed") => true,
        Some(other) => {
            errs.push(FieldError::not_supported(
                format!("{path}.completionMode"),
                other,
                &["NonIndexed", "Indexed"],
            ));
            false
        }
    };
    if indexed {
        match int(spec, "/completions") {
            None => errs.push(FieldError::required(
                format!("{path}.completions"),
                "when completion mode is Indexed",
            )),
            Some(c) if c > MAX_INDEXED => errs.push(FieldError::invalid(
                format!("{path}.completions"),
                c,
                format!("must be less than or equal to {MAX_INDEXED} when completion mode is Indexed"),
            )),
            _ => {}
        }
        if let Some(p) = int(spec, "/parallelism")
            && p > MAX_INDEXED
        {
            errs.push(FieldError::invalid(
                format!("{path}.parallelism"),
                p,
                format!("must be less than or equal to {MAX_INDEXED} when completion mode is Indexed"),
            ));
        }
    } else if spec.get("backoffLimitPerIndex").is_some_and(|v| !v.is_null()) {
        errs.push(FieldError::forbidden(
            format!("{path}.backoffLimitPerIndex"),
            "requires indexed completion mode",
        ));
    }
    if selector_required {
        match spec.get("selector").filter(|v| !v.is_null()) {
            None => errs.push(FieldError::required(format!("{path}.selector"), "")),
            Some(sel) => {
                label_selector(sel, &format!("{path}.selector"), errs);
                let empty = Map::new();
                let labels = spec
                    .pointer("/template/metadata/labels")
                    .and_then(Value::as_object)
                    .unwrap_or(&empty);
                if !selector_is_empty(sel) && !selector_matches(sel, labels) {
                    errs.push(FieldError::invalid(
                        format!("{path}.template.metadata.labels"),
                        Value::Object(labels.clone()),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
        }
    } else {
        if let Some(sel) = spec.get("selector").filter(|v| !v.is_null()) {
            errs.push(FieldError::invalid(
                format!("{path}.selector"),
                sel.clone(),
                "`selector` will be auto-generated",
            ));
        }
        if spec.get("manualSelector") == Some(&json!(true)) {
            errs.push(FieldError::not_supported(
                format!("{path}.manualSelector"),
                true,
                &["nil", "false"],
            ));
        }
    }
    let tpath = format!("{path}.template");
    match spec.get("template").filter(|v| !v.is_null()) {
        None => errs.push(FieldError::required(tpath, "")),
        Some(t) => {
            super::meta::validate_labels(
                t.pointer("/metadata/labels"),
                &format!("{tpath}.metadata.labels"),
                errs,
            );
            match t.get("spec") {
                None => errs.push(FieldError::required(format!("{tpath}.spec"), "")),
                Some(ps) => {
                    pod_spec(ps, &format!("{tpath}.spec"), errs);
                    let rp = s(ps, "/restartPolicy").unwrap_or("");
                    if !matches!(rp, "OnFailure" | "Never") {
                        errs.push(FieldError::not_supported(
                            format!("{tpath}.spec.restartPolicy"),
                            rp,
                            &["OnFailure", "Never"],
                        ));
                    } else if rp != "Never" && spec.get("podFailurePolicy").is_some_and(|p| !p.is_null()) {
                        errs.push(FieldError::invalid(
                            format!("{tpath}.spec.restartPolicy"),
                            rp,
                            "only \"Never\" is supported when podFailurePolicy is specified",
                        ));
                    }
                }
            }
        }
    }
    if let Some(p) = spec.get("podFailurePolicy").filter(|v| !v.is_null()) {
        pod_failure_policy(p, &format!("{path}.podFailurePolicy"), indexed, errs);
    }
    if let Some(p) = s(spec, "/podReplacementPolicy")
        && !matches!(p, "TerminatingOrFailed" | "Failed")
    {
        errs.push(FieldError::not_supported(
            format!("{path}.podReplacementPolicy"),
            p,
            &["Failed", "TerminatingOrFailed"],
        ));
    }
}

/// `validatePodFailurePolicy`: actions, exactly one requirement per rule, exit-code operators and values.
fn pod_failure_policy(p: &Value, path: &str, indexed: bool, errs: &mut Vec<FieldError>) {
    let rules = p
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if rules.len() > 20 {
        errs.push(FieldError::invalid(
            format!("{path}.rules"),
            json!(rules.len()),
            "must have at most 20 items",
        ));
    }
    for (i, r) in rules.iter().enumerate() {
        let rp = format!("{path}.rules[{i}]");
        let actions: &[&str] = if indexed {
            &["Count", "FailIndex", "FailJob", "Ignore"]
        } else {
            &["Count", "FailJob", "Ignore"]
        };
        match s(r, "/action") {
            None => errs.push(FieldError::required(format!("{rp}.action"), "")),
            Some(a) if !actions.contains(&a) => {
                errs.push(FieldError::not_supported(format!("{rp}.action"), a, actions));
            }
            _ => {}
        }
        let codes = r.get("onExitCodes").filter(|v| !v.is_null());
        let conds = r.get("onPodConditions").filter(|v| !v.is_null());
        match (codes, conds) {
            (Some(_), Some(_)) => errs.push(FieldError::invalid(
                rp.clone(),
                Value::Null,
                "specifying both OnExitCodes and OnPodConditions is not supported",
            )),
            (None, None) => errs.push(FieldError::invalid(
                rp.clone(),
                Value::Null,
                "specifying one of OnExitCodes and OnPodConditions is required",
            )),
            _ => {}
        }
        if let Some(c) = codes {
            let cp = format!("{rp}.onExitCodes");
            let op = s(c, "/operator").unwrap_or("");
            if !matches!(op, "In" | "NotIn") {
                errs.push(FieldError::not_supported(
                    format!("{cp}.operator"),
                    op,
                    &["In", "NotIn"],
                ));
            }
            let values: Vec<i64> = c
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_i64).collect())
                .unwrap_or_default();
            if values.is_empty() {
                errs.push(FieldError::required(
                    format!("{cp}.values"),
                    "at least one value is required",
                ));
            }
            for (j, v) in values.iter().enumerate() {
                if values[..j].contains(v) {
                    errs.push(FieldError::duplicate(format!("{cp}.values[{j}]"), *v));
                }
                if op == "In" && *v == 0 {
                    errs.push(FieldError::invalid(
                        format!("{cp}.values[{j}]"),
                        0,
                        "must not be 0 for the In operator",
                    ));
                }
                if j > 0 && values[j - 1] > *v {
                    errs.push(FieldError::invalid(
                        format!("{cp}.values[{j}]"),
                        *v,
                        "must be ordered",
                    ));
                }
            }
        }
        if let Some(cs) = conds.and_then(Value::as_array) {
            for (j, c) in cs.iter().enumerate() {
                let cp = format!("{rp}.onPodConditions[{j}]");
                if s(c, "/type").is_none_or(str::is_empty) {
                    errs.push(FieldError::required(format!("{cp}.type"), ""));
                }
                let st = s(c, "/status").unwrap_or("");
                if !matches!(st, "True" | "False" | "Unknown") {
                    errs.push(FieldError::not_supported(
                        format!("{cp}.status"),
                        st,
                        &["False", "True", "Unknown"],
                    ));
                }
            }
        }
    }
}

fn cron_job(obj: &Value, errs: &mut Vec<FieldError>) {
    let name = s(obj, "/metadata/name").unwrap_or("");
    if name.len() > MAX_CRONJOB_NAME {
        errs.push(FieldError::invalid(
            "metadata.name",
            name,
            format!("must be no more than {MAX_CRONJOB_NAME} characters"),
        ));
    }
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    match s(&spec, "/schedule") {
        None | Some("") => errs.push(FieldError::required("spec.schedule", "")),
        Some(sched) => {
            if let Err(e) = crate::cron::parse(sched) {
                errs.push(FieldError::invalid("spec.schedule", sched, e));
            }
        }
    }
    if let Some(tz) = spec.get("timeZone").filter(|v| !v.is_null()) {
        let name = tz.as_str().unwrap_or("");
        if let Err(e) = crate::cron::zone(Some(name)) {
            errs.push(FieldError::invalid("spec.timeZone", name, e));
        }
    }
    match s(&spec, "/concurrencyPolicy") {
        Some("Allow" | "Forbid" | "Replace") => {}
        None | Some("") => errs.push(FieldError::required("spec.concurrencyPolicy", "")),
        Some(other) => errs.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            other,
            &["Allow", "Forbid", "Replace"],
        )),
    }
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(&spec, &format!("/{f}"), &format!("spec.{f}"), errs);
    }
    let jt = spec.pointer("/jobTemplate/spec").cloned().unwrap_or(Value::Null);
    job_spec(&jt, "spec.jobTemplate.spec", false, errs);
}

/// The fields upstream keeps immutable on update (`ValidateJobSpecUpdate`, `ValidateCronJobUpdate`).
pub(super) fn validate_update(group: &str, kind: &str, new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    if (group, kind) != ("batch", "Job") {
        return;
    }
    for f in ["selector", "completionMode", "podFailurePolicy", "template"] {
        let (a, b) = (
            new.pointer(&format!("/spec/{f}")),
            old.pointer(&format!("/spec/{f}")),
        );
        if !semantically_equal(a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null)) {
            errs.push(FieldError::invalid(
                format!("spec.{f}"),
                a.cloned().unwrap_or(Value::Null),
                "field is immutable",
            ));
        }
    }
    // completions may change only together with parallelism on an Indexed Job (elastic Indexed Jobs).
    let (nc, oc) = (int(new, "/spec/completions"), int(old, "/spec/completions"));
    if nc != oc {
        let elastic = s(new, "/spec/completionMode") == Some("Indexed")
            && nc == int(new, "/spec/parallelism")
            && nc.is_some();
        if !elastic {
            errs.push(FieldError::invalid(
                "spec.completions",
                nc.map_or(Value::Null, Value::from),
                "field is immutable",
            ));
        }
    }
}

//! Label selectors (upstream `apimachinery/pkg/labels`: the query-string grammar and
//! `LabelSelectorAsSelector`) and field selectors (`apimachinery/pkg/fields` plus each kind's supported
//! field labels, as in `pkg/registry/*/strategy.go` `GetAttrs` and `pkg/apis/*/v1/conversion.go`).

use serde_json::{Map, Value};
use std::fmt;

/// A malformed or unsupported selector (400 BadRequest for the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SelectorError(pub String);

/// One requirement's operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `k=v`, `k==v`, `k in (v…)`.
    In,
    /// `k!=v`, `k notin (v…)`.
    NotIn,
    /// `k`.
    Exists,
    /// `!k`.
    DoesNotExist,
}

/// `key op values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub op: Operator,
    /// The values (sorted, as upstream prints them).
    pub values: Vec<String>,
    /// Whether the requirement was written with `=`/`==`/`!=` (printing keeps the form).
    equality: bool,
}

impl Requirement {
    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let have = labels.get(&self.key).and_then(Value::as_str);
        match self.op {
            Operator::In => have.is_some_and(|h| self.values.iter().any(|v| v == h)),
            Operator::NotIn => have.is_none_or(|h| !self.values.iter().any(|v| v == h)),
            Operator::Exists => have.is_some(),
            Operator::DoesNotExist => have.is_none(),
        }
    }
}

/// A label selector: requirements ANDed together. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

fn valid_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            })
    });
    name_ok && prefix_ok
}

fn valid_value(v: &str) -> bool {
    v.is_empty()
        || (v.len() <= 63
            && v.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && v.as_bytes()[0].is_ascii_alphanumeric()
            && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric())
}

/// Split at top-level commas (not inside parentheses).
fn split_terms(s: &str) -> Result<Vec<&str>, SelectorError> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError(format!(
                        "unable to parse requirement: unmatched ')' in {s:?}"
                    )));
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError(format!(
            "unable to parse requirement: unmatched '(' in {s:?}"
        )));
    }
    out.push(&s[start..]);
    Ok(out)
}

impl LabelSelector {
    /// Parse the query-string form (`a=b,c!=d,e in (f,g),!h`).
    ///
    /// # Errors
    /// [`SelectorError`] naming the bad term.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { reqs });
        }
        for term in split_terms(s)? {
            let t = term.trim();
            if t.is_empty() {
                return Err(SelectorError(format!("found '', expected: identifier in {s:?}")));
            }
            let req = if let Some(k) = t.strip_prefix('!') {
                Requirement {
                    key: k.trim().into(),
                    op: Operator::DoesNotExist,
                    values: vec![],
                    equality: false,
                }
            } else if let Some((k, v)) = t.split_once("!=") {
                Requirement {
                    key: k.trim().into(),
                    op: Operator::NotIn,
                    values: vec![v.trim().into()],
                    equality: true,
                }
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                Requirement {
                    key: k.trim().into(),
                    op: Operator::In,
                    values: vec![v.trim().into()],
                    equality: true,
                }
            } else if let Some(open) = t.find('(') {
                let head: Vec<&str> = t[..open].split_whitespace().collect();
                let (key, op) = match head.as_slice() {
                    [k, "in"] => (*k, Operator::In),
                    [k, "notin"] => (*k, Operator::NotIn),
                    _ => return Err(SelectorError(format!("unable to parse requirement: {t:?}"))),
                };
                let inner = t[open + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| SelectorError(format!("unable to parse requirement: {t:?}")))?;
                let mut values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
                if values.iter().all(String::is_empty) {
                    return Err(SelectorError(format!(
                        "for 'in', 'notin' operators, values set can't be empty in {t:?}"
                    )));
                }
                values.sort();
                values.dedup();
                Requirement {
                    key: key.into(),
                    op,
                    values,
                    equality: false,
                }
            } else {
                Requirement {
                    key: t.into(),
                    op: Operator::Exists,
                    values: vec![],
                    equality: false,
                }
            };
            if !valid_key(&req.key) {
                return Err(SelectorError(format!(
                    "unable to parse requirement: invalid label key {:?}",
                    req.key
                )));
            }
            if let Some(bad) = req.values.iter().find(|v| !valid_value(v)) {
                return Err(SelectorError(format!(
                    "unable to parse requirement: invalid label value: {bad:?}"
                )));
            }
            reqs.push(req);
        }
        Ok(Self { reqs })
    }

    /// From a `metav1.LabelSelector` value (`matchLabels`, `matchExpressions`).
    ///
    /// # Errors
    /// [`SelectorError`] for unknown operators or bad values.
    pub fn from_json(sel: &Value) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in ml {
                let v = v
                    .as_str()
                    .ok_or_else(|| SelectorError(format!("matchLabels value of {k} must be a string")))?;
                reqs.push(Requirement {
                    key: k.clone(),
                    op: Operator::In,
                    values: vec![v.into()],
                    equality: true,
                });
            }
        }
        for e in sel
            .get("matchExpressions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = e.get("key").and_then(Value::as_str).unwrap_or("").to_string();
            let mut values: Vec<String> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            values.sort();
            let op = match e.get("operator").and_then(Value::as_str).unwrap_or("") {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError(format!(
                        "{other:?} is not a valid label selector operator"
                    )));
                }
            };
            reqs.push(Requirement {
                key,
                op,
                values,
                equality: false,
            });
        }
        reqs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { reqs })
    }

    /// Whether `labels` (a `metadata.labels` map) satisfy every requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }

    /// No requirements (matches everything).
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// The requirements.
    pub fn requirements(&self) -> &[Requirement] {
        &self.reqs
    }
}

impl fmt::Display for LabelSelector {
    /// Upstream's `Selector.String()`: `app=nginx,tier in (a,b),!x`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .reqs
            .iter()
            .map(
                |r| match (r.op, r.equality || r.values.len() == 1 && r.op == Operator::In) {
                    (Operator::In, true) if r.values.len() == 1 => format!("{}={}", r.key, r.values[0]),
                    (Operator::NotIn, true) if r.values.len() == 1 => format!("{}!={}", r.key, r.values[0]),
                    (Operator::In, _) => format!("{} in ({})", r.key, r.values.join(",")),
                    (Operator::NotIn, _) => format!("{} notin ({})", r.key, r.values.join(",")),
                    (Operator::Exists, _) => r.key.clone(),
                    (Operator::DoesNotExist, _) => format!("!{}", r.key),
                },
            )
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// A field selector: `field=value` / `field!=value` terms ANDed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

/// Field labels each kind supports beyond `metadata.name` and `metadata.namespace`.
fn supported_fields(group: &str, kind: &str) -> &'static [&'static str] {
    match (group, kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "Event") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Namespace") => &["status.phase"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "PersistentVolume") => &["name"],
        ("apps", "ReplicaSet") => &["status.replicas"],
        _ => &[],
    }
}

impl FieldSelector {
    /// Parse `a=b,c!=d` (also `a==b`).
    ///
    /// # Errors
    /// [`SelectorError`] for a term without an operator.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (k, neg, v) = if let Some((k, v)) = t.split_once("!=") {
                (k, true, v)
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                (k, false, v)
            } else {
                return Err(SelectorError(format!(
                    "invalid selector: '{s}'; can't understand '{t}'"
                )));
            };
            terms.push((k.trim().to_string(), neg, v.trim().to_string()));
        }
        Ok(Self { terms })
    }

    /// Check every field is a supported field label of `(group, kind)`.
    ///
    /// # Errors
    /// `field label not supported: <f>`, as upstream.
    pub fn validate_for(&self, group: &str, kind: &str) -> Result<(), SelectorError> {
        for (k, _, _) in &self.terms {
            if k != "metadata.name"
                && k != "metadata.namespace"
                && !supported_fields(group, kind).contains(&k.as_str())
            {
                return Err(SelectorError(format!("field label not supported: {k}")));
            }
        }
        Ok(())
    }

    /// Whether `obj` satisfies every term; a missing field reads as its Go zero value the way upstream's
    /// `ToSelectableFields` formats it (`false` for the boolean fields, `0` for `status.replicas`, `""`
    /// otherwise), booleans as `true`/`false`.
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(k, neg, v)| {
            // PersistentVolume's `name` is its metadata.name (upstream `PersistentVolumeToSelectableFields`).
            let path = if k == "name" && obj.get("kind").and_then(Value::as_str) == Some("PersistentVolume") {
                "metadata.name"
            } else {
                k.as_str()
            };
            let mut cur = Some(obj);
            for part in path.split('.') {
                cur = cur.and_then(|c| c.get(part));
            }
            let zero = match k.as_str() {
                "spec.unschedulable" | "spec.hostNetwork" => "false",
                "status.replicas" => "0",
                _ => "",
            };
            let have = match cur {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                Some(Value::Object(o)) if k == "source" => o
                    .get("component")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                _ => zero.to_string(),
            };
            (have == *v) != *neg
        })
    }

    /// The name pinned by `metadata.name=<n>`, if any.
    pub fn name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|(k, neg, _)| k == "metadata.name" && !neg)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn every_operator_of_the_grammar_matches_as_upstream() {
        let l = labels(json!({"app": "web", "tier": "fe", "env": "prod"}));
        for (sel, want) in [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("tier in (fe,be)", true),
            ("tier notin (fe)", false),
            ("env", true),
            ("!env", false),
            ("!missing", true),
            ("missing!=x", true),
            ("app=web,tier in (be)", false),
            ("", true),
        ] {
            assert_eq!(LabelSelector::parse(sel).expect(sel).matches(&l), want, "{sel}");
        }
    }

    #[test]
    fn malformed_selectors_are_errors() {
        for bad in ["a in (", "a in ()", "=x", "a=b,,c", "a b (x)", "a=b c"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metav1_selector_converts_and_prints_like_upstream() {
        let sel = LabelSelector::from_json(&json!({"matchLabels": {"app": "nginx"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]})).expect("ok");
        assert_eq!(sel.to_string(), "app=nginx,tier in (a,b)");
        assert!(
            LabelSelector::from_json(&json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}))
                .is_err()
        );
    }

    #[test]
    fn field_selectors_check_support_and_match() {
        let fs = FieldSelector::parse("metadata.name=web-0,status.phase!=Failed").expect("parse");
        assert!(fs.validate_for("", "Pod").is_ok());
        assert_eq!(fs.name(), Some("web-0"));
        assert!(fs.matches(&json!({"metadata": {"name": "web-0"}, "status": {"phase": "Running"}})));
        assert!(!fs.matches(&json!({"metadata": {"name": "web-1"}})));
        let err = FieldSelector::parse("spec.nodeName=n")
            .expect("parse")
            .validate_for("", "ConfigMap")
            .expect_err("unsupported");
        assert_eq!(err.to_string(), "field label not supported: spec.nodeName");
        let ev =
            FieldSelector::parse("involvedObject.name=web,involvedObject.kind=StatefulSet").expect("parse");
        assert!(ev.validate_for("", "Event").is_ok());
        assert!(ev.matches(&json!({"involvedObject": {"name": "web", "kind": "StatefulSet"}})));
    }

    #[test]
    fn unset_fields_read_as_upstreams_zero_values() {
        // `kubectl cordon` users list schedulable nodes with `spec.unschedulable=false`; a Node that never
        // set the field is schedulable.
        let fs = FieldSelector::parse("spec.unschedulable=false").expect("parse");
        assert!(fs.matches(&serde_json::json!({"kind": "Node", "spec": {}})));
        assert!(!fs.matches(&serde_json::json!({"kind": "Node", "spec": {"unschedulable": true}})));
        let fs = FieldSelector::parse("spec.hostNetwork!=true").expect("parse");
        assert!(fs.matches(&serde_json::json!({"kind": "Pod", "spec": {}})));
        let fs = FieldSelector::parse("status.replicas=0").expect("parse");
        assert!(fs.matches(&serde_json::json!({"kind": "ReplicaSet", "status": {}})));
        let fs = FieldSelector::parse("name=pv-1").expect("parse");
        assert!(fs.matches(&serde_json::json!({"kind": "PersistentVolume", "metadata": {"name": "pv-1"}})));
    }
}

//! ObjectMeta validation (upstream `apimachinery/pkg/api/validation/objectmeta.go` and
//! `apimachinery/pkg/util/validation`): name formats, label and annotation syntax.

use crate::field::FieldError;
use serde_json::Value;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, any length.
fn dns1123_label_chars(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && dns1123_label_chars(s)
}

/// Upstream `IsDNS1123Subdomain`: at most 253 characters matching
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*` (the parts are not limited to 63
/// characters as labels are: a ControllerRevision `<58-character set>-<hash>` is a valid name).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns1123_label_chars)
}

fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && label_chars_ok(s)
}

/// Label and annotation keys: `[prefix/]name` (upstream `IsQualifiedName`).
pub fn qualified_name_errors(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let mut out = Vec::new();
    if let Some(p) = prefix
        && !is_dns1123_subdomain(p)
    {
        out.push(format!("prefix part {DNS1123_SUBDOMAIN_MSG}"));
    }
    if name.is_empty() {
        out.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        out.push("name part must be no more than 63 characters".into());
    } else if !is_qualified_name_part(name) {
        out.push("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into());
    }
    out
}

/// Label values: empty, or a qualified-name part.
pub fn label_value_ok(v: &str) -> bool {
    v.is_empty() || is_qualified_name_part(v)
}

/// Whether a kind's names are DNS-1123 labels (upstream: namespaces, services) rather than subdomains.
fn name_is_label(group: &str, kind: &str) -> bool {
    matches!((group, kind), ("", "Namespace" | "Service"))
}

/// Validate labels at `path`.
pub fn validate_labels(labels: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(map) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in map {
        for msg in qualified_name_errors(k) {
            errs.push(FieldError::invalid(path, k.clone(), msg));
        }
        // Upstream `IsValidLabelValue`: a length error and a format error, each its own field error.
        let Some(s) = v.as_str() else {
            errs.push(FieldError::invalid(path.to_string(), v.clone(), LABEL_VALUE_MSG));
            continue;
        };
        if s.len() > 63 {
            errs.push(FieldError::invalid(
                path.to_string(),
                v.clone(),
                "must be no more than 63 characters",
            ));
        }
        if !label_chars_ok(s) {
            errs.push(FieldError::invalid(path.to_string(), v.clone(), LABEL_VALUE_MSG));
        }
    }
}

const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// The label-value regex without its length limit.
fn label_chars_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b.is_empty()
        || (b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric())
}

/// ObjectMeta of any object: name (or generateName), namespace, labels, annotations.
pub fn validate_object_meta(group: &str, kind: &str, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        let ok = if name_is_label(group, kind) {
            is_dns1123_label(name)
        } else {
            is_dns1123_subdomain(name)
        };
        if !ok {
            let msg = if name_is_label(group, kind) {
                DNS1123_LABEL_MSG
            } else {
                DNS1123_SUBDOMAIN_MSG
            };
            errs.push(FieldError::invalid("metadata.name", name, msg));
        }
    }
    validate_labels(meta.get("labels"), "metadata.labels", &mut errs);
    if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0usize;
        for (k, v) in ann {
            for msg in qualified_name_errors(&k.to_lowercase()) {
                errs.push(FieldError::invalid("metadata.annotations", k.clone(), msg));
            }
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > 256 * 1024 {
            errs.push(FieldError {
                error_type: crate::field::ErrorType::TooLong,
                field: "metadata.annotations".into(),
                value: None,
                detail: "must have at most 262144 bytes".into(),
            });
        }
    }
    errs
}

#[cfg(test)]
mod subdomain_tests {
    use super::*;

    #[test]
    fn subdomain_parts_may_be_longer_than_a_label_as_upstream() {
        let long = format!("{}-84b6d4f4c", "a".repeat(58));
        assert!(
            is_dns1123_subdomain(&long),
            "upstream IsDNS1123Subdomain accepts it"
        );
        assert!(!is_dns1123_label(&long));
        assert!(is_dns1123_subdomain("web-0.nginx"));
        assert!(!is_dns1123_subdomain("-web"));
        assert!(!is_dns1123_subdomain("web..x"));
        assert!(!is_dns1123_subdomain("Web"));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
    }

    #[test]
    fn a_long_label_value_gets_upstreams_length_error_alone_and_a_bad_one_both() {
        let messages = |v: &str| {
            let mut errs = Vec::new();
            validate_labels(Some(&serde_json::json!({"k": v})), "metadata.labels", &mut errs);
            errs.iter().map(|e| e.to_string()).collect::<Vec<_>>()
        };
        let long = messages(&"a".repeat(64));
        assert_eq!(long.len(), 1, "{long:?}");
        assert!(
            long[0].ends_with("must be no more than 63 characters"),
            "{long:?}"
        );
        assert_eq!(messages(&format!("-{}", "a".repeat(64))).len(), 2);
        assert_eq!(messages("-bad").len(), 1);
        assert!(messages("ok.value_1").is_empty() && messages("").is_empty());
        assert_eq!(
            messages(&"é".repeat(40)).len(),
            2,
            "multi-byte characters are counted as bytes, never split"
        );
    }
}

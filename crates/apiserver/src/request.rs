//! Pure parsing of resource paths and query options (upstream `k8s.io/apiserver/pkg/endpoints/request`
//! `RequestInfoFactory`), so routing needs no state and is tested without a server.

use api::resources::{self, Resource, Subresource};
use std::collections::BTreeMap;

/// A request aimed at a served resource: `/api/v1[/namespaces/{ns}]/{plural}[/{name}[/{sub}]]` or the same under
/// `/apis/{group}/{version}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The served resource.
    pub resource: &'static Resource,
    /// The namespace from the path; `None` for cluster-scoped resources and all-namespace lists.
    pub namespace: Option<String>,
    /// The object name, if the path names one.
    pub name: Option<String>,
    /// The subresource, if any.
    pub subresource: Option<Subresource>,
}

/// Why a path is not a resource path.
#[derive(Debug, PartialEq)]
pub enum PathError {
    /// Not under `/api` or `/apis`, or an unknown group, version or resource: 404.
    NotFound,
}

/// Parse a resource path (without query).
pub fn parse_path(path: &str) -> Result<Target, PathError> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(PathError::NotFound),
    };
    let ns_res = resources::find(group, version, "namespaces");
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if Subresource::parse(plural).is_none() || ns_res.is_none() => {
            (Some((*ns).to_string()), {
                let mut v = vec![*plural];
                v.extend_from_slice(tail);
                v
            })
        }
        other => (None, other.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_string()), None),
        [plural, name, sub] => (*plural, Some((*name).to_string()), Some(*sub)),
        _ => return Err(PathError::NotFound),
    };
    let resource = resources::find(group, version, plural).ok_or(PathError::NotFound)?;
    if !resource.namespaced && namespace.is_some() {
        return Err(PathError::NotFound);
    }
    let subresource = match sub {
        None => None,
        Some(s) => {
            let parsed = Subresource::parse(s).ok_or(PathError::NotFound)?;
            if !resource.subresources.contains(&parsed) {
                return Err(PathError::NotFound);
            }
            Some(parsed)
        }
    };
    // A namespaced resource addressed by name needs its namespace.
    if resource.namespaced && namespace.is_none() && name.is_some() {
        return Err(PathError::NotFound);
    }
    Ok(Target {
        resource,
        namespace,
        name,
        subresource,
    })
}

/// Query parameters as a multimap; empty parameters (kube-rs sends `?&watch=true`) are skipped and unknown
/// ones are kept but ignored by handlers, never rejected.
#[derive(Debug, Default, Clone)]
pub struct Query(pub BTreeMap<String, Vec<String>>);

impl Query {
    /// Parse a raw query string (percent-decoded, `+` as space).
    pub fn parse(raw: Option<&str>) -> Query {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        if let Some(raw) = raw {
            for pair in raw.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                map.entry(decode(k)).or_default().push(decode(v));
            }
        }
        Query(map)
    }

    /// The first value of `key`, if present and non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .and_then(|v| v.first())
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    /// All values of `key`.
    pub fn all(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `true`, `1` or `True` count as true, as Go's `strconv.ParseBool`.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "True" | "TRUE" | "t" | "T"))
    }

    /// An integer parameter; a malformed one is a 400 for the caller.
    pub fn int(&self, key: &str) -> Result<Option<i64>, String> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("invalid value for {key}: {v:?}")),
        }
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_object_path_parses() {
        let t = parse_path("/apis/apps/v1/namespaces/default/statefulsets/web/scale").expect("path");
        assert_eq!(t.resource.plural, "statefulsets");
        assert_eq!(t.namespace.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource, Some(Subresource::Scale));
    }

    #[test]
    fn namespace_status_is_a_subresource_not_a_namespaced_resource() {
        let t = parse_path("/api/v1/namespaces/demo/status").expect("path");
        assert_eq!(t.resource.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("demo"));
        assert_eq!(t.subresource, Some(Subresource::Status));
        let t = parse_path("/api/v1/namespaces/demo").expect("path");
        assert_eq!(
            (t.resource.plural, t.name.as_deref(), t.namespace),
            ("namespaces", Some("demo"), None)
        );
    }

    #[test]
    fn all_namespace_list_and_unknown_paths() {
        let t = parse_path("/api/v1/pods").expect("path");
        assert_eq!((t.namespace, t.name), (None, None));
        assert_eq!(parse_path("/api/v1/widgets"), Err(PathError::NotFound));
        assert_eq!(parse_path("/api/v1/pods/web-0"), Err(PathError::NotFound));
        assert_eq!(parse_path("/api/v1/namespaces/x/nodes"), Err(PathError::NotFound));
        assert_eq!(
            parse_path("/api/v1/namespaces/x/pods/a/scale"),
            Err(PathError::NotFound)
        );
    }

    #[test]
    fn query_tolerates_empty_parameters_and_decodes() {
        let q = Query::parse(Some("&watch=true&labelSelector=app%3Dweb&fieldSelector=a+b&x"));
        assert!(q.flag("watch"));
        assert_eq!(q.get("labelSelector"), Some("app=web"));
        assert_eq!(q.get("fieldSelector"), Some("a b"));
        assert_eq!(q.get("x"), None);
        assert_eq!(Query::parse(Some("limit=%zz")).get("limit"), Some("%zz"));
    }
}

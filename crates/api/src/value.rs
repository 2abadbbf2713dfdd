//! Small helpers over `serde_json::Value` that never panic on input of the wrong shape.

use serde_json::{Map, Value};

/// Set `obj[path[0]][path[1]]… = v`, creating missing or null objects on the way. When something on the
/// way is not an object (a client sent `"spec": []`), nothing is written: validation reports that field,
/// and `serde_json`'s `IndexMut`, which would panic, is never used on client input.
pub fn set_in(obj: &mut Value, path: &[&str], v: Value) {
    let Some((last, parents)) = path.split_last() else {
        *obj = v;
        return;
    };
    let mut cur = obj;
    for key in parents {
        if cur.is_null() {
            *cur = Value::Object(Map::new());
        }
        let Some(m) = cur.as_object_mut() else {
            return;
        };
        cur = m.entry(key.to_string()).or_insert(Value::Null);
    }
    if cur.is_null() {
        *cur = Value::Object(Map::new());
    }
    if let Some(m) = cur.as_object_mut() {
        m.insert(last.to_string(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn creates_objects_and_leaves_wrong_shapes_alone() {
        let mut v = json!({});
        set_in(&mut v, &["spec", "finalizers"], json!(["kubernetes"]));
        assert_eq!(v, json!({"spec": {"finalizers": ["kubernetes"]}}));
        let mut bad = json!({"spec": []});
        set_in(&mut bad, &["spec", "finalizers"], json!(["kubernetes"]));
        assert_eq!(bad, json!({"spec": []}));
        let mut not_object = json!([1]);
        set_in(&mut not_object, &["metadata", "generation"], json!(1));
        assert_eq!(not_object, json!([1]));
    }
}

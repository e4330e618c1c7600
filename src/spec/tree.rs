//! Small operations on the untyped YAML tree, before typed deserialisation.

use serde_yaml::{Mapping, Value};

use super::locate::{item_path, key_path};

/// How a mapping key is spelled in a path.
pub fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "~".into(),
        _ => "?".into(),
    }
}

const MERGE_KEY: &str = "<<";

/// Apply YAML merge keys (`<<: *defaults`, `<<: [*a, *b]`) everywhere in `value`: keys of the
/// merged mappings are added unless the mapping already has them (explicit keys win; in a
/// list, earlier mappings win). Merged mappings may themselves use `<<`.
///
/// serde_yaml's `apply_merge` does the same but cannot say where a bad merge is; this one
/// returns the path of the offending `<<` with the message.
pub fn apply_merge(value: &mut Value, path: &str) -> Result<(), (String, String)> {
    match value {
        Value::Mapping(map) => {
            if let Some(sources) = map.remove(MERGE_KEY) {
                merge_into(map, sources, &key_path(path, MERGE_KEY))?;
            }
            for (key, child) in map.iter_mut() {
                apply_merge(child, &key_path(path, &key_text(key)))?;
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                apply_merge(child, &item_path(path, i))?;
            }
        }
        Value::Tagged(tagged) => apply_merge(&mut tagged.value, path)?,
        _ => {}
    }
    Ok(())
}

fn merge_into(map: &mut Mapping, sources: Value, path: &str) -> Result<(), (String, String)> {
    let sources = match sources {
        Value::Sequence(items) => items,
        single => vec![single],
    };
    for (i, mut source) in sources.into_iter().enumerate() {
        apply_merge(&mut source, path)?;
        let Value::Mapping(source) = source else {
            let what = if i == 0 { "the value" } else { "every item" };
            return Err((
                path.to_string(),
                format!("{what} of a merge key '<<' must be a mapping (usually an alias such as *defaults)"),
            ));
        };
        for (key, value) in source {
            if !map.contains_key(&key) {
                map.insert(key, value);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(text: &str) -> Result<Value, (String, String)> {
        let mut value: Value = serde_yaml::from_str(text).unwrap();
        apply_merge(&mut value, "").map(|()| value)
    }

    #[test]
    fn explicit_keys_win_and_earlier_sources_win() {
        let value =
            merged("a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  x: 0\nd:\n  inner:\n    <<: *a\n")
                .unwrap();
        let want: Value =
            serde_yaml::from_str("a: {x: 1, y: 1}\nb: {y: 2, z: 2}\nc: {x: 0, y: 1, z: 2}\nd: {inner: {x: 1, y: 1}}\n")
                .unwrap();
        assert_eq!(value, want);
    }

    #[test]
    fn nested_merges_are_resolved() {
        let value = merged("base: &base {x: 1}\nmid: &mid {<<: *base, y: 2}\nleaf: {<<: *mid}\n").unwrap();
        assert_eq!(value["leaf"], serde_yaml::from_str::<Value>("{y: 2, x: 1}").unwrap());
    }

    #[test]
    fn bad_merges_are_located() {
        let (path, message) = merged("services:\n  web:\n    <<: 3\n").unwrap_err();
        assert_eq!(path, "services.web.<<");
        assert!(message.contains("must be a mapping"));
        assert!(merged("a:\n  <<: [{x: 1}, [1]]\n").is_err());
    }
}

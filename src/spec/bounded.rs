//! The stack file is untrusted input: these are the bounds within which its bytes reach
//! serde_yaml, and the budget that stops YAML aliases from multiplying it.
//!
//! serde_yaml replays an anchor's events at every alias, so one anchor of K items referenced K
//! times builds K² values from a file of size K. Its own guard (100 replays per event) lets
//! that through, so the tree is built here by a [`DeserializeSeed`] that charges every node
//! against a budget proportional to the file's size: a node costs [`NODE_COST`] plus the length
//! of its path (the passes after parsing build that path for every node) plus the bytes of its
//! string, which is roughly the memory and time the rest of the loader spends on it. A file
//! without aliases costs well under [`BUDGET_PER_BYTE`] per byte of its text.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};

/// Largest stack file read. Real ones are a few kilobytes; this keeps every later bound small.
pub const MAX_FILE_BYTES: usize = 1 << 20;

/// What one node costs besides its path and string bytes (about its size in memory).
pub const NODE_COST: u64 = 32;

/// The budget is this many units per byte of the file, plus [`BUDGET_BASE`].
pub const BUDGET_PER_BYTE: u64 = 64;
pub const BUDGET_BASE: u64 = 1 << 22;

/// The budget for a file of `len` bytes.
pub fn budget(len: usize) -> u64 {
    BUDGET_BASE + BUDGET_PER_BYTE * len as u64
}

/// The message when the budget runs out; the caller locates it.
pub fn over_budget_message(len: usize) -> String {
    format!(
        "the YAML expands past the expansion limit ({BUDGET_PER_BYTE} units per byte of the file, {} in all): \
         an alias (*name) repeats its anchor at every use, and a long key repeats in the path of everything \
         below it; use fewer aliases or shorter keys",
        budget(len)
    )
}

/// Marker in the serde error, so the caller can tell this error from a YAML syntax error.
pub const OVER_BUDGET: &str = "stackctl: expansion limit";

/// Parse `text` (at most [`MAX_FILE_BYTES`], checked by the caller) into a tree, within
/// [`budget`].
pub fn from_str(text: &str) -> Result<Value, serde_yaml::Error> {
    let left = Cell::new(budget(text.len()));
    Node { left: &left, path: 0 }.deserialize(serde_yaml::Deserializer::from_str(text))
}

/// Seed for one node: the budget left and the length of the node's path.
#[derive(Clone, Copy)]
struct Node<'b> {
    left: &'b Cell<u64>,
    path: usize,
}

impl Node<'_> {
    fn charge<E: de::Error>(&self, bytes: usize) -> Result<(), E> {
        let cost = NODE_COST.saturating_add(self.path as u64).saturating_add(bytes as u64);
        match self.left.get().checked_sub(cost) {
            Some(left) => {
                self.left.set(left);
                Ok(())
            }
            None => Err(E::custom(OVER_BUDGET)),
        }
    }

    fn child(&self, step: usize) -> Self {
        Node { left: self.left, path: self.path.saturating_add(step).saturating_add(1) }
    }
}

/// How long a key makes the path of its value (as `tree::key_text` spells it).
fn key_len(key: &Value) -> usize {
    match key {
        Value::String(s) => s.len(),
        Value::Number(n) => n.to_string().len(),
        _ => 5,
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(f.into()))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.charge(s.len())?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.charge(s.len())?;
        Ok(Value::String(s))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self.child(items.len().to_string().len() + 1))? {
            items.push(item);
        }
        Ok(Value::Sequence(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut mapping = Mapping::new();
        while let Some(key) = map.next_key_seed(self.child(0))? {
            if mapping.contains_key(&key) {
                // Worded as serde_yaml words it: the loader locates duplicates by this text.
                return Err(de::Error::custom(format!("duplicate entry with key {}", duplicate_key(&key))));
            }
            let value = map.next_value_seed(self.child(key_len(&key)))?;
            mapping.insert(key, value);
        }
        Ok(Value::Mapping(mapping))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let (tag, contents) = data.variant::<String>()?;
        let value = contents.newtype_variant_seed(self)?;
        Ok(Value::Tagged(Box::new(TaggedValue { tag: Tag::new(tag), value })))
    }
}

fn duplicate_key(key: &Value) -> String {
    match key {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => format!("`{b}`"),
        _ => "in YAML map".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_what_serde_yaml_builds() {
        let text = "a: &x {b: [1, -2, 2.5, true, null, \"s\"]}\nc: *x\nd: !tag {e: f}\n<<: *x\n";
        assert_eq!(from_str(text).unwrap(), serde_yaml::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn duplicates_are_refused_as_serde_yaml_does() {
        let err = from_str("a: 1\na: 2\n").unwrap_err().to_string();
        assert!(err.contains("duplicate entry with key \"a\""), "{err}");
    }

    /// One anchor of K items referenced K times: K² nodes from a file of size K.
    fn fan_out(k: usize) -> String {
        let items = vec!["x"; k].join(", ");
        let refs: String = (0..k).map(|i| format!("  k{i}: *a\n")).collect();
        format!("a: &a [{items}]\nb:\n{refs}")
    }

    #[test]
    fn alias_fan_out_runs_out_of_budget_and_says_so() {
        let text = fan_out(3000);
        let started = std::time::Instant::now();
        let err = from_str(&text).unwrap_err();
        assert!(err.to_string().contains(OVER_BUDGET), "{err}");
        assert!(err.location().is_some(), "the error is located: {err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        // The same shape at a harmless size is fine.
        assert!(from_str(&fan_out(50)).is_ok());
    }

    #[test]
    fn a_file_without_aliases_is_far_within_budget() {
        // The densest YAML: one node per two bytes.
        let text = format!("[{}]", vec!["1"; 200_000].join(","));
        assert!(from_str(&text).is_ok());
        let left = Cell::new(budget(text.len()));
        Node { left: &left, path: 0 }.deserialize(serde_yaml::Deserializer::from_str(&text)).unwrap();
        let used = budget(text.len()) - left.get();
        assert!(used < 32 * text.len() as u64, "{used} for {} bytes", text.len());
    }
}

//! Compose variable interpolation on string values (never keys).
//!
//! `$VAR`, `${VAR}`, `${VAR:-default}` (unset or empty), `${VAR-default}` (unset),
//! `${VAR:?message}` / `${VAR?message}` (error), `${VAR:+alt}` / `${VAR+alt}`, and `$$` for a
//! literal `$`. Defaults may themselves contain interpolations (`${A:-${B}}`); they are only
//! evaluated when used. A `$` followed by anything else is an error, as in Compose, because it
//! is almost always a shell variable that should have been written `$$`.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::locate::{item_path, key_path};
use super::tree::key_text;
use super::Diag;

/// The result of interpolating one string.
#[derive(Debug, PartialEq)]
pub struct Interpolated {
    pub value: String,
    /// Variables that were referenced without a default and are not set.
    pub unset: Vec<String>,
}

/// Interpolate every string value in `value`; errors and warnings go to `diag`.
pub fn interpolate_tree(value: &mut Value, path: &str, env: &BTreeMap<String, String>, diag: &mut Diag) {
    match value {
        Value::String(s) if s.contains('$') => match interpolate(s, env) {
            Ok(done) => {
                for name in done.unset {
                    diag.warn(path, format!("variable {name} is not set; using an empty string"));
                }
                *s = done.value;
            }
            Err(message) => diag.error(path, message),
        },
        Value::Mapping(map) => {
            for (key, child) in map.iter_mut() {
                interpolate_tree(child, &key_path(path, &key_text(key)), env, diag);
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                interpolate_tree(child, &item_path(path, i), env, diag);
            }
        }
        Value::Tagged(tagged) => interpolate_tree(&mut tagged.value, path, env, diag),
        _ => {}
    }
}

/// Deepest nesting of `${A:-${B:-…}}` accepted. Each level rescans the rest of the value, so
/// the bound also keeps the work linear in the value's length.
pub const MAX_NESTING: usize = 16;

/// Interpolate one string. Errors never quote the value (it may be a password); they say at
/// which character the problem is.
pub fn interpolate(text: &str, env: &BTreeMap<String, String>) -> Result<Interpolated, String> {
    let mut out = Interpolated { value: String::with_capacity(text.len()), unset: Vec::new() };
    expand(text, text, 0, env, &mut out)?;
    out.unset.sort();
    out.unset.dedup();
    Ok(out)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// "at character N" of `whole` for `part`, a slice of it.
fn at(whole: &str, part: &str) -> String {
    let offset = (part.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize).min(whole.len());
    let offset = (0..=offset).rev().find(|&i| whole.is_char_boundary(i)).unwrap_or(0);
    format!("at character {}", whole[..offset].chars().count() + 1)
}

/// Expand `text` (a slice of the whole value `whole`, `depth` levels of `${…:-…}` down) onto
/// `out`.
fn expand(whole: &str, text: &str, depth: usize, env: &BTreeMap<String, String>, out: &mut Interpolated) -> Result<(), String> {
    if depth > MAX_NESTING {
        return Err(format!(
            "interpolation nested more than {MAX_NESTING} levels deep ({}); write the default without so many ${{…}} inside it",
            at(whole, text)
        ));
    }
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.value.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        rest = match after.chars().next() {
            Some('$') => {
                out.value.push('$');
                &after[1..]
            }
            Some('{') => {
                let end = closing_brace(&after[1..]).ok_or_else(|| {
                    format!(
                        "unterminated \"${{\" ({}); close it with '}}' or write a literal '$' as \"$$\"",
                        at(whole, &rest[dollar..])
                    )
                })?;
                braced(whole, &after[1..1 + end], depth, env, out)?;
                &after[1 + end + 1..]
            }
            Some(c) if is_name_start(c) => {
                let len = after.find(|c: char| !is_name_char(c)).unwrap_or(after.len());
                let name = &after[..len];
                match env.get(name) {
                    Some(v) => out.value.push_str(v),
                    None => out.unset.push(name.to_string()),
                }
                &after[len..]
            }
            _ => {
                return Err(format!(
                    "invalid interpolation ({}): '$' must be followed by a variable name or '{{'; \
                     write a literal '$' as \"$$\"",
                    at(whole, &rest[dollar..])
                ))
            }
        };
    }
    out.value.push_str(rest);
    Ok(())
}

/// Byte offset of the `}` closing a `${` whose body starts `body`, skipping nested `${…}`.
fn closing_brace(body: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '$' if matches!(chars.peek(), Some((_, '$'))) => {
                chars.next();
            }
            '$' if matches!(chars.peek(), Some((_, '{'))) => {
                chars.next();
                depth += 1;
            }
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// The operator after the name in `${NAME<op>word}`.
#[derive(Clone, Copy)]
enum Op {
    /// `:-` / `-`
    Default,
    /// `:?` / `?`
    Required,
    /// `:+` / `+`
    Alternative,
}

/// Expand the inside of `${…}`.
fn braced(whole: &str, body: &str, depth: usize, env: &BTreeMap<String, String>, out: &mut Interpolated) -> Result<(), String> {
    let name_len = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
    let (name, tail) = body.split_at(name_len);
    if name.is_empty() || !name.starts_with(is_name_start) {
        return Err(format!(
            "invalid variable name in \"${{…}}\" ({}); names are letters, digits and '_', not starting with a digit",
            at(whole, body)
        ));
    }
    let value = env.get(name).map(String::as_str);
    if tail.is_empty() {
        match value {
            Some(v) => out.value.push_str(v),
            None => out.unset.push(name.to_string()),
        }
        return Ok(());
    }
    let (colon, tail) = match tail.strip_prefix(':') {
        Some(t) => (true, t),
        None => (false, tail),
    };
    let mut op_chars = tail.chars();
    let op = match op_chars.next() {
        Some('-') => Op::Default,
        Some('?') => Op::Required,
        Some('+') => Op::Alternative,
        _ => {
            return Err(format!(
                "invalid \"${{{name}…}}\" ({}); after the name use :-, -, :?, ?, :+ or + (or nothing)",
                at(whole, tail)
            ))
        }
    };
    let word = op_chars.as_str();
    // With ':' an empty value counts as unset.
    let present = value.filter(|v| !colon || !v.is_empty());
    match (op, present) {
        (Op::Default, Some(v)) | (Op::Required, Some(v)) => out.value.push_str(v),
        (Op::Default, None) | (Op::Alternative, Some(_)) => expand(whole, word, depth + 1, env, out)?,
        (Op::Alternative, None) => {}
        (Op::Required, None) => {
            let mut message = Interpolated { value: String::new(), unset: Vec::new() };
            expand(whole, word, depth + 1, env, &mut message)?;
            let why = if colon { "is not set or empty" } else { "is not set" };
            return Err(if message.value.is_empty() {
                format!("required variable {name} {why}; set it in the environment")
            } else {
                format!("required variable {name} {why}: {}", message.value)
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> BTreeMap<String, String> {
        [("A", "alpha"), ("EMPTY", ""), ("N", "2"), ("B", "beta")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(text: &str) -> Result<String, String> {
        interpolate(text, &env()).map(|i| i.value)
    }

    #[test]
    fn every_form() {
        for (text, want) in [
            ("plain", "plain"),
            ("$A", "alpha"),
            ("x${A}y", "xalphay"),
            ("$A-$B", "alpha-beta"),
            ("${UNSET:-d}", "d"),
            ("${EMPTY:-d}", "d"),
            ("${A:-d}", "alpha"),
            ("${UNSET-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${A:+alt}", "alt"),
            ("${EMPTY:+alt}", ""),
            ("${EMPTY+alt}", "alt"),
            ("${UNSET+alt}", ""),
            ("${A:?boom}", "alpha"),
            ("${EMPTY?boom}", ""),
            ("$$A", "$A"),
            ("cost: $$5", "cost: $5"),
            ("${UNSET:-${B}}", "beta"),
            ("${UNSET:-${UNSET2:-deep}}", "deep"),
            ("${UNSET:-a}b}", "ab}"),
            ("${UNSET:-127.0.0.1:5000/x:v1}", "127.0.0.1:5000/x:v1"),
            ("${UNSET:-$$}", "$"),
            ("${N}", "2"),
        ] {
            assert_eq!(run(text), Ok(want.to_string()), "{text}");
        }
    }

    #[test]
    fn unset_variables_are_reported() {
        let done = interpolate("$X and ${Y} and ${Z:-z} and ${W:+w}", &env()).unwrap();
        assert_eq!(done.value, " and  and z and ");
        assert_eq!(done.unset, ["X", "Y"]);
        // Defaults are lazy: an unused default's variables are not reported.
        assert!(interpolate("${A:-$NOPE}", &env()).unwrap().unset.is_empty());
    }

    #[test]
    fn errors() {
        for (text, needle) in [
            (
                "${UNSET:?set UNSET to the API key}",
                "required variable UNSET is not set or empty: set UNSET to the API key",
            ),
            ("${EMPTY:?}", "required variable EMPTY is not set or empty; set it"),
            ("${UNSET?}", "required variable UNSET is not set;"),
            ("${A", "unterminated"),
            ("${", "unterminated"),
            ("${}", "invalid variable name"),
            ("${1A}", "invalid variable name"),
            ("${A B}", "after the name"),
            ("${A:x}", "after the name"),
            ("echo $1", "write a literal '$' as \"$$\""),
            ("trailing $", "'$' must be followed"),
            ("${UNSET:-${}", "unterminated"),
            ("${UNSET:-$ }", "'$' must be followed"),
        ] {
            let err = run(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn errors_point_at_the_character_and_never_quote_the_value() {
        let err = run("hunter2$1").unwrap_err();
        assert!(err.contains("at character 8"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = run("pa55${").unwrap_err();
        assert!(err.contains("at character 5") && !err.contains("pa55"), "{err}");
        let err = run("x${se cret}").unwrap_err();
        assert!(!err.contains("cret"), "{err}");
    }

    #[test]
    fn nesting_is_bounded_and_linear() {
        let nested = |n: usize| format!("{}x{}", "${U:-".repeat(n), "}".repeat(n));
        assert_eq!(run(&nested(MAX_NESTING)), Ok("x".to_string()));
        assert!(run(&nested(MAX_NESTING + 1)).unwrap_err().contains("nested more than"));
        // Deep enough to overflow the stack without the bound; refused quickly.
        let started = std::time::Instant::now();
        assert!(run(&nested(100_000)).unwrap_err().contains("nested more than"));
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "{:?}", started.elapsed());
    }

    #[test]
    fn an_unset_variable_is_reported_once() {
        assert_eq!(interpolate("$X$X${X}", &env()).unwrap().unset, ["X"]);
    }
}

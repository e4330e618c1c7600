//! Allowlists for what reaches Swarm and the registry rather than nginx: Docker object names,
//! image references and the proxy URL; plus the escaping of stack-file text for terminals and
//! the did-you-mean for unknown keys. What is rendered into nginx config is checked by
//! [`super::allow`]. When a value is refused, the message names the offending character.

use super::allow::{check_chars, check_host, describe_char, is_lower_alnum};

/// `text` safe to print on a terminal: control characters (escape sequences, newlines) and the
/// Unicode controls that reorder text are written as `\u{…}`, so a stack file cannot forge
/// lines or colours in a message.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| c.is_control() || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(hidden) {
        return text.into();
    }
    text.chars()
        .map(|c| if hidden(c) { format!("\\u{{{:x}}}", u32::from(c)) } else { c.to_string() })
        .collect::<String>()
        .into()
}

/// Names of networks, volumes, configs and secrets (keys in the file and real names):
/// Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 64 characters.
pub fn check_object_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} is empty"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    check_chars(what, name, allowed, "use only letters, digits, '_', '.' and '-'")?;
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("{what} {name:?} must start with a letter or digit"));
    }
    if name.len() > 64 {
        return Err(format!("{what} {name:?} is longer than 64 characters"));
    }
    Ok(())
}

/// Docker context names (`--context`, `DOCKER_CONTEXT`, `x-stackctl.context`): the docker
/// CLI's `[a-zA-Z0-9][a-zA-Z0-9_.+-]*`, at most 64 characters; the name selects a directory.
pub fn check_context_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("a Docker context name is 1 to 64 characters".into());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-');
    check_chars("the Docker context name", name, allowed, "use only letters, digits, '_', '.', '+' and '-'")?;
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("a Docker context name starts with a letter or digit".into());
    }
    Ok(())
}

/// Environment names (`--env NAME`): `[a-z0-9][a-z0-9_-]*`, at most 32 characters. The name
/// is part of file names beside the stack file (`shop.NAME.yml`), so no `/` or `.`.
pub fn check_environment_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 32 {
        return Err("an environment name is 1 to 32 characters".into());
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-');
    check_chars("the environment name", name, allowed, "use only lowercase letters, digits, '_' and '-'")?;
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err("an environment name starts with a letter or digit".into());
    }
    Ok(())
}

/// Image references: `[registry[:port]/]path[:tag][@sha256:<64 hex>]`, following the grammar
/// of Docker's distribution/reference package.
pub fn check_image_ref(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("image is empty; set image: to a reference such as nginx:1.27".into());
    }
    if let Some(c) = image.chars().find(|c| c.is_whitespace() || c.is_control() || !c.is_ascii()) {
        return Err(format!("image {image:?} contains {}", describe_char(c)));
    }
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:").unwrap_or("");
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
            return Err(format!("image {image:?}: the digest must be sha256: followed by 64 lowercase hex digits"));
        }
    }
    // A ':' after the last '/' starts the tag; before it, it is a registry port.
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(i) if last_slash.is_none_or(|j| i > j) => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(tag) = tag {
        check_tag(image, tag)?;
    }
    if name.len() > 255 {
        return Err(format!("image {image:?}: the repository name is longer than 255 characters"));
    }
    let mut components: Vec<&str> = name.split('/').collect();
    if components.len() > 1 && is_registry(components[0]) {
        check_registry(image, components.remove(0))?;
    }
    for component in components {
        check_path_component(image, component)?;
    }
    Ok(())
}

fn check_tag(image: &str, tag: &str) -> Result<(), String> {
    let valid = !tag.is_empty()
        && tag.len() <= 128
        && tag.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !tag.starts_with(['.', '-']);
    if valid {
        Ok(())
    } else {
        Err(format!(
            "image {image:?}: invalid tag {tag:?} (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')"
        ))
    }
}

/// Docker's rule: the first component is a registry if it has a `.` or `:`, is `localhost`,
/// or contains uppercase (which a repository path cannot).
fn is_registry(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost" || component.chars().any(|c| c.is_ascii_uppercase())
}

fn check_registry(image: &str, registry: &str) -> Result<(), String> {
    let bad = || format!("image {image:?}: invalid registry {registry:?}; write it as host[:port]");
    let (host, port) = if let Some(v6) = registry.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(bad)?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        (None, after.strip_prefix(':'))
    } else {
        match registry.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(registry), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !host.split('.').all(label_ok) {
            return Err(bad());
        }
    }
    if let Some(port) = port {
        if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) || port.parse::<u16>().is_err() {
            return Err(bad());
        }
    }
    Ok(())
}

/// `[a-z0-9]+` runs separated by `.`, `_`, `__` or any number of `-`.
fn check_path_component(image: &str, component: &str) -> Result<(), String> {
    if let Some(c) = component.chars().find(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "image {image:?} contains uppercase {}; repository names must be lowercase",
            describe_char(c)
        ));
    }
    let bad = || {
        format!(
            "image {image:?}: invalid repository name component {component:?} (lowercase letters and digits, \
             separated by '.', '_', '__' or '-')"
        )
    };
    if component.is_empty() || !component.starts_with(is_lower_alnum) || !component.ends_with(is_lower_alnum) {
        return Err(bad());
    }
    let mut separator = String::new();
    for c in component.chars() {
        if is_lower_alnum(c) {
            let ok = separator.is_empty()
                || separator == "."
                || separator == "_"
                || separator == "__"
                || separator.chars().all(|s| s == '-');
            if !ok {
                return Err(bad());
            }
            separator.clear();
        } else if matches!(c, '.' | '_' | '-') {
            separator.push(c);
        } else {
            return Err(format!("image {image:?} contains {}", describe_char(c)));
        }
    }
    Ok(())
}

/// The proxy URL: `http://host:port` with an optional trailing `/`; host an IP address or a
/// host name. No path, query or credentials: stackctl appends its own paths.
pub fn check_proxy_url(url: &str) -> Result<(), String> {
    let example = "write it as http://HOST:PORT, e.g. http://127.0.0.1:8080";
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("proxy url {url:?} must start with http:// (https is not supported); {example}"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if let Some(c) = authority.chars().find(|c| matches!(c, '/' | '?' | '#' | '@')) {
        return Err(format!(
            "proxy url {url:?} must not have a path, query or credentials (found {}); {example}",
            describe_char(c)
        ));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) =
                v6.split_once(']').ok_or_else(|| format!("proxy url {url:?}: unclosed '['; {example}"))?;
            if addr.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("proxy url {url:?}: {addr:?} is not an IPv6 address"));
            }
            (None, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(authority), None),
        },
    };
    let port = port.ok_or_else(|| format!("proxy url {url:?} has no port; {example}"))?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 && port.chars().all(|c| c.is_ascii_digit()) => {}
        _ => return Err(format!("proxy url {url:?}: invalid port {port:?} (1-65535)")),
    }
    if let Some(host) = host {
        if host.parse::<std::net::Ipv4Addr>().is_err() {
            check_host(host).map_err(|e| format!("proxy url {url:?}: {e}"))?;
            if host.starts_with('*') {
                return Err(format!("proxy url {url:?}: the host cannot be a wildcard"));
            }
        }
    }
    Ok(())
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions), so that
/// `imgae` is one edit away from `image`. The loader uses its banded form, [`within`]; this
/// one is the reference the tests hold it to.
/// Longest body pattern, and the most memory its compiled form may take: a pattern is input
/// from the file, and a huge one would cost time on every gate.
const MAX_PATTERN: usize = 1024;
const PATTERN_SIZE_LIMIT: usize = 1 << 20;
/// The body pattern as the gate compiles it (the same limits as when the file was read).
pub fn body_regex(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > MAX_PATTERN {
        return Err(format!("the pattern is {} characters long; the limit is {MAX_PATTERN}", pattern.len()));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("not a valid regular expression: {}", e.to_string().lines().last().unwrap_or("invalid")))
}

#[cfg(test)]
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate closest to `word`, if it is close enough to be an obvious typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // Long words are not typos of a key; the length checks keep this linear in hostile input.
    let length = word.chars().count();
    if length > 64 {
        return None;
    }
    let limit = (length / 3).clamp(1, 2);
    let word: Vec<char> = word.chars().collect();
    candidates
        .into_iter()
        .take(MAX_CANDIDATES)
        .filter_map(|c| within(&word, c, limit).map(|d| (d, c)))
        .min()
        .map(|(_, c)| c)
}

/// More names than this are not searched for a suggestion (a file may define thousands).
const MAX_CANDIDATES: usize = 64;

/// [`edit_distance`] when it is at most `limit`, computed only near the diagonal (a cell
/// further than `limit` from it cannot be within `limit`), so it costs O(length × limit).
fn within(a: &[char], b: &str, limit: usize) -> Option<usize> {
    let b: Vec<char> = b.chars().take(a.len() + limit + 1).collect();
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let far = limit + 1;
    // Rows i-2, i-1 and i of the table; cells off the band stay `far`.
    let mut older = vec![far; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).map(|j| j.min(far)).collect();
    let mut row = vec![far; b.len() + 1];
    let mut prev_min = 0;
    for i in 1..=a.len() {
        let (lo, hi) = (i.saturating_sub(limit).max(1), (i + limit).min(b.len()));
        // Only the cells just outside the band are read later; they must read as `far`.
        row[0] = i.min(far);
        row[lo - 1] = if lo == 1 { row[0] } else { far };
        if hi < b.len() {
            row[hi + 1] = far;
        }
        for j in lo..=hi {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (prev[j] + 1).min(row[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(older[j - 2] + 1);
            }
            row[j] = best.min(far);
        }
        // Every path to the last cell crosses row i or (by a transposition) row i-1: once both
        // are past the limit, so is the distance.
        let row_min = row[lo - 1..=hi].iter().copied().min().unwrap_or(far);
        if row_min >= far && prev_min >= far {
            return None;
        }
        prev_min = row_min;
        std::mem::swap(&mut older, &mut prev);
        std::mem::swap(&mut prev, &mut row);
    }
    Some(prev[b.len()]).filter(|&distance| distance <= limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_patterns_are_compiled_within_limits() {
        assert!(body_regex("^v[0-9]+$").unwrap().is_match("v2"));
        assert!(body_regex("(").unwrap_err().contains("not a valid regular expression"));
        assert!(body_regex(&"a".repeat(2000)).unwrap_err().contains("limit is 1024"));
        // Small to write, huge once compiled: refused by the size limit, not built.
        assert!(body_regex(r"\w{1000}\w{1000}\w{1000}").is_err());
    }

    #[test]
    fn printable_escapes_what_a_terminal_would_obey() {
        assert_eq!(printable("plain é"), "plain é");
        assert_eq!(printable("a\u{1b}[31mb\nc\u{202e}"), "a\\u{1b}[31mb\\u{a}c\\u{202e}");
        assert_eq!(printable(&printable("\u{7}")), "\\u{7}");
    }

    #[test]
    fn object_names() {
        assert!(check_object_name("network", "my_net.1").is_ok());
        assert!(check_object_name("network", "_x").is_err());
    }

    #[test]
    fn image_references() {
        for ok in [
            "nginx",
            "nginx:1.27",
            "library/nginx:latest",
            "127.0.0.1:5000/stackctl-demo:v1",
            "localhost/a/b",
            "registry.example.com:443/team/app__x.y-z:1.0_rc",
            "[::1]:5000/app",
            "app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "r.io/app:v1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check_image_ref(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "a b",
            "app@sha256:123",
            "app@md5:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "reg:99999/app",
            "a//b",
            "a/.b",
            "a._b",
            "a/b;c",
            "-reg.io/app",
        ] {
            assert!(check_image_ref(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn proxy_urls() {
        for ok in ["http://127.0.0.1:8080", "http://127.0.0.1:8080/", "http://proxy.local:80", "http://[::1]:8080"] {
            assert_eq!(check_proxy_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://127.0.0.1:8080",
            "http://127.0.0.1",
            "http://127.0.0.1:0",
            "http://127.0.0.1:8080/x",
            "http://127.0.0.1:8080?a",
            "http://u@h:1",
            "http://h;x:1",
            "http://:80",
            "127.0.0.1:8080",
        ] {
            assert!(check_proxy_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn typos() {
        assert_eq!(edit_distance("imgae", "image"), 1);
        assert_eq!(nearest("imgae", ["image", "init", "user"]), Some("image"));
        assert_eq!(nearest("enviroment", ["environment", "entrypoint"]), Some("environment"));
        assert_eq!(nearest("zzz", ["image", "user"]), None);
        // The banded distance agrees with the full one wherever it answers.
        let words = ["image", "imgae", "img", "images", "init", "user", "environment", "enviroment", "abcdef", "badcfe"];
        for a in words {
            let chars: Vec<char> = a.chars().collect();
            for b in words {
                let full = edit_distance(a, b);
                for limit in 0..4 {
                    assert_eq!(within(&chars, b, limit), (full <= limit).then_some(full), "{a} {b} {limit}");
                }
            }
        }
    }
}

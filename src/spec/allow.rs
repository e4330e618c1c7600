//! The allowlist of everything stackctl renders into nginx config: host names, URL paths,
//! stack and service names (they become nginx variable and upstream names), the directory
//! nginx reads its files from, and a route's settings (body size, timeouts, extra headers).
//!
//! One definition, used twice: the stack loader checks every value here and reports a refusal
//! with file, line and field; the renderer ([`crate::proxy::render`]) checks again before
//! writing a config, so a value that reached it some other way (a test, a future caller)
//! cannot escape its place either. Positive allowlists, never denylists: a refusal names the
//! first character that is not allowed so the user can find it.

use std::time::Duration;

/// How a character is shown in messages: `';' (semicolon)`, `newline`, `U+0007`.
pub fn describe_char(c: char) -> String {
    let name = match c {
        ' ' => return "a space".into(),
        '\n' => return "a newline".into(),
        '\r' => return "a carriage return".into(),
        '\t' => return "a tab".into(),
        ';' => "semicolon",
        '{' => "opening brace",
        '}' => "closing brace",
        '#' => "hash",
        '"' => "double quote",
        '\'' => "single quote",
        '`' => "backtick",
        '$' => "dollar sign",
        '\\' => "backslash",
        _ if c.is_control() => return format!("the control character U+{:04X}", u32::from(c)),
        _ => return format!("'{c}'"),
    };
    format!("'{c}' ({name})")
}

/// Checks that every character of `value` is `allowed`; the error names the first one that
/// is not. Uppercase gets its own hint because it is the most common slip.
pub(super) fn check_chars(what: &str, value: &str, allowed: impl Fn(char) -> bool, rule: &str) -> Result<(), String> {
    match value.chars().find(|&c| !allowed(c)) {
        None => Ok(()),
        Some(c) if c.is_ascii_uppercase() && allowed(c.to_ascii_lowercase()) => Err(format!(
            "{what} {value:?} contains uppercase {}; write it in lowercase: {:?}",
            describe_char(c),
            value.to_ascii_lowercase()
        )),
        Some(c) => Err(format!("{what} {value:?} contains {}; {rule}", describe_char(c))),
    }
}

pub(super) fn is_lower_alnum(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]` then `[a-z0-9-]`, not ending in `-`, at most `max` characters.
fn check_dns_like(what: &str, value: &str, max: usize) -> Result<(), String> {
    let rule = "use only lowercase letters, digits and '-'";
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    check_chars(what, value, |c| is_lower_alnum(c) || c == '-', rule)?;
    if value.starts_with('-') || value.ends_with('-') {
        return Err(format!("{what} {value:?} must start and end with a letter or digit"));
    }
    if value.len() > max {
        return Err(format!("{what} {value:?} is {} characters long; the limit is {max}", value.len()));
    }
    Ok(())
}

/// Longest stack name. Swarm service names are limited to 63 characters and stackctl names
/// routed releases `<stack>_<service>-r<N>`, so both parts are kept short.
pub const MAX_STACK_NAME: usize = 30;
pub const MAX_SERVICE_NAME: usize = 31;
/// Room reserved for `-r<N>` in versioned service names (up to a million releases).
pub const RELEASE_SUFFIX_ROOM: usize = "-r999999".len();
/// Docker's limit for service names (they are DNS labels).
pub const MAX_SWARM_SERVICE_NAME: usize = 63;

/// Stack names: `[a-z0-9-]`, at most 30 characters. Underscores are refused although
/// `docker stack` accepts them, because `_` separates stack from service in Swarm names and
/// nginx upstream names use `__` as a separator.
pub fn check_stack_name(name: &str) -> Result<(), String> {
    check_dns_like("stack name", name, MAX_STACK_NAME)
}

/// Service names: `[a-z0-9-]`, at most 31 characters (no `_`: it separates stack and service).
pub fn check_service_name(name: &str) -> Result<(), String> {
    check_dns_like("service name", name, MAX_SERVICE_NAME)
}

/// Host names for `server_name`: lowercase labels, optionally `*.` in front.
pub fn check_host(host: &str) -> Result<(), String> {
    let rule = "host names may contain only a-z, 0-9, '-' and '.', with an optional leading '*.'";
    if host.is_empty() {
        return Err("host is empty".into());
    }
    check_chars("host", host, |c| is_lower_alnum(c) || matches!(c, '-' | '.' | '*'), rule)?;
    let bare = host.strip_prefix("*.").unwrap_or(host);
    if bare.contains('*') {
        return Err(format!("host {host:?}: '*' is only allowed as a whole first label ('*.example.com')"));
    }
    if host.len() > 253 {
        return Err(format!("host {host:?} is longer than 253 characters"));
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return Err(format!("host {host:?} has an empty label (two dots in a row, or a leading or trailing dot)"));
        }
        if label.len() > 63 {
            return Err(format!("host {host:?}: the label {label:?} is longer than 63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("host {host:?}: the label {label:?} must not start or end with '-'"));
        }
    }
    Ok(())
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '/' | '-')
}

/// Longest URL path prefix. nginx answers a request line longer than its header buffer (8k by
/// default) with 414, so a longer route could never match; this leaves room for any real one
/// and keeps a single value from filling the config.
pub const MAX_PATH: usize = 1024;

/// URL path prefixes: `/` then `[A-Za-z0-9._~/-]`, at most [`MAX_PATH`] characters, no `.` or
/// `..` segment (nginx resolves them in the request before matching, so a location holding one
/// never matches, and `..` is how a path climbs out of its prefix), no `//` (nginx merges it).
/// A segment that merely starts with a dot (`/.well-known`) is an ordinary name to nginx and
/// is allowed: ACME challenges live there.
pub fn check_path(what: &str, path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{what} {path:?} must start with '/'"));
    }
    if path.len() > MAX_PATH {
        return Err(format!("{what} is {} characters long; the limit is {MAX_PATH}", path.len()));
    }
    check_chars(what, path, is_path_char, "paths may contain only A-Z, a-z, 0-9, '.', '_', '~', '/' and '-'")?;
    if path.contains("//") {
        return Err(format!("{what} {path:?} contains '//'; remove the empty segment"));
    }
    if path.split('/').any(|segment| segment == "." || segment == "..") {
        return Err(format!("{what} {path:?} contains a '.' or '..' segment; write the path without it"));
    }
    Ok(())
}

/// Health probe paths: a path as above plus an optional `?query` of `[A-Za-z0-9._~=&-]`.
pub fn check_health_path(path: &str) -> Result<(), String> {
    let (path_part, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    check_path("health path", path_part)?;
    if let Some(query) = query {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '=' | '&' | '-');
        check_chars(
            "health query",
            query,
            allowed,
            "queries may contain only A-Z, a-z, 0-9, '.', '_', '~', '=', '&' and '-'",
        )?;
    }
    Ok(())
}

/// An absolute directory inside a container (`/etc/nginx/stackctl`): same characters as paths.
pub fn check_container_dir(what: &str, dir: &str) -> Result<(), String> {
    check_path(what, dir)?;
    // stackctl appends `/<file>`: a trailing '/' would make `//`, which the renderer refuses.
    if dir.ends_with('/') {
        return Err(format!("{what} {dir:?} must not end with '/'; write it as {:?}", dir.trim_end_matches('/')));
    }
    Ok(())
}

/// Largest `client_max_body_size` a route may ask for (64 GiB); 0 means no limit.
pub const MAX_BODY_SIZE: u64 = 64 << 30;
/// Bounds of a route's `read_timeout` and `send_timeout`. Below a second, ordinary requests
/// fail on a busy release; a day is longer than any WebSocket should stay silent.
pub const MIN_PROXY_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_PROXY_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// At most this many extra request headers per route, with names and values this long.
pub const MAX_HEADERS: usize = 32;
pub const MAX_HEADER_NAME: usize = 64;
pub const MAX_HEADER_VALUE: usize = 1024;
/// Request headers a route may not set: stackctl sets them itself (a second
/// `proxy_set_header` would send the header twice), or they are hop-by-hop and would change
/// what the proxied request means. Lowercase; `x-stackctl-*` is reserved as a whole.
const RESERVED_HEADERS: [&str; 12] = [
    "host",
    "connection",
    "upgrade",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "content-length",
    "x-real-ip",
    "x-forwarded-for",
    "x-forwarded-proto",
];

/// Longest `x-stackctl.maintenance.retry_after`: a day. Clients wait that long before asking
/// again; anything longer is a typo.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// `Retry-After` (rendered into nginx's config as a number of seconds): whole seconds, from 1s
/// to [`MAX_RETRY_AFTER`].
pub fn check_retry_after(d: Duration) -> Result<(), String> {
    if d.subsec_nanos() != 0 || d.is_zero() || d > MAX_RETRY_AFTER {
        return Err(format!("retry_after must be whole seconds from 1s to 24h (Retry-After counts seconds), not {d:?}"));
    }
    Ok(())
}

/// `client_max_body_size` in bytes: at most [`MAX_BODY_SIZE`].
pub fn check_body_size(bytes: u64) -> Result<(), String> {
    if bytes > MAX_BODY_SIZE {
        return Err(format!("client_max_body_size {bytes} bytes is larger than the limit of 64g (0: no limit)"));
    }
    Ok(())
}

/// `read_timeout` and `send_timeout`: between [`MIN_PROXY_TIMEOUT`] and [`MAX_PROXY_TIMEOUT`].
pub fn check_proxy_timeout(what: &str, timeout: Duration) -> Result<(), String> {
    if timeout < MIN_PROXY_TIMEOUT || timeout > MAX_PROXY_TIMEOUT {
        return Err(format!("{what} {timeout:?} is out of range; write a duration from 1s to 24h"));
    }
    Ok(())
}

/// Extra request header names: an HTTP token of `[A-Za-z0-9-]`, at most [`MAX_HEADER_NAME`]
/// characters, none that stackctl sets itself or that is hop-by-hop ([`RESERVED_HEADERS`]).
pub fn check_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name is empty".into());
    }
    check_chars("header name", name, |c| c.is_ascii_alphanumeric() || c == '-', "header names may contain only A-Z, a-z, 0-9 and '-'")?;
    if name.starts_with('-') || name.ends_with('-') {
        return Err(format!("header name {name:?} must start and end with a letter or digit"));
    }
    if name.len() > MAX_HEADER_NAME {
        return Err(format!("header name {name:?} is {} characters long; the limit is {MAX_HEADER_NAME}", name.len()));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("x-stackctl-") {
        return Err(format!("header {name:?} is set by stackctl or by nginx itself and cannot be set by a route"));
    }
    Ok(())
}

fn is_header_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " !%&()*+,-./:<=>?@[]^_|~".contains(c)
}

/// Extra request header values, rendered inside double quotes: letters, digits, spaces and
/// `!%&()*+,-./:<=>?@[]^_|~`, at most [`MAX_HEADER_VALUE`] characters, no leading or trailing
/// space. No `$` (nginx would read a variable), no quote or backslash (they end or escape the
/// string), none of `;{}#'` either. Empty is allowed: it removes the header the client sent.
pub fn check_header_value(name: &str, value: &str) -> Result<(), String> {
    let what = format!("value of header {name}");
    check_chars(
        &what,
        value,
        is_header_value_char,
        "header values may contain only A-Z, a-z, 0-9, spaces and !%&()*+,-./:<=>?@[]^_|~",
    )?;
    if value.len() > MAX_HEADER_VALUE {
        return Err(format!("{what} is {} characters long; the limit is {MAX_HEADER_VALUE}", value.len()));
    }
    if value.starts_with(' ') || value.ends_with(' ') {
        return Err(format!("{what} {value:?} starts or ends with a space; remove it"));
    }
    Ok(())
}

/// A whole set of extra headers: each name and value as above, at most [`MAX_HEADERS`], no
/// name twice (names are case-insensitive, and nginx would send both).
pub fn check_headers(headers: &[(String, String)]) -> Result<(), String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!("{} headers; the limit is {MAX_HEADERS} per route", headers.len()));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in headers {
        check_header_name(name)?;
        check_header_value(name, value)?;
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(format!("header {name:?} is set twice (header names are case-insensitive)"));
        }
    }
    Ok(())
}

/// Every setting of a route, as the renderer re-checks them.
pub fn check_route_settings(s: &super::RouteSettings) -> Result<(), String> {
    if let Some(bytes) = s.client_max_body_size {
        check_body_size(bytes)?;
    }
    for (what, timeout) in [("read_timeout", s.read_timeout), ("send_timeout", s.send_timeout)] {
        if let Some(t) = timeout {
            check_proxy_timeout(what, t)?;
        }
    }
    check_headers(&s.headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Characters that would let a value escape its place in nginx config.
    const DANGEROUS: [(char, &str); 9] = [
        (';', "semicolon"),
        ('{', "opening brace"),
        ('}', "closing brace"),
        ('\n', "newline"),
        ('#', "hash"),
        ('"', "double quote"),
        ('\'', "single quote"),
        (' ', "space"),
        ('$', "dollar sign"),
    ];

    #[test]
    fn dangerous_characters_are_refused_and_named() {
        for (c, name) in DANGEROUS {
            let host = format!("a{c}b.example.com");
            let path = format!("/a{c}b");
            let health = format!("/healthz?x=1{c}");
            for (what, result) in [
                ("host", check_host(&host)),
                ("path", check_path("path", &path)),
                ("health path", check_health_path(&format!("/h{c}"))),
                ("health query", check_health_path(&health)),
                ("stack name", check_stack_name(&format!("a{c}"))),
                ("service name", check_service_name(&format!("a{c}"))),
            ] {
                let err = result.expect_err(what);
                assert!(err.contains(name), "{what} with {c:?}: {err}");
                assert!(err.contains(what), "{what}: {err}");
            }
        }
    }

    #[test]
    fn hosts() {
        for ok in ["example.com", "a.example.com", "*.example.com", "localhost", "x1-2.y", "a"] {
            assert_eq!(check_host(ok), Ok(()), "{ok}");
        }
        for bad in ["", "Example.com", "a..b", ".a", "a.", "-a.com", "a-.com", "a.*.com", "*", "a_b.com", "a:80"] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
        assert!(check_host("API.example.com").unwrap_err().contains("\"api.example.com\""));
        assert!(check_host(&"a".repeat(64)).is_err());
        // 253 characters in all, labels of at most 63.
        let label = "a".repeat(63);
        let longest = [label.as_str(); 4].join(".")[..253].to_string();
        assert_eq!(check_host(&longest), Ok(()));
        assert!(check_host(&format!("{longest}a")).unwrap_err().contains("253"));
        for bad in ["*.*.example.com", "*example.com", "example.*", "a b.com", "a;b.com", "ex$ample.com", "xn--bcher-kva.例"] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
        assert_eq!(check_host("xn--bcher-kva.example"), Ok(()));
    }

    #[test]
    fn paths() {
        for ok in ["/", "/api", "/api/", "/a.b/c_d/~e-f"] {
            assert_eq!(check_path("path", ok), Ok(()), "{ok}");
        }
        for bad in ["", "api", "/a//b", "/a/../b", "/..", "/./a", "/a?b", "/a%20", "/a\\b", "/a b", "/a;b", "/a{b", "/$x"] {
            assert!(check_path("path", bad).is_err(), "{bad}");
        }
        // The renderer once had its own check and accepted these `.` segments; the loader
        // refused them. Both use this one now.
        for was_renderer_only in ["/.", "/a/./b", "/a/.", "/./"] {
            assert!(check_path("path", was_renderer_only).unwrap_err().contains("'.' or '..' segment"), "{was_renderer_only}");
        }
        // Dots inside a segment are names, not navigation.
        for ok in ["/.well-known/acme-challenge", "/a..b", "/...", "/v1.2/x."] {
            assert_eq!(check_path("path", ok), Ok(()), "{ok}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH));
        assert!(check_path("path", &long).unwrap_err().contains("limit is 1024"));
        assert_eq!(check_path("path", &long[..MAX_PATH]), Ok(()));
        assert_eq!(check_health_path("/healthz?full=1&x=y"), Ok(()));
        assert_eq!(check_container_dir("config_dir", "/etc/nginx/stackctl"), Ok(()));
        for bad in ["/etc/nginx/", "/", "/etc/./x", "etc"] {
            assert!(check_container_dir("config_dir", bad).is_err(), "{bad}");
        }
        assert!(check_health_path("/healthz?a=%41").is_err());
        assert!(check_health_path("/a?b?c").is_err());
    }

    #[test]
    fn names() {
        assert_eq!(check_stack_name("demo-1"), Ok(()));
        assert_eq!(check_service_name("web2"), Ok(()));
        for bad in ["", "Demo", "-a", "a-", "a_b", "a.b", &"a".repeat(31)] {
            assert!(check_stack_name(bad).is_err(), "{bad}");
        }
        assert!(check_service_name(&"a".repeat(32)).is_err());
    }

    #[test]
    fn header_values_refuse_every_dangerous_character() {
        for (c, name) in DANGEROUS.into_iter().filter(|(c, _)| *c != ' ').chain([('\\', "backslash"), ('`', "backtick")]) {
            let err = check_header_value("X-A", &format!("a{c}b")).expect_err(name);
            assert!(err.contains(name) && err.contains("value of header X-A"), "{c:?}: {err}");
        }
        for ok in ["", "1", "on", "https://example.com/a?b=c&d=e", "Bearer abc.def-ghi_jkl~", "a b (c) [d] <e> @f |g ^h !i %20 +j *k"] {
            assert_eq!(check_header_value("X-A", ok), Ok(()), "{ok}");
        }
        assert!(check_header_value("X-A", " a").is_err());
        assert!(check_header_value("X-A", "a ").is_err());
        assert!(check_header_value("X-A", &"a".repeat(MAX_HEADER_VALUE + 1)).unwrap_err().contains("limit is 1024"));
        assert!(check_header_value("X-A", "caf\u{e9}").unwrap_err().contains("'\u{e9}'"));
    }

    #[test]
    fn header_names() {
        for ok in ["X-Request-Source", "x-a", "Authorization", "X1"] {
            assert_eq!(check_header_name(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("X A", "a space"),
            ("X_A", "'_'"),
            ("X:A", "':'"),
            ("-X", "start and end"),
            ("Host", "set by stackctl"),
            ("CONNECTION", "set by stackctl"),
            ("Upgrade", "set by stackctl"),
            ("X-Stackctl-Preview", "set by stackctl"),
            ("x-forwarded-for", "set by stackctl"),
            ("Transfer-Encoding", "set by stackctl"),
        ] {
            let err = check_header_name(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(check_header_name(&"a".repeat(MAX_HEADER_NAME + 1)).unwrap_err().contains("limit is 64"));
        let pairs = |names: &[&str]| names.iter().map(|n| (n.to_string(), "1".to_string())).collect::<Vec<_>>();
        assert_eq!(check_headers(&pairs(&["X-A", "X-B"])), Ok(()));
        assert!(check_headers(&pairs(&["X-A", "x-a"])).unwrap_err().contains("set twice"));
        let many: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("X-{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(check_headers(&pairs(&many)).unwrap_err().contains("limit is 32"));
    }

    #[test]
    fn settings_bounds() {
        assert_eq!(check_body_size(0), Ok(()));
        assert_eq!(check_body_size(MAX_BODY_SIZE), Ok(()));
        assert!(check_body_size(MAX_BODY_SIZE + 1).unwrap_err().contains("64g"));
        for ok in [MIN_PROXY_TIMEOUT, MAX_PROXY_TIMEOUT, Duration::from_secs(75)] {
            assert_eq!(check_proxy_timeout("read_timeout", ok), Ok(()));
        }
        for bad in [Duration::ZERO, Duration::from_millis(999), MAX_PROXY_TIMEOUT + Duration::from_millis(1)] {
            assert!(check_proxy_timeout("read_timeout", bad).unwrap_err().contains("read_timeout"));
        }
    }
}

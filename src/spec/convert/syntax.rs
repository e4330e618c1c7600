//! Compose short syntaxes, as pure string parsers: ports, volumes, env files, shell words.

use crate::spec::allow::describe_char;
use crate::spec::{Mount, MountKind, Port, Protocol, PublishMode};

pub(super) fn port_number(value: u64) -> Result<u16, String> {
    match u16::try_from(value) {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("port {value} is out of range (1-65535)")),
    }
}

pub(super) fn protocol(name: &str) -> Protocol {
    if name == "udp" {
        Protocol::Udp
    } else {
        Protocol::Tcp
    }
}

pub(super) const HOST_IP_UNSUPPORTED: &str =
    "Swarm cannot bind a published port to a host IP; remove the IP and use the long syntax with mode: host";

/// The longest port range expanded from the short syntax.
const MAX_PORT_RANGE: u32 = 1000;

/// Short port syntax: `"80"`, `"8080:80"`, `"8080:80/udp"`, `"8000-8001:9000-9001"`. Always
/// ingress mode (the short syntax cannot say otherwise).
pub(super) fn parse_port_short(spec: &str) -> Result<Vec<Port>, String> {
    let (ports, proto) = match spec.rsplit_once('/') {
        Some((ports, proto)) => (ports, proto),
        None => (spec, "tcp"),
    };
    if !matches!(proto, "tcp" | "udp") {
        return Err(format!("{spec:?}: unknown protocol {proto:?}; use tcp or udp"));
    }
    if ports.matches(':').count() > 1 || spec.starts_with('[') {
        return Err(format!("{spec:?}: {HOST_IP_UNSUPPORTED}"));
    }
    let (published, target) = match ports.split_once(':') {
        Some((published, target)) => (Some(port_range(spec, published)?), port_range(spec, target)?),
        None => (None, port_range(spec, ports)?),
    };
    let count = target.1 - target.0 + 1;
    if let Some(published) = published {
        if published.1 - published.0 + 1 != count {
            return Err(format!("{spec:?}: the published and target ranges have different lengths"));
        }
    }
    if count > MAX_PORT_RANGE {
        return Err(format!("{spec:?}: ranges are limited to {MAX_PORT_RANGE} ports"));
    }
    Ok((0..count)
        .map(|i| Port {
            target: (target.0 + i) as u16,
            published: published.map(|p| (p.0 + i) as u16),
            protocol: protocol(proto),
            mode: PublishMode::Ingress,
        })
        .collect())
}

/// `"80"` → (80, 80); `"8000-8010"` → (8000, 8010).
fn port_range(spec: &str, text: &str) -> Result<(u32, u32), String> {
    let one = |t: &str| -> Result<u32, String> {
        let n: u64 =
            t.trim().parse().map_err(|_| format!("{spec:?}: {t:?} is not a port number; write e.g. \"8080:80\""))?;
        port_number(n).map(u32::from).map_err(|e| format!("{spec:?}: {e}"))
    };
    match text.split_once('-') {
        Some((low, high)) => {
            let (low, high) = (one(low)?, one(high)?);
            if low > high {
                return Err(format!("{spec:?}: the range {low}-{high} is backwards"));
            }
            Ok((low, high))
        }
        None => one(text).map(|p| (p, p)),
    }
}

/// Short volume syntax: `name:/path[:ro]`, `/host:/path[:ro]`, `./rel:/path`, `/path`
/// (anonymous volume). Relative bind sources are resolved by the caller.
pub(super) fn parse_volume_short(spec: &str) -> Result<Mount, String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (source, target, options) = match parts.as_slice() {
        [target] => ("", *target, ""),
        [source, target] => (*source, *target, ""),
        [source, target, options] => (*source, *target, *options),
        _ => return Err(format!("{spec:?}: write SOURCE:TARGET[:ro], e.g. data:/var/lib/data or ./conf:/etc/app:ro")),
    };
    let mut read_only = false;
    for option in options.split(',').filter(|o| !o.is_empty()) {
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            other => return Err(format!("{spec:?}: unsupported volume option {other:?}; use ro or rw")),
        }
    }
    let is_path = source.starts_with(['/', '.', '~']);
    let kind = if is_path { MountKind::Bind } else { MountKind::Volume };
    Ok(Mount { kind, source: source.to_string(), target: target.to_string(), read_only })
}

/// Environment variable names: anything Docker accepts except `=` and NUL; no blanks.
pub(super) fn check_env_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("environment variable with an empty name; write KEY=VALUE".into());
    }
    // The name is not quoted: a line without '=' may well be a value (a password) instead.
    match key.chars().position(|c| c == '=' || c == '\0' || c.is_whitespace()) {
        Some(i) => Err(format!(
            "environment variable name contains {} at character {}; write KEY=VALUE",
            describe_char(key.chars().nth(i).unwrap_or_default()),
            i + 1
        )),
        None => Ok(()),
    }
}

/// A variable from an env file; no value means "take it from the environment".
type EnvEntry = (String, Option<String>);

/// `KEY=VALUE` lines; `#` comments and blank lines skipped; `export ` prefixes allowed;
/// matching quotes around a value removed; a bare `KEY` takes the value from the environment
/// (`None`). Errors carry the 1-based line number.
pub(in crate::spec) fn parse_env_file(text: &str) -> Result<Vec<EnvEntry>, (usize, String)> {
    let mut entries = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key.trim(), Some(unquote(value.trim()))),
            None => (line, None),
        };
        check_env_key(key).map_err(|e| (i + 1, e))?;
        entries.push((key.to_string(), value));
    }
    Ok(entries)
}

fn unquote(value: &str) -> String {
    for quote in ['"', '\''] {
        if value.len() >= 2 && value.starts_with(quote) && value.ends_with(quote) {
            return value[1..value.len() - 1].to_string();
        }
    }
    value.to_string()
}

/// Split a command line into words like a POSIX shell would, without expanding anything:
/// blanks separate words, quotes group, backslash escapes.
pub(super) fn split_shell(line: &str) -> Result<Vec<String>, String> {
    let unterminated = |what: &str| format!("{line:?}: unterminated {what}; close it or write the command as a list");
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(unterminated("single quote")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(unterminated("double quote")),
                        },
                        Some(c) => word.push(c),
                        None => return Err(unterminated("double quote")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => return Err(format!("{line:?} ends with a backslash")),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        let ok = |s: &str| split_shell(s).unwrap();
        assert_eq!(ok("echo hi"), ["echo", "hi"]);
        assert_eq!(ok("  sh -c 'echo $HOME; ls'  "), ["sh", "-c", "echo $HOME; ls"]);
        assert_eq!(ok(r#"say "a \"b\" c" d\ e"#), ["say", "a \"b\" c", "d e"]);
        assert_eq!(ok(r#"x "" ''"#), ["x", "", ""]);
        assert_eq!(ok(""), Vec::<String>::new());
        assert!(split_shell("echo 'oops").unwrap_err().contains("unterminated single quote"));
        assert!(split_shell("echo \"oops").unwrap_err().contains("unterminated double quote"));
        assert!(split_shell("echo \\").is_err());
    }

    #[test]
    fn short_ports() {
        let port = |target, published, protocol| Port { target, published, protocol, mode: PublishMode::Ingress };
        assert_eq!(parse_port_short("80"), Ok(vec![port(80, None, Protocol::Tcp)]));
        assert_eq!(parse_port_short("8080:80"), Ok(vec![port(80, Some(8080), Protocol::Tcp)]));
        assert_eq!(parse_port_short("53:53/udp"), Ok(vec![port(53, Some(53), Protocol::Udp)]));
        assert_eq!(
            parse_port_short("8000-8001:9000-9001"),
            Ok(vec![port(9000, Some(8000), Protocol::Tcp), port(9001, Some(8001), Protocol::Tcp)])
        );
        for (spec, needle) in [
            ("127.0.0.1:8080:80", "host IP"),
            ("[::1]:80:80", "host IP"),
            ("80/sctp", "protocol"),
            ("0", "out of range"),
            ("70000:80", "out of range"),
            ("http", "not a port number"),
            ("8000-8001:80", "different lengths"),
            ("9-8", "backwards"),
            ("1-2000", "limited"),
            ("", "not a port number"),
        ] {
            let err = parse_port_short(spec).unwrap_err();
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn short_volumes() {
        let v = parse_volume_short("data:/var/lib/data:ro").unwrap();
        assert_eq!(
            (v.kind, v.source.as_str(), v.target.as_str(), v.read_only),
            (MountKind::Volume, "data", "/var/lib/data", true)
        );
        let v = parse_volume_short("./conf:/etc/app").unwrap();
        assert_eq!((v.kind, v.read_only), (MountKind::Bind, false));
        let v = parse_volume_short("/cache").unwrap();
        assert_eq!((v.kind, v.source.as_str()), (MountKind::Volume, ""));
        assert!(parse_volume_short("a:/b:z").unwrap_err().contains("use ro or rw"));
        assert!(parse_volume_short("a:b:c:d").is_err());
    }

    #[test]
    fn env_files() {
        let entries = parse_env_file(
            "# comment\n\nA=1\nexport B = two words \nC=\"quoted # not a comment\"\nD='x'\nPASS\nE=a=b\n",
        )
        .unwrap();
        let want: Vec<(String, Option<String>)> = [
            ("A", Some("1")),
            ("B", Some("two words")),
            ("C", Some("quoted # not a comment")),
            ("D", Some("x")),
            ("PASS", None),
            ("E", Some("a=b")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.map(String::from)))
        .collect();
        assert_eq!(entries, want);
        assert_eq!(parse_env_file("A=1\n=2\n").unwrap_err().0, 2);
        assert_eq!(parse_env_file("BAD KEY=1").unwrap_err().0, 1);
    }
}

//! The hostile corpus (issue 13): crafted stack files run through the real binary with an
//! unreachable engine. Every one must be refused as a stack-file error (exit 2) with a located
//! message (`file:line:col`), within a time and a memory bound, never a panic (101) or a
//! signal, and without printing a secret or a terminal control character.
//!
//! The committed files are in `tests/hostile/` (each names the error it expects on its first
//! line); the large ones are generated here. Needs no engine: runs in plain `cargo test`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Most a stack file may take to be refused. A release build refuses each in under a second;
/// the bound leaves room for a loaded CI machine, and is far below what the worst files took
/// before (alias fan-out: more than 10 s and 2.5 GB for 25 KB; nested interpolation: 6.5 s,
/// then a stack overflow). A debug build (plain `cargo test`) is many times slower.
const TIME_BOUND: Duration = Duration::from_secs(if cfg!(debug_assertions) { 60 } else { 10 });
/// Most memory (peak resident set) the process may use, in KiB.
const MEMORY_BOUND_KIB: i64 = 256 * 1024;

/// Loopback port 9 (discard): nothing answers, nothing outside this machine is contacted.
const UNREACHABLE: &str = "tcp://127.0.0.1:9";

/// What the secret files hide; it must never be printed.
const SECRET: &str = "hunter2";

struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
    /// Peak resident set of the child, KiB (from wait4's rusage).
    max_rss_kib: i64,
}

/// Run the binary with `args`, measuring its time and peak memory; killed at twice the bound.
fn run(args: &[&str], dir: &Path) -> Run {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stackctl"))
        .args(args)
        .current_dir(dir)
        .env("DOCKER_HOST", UNREACHABLE)
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env_remove("U")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stackctl");
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let (status, usage) = loop {
        let mut status = 0;
        // SAFETY: plain wait4(2) on our own child, with out-pointers to locals.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let done = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        assert!(done >= 0, "wait4: {}", std::io::Error::last_os_error());
        if done == pid {
            break (status, usage);
        }
        if started.elapsed() > 2 * TIME_BOUND {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = started.elapsed();
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else {
        (None, libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)))
    };
    Run {
        code,
        signal,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took,
        max_rss_kib: usage.ru_maxrss,
    }
}

/// A case: a file (relative to `dir`) and text its error must contain.
struct Case {
    file: PathBuf,
    expect: String,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile")
}

/// The committed files: `# expect: TEXT` on the first line.
fn committed() -> Vec<Case> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text.lines().next().and_then(|l| l.strip_prefix("# expect: ")).unwrap_or_else(|| {
            panic!("{} must start with `# expect: TEXT`", path.display())
        });
        cases.push(Case { file: path.clone(), expect: expect.to_string() });
    }
    cases.sort_by(|a, b| a.file.cmp(&b.file));
    cases
}

const HEAD: &str = "name: hostile\nx-stackctl:\n  proxy: { service: proxy, url: \"http://127.0.0.1:8080\" }\nservices:\n  proxy:\n    image: nginx\n  web:\n    image: nginx\n";

/// One anchor of `k` items referenced `k` times: k² values from a file of size ~k.
fn alias_fan_out(k: usize) -> String {
    let items = vec!["x"; k].join(",");
    let refs = vec!["*a"; k].join(",");
    format!("{HEAD}x-a: &a [{items}]\nx-b: [{refs}]\n")
}

/// The files too large to commit, written to a scratch directory.
fn generated(dir: &Path) -> Vec<Case> {
    let mut files: Vec<(&str, Vec<u8>, &str)> = vec![
        // 25 KB: more than 10 s and 2.5 GB before.
        ("alias-fan-out-25k.yml", alias_fan_out(6_000).into_bytes(), "expansion limit"),
        // 100 KB: aborted the process (`memory allocation failed`) before.
        ("alias-fan-out-100k.yml", alias_fan_out(25_000).into_bytes(), "expansion limit"),
    ];
    // `${U:-${U:-…}}`, 300 KB: 6.5 s, then a stack overflow before.
    let depth = 50_000;
    let nested = format!("{HEAD}    environment:\n      A: \"{}x{}\"\n", "${U:-".repeat(depth), "}".repeat(depth));
    files.push(("nested-interpolation.yml", nested.into_bytes(), "nested more than"));
    let unterminated = format!("{HEAD}    environment:\n      A: \"{}x\"\n", "${U:-".repeat(depth));
    files.push(("nested-interpolation-unterminated.yml", unterminated.into_bytes(), "unterminated"));
    let flow = format!("{HEAD}x-deep: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    files.push(("deep-flow.yml", flow.into_bytes(), "levels deep"));
    let block: String = (0..200).map(|i| format!("{}k{i}:\n", "  ".repeat(i))).collect();
    files.push(("deep-block.yml", format!("{HEAD}x-deep:\n{}", block.replace('\n', "\n  ")).into_bytes(), "levels deep"));
    // Long keys nested deep, then many values below them: every path is long.
    let mut long = String::from(HEAD);
    long.push_str("x-long:\n");
    for level in 0..60 {
        long.push_str(&format!("{}{}{level}:\n", "  ".repeat(level + 1), "k".repeat(1000)));
    }
    for i in 0..5_000 {
        long.push_str(&format!("{}v{i}: 1\n", "  ".repeat(61)));
    }
    files.push(("long-paths.yml", long.into_bytes(), "expansion limit"));
    // Thousands of unknown names, each compared with many defined ones for a suggestion.
    let mut wide = String::from(HEAD);
    wide.push_str("    networks:\n");
    for i in 0..2_000 {
        wide.push_str(&format!("      - n{i:0>60}\n"));
    }
    wide.push_str("networks:\n");
    for i in 0..2_000 {
        wide.push_str(&format!("  m{i:0>60}: {{}}\n"));
    }
    files.push(("many-unknown-names.yml", wide.into_bytes(), "is not defined"));
    let mut huge = String::from(HEAD);
    while huge.len() <= stackctl::spec::MAX_FILE_BYTES {
        huge.push_str("# padding padding padding padding padding padding padding padding padding\n");
    }
    files.push(("too-large.yml", huge.into_bytes(), "larger than"));
    let mut binary = HEAD.as_bytes().to_vec();
    binary.extend_from_slice(b"    user: \"\xff\xfe\"\n");
    files.push(("not-utf8.yml", binary, "not UTF-8"));

    files
        .into_iter()
        .map(|(name, bytes, expect)| {
            let file = dir.join(name);
            std::fs::write(&file, bytes).unwrap();
            Case { file, expect: expect.to_string() }
        })
        .collect()
}

/// `path:LINE:COL` somewhere in `text`.
fn located(text: &str, path: &str) -> bool {
    text.match_indices(path).any(|(i, _)| {
        let rest = &text[i + path.len()..];
        let mut parts = rest.splitn(3, ':');
        let _ = parts.next();
        let line = parts.next().unwrap_or("");
        let column: String = parts.next().unwrap_or("").chars().take_while(char::is_ascii_digit).collect();
        rest.starts_with(':') && !line.is_empty() && line.chars().all(|c| c.is_ascii_digit()) && !column.is_empty()
    })
}

#[test]
fn hostile_stack_files_are_refused_within_bounds() {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hostile-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut cases = committed();
    assert!(cases.len() >= 15, "the committed corpus is missing: {}", cases.len());
    cases.extend(generated(&scratch));

    let mut failures = Vec::new();
    let mut worst: Option<(String, Duration, i64)> = None;
    let mut heaviest: Option<(String, Duration, i64)> = None;
    eprintln!("{:<42} {:>6} {:>9} {:>10}", "file", "exit", "time", "peak RSS");
    for case in &cases {
        let name = case.file.file_name().unwrap().to_string_lossy().into_owned();
        let path = case.file.to_string_lossy().into_owned();
        // JSON output: the error is printed on stderr and in the JSON document.
        let r = run(&["deploy", &path, "--output", "json"], case.file.parent().unwrap());
        eprintln!("{name:<42} {:>6} {:>8.0?} {:>7} KiB", r.code.map_or("signal".into(), |c| c.to_string()), r.took, r.max_rss_kib);
        let all = format!("{}\n{}", r.stderr, r.stdout);
        let mut problems = Vec::new();
        if r.code != Some(2) {
            problems.push(format!("exit {:?} (signal {:?}), wanted 2", r.code, r.signal));
        }
        if !located(&r.stderr, &path) {
            problems.push("the error is not located as FILE:LINE:COL".to_string());
        }
        if !r.stderr.contains(&case.expect) {
            problems.push(format!("the error does not say {:?}", case.expect));
        }
        if r.took > TIME_BOUND {
            problems.push(format!("took {:?} (bound {TIME_BOUND:?})", r.took));
        }
        if r.max_rss_kib > MEMORY_BOUND_KIB {
            problems.push(format!("peak memory {} KiB (bound {MEMORY_BOUND_KIB} KiB)", r.max_rss_kib));
        }
        if all.contains(SECRET) {
            problems.push("a secret value was printed".to_string());
        }
        if let Some(c) = r.stderr.chars().find(|&c| c.is_control() && c != '\n' || matches!(c, '\u{202a}'..='\u{202e}')) {
            problems.push(format!("stderr carries the control character U+{:04X}", u32::from(c)));
        }
        if all.lines().any(|l| l.trim_start().starts_with("FORGED")) {
            problems.push("the file forged a line of output".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!("{name}: {}\n--- stderr ---\n{}", problems.join("; "), r.stderr.chars().take(2000).collect::<String>()));
        }
        if worst.as_ref().is_none_or(|w| r.took > w.1) {
            worst = Some((name.clone(), r.took, r.max_rss_kib));
        }
        if heaviest.as_ref().is_none_or(|w| r.max_rss_kib > w.2) {
            heaviest = Some((name, r.took, r.max_rss_kib));
        }
    }
    for (what, (name, took, rss)) in [("slowest", worst.unwrap()), ("largest peak memory", heaviest.unwrap())] {
        eprintln!("hostile corpus, {what}: {name}: {took:?}, peak RSS {rss} KiB ({} files)", cases.len());
    }
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(failures.is_empty(), "{} of {} hostile files misbehaved:\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

/// `--timeout` and `--lock-wait` are checked before anything else, with checked arithmetic.
#[test]
fn huge_command_line_durations_are_usage_errors() {
    let file = corpus_dir().join("duplicate-key.yml");
    let file = file.to_string_lossy();
    for duration in ["18446744073709551615s1s", "18446744073709551615m", "307445734561825861h", "169h"] {
        for flag in ["--timeout", "--lock-wait"] {
            let r = run(&["deploy", &file, flag, duration], &corpus_dir());
            assert_eq!(r.code, Some(2), "{flag} {duration}: {:?} {}", r.signal, r.stderr);
            assert!(r.stderr.contains("too long"), "{flag} {duration}: {}", r.stderr);
        }
    }
}

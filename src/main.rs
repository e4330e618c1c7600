//! Thin binary: parse, run, map errors to exit codes (documented in `stackctl --help`).

use std::process::ExitCode;

use clap::Parser;

use stackctl::cli::{self, Cli, Command, StackArgs};
use stackctl::down;
use stackctl::history;
use stackctl::deploy::{self, DeployError};
use stackctl::dry_run;
use stackctl::engine::counting::Counting;
use stackctl::engine::docker::DockerEngine;
use stackctl::engine::retry::{Backoff, Retrying};
use stackctl::engine::Engine as _;
use stackctl::events::{Events, Format};
use stackctl::spec::{self, LoadOptions};
use stackctl::status;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = runtime.block_on(run(cli));
    write_calls();
    ExitCode::from(code as u8)
}

/// For benchmarks: `STACKCTL_ENGINE_CALLS=FILE` writes the Docker API calls the command made
/// to FILE (`total N`, then one `operation N` line each). Unset, nothing is written.
const CALLS_ENV: &str = "STACKCTL_ENGINE_CALLS";

/// The call counter of the command's engine (every clone of it shares the count).
static CALLS: std::sync::OnceLock<Counting<DockerEngine>> = std::sync::OnceLock::new();

fn write_calls() {
    let (Some(path), Some(counting)) = (std::env::var_os(CALLS_ENV), CALLS.get()) else { return };
    let calls = counting.calls();
    let mut text = format!("total {}\n", calls.total());
    for (op, n) in calls.by_op() {
        text.push_str(&format!("{op} {n}\n"));
    }
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("stackctl: cannot write {CALLS_ENV}={}: {e}", path.to_string_lossy());
    }
}

/// The one way a command reads its stack file: `--name`, `--image`, `--env` (the environment's
/// overlay and variables) and the process's variables applied; warnings go to `out`.
fn load(args: &StackArgs, images: std::collections::BTreeMap<String, String>, out: &Events) -> Result<spec::Stack, DeployError> {
    let opts = LoadOptions { name: args.name.clone(), image_overrides: images, env: std::env::vars().collect(), environment: args.env.clone() };
    let loaded = spec::load(&args.file, &opts)?;
    for w in &loaded.warnings {
        out.warn(&format!("{}: {}", w.location, w.message));
    }
    Ok(loaded.stack)
}

async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::History(args) => history(&args).await,
        Command::Down(args) => down(&args).await,
        Command::Gate(args) => gate(&args).await,
        Command::Promote(args) => promote(&args).await,
        Command::Maintenance(args) => maintenance(&args).await,
        Command::Reconcile(args) => reconcile(&args).await,
        Command::Deploy(args) => {
            let format = args.stack.output;
            let out = args.stack.events();
            let result = async {
                let stack = load(&args.stack, args.image_overrides(), &out)?;
                let (engine, mut opts) = connect(&args.stack, &stack, args.timeout, args.lock_wait).await?;
                if let Some(path) = &args.plan {
                    opts.saved = Some(read_plan(path)?);
                }
                deploy::deploy(&engine, &stack, &opts, &out).await
            }
            .await;
            report(format, result, out)
        }
        Command::Rollback(args) => {
            let format = args.stack.output;
            let out = args.stack.events();
            let result = async {
                let stack = load(&args.stack, Default::default(), &out)?;
                let (engine, opts) = connect(&args.stack, &stack, args.timeout, args.lock_wait).await?;
                deploy::rollback(&engine, &stack, &opts, args.to, args.service.clone(), &out).await
            }
            .await;
            report(format, result, out)
        }
        Command::Plan(args) => {
            let format = args.stack.output;
            let out = args.stack.events();
            let result = async {
                let stack = load(&args.stack, args.images.iter().cloned().collect(), &out)?;
                let engine = engine(&args.stack, &stack).await?;
                let report = dry_run::plan(&engine, &stack, &out).await?;
                if let Some(path) = &args.out {
                    let json = serde_json::to_string_pretty(&report).expect("plan serialises");
                    std::fs::write(path, json + "\n")
                        .map_err(|e| DeployError::Refused(format!("cannot write the plan to {}: {e}", path.display())))?;
                }
                Ok(report)
            }
            .await;
            out.end_phase();
            match result {
                Ok(report) => {
                    match format {
                        Format::Json => println!("{}", serde_json::to_string_pretty(&report).expect("plan serialises")),
                        Format::Text => print!("{}", report.to_text()),
                    }
                    if report.changes { dry_run::EXIT_CHANGES } else { 0 }
                }
                Err(e) => {
                    report_error(format, &e, &out);
                    e.exit_code()
                }
            }
        }
        Command::Status(args) => {
            let out = args.events();
            let result = async {
                let stack = load(&args, Default::default(), &out)?;
                let engine = engine(&args, &stack).await?;
                status::status(&engine, &stack).await.map_err(|e| DeployError::Refused(e.to_string()))
            }
            .await;
            print_result(args.output, result, &out, status::StatusReport::to_text)
        }
    }
}

/// Counted inside the retries, so a retried request counts as the request it is.
type Engine = Retrying<Counting<DockerEngine>>;

/// The engine, and the options of a deploy or rollback. SIGINT/SIGTERM stop it safely instead of
/// killing it (see stackctl::cancel).
async fn connect(args: &StackArgs, stack: &spec::Stack, timeout: Option<std::time::Duration>, lock_wait: std::time::Duration) -> Result<(Engine, deploy::Options), DeployError> {
    let engine = engine(args, stack).await?;
    let cancel = stackctl::cancel::Cancel::new();
    cancel.listen_for_signals().map_err(|e| DeployError::Refused(format!("cannot handle signals: {e}")))?;
    Ok((engine, deploy::Options { timeout, lock_wait, cancel, saved: None, origin: None }))
}

/// Print a deploy's or rollback's result; the exit code.
fn report(format: Format, result: Result<deploy::Report, DeployError>, out: Events) -> i32 {
    match result {
        Ok(report) => print_report(format, report, None, out),
        Err(e) => {
            out.end_phase();
            report_error(format, &e, &out);
            e.exit_code()
        }
    }
}

/// Print a deploy's, rollback's or promote's (with `origin`) result; the exit code.
fn print_report(format: Format, report: deploy::Report, origin: Option<&history::Origin>, out: Events) -> i32 {
    out.end_phase();
    match format {
        Format::Json => {
            let mut json = serde_json::to_value(&report).expect("report serialises");
            if let (Some(origin), Some(map)) = (origin, json.as_object_mut()) {
                map.insert("promoted_from".into(), serde_json::to_value(origin).expect("origin serialises"));
            }
            println!("{}", serde_json::to_string_pretty(&json).expect("report serialises"));
        }
        Format::Text => {
            if let Some(o) = origin {
                let releases: Vec<String> = o.releases.iter().map(|(s, n)| format!("{s} r{n}")).collect();
                let entry = o.gate_entry.map(|n| format!(", history entry {n}")).unwrap_or_default();
                println!("promoted from {} (stack {}: {}), gate {}{entry}", o.env, o.stack, releases.join(", "), o.gate.as_str());
            }
            for s in &report.switched {
                let from = s.from.map(|f| format!("r{f}")).unwrap_or_else(|| "nothing".into());
                println!("{}: {from} → r{} ({})", s.service, s.to, s.image);
                if let (Some(n), Some(f)) = (s.open_after_drain.filter(|n| *n > 0), s.from) {
                    println!("{}: {n} connection(s) still open to r{f} when its drain ended", s.service);
                }
            }
            for c in &report.changes {
                println!("{c}");
            }
            match report.outcome {
                deploy::Outcome::Unchanged if report.verb == "rollback" => println!("stack {} unchanged: nothing to roll back", report.stack),
                deploy::Outcome::Unchanged => println!("stack {} unchanged: nothing to deploy", report.stack),
                deploy::Outcome::Deployed if report.verb == "rollback" => println!("stack {} rolled back in {:.1}s", report.stack, report.total_seconds),
                deploy::Outcome::Deployed => println!("stack {} deployed in {:.1}s", report.stack, report.total_seconds),
            }
        }
    }
    0
}

/// The history command: the stack file only names the stack; everything else is read from
/// the engine, so any machine sees the same history.
async fn history(args: &cli::HistoryArgs) -> i32 {
    let format = args.stack.output;
    let out = args.stack.events();
    let result = async {
        let stack = load(&args.stack, Default::default(), &out)?;
        let engine = engine(&args.stack, &stack).await?;
        let (entries, unreadable) = history::read(&engine, &stack.name)
            .await
            .map_err(|e| DeployError::Refused(format!("cannot read the release history of stack {}: {e}", stack.name)))?;
        Ok::<_, DeployError>((stack.name, entries, unreadable))
    }
    .await;
    let (name, mut entries, unreadable) = match result {
        Ok(r) => r,
        Err(e) => {
            report_error(format, &e, &out);
            return e.exit_code();
        }
    };
    for u in &unreadable {
        out.warn(u);
    }
    if let Some(service) = &args.service {
        entries.retain(|e| e.touches(service));
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&entries).expect("history serialises")),
        Format::Text if entries.is_empty() => println!("stack {name} has no history{}", args.service.as_ref().map(|s| format!(" for service {s}")).unwrap_or_default()),
        Format::Text => print!("{}", history::table(&entries)),
    }
    0
}

/// The gate command: exit 0 passed, 1 held, 2 bad stack file or command line, 4 could not
/// check (see stackctl::gate).
async fn gate(args: &cli::GateArgs) -> i32 {
    let format = args.stack.output;
    let out = args.stack.events();
    let stack = match load(&args.stack, Default::default(), &out) {
        Ok(stack) => stack,
        Err(e) => {
            report_error(format, &e, &out);
            return e.exit_code();
        }
    };
    let result = match engine(&args.stack, &stack).await {
        Ok(engine) => stackctl::gate::gate(&engine, &stack, &stackctl::gate::Options { wait: args.wait }, &out).await,
        Err(e) => Err(stackctl::gate::GateError::Unchecked { stack: stack.name.clone(), reason: e.to_string() }),
    };
    out.end_phase();
    let (code, junit) = match &result {
        Ok(report) => {
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(report).expect("gate report serialises")),
                Format::Text => print!("{}", report.to_text()),
            }
            (report.exit_code, stackctl::gate::junit(&stack.name, &report.checks, report.seconds))
        }
        Err(e) => {
            let next = "nothing was judged; check that the engine is reachable and the stack is deployed (`stackctl status`), then run the gate again";
            eprintln!("error: {e}");
            eprintln!("next: {next}");
            if format == Format::Json {
                let json = serde_json::json!({ "error": e.to_string(), "next": next, "exit_code": stackctl::gate::EXIT_UNCHECKED });
                println!("{}", serde_json::to_string_pretty(&json).expect("error serialises"));
            }
            (stackctl::gate::EXIT_UNCHECKED, stackctl::gate::junit_unchecked(&stack.name, &e.to_string()))
        }
    };
    if let Some(path) = &args.junit {
        if let Err(e) = std::fs::write(path, junit) {
            eprintln!("error: cannot write the JUnit report to {}: {e}", path.display());
            return if code == 0 { stackctl::gate::EXIT_UNCHECKED } else { code };
        }
    }
    code
}

/// The promote command: the --from environment's gate (in-process, recorded there), then a
/// deploy of --to with --from's live digests as image overrides (see stackctl::promote).
async fn promote(args: &cli::PromoteArgs) -> i32 {
    use stackctl::gate::{self, Verdict};
    use stackctl::promote::EXIT_NOT_PASSED;
    let format = args.output;
    let out = Events::new(args.output, args.events == Format::Json);
    let fail = |e: DeployError, out: &Events| {
        report_error(format, &e, out);
        e.exit_code()
    };
    if args.from == args.to {
        eprintln!("error: --from and --to are both {}: promote moves a release between two environments", args.from);
        return 2;
    }
    let (from_args, to_args) = (args.side(&args.from), args.side(&args.to));
    // Both stack files are read and validated before anything is asked of an engine.
    let from = match load(&from_args, Default::default(), &out) {
        Ok(stack) => stack,
        Err(e) => return fail(e, &out),
    };
    if let Err(e) = load(&to_args, Default::default(), &out) {
        return fail(e, &out);
    }
    let from_engine = match engine(&from_args, &from).await {
        Ok(engine) => engine,
        Err(e) => return fail(e, &out),
    };
    out.info(&format!("gate of {} (stack {}) before promoting", args.from, from.name));
    let gated = match gate::gate(&from_engine, &from, &gate::Options { wait: args.wait }, &out).await {
        Ok(report) => report,
        Err(e) => {
            let (error, next) = (format!("{e}; nothing was promoted"), format!("check that the engine of {} is reachable and its stack deployed (`stackctl status --env {}`), then promote again", args.from, args.from));
            eprintln!("error: {error}");
            eprintln!("next: {next}");
            if format == Format::Json {
                let json = serde_json::json!({ "error": error, "next": next, "exit_code": gate::EXIT_UNCHECKED });
                println!("{}", serde_json::to_string_pretty(&json).expect("error serialises"));
            }
            return gate::EXIT_UNCHECKED;
        }
    };
    if gated.verdict != Verdict::Passed {
        out.end_phase();
        let held: Vec<String> = (gated.checks.iter().filter(|c| c.status != gate::Status::Pass))
            .map(|c| format!("{}: {}", c.name, c.reason.as_deref().unwrap_or(&c.figure)))
            .collect();
        let error = format!("the gate of {} (stack {}) did not pass ({}); nothing was promoted", args.from, from.name, held.join("; "));
        let next = format!("fix or wait for {}'s release (`stackctl gate {} --env {}`), then promote again", args.from, args.file.display(), args.from);
        eprintln!("error: {error}");
        eprintln!("next: {next}");
        match format {
            Format::Json => {
                let json = serde_json::json!({ "error": error, "next": next, "exit_code": EXIT_NOT_PASSED, "gate": gated });
                println!("{}", serde_json::to_string_pretty(&json).expect("error serialises"));
            }
            Format::Text => print!("{}", gated.to_text()),
        }
        return EXIT_NOT_PASSED;
    }
    let result = async {
        let infos = from_engine.services(&from.name).await.map_err(|e| DeployError::Refused(format!("cannot read the services of stack {}: {e}", from.name)))?;
        // Read again (warnings were shown the first time), now with --from's images.
        let to_plain = load(&to_args, Default::default(), &Events::silent())?;
        let images = stackctl::promote::live_images(&from, &gated.live, &infos, &to_plain)
            .map_err(|e| DeployError::Refused(format!("cannot promote from {} exactly: {e}; nothing was changed", args.from)))?;
        let to = load(&to_args, images, &Events::silent())?;
        let (to_engine, mut opts) = connect(&to_args, &to, args.timeout, args.lock_wait).await?;
        let origin = history::Origin {
            env: args.from.clone(),
            stack: from.name.clone(),
            releases: gated.live.clone(),
            gate: history::Outcome::Passed,
            gate_entry: gated.history_entry,
        };
        opts.origin = Some(origin.clone());
        deploy::deploy(&to_engine, &to, &opts, &out).await.map(|r| (r, origin))
    }
    .await;
    match result {
        Ok((report, origin)) => print_report(format, report, Some(&origin), out),
        Err(e) => report(format, Err(e), out),
    }
}

/// The maintenance command: exit 0 switched (or already so), 1 refused or failed, 2 usage or
/// stack-file error (see stackctl::maintenance).
async fn maintenance(args: &cli::MaintenanceArgs) -> i32 {
    let format = args.stack.output;
    let out = args.stack.events();
    let stack = match load(&args.stack, Default::default(), &out) {
        Ok(stack) => stack,
        Err(e) => {
            report_error(format, &e, &out);
            return e.exit_code();
        }
    };
    let services = match stackctl::maintenance::services(&stack, args.service.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("next: nothing was changed; name a routed service with --service, or leave it out for all");
            return 2;
        }
    };
    let on = args.state == cli::Switch::On;
    let result = async {
        let engine = engine(&args.stack, &stack).await?;
        stackctl::maintenance::maintenance(&engine, &stack, on, services, args.lock_wait, &out).await
    }
    .await;
    out.end_phase();
    print_result(format, result, &out, stackctl::maintenance::MaintenanceReport::to_text)
}

/// The reconcile command: each stack file (or every stack with `--all`) in turn; the exit code
/// is the worst stack's (see stackctl::reconcile). Stack-file errors are usage errors (2),
/// reported before any engine is asked.
async fn reconcile(args: &cli::ReconcileArgs) -> i32 {
    use stackctl::reconcile::{self, Report, Target};
    // Quiet is for cron, which mails whatever is printed: no progress either.
    let out = if args.quiet { Events::silent() } else { Events::new(args.output, args.events == Format::Json) };
    let mut targets = Vec::new();
    for file in &args.files {
        match load(&args.stack(file), Default::default(), &out) {
            Ok(stack) => targets.push(Target { stack: stack.name.clone(), file: Some(stack) }),
            Err(e) => {
                report_error(args.output, &e, &out);
                return e.exit_code();
            }
        }
    }
    let mut stacks = Vec::new();
    if args.all {
        let result = async {
            let engine = engine_of(args.context.as_deref(), None).await?;
            let names = reconcile::all_stacks(&engine).await.map_err(|e| DeployError::Refused(format!("cannot list the stacks stackctl manages: {e}")))?;
            Ok::<_, DeployError>((engine, names))
        }
        .await;
        let (engine, names) = match result {
            Ok(r) => r,
            Err(e) => {
                report_error(args.output, &e, &out);
                return reconcile::EXIT_ERROR;
            }
        };
        for stack in names {
            stacks.push(reconcile::reconcile(&engine, &Target { stack, file: None }, args.dry_run, &out).await);
        }
    } else {
        for target in &targets {
            let file = target.file.as_ref().expect("targets from files");
            match engine_of(args.context.as_deref(), file.environment.context.as_deref()).await {
                Ok(engine) => stacks.push(reconcile::reconcile(&engine, target, args.dry_run, &out).await),
                Err(e) => stacks.push(reconcile::StackReport {
                    stack: target.stack.clone(),
                    status: reconcile::Status::Error,
                    findings: Vec::new(),
                    pending: Vec::new(),
                    detail: Some(e.to_string()),
                    history_entry: None,
                    seconds: 0.0,
                }),
            }
        }
    }
    out.end_phase();
    let report = Report::new(stacks, args.dry_run);
    if !(args.quiet && report.exit_code == reconcile::EXIT_IN_SYNC) {
        match args.output {
            Format::Json => println!("{}", serde_json::to_string_pretty(&report).expect("report serialises")),
            Format::Text => print!("{}", report.to_text()),
        }
    }
    report.exit_code
}

/// Print a command's report (its text, or JSON) and exit 0, or its error and its exit code.
fn print_result<R: serde::Serialize>(format: Format, result: Result<R, DeployError>, out: &Events, text: impl Fn(&R) -> String) -> i32 {
    match result {
        Ok(report) => {
            match format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&report).expect("report serialises")),
                Format::Text => print!("{}", text(&report)),
            }
            0
        }
        Err(e) => {
            report_error(format, &e, out);
            e.exit_code()
        }
    }
}

/// Exit code of `down` when it would have to ask but cannot (stdin is not a terminal).
const EXIT_NEEDS_YES: i32 = 2;

/// The down command: survey, confirm (unless `--yes`), then remove under the stack's lock.
async fn down(args: &cli::DownArgs) -> i32 {
    let format = args.stack.output;
    let out = args.stack.events();
    let found = async {
        let stack = load(&args.stack, Default::default(), &out)?;
        let engine = engine(&args.stack, &stack).await?;
        let found = down::survey(&engine, &stack.name).await.map_err(|e| DeployError::Refused(e.to_string()))?;
        Ok::<_, DeployError>((engine, found))
    }
    .await;
    let (engine, found) = match found {
        Ok(f) => f,
        Err(e) => {
            report_error(format, &e, &out);
            return e.exit_code();
        }
    };
    let result = if found.is_empty() {
        // Already gone: nothing to ask, nothing to lock.
        Ok(down::DownReport { stack: found.stack.clone(), kept_volumes: found.volumes.clone(), ..Default::default() })
    } else {
        match confirm(args.yes, &found) {
            Ok(()) => down::down(&engine, &found.stack, args.lock_wait, &out).await,
            Err(code) => return code,
        }
    };
    out.end_phase();
    print_result(format, result, &out, down::DownReport::to_text)
}

/// Go ahead with `--yes`; otherwise ask on a terminal (y/N). The exit code when not to.
fn confirm(yes: bool, found: &down::Found) -> Result<(), i32> {
    use std::io::{BufRead, IsTerminal, Write};
    if let Err(e) = down::refuse_if_locked(found) {
        eprintln!("error: {e}");
        eprintln!("next: {}", e.next_step());
        return Err(e.exit_code());
    }
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        eprintln!("error: `stackctl down` removes stack {} and stdin is not a terminal to ask on", found.stack);
        eprintln!("next: nothing was changed; run it again with --yes to remove:\n{}", found.summary());
        return Err(EXIT_NEEDS_YES);
    }
    eprint!("stackctl down will remove stack {}:\n{}Remove it? [y/N] ", found.stack, found.summary());
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => {
            eprintln!("not removed; nothing was changed");
            Err(1)
        }
    }
}

/// The engine of the stack's environment (see stackctl::context for the order of the sources).
async fn engine(args: &StackArgs, stack: &spec::Stack) -> Result<Engine, DeployError> {
    engine_of(args.context.as_deref(), stack.environment.context.as_deref()).await
}

/// The engine `--context` names, else the environment's, else the stack file's context.
async fn engine_of(context: Option<&str>, file_context: Option<&str>) -> Result<Engine, DeployError> {
    let target = stackctl::context::resolve(context, |name| std::env::var(name).ok(), file_context).map_err(DeployError::Refused)?;
    let connected = match &target.host {
        Some(host) => DockerEngine::connect_to(host).await,
        None => DockerEngine::connect().await,
    };
    let engine = Counting::new(connected.map_err(|e| DeployError::Refused(e.to_string()))?);
    let _ = CALLS.set(engine.clone());
    Ok(Retrying::new(engine, Backoff::default()))
}

/// A plan saved by `stackctl plan --out`.
fn read_plan(path: &std::path::Path) -> Result<dry_run::SavedPlan, DeployError> {
    let bad = |e: &dyn std::fmt::Display| DeployError::Refused(format!("cannot read the saved plan {}: {e}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| bad(&e))?;
    serde_json::from_str(&text).map_err(|e| bad(&e))
}

fn report_error(format: Format, e: &DeployError, out: &Events) {
    eprintln!("error: {e}");
    eprintln!("next: {}", e.next_step());
    if format == Format::Json {
        let json = serde_json::json!({
            "error": e.to_string(),
            "next": e.next_step(),
            "exit_code": e.exit_code(),
            "phases": out.phases(),
            "warnings": out.warnings(),
        });
        println!("{}", serde_json::to_string_pretty(&json).expect("error serialises"));
    }
}

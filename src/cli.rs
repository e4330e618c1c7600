//! Command-line arguments → requests. No Docker calls here; `--help` and `--version` leave
//! before anything touches the environment.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::events::Format;

const EXAMPLES: &str = "\
Examples:
  stackctl deploy stacks/demo.yml
  stackctl deploy stacks/demo.yml --image web=127.0.0.1:5000/stackctl-demo:v2
  stackctl deploy stacks/demo.yml --timeout 2m --lock-wait 5m --output json
  stackctl status stacks/demo.yml
  stackctl plan stacks/demo.yml --image web=127.0.0.1:5000/stackctl-demo:v2
  stackctl plan stacks/demo.yml --out plan.json && stackctl deploy stacks/demo.yml --plan plan.json
  stackctl rollback stacks/demo.yml              # back to the release before the live one
  stackctl gate stacks/demo.yml --env staging --wait 10m --junit gate.xml
  stackctl rollback stacks/demo.yml --to r3 --service web
  stackctl promote stacks/shop.yml --from staging --to production
  stackctl history stacks/demo.yml --service web
  stackctl down stacks/demo.yml --yes            # remove the stack; named volumes are kept
  stackctl maintenance on stacks/demo.yml --service web   # users get 503 + Retry-After
  stackctl maintenance off stacks/demo.yml
  stackctl deploy stacks/shop.yml --env staging  # shop.yml with shop.staging.yml over it
  stackctl status stacks/shop.yml --env production --context prod
  stackctl reconcile --all --quiet               # cron: put back drift, mail only when any
  stackctl reconcile stacks/demo.yml --dry-run --output json

Exit codes:
  0  success (including \"nothing to do\"); plan: the deploy would change nothing
  1  the deploy (or rollback) was refused or failed; the live release is intact
     (status, history: the engine could not be read)
  2  usage or stack-file error; nothing was changed
     (down: stdin is not a terminal and --yes was not given)
  3  the deploy failed and the live release needs attention (see the message)
  4  gate, promote: the gate could not check (engine or nginx unreachable); nothing changed
  5  promote: the --from environment's gate held the release; nothing changed
  6  reconcile: drift found and repaired (--dry-run: found, would be repaired)
  7  reconcile: drift that needs a person (a changed proxy or stateful service, ...)
  10 plan: the deploy would change something (nothing was changed)

Environment:
  DOCKER_HOST, DOCKER_TLS_VERIFY, DOCKER_CERT_PATH   which engine (a Swarm manager) to use
  DOCKER_CONTEXT, DOCKER_CONFIG                      a Docker context to use (after --context, DOCKER_HOST)
  any variable                                       interpolated into the stack file (${VAR:-default})";

#[derive(Debug, Parser)]
#[command(name = "stackctl", version, about = "Blue-green releases of Docker Swarm stacks behind nginx", after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy a stack: new release beside the live one, health-gated, switched in nginx.
    #[command(after_help = EXAMPLES)]
    Deploy(DeployArgs),
    /// Show the live release, retained releases, task health and nginx routing.
    Status(StackArgs),
    /// Send users back to an earlier release (default: the one before the live one), gated and
    /// switched like a deploy.
    Rollback(RollbackArgs),
    /// Show what past deploys did, newest first, from the history kept in the cluster.
    #[command(after_help = EXAMPLES)]
    History(HistoryArgs),
    /// Show what `deploy` would do and the nginx config diff, changing nothing (exit 10: changes pending).
    #[command(after_help = EXAMPLES)]
    Plan(PlanArgs),
    /// Remove the stack: every release, plain, stateful and nginx service, its configs,
    /// secrets, networks and records. Named volumes are kept (and listed).
    #[command(after_help = EXAMPLES)]
    Down(DownArgs),
    /// Decide whether the live release may move on (CI): its tasks, smoke checks, soak time
    /// and what its users got from nginx. Exit 0 passed, 1 held (failed or inconclusive),
    /// 2 usage or stack-file error, 4 could not check.
    #[command(after_help = EXAMPLES)]
    Gate(GateArgs),
    /// Deploy to the --to environment exactly the image digests live in the --from one, with
    /// --to's own configuration, once --from's gate passes. Exit 5: the gate held the release
    /// (nothing changed); 4: the gate could not check; else as deploy.
    #[command(after_help = EXAMPLES)]
    Promote(PromoteArgs),
    /// Serve users of routed services a 503 with Retry-After (and the stack's page) instead of
    /// the release (`on`), or send them back to it (`off`); no nginx reload. Exit 0 done (also
    /// when already so), 1 refused or failed, 2 usage or stack-file error.
    #[command(after_help = EXAMPLES)]
    Maintenance(MaintenanceArgs),
    /// Put back what drifted from the last recorded release (cron): services changed or
    /// scaled by hand, nginx's config and routing, leftovers of an interrupted deploy, a stale
    /// lock. A stack file that differs from the record is reported, never applied. Exit 0 in
    /// sync (or busy, skipped), 6 repaired, 7 drift that needs a person, 1 error, 2 usage.
    #[command(after_help = EXAMPLES)]
    Reconcile(ReconcileArgs),
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Stack files naming the stacks (what should run is still what was last deployed).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub files: Vec<PathBuf>,
    /// Every stack stackctl manages on the engine (found by the label of its record).
    #[arg(long)]
    pub all: bool,
    /// Show what would be repaired; change nothing and take no lock.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress, and nothing at all when every stack is in sync (what cron wants: mail only
    /// on drift or an error).
    #[arg(long, short)]
    pub quiet: bool,
    /// Environment of the stack files (as `deploy --env`).
    #[arg(long = "env", value_name = "NAME", value_parser = parse_environment)]
    pub env: Option<String>,
    /// Docker context whose engine to use (`docker context ls`).
    #[arg(long, value_name = "NAME", value_parser = parse_context)]
    pub context: Option<String>,
    /// Result format on stdout; progress always goes to stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Format,
    /// Progress on stderr: text or json (one JSON object per event and line).
    #[arg(long, value_enum, default_value = "text")]
    pub events: Format,
}

impl ReconcileArgs {
    /// The stack arguments of one of the files.
    pub fn stack(&self, file: &std::path::Path) -> StackArgs {
        StackArgs { file: file.to_path_buf(), name: None, env: self.env.clone(), context: self.context.clone(), output: self.output, events: self.events }
    }
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct MaintenanceArgs {
    /// on: users get 503; off: they reach the live release again.
    #[arg(value_enum)]
    pub state: Switch,
    #[command(flatten)]
    pub stack: StackArgs,
    /// Only this routed service (default: every routed service of the stack).
    #[arg(long, value_name = "SERVICE")]
    pub service: Option<String>,
    /// Wait this long for a deploy of the same stack to finish (default: don't wait).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub lock_wait: Duration,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// The stack file (its overlays `<stem>.FROM.yml` and `<stem>.TO.yml` beside it).
    pub file: PathBuf,
    /// The environment whose live release is promoted (its gate must pass).
    #[arg(long, value_name = "NAME", value_parser = parse_environment)]
    pub from: String,
    /// The environment deployed to, with its own overlay, variables and engine.
    #[arg(long, value_name = "NAME", value_parser = parse_environment)]
    pub to: String,
    /// Keep running --from's gate (every 5s) until it passes or this much time has gone by.
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Give up waiting for the new release to become healthy after this long.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Wait this long for another deploy of the --to stack to finish (default: don't wait).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub lock_wait: Duration,
    /// Result format on stdout; progress always goes to stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Format,
    /// Progress on stderr: text or json (one JSON object per event and line).
    #[arg(long, value_enum, default_value = "text")]
    pub events: Format,
}

impl PromoteArgs {
    /// The stack arguments of one side (`env`): the same file, that environment.
    pub fn side(&self, env: &str) -> StackArgs {
        StackArgs { file: self.file.clone(), name: None, env: Some(env.to_string()), context: None, output: self.output, events: self.events }
    }
}

#[derive(Debug, Args)]
pub struct GateArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Keep checking (every 5s) until the gate passes or this much time has gone by.
    #[arg(long, value_parser = parse_duration)]
    pub wait: Option<Duration>,
    /// Also write the checks as a JUnit XML report to FILE (one test case per check).
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DownArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Do not ask. Required when stdin is not a terminal (else exit 2, nothing changed).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Wait this long for a deploy of the same stack to finish (default: don't wait).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub lock_wait: Duration,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Only entries that switched this service (a failed attempt names no service and is kept).
    #[arg(long, value_name = "SERVICE")]
    pub service: Option<String>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// The release to go back to (`3` or `r3`): each service returns to its newest release not
    /// newer than it, i.e. the stack as it was at that release. Default: per service, the
    /// release before the live one.
    #[arg(long, value_parser = parse_release)]
    pub to: Option<u64>,
    /// Roll back only this routed service.
    #[arg(long)]
    pub service: Option<String>,
    /// Give up waiting for the earlier release to become healthy after this long.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Wait this long for a deploy of the same stack to finish (default: don't wait).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub lock_wait: Duration,
}

/// `3` or `r3`.
pub fn parse_release(s: &str) -> Result<u64, String> {
    s.strip_prefix('r').unwrap_or(s).parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| format!("expected a release number such as 3 or r3, got {s:?}"))
}

#[derive(Debug, Args)]
pub struct StackArgs {
    /// The stack file (Compose format with an x-stackctl block).
    pub file: PathBuf,
    /// Stack name, overriding the file's top-level `name:` (and the environment's).
    #[arg(long)]
    pub name: Option<String>,
    /// Environment: merge the overlay `<stem>.NAME.yml` beside FILE over it (Compose's merge
    /// rules) and read `${VARIABLES}` also from `<stem>.NAME.env` there, if it exists.
    #[arg(long = "env", value_name = "NAME", value_parser = parse_environment)]
    pub env: Option<String>,
    /// Docker context whose engine to use (`docker context ls`); before DOCKER_HOST,
    /// DOCKER_CONTEXT and the file's `x-stackctl.context`.
    #[arg(long, value_name = "NAME", value_parser = parse_context)]
    pub context: Option<String>,
    /// Result format on stdout; progress always goes to stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Format,
    /// Progress on stderr: text (a spinner on a terminal, timestamped lines elsewhere) or
    /// json (one JSON object per event and line, for tools following a deploy).
    #[arg(long, value_enum, default_value = "text")]
    pub events: Format,
}

impl StackArgs {
    /// Where this command's progress goes.
    pub fn events(&self) -> crate::events::Events {
        crate::events::Events::new(self.output, self.events == Format::Json)
    }
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Override a service's image: SERVICE=REF (repeatable).
    #[arg(long = "image", value_name = "SERVICE=REF", value_parser = parse_image)]
    pub images: Vec<(String, String)>,
    /// Give up waiting for the new release to become healthy after this long (e.g. 90s, 2m).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Wait this long for another deploy of the same stack to finish (default: don't wait).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub lock_wait: Duration,
    /// Carry out a plan saved by `stackctl plan --out`: its pinned images, and only if the
    /// cluster and the stack file are still what it saw (else exit 1, nothing changed).
    #[arg(long, value_name = "PLAN_FILE")]
    pub plan: Option<PathBuf>,
}

impl DeployArgs {
    pub fn image_overrides(&self) -> BTreeMap<String, String> {
        self.images.iter().cloned().collect()
    }
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Override a service's image: SERVICE=REF (repeatable), as `deploy --image`.
    #[arg(long = "image", value_name = "SERVICE=REF", value_parser = parse_image)]
    pub images: Vec<(String, String)>,
    /// Also save the plan (JSON, with a fingerprint of what it observed) for `deploy --plan`.
    #[arg(long, value_name = "PLAN_FILE")]
    pub out: Option<PathBuf>,
}

fn parse_environment(s: &str) -> Result<String, String> {
    crate::spec::check_environment_name(s).map(|()| s.to_string())
}

fn parse_context(s: &str) -> Result<String, String> {
    crate::spec::check_context_name(s).map(|()| s.to_string())
}

fn parse_image(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((svc, image)) if !svc.is_empty() && !image.is_empty() => Ok((svc.to_string(), image.to_string())),
        _ => Err(format!("expected SERVICE=REF, got {s:?}")),
    }
}

/// Longest `--timeout` or `--lock-wait`: a week. Anything longer is a typo, and the deploy
/// adds it to the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// `90s`, `2m`, `1m30s`, `500ms`, `1h`; at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}: use a number with a unit, e.g. 500ms, 90s, 2m, 1m30s");
    let too_long = || format!("duration {s:?} is too long; the limit is {}h", MAX_DURATION.as_secs() / 3600);
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let millis_per_unit: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        let millis = n.checked_mul(millis_per_unit).ok_or_else(too_long)?;
        total = total.checked_add(Duration::from_millis(millis)).filter(|t| *t <= MAX_DURATION).ok_or_else(too_long)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "10", "s", "1x", "1.5s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("168h"), Ok(MAX_DURATION));
        // Each of these overflowed or panicked once.
        for huge in ["18446744073709551615s1s", "18446744073709551615m", "99999999999999999999h", "307445734561825861h", "169h", "168h1ms"] {
            assert!(parse_duration(huge).unwrap_err().contains("too long"), "{huge}");
        }
    }

    #[test]
    fn rollback_targets() {
        assert_eq!(parse_release("3"), Ok(3));
        assert_eq!(parse_release("r12"), Ok(12));
        for bad in ["", "r", "0", "r-1", "x3", "3r"] {
            assert!(parse_release(bad).is_err(), "{bad}");
        }
        let cli = Cli::try_parse_from(["stackctl", "rollback", "s.yml", "--to", "r2", "--service", "web"]).unwrap();
        let Command::Rollback(r) = cli.command else { panic!("not a rollback") };
        assert_eq!((r.to, r.service.as_deref()), (Some(2), Some("web")));
    }

    #[test]
    fn image_overrides() {
        assert_eq!(parse_image("web=reg:5000/x:v2"), Ok(("web".into(), "reg:5000/x:v2".into())));
        assert!(parse_image("web").is_err());
        assert!(parse_image("=x").is_err());
    }

    #[test]
    fn cli_parses_a_deploy() {
        let cli = Cli::try_parse_from(["stackctl", "deploy", "s.yml", "--image", "web=a:1", "--timeout", "2m", "--output", "json"]).unwrap();
        let Command::Deploy(d) = cli.command else { panic!("not a deploy") };
        assert_eq!(d.stack.file, PathBuf::from("s.yml"));
        assert_eq!(d.timeout, Some(Duration::from_secs(120)));
        assert_eq!(d.stack.output, Format::Json);
        assert_eq!(d.image_overrides().get("web").map(String::as_str), Some("a:1"));
    }

    #[test]
    fn cli_parses_history() {
        let cli = Cli::try_parse_from(["stackctl", "history", "s.yml", "--service", "web", "--name", "prod", "--output", "json"]).unwrap();
        let Command::History(h) = cli.command else { panic!("not history") };
        assert_eq!((h.service.as_deref(), h.stack.name.as_deref(), h.stack.output), (Some("web"), Some("prod"), Format::Json));
    }

    #[test]
    fn cli_parses_reconcile_of_files_or_all_never_both_nor_neither() {
        let cli = Cli::try_parse_from(["stackctl", "reconcile", "a.yml", "b.yml", "--dry-run", "-q", "--output", "json"]).unwrap();
        let Command::Reconcile(r) = cli.command else { panic!("not reconcile") };
        assert_eq!((r.files.len(), r.all, r.dry_run, r.quiet, r.output), (2, false, true, true, Format::Json));
        let Command::Reconcile(r) = Cli::try_parse_from(["stackctl", "reconcile", "--all"]).unwrap().command else { panic!("not reconcile") };
        assert!(r.all && r.files.is_empty());
        assert!(Cli::try_parse_from(["stackctl", "reconcile"]).is_err());
        assert!(Cli::try_parse_from(["stackctl", "reconcile", "--all", "a.yml"]).is_err());
    }

    #[test]
    fn cli_parses_down() {
        let cli = Cli::try_parse_from(["stackctl", "down", "s.yml", "--yes", "--name", "x", "--output", "json"]).unwrap();
        let Command::Down(d) = cli.command else { panic!("not down") };
        assert_eq!((d.yes, d.stack.name.as_deref(), d.stack.output, d.lock_wait), (true, Some("x"), Format::Json, Duration::ZERO));
        let Command::Down(d) = Cli::try_parse_from(["stackctl", "down", "s.yml"]).unwrap().command else { panic!("not down") };
        assert!(!d.yes);
    }

    #[test]
    fn every_command_taking_a_file_takes_env_and_context() {
        for command in ["deploy", "status", "plan", "rollback", "history", "down", "gate", "maintenance"] {
            let args: &[&str] = if command == "maintenance" { &["stackctl", command, "on", "s.yml"] } else { &["stackctl", command, "s.yml"] };
            let cli = Cli::try_parse_from(args.iter().copied().chain(["--env", "staging", "--context", "stage-1"])).unwrap();
            let stack = match cli.command {
                Command::Deploy(a) => a.stack,
                Command::Status(a) => a,
                Command::Plan(a) => a.stack,
                Command::Rollback(a) => a.stack,
                Command::History(a) => a.stack,
                Command::Down(a) => a.stack,
                Command::Gate(a) => a.stack,
                Command::Maintenance(a) => a.stack,
                Command::Promote(_) | Command::Reconcile(_) => unreachable!("not in the list"),
            };
            assert_eq!((stack.env.as_deref(), stack.context.as_deref()), (Some("staging"), Some("stage-1")), "{command}");
        }
        for bad in ["../prod", "Prod", "a.b", ""] {
            assert!(Cli::try_parse_from(["stackctl", "deploy", "s.yml", "--env", bad]).is_err(), "{bad}");
        }
        assert!(Cli::try_parse_from(["stackctl", "deploy", "s.yml", "--context", "../x"]).is_err());
    }

    #[test]
    fn cli_parses_a_gate() {
        let cli = Cli::try_parse_from(["stackctl", "gate", "s.yml", "--env", "staging", "--wait", "2m", "--junit", "g.xml", "--output", "json"]).unwrap();
        let Command::Gate(g) = cli.command else { panic!("not a gate") };
        assert_eq!((g.wait, g.junit, g.stack.output), (Some(Duration::from_secs(120)), Some(PathBuf::from("g.xml")), Format::Json));
        assert!(Cli::try_parse_from(["stackctl", "gate", "s.yml", "--wait", "soon"]).is_err());
    }

    #[test]
    fn cli_parses_a_promote() {
        let cli = Cli::try_parse_from(["stackctl", "promote", "s.yml", "--from", "staging", "--to", "production", "--wait", "1m", "--output", "json"]).unwrap();
        let Command::Promote(p) = cli.command else { panic!("not a promote") };
        assert_eq!((p.from.as_str(), p.to.as_str(), p.wait), ("staging", "production", Some(Duration::from_secs(60))));
        let side = p.side("production");
        assert_eq!((side.file, side.env.as_deref(), side.output), (PathBuf::from("s.yml"), Some("production"), Format::Json));
        assert!(Cli::try_parse_from(["stackctl", "promote", "s.yml", "--from", "staging"]).is_err(), "--to is required");
        assert!(Cli::try_parse_from(["stackctl", "promote", "s.yml", "--from", "../x", "--to", "production"]).is_err());
    }

    #[test]
    fn cli_parses_maintenance() {
        let cli = Cli::try_parse_from(["stackctl", "maintenance", "on", "s.yml", "--service", "web", "--env", "prod", "--lock-wait", "30s"]).unwrap();
        let Command::Maintenance(m) = cli.command else { panic!("not maintenance") };
        assert_eq!((m.state, m.service.as_deref(), m.stack.env.as_deref(), m.lock_wait), (Switch::On, Some("web"), Some("prod"), Duration::from_secs(30)));
        let Command::Maintenance(m) = Cli::try_parse_from(["stackctl", "maintenance", "off", "s.yml"]).unwrap().command else { panic!() };
        assert_eq!((m.state, m.service), (Switch::Off, None));
        for bad in [&["stackctl", "maintenance", "s.yml"][..], &["stackctl", "maintenance", "maybe", "s.yml"], &["stackctl", "maintenance", "on"]] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cli_parses_a_plan() {
        let cli = Cli::try_parse_from(["stackctl", "plan", "s.yml", "--name", "x", "--image", "web=a:2", "--output", "json"]).unwrap();
        let Command::Plan(p) = cli.command else { panic!("not a plan") };
        assert_eq!((p.stack.name.as_deref(), p.stack.output), (Some("x"), Format::Json));
        assert_eq!(p.images, vec![("web".to_string(), "a:2".to_string())]);
    }
}

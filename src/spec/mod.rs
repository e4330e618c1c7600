//! Reading a Compose stack file into a validated [`Stack`].
//!
//! The pipeline, in order (file names are submodules of `src/spec/`):
//!
//! 1. parse the text with serde_yaml (syntax errors carry serde_yaml's position) and index the
//!    positions of every key and list item with yaml-rust2 (`locate.rs`), since serde_yaml
//!    forgets them; both within the bounds of `bounded.rs` (file size, nesting, a budget that
//!    alias expansion and long paths spend), since the file is untrusted input;
//! 2. apply YAML merge keys, `<<: *defaults` (`tree.rs`);
//! 3. screen keys: drop `x-*` extensions, warn about keys Swarm ignores, refuse keys whose
//!    loss would change how a container runs (`raw.rs`, which documents the key lists);
//! 4. interpolate `${VARIABLES}` in string values (`interpolate.rs`);
//! 5. deserialise into the raw Compose structs (`raw.rs`); unknown keys are refused with a
//!    did-you-mean;
//! 6. convert to the model, validating everything that reaches nginx or Swarm against
//!    allowlists (`convert.rs` and `convert/`; `allow.rs` for what reaches nginx, shared with
//!    the renderer; `validate.rs` for the rest; `units.rs`).
//!
//! With `--env NAME`, steps 1 to 4 run on the base file and on the environment's overlay
//! (`<stem>.NAME.yml` beside it) each, with the variables of `<stem>.NAME.env` too; the overlay
//! is then merged over the base by Compose's rules (`overlay.rs`), and steps 5 and 6 run once
//! on the merged tree, locating each error in the file its value was written in.
//!
//! Every error and warning is located: file, line, column and dotted field path. Steps 1, 2
//! and 5 stop at their first error; steps 3, 4 and 6 report all errors at once.

pub mod allow;
mod bounded;
mod convert;
pub use convert::{DEFAULT_HISTORY, DEFAULT_KEEP};
mod interpolate;
mod locate;
mod model;
mod overlay;
mod raw;
mod tree;
mod units;
mod validate;

#[cfg(test)]
pub(crate) mod tests;

pub use model::*;
/// The escaping of stack-file text for terminals.
pub use validate::{body_regex, printable};
/// The names `--context` and `--env` take.
pub use validate::{check_context_name, check_environment_name};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use locate::Locator;

/// What the command line adds to the file.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--name`: overrides the top-level `name:`.
    pub name: Option<String>,
    /// `--image SERVICE=REF`: replaces a service's `image:`; the service must exist.
    pub image_overrides: BTreeMap<String, String>,
    /// Variables for interpolation (the caller passes `std::env::vars()`); also the source of
    /// `environment:` entries written as a bare `KEY`.
    pub env: BTreeMap<String, String>,
    /// `--env NAME`: merge the overlay `<stem>.NAME.yml` (beside the file) over the file, and
    /// read variables from `<stem>.NAME.env` there if it exists (`env` wins over them).
    pub environment: Option<String>,
}

/// A loaded stack and what the user should know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub stack: Stack,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The message says what is wrong and what to do about it. It may quote the file, so it
    /// is printed with control characters escaped.
    #[error("{location}: {}", validate::printable(.message))]
    Invalid { location: Location, message: String },
    /// Several problems found in one pass, ordered by position.
    #[error("{}", ManyDisplay(.0))]
    Many(Vec<SpecError>),
}

struct ManyDisplay<'a>(&'a [SpecError]);

impl fmt::Display for ManyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.0.iter().find_map(|e| e.locations().first().map(|l| l.file.display().to_string()));
        write!(f, "{} errors in {}:", self.0.len(), file.unwrap_or_else(|| "the stack file".into()))?;
        for error in self.0 {
            write!(f, "\n{error}")?;
        }
        Ok(())
    }
}

impl SpecError {
    /// Every location the error points at (none for a read error).
    pub fn locations(&self) -> Vec<&Location> {
        match self {
            SpecError::Read { .. } => Vec::new(),
            SpecError::Invalid { location, .. } => vec![location],
            SpecError::Many(errors) => errors.iter().flat_map(SpecError::locations).collect(),
        }
    }
}

pub use bounded::MAX_FILE_BYTES;

/// Read and validate the stack file at `path`, merged with the overlay of
/// `opts.environment` when one is named.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Loaded, SpecError> {
    let text = read_text(path)?;
    let Some(environment) = &opts.environment else { return load_str(path, &text, opts) };
    let env_error = |message: String| SpecError::Invalid {
        location: Location { file: path.to_path_buf(), line: 1, column: 1, field: String::new() },
        message,
    };
    validate::check_environment_name(environment).map_err(|e| env_error(format!("--env: {e}")))?;
    let overlay = beside(path, environment, "yml");
    let overlay_text = match read_text(&overlay) {
        Err(SpecError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(env_error(format!(
                "environment {environment} has no overlay file: {} does not exist; create it (it may be empty: {{}}) or check --env",
                overlay.display()
            )));
        }
        other => other?,
    };
    let mut opts = opts.clone();
    let variables = beside(path, environment, "env");
    for (key, value) in read_env_file(&variables, &opts.env)? {
        opts.env.entry(key).or_insert(value);
    }
    load_layers(&[(path, &text), (&overlay, &overlay_text)], &opts)
}

/// `<dir>/<stem>.<environment>.<ext>` for the stack file `<dir>/<stem>.yml`.
fn beside(path: &Path, environment: &str, ext: &str) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!("{stem}.{environment}.{ext}"))
}

/// The variables of an environment's env file (none when it does not exist); a bare `KEY`
/// line adds nothing, since `env` is consulted first anyway.
fn read_env_file(path: &Path, env: &BTreeMap<String, String>) -> Result<Vec<(String, String)>, SpecError> {
    let text = match read_text(path) {
        Err(SpecError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        other => other?,
    };
    let entries = convert::parse_env_file(&text).map_err(|(line, message)| SpecError::Invalid {
        location: Location { file: path.to_path_buf(), line, column: 1, field: String::new() },
        message,
    })?;
    Ok(entries.into_iter().filter_map(|(k, v)| Some((k.clone(), v.or_else(|| env.get(&k).cloned())?))).collect())
}

/// A file's text, at most [`MAX_FILE_BYTES`], UTF-8.
fn read_text(path: &Path) -> Result<String, SpecError> {
    use std::io::Read;
    let read_error = |source| SpecError::Read { path: path.to_path_buf(), source };
    // Read one byte past the limit rather than trusting the size the file claims.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_large(path));
    }
    String::from_utf8(bytes).map_err(|e| not_utf8(path, &e))
}

fn too_large(path: &Path) -> SpecError {
    let location = Location { file: path.to_path_buf(), line: 1, column: 1, field: String::new() };
    let message = format!("the stack file is larger than {MAX_FILE_BYTES} bytes, the limit; stack files are a few kilobytes");
    SpecError::Invalid { location, message }
}

/// Located at the first byte that is not UTF-8.
fn not_utf8(path: &Path, e: &std::string::FromUtf8Error) -> SpecError {
    let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
    let valid = std::str::from_utf8(valid).unwrap_or_default();
    let line = valid.matches('\n').count() + 1;
    let column = valid.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    let location = Location { file: path.to_path_buf(), line, column, field: String::new() };
    SpecError::Invalid { location, message: "the stack file is not UTF-8 text".into() }
}

/// Validate stack file `text`; `source` is its path, used in messages and to resolve relative
/// paths (`env_file`, `file:`, bind mounts).
pub fn load_str(source: &Path, text: &str, opts: &LoadOptions) -> Result<Loaded, SpecError> {
    load_layers(&[(source, text)], opts)
}

/// One file, parsed, merge keys applied, screened and interpolated: what Compose does to each
/// file before merging them. The warnings go to `warnings`.
fn read_layer(source: &Path, text: &str, opts: &LoadOptions, warnings: &mut Vec<Warning>) -> Result<(Locator, serde_yaml::Value), SpecError> {
    if text.len() > MAX_FILE_BYTES {
        return Err(too_large(source));
    }
    let locator = Locator::new(source, text);
    let mut doc = parse_yaml(text, &locator)?;
    tree::apply_merge(&mut doc, "").map_err(|(field, message)| locator.error(&field, message))?;
    let mut diag = Diag::new(&locator);
    raw::screen(&mut doc, &mut diag);
    interpolate::interpolate_tree(&mut doc, "", &opts.env, &mut diag);
    diag.check()?;
    warnings.append(&mut diag.warnings);
    Ok((locator, doc))
}

/// The base file, or the base file and an environment's overlay: each read on its own, then
/// merged (`overlay.rs`), then validated as one stack whose errors name the file they are in.
fn load_layers(files: &[(&Path, &str)], opts: &LoadOptions) -> Result<Loaded, SpecError> {
    let mut warnings = Vec::new();
    let (locator, doc) = match files {
        [(source, text)] => read_layer(source, text, opts, &mut warnings)?,
        [(base, base_text), (overlay, overlay_text)] => {
            let (base_locator, base_doc) = read_layer(base, base_text, opts, &mut warnings)?;
            let (overlay_locator, overlay_doc) = read_layer(overlay, overlay_text, opts, &mut warnings)?;
            let (doc, origins) = overlay::merge(base_doc, overlay_doc);
            (Locator::layered(base_locator, overlay_locator, origins), doc)
        }
        _ => unreachable!("a stack is a base file and at most one overlay"),
    };
    let raw = raw::deserialize(doc, &locator)?;
    let mut diag = Diag::new(&locator);
    diag.warnings = warnings;
    let stack = convert::build(raw, opts, &mut diag);
    let warnings = diag.finish()?;
    // `build` returns no stack only after reporting an error, so this is a safety net.
    let stack = stack.ok_or_else(|| locator.error("", "the stack file is invalid"))?;
    renders(&stack).map_err(|e| locator.error("x-stackctl.proxy", format!("the nginx config cannot be rendered: {e}")))?;
    Ok(Loaded { stack, warnings })
}

/// The renderer checks everything it writes again; render once here, so that anything it
/// would refuse is refused before the cluster is touched.
fn renders(stack: &Stack) -> Result<(), crate::proxy::RenderError> {
    crate::proxy::render(stack, &"0".repeat(32)).map(|_| ())
}

/// Parse the text into a YAML tree whose root is a mapping.
fn parse_yaml(text: &str, locator: &Locator) -> Result<serde_yaml::Value, SpecError> {
    if let Some((line, column)) = locator.index().too_deep() {
        let message = format!("invalid YAML: nested more than {} levels deep", locate::MAX_DEPTH);
        return Err(SpecError::Invalid { location: locator.at_position(line, column), message });
    }
    if let Some((line, column)) = locator.index().too_big() {
        return Err(SpecError::Invalid { location: locator.at_position(line, column), message: bounded::over_budget_message(text.len()) });
    }
    let doc: serde_yaml::Value = bounded::from_str(text).map_err(|e| {
        if e.to_string().contains(bounded::OVER_BUDGET) {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            return SpecError::Invalid { location: locator.at_position(line, column), message: bounded::over_budget_message(text.len()) };
        }
        // serde_yaml places a duplicate key at the start of its mapping; the index knows the
        // duplicate itself.
        let duplicate = locator.index().duplicate().filter(|_| e.to_string().contains("duplicate entry"));
        let location = match (duplicate, e.location()) {
            (Some((field, (line, column))), _) => {
                Location { field: field.to_string(), ..locator.at_position(line, column) }
            }
            (None, Some(l)) => locator.at_position(l.line(), l.column()),
            (None, None) => locator.at_position(1, 1),
        };
        SpecError::Invalid { location, message: format!("invalid YAML: {}", strip_position(&e.to_string())) }
    })?;
    if !doc.is_mapping() {
        let what = if doc.is_null() { "empty" } else { "not a mapping" };
        return Err(locator.error("", format!("the stack file is {what}; it needs at least name: and services:")));
    }
    Ok(doc)
}

/// serde_yaml puts " at line L column C" in its messages; the location says it already.
fn strip_position(message: &str) -> String {
    let Some(start) = message.find(" at line ") else { return message.to_string() };
    let rest = &message[start + " at line ".len()..];
    let Some(column) = rest.find(" column ") else { return message.to_string() };
    let after = &rest[column + " column ".len()..];
    let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
    format!("{}{}", &message[..start], &after[digits..])
}

/// Collects located errors and warnings while a pass continues past the first problem.
pub(crate) struct Diag<'a> {
    locator: &'a Locator,
    errors: Vec<SpecError>,
    warnings: Vec<Warning>,
}

impl<'a> Diag<'a> {
    fn new(locator: &'a Locator) -> Self {
        Diag { locator, errors: Vec::new(), warnings: Vec::new() }
    }

    pub(crate) fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(self.locator.error(field, message));
    }

    pub(crate) fn warn(&mut self, field: &str, message: impl Into<String>) {
        let message = validate::printable(&message.into()).into_owned();
        self.warnings.push(Warning { location: self.locator.at(field), message });
    }

    pub(crate) fn locator(&self) -> &Locator {
        self.locator
    }

    /// Fail if any error was reported so far.
    fn check(&mut self) -> Result<(), SpecError> {
        let mut errors = std::mem::take(&mut self.errors);
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => {
                let position = |e: &SpecError| e.locations().first().map(|l| (l.line, l.column));
                errors.sort_by_key(position);
                Err(SpecError::Many(errors))
            }
        }
    }

    /// The warnings, or the errors if there were any.
    fn finish(mut self) -> Result<Vec<Warning>, SpecError> {
        self.check()?;
        let base = self.locator.file().to_path_buf();
        self.warnings.sort_by_key(|w| (w.location.file != base, w.location.line, w.location.column));
        Ok(self.warnings)
    }
}

/// The routed services of a stack (nginx sends users to them).
pub fn routed(stack: &Stack) -> impl Iterator<Item = (&String, &Service)> {
    stack.services.iter().filter(|(_, s)| matches!(s.role, Role::Routed(_)))
}

/// The route of `service`, when nginx routes to it.
pub fn route_of<'s>(stack: &'s Stack, service: &str) -> Option<&'s Route> {
    match &stack.services.get(service)?.role {
        Role::Routed(r) => Some(r),
        _ => None,
    }
}

/// The network nginx uses to reach a routed service: the first one they share.
pub fn route_network(stack: &Stack, service: &str) -> Result<String, String> {
    let svc = stack.services.get(service).ok_or_else(|| format!("no service {service}"))?;
    let proxy = stack
        .services
        .get(&stack.x.proxy.service)
        .ok_or_else(|| format!("the proxy service {} is not in the stack file", stack.x.proxy.service))?;
    svc.networks
        .iter()
        .find(|n| proxy.networks.iter().any(|p| p.name == n.name))
        .and_then(|n| stack.networks.get(&n.name))
        .map(|n| n.real_name.clone())
        .ok_or_else(|| {
            format!(
                "service {service} and the proxy {} share no network, so nginx cannot reach it; put both on the same network",
                stack.x.proxy.service
            )
        })
}

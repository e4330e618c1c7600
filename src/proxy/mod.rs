//! nginx: render the routing config, install it into the running nginx tasks, reload.
//!
//! Rendering is pure ([`render`]); installing goes through the [`Proxy`] trait, whose nginx
//! implementation ([`nginx::NginxProxy`]) writes the file into each nginx container through the
//! Docker API, runs `nginx -t` everywhere first and reloads only when every replica accepted it.
//!
//! Everything that reaches the config was validated by `spec` already; [`render`] checks again
//! against the same allowlist ([`crate::spec::allow`]) because a config injection is the one
//! bug we cannot afford.

pub mod nginx;

use std::collections::BTreeMap;
use std::future::Future;

use askama::Template;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::release::{self, Color};
use crate::spec::{allow, Route, RouteSettings, Stack};

/// One release of a routed service, as nginx should reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Release number; 0 when nothing is live yet.
    pub release: u64,
    /// `ip:port` of every task running when the routing was read. nginx itself resolves the
    /// colour's DNS name per request; these addresses are what the health gate and the switch
    /// verification accept as "answered by this release", and what `status` shows.
    pub servers: Vec<String>,
}

/// Where one routed service's users go, and what is being previewed: the input of the
/// verifications, not of the config (which names colours, never releases).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRouting {
    pub service: String,
    pub route: Route,
    /// The release users reach.
    pub live: Target,
    /// A release reachable only with the preview header (the green under test).
    pub preview: Option<Target>,
}

/// What a rendered config says about itself in its header, read back by `observe` and
/// `status`: per routed service, the file whose existence sends its users to the green colour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingSummary {
    pub green_files: BTreeMap<String, String>,
    /// Per routed service, the file whose existence puts it in maintenance (503 to users).
    /// Empty in configs rendered before maintenance existed: those cannot be switched.
    #[serde(default)]
    pub maintenance_files: BTreeMap<String, String>,
}

impl RoutingSummary {
    /// The summary a config rendered for the routes of `stack` carries.
    pub fn of(stack: &Stack) -> RoutingSummary {
        RoutingSummary {
            green_files: crate::spec::routed(stack).map(|(n, _)| (n.clone(), green_file(n))).collect(),
            maintenance_files: crate::spec::routed(stack).map(|(n, _)| (n.clone(), maintenance_file(n))).collect(),
        }
    }

    /// The routed services in maintenance, given which of the files exist.
    pub fn in_maintenance(&self, present: &std::collections::BTreeSet<String>) -> std::collections::BTreeSet<String> {
        self.maintenance_files.iter().filter(|(_, file)| present.contains(*file)).map(|(service, _)| service.clone()).collect()
    }

    /// The colour users of each routed service reach, given which of the files exist.
    pub fn colours(&self, present: &std::collections::BTreeSet<String>) -> BTreeMap<String, Color> {
        (self.green_files.iter())
            .map(|(service, file)| (service.clone(), if present.contains(file) { Color::Green } else { Color::Blue }))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("refusing to render {what} {value:?} into the nginx config: {why}")]
    Unsafe { what: &'static str, value: String, why: String },
    #[error("rendering the nginx config: {0}")]
    Template(#[from] askama::Error),
}

#[derive(Template)]
#[template(path = "stackctl.conf", escape = "none")]
struct ConfigTemplate<'a> {
    stack: &'a str,
    routing_json: String,
    token: &'a str,
    /// Identifies the rendered text; nginx echoes it to stackctl's requests, which is how a
    /// run learns whether the config it would write is the one nginx has loaded.
    hash: String,
    listen: u16,
    echo_var: String,
    loaded_var: String,
    /// 1 for stackctl's own requests, for the access log.
    own_var: String,
    /// The name of this stack's access log format (formats are global to nginx's http block).
    log_format: String,
    /// The `Connection` header sent to releases: `upgrade` for a WebSocket handshake, none
    /// otherwise (per stack, as nginx variables are global to the http block).
    upgrade_var: String,
    /// `Retry-After` of the maintenance answer, in seconds.
    retry_after: u64,
    routes: Vec<RouteView>,
    servers: Vec<ServerView>,
}

struct RouteView {
    /// The preview map's variable.
    var: String,
    blue: String,
    green: String,
}

struct LocationView {
    matcher: String,
    /// nginx variable naming the upstream; `None` renders a 404 (catch-all of a host).
    var: Option<String>,
    /// The route's own settings (nginx's defaults for a 404 location).
    settings: SettingsView,
    /// The route's maintenance switch: (variable, URI of its page); `None` for a 404 location.
    maintenance: Option<(String, String)>,
}

/// A route's settings as nginx writes them: sizes in bytes, timeouts in milliseconds.
struct SettingsView {
    client_max_body_size: Option<u64>,
    read_timeout_ms: Option<u128>,
    send_timeout_ms: Option<u128>,
    buffering: bool,
    headers: Vec<(String, String)>,
}

impl SettingsView {
    /// Re-checked against the allowlist: the header names and values go into the config as
    /// written, and the numbers must be what the loader bounded.
    fn of(s: &RouteSettings) -> Result<SettingsView, RenderError> {
        allow::check_route_settings(s).map_err(|why| unsafe_value("route setting", &format!("{s:?}"), &why))?;
        Ok(SettingsView::unchecked(s))
    }

    fn unchecked(s: &RouteSettings) -> SettingsView {
        SettingsView {
            client_max_body_size: s.client_max_body_size,
            read_timeout_ms: s.read_timeout.map(|t| t.as_millis()),
            send_timeout_ms: s.send_timeout.map(|t| t.as_millis()),
            buffering: s.buffering,
            headers: s.headers.clone(),
        }
    }
}

struct ServerView {
    names: String,
    default: bool,
    /// The routes this server uses, each resolved to its target variable once per request.
    targets: Vec<TargetView>,
    locations: Vec<LocationView>,
}

/// One routed service's per-request choice of backend in a server.
#[derive(Clone)]
struct TargetView {
    /// The per-request variable the locations proxy to.
    var: String,
    /// The preview map's variable: set only for stackctl's preview requests.
    preview: String,
    blue: String,
    green: String,
    /// Full path of the file whose existence sends users to `green`.
    green_file: String,
    /// 1 while the service is in maintenance, for users' requests (never stackctl's own).
    maint_var: String,
    /// Full path of the file whose existence puts the service in maintenance.
    maint_file: String,
    /// The internal URI nginx answers a request in maintenance with, and the page it serves.
    maint_uri: String,
    maint_page: String,
}

/// The file (in the proxy's config directory) whose existence sends the users of `service` to
/// its green colour; without it they go to blue. Creating or removing it is the switch.
pub fn green_file(service: &str) -> String {
    format!("live-green-{service}")
}

/// The file (in the proxy's config directory) whose existence puts `service` in maintenance:
/// users get a 503 with `Retry-After` and the [`maintenance_page`], stackctl's own requests
/// (health gate, switch verification) still reach the release.
pub fn maintenance_file(service: &str) -> String {
    format!("maintenance-{service}")
}

/// The page (in the proxy's config directory) served while `service` is in maintenance;
/// `stackctl maintenance on` writes it before it creates the [`maintenance_file`].
pub fn maintenance_page(service: &str) -> String {
    format!("maintenance-{service}.html")
}

/// An nginx variable name for `kind` of thing, unique to (stack, service). nginx variables are
/// global to the whole http block (every stack's file shares them), and names built by gluing
/// words collided: a service `echo` took the echo map, `web` + `_target` was `web-target`.
/// Here the kind comes first, and the stack name is preceded by its length, so two different
/// (kind, stack, service) never give one name: kinds have no `_`, and names have no `_` of
/// their own (their `-` become `_`).
fn nginx_var(kind: &str, stack: &str, service: Option<&str>) -> String {
    let mut name = format!("stackctl_{kind}_{}_{}", stack.len(), stack.replace('-', "_"));
    if let Some(service) = service {
        name.push('_');
        name.push_str(&service.replace('-', "_"));
    }
    name
}

/// Render the nginx config for the routes of `stack`. It names colours, never releases, so it
/// stays the same from one deploy to the next until the routes themselves change. `token` is a
/// secret that gates the preview and verification headers, so outsiders cannot reach a release
/// that is not live yet; it is kept from one config to the next (see [`token_in`]).
pub fn render(stack: &Stack, token: &str) -> Result<String, RenderError> {
    let routes: Vec<(String, Route)> = (crate::spec::routed(stack))
        .filter_map(|(n, s)| match &s.role {
            crate::spec::Role::Routed(r) => Some((n.clone(), r.clone())),
            _ => None,
        })
        .collect();
    render_routes(stack, &routes, token)
}

/// [`render`] for the given `(service, route)` pairs of `stack`.
pub fn render_routes(stack: &Stack, routed: &[(String, Route)], token: &str) -> Result<String, RenderError> {
    check_name("stack name", &stack.name, allow::check_stack_name)?;
    check_token(token)?;
    let mut routes = Vec::new();
    // Servers keyed by host name; "" is the default server (routes without hosts).
    let mut servers: BTreeMap<String, Vec<LocationView>> = BTreeMap::new();
    let mut targets: BTreeMap<String, TargetView> = BTreeMap::new();
    let mut summary = RoutingSummary { green_files: BTreeMap::new(), maintenance_files: BTreeMap::new() };
    let retry_after = stack.x.maintenance.retry_after;
    allow::check_retry_after(retry_after).map_err(|why| unsafe_value("retry_after", &format!("{retry_after:?}"), &why))?;

    for (service, route) in routed {
        check_name("service name", service, allow::check_service_name)?;
        let backend = |colour| format!("{}:{}", release::colour_alias(&stack.name, service, colour), route.port);
        let (blue, green) = (backend(Color::Blue), backend(Color::Green));
        let preview = nginx_var("route", &stack.name, Some(service));
        let var = nginx_var("target", &stack.name, Some(service));
        let file = green_file(service);
        let green_path = format!("{}/{file}", stack.x.proxy.config_dir);
        check_path(&green_path)?;
        summary.green_files.insert(service.clone(), file);
        let config_dir = &stack.x.proxy.config_dir;
        let maint_file = format!("{config_dir}/{}", maintenance_file(service));
        let maint_page = format!("{config_dir}/{}", maintenance_page(service));
        let maint_uri = format!("/.stackctl-maintenance/{}/{service}", stack.name);
        for p in [&maint_file, &maint_page, &maint_uri] {
            check_path(p)?;
        }
        summary.maintenance_files.insert(service.clone(), maintenance_file(service));
        routes.push(RouteView { var: preview.clone(), blue: blue.clone(), green: green.clone() });
        let maint_var = nginx_var("maint", &stack.name, Some(service));
        let target = TargetView { var: var.clone(), preview, blue, green, green_file: green_path, maint_var, maint_file, maint_uri, maint_page };
        targets.insert(var.clone(), target);

        check_path(&route.path)?;
        for h in &route.hosts {
            check_host(h)?;
        }
        // One server block per host name: nginx allows a name in one server only, and two
        // routes may share a host with different paths.
        let hosts: Vec<String> = if route.hosts.is_empty() { vec![String::new()] } else { route.hosts.clone() };
        let matchers = match route.path.trim_end_matches('/') {
            "" => vec!["/".to_string()],
            p => vec![format!("= {p}"), format!("{p}/")],
        };
        for host in hosts {
            let locations = servers.entry(host).or_default();
            for matcher in &matchers {
                let settings = SettingsView::of(&route.settings)?;
                let t = &targets[&var];
                let maintenance = Some((t.maint_var.clone(), t.maint_uri.clone()));
                locations.push(LocationView { matcher: matcher.clone(), var: Some(var.clone()), settings, maintenance });
            }
        }
    }
    // A server whose routes don't cover `/` answers 404 there instead of falling through to
    // nginx's static root; without any host-less route, a catch-all default server does.
    servers.entry(String::new()).or_default();
    let servers = servers
        .into_iter()
        .map(|(names, mut locations)| {
            if !locations.iter().any(|l| l.matcher == "/") {
                locations.push(LocationView { matcher: "/".into(), var: None, settings: SettingsView::unchecked(&RouteSettings::default()), maintenance: None });
            }
            locations.sort_by(|a, b| a.matcher.cmp(&b.matcher));
            let default = names.is_empty();
            let mut vars: Vec<String> = locations.iter().filter_map(|l| l.var.clone()).collect();
            vars.sort();
            vars.dedup();
            let used = vars.iter().filter_map(|v| targets.get(v).cloned()).collect();
            ServerView { names: if default { "_".into() } else { names }, default, targets: used, locations }
        })
        .collect();

    let mut template = ConfigTemplate {
        stack: &stack.name,
        routing_json: serde_json::to_string(&summary).expect("routing summary serialises"),
        token,
        hash: String::new(),
        listen: stack.x.proxy.listen,
        echo_var: nginx_var("echo", &stack.name, None),
        loaded_var: nginx_var("loaded", &stack.name, None),
        upgrade_var: nginx_var("upgrade", &stack.name, None),
        own_var: nginx_var("own", &stack.name, None),
        retry_after: retry_after.as_secs(),
        log_format: log_format_name(&stack.name),
        routes,
        servers,
    };
    // The hash of the text rendered without it: equal texts, equal hashes.
    template.hash = content_hash(&template.render()?);
    Ok(template.render()?)
}

/// The access log format of `stack`'s servers (see [`crate::accesslog`]).
pub fn log_format_name(stack: &str) -> String {
    nginx_var("log", stack, None)
}

/// The hash a rendered config carries and echoes (see [`render`]), 16 hex digits.
fn content_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The hash a rendered config echoes once nginx has loaded it: compare with the
/// `X-Stackctl-Config` header of an answer to a request carrying its token.
pub fn hash_in(config: &str) -> Option<String> {
    let mut lines = config.lines().skip_while(|l| !l.starts_with("map $http_x_stackctl_verify $stackctl_loaded_"));
    let line = lines.nth(2)?;
    let hash = line.trim().rsplit('"').nth(1)?;
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hash.to_string())
}

/// Whether `config` is a rendered config as stackctl wrote it: the hash it carries is the hash
/// of its own text (rendered with an empty hash, see [`render`]), so a file edited by hand, cut
/// short or written by something else is told apart without knowing what was deployed.
pub fn is_intact(config: &str) -> bool {
    hash_in(config).is_some_and(|hash| content_hash(&config.replace(&hash, "")) == hash)
}

/// The token a rendered config was rendered with (the value its verification map answers), so
/// that the next config keeps it and stays the same text. Only someone who can read the config
/// in nginx learns it.
pub fn token_in(config: &str) -> Option<String> {
    let mut lines = config.lines().skip_while(|l| !l.starts_with("map $http_x_stackctl_verify "));
    let line = lines.find(|l| l.trim_end().ends_with("$upstream_addr;"))?;
    let token = line.trim().strip_prefix('"')?.split('"').next()?;
    check_token(token).ok().map(|()| token.to_string())
}

/// Read back what a rendered config routes (its `# stackctl-routing:` header line).
pub fn parse_summary(config: &str) -> Option<RoutingSummary> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("# stackctl-routing: "))
        .and_then(|json| serde_json::from_str(json).ok())
}

fn unsafe_value(what: &'static str, value: &str, why: &str) -> RenderError {
    RenderError::Unsafe { what, value: value.to_string(), why: why.to_string() }
}

/// Stack and service names, by the stack file's allowlist ([`allow`]): they become nginx
/// variable names and Swarm DNS names in `proxy_pass`.
fn check_name(what: &'static str, v: &str, check: fn(&str) -> Result<(), String>) -> Result<(), RenderError> {
    check(v).map_err(|why| unsafe_value(what, v, &why))
}

fn check_token(v: &str) -> Result<(), RenderError> {
    let ok = v.len() >= 16 && v.bytes().all(|b| b.is_ascii_hexdigit());
    if ok { Ok(()) } else { Err(unsafe_value("token", v, "expected at least 16 hex digits")) }
}

/// Host names, by the allowlist the stack file passed ([`allow::check_host`]).
pub fn check_host(v: &str) -> Result<(), RenderError> {
    allow::check_host(v).map_err(|why| unsafe_value("host", v, &why))
}

/// URL paths (and the switch files' paths), by the stack file's allowlist
/// ([`allow::check_path`]).
pub fn check_path(v: &str) -> Result<(), RenderError> {
    allow::check_path("path", v).map_err(|why| unsafe_value("path", v, &why))
}

/// A name the route's `server_name` matches, for the `Host` of stackctl's own probes: the
/// first host, with a wildcard's `*` replaced by a label (nginx matches `*.example.com` to
/// `x.example.com`, never to `example.com`, which another server may answer). `None` for a
/// route without hosts (the default server answers any `Host`).
pub fn probe_host(route: &Route) -> Option<String> {
    let host = route.hosts.first()?;
    Some(match host.strip_prefix("*.") {
        Some(domain) => format!("stackctl-probe.{domain}"),
        None => host.clone(),
    })
}

/// Installs a rendered config on every proxy replica, all or nothing.
pub trait Proxy: Send + Sync {
    /// Test the config everywhere, then reload everywhere. On a failed test nothing is
    /// reloaded and the previous file is put back.
    fn install(&self, config: &str) -> impl Future<Output = Result<Installed, ProxyError>> + Send;
    /// Create (`on`) or delete the given files in the config directory of every replica.
    /// Creating or removing a [`green_file`] is the switch itself: no reload, so every nginx
    /// worker routes the next request to the other colour. A failure to create them turns them
    /// all off again.
    fn flip(&self, files: &[String], on: bool) -> impl Future<Output = Result<(), ProxyError>> + Send;
    /// The config currently installed (from the first running replica).
    fn current(&self) -> impl Future<Output = Result<Option<String>, ProxyError>> + Send;
    /// Which of the given files exist in the config directory of at least one replica: a
    /// switch file on any replica means some users are already on the new release.
    fn present(&self, files: &[String]) -> impl Future<Output = Result<std::collections::BTreeSet<String>, ProxyError>> + Send;
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Containers that were reloaded.
    pub replicas: Vec<String>,
    /// True when the file was already identical everywhere (it is reloaded all the same).
    pub unchanged: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the proxy service {0} has no running task; is nginx up? (`docker service ps {0}`)")]
    NoReplica(String),
    #[error("nginx rejected the new config in {container} (nothing was reloaded; the previous config is back in place):\n{output}")]
    Rejected { container: String, output: String },
    #[error("nginx failed to reload in {container}: {output}")]
    ReloadFailed { container: String, output: String },
    #[error("could not change the switch file in nginx's container {container}: {output}")]
    SwitchFile { container: String, output: String },
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

#[cfg(test)]
mod tests;

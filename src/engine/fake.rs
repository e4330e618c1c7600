//! An in-memory Swarm with an nginx in front, for table tests of the executor.
//!
//! [`FakeEngine`] keeps services, tasks, configs, secrets and networks in one shared state, and
//! plays the nginx containers of the proxy service: the files the deploy writes into them, the
//! config each one loaded at its last `nginx -s reload`, and (through [`FakeEngine::serve_nginx`])
//! an HTTP listener on 127.0.0.1 that answers the deploy's probes as that loaded config routes
//! them. Images decide how a release behaves, by their name:
//! - `broken`: every task fails at once (a crash loop);
//! - `starting`: tasks never pass their health check (they stay `starting`);
//! - anything else: tasks run, and the app answers 200 unless [`FakeEngine::set_app_status`]
//!   says otherwise.
//!
//! [`Fault`]s make the Nth call of an operation fail, hang, or send the deploy a signal, so a
//! test can stop a deploy at any step and look at what it left behind. The real-engine tests in
//! tests/ stay the authority on Docker's behaviour; this fake only has to be faithful to what
//! the deploy reads back.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use bollard::models::ServiceSpec;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

use super::{ConfigInfo, Engine, EngineError, ExecOutput, Labelled, NetworkRequest, ObjectType, Result, ServiceInfo, StoredConfig, TaskInfo};
use crate::cancel::Cancel;

/// An operation a [`Fault`] can be attached to. The subject a fault may narrow it to is given
/// per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Subject: the image reference.
    ResolveImage,
    /// Subject: the service name.
    CreateService,
    /// Subject: the service name.
    UpdateService,
    /// Subject: the service name.
    RemoveService,
    /// Listing tasks; subject: the service name.
    Tasks,
    /// Subject: the config name (record and history writes are configs too).
    CreateConfig,
    /// Subject: the config name.
    UpdateConfigLabels,
    /// Reading a config by name; subject: the config name.
    ReadConfig,
    /// A write to a stack record (created or relabelled) that changes a live release; subject:
    /// the record's name.
    RecordLive,
    /// `nginx -t`; subject: the container.
    NginxTest,
    /// `nginx -s reload`; subject: the container.
    NginxReload,
    /// One upload; subject: its file names (`live.conf`, `live-green-…`), space separated.
    PutFile,
    /// `rm -f` of switch files; subject: the paths, space separated.
    RemoveFiles,
    /// An HTTP request to the fake nginx carrying the preview header; subject: the path.
    PreviewRequest,
    /// Any other HTTP request to the fake nginx; subject: the path.
    Request,
}

/// What a fault does to the call it hits.
#[derive(Debug, Clone)]
pub enum Action {
    /// The call fails: an engine error, except that a command run in a container exits 1
    /// with the message as its output (as a rejected `nginx -t` does), and an HTTP request
    /// answers 500 from nginx itself.
    Fail,
    /// The call reports success and does nothing: an nginx that acknowledges a reload and
    /// keeps its old config (the `noreload` image of tests/e2e_faults.rs), a file write or
    /// removal that is lost. Only for [`Op::NginxReload`], [`Op::PutFile`],
    /// [`Op::RemoveFiles`]; anywhere else it is a mistake in the
    /// test, and the call panics saying so.
    Skip,
    /// The call never returns: only the deploy's own cancellation or timeout gets past it.
    Hang,
    /// Send `SIGTERM` to the deploy through its [`Cancel`], then carry out the call.
    Signal(Cancel),
    /// Send `SIGTERM`, then never return (a step that hangs until the deploy is cancelled).
    SignalAndHang(Cancel),
    /// Make the app of every image containing the text answer with this status, then carry
    /// out the call (a release that breaks later, e.g. during the watch window).
    AppStatus(String, u16),
}

/// "The `nth` (to `last`) call of `op` whose subject contains `subject` does `action`."
#[derive(Debug, Clone)]
pub struct Fault {
    pub op: Op,
    pub subject: String,
    /// First call hit, counted from 1 among the calls that match, from when it was armed.
    pub nth: usize,
    /// Last call hit (inclusive).
    pub last: usize,
    pub action: Action,
}

impl Op {
    /// Whether [`Action::Skip`] means something for this operation.
    fn skippable(self) -> bool {
        matches!(self, Op::NginxReload | Op::PutFile | Op::RemoveFiles)
    }
}

/// How a call goes on once its fault (if any) is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Proceed,
    /// [`Action::Skip`]: report success, change nothing.
    Skip,
}

impl Fault {
    /// The first call of `op`.
    pub fn new(op: Op, action: Action) -> Fault {
        Fault { op, subject: String::new(), nth: 1, last: 1, action }
    }
    /// Only calls whose subject contains `text` count.
    pub fn on(mut self, text: &str) -> Fault {
        self.subject = text.to_string();
        self
    }
    /// The `n`th matching call instead of the first.
    pub fn nth(mut self, n: usize) -> Fault {
        self.nth = n;
        self.last = n;
        self
    }
    /// Every matching call from the `nth` on.
    pub fn onwards(mut self) -> Fault {
        self.last = usize::MAX;
        self
    }
}

/// A cluster held in memory; clones share it.
#[derive(Clone, Default)]
pub struct FakeEngine {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    services: BTreeMap<String, FakeService>,
    tasks: Vec<FakeTask>,
    configs: BTreeMap<String, FakeConfig>,
    secrets: BTreeMap<String, String>,
    networks: BTreeMap<String, String>,
    /// Labels of secrets and networks, by id (configs keep theirs in [`FakeConfig`]).
    object_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Files in the nginx containers' config directory. One map for every replica: on one
    /// node they share the named volume, as the real ones do.
    files: BTreeMap<String, Vec<u8>>,
    /// The config each nginx container runs: the routing file as it was at its last reload.
    loaded: BTreeMap<String, String>,
    /// Bumped on every reload, so the worker pids an nginx reports change as a real one's do.
    generation: u32,
    /// Status the app of each image (matched by a substring) answers with; 200 otherwise.
    app_status: Vec<(String, u16)>,
    faults: Vec<(Fault, usize)>,
    /// Makes ids, task addresses and the round robin of upstreams unique.
    counter: u64,
}

struct FakeService {
    id: String,
    version: u64,
    spec: ServiceSpec,
}

struct FakeTask {
    service_id: String,
    info: TaskInfo,
    address: String,
}

struct FakeConfig {
    id: String,
    version: u64,
    labels: BTreeMap<String, String>,
    data: Vec<u8>,
}

fn image_of(spec: &ServiceSpec) -> String {
    spec.task_template.as_ref().and_then(|t| t.container_spec.as_ref()).and_then(|c| c.image.clone()).unwrap_or_default()
}

fn replicas_of(spec: &ServiceSpec) -> u64 {
    spec.mode.as_ref().and_then(|m| m.replicated.as_ref()).and_then(|r| r.replicas).unwrap_or(1).max(0) as u64
}

impl State {
    fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn find_service(&self, id_or_name: &str) -> Option<&FakeService> {
        self.services.get(id_or_name).or_else(|| self.services.values().find(|s| s.spec.name.as_deref() == Some(id_or_name)))
    }

    /// Start `n` tasks of a service as its image behaves.
    fn start_tasks(&mut self, service_id: &str, image: &str, n: u64) {
        for _ in 0..n {
            let k = self.next();
            let (state, desired, error) = if image.contains("broken") {
                ("failed", "shutdown", Some("task: non-zero exit (1)".to_string()))
            } else if image.contains("starting") {
                ("starting", "running", None)
            } else {
                ("running", "running", None)
            };
            let id = format!("task{k:04}");
            self.tasks.push(FakeTask {
                service_id: service_id.to_string(),
                address: format!("10.0.{}.{}", k / 250, k % 250 + 2),
                info: TaskInfo {
                    id: id.clone(),
                    service_id: service_id.to_string(),
                    slot: None,
                    state: state.into(),
                    desired_state: desired.into(),
                    error,
                    message: None,
                    container_id: Some(format!("container-{id}")),
                    node_id: Some("node1".into()),
                    timestamp: Some(format!("{k:010}")),
                },
            });
        }
    }

    /// Tasks Swarm wants running: live ones, and those still starting.
    fn active(&self, service_id: &str) -> usize {
        self.tasks.iter().filter(|t| t.service_id == service_id && t.info.desired_state == "running").count()
    }

    /// Converge a service's tasks on its spec: scale, or replace them all when the task
    /// template changed (as Swarm does: a new image, environment or `force_update`, but not
    /// replicas or service labels).
    fn converge(&mut self, service_id: &str, template_changed: bool) {
        let Some(svc) = self.services.get(service_id) else { return };
        let (image, want) = (image_of(&svc.spec), replicas_of(&svc.spec) as usize);
        let mut keep = if template_changed { 0 } else { want };
        for t in self.tasks.iter_mut().filter(|t| t.service_id == service_id && t.info.desired_state == "running") {
            if keep == 0 {
                t.info.desired_state = "shutdown".into();
                t.info.state = "shutdown".into();
            } else {
                keep -= 1;
            }
        }
        let missing = want.saturating_sub(self.active(service_id));
        self.start_tasks(service_id, &image, missing as u64);
    }

    /// The tasks of `ids` as a listing finds them, newest first. Swarm restarts a crashing
    /// task: each look finds another failed attempt.
    fn look_at_tasks(&mut self, ids: &[String]) -> Vec<TaskInfo> {
        for id in ids {
            let image = self.services.get(id).map(|s| image_of(&s.spec)).unwrap_or_default();
            if image.contains("broken") {
                let want = replicas_of(&self.services[id].spec);
                self.start_tasks(id, &image, want);
            }
        }
        let mut tasks: Vec<TaskInfo> = self.tasks.iter().filter(|t| ids.contains(&t.service_id)).map(|t| t.info.clone()).collect();
        tasks.sort_by(|a, b| b.timestamp.cmp(&a.timestamp));
        tasks
    }

    fn running_containers(&self) -> impl Iterator<Item = &FakeTask> {
        self.tasks.iter().filter(|t| t.info.is_running())
    }

    fn is_running_container(&self, container: &str) -> bool {
        self.running_containers().any(|t| t.info.container_id.as_deref() == Some(container))
    }

    /// The action of the first armed fault this call hits, counting the call for every fault
    /// it matches.
    fn hit(&mut self, op: Op, subject: &str) -> Option<Action> {
        let mut action = None;
        for (fault, count) in self.faults.iter_mut().filter(|(f, _)| f.op == op && subject.contains(&f.subject)) {
            *count += 1;
            if action.is_none() && (fault.nth..=fault.last).contains(count) {
                action = Some(fault.action.clone());
            }
        }
        action
    }
}

/// What the fake nginx answered, as a user or a probe would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The Swarm service whose task answered; `None` when nginx answered itself (404, 502).
    pub service: Option<String>,
    /// `ip:port` of the task, echoed in `X-Stackctl-Upstream` to requests with the config's token.
    pub upstream: Option<String>,
    /// Whether the token matched, so the upstream header is sent.
    pub echoed: bool,
}

impl FakeEngine {
    /// The hash the loaded config echoes to its token (see `proxy::hash_in`).
    fn loaded_hash(&self, headers: &BTreeMap<String, String>) -> Option<String> {
        let text = self.loaded_config().ok()??;
        let conf = Conf::parse(&text);
        (conf.token.is_some() && conf.token.as_ref() == headers.get("x-stackctl-verify")).then_some(conf.hash).flatten()
    }
}

impl FakeEngine {
    pub fn new() -> FakeEngine {
        FakeEngine::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Arm `faults`, replacing earlier ones; their calls are counted from now.
    pub fn arm(&self, faults: Vec<Fault>) {
        self.lock().faults = faults.into_iter().map(|f| (f, 0)).collect();
    }

    /// The app of every image containing `image` answers `status` from now on.
    pub fn set_app_status(&self, image: &str, status: u16) {
        self.lock().app_status.push((image.to_string(), status));
    }

    /// Apply the fault a call hits, if any: `Err` for an injected failure, never returning
    /// for a hang.
    async fn gate(&self, op: Op, subject: &str) -> Result<Then> {
        let action = self.lock().hit(op, subject);
        match action {
            None => Ok(Then::Proceed),
            Some(Action::Fail) => Err(EngineError::Other(format!("injected failure of {op:?} on {subject}"))),
            Some(Action::Skip) if op.skippable() => Ok(Then::Skip),
            Some(Action::Skip) => panic!("Action::Skip means nothing for {op:?}: a fault of the test, not of the deploy"),
            Some(Action::Hang) => std::future::pending().await,
            Some(Action::Signal(cancel)) => {
                cancel.signal("SIGTERM");
                Ok(Then::Proceed)
            }
            Some(Action::SignalAndHang(cancel)) => {
                cancel.signal("SIGTERM");
                std::future::pending().await
            }
            Some(Action::AppStatus(image, status)) => {
                self.set_app_status(&image, status);
                Ok(Then::Proceed)
            }
        }
    }

    /// [`Self::gate`] for a command run in a container: an injected failure is the command
    /// failing (exit 1, the message as its output), not the Docker API; `Some` is the output
    /// to return instead of running the command.
    async fn gate_command(&self, op: Op, subject: &str) -> Option<ExecOutput> {
        match self.gate(op, subject).await {
            Ok(Then::Proceed) => None,
            Ok(Then::Skip) => Some(ExecOutput { exit_code: 0, output: String::new() }),
            Err(e) => Some(ExecOutput { exit_code: 1, output: format!("nginx: [emerg] {e}") }),
        }
    }

    /// Replicas each service wants, by name (for assertions).
    pub fn replicas(&self) -> BTreeMap<String, u64> {
        let st = self.lock();
        st.services.values().map(|s| (s.spec.name.clone().unwrap_or_default(), replicas_of(&s.spec))).collect()
    }

    /// Running tasks per service name (for assertions).
    pub fn running(&self) -> BTreeMap<String, usize> {
        let st = self.lock();
        st.services
            .values()
            .map(|s| {
                let n = st.tasks.iter().filter(|t| t.service_id == s.id && t.info.is_running()).count();
                (s.spec.name.clone().unwrap_or_default(), n)
            })
            .collect()
    }

    /// Paths of the files in the nginx config directory (for assertions).
    pub fn files(&self) -> Vec<String> {
        self.lock().files.keys().cloned().collect()
    }

    /// The config the nginx replicas run, if they all run the same one; `Err` names how many
    /// different ones there are.
    pub fn loaded_config(&self) -> std::result::Result<Option<String>, usize> {
        let st = self.lock();
        let mut configs: Vec<&String> =
            st.loaded.iter().filter(|(c, _)| st.is_running_container(c)).map(|(_, text)| text).collect();
        configs.sort();
        configs.dedup();
        match configs.len() {
            0 => Ok(None),
            1 => Ok(Some(configs[0].clone())),
            n => Err(n),
        }
    }

    /// Answer one request as the loaded nginx config routes it: pure, no network. `headers` are
    /// lower-case names.
    pub fn answer(&self, host: &str, path: &str, headers: &BTreeMap<String, String>) -> Answer {
        let nginx = |status| Answer { status, service: None, upstream: None, echoed: false };
        let Ok(Some(text)) = self.loaded_config() else { return nginx(404) };
        let conf = Conf::parse(&text);
        let Some(backend) = conf.backend(host, path, headers, |p| self.lock().files.contains_key(p)) else { return nginx(404) };
        let echoed = conf.token.as_ref().is_some_and(|t| headers.get("x-stackctl-verify") == Some(t));
        let with = |status, service: Option<String>, upstream: String| Answer { status, service, upstream: Some(upstream), echoed };
        // `<alias>:<port>` resolves, as Docker's DNS does in `dnsrr` mode, to the running tasks
        // of every service that carries the alias.
        let Some((alias, port)) = backend.rsplit_once(':') else { return with(502, None, backend) };
        let mut st = self.lock();
        let carries = |spec: &ServiceSpec| {
            let networks = spec.task_template.as_ref().and_then(|t| t.networks.as_ref());
            networks.into_iter().flatten().any(|n| n.aliases.iter().flatten().any(|a| a == alias))
        };
        let services: Vec<(String, String, String)> =
            st.services.values().filter(|s| carries(&s.spec)).map(|s| (s.id.clone(), s.spec.name.clone().unwrap_or_default(), image_of(&s.spec))).collect();
        let tasks: Vec<(String, String)> = st
            .running_containers()
            .filter_map(|t| services.iter().find(|s| s.0 == t.service_id).map(|s| (s.0.clone(), t.address.clone())))
            .collect();
        if tasks.is_empty() {
            return nginx(502);
        }
        let pick = st.next() as usize % tasks.len();
        let (id, address) = &tasks[pick];
        let (_, name, image) = services.iter().find(|s| &s.0 == id).expect("a task of a carrying service");
        let status = st.app_status.iter().rev().find(|(i, _)| image.contains(i.as_str())).map_or(200, |(_, s)| *s);
        with(status, Some(name.clone()), format!("{address}:{port}"))
    }
    /// Listen on a free port of 127.0.0.1 as the stack's published nginx port; returns it.
    /// The listener lives as long as the runtime that called this.
    pub async fn serve_nginx(&self) -> std::io::Result<u16> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let engine = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let engine = engine.clone();
                        async move { Ok::<_, Infallible>(engine.http(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Ok(port)
    }

    async fn http(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let headers: BTreeMap<String, String> =
            req.headers().iter().filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string()))).collect();
        let host = headers.get("host").map(|h| h.split(':').next().unwrap_or_default().to_string()).unwrap_or_default();
        let path = req.uri().path().to_string();
        let op = if headers.contains_key("x-stackctl-preview") { Op::PreviewRequest } else { Op::Request };
        let answer = match self.gate(op, &path).await {
            Ok(_) => self.answer(&host, &path, &headers),
            Err(_) => Answer { status: 500, service: None, upstream: None, echoed: false },
        };
        let mut resp = Response::builder().status(answer.status);
        if let (true, Some(u)) = (answer.echoed, &answer.upstream) {
            resp = resp.header("x-stackctl-upstream", u);
        }
        if let Some(hash) = self.loaded_hash(&headers) {
            resp = resp.header("x-stackctl-config", hash);
        }
        let body = format!("{} from {}\n", answer.status, answer.service.as_deref().unwrap_or("nginx"));
        resp.body(Full::new(Bytes::from(body))).expect("a valid response")
    }
}

/// What the fake nginx needs of a rendered config: the token that gates the preview and echo
/// headers, the hash it echoes, the preview maps, and per server its names, targets and
/// locations. Read line by line from the layout of nginx-templates/stackctl.conf; anything else
/// in the file is ignored.
#[derive(Debug, Default)]
struct Conf {
    token: Option<String>,
    hash: Option<String>,
    /// Preview variable → (preview header value → backend).
    maps: BTreeMap<String, BTreeMap<String, String>>,
    servers: Vec<Server>,
}

#[derive(Debug, Default)]
struct Server {
    names: Vec<String>,
    default: bool,
    /// Target variable → how a request picks its backend.
    targets: BTreeMap<String, TargetConf>,
    /// (matcher, target variable; `None` answers 404).
    locations: Vec<(String, Option<String>)>,
}

#[derive(Debug, Default, Clone)]
struct TargetConf {
    blue: String,
    /// The green file and green's backend.
    green: Option<(String, String)>,
    /// The preview map variable that overrides both.
    preview: Option<String>,
}

fn var(word: &str) -> String {
    word.trim_start_matches('$').trim_end_matches(';').to_string()
}

/// Which `if` block the parser is in.
enum If {
    File(String),
    Var(String),
}

impl Conf {
    fn parse(text: &str) -> Conf {
        let mut conf = Conf::default();
        let mut map: Option<String> = None;
        let mut echo = false;
        let mut loaded = false;
        let mut cond: Option<If> = None;
        let mut location = false;
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["map", "$http_x_stackctl_preview", v, "{"] => map = Some(var(v)),
                ["map", "$http_x_stackctl_verify", v, "{"] if v.starts_with("$stackctl_loaded_") => loaded = true,
                ["map", "$http_x_stackctl_verify", _, "{"] => echo = true,
                [key, b] if map.is_some() && key.starts_with('"') => {
                    let entry = conf.maps.entry(map.clone().unwrap_or_default()).or_default();
                    entry.insert(key.trim_matches('"').to_string(), var(b));
                }
                [key, "$upstream_addr;"] if echo => conf.token = Some(key.trim_matches('"').to_string()),
                [key, value] if loaded && key.starts_with('"') => conf.hash = Some(var(value).trim_matches('"').to_string()),
                ["server", "{"] => conf.servers.push(Server::default()),
                ["listen", rest @ ..] => {
                    if let Some(s) = conf.servers.last_mut() {
                        s.default = rest.contains(&"default_server;");
                    }
                }
                ["server_name", names @ ..] => {
                    if let Some(s) = conf.servers.last_mut() {
                        s.names = names.iter().map(|n| n.trim_end_matches(';').to_string()).collect();
                    }
                }
                ["if", "(-f", path, "{"] => cond = Some(If::File(path.trim_end_matches(')').to_string())),
                ["if", v, "{"] => cond = Some(If::Var(var(v.trim_start_matches('(').trim_end_matches(')')))),
                ["set", t, value] => {
                    if let Some(s) = conf.servers.last_mut() {
                        let target = s.targets.entry(var(t)).or_default();
                        match &cond {
                            Some(If::File(path)) => target.green = Some((path.clone(), var(value))),
                            Some(If::Var(v)) => target.preview = Some(v.clone()),
                            None => target.blue = var(value),
                        }
                    }
                }
                ["location", matcher @ .., "{"] => {
                    location = true;
                    if let Some(s) = conf.servers.last_mut() {
                        s.locations.push((matcher.join(" "), None));
                    }
                }
                ["proxy_pass", url] if location => {
                    if let Some(loc) = conf.servers.last_mut().and_then(|s| s.locations.last_mut()) {
                        loc.1 = Some(var(url.trim_start_matches("http://")));
                    }
                }
                ["}"] => {
                    let closed = map.take().is_some() || std::mem::take(&mut echo) || std::mem::take(&mut loaded) || cond.take().is_some();
                    if !closed {
                        location = false;
                    }
                }
                _ => {}
            }
        }
        conf
    }

    /// The server nginx picks for `host`: an exact name, then a `*.` wildcard, then the default.
    fn server(&self, host: &str) -> Option<&Server> {
        let exact = self.servers.iter().find(|s| s.names.iter().any(|n| n == host));
        let wildcard = || {
            self.servers.iter().find(|s| s.names.iter().any(|n| n.strip_prefix("*.").is_some_and(|d| host.ends_with(&format!(".{d}")))))
        };
        exact.or_else(wildcard).or_else(|| self.servers.iter().find(|s| s.default))
    }

    /// The backend (`<alias>:<port>`) a request goes to; `None` for a 404. `exists` says
    /// whether a file is present.
    fn backend(&self, host: &str, path: &str, headers: &BTreeMap<String, String>, exists: impl Fn(&str) -> bool) -> Option<String> {
        let server = self.server(host)?;
        // nginx: an exact match wins, then the longest prefix.
        let exact = server.locations.iter().find(|(m, _)| m.strip_prefix("= ") == Some(path));
        let prefix = || {
            server.locations.iter().filter(|(m, _)| !m.starts_with("= ") && path.starts_with(m.as_str())).max_by_key(|(m, _)| m.len())
        };
        let target = exact.or_else(prefix)?.1.as_ref()?;
        let t = server.targets.get(target)?;
        let preview = (t.preview.as_ref())
            .and_then(|v| self.maps.get(v))
            .and_then(|m| headers.get("x-stackctl-preview").and_then(|h| m.get(h)));
        if let Some(p) = preview {
            return Some(p.clone());
        }
        match &t.green {
            Some((file, green)) if exists(file) => Some(green.clone()),
            _ => Some(t.blue.clone()),
        }
    }
}

impl Engine for FakeEngine {
    async fn check_swarm(&self) -> Result<()> {
        Ok(())
    }

    async fn services(&self, stack: &str) -> Result<Vec<ServiceInfo>> {
        let all = self.lock().services.keys().cloned().collect::<Vec<_>>();
        let mut out = Vec::new();
        for id in all {
            if let Some(info) = self.service(&id).await? {
                if info.label(crate::release::STACK) == Some(stack) {
                    out.push(info);
                }
            }
        }
        Ok(out)
    }

    async fn service(&self, id_or_name: &str) -> Result<Option<ServiceInfo>> {
        let st = self.lock();
        Ok(st.find_service(id_or_name).map(|s| ServiceInfo {
            id: s.id.clone(),
            name: s.spec.name.clone().unwrap_or_default(),
            version: s.version,
            labels: s.spec.labels.clone().unwrap_or_default().into_iter().collect(),
            replicas: replicas_of(&s.spec),
            spec: s.spec.clone(),
        }))
    }

    async fn tasks(&self, service_id: &str) -> Result<Vec<TaskInfo>> {
        let name = self.service(service_id).await?.map(|s| s.name).unwrap_or_default();
        self.gate(Op::Tasks, &name).await?;
        let mut st = self.lock();
        let Some(id) = st.find_service(service_id).map(|s| s.id.clone()) else { return Ok(Vec::new()) };
        Ok(st.look_at_tasks(&[id]))
    }

    async fn stack_tasks(&self, stack: &str) -> Result<Vec<TaskInfo>> {
        let services = self.services(stack).await?;
        // One listing for all: a fault on any of its services' tasks hits it.
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        self.gate(Op::Tasks, &names.join(" ")).await?;
        let ids: Vec<String> = services.into_iter().map(|s| s.id).collect();
        Ok(self.lock().look_at_tasks(&ids))
    }

    async fn network_addresses(&self, _network: &str) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
        let st = self.lock();
        let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for t in st.running_containers() {
            let Some(name) = st.services.get(&t.service_id).and_then(|s| s.spec.name.clone()) else { continue };
            out.entry(name).or_default().insert(t.info.id.clone(), t.address.clone());
        }
        Ok(out)
    }

    async fn create_service(&self, spec: ServiceSpec) -> Result<String> {
        let name = spec.name.clone().unwrap_or_default();
        self.gate(Op::CreateService, &name).await?;
        let mut st = self.lock();
        if st.find_service(&name).is_some() {
            return Err(EngineError::Conflict(format!("service {name} already exists")));
        }
        let id = format!("service{:04}", st.next());
        st.services.insert(id.clone(), FakeService { id: id.clone(), version: 1, spec });
        st.converge(&id, false);
        Ok(id)
    }

    async fn update_service(&self, id_or_name: &str, version: u64, spec: ServiceSpec) -> Result<()> {
        let name = self.service(id_or_name).await?.map(|s| s.name).unwrap_or_default();
        self.gate(Op::UpdateService, &name).await?;
        let mut st = self.lock();
        // Docker takes a name where it takes an id (the retire phase scales by name).
        let Some(id) = st.find_service(id_or_name).map(|s| s.id.clone()) else {
            return Err(EngineError::NotFound(format!("service {id_or_name}")));
        };
        let svc = st.services.get_mut(&id).expect("found above");
        if svc.version != version {
            return Err(EngineError::Conflict(format!("update out of sequence: {name} is at version {}, not {version}", svc.version)));
        }
        let template_changed = svc.spec.task_template != spec.task_template;
        svc.spec = spec;
        svc.version += 1;
        st.converge(&id, template_changed);
        Ok(())
    }

    async fn remove_service(&self, id: &str) -> Result<()> {
        let name = self.service(id).await?.map(|s| s.name).unwrap_or_default();
        self.gate(Op::RemoveService, &name).await?;
        let mut st = self.lock();
        let Some(id) = st.find_service(id).map(|s| s.id.clone()) else { return Ok(()) };
        st.services.remove(&id);
        st.tasks.retain(|t| t.service_id != id);
        Ok(())
    }

    async fn resolve_image(&self, reference: &str) -> Result<String> {
        self.gate(Op::ResolveImage, reference).await?;
        if reference.contains("@sha256:") {
            return Ok(reference.to_string());
        }
        let digest: String = Sha256::digest(reference.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        Ok(format!("{reference}@sha256:{digest}"))
    }

    async fn ensure_network(&self, req: &NetworkRequest) -> Result<String> {
        let mut st = self.lock();
        if let Some(id) = st.networks.get(&req.name) {
            return Ok(id.clone());
        }
        let id = format!("network{:04}", st.next());
        st.networks.insert(req.name.clone(), id.clone());
        st.object_labels.insert(id.clone(), req.labels.clone());
        Ok(id)
    }

    async fn ensure_config(&self, name: &str, data: &[u8], labels: &BTreeMap<String, String>) -> Result<String> {
        if let Some(id) = self.find_config(name).await? {
            return Ok(id);
        }
        self.create_config(name, data, labels).await.map(|c| c.id)
    }

    async fn ensure_secret(&self, name: &str, _data: &[u8], labels: &BTreeMap<String, String>) -> Result<String> {
        let mut st = self.lock();
        if let Some(id) = st.secrets.get(name) {
            return Ok(id.clone());
        }
        let id = format!("secret{:04}", st.next());
        st.secrets.insert(name.to_string(), id.clone());
        st.object_labels.insert(id.clone(), labels.clone());
        Ok(id)
    }

    async fn find_config(&self, name: &str) -> Result<Option<String>> {
        Ok(self.lock().configs.get(name).map(|c| c.id.clone()))
    }

    async fn find_secret(&self, name: &str) -> Result<Option<String>> {
        Ok(self.lock().secrets.get(name).cloned())
    }

    async fn find_network(&self, name: &str) -> Result<Option<String>> {
        Ok(self.lock().networks.get(name).cloned())
    }

    async fn config(&self, name: &str) -> Result<Option<ConfigInfo>> {
        self.gate(Op::ReadConfig, name).await?;
        let st = self.lock();
        Ok(st.configs.get(name).map(|c| ConfigInfo { id: c.id.clone(), name: name.to_string(), version: c.version, labels: c.labels.clone() }))
    }

    async fn create_config(&self, name: &str, data: &[u8], labels: &BTreeMap<String, String>) -> Result<ConfigInfo> {
        self.gate(Op::CreateConfig, name).await?;
        if labels.keys().any(|k| k.starts_with(crate::record::LIVE_PREFIX)) {
            self.gate(Op::RecordLive, name).await?;
        }
        let mut st = self.lock();
        if st.configs.contains_key(name) {
            return Err(EngineError::Conflict(format!("config {name} already exists")));
        }
        let id = format!("config{:04}", st.next());
        st.configs.insert(name.to_string(), FakeConfig { id: id.clone(), version: 1, labels: labels.clone(), data: data.to_vec() });
        Ok(ConfigInfo { id, name: name.to_string(), version: 1, labels: labels.clone() })
    }

    async fn update_config_labels(&self, info: &ConfigInfo, labels: &BTreeMap<String, String>) -> Result<()> {
        self.gate(Op::UpdateConfigLabels, &info.name).await?;
        let live = |l: &BTreeMap<String, String>| -> Vec<(String, String)> {
            l.iter().filter(|(k, _)| k.starts_with(crate::record::LIVE_PREFIX)).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let before = self.lock().configs.get(&info.name).map(|c| live(&c.labels));
        if before.is_some_and(|b| b != live(labels)) {
            self.gate(Op::RecordLive, &info.name).await?;
        }
        let mut st = self.lock();
        let Some(c) = st.configs.get_mut(&info.name) else { return Err(EngineError::NotFound(format!("config {}", info.name))) };
        if c.version != info.version || c.id != info.id {
            return Err(EngineError::Conflict(format!("update out of sequence: config {} is at version {}", info.name, c.version)));
        }
        c.labels = labels.clone();
        c.version += 1;
        Ok(())
    }

    async fn configs_labelled(&self, labels: &[String]) -> Result<Vec<StoredConfig>> {
        let st = self.lock();
        let matches = |have: &BTreeMap<String, String>| {
            labels.iter().all(|l| match l.split_once('=') {
                Some((k, v)) => have.get(k).map(String::as_str) == Some(v),
                None => have.contains_key(l),
            })
        };
        Ok(st
            .configs
            .iter()
            .filter(|(_, c)| matches(&c.labels))
            .map(|(name, c)| StoredConfig {
                info: ConfigInfo { id: c.id.clone(), name: name.clone(), version: c.version, labels: c.labels.clone() },
                data: c.data.clone(),
            })
            .collect())
    }

    async fn remove_config(&self, id: &str) -> Result<()> {
        self.lock().configs.retain(|_, c| c.id != id);
        Ok(())
    }

    async fn objects_labelled(&self, kind: ObjectType, label: &str) -> Result<Vec<Labelled>> {
        let st = self.lock();
        let matches = |have: &BTreeMap<String, String>| match label.split_once('=') {
            Some((k, v)) => have.get(k).map(String::as_str) == Some(v),
            None => have.contains_key(label),
        };
        let by_name = |names: &BTreeMap<String, String>| -> Vec<Labelled> {
            names
                .iter()
                .filter_map(|(name, id)| {
                    let labels = st.object_labels.get(id).cloned().unwrap_or_default();
                    matches(&labels).then(|| Labelled { id: id.clone(), name: name.clone(), labels })
                })
                .collect()
        };
        Ok(match kind {
            ObjectType::Config => st
                .configs
                .iter()
                .filter(|(_, c)| matches(&c.labels))
                .map(|(name, c)| Labelled { id: c.id.clone(), name: name.clone(), labels: c.labels.clone() })
                .collect(),
            ObjectType::Secret => by_name(&st.secrets),
            ObjectType::Network => by_name(&st.networks),
            // Volumes live on nodes, not in this cluster model.
            ObjectType::Volume => Vec::new(),
        })
    }

    async fn remove_object(&self, kind: ObjectType, id: &str) -> Result<()> {
        let mut st = self.lock();
        let attached = |name: &str| {
            st.services.values().any(|s| {
                s.spec.task_template.as_ref().and_then(|t| t.networks.as_ref()).is_some_and(|nets| {
                    nets.iter().any(|n| n.target.as_deref() == Some(id) || n.target.as_deref() == Some(name))
                })
            })
        };
        match kind {
            ObjectType::Config => st.configs.retain(|_, c| c.id != id),
            ObjectType::Secret => st.secrets.retain(|_, s| s != id),
            ObjectType::Network => {
                if let Some(name) = st.networks.iter().find(|(_, n)| *n == id).map(|(name, _)| name.clone()) {
                    if attached(&name) {
                        return Err(EngineError::Api { status: 403, message: format!("network {name} has active endpoints") });
                    }
                }
                st.networks.retain(|_, n| n != id)
            }
            ObjectType::Volume => return Err(EngineError::Other(format!("volume {id}: stackctl never removes volumes"))),
        }
        st.object_labels.remove(id);
        Ok(())
    }

    async fn exec(&self, container: &str, cmd: &[&str]) -> Result<ExecOutput> {
        if !self.lock().is_running_container(container) {
            return Err(EngineError::NotFound(format!("container {container} is not running")));
        }
        let ok = |output: String| Ok(ExecOutput { exit_code: 0, output });
        match cmd {
            ["nginx", "-t"] => {
                if let Some(out) = self.gate_command(Op::NginxTest, container).await {
                    return Ok(out);
                }
                ok("nginx: configuration file /etc/nginx/nginx.conf test is successful".into())
            }
            ["nginx", "-s", "reload"] => {
                if let Some(out) = self.gate_command(Op::NginxReload, container).await {
                    return Ok(out);
                }
                let mut st = self.lock();
                let file = st.files.iter().find(|(p, _)| p.ends_with(&format!("/{}", crate::proxy::nginx::FILE)));
                let text = file.map(|(_, data)| String::from_utf8_lossy(data).into_owned()).unwrap_or_default();
                st.loaded.insert(container.to_string(), text);
                st.generation += 1;
                ok(String::new())
            }
            ["sh", "-c", _] => {
                let g = self.lock().generation;
                ok(format!("{}\n{}\n", 100 + 2 * g, 101 + 2 * g))
            }
            // nginx's connections: the fake's nginx holds none.
            ["cat", "/proc/net/tcp"] => ok("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n".into()),
            ["rm", "-f", paths @ ..] => {
                if let Some(out) = self.gate_command(Op::RemoveFiles, &paths.join(" ")).await {
                    return Ok(out);
                }
                let mut st = self.lock();
                for p in paths {
                    st.files.remove(*p);
                }
                ok(String::new())
            }
            _ => Ok(ExecOutput { exit_code: 127, output: format!("fake nginx: {}: not found", cmd.join(" ")) }),
        }
    }

    async fn put_files(&self, container: &str, dir: &str, files: &[(&str, &[u8])]) -> Result<()> {
        if !self.lock().is_running_container(container) {
            return Err(EngineError::NotFound(format!("container {container} is not running")));
        }
        let names = files.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(" ");
        if self.gate(Op::PutFile, &names).await? == Then::Proceed {
            let mut st = self.lock();
            for (name, content) in files {
                st.files.insert(format!("{dir}/{name}"), content.to_vec());
            }
        }
        Ok(())
    }

    async fn container_health(&self, _container: &str) -> Result<Option<String>> {
        Ok(None)
    }

    async fn get_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>> {
        if !self.lock().is_running_container(container) {
            return Err(EngineError::NotFound(format!("container {container} is not running")));
        }
        Ok(self.lock().files.get(path).cloned())
    }

    async fn get_dir(&self, container: &str, dir: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        if !self.lock().is_running_container(container) {
            return Err(EngineError::NotFound(format!("container {container} is not running")));
        }
        let prefix = format!("{}/", dir.trim_end_matches('/'));
        let st = self.lock();
        let files = st.files.iter().filter_map(|(p, c)| {
            let name = p.strip_prefix(&prefix)?;
            (!name.contains('/')).then(|| (name.to_string(), c.clone()))
        });
        // The fake's config directory always exists while nginx runs.
        Ok(Some(files.collect()))
    }

    /// The fake nginx answers no users, so its access log is empty.
    async fn container_logs(&self, container: &str, _since: i64) -> Result<super::Logs> {
        if !self.lock().is_running_container(container) {
            return Err(EngineError::NotFound(format!("container {container} is gone")));
        }
        Ok(super::Logs::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::describe::ObjectRefs;
    use crate::proxy::{self, Target};
    use crate::release::Color;
    use crate::spec::Stack;
    const STACK_FILE: &str = r#"name: t
x-stackctl:
  proxy: { service: proxy, url: "http://127.0.0.1:9", listen: 8080 }
services:
  proxy:
    image: registry.test/nginx:1
  web:
    image: registry.test/demo:v1
    deploy: { replicas: 2 }
    x-stackctl:
      route: { port: 80, host: web.example }
"#;

    fn stack() -> Stack {
        crate::spec::load_str(std::path::Path::new("t.yml"), STACK_FILE, &Default::default()).expect("valid").stack
    }

    /// Create the Swarm service of `service` (its release `release`, if routed) running `image`.
    async fn create(engine: &FakeEngine, stack: &Stack, service: &str, release: Option<u64>, image: &str) -> String {
        let name = match release {
            Some(n) => crate::release::versioned_name(&stack.name, service, n),
            None => crate::release::plain_name(&stack.name, service),
        };
        let svc = &stack.services[service];
        let spec = crate::desired::describe(stack, svc, &name, image, &BTreeMap::new(), svc.deploy.replicas, &ObjectRefs::default());
        engine.create_service(spec).await.expect("created");
        name
    }

    async fn target(engine: &FakeEngine, name: &str, release: u64) -> Target {
        let addrs = engine.task_addresses("t_default", name).await.unwrap();
        Target { release, servers: addrs.values().map(|ip| format!("{ip}:80")).collect() }
    }

    fn headers(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The rendered template, installed the way the deploy does it (file, test, reload), is
    /// read back by the fake nginx as real nginx would route it: blue's release by default, a
    /// colour with its preview header, green for everyone once the green file exists, the
    /// answering backend and the config's hash echoed only with the token, and 404 off the
    /// route's host.
    #[tokio::test]
    async fn the_fake_nginx_routes_as_the_rendered_config_says() {
        let (engine, stack) = (FakeEngine::new(), stack());
        create(&engine, &stack, "proxy", None, "registry.test/nginx:1").await;
        let r1 = create(&engine, &stack, "web", Some(1), "demo:v1").await;
        let r2 = create(&engine, &stack, "web", Some(2), "demo:v2").await;
        let (t1, t2) = (target(&engine, &r1, 1).await, target(&engine, &r2, 2).await);
        assert_eq!((t1.servers.len(), t2.servers.len()), (2, 2), "two running tasks each");
        let token = "0123456789abcdef0123";
        let config = proxy::render(&stack, token).unwrap();
        let paint = |name: String, colour| {
            let engine = engine.clone();
            async move {
                let info = engine.service(&name).await.unwrap().unwrap();
                let spec = crate::release::coloured(&info.spec, "t", "web", colour).unwrap();
                engine.update_service(&name, info.version, spec).await.unwrap();
            }
        };
        paint(r1.clone(), Color::Blue).await;
        paint(r2.clone(), Color::Green).await;
        let (t1, t2) = (target(&engine, &r1, 1).await, target(&engine, &r2, 2).await);

        assert_eq!(engine.answer("web.example", "/", &headers(&[])).status, 404, "nothing loaded yet");
        let nginx = engine.tasks("t_proxy").await.unwrap()[0].container_id.clone().unwrap();
        engine.put_file(&nginx, "/etc/nginx/stackctl", "live.conf", config.as_bytes()).await.unwrap();
        assert_eq!(engine.exec(&nginx, &["nginx", "-t"]).await.unwrap().exit_code, 0);
        assert_eq!(engine.exec(&nginx, &["nginx", "-s", "reload"]).await.unwrap().exit_code, 0);
        assert_eq!(engine.loaded_config(), Ok(Some(config.clone())));
        assert_eq!(engine.loaded_hash(&headers(&[("x-stackctl-verify", token)])), proxy::hash_in(&config));
        assert_eq!(engine.loaded_hash(&headers(&[])), None, "the hash only to the token");

        let user = engine.answer("web.example", "/anything", &headers(&[]));
        assert_eq!((user.status, user.service.as_deref(), user.echoed), (200, Some(r1.as_str()), false), "blue without the file");
        let preview = format!("{token}.green");
        let probe = engine.answer("web.example", "/healthz", &headers(&[("x-stackctl-preview", &preview), ("x-stackctl-verify", token)]));
        assert_eq!((probe.service.as_deref(), probe.echoed), (Some(r2.as_str()), true));
        assert!(t2.servers.contains(probe.upstream.as_ref().unwrap()), "{probe:?} answered by one of {t2:?}");
        let wrong = engine.answer("web.example", "/", &headers(&[("x-stackctl-preview", "nope.green"), ("x-stackctl-verify", "nope")]));
        assert_eq!((wrong.service.as_deref(), wrong.echoed), (Some(r1.as_str()), false), "another token reaches nothing new");
        assert_eq!(engine.answer("other.example", "/", &headers(&[])).status, 404, "the default server");

        // The switch: a file, no reload.
        let flip = proxy::green_file("web");
        engine.put_file(&nginx, "/etc/nginx/stackctl", &flip, b"").await.unwrap();
        assert_eq!(engine.answer("web.example", "/", &headers(&[])).service.as_deref(), Some(r2.as_str()));
        let blue = engine.answer("web.example", "/", &headers(&[("x-stackctl-preview", &format!("{token}.blue")), ("x-stackctl-verify", token)]));
        assert!(t1.servers.contains(blue.upstream.as_ref().unwrap()), "blue's preview while users are on green");
        let path = format!("/etc/nginx/stackctl/{flip}");
        assert_eq!(engine.exec(&nginx, &["rm", "-f", &path]).await.unwrap().exit_code, 0);
        assert_eq!(engine.answer("web.example", "/", &headers(&[])).service.as_deref(), Some(r1.as_str()));

        // A release with no running task: nginx answers 502 itself.
        let id = engine.service(&r1).await.unwrap().unwrap();
        let mut spec = id.spec.clone();
        spec.mode = Some(bollard::models::ServiceSpecMode {
            replicated: Some(bollard::models::ServiceSpecModeReplicated { replicas: Some(0) }),
            ..Default::default()
        });
        engine.update_service(&r1, id.version, spec).await.unwrap();
        let gone = engine.answer("web.example", "/", &headers(&[]));
        assert_eq!((gone.status, gone.service), (502, None));
    }

    /// Faults count matching calls from when they are armed; a failed command exits 1 like a
    /// rejected `nginx -t` (it is not an API error); a skipped reload keeps the old config.
    #[tokio::test]
    async fn faults_hit_the_nth_matching_call_as_the_caller_would_see_it() {
        let (engine, stack) = (FakeEngine::new(), stack());
        create(&engine, &stack, "proxy", None, "registry.test/nginx:1").await;
        let nginx = engine.tasks("t_proxy").await.unwrap()[0].container_id.clone().unwrap();
        engine.arm(vec![
            Fault::new(Op::CreateService, Action::Fail).on("web-r").nth(2),
            Fault::new(Op::NginxTest, Action::Fail),
            Fault::new(Op::NginxReload, Action::Skip).nth(2),
        ]);
        create(&engine, &stack, "web", Some(1), "demo:v1").await;
        let svc = &stack.services["web"];
        let spec = crate::desired::describe(&stack, svc, "t_web-r2", "demo:v2", &BTreeMap::new(), 1, &ObjectRefs::default());
        let err = engine.create_service(spec.clone()).await.unwrap_err();
        assert!(err.to_string().contains("injected failure of CreateService on t_web-r2"), "{err}");
        engine.create_service(spec).await.expect("only the second matching call fails");

        let rejected = engine.exec(&nginx, &["nginx", "-t"]).await.unwrap();
        assert_eq!(rejected.exit_code, 1, "{rejected:?}");
        assert_eq!(engine.exec(&nginx, &["nginx", "-t"]).await.unwrap().exit_code, 0);

        let workers = |out: ExecOutput| out.output;
        engine.put_file(&nginx, "/etc/nginx/stackctl", "live.conf", b"# one\n").await.unwrap();
        let before = workers(engine.exec(&nginx, &["sh", "-c", "list workers"]).await.unwrap());
        engine.exec(&nginx, &["nginx", "-s", "reload"]).await.unwrap();
        let after = workers(engine.exec(&nginx, &["sh", "-c", "list workers"]).await.unwrap());
        assert_ne!(before, after, "a reload starts new workers");
        engine.put_file(&nginx, "/etc/nginx/stackctl", "live.conf", b"# two\n").await.unwrap();
        assert_eq!(engine.exec(&nginx, &["nginx", "-s", "reload"]).await.unwrap().exit_code, 0, "acknowledged");
        assert_eq!(engine.loaded_config(), Ok(Some("# one\n".to_string())), "but not done");
        assert_eq!(workers(engine.exec(&nginx, &["sh", "-c", "list workers"]).await.unwrap()), after, "same workers");
    }

    /// Swarm's view of a crash loop: every look finds more failed attempts; scaling by name
    /// (as the retire phase does) keeps the tasks of an unchanged template, a new template
    /// replaces them.
    #[tokio::test]
    async fn tasks_follow_the_spec_as_swarm_converges_it() {
        let (engine, stack) = (FakeEngine::new(), stack());
        let broken = create(&engine, &stack, "web", Some(1), "demo:broken").await;
        let first = engine.tasks(&broken).await.unwrap().iter().filter(|t| t.state == "failed").count();
        let second = engine.tasks(&broken).await.unwrap().iter().filter(|t| t.state == "failed").count();
        assert!(second > first && first >= 2, "{first} then {second} failed attempts");

        let web = create(&engine, &stack, "web", Some(2), "demo:v1").await;
        let running = |tasks: Vec<TaskInfo>| tasks.into_iter().filter(|t| t.is_running()).map(|t| t.id).collect::<Vec<_>>();
        let before = running(engine.tasks(&web).await.unwrap());
        let info = engine.service(&web).await.unwrap().unwrap();
        let mut spec = info.spec.clone();
        spec.mode = Some(bollard::models::ServiceSpecMode {
            replicated: Some(bollard::models::ServiceSpecModeReplicated { replicas: Some(3) }),
            ..Default::default()
        });
        engine.update_service(&web, info.version, spec.clone()).await.expect("by name");
        let scaled = running(engine.tasks(&web).await.unwrap());
        assert_eq!(scaled.len(), 3);
        assert!(before.iter().all(|t| scaled.contains(t)), "scaling up keeps the running tasks");
        let stale = engine.update_service(&web, info.version, spec.clone()).await.unwrap_err();
        assert!(matches!(stale, EngineError::Conflict(_)), "{stale}");

        let info = engine.service(&web).await.unwrap().unwrap();
        if let Some(c) = spec.task_template.as_mut().and_then(|t| t.container_spec.as_mut()) {
            c.image = Some("demo:v2".into());
        }
        engine.update_service(&info.id, info.version, spec).await.unwrap();
        let replaced = running(engine.tasks(&web).await.unwrap());
        assert_eq!(replaced.len(), 3);
        assert!(replaced.iter().all(|t| !scaled.contains(t)), "a new image replaces every task");
    }
}

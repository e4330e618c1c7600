//! [`Proxy`] for nginx running as a Swarm service, driven entirely through the Docker API.
//!
//! The file lives in a named volume mounted at `config_dir` (see `deploy::proxy_spec`), so a
//! replacement nginx task on the same node starts with the live config; the stock image's
//! `conf.d/*.conf` include reaches it through a one-line Swarm config.
//!
//! Limitation: exec and file upload reach containers on the node whose Docker API we talk to,
//! so every nginx replica must run on that manager (a placement constraint `node.role==manager`
//! on a single-manager cluster does it). Several edges on several nodes come later.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use super::{Installed, Proxy, ProxyError};
use crate::cancel::Cancel;
use crate::engine::Engine;
use crate::faults;

/// File name of the routing config inside `config_dir`.
pub const FILE: &str = "live.conf";

/// Lists the pids of nginx workers that accept connections, from /proc (no procps needed).
const ACCEPTING_WORKERS: &str =
    r#"for p in /proc/[0-9]*; do [ "$(tr -d '\000' <"$p/cmdline" 2>/dev/null)" = "nginx: worker process" ] && echo "${p#/proc/}"; done; true"#;

/// How long a reload may take to reach every worker before the caller's verification decides.
const RELOAD_SETTLE: Duration = Duration::from_secs(3);

pub struct NginxProxy<'a, E: Engine> {
    pub engine: &'a E,
    /// Swarm service name of the proxy (`demo_proxy`).
    pub service: String,
    pub config_dir: String,
}

impl<'a, E: Engine> NginxProxy<'a, E> {
    /// The nginx of `stack`: its proxy service and config directory.
    pub fn of(engine: &'a E, stack: &crate::spec::Stack) -> NginxProxy<'a, E> {
        NginxProxy {
            engine,
            service: crate::release::plain_name(&stack.name, &stack.x.proxy.service),
            config_dir: stack.x.proxy.config_dir.clone(),
        }
    }

    async fn containers(&self) -> Result<Vec<String>, ProxyError> {
        let tasks = self.engine.tasks(&self.service).await?;
        let ids: Vec<String> = tasks
            .into_iter()
            .filter(|t| t.is_running())
            .filter_map(|t| t.container_id)
            .collect();
        if ids.is_empty() {
            return Err(ProxyError::NoReplica(self.service.clone()));
        }
        Ok(ids)
    }

    fn path(&self) -> String {
        format!("{}/{FILE}", self.config_dir)
    }
}

/// The files of nginx's config directory, per running replica (first replica first), as one
/// [`NginxProxy::files`] read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NginxFiles {
    pub replicas: Vec<std::collections::BTreeMap<String, Vec<u8>>>,
}

impl NginxFiles {
    /// The config installed (the first replica's), `None` when there is none.
    pub fn config(&self) -> Option<String> {
        let bytes = self.replicas.first()?.get(FILE)?;
        Some(String::from_utf8_lossy(bytes).into_owned())
    }

    /// Which of `files` exist on at least one replica: a switch file on any replica means
    /// some users are already on the new release.
    pub fn present(&self, files: &[String]) -> BTreeSet<String> {
        files.iter().filter(|f| self.replicas.iter().any(|r| r.contains_key(*f))).cloned().collect()
    }

    /// The colour nginx sends each routed service's users to (see [`super::green_file`]).
    pub fn colours(&self, summary: &super::RoutingSummary) -> std::collections::BTreeMap<String, crate::release::Color> {
        let files: Vec<String> = summary.green_files.values().cloned().collect();
        summary.colours(&self.present(&files))
    }

    /// Whether every replica's file is `config` already.
    pub fn has_everywhere(&self, config: &str) -> bool {
        !self.replicas.is_empty() && self.replicas.iter().all(|r| r.get(FILE).map(Vec::as_slice) == Some(config.as_bytes()))
    }
}

impl<E: Engine> Proxy for NginxProxy<'_, E> {
    async fn install(&self, config: &str) -> Result<Installed, ProxyError> {
        self.install_at(config, None).await
    }

    async fn flip(&self, files: &[String], on: bool) -> Result<(), ProxyError> {
        let containers = self.containers().await?;
        let mut done: Vec<&String> = Vec::new();
        for c in &containers {
            let result = if on { self.create_files(c, files).await } else { self.delete_files(c, files).await };
            if let Err(e) = result {
                if on {
                    // All or nothing: replicas already switched go back.
                    for d in &done {
                        let _ = self.delete_files(d, files).await;
                    }
                }
                return Err(e);
            }
            done.push(c);
        }
        Ok(())
    }

    async fn current(&self) -> Result<Option<String>, ProxyError> {
        Ok(self.files().await?.config())
    }

    async fn present(&self, files: &[String]) -> Result<std::collections::BTreeSet<String>, ProxyError> {
        Ok(self.files().await?.present(files))
    }
}

impl<E: Engine> NginxProxy<'_, E> {
    /// Everything stackctl keeps in nginx's config directory, every replica at once: one
    /// request per replica, however many services the stack routes. A run reads it once and
    /// takes the token, the installed config and where users go from that one reading.
    pub async fn files(&self) -> Result<NginxFiles, ProxyError> {
        let containers = self.containers().await?;
        let reads = containers.iter().map(|c| async move { Ok::<_, ProxyError>(self.engine.get_dir(c, &self.config_dir).await?.unwrap_or_default()) });
        let replicas = futures_util::future::try_join_all(reads).await?;
        Ok(NginxFiles { replicas })
    }

    /// The colour nginx sends each routed service's users to, from which of the config's green
    /// files exist (see [`super::green_file`]).
    pub async fn colours(&self, summary: &super::RoutingSummary) -> Result<std::collections::BTreeMap<String, crate::release::Color>, ProxyError> {
        Ok(self.files().await?.colours(summary))
    }

    async fn create_files(&self, container: &str, files: &[String]) -> Result<(), ProxyError> {
        // Two requests per replica, however many services switch: one read of the directory,
        // one upload of the files missing from it. A file already there is left alone:
        // replicas on one node share the volume, and uploading it again replaces it, so for a
        // moment it would not exist and users would be sent back to blue.
        let there = self.engine.get_dir(container, &self.config_dir).await?.unwrap_or_default();
        let missing: Vec<(&str, &[u8])> = files.iter().filter(|f| !there.contains_key(*f)).map(|f| (f.as_str(), &b""[..])).collect();
        if missing.is_empty() {
            return Ok(());
        }
        Ok(self.engine.put_files(container, &self.config_dir, &missing).await?)
    }

    /// Write `content` as `name` in the config directory of every replica, unless it is there
    /// already: uploaded beside it, then renamed over it (`mv`, one atomic rename), so nginx
    /// never serves a half-written or missing file. Replicas on one node share the volume:
    /// each is looked at again before its write.
    pub async fn put_atomically(&self, name: &str, content: &[u8]) -> Result<(), ProxyError> {
        let path = format!("{}/{name}", self.config_dir);
        let staged = format!(".{name}.stackctl-new");
        for c in self.containers().await? {
            if self.engine.get_file(&c, &path).await?.as_deref() == Some(content) {
                continue;
            }
            self.engine.put_file(&c, &self.config_dir, &staged, content).await?;
            let staged_path = format!("{}/{staged}", self.config_dir);
            let out = self.engine.exec(&c, &["mv", "-f", &staged_path, &path]).await?;
            if out.exit_code != 0 {
                return Err(ProxyError::SwitchFile { container: c, output: format!("mv: {}", out.output.trim()) });
            }
        }
        Ok(())
    }

    /// The Docker API cannot delete a file, but it can put an empty directory in its place,
    /// which nginx's `-f` test does not count as a file: one upload, no process started in
    /// the container (an `rm` by exec took ~0.2 s under load, on the way back to blue).
    async fn delete_files(&self, container: &str, files: &[String]) -> Result<(), ProxyError> {
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        (self.engine.put_dirs(container, &self.config_dir, &names).await)
            .map_err(|e| ProxyError::SwitchFile { container: container.to_string(), output: e.to_string() })
    }

    /// [`Proxy::install`], passing the test-only pause point `pause` (see [`crate::faults`])
    /// once every replica accepted the file and before any reload.
    pub async fn install_at(&self, config: &str, pause: Option<(&str, &Cancel)>) -> Result<Installed, ProxyError> {
        let containers = self.containers().await?;
        // Read every replica's file before writing any: replicas on one node share the volume,
        // so a file read after another replica's write would "restore" the rejected config.
        let mut previous = Vec::new();
        for c in &containers {
            previous.push((c.clone(), self.engine.get_file(c, &self.path()).await?));
        }
        let unchanged = previous.iter().all(|(_, old)| old.as_deref() == Some(config.as_bytes()));
        // Phase 1: write and test everywhere. Any rejection puts every file back.
        for c in &containers {
            self.engine.put_file(c, &self.config_dir, FILE, config.as_bytes()).await?;
            let test = self.engine.exec(c, &["nginx", "-t"]).await?;
            if test.exit_code != 0 {
                self.restore(&previous).await;
                return Err(ProxyError::Rejected { container: c.clone(), output: test.output.trim().to_string() });
            }
        }
        if let Some((point, cancel)) = pause {
            faults::pause(point, cancel).await;
        }
        // Phase 2 (also when the file was already there: a deploy killed between writing and
        // reloading leaves the file on disk but not loaded): every replica accepted the file; reload them all.
        let mut before = Vec::new();
        for c in &containers {
            before.push(self.accepting_workers(c).await);
        }
        for c in &containers {
            let reload = self.engine.exec(c, &["nginx", "-s", "reload"]).await?;
            if reload.exit_code != 0 {
                return Err(ProxyError::ReloadFailed { container: c.clone(), output: reload.output.trim().to_string() });
            }
        }
        // `nginx -s reload` returns once the master was signalled; its old workers go on
        // accepting connections with the old config until it has started the new ones. Return
        // only when they stopped, so that what the caller does next (removing the switch files)
        // never meets a worker of the old config. A reload that never takes effect is left to
        // the caller's verification, after a bounded wait.
        let deadline = tokio::time::Instant::now() + RELOAD_SETTLE;
        for (c, old) in containers.iter().zip(&before) {
            let Some(old) = old.as_ref().filter(|w| !w.is_empty()) else { continue };
            while tokio::time::Instant::now() < deadline {
                match self.accepting_workers(c).await {
                    Some(now) if !now.is_empty() && now.is_disjoint(old) => break,
                    _ => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        }
        Ok(Installed { replicas: containers, unchanged })
    }

    /// TCP connections every nginx replica holds open (ESTABLISHED) to any of the servers
    /// (`ip:port`) of each group, one count per group: one read of the kernel's table per
    /// replica (`/proc/net/tcp`, so no tool is needed in the image) however many groups.
    /// nginx keeps no idle connections to releases (it proxies to a variable, so there is no
    /// pool): each one counted is a request still being served, an upgraded WebSocket, or a
    /// response still streaming.
    pub async fn open_connections(&self, groups: &[Vec<String>]) -> Result<Vec<usize>, ProxyError> {
        let wanted: Vec<BTreeSet<SocketAddrV4>> = groups.iter().map(|g| g.iter().filter_map(|s| s.parse().ok()).collect()).collect();
        let mut open = vec![0; groups.len()];
        for c in self.containers().await? {
            let out = self.engine.exec(&c, &["cat", "/proc/net/tcp"]).await?;
            if out.exit_code != 0 {
                return Err(ProxyError::Engine(crate::engine::EngineError::Other(format!(
                    "reading /proc/net/tcp in {c}: {}",
                    out.output.trim()
                ))));
            }
            for peer in established_to(&out.output) {
                for (n, servers) in open.iter_mut().zip(&wanted) {
                    *n += usize::from(servers.contains(&peer));
                }
            }
        }
        Ok(open)
    }

    /// Pids of the nginx workers of `container` that accept connections: titled exactly
    /// `nginx: worker process` (told to quit, a worker renames itself `… is shutting down`
    /// before it closes its listening sockets). `None` when the container cannot tell (no `sh`).
    async fn accepting_workers(&self, container: &str) -> Option<BTreeSet<u32>> {
        let out = self.engine.exec(container, &["sh", "-c", ACCEPTING_WORKERS]).await.ok()?;
        (out.exit_code == 0).then(|| out.output.split_whitespace().filter_map(|p| p.parse().ok()).collect())
    }

    /// Best effort: put back what was there. A replica we cannot restore keeps the rejected
    /// file on disk but never loaded it (nginx only reads files on reload or restart).
    async fn restore(&self, previous: &[(String, Option<Vec<u8>>)]) {
        for (c, old) in previous {
            let content = old.clone().unwrap_or_default();
            let _ = self.engine.put_file(c, &self.config_dir, FILE, &content).await;
        }
    }
}

/// The remote ends of the ESTABLISHED connections in a `/proc/net/tcp` table. Each line reads
/// `sl local rem st …` with addresses as `IIIIIIII:PPPP`: the IPv4 address is the 32-bit value
/// in the kernel's byte order (printed as a native integer), the port in hex.
fn established_to(table: &str) -> impl Iterator<Item = SocketAddrV4> + '_ {
    const ESTABLISHED: &str = "01";
    table.lines().skip(1).filter_map(|line| {
        let mut fields = line.split_whitespace().skip(2);
        let (remote, state) = (fields.next()?, fields.next()?);
        if state != ESTABLISHED {
            return None;
        }
        let (ip, port) = remote.split_once(':')?;
        let ip = u32::from_str_radix(ip, 16).ok()?;
        let port = u16::from_str_radix(port, 16).ok()?;
        Some(SocketAddrV4::new(Ipv4Addr::from(ip.to_ne_bytes()), port))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn established_connections_are_read_from_the_kernel_table() {
        // Taken from an nginx task: listening on 8080, two connections to 10.0.1.5:80 (one
        // established, one closing), one client connected to nginx.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0B01000A:A3F2 0501000A:0050 01 00000000:00000000 00:00000000 00000000   101        0 2 1 0 20 4 30 10 -1
   2: 0B01000A:A3F4 0501000A:0050 06 00000000:00000000 03:00000DB5 00000000     0        0 0 3 0
   3: 0B01000A:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000   101        0 3 1 0 20 4 30 10 -1
";
        let peers: Vec<SocketAddrV4> = established_to(table).collect();
        if cfg!(target_endian = "little") {
            assert_eq!(peers, ["10.0.1.5:80".parse().unwrap(), "127.0.0.1:50000".parse().unwrap()]);
        }
        assert_eq!(established_to("").count(), 0);
        assert_eq!(established_to("header\n   0: garbage\n").count(), 0);
    }

    #[test]
    fn what_one_reading_of_the_config_directories_says() {
        let replica = |files: &[(&str, &str)]| files.iter().map(|(n, c)| (n.to_string(), c.as_bytes().to_vec())).collect();
        let files = NginxFiles { replicas: vec![replica(&[(FILE, "A")]), replica(&[(FILE, "A"), ("live-green-web", "")])] };
        assert_eq!(files.config().as_deref(), Some("A"));
        // A switch file on any replica counts: some users are already on green.
        assert_eq!(files.present(&["live-green-web".into(), "live-green-api".into()]), BTreeSet::from(["live-green-web".to_string()]));
        assert!(files.has_everywhere("A"));
        assert!(!files.has_everywhere("B"));
        let stale = NginxFiles { replicas: vec![replica(&[(FILE, "A")]), replica(&[])] };
        assert!(!stale.has_everywhere("A"), "a replica without the file does not have it");
        assert!(!NginxFiles::default().has_everywhere("A"), "no replica: nothing has it");
        assert_eq!(NginxFiles::default().config(), None);
    }
}

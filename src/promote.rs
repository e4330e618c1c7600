//! `stackctl promote FILE --from A --to B`: ship to B exactly what runs in A.
//!
//! The story: run A's gate in-process (it records its result in A's history, as `stackctl
//! gate` does); unless it passed, refuse with [`EXIT_NOT_PASSED`] and change nothing. Then read
//! the image of each of A's live releases (routed services) and A's plain services from their
//! Swarm specs, where a deploy pinned them to a digest, and deploy B with those as image
//! overrides: B's own overlay, variables and engine, A's digests, never a tag resolved again.
//! B's history entry says where the release came from ([`crate::history::Origin`]).
//!
//! The nginx proxy and stateful services are not shipped: a deploy never replaces them, so
//! they keep B's own images.

use std::collections::BTreeMap;

use crate::engine::ServiceInfo;
use crate::release;
use crate::spec::{Role, Stack};

/// Exit code of `stackctl promote` when the `--from` environment's gate held the release
/// (a failed or inconclusive check): nothing was deployed.
pub const EXIT_NOT_PASSED: i32 = 5;

/// The image each shipped service of `from` runs, pinned to its digest: routed services from
/// their live release (`live`, as the gate saw it), plain services from their one Swarm
/// service. Every service `to` ships must be found in `from` with a pinned image; anything
/// else is an error naming the services, since deploying it would resolve a tag again.
pub fn live_images(from: &Stack, live: &BTreeMap<String, u64>, infos: &[ServiceInfo], to: &Stack) -> Result<BTreeMap<String, String>, String> {
    let mut images = BTreeMap::new();
    let mut problems = Vec::new();
    for (service, svc) in to.services.iter().filter(|(_, s)| shipped(&s.role)) {
        let swarm_name = match from.services.get(service).map(|s| &s.role) {
            Some(Role::Routed(_)) => match live.get(service) {
                Some(&n) => release::versioned_name(&from.name, service, n),
                None => {
                    problems.push(format!("{service} has no live release in stack {}", from.name));
                    continue;
                }
            },
            Some(Role::Plain) => release::plain_name(&from.name, service),
            _ => {
                problems.push(format!("{service} ({}) is not a routed or plain service of stack {}", role_name(&svc.role), from.name));
                continue;
            }
        };
        let image = (infos.iter().find(|i| i.name == swarm_name))
            .and_then(|i| i.spec.task_template.as_ref()?.container_spec.as_ref()?.image.clone());
        match image {
            Some(image) if image.contains("@sha256:") => {
                images.insert(service.clone(), image);
            }
            Some(image) => problems.push(format!("{swarm_name} runs {image}, which is not pinned to a digest")),
            None => problems.push(format!("{swarm_name} was not found in the engine")),
        }
    }
    if problems.is_empty() { Ok(images) } else { Err(problems.join("; ")) }
}

/// Whether a deploy ships a service of this role (the proxy and stateful services stay put).
fn shipped(role: &Role) -> bool {
    matches!(role, Role::Routed(_) | Role::Plain)
}

fn role_name(role: &Role) -> &'static str {
    match role {
        Role::Proxy => "proxy",
        Role::Routed(_) => "routed",
        Role::Stateful => "stateful",
        Role::Plain => "plain",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ServiceSpec, TaskSpec, TaskSpecContainerSpec};

    const BASE: &str = "\
name: shop
x-stackctl:
  proxy: { service: proxy, url: 'http://127.0.0.1:8080', listen: 8080 }
services:
  proxy: { image: 'nginx:1' }
  web:
    image: 'reg/web:v1'
    x-stackctl:
      route: { port: 80, path: /, health: { path: /healthz } }
  worker: { image: 'reg/worker:v1' }
";

    fn stack(name: &str, extra: &str) -> Stack {
        let text = format!("{}{extra}", BASE.replace("name: shop", &format!("name: {name}")));
        crate::spec::load_str(std::path::Path::new("s.yml"), &text, &Default::default()).expect("stack loads").stack
    }

    fn info(name: &str, image: &str) -> ServiceInfo {
        let spec = ServiceSpec {
            task_template: Some(TaskSpec { container_spec: Some(TaskSpecContainerSpec { image: Some(image.into()), ..Default::default() }), ..Default::default() }),
            ..Default::default()
        };
        ServiceInfo { id: String::new(), name: name.into(), version: 1, labels: BTreeMap::new(), replicas: 1, spec }
    }

    const WEB: &str = "reg/web:v2@sha256:aaaa";
    const WORKER: &str = "reg/worker:v1@sha256:bbbb";

    #[test]
    fn routed_from_the_live_release_plain_from_its_service_proxy_left_alone() {
        let (from, to) = (stack("staging", ""), stack("prod", ""));
        let live = BTreeMap::from([("web".to_string(), 3)]);
        let infos = [info("staging_web-r2", "reg/web:v1@sha256:old"), info("staging_web-r3", WEB), info("staging_worker", WORKER), info("staging_proxy", "nginx:1@sha256:cccc")];
        let images = live_images(&from, &live, &infos, &to).unwrap();
        assert_eq!(images, BTreeMap::from([("web".to_string(), WEB.to_string()), ("worker".to_string(), WORKER.to_string())]));
    }

    #[test]
    fn refuses_what_would_resolve_a_tag_again() {
        let (from, to) = (stack("staging2", ""), stack("prod2", ""));
        let live = BTreeMap::from([("web".to_string(), 1)]);
        // Not pinned, missing, and no live release: each named.
        let err = live_images(&from, &live, &[info("staging2_web-r1", "reg/web:v2")], &to).unwrap_err();
        assert!(err.contains("staging2_web-r1 runs reg/web:v2, which is not pinned"), "{err}");
        assert!(err.contains("staging2_worker was not found"), "{err}");
        let err = live_images(&from, &BTreeMap::new(), &[info("staging2_worker", WORKER)], &to).unwrap_err();
        assert_eq!(err, "web has no live release in stack staging2");
        // A service the target ships that the source does not have.
        let to = stack("prod3", "  extra: { image: 'reg/extra:v1' }\n");
        let err = live_images(&from, &live, &[info("staging2_web-r1", WEB), info("staging2_worker", WORKER)], &to).unwrap_err();
        assert!(err.contains("extra (plain) is not a routed or plain service of stack staging2"), "{err}");
    }
}

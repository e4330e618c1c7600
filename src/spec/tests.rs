//! Loader tests through the public API: the demo stack, interpolation, merge keys, every
//! error message with its location, the allowlists, and a never-panics property.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// `stacks/demo.yml`.
pub(crate) const DEMO: &str = r#"name: demo
x-stackctl:
  proxy:
    service: proxy
    url: http://127.0.0.1:8080
    listen: 8080
  keep: 2
services:
  proxy:
    image: 127.0.0.1:5000/stackctl-nginx:latest
    ports:
      - target: 8080
        published: 8080
        mode: host
    deploy:
      replicas: 1
  web:
    image: ${WEB_IMAGE:-127.0.0.1:5000/stackctl-demo:v1}
    environment:
      GREETING: hello
    deploy:
      replicas: 2
      resources:
        limits: { cpus: "0.25", memory: 32M }
    stop_grace_period: 5s
    x-stackctl:
      route:
        port: 80
        path: /
        health: { path: /healthz, status: 200, interval: 500ms, timeout: 2s, successes: 3, deadline: 60s }
        drain: 2s
        watch: 5s
        rollback_window: 30s
"#;

/// A small valid stack; `web(extra)` appends service keys to `web` from line 9 on.
const MINI: &str = r#"name: demo
x-stackctl:
  proxy: { service: proxy, url: "http://127.0.0.1:8080" }
services:
  proxy:
    image: nginx
  web:
    image: nginx
"#;

fn web(extra: &str) -> String {
    format!("{MINI}{extra}")
}

fn opts_with_env(env: &[(&str, &str)]) -> LoadOptions {
    LoadOptions { env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..LoadOptions::default() }
}

fn load(text: &str) -> Result<Loaded, SpecError> {
    load_str(Path::new("stacks/demo.yml"), text, &LoadOptions::default())
}

fn errors(err: &SpecError) -> Vec<(usize, usize, String, String)> {
    match err {
        SpecError::Invalid { location, message } => {
            vec![(location.line, location.column, location.field.clone(), message.clone())]
        }
        SpecError::Many(all) => all.iter().flat_map(errors).collect(),
        SpecError::Read { .. } => panic!("unexpected read error: {err}"),
    }
}

/// The one error `text` produces.
fn the_error(text: &str) -> (usize, usize, String, String) {
    let err = load(text).expect_err("expected an error");
    let mut all = errors(&err);
    assert_eq!(all.len(), 1, "expected exactly one error, got: {err}");
    all.remove(0)
}

#[track_caller]
fn assert_error(text: &str, line: usize, column: usize, field: &str, needle: &str) {
    let (l, c, f, message) = the_error(text);
    assert!(message.contains(needle), "message {message:?} should contain {needle:?}");
    assert_eq!((l, c, f.as_str()), (line, column, field), "location of {message:?}");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stackctl-spec-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------------------------
// The demo stack, exactly

fn plain_service(name: &str, image: &str) -> Service {
    Service {
        name: name.into(),
        role: Role::Plain,
        image: image.into(),
        command: None,
        entrypoint: None,
        environment: BTreeMap::new(),
        labels: BTreeMap::new(),
        ports: Vec::new(),
        networks: vec![ServiceNetwork { name: "default".into(), aliases: Vec::new() }],
        volumes: Vec::new(),
        configs: Vec::new(),
        secrets: Vec::new(),
        healthcheck: None,
        stop_grace_period: None,
        stop_signal: None,
        user: None,
        working_dir: None,
        hostname: None,
        init: None,
        read_only: false,
        deploy: Deploy { replicas: 1, ..Deploy::default() },
    }
}

#[test]
fn demo_stack_loads_into_the_exact_model() {
    let loaded = load(DEMO).unwrap();
    assert_eq!(loaded.warnings, []);

    let proxy = Service {
        role: Role::Proxy,
        ports: vec![Port { target: 8080, published: Some(8080), protocol: Protocol::Tcp, mode: PublishMode::Host }],
        ..plain_service("proxy", "127.0.0.1:5000/stackctl-nginx:latest")
    };
    let web = Service {
        role: Role::Routed(Route {
            port: 80,
            hosts: Vec::new(),
            path: "/".into(),
            health: HealthProbe {
                path: "/healthz".into(),
                status: 200,
                interval: ms(500),
                timeout: ms(2000),
                successes: 3,
                deadline: ms(60_000),
            },
            drain: ms(2000),
            watch: ms(5000),
            keep: 2,
            rollback_window: ms(30_000),
            settings: RouteSettings::default(),
        }),
        environment: BTreeMap::from([("GREETING".into(), "hello".into())]),
        stop_grace_period: Some(ms(5000)),
        deploy: Deploy {
            replicas: 2,
            resources: Resources {
                limits: ResourceSet { nano_cpus: Some(250_000_000), memory_bytes: Some(32 << 20), pids: None },
                reservations: ResourceSet::default(),
            },
            ..Deploy::default()
        },
        ..plain_service("web", "127.0.0.1:5000/stackctl-demo:v1")
    };
    let want = Stack {
        name: "demo".into(),
        source: PathBuf::from("stacks/demo.yml"),
        services: BTreeMap::from([("proxy".into(), proxy), ("web".into(), web)]),
        networks: BTreeMap::from([(
            "default".into(),
            Network {
                driver: "overlay".into(),
                attachable: true,
                external: false,
                real_name: "demo_default".into(),
                labels: BTreeMap::new(),
                driver_opts: BTreeMap::new(),
            },
        )]),
        volumes: BTreeMap::new(),
        configs: BTreeMap::new(),
        secrets: BTreeMap::new(),
        x: StackX {
            proxy: ProxyX {
                service: "proxy".into(),
                url: "http://127.0.0.1:8080".into(),
                listen: 8080,
                config_dir: "/etc/nginx/stackctl".into(),
            },
            keep: 2,
            history: 100,
            gate: GateSpec::default(),
            maintenance: Default::default(),
        },
        environment: Environment::default(),
    };
    assert_eq!(loaded.stack, want);
}

#[test]
fn checked_in_demo_stack_matches() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/demo.yml");
    let from_file = super::load(&path, &LoadOptions::default()).unwrap();
    assert_eq!(from_file.warnings, []);
    let inline = load(DEMO).unwrap().stack;
    assert_eq!(Stack { source: inline.source.clone(), ..from_file.stack }, inline);
}

#[test]
fn missing_file_is_a_read_error() {
    let err = super::load(Path::new("/nonexistent/stack.yml"), &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, SpecError::Read { .. }));
    assert!(err.to_string().starts_with("cannot read /nonexistent/stack.yml: "), "{err}");
    assert!(err.locations().is_empty());
}

#[test]
fn options_override_name_and_image() {
    let mut opts = opts_with_env(&[("WEB_IMAGE", "registry.local/demo:v2")]);
    opts.name = Some("demo-staging".into());
    opts.image_overrides.insert("proxy".into(), "nginx:1.27".into());
    let stack = load_str(Path::new("demo.yml"), DEMO, &opts).unwrap().stack;
    assert_eq!(stack.name, "demo-staging");
    assert_eq!(stack.networks["default"].real_name, "demo-staging_default");
    assert_eq!(stack.services["web"].image, "registry.local/demo:v2");
    assert_eq!(stack.services["proxy"].image, "nginx:1.27");
}

#[test]
fn image_override_for_a_missing_service_is_an_error() {
    let opts = LoadOptions { image_overrides: BTreeMap::from([("wbe".into(), "x".into())]), ..LoadOptions::default() };
    let err = load_str(Path::new("demo.yml"), DEMO, &opts).unwrap_err();
    let (line, column, field, message) = errors(&err).remove(0);
    assert_eq!((line, column, field.as_str()), (8, 1, "services"));
    assert!(message.contains("--image wbe=x: there is no service \"wbe\""), "{message}");
    assert!(message.contains("did you mean \"web\"?"), "{message}");

    let opts =
        LoadOptions { image_overrides: BTreeMap::from([("web".into(), "Bad:x".into())]), ..LoadOptions::default() };
    let err = load_str(Path::new("demo.yml"), DEMO, &opts).unwrap_err();
    assert!(err.to_string().contains("(from --image)"), "{err}");
}

#[test]
fn invalid_name_option_is_reported() {
    let opts = LoadOptions { name: Some("Demo".into()), ..LoadOptions::default() };
    let err = load_str(Path::new("demo.yml"), DEMO, &opts).unwrap_err();
    let (line, column, field, message) = errors(&err).remove(0);
    assert_eq!((line, column, field.as_str()), (1, 1, "--name"));
    assert!(message.contains("lowercase"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Interpolation

#[test]
fn interpolation_in_values_and_typed_fields() {
    let text = web(r#"    environment:
      PLAIN: $GREETING
      BRACED: "${GREETING}!"
      DEFAULTED: ${NOPE:-fallback}
      EMPTY_DEFAULT: ${EMPTY:-used}
      DASH: ${EMPTY-kept}
      ALT: ${GREETING:+yes}
      DOLLARS: "$$HOME costs $$5"
    deploy:
      replicas: ${REPLICAS:-2}
    read_only: ${RO}
"#);
    let loaded =
        load_str(Path::new("demo.yml"), &text, &opts_with_env(&[("GREETING", "hi"), ("EMPTY", ""), ("RO", "true")]))
            .unwrap();
    let web = &loaded.stack.services["web"];
    let env: Vec<(&str, &str)> = web.environment.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        env,
        [
            ("ALT", "yes"),
            ("BRACED", "hi!"),
            ("DASH", ""),
            ("DEFAULTED", "fallback"),
            ("DOLLARS", "$HOME costs $5"),
            ("EMPTY_DEFAULT", "used"),
            ("PLAIN", "hi"),
        ]
    );
    assert_eq!(web.deploy.replicas, 2);
    assert!(web.read_only);
    assert_eq!(loaded.warnings, []);
}

#[test]
fn unset_variable_is_empty_with_a_located_warning() {
    let text = web("    environment:\n      A: x${UNSET}y\n");
    let loaded = load(&text).unwrap();
    assert_eq!(loaded.stack.services["web"].environment["A"], "xy");
    let [warning] = loaded.warnings.as_slice() else { panic!("{:?}", loaded.warnings) };
    assert_eq!((warning.location.line, warning.location.column), (10, 7));
    assert_eq!(warning.location.field, "services.web.environment.A");
    assert_eq!(warning.message, "variable UNSET is not set; using an empty string");
}

#[test]
fn interpolation_errors_are_located() {
    assert_error(
        &web("    environment:\n      - API_KEY=${API_KEY:?set API_KEY to the token from the vault}\n"),
        10,
        9,
        "services.web.environment[0]",
        "required variable API_KEY is not set or empty: set API_KEY to the token from the vault",
    );
    assert_error(&web("    command: echo ${oops\n"), 9, 5, "services.web.command", "unterminated \"${\"");
    assert_error(&web("    command: echo $1\n"), 9, 5, "services.web.command", "write a literal '$' as \"$$\"");
    assert_error(&web("    command: echo ${}\n"), 9, 5, "services.web.command", "invalid variable name");
}

#[test]
fn numbers_from_variables_are_validated() {
    let text = web("    deploy:\n      replicas: ${REPLICAS}\n");
    let err = load_str(Path::new("stacks/demo.yml"), &text, &opts_with_env(&[("REPLICAS", "two")])).unwrap_err();
    let (line, column, field, message) = errors(&err).remove(0);
    assert_eq!((line, column, field.as_str()), (10, 7, "services.web.deploy.replicas"));
    assert!(message.contains("expected a whole number, got \"two\""), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Merge keys and anchors

#[test]
fn merge_keys_and_anchors() {
    let text = r#"name: demo
x-defaults: &defaults
  image: nginx
  environment: &env
    LOG: info
    MODE: prod
  deploy:
    replicas: 3
x-stackctl:
  proxy: { service: proxy, url: "http://127.0.0.1:8080" }
services:
  proxy:
    <<: *defaults
  web:
    <<: *defaults
    environment:
      <<: *env
      LOG: debug
    deploy:
      replicas: 1
"#;
    let stack = load(text).unwrap().stack;
    let web = &stack.services["web"];
    assert_eq!(web.image, "nginx");
    assert_eq!(web.deploy.replicas, 1);
    assert_eq!(web.environment, BTreeMap::from([("LOG".into(), "debug".into()), ("MODE".into(), "prod".into())]));
    let proxy = &stack.services["proxy"];
    assert_eq!((proxy.image.as_str(), proxy.deploy.replicas, proxy.environment.len()), ("nginx", 3, 2));
}

#[test]
fn errors_in_merged_content_point_at_the_service() {
    let text = r#"name: demo
x-defaults: &defaults
  image: nginx
  ports: ["127.0.0.1:80:80"]
x-stackctl:
  proxy: { service: proxy, url: "http://127.0.0.1:8080" }
services:
  proxy:
    image: nginx
  web:
    <<: *defaults
"#;
    assert_error(text, 10, 3, "services.web.ports[0]", "host IP");
    assert_error(&web("    <<: 3\n"), 9, 5, "services.web.<<", "merge key '<<' must be a mapping");
}

// ---------------------------------------------------------------------------------------------
// Every error message, located

#[test]
fn located_errors() {
    let cases: &[(&str, usize, usize, &str, &str)] = &[
        // Ports
        ("    ports:\n      - \"127.0.0.1:8080:80\"\n", 10, 9, "services.web.ports[0]", "\"127.0.0.1:8080:80\": Swarm cannot bind a published port to a host IP; remove the IP and use the long syntax with mode: host"),
        ("    ports:\n      - target: 70000\n", 10, 9, "services.web.ports[0].target", "port 70000 is out of range (1-65535)"),
        ("    ports:\n      - published: 80\n", 10, 9, "services.web.ports[0]", "missing target"),
        ("    ports:\n      - { target: 80, mode: hots }\n", 10, 23, "services.web.ports[0].mode", "did you mean \"host\"?"),
        ("    ports:\n      - { target: 80, protocol: sctp }\n", 10, 23, "services.web.ports[0].protocol", "use one of: tcp, udp"),
        ("    ports:\n      - { target: 80, host_ip: 127.0.0.1, mode: host }\n", 10, 23, "services.web.ports[0].host_ip", "host IP"),
        ("    ports:\n      - \"80:80/sctp\"\n", 10, 9, "services.web.ports[0]", "unknown protocol"),
        ("    ports: [\"8080:80\"]\n    deploy:\n      endpoint_mode: dnsrr\n", 11, 7, "services.web.deploy.endpoint_mode", "Swarm refuses endpoint_mode: dnsrr"),
        ("    deploy:\n      endpoint_mode: round-robin\n", 10, 7, "services.web.deploy.endpoint_mode", "use one of: vip, dnsrr"),
        // Keys
        ("    enviroment: {A: b}\n", 9, 5, "services.web.enviroment", "unknown key \"enviroment\"; did you mean \"environment\"?"),
        ("    frobnicate: yes\n", 9, 5, "services.web.frobnicate", "unknown key \"frobnicate\"; valid keys here: image, command"),
        ("    privileged: true\n", 9, 5, "services.web.privileged", "privileged is not supported by Swarm services (services cannot run privileged containers); remove it"),
        ("    cap_add: [NET_ADMIN]\n", 9, 5, "services.web.cap_add", "cap_add is not supported by stackctl yet"),
        ("    mem_limit: 1g\n", 9, 5, "services.web.mem_limit", "use deploy.resources"),
        ("    deploy:\n      replica: 2\n", 10, 7, "services.web.deploy.replica", "did you mean \"replicas\"?"),
        ("    x-stackctl:\n      rout: {port: 80}\n", 10, 7, "services.web.x-stackctl.rout", "did you mean \"route\"?"),
        ("    x-stackctl:\n      route: {port: 80, helth: {}}\n", 10, 25, "services.web.x-stackctl.route.helth", "did you mean \"health\"?"),
        // Types
        ("    deploy:\n      replicas: many\n", 10, 7, "services.web.deploy.replicas", "expected a whole number, got \"many\""),
        ("    deploy:\n      replicas: 1.5\n", 10, 7, "services.web.deploy.replicas", "expected a whole number, got 1.5"),
        ("    init: maybe\n", 9, 5, "services.web.init", "expected true or false"),
        ("    environment: 3\n", 9, 5, "services.web.environment", "expected a mapping or a list"),
        ("    healthcheck: yes\n", 9, 5, "services.web.healthcheck", "expected a mapping"),
        ("    configs:\n      - { source: app, mode: 9999 }\n", 10, 24, "services.web.configs[0].mode", "not a file mode"),
        // Durations, sizes, CPUs
        ("    stop_grace_period: 10\n", 9, 5, "services.web.stop_grace_period", "\"10\" is missing a unit; write a duration such as 10s"),
        ("    healthcheck:\n      test: [CMD, true]\n      interval: 5 minutes\n", 11, 7, "services.web.healthcheck.interval", "unknown unit"),
        ("    deploy:\n      resources:\n        limits:\n          memory: 32Q\n", 12, 11, "services.web.deploy.resources.limits.memory", "\"32Q\" is not a size; write a size such as 64M"),
        ("    deploy:\n      resources:\n        reservations: { cpus: lots }\n", 11, 25, "services.web.deploy.resources.reservations.cpus", "not a CPU count"),
        ("    deploy:\n      resources:\n        limits: { pids: 0 }\n", 11, 19, "services.web.deploy.resources.limits.pids", "pids must be at least 1"),
        // deploy
        ("    deploy:\n      mode: global\n", 10, 7, "services.web.deploy.mode", "mode: global is not supported yet"),
        ("    deploy:\n      mode: replicated-job\n", 10, 7, "services.web.deploy.mode", "use one of: replicated"),
        ("    deploy:\n      restart_policy: { condition: always }\n", 10, 25, "services.web.deploy.restart_policy.condition", "one of: none, on-failure, any"),
        ("    deploy:\n      update_config: { order: start-frist }\n", 10, 24, "services.web.deploy.update_config.order", "did you mean \"start-first\"?"),
        ("    deploy:\n      update_config: { max_failure_ratio: 2 }\n", 10, 24, "services.web.deploy.update_config.max_failure_ratio", "between 0 and 1"),
        ("    deploy:\n      placement: { constraints: [\"node.role=manager\"] }\n", 10, 34, "services.web.deploy.placement.constraints[0]", "needs == or !="),
        // Service basics
        ("    hostname: web\n  api:\n    command: serve\n", 10, 3, "services.api", "missing image: every service needs an image"),
        ("  my_api:\n    image: nginx\n", 9, 3, "services.my_api", "service name \"my_api\" contains '_'"),
        ("  api:\n    image: Nginx:latest\n", 10, 5, "services.api.image", "uppercase 'N'"),
        ("  api:\n    image: \"nginx:lat est\"\n", 10, 5, "services.api.image", "contains a space"),
        ("    command: \"echo 'unterminated\"\n", 9, 5, "services.web.command", "unterminated single quote"),
        ("    environment:\n      - \"=value\"\n", 10, 9, "services.web.environment[0]", "empty name"),
        ("    labels:\n      - \"=value\"\n", 10, 9, "services.web.labels[0]", "label with an empty key"),
        ("    healthcheck:\n      test: [curl, -f, localhost]\n", 10, 7, "services.web.healthcheck.test", "must start with CMD, CMD-SHELL or NONE"),
        // References to stack-level objects
        ("    networks: [back]\n", 9, 16, "services.web.networks[0]", "network \"back\" is not defined; add it under the top-level networks:"),
        ("    volumes:\n      - data:/data\n", 10, 9, "services.web.volumes[0]", "volume \"data\" is not defined"),
        ("    volumes:\n      - ~/data:/data\n", 10, 9, "services.web.volumes[0]", "'~' is not expanded"),
        ("    volumes:\n      - ./data:data\n", 10, 9, "services.web.volumes[0]", "must be an absolute path"),
        ("    volumes:\n      - /a:/b:z\n", 10, 9, "services.web.volumes[0]", "unsupported volume option \"z\"; use ro or rw"),
        ("    volumes:\n      - { type: npipe, target: /x }\n", 10, 11, "services.web.volumes[0].type", "use one of: volume, bind, tmpfs"),
        ("    volumes:\n      - { type: bind, target: /x }\n", 10, 9, "services.web.volumes[0]", "missing source"),
        ("    configs: [app]\n", 9, 15, "services.web.configs[0]", "config \"app\" is not defined; add it under the top-level configs:"),
        ("    secrets:\n      - source: token\n", 10, 9, "services.web.secrets[0]", "secret \"token\" is not defined"),
        ("    env_file: missing.env\n", 9, 5, "services.web.env_file", "stacks/missing.env: No such file"),
        ("    env_file: [missing.env]\n", 9, 16, "services.web.env_file[0]", "cannot read env file"),
        // Top-level objects
        ("networks:\n  back: { external: true, driver: overlay }\n", 10, 3, "networks.back", "an external network already exists"),
        ("networks:\n  back: { external: { name: x } }\n", 10, 11, "networks.back.external", "expected true or false"),
        ("networks:\n  back: { internal: true }\n", 10, 11, "networks.back.internal", "internal is not supported by stackctl yet"),
        ("volumes:\n  \"bad vol\":\n", 10, 3, "volumes.bad vol", "volume name \"bad vol\" contains a space"),
        ("configs:\n  app: {}\n", 10, 3, "configs.app", "set file: (read relative to the stack file) or external: true"),
        ("configs:\n  app: { file: ./app.conf, external: true }\n", 10, 3, "configs.app", "either external: true or read from file:, not both"),
        ("configs:\n  app: { file: ./missing.conf }\n", 10, 10, "configs.app.file", "stacks/missing.conf: No such file"),
        ("secrets:\n  token: { content: s3cret }\n", 10, 12, "secrets.token.content", "content is not supported by stackctl yet (use file:)"),
        ("include: [other.yml]\n", 9, 1, "include", "include is not supported by stackctl yet"),
        ("servics: {}\n", 9, 1, "servics", "unknown key \"servics\"; did you mean \"services\"?"),
    ];
    for &(extra, line, column, field, needle) in cases {
        let (l, c, f, message) = the_error(&web(extra));
        assert!(message.contains(needle), "{extra:?}: message {message:?} should contain {needle:?}");
        assert_eq!((l, c, f.as_str()), (line, column, field), "{extra:?}: location of {message:?}");
    }
}

#[test]
fn more_located_errors() {
    let long_key = "v".repeat(60);
    let cases: &[(String, usize, usize, &str, &str)] = &[
        (
            web("volumes:\n  data: { external: true, driver: local }\n"),
            10,
            3,
            "volumes.data",
            "an external volume already exists",
        ),
        (
            web("configs:\n  app: { external: true, name: \"bad name\" }\n"),
            10,
            26,
            "configs.app.name",
            "name \"bad name\" contains a space",
        ),
        (
            web(&format!("volumes:\n  {long_key}:\n")),
            10,
            3,
            &format!("volumes.{long_key}"),
            "longer than 64 characters; shorten the key or set name:",
        ),
        (web("  api:\n"), 9, 3, "services.api", "missing image: every service needs an image"),
        (
            web("    volumes:\n      - { target: /x }\n"),
            10,
            9,
            "services.web.volumes[0]",
            "missing type: volume, bind or tmpfs",
        ),
        (web("    volumes:\n      - { type: tmpfs }\n"), 10, 9, "services.web.volumes[0]", "missing target"),
        (
            web("    volumes:\n      - { type: tmpfs, source: x, target: /x }\n"),
            10,
            24,
            "services.web.volumes[0].source",
            "a tmpfs mount has no source",
        ),
        (web("    configs:\n      - { target: /x }\n"), 10, 9, "services.web.configs[0]", "missing source"),
        (
            web("    configs:\n      - { source: app, target: app.conf }\nconfigs:\n  app: { external: true }\n"),
            10,
            24,
            "services.web.configs[0].target",
            "must be an absolute path",
        ),
        (
            web("    secrets:\n      - { source: token, uid: root }\nsecrets:\n  token: { external: true }\n"),
            10,
            26,
            "services.web.secrets[0].uid",
            "uid \"root\" must be a number",
        ),
        (
            web("    configs:\n      - { source: app, mode: \"rw\" }\n"),
            10,
            24,
            "services.web.configs[0].mode",
            "\"rw\" is not an octal file mode",
        ),
        (
            web("    networks:\n      default:\n        aliases: [\"bad alias\"]\n"),
            11,
            19,
            "services.web.networks.default.aliases[0]",
            "network alias \"bad alias\" contains a space",
        ),
        (
            web("    deploy:\n      placement: { preferences: [{}] }\n"),
            10,
            34,
            "services.web.deploy.placement.preferences[0]",
            "missing required key \"spread\"",
        ),
        (
            web("    deploy:\n      update_config: { max_failure_ratio: lots }\n"),
            10,
            24,
            "services.web.deploy.update_config.max_failure_ratio",
            "expected a number, got \"lots\"",
        ),
        (
            web("    deploy:\n      update_config: { failure_action: stop }\n"),
            10,
            24,
            "services.web.deploy.update_config.failure_action",
            "use one of: pause, continue, rollback",
        ),
        (
            MINI.replace("  proxy: { service: proxy, url: \"http://127.0.0.1:8080\" }\n", "  keep: 1\n"),
            2,
            1,
            "x-stackctl",
            "missing x-stackctl.proxy: add",
        ),
        (
            MINI.replace(", url: \"http://127.0.0.1:8080\"", ""),
            3,
            3,
            "x-stackctl.proxy",
            "missing url: how stackctl reaches nginx",
        ),
        (
            MINI.replace("x-stackctl:\n", "x-stackctl:\n  keep: -1\n"),
            3,
            3,
            "x-stackctl.keep",
            "-1 is out of range (0 to 4294967295)",
        ),
        (MINI.replace("x-stackctl:\n", "x-stackctl:\n  history: 0\n"), 3, 3, "x-stackctl.history", "history must be 1 to 10000 entries, not 0"),
        (MINI.replace("x-stackctl:\n", "x-stackctl:\n  history: 10001\n"), 3, 3, "x-stackctl.history", "not 10001"),
        (
            MINI.replace("\"http://127.0.0.1:8080\"", "\"https://proxy:8443\""),
            3,
            28,
            "x-stackctl.proxy.url",
            "must start with http://",
        ),
    ];
    for (text, line, column, field, needle) in cases {
        let (l, c, f, message) = the_error(text);
        assert!(message.contains(needle), "{text}\nmessage {message:?} should contain {needle:?}");
        assert_eq!((l, c, f.as_str()), (*line, *column, *field), "{text}\nlocation of {message:?}");
    }
}

#[test]
fn located_errors_in_x_stackctl() {
    let route = |body: &str| web(&format!("    x-stackctl:\n      route:\n{body}"));
    let cases: &[(String, usize, usize, &str, &str)] = &[
        (
            route("        path: /\n"),
            10,
            7,
            "services.web.x-stackctl.route",
            "missing port: the container port nginx sends traffic to",
        ),
        (route("        port: 0\n"), 11, 9, "services.web.x-stackctl.route.port", "port 0 is out of range"),
        (
            route("        port: 80; evil\n"),
            11,
            9,
            "services.web.x-stackctl.route.port",
            "expected a whole number, got \"80; evil\"",
        ),
        (
            route("        port: 80\n        host: API.example.com\n"),
            12,
            9,
            "services.web.x-stackctl.route.host",
            "write it in lowercase: \"api.example.com\"",
        ),
        (
            route("        port: 80\n        hosts: [a.example.com, \"b;c.example.com\"]\n"),
            12,
            32,
            "services.web.x-stackctl.route.hosts[1]",
            "contains ';' (semicolon)",
        ),
        (
            route("        port: 80\n        host: a.com\n        hosts: [b.com]\n"),
            10,
            7,
            "services.web.x-stackctl.route",
            "use either host: or hosts:",
        ),
        (
            route("        port: 80\n        path: api\n"),
            12,
            9,
            "services.web.x-stackctl.route.path",
            "must start with '/'",
        ),
        (
            route("        port: 80\n        path: /a/../b\n"),
            12,
            9,
            "services.web.x-stackctl.route.path",
            "'..' segment",
        ),
        (
            route(&format!("        port: 80\n        path: /{}\n", "a".repeat(1024))),
            12,
            9,
            "services.web.x-stackctl.route.path",
            "is 1025 characters long; the limit is 1024",
        ),
        (
            route("        port: 80\n        health: { path: \"/h?x=1 2\" }\n"),
            12,
            19,
            "services.web.x-stackctl.route.health.path",
            "health query \"x=1 2\" contains a space",
        ),
        (
            route("        port: 80\n        health: { status: 99 }\n"),
            12,
            19,
            "services.web.x-stackctl.route.health.status",
            "not an HTTP status",
        ),
        (
            route("        port: 80\n        health: { interval: 0s }\n"),
            12,
            19,
            "services.web.x-stackctl.route.health.interval",
            "must be greater than 0",
        ),
        (
            route("        port: 80\n        health: { timeout: 5s, deadline: 2s }\n"),
            12,
            19,
            "services.web.x-stackctl.route.health.timeout",
            "longer than the deadline",
        ),
        (
            route("        port: 80\n        health: { successes: 0 }\n"),
            12,
            19,
            "services.web.x-stackctl.route.health.successes",
            "at least 1",
        ),
        (route("        port: 80\n        drain: 2h\n"), 12, 9, "services.web.x-stackctl.route.drain", "at most 1h"),
        (route("        port: 80\n        watch: 2h\n"), 12, 9, "services.web.x-stackctl.route.watch", "at most 1h"),
        (route("        port: 80\n        watch: soon\n"), 12, 9, "services.web.x-stackctl.route.watch", "duration"),
        (
            route("        port: 80\n    ports:\n      - target: 80\n        mode: host\n"),
            12,
            5,
            "services.web.ports",
            "cannot publish ports",
        ),
        (
            web("    x-stackctl:\n      route: { port: 80 }\n      stateful: true\n"),
            9,
            5,
            "services.web.x-stackctl",
            "either routed (route:) or stateful: true, not both",
        ),
        (
            MINI.replace(
                "  proxy:\n    image: nginx\n",
                "  proxy:\n    image: nginx\n    x-stackctl: { stateful: true }\n",
            ),
            7,
            5,
            "services.proxy.x-stackctl",
            "this service is the proxy",
        ),
        (
            MINI.replace("service: proxy", "service: prxy"),
            3,
            12,
            "x-stackctl.proxy.service",
            "the proxy service \"prxy\" is not in services:; did you mean \"proxy\"?",
        ),
        (
            MINI.replace("http://127.0.0.1:8080", "http://127.0.0.1:8080/nginx"),
            3,
            28,
            "x-stackctl.proxy.url",
            "must not have a path",
        ),
        (
            MINI.replace("url: \"http://127.0.0.1:8080\"", "url: \"http://127.0.0.1:8080\", listen: 0"),
            3,
            58,
            "x-stackctl.proxy.listen",
            "port 0 is out of range",
        ),
        (
            MINI.replace("url: \"http://127.0.0.1:8080\"", "url: \"http://127.0.0.1:8080\", config_dir: etc"),
            3,
            58,
            "x-stackctl.proxy.config_dir",
            "must start with '/'",
        ),
        (
            MINI.replace("{ service: proxy, ", "{ "),
            3,
            3,
            "x-stackctl.proxy",
            "missing service: name the service (in this file) that runs nginx",
        ),
        (
            MINI.replace("x-stackctl:\n  proxy: { service: proxy, url: \"http://127.0.0.1:8080\" }\n", ""),
            1,
            1,
            "x-stackctl",
            "missing x-stackctl: add x-stackctl: { proxy:",
        ),
        (
            MINI.replace("name: demo\n", ""),
            1,
            1,
            "name",
            "the stack has no name; add name: at the top of the file or pass --name",
        ),
        (MINI.replace("name: demo", "name: Demo_1"), 1, 1, "name", "write it in lowercase"),
        (MINI.replace("name: demo", "name: a-very-long-stack-name-for-demo"), 1, 1, "name", "the limit is 30"),
        (
            MINI.replace("  proxy:\n    image: nginx\n  web:\n    image: nginx\n", "  {}\n"),
            4,
            1,
            "services",
            "the stack has no services",
        ),
    ];
    for (text, line, column, field, needle) in cases {
        let (l, c, f, message) = the_error(text);
        assert!(message.contains(needle), "{text}\nmessage {message:?} should contain {needle:?}");
        assert_eq!((l, c, f.as_str()), (*line, *column, *field), "{text}\nlocation of {message:?}");
    }
}

#[test]
fn whole_stack_checks() {
    // Two routed services on the same host and path (a trailing slash does not make it differ).
    let text = web(
        "    x-stackctl:\n      route: { port: 80, path: /api }\n  api:\n    image: nginx\n    x-stackctl:\n      route: { port: 80, path: /api/ }\n",
    );
    assert_error(
        &text,
        10,
        26,
        "services.web.x-stackctl.route.path",
        "/api on any host is already routed to service \"api\"",
    );
    // Different hosts may share a path.
    let text = web(
        "    x-stackctl:\n      route: { port: 80, host: a.com }\n  api:\n    image: nginx\n    x-stackctl:\n      route: { port: 80, host: b.com }\n",
    );
    assert!(load(&text).is_ok());
    // A service named like a release of a routed one.
    let text = web("    x-stackctl:\n      route: { port: 80 }\n  web-r2:\n    image: nginx\n");
    assert_error(&text, 11, 3, "services.web-r2", "collides with the release names of routed service \"web\"");
    // Routed and proxy must share a network.
    let text = web("    networks: [back]\n    x-stackctl:\n      route: { port: 80 }\nnetworks:\n  back:\n");
    assert_error(
        &text,
        9,
        5,
        "services.web.networks",
        "nginx (service \"proxy\") cannot reach \"web\": they share no network",
    );
    // A port published twice.
    let text = web("    ports: [\"80:80\"]\n  api:\n    image: nginx\n    ports: [\"80:81\"]\n");
    assert_error(&text, 9, 13, "services.web.ports[0]", "port 80 is already published by service \"api\"");
    // Release names must fit in Swarm's 63 characters.
    let long = "a".repeat(30);
    let text = MINI.replace("name: demo", &format!("name: {}", &long[..29])).replace(
        "  web:\n    image: nginx\n",
        &format!("  {long}:\n    image: nginx\n    x-stackctl:\n      route: {{ port: 80 }}\n"),
    );
    assert_error(&text, 7, 3, &format!("services.{long}"), "can reach 68 characters, over Swarm's 63");
}

#[test]
fn all_errors_of_a_pass_are_reported_together() {
    let text = web("    stop_grace_period: 10\n    ports:\n      - \"1.2.3.4:80:80\"\n    networks: [nope]\n");
    let err = load(&text).unwrap_err();
    let found: Vec<(usize, usize)> = errors(&err).into_iter().map(|(l, c, _, _)| (l, c)).collect();
    assert_eq!(found, [(9, 5), (11, 9), (12, 16)]);
    let shown = err.to_string();
    assert!(
        shown.starts_with("3 errors in stacks/demo.yml:\nstacks/demo.yml:9:5: services.web.stop_grace_period: "),
        "{shown}"
    );
    assert_eq!(err.locations().len(), 3);
}

#[test]
fn yaml_syntax_errors_are_located() {
    let err = load("name: demo\nservices:\n  web:\n    image: [nginx\n").unwrap_err();
    let (line, column, field, message) = errors(&err).remove(0);
    assert!(message.starts_with("invalid YAML: "), "{message}");
    assert!(line >= 4 && column >= 1 && field.is_empty(), "{line}:{column} {field}");
    assert!(err.to_string().starts_with(&format!("stacks/demo.yml:{line}:{column}: invalid YAML")), "{err}");

    let (line, column, _, message) = the_error("name: demo\n  bad: indent\n");
    assert_eq!((line, column), (2, 6));
    assert!(message.contains("mapping values are not allowed"), "{message}");

    assert_error("", 1, 1, "", "the stack file is empty");
    assert_error("- a\n- b\n", 1, 1, "", "the stack file is not a mapping");
    assert_error("name: a\nname: b\n", 2, 1, "name", "duplicate entry with key \"name\"");
    assert_error(&web("    image: again\n"), 9, 5, "services.web.image", "duplicate entry");
}

// ---------------------------------------------------------------------------------------------
// Warnings

#[test]
fn warnings_are_located() {
    let text = web(
        "    container_name: web1\n    depends_on: [proxy]\n    ports:\n      - \"8080:80\"\n    deploy:\n      rollback_config: { parallelism: 1 }\n  api:\n    image: nginx\n    x-stackctl:\n      route: { port: 80 }\n    deploy:\n      endpoint_mode: vip\n",
    );
    let loaded = load(&text).unwrap();
    let found: Vec<(usize, usize, &str, &str)> = loaded
        .warnings
        .iter()
        .map(|w| (w.location.line, w.location.column, w.location.field.as_str(), w.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (9, 5, "services.web.container_name", "ignored by Swarm: container_name (Swarm names containers itself)"),
            (10, 5, "services.web.depends_on", "ignored by Swarm: depends_on (Swarm starts services independently; make each service retry until what it needs answers)"),
            (12, 9, "services.web.ports[0]", "port 8080 is published in ingress mode (the default, and the only mode of the short syntax), which needs the ip_vs kernel module for Swarm's routing mesh; use the long syntax with mode: host"),
            (14, 7, "services.web.deploy.rollback_config", "ignored by stackctl: rollback_config (stackctl rolls routed services back by switching nginx to the previous release)"),
            (20, 7, "services.api.deploy.endpoint_mode", "endpoint_mode: vip is not needed for a routed service (nginx reaches its tasks directly) and needs the ip_vs kernel module; remove it to use dnsrr"),
        ]
    );
    // The ingress port keeps the VIP; everything else defaults to dnsrr.
    assert_eq!(loaded.stack.services["web"].deploy.endpoint_mode, EndpointMode::Vip);
    assert_eq!(loaded.stack.services["proxy"].deploy.endpoint_mode, EndpointMode::Dnsrr);
}

#[test]
fn extension_keys_are_ignored() {
    let text = format!("x-anything: {{ whatever: [1, 2] }}\n{}    x-notes: \"${{NOT_INTERPOLATED\"\n", MINI);
    let loaded = load(&text).unwrap();
    assert_eq!(loaded.warnings, []);
}

// ---------------------------------------------------------------------------------------------
// The allowlist, through the loader: every dangerous character in a host, a path and a health
// path is refused, and the message names it.

#[test]
fn dangerous_characters_in_routes_are_refused() {
    let characters = [
        (";", "';' (semicolon)"),
        ("{", "'{' (opening brace)"),
        ("}", "'}' (closing brace)"),
        ("\\n", "a newline"),
        ("#", "'#' (hash)"),
        ("\\\"", "'\"' (double quote)"),
        ("'", "''' (single quote)"),
        (" ", "a space"),
        ("$$", "'$' (dollar sign)"),
        ("\\t", "a tab"),
    ];
    for (escaped, named) in characters {
        for (key, value, field, what) in [
            ("host", format!("a{escaped}b.example.com"), "route.host", "host"),
            ("path", format!("/a{escaped}b"), "route.path", "route path"),
            ("health", format!("{{ path: \"/h{escaped}\" }}"), "route.health.path", "health path"),
            ("health", format!("{{ path: \"/h?a={escaped}\" }}"), "route.health.path", "health query"),
        ] {
            let value = if key == "health" { value } else { format!("\"{value}\"") };
            let text = web(&format!("    x-stackctl:\n      route:\n        port: 80\n        {key}: {value}\n"));
            let (_, _, f, message) = the_error(&text);
            assert_eq!(f, format!("services.web.x-stackctl.{field}"), "{text}");
            assert!(message.contains(named), "{key} with {escaped:?}: {message}");
            assert!(message.starts_with(what), "{key} with {escaped:?}: {message}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Files next to the stack file

#[test]
fn files_are_read_relative_to_the_stack_file() {
    let dir = temp_dir("files");
    std::fs::write(dir.join("web.env"), "# defaults\nA=from-file\nB=from-file\nPASSED\n").unwrap();
    std::fs::write(dir.join("app.conf"), "listen 80;\n").unwrap();
    std::fs::write(dir.join("token"), "s3cret").unwrap();
    let text = web(r#"    env_file: web.env
    environment:
      B: from-environment
      FROM_CLI:
    volumes:
      - ./data:/data:ro
      - ../shared:/shared
      - cache:/cache
      - { type: tmpfs, target: /tmp }
    configs:
      - app
    secrets:
      - source: token
        target: api-token
        uid: "1000"
        mode: 0400
volumes:
  cache:
configs:
  app: { file: ./app.conf }
secrets:
  token: { file: token, name: shared-token }
"#);
    let opts = opts_with_env(&[("PASSED", "p"), ("FROM_CLI", "c")]);
    let stack = load_str(&dir.join("stack.yml"), &text, &opts).unwrap().stack;
    let web = &stack.services["web"];
    let env: Vec<(&str, &str)> = web.environment.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(env, [("A", "from-file"), ("B", "from-environment"), ("FROM_CLI", "c"), ("PASSED", "p")]);

    let parent = dir.parent().unwrap();
    assert_eq!(
        web.volumes,
        [
            Mount {
                kind: MountKind::Bind,
                source: dir.join("data").display().to_string(),
                target: "/data".into(),
                read_only: true
            },
            Mount {
                kind: MountKind::Bind,
                source: parent.join("shared").display().to_string(),
                target: "/shared".into(),
                read_only: false
            },
            Mount { kind: MountKind::Volume, source: "cache".into(), target: "/cache".into(), read_only: false },
            Mount { kind: MountKind::Tmpfs, source: String::new(), target: "/tmp".into(), read_only: false },
        ]
    );
    assert_eq!(stack.volumes["cache"].real_name, "demo_cache");
    assert_eq!(
        web.configs,
        [FileRef { source: "app".into(), target: "/app".into(), uid: None, gid: None, mode: 0o444 }]
    );
    assert_eq!(
        web.secrets,
        [FileRef {
            source: "token".into(),
            target: "/run/secrets/api-token".into(),
            uid: Some("1000".into()),
            gid: None,
            mode: 0o400
        }]
    );
    assert_eq!(stack.configs["app"].content.as_deref(), Some(&b"listen 80;\n"[..]));
    assert_eq!(stack.configs["app"].real_name, "demo_app");
    assert_eq!(stack.secrets["token"].real_name, "shared-token");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn oversized_configs_are_refused() {
    let dir = temp_dir("big");
    std::fs::write(dir.join("big.conf"), vec![b'x'; 600 * 1024]).unwrap();
    let text = web("configs:\n  big: { file: big.conf }\n");
    let err = load_str(&dir.join("stack.yml"), &text, &LoadOptions::default()).unwrap_err();
    let (line, column, field, message) = errors(&err).remove(0);
    assert_eq!((line, column, field.as_str()), (10, 10, "configs.big.file"));
    assert!(message.ends_with("is 614400 bytes; Swarm limits configs and secrets to 500 KiB"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_env_file_lines_are_reported_with_their_line() {
    let dir = temp_dir("envfile");
    std::fs::write(dir.join("bad.env"), "A=1\nNOT VALID=2\n").unwrap();
    let text = web("    env_file: bad.env\n");
    let err = load_str(&dir.join("stack.yml"), &text, &LoadOptions::default()).unwrap_err();
    let (line, column, field, message) = errors(&err).remove(0);
    assert_eq!((line, column, field.as_str()), (9, 5, "services.web.env_file"));
    assert!(message.ends_with("bad.env:2: environment variable name contains a space at character 4; write KEY=VALUE"), "{message}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// Compose spellings

#[test]
fn compose_spellings() {
    let text = web(r#"    command: sh -c 'echo "$$HOME"'
    entrypoint: [/tini, --]
    environment: [A=1, "B=x=y"]
    labels: [team=web, flag]
    ports:
      - "9000-9001:9000-9001/udp"
      - { target: 81, published: "8081", mode: host }
    healthcheck:
      test: curl -f localhost
      interval: 1m30s
      retries: "5"
    stop_signal: SIGTERM
    user: 1000
    working_dir: /srv
    hostname: web-host
    init: true
    networks:
      default:
        aliases: [www]
    deploy:
      labels: { tier: front }
      placement:
        constraints: [node.role == worker]
        preferences: [{ spread: node.labels.zone }]
        max_replicas_per_node: 1
      restart_policy: { condition: on-failure, max_attempts: 3 }
      update_config: { parallelism: 2, order: stop-first }
"#);
    let web = load(&text).unwrap().stack.services.remove("web").unwrap();
    assert_eq!(web.command, Some(vec!["sh".into(), "-c".into(), "echo \"$HOME\"".into()]));
    assert_eq!(web.entrypoint, Some(vec!["/tini".into(), "--".into()]));
    assert_eq!(web.environment, BTreeMap::from([("A".into(), "1".into()), ("B".into(), "x=y".into())]));
    assert_eq!(web.labels, BTreeMap::from([("flag".into(), String::new()), ("team".into(), "web".into())]));
    assert_eq!(
        web.ports,
        [
            Port { target: 9000, published: Some(9000), protocol: Protocol::Udp, mode: PublishMode::Ingress },
            Port { target: 9001, published: Some(9001), protocol: Protocol::Udp, mode: PublishMode::Ingress },
            Port { target: 81, published: Some(8081), protocol: Protocol::Tcp, mode: PublishMode::Host },
        ]
    );
    assert_eq!(
        web.healthcheck,
        Some(Healthcheck {
            test: vec!["CMD-SHELL".into(), "curl -f localhost".into()],
            interval: Some(ms(90_000)),
            timeout: None,
            retries: Some(5),
            start_period: None,
        })
    );
    assert_eq!(
        (web.user.as_deref(), web.working_dir.as_deref(), web.hostname.as_deref()),
        (Some("1000"), Some("/srv"), Some("web-host"))
    );
    assert_eq!((web.stop_signal.as_deref(), web.init), (Some("SIGTERM"), Some(true)));
    assert_eq!(web.networks, [ServiceNetwork { name: "default".into(), aliases: vec!["www".into()] }]);
    assert_eq!(web.deploy.labels, BTreeMap::from([("tier".into(), "front".into())]));
    assert_eq!(
        web.deploy.placement,
        Placement {
            constraints: vec!["node.role == worker".into()],
            preferences: vec!["node.labels.zone".into()],
            max_replicas_per_node: Some(1),
        }
    );
    assert_eq!(
        web.deploy.restart_policy,
        Some(RestartPolicy { condition: "on-failure".into(), delay: None, max_attempts: Some(3), window: None })
    );
    let update = web.deploy.update_config.unwrap();
    assert_eq!((update.parallelism, update.order.as_deref()), (Some(2), Some("stop-first")));
}

#[test]
fn x_stackctl_defaults_and_spellings() {
    let text = MINI.replace("url: \"http://127.0.0.1:8080\" }", "url: \"http://127.0.0.1:8080/\" }\n  keep: 5")
        + "    x-stackctl:\n      route: { port: \"8080\", host: api.example.com }\n  db:\n    image: postgres:16\n    x-stackctl: { stateful: true }\n";
    let stack = load(&text).unwrap().stack;
    assert_eq!(stack.x.keep, 5);
    assert_eq!(stack.x.history, 100, "the default");
    let text = MINI.replace("x-stackctl:\n", "x-stackctl:\n  history: 7\n");
    assert_eq!(load(&text).unwrap().stack.x.history, 7);
    assert_eq!(
        stack.services["web"].role,
        Role::Routed(Route {
            port: 8080,
            hosts: vec!["api.example.com".into()],
            path: "/".into(),
            health: HealthProbe {
                path: "/".into(),
                status: 200,
                interval: ms(1000),
                timeout: ms(2000),
                successes: 3,
                deadline: ms(120_000),
            },
            drain: ms(10_000),
            watch: ms(10_000),
            keep: 5,
            rollback_window: ms(0),
            settings: RouteSettings::default(),
        })
    );
    assert_eq!(stack.services["db"].role, Role::Stateful);
    assert_eq!(stack.services["proxy"].role, Role::Proxy);
    assert_eq!(stack.x.proxy.listen, 8080);
    assert_eq!(stack.x.proxy.config_dir, "/etc/nginx/stackctl");
}

#[test]
fn a_zero_watch_disables_the_watch_window() {
    let text = web("    x-stackctl:\n      route: { port: 80, watch: 0s }\n");
    let Role::Routed(route) = &load(&text).unwrap().stack.services["web"].role else { panic!("routed") };
    assert_eq!(route.watch, Duration::ZERO);
}

#[test]
fn networks_are_resolved() {
    let text = web(
        "    networks: [front, ext]\nnetworks:\n  front: { driver_opts: { encrypted: \"\" }, labels: [a=b] }\n  ext: { external: true, name: shared-ingress }\n  unused: { attachable: false, name: custom }\n",
    );
    let stack = load(&text).unwrap().stack;
    let net = |name: &str| {
        let n = &stack.networks[name];
        (n.real_name.as_str(), n.driver.as_str(), n.attachable, n.external)
    };
    assert_eq!(net("front"), ("demo_front", "overlay", true, false));
    assert_eq!(net("ext"), ("shared-ingress", "overlay", false, true));
    assert_eq!(net("unused"), ("custom", "overlay", false, false));
    // The proxy names no network, so it is on the implicit default one.
    assert_eq!(net("default"), ("demo_default", "overlay", true, false));
    assert_eq!(stack.networks["front"].driver_opts["encrypted"], "");
    assert_eq!(stack.networks["front"].labels["a"], "b");
}

// ---------------------------------------------------------------------------------------------
// Robustness

fn assert_never_panics_and_locates(text: &str) {
    if let Err(err) = load(text) {
        for location in err.locations() {
            assert!(location.line >= 1 && location.column >= 1, "{err}");
        }
    }
}

#[test]
fn hostile_yaml_is_refused_quickly() {
    let started = std::time::Instant::now();
    let deep = format!("name: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
    let (line, _, _, message) = the_error(&deep);
    assert_eq!(line, 1);
    assert_eq!(message, "invalid YAML: nested more than 64 levels deep");
    let deep = format!("name:\n  {}x\n", "- ".repeat(50_000));
    assert_eq!(the_error(&deep).3, "invalid YAML: nested more than 64 levels deep");
    // A billion laughs: serde_yaml refuses to expand that many aliases.
    let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (prev, next) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"]) {
        let refs = vec![format!("*{prev}"); 10].join(", ");
        laughs.push_str(&format!("{next}: &{next} [{refs}]\n"));
    }
    assert!(load(&laughs).is_err());
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "took {:?}", started.elapsed());
}

/// Regression (issue 13): a trailing '/' passed validation, then the renderer refused the
/// switch file's `//` after green was created.
#[test]
fn a_config_dir_the_renderer_would_refuse_is_refused_when_loading() {
    let text = MINI.replace("url: \"http://127.0.0.1:8080\"", "url: \"http://127.0.0.1:8080\", config_dir: /etc/nginx/x/");
    let text = format!("{text}    x-stackctl:\n      route: {{ port: 80 }}\n");
    assert_error(&text, 3, 58, "x-stackctl.proxy.config_dir", "must not end with '/'");
}

#[test]
fn oversized_and_non_utf8_files_are_located_errors() {
    let dir = temp_dir("limits");
    let big = dir.join("big.yml");
    std::fs::write(&big, format!("{MINI}{}", "#\n".repeat(MAX_FILE_BYTES / 2))).unwrap();
    let err = crate::spec::load(&big, &LoadOptions::default()).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:1:1: ", big.display())) && err.contains("larger than 1048576 bytes"), "{err}");
    let binary = dir.join("binary.yml");
    std::fs::write(&binary, [MINI.as_bytes(), b"    user: \"\xff\"\n"].concat()).unwrap();
    let err = crate::spec::load(&binary, &LoadOptions::default()).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:9:12: ", binary.display())) && err.contains("not UTF-8"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Regression (issue 13): one anchor of K items referenced K times built K² values.
#[test]
fn alias_fan_out_is_refused_at_the_alias_that_runs_out() {
    let k = 4_000;
    let text = format!("{MINI}x-a: &a [{}]\nx-b: [{}]\n", vec!["x"; k].join(","), vec!["*a"; k].join(","));
    let started = std::time::Instant::now();
    let (line, _, _, message) = the_error(&text);
    // At the anchor's items being repeated, or the alias repeating them.
    assert!(line == 9 || line == 10, "line {line}");
    assert!(message.contains("expansion limit"), "{message}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "took {:?}", started.elapsed());
    // Anchors and merge keys as stack files use them stay well within the budget.
    assert!(load(DEMO).is_ok());
}

/// Regression (issue 13): control characters from the file reached the terminal raw.
#[test]
fn keys_and_values_are_printed_with_control_characters_escaped() {
    let text = web("    \"x\\e[31m\\nFORGED: ok\": 1\n");
    let shown = load(&text).unwrap_err().to_string();
    assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "{shown:?}");
    assert!(!shown.lines().any(|l| l.starts_with("FORGED")), "{shown}");
    assert!(shown.contains("\\u{1b}"), "{shown}");
}

// 256 cases each by default; PROPTEST_CASES=5000 for a longer run.
proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        assert_never_panics_and_locates(&text);
    }

    #[test]
    fn yaml_like_text_never_panics(text in r#"(name: |services:|\n  web:|\n    image: |ports:|- |x-stackctl:|route:|\$\{|\}|\[|\]|\{|\}|: |,|&a |\*a|<<: |"|'|#|[a-z0-9./]{1,6}|\n|  ){0,60}"#) {
        assert_never_panics_and_locates(&text);
    }

    #[test]
    fn mutated_demo_never_panics(at in 0..DEMO.len(), insert in r#"[\[\]{}:,&*!|>'"%@`$\- \n\t]{1,3}|\PC{1,4}"#, delete in 0usize..4) {
        let mut text = DEMO.to_string();
        let end = (at + delete).min(text.len());
        text.replace_range(at..end, &insert);
        assert_never_panics_and_locates(&text);
    }
}

#[test]
fn route_settings_load_and_refusals_are_located() {
    let route = |body: &str| web(&format!("    x-stackctl:\n      route:\n        port: 80\n{body}"));
    let text = route(
        "        client_max_body_size: 50m\n        read_timeout: 1h\n        send_timeout: 90s\n        buffering: false\n        headers:\n          X-Source: edge 1\n          Authorization: \"\"\n",
    );
    let Role::Routed(r) = &load(&text).unwrap().stack.services["web"].role else { panic!("routed") };
    let want = RouteSettings {
        client_max_body_size: Some(50 << 20),
        read_timeout: Some(ms(3_600_000)),
        send_timeout: Some(ms(90_000)),
        buffering: false,
        headers: vec![("Authorization".into(), String::new()), ("X-Source".into(), "edge 1".into())],
    };
    assert_eq!(r.settings, want);
    let Role::Routed(r) = &load(&route("")).unwrap().stack.services["web"].role else { panic!("routed") };
    assert_eq!(r.settings, RouteSettings::default(), "nginx's defaults unless the file says otherwise");
    assert!(r.settings.buffering);

    let at = |key: &str| format!("services.web.x-stackctl.route.{key}");
    let cases: &[(String, usize, usize, String, &str)] = &[
        (route("        client_max_body_size: 65g\n"), 12, 9, at("client_max_body_size"), "larger than the limit of 64g"),
        (route("        client_max_body_size: 10 mb; x\n"), 12, 9, at("client_max_body_size"), "is not a size"),
        (route("        read_timeout: 500ms\n"), 12, 9, at("read_timeout"), "read_timeout 500ms is out of range"),
        (route("        send_timeout: 25h\n"), 12, 9, at("send_timeout"), "from 1s to 24h"),
        (route("        read_timeout: 10\n"), 12, 9, at("read_timeout"), "missing a unit"),
        (route("        headers:\n          X-A: \"a$$b\"\n"), 13, 11, at("headers.X-A"), "'$' (dollar sign)"),
        (route("        headers:\n          X-A: \"a\\\"; evil\"\n"), 13, 11, at("headers.X-A"), "'\"' (double quote)"),
        (route("        headers:\n          \"X A\": b\n"), 13, 11, at("headers.X A"), "header name \"X A\" contains a space"),
        (route("        headers:\n          Host: evil.example.com\n"), 13, 11, at("headers.Host"), "set by stackctl"),
        (route("        headers:\n          X-A: \"1\"\n          x-a: \"2\"\n"), 14, 11, at("headers.x-a"), "set twice"),
    ];
    for (text, line, column, field, needle) in cases {
        let (l, c, f, message) = the_error(text);
        assert!(message.contains(needle), "{text}\nmessage {message:?} should contain {needle:?}");
        assert_eq!((l, c, f.as_str()), (*line, *column, field.as_str()), "location of {message:?}");
    }
    let many: String = (0..=32).map(|i| format!("          X-{i}: \"1\"\n")).collect();
    assert_error(&route(&format!("        headers:\n{many}")), 12, 9, "services.web.x-stackctl.route.headers", "limit is 32");
}

// ---------------------------------------------------------------------------------------------
// Environments: a base file and an overlay per environment

/// A base file whose proxy publishes no port: each environment's overlay publishes its own.
const SHOP: &str = r#"name: shop
x-stackctl:
  proxy: { service: proxy, url: "http://127.0.0.1:8080" }
services:
  proxy:
    image: nginx
  web:
    image: ${WEB_IMAGE:-shop:v1}
    environment: [MODE=base, LEVEL=info]
    deploy: { replicas: 2 }
    x-stackctl:
      route: { port: 80, path: / }
"#;

const SHOP_STAGING: &str = r#"name: shop-staging
x-stackctl:
  proxy: { url: "http://127.0.0.1:19010" }
  context: staging-engine
services:
  proxy:
    ports: [{ target: 8080, published: 19010, mode: host }]
  web:
    environment: { MODE: staging }
    deploy: { replicas: "${REPLICAS:-1}" }
"#;

/// `dir/shop.yml` and `dir/shop.<env>.yml` (and `.env` when given); the base file's path.
fn shop_files(name: &str, env: &str, overlay: &str, variables: Option<&str>) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::write(dir.join("shop.yml"), SHOP).unwrap();
    std::fs::write(dir.join(format!("shop.{env}.yml")), overlay).unwrap();
    if let Some(v) = variables {
        std::fs::write(dir.join(format!("shop.{env}.env")), v).unwrap();
    }
    dir.join("shop.yml")
}

fn in_env(env: &str, vars: &[(&str, &str)]) -> LoadOptions {
    LoadOptions { environment: Some(env.into()), ..opts_with_env(vars) }
}

#[test]
fn an_environment_has_its_own_name_ports_variables_and_context() {
    let base = shop_files("env-ok", "staging", SHOP_STAGING, Some("# staging\nWEB_IMAGE=shop:v2\nREPLICAS=3\n"));
    let stack = super::load(&base, &in_env("staging", &[])).unwrap().stack;
    assert_eq!(stack.name, "shop-staging");
    assert_eq!(stack.x.proxy.url, "http://127.0.0.1:19010");
    assert_eq!(stack.x.proxy.service, "proxy", "merged key by key");
    assert_eq!(stack.environment, Environment { name: Some("staging".into()), context: Some("staging-engine".into()) });
    let published: Vec<Option<u16>> = stack.services["proxy"].ports.iter().map(|p| p.published).collect();
    assert_eq!(published, [Some(19010)]);
    let web = &stack.services["web"];
    assert_eq!((web.image.as_str(), web.deploy.replicas), ("shop:v2", 3));
    assert_eq!(web.environment, BTreeMap::from([("MODE".into(), "staging".into()), ("LEVEL".into(), "info".into())]));
    // The process's variables win over the env file's, as over Compose's `.env`.
    let stack = super::load(&base, &in_env("staging", &[("REPLICAS", "4")])).unwrap().stack;
    assert_eq!(stack.services["web"].deploy.replicas, 4);
    // Without --env: the base file alone, no environment.
    let stack = super::load(&base, &LoadOptions::default()).unwrap().stack;
    assert_eq!((stack.name.as_str(), stack.environment.name.clone(), stack.services["proxy"].ports.len()), ("shop", None, 0));
}

#[test]
fn errors_name_the_file_line_and_field_they_are_in() {
    let overlay = "services:\n  web:\n    deploy:\n      replicas: many\n    environment:\n      - \"BAD KEY=1\"\n";
    let base = shop_files("env-errors", "staging", overlay, None);
    let err = super::load(&base, &in_env("staging", &[])).unwrap_err();
    let overlay_file = base.with_file_name("shop.staging.yml");
    let located: Vec<(PathBuf, usize, String)> =
        err.locations().iter().map(|l| (l.file.clone(), l.line, l.field.clone())).collect();
    assert_eq!(located, [(overlay_file.clone(), 4, "services.web.deploy.replicas".to_string())], "{err}");
    assert!(err.to_string().starts_with(&format!("{}:4:", overlay_file.display())), "{err}");

    // An environment entry of the overlay, after the lists were merged as mappings.
    let overlay = "services:\n  web:\n    environment:\n      - \"OK=1\"\n      - \"BAD KEY=1\"\n";
    let base = shop_files("env-errors-2", "staging", overlay, None);
    let err = super::load(&base, &in_env("staging", &[])).unwrap_err();
    let l = err.locations()[0].clone();
    assert_eq!((l.file.file_name().unwrap().to_str(), l.line), (Some("shop.staging.yml"), 5), "{err}");

    // A base value the overlay did not touch is still the base file's.
    let overlay = "x-stackctl:\n  history: 0\nservices:\n  web:\n    deploy: { replicas: 1 }\n";
    let base = shop_files("env-errors-3", "staging", overlay, None);
    let bad_base = SHOP.replace("LEVEL=info", "LEVEL=info, \"X Y=1\"");
    std::fs::write(&base, bad_base).unwrap();
    let err = super::load(&base, &in_env("staging", &[])).unwrap_err();
    let mut at: Vec<(String, usize)> =
        err.locations().iter().map(|l| (l.file.file_name().unwrap().to_string_lossy().into_owned(), l.line)).collect();
    at.sort();
    assert_eq!(at, [("shop.staging.yml".to_string(), 2), ("shop.yml".to_string(), 9)], "{err}");

    // Interpolation and YAML errors of the overlay are the overlay's.
    let base = shop_files("env-errors-4", "staging", "name: ${NAME:?the staging name}\n", None);
    let err = super::load(&base, &in_env("staging", &[])).unwrap_err();
    assert_eq!(err.locations()[0].file, base.with_file_name("shop.staging.yml"), "{err}");
    let base = shop_files("env-errors-5", "staging", "services: [\n", None);
    let err = super::load(&base, &in_env("staging", &[])).unwrap_err();
    assert_eq!(err.locations()[0].file, base.with_file_name("shop.staging.yml"), "{err}");
}

#[test]
fn a_missing_overlay_or_a_bad_env_file_is_named() {
    let base = shop_files("env-missing", "staging", SHOP_STAGING, None);
    let err = super::load(&base, &in_env("production", &[])).unwrap_err().to_string();
    assert!(err.contains(&format!("{} does not exist", base.with_file_name("shop.production.yml").display())), "{err}");
    let base = shop_files("env-file", "staging", SHOP_STAGING, Some("A=1\nnot a key=2\n"));
    let err = super::load(&base, &in_env("staging", &[])).unwrap_err();
    let l = err.locations()[0].clone();
    assert_eq!((l.file, l.line), (base.with_file_name("shop.staging.env"), 2), "{err}");
}

#[test]
fn hostile_environment_and_context_names_are_refused() {
    let base = shop_files("env-hostile", "staging", SHOP_STAGING, None);
    std::fs::write(base.with_file_name("x.yml"), SHOP_STAGING).unwrap();
    for bad in ["../x", "/etc/passwd", "Staging", "a.b", "", "a\u{1b}[2J"] {
        let err = super::load(&base, &in_env(bad, &[])).unwrap_err().to_string();
        assert!(err.contains("--env"), "{bad:?}: {err}");
        assert!(!err.contains('\u{1b}'), "{err}");
    }
    let overlay = SHOP_STAGING.replace("staging-engine", "../../etc");
    let base = shop_files("env-hostile-context", "staging", &overlay, None);
    let err = super::load(&base, &in_env("staging", &[])).unwrap_err();
    let l = err.locations()[0].clone();
    assert_eq!((l.file.file_name().unwrap().to_str(), l.line, l.field.as_str()), (Some("shop.staging.yml"), 4, "x-stackctl.context"), "{err}");
}

#[test]
fn checked_in_environments_load() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("stacks/shop.yml");
    // (environment, stack name, nginx's published port, web replicas)
    for (env, name, port, replicas) in [("staging", "shop-staging", 8081, 1), ("production", "shop", 8082, 2)] {
        let stack = super::load(&base, &in_env(env, &[])).unwrap_or_else(|e| panic!("{env}: {e}")).stack;
        let published: Vec<Option<u16>> = stack.services["proxy"].ports.iter().map(|p| p.published).collect();
        assert_eq!((stack.name.as_str(), published, stack.services["web"].deploy.replicas), (name, vec![Some(port)], replicas), "{env}");
        assert_eq!(stack.x.proxy.url, format!("http://127.0.0.1:{port}"));
        assert_eq!(stack.environment.name.as_deref(), Some(env));
    }
}

#[test]
fn gate_block_is_read_with_its_defaults() {
    let text = MINI.replace(
        "x-stackctl:\n",
        "x-stackctl:\n  gate:\n    soak: 2m\n    window: 10m\n    max_5xx: 0.5%\n    min_requests: 50\n    p99: 800ms\n    smoke:\n      - { path: /healthz }\n      - { method: POST, host: shop.example.com, path: \"/api?x=1\", status: 201, body: \"^ok\" }\n",
    );
    let gate = load(&text).unwrap().stack.x.gate;
    assert_eq!(
        (gate.soak, gate.window, gate.max_5xx_percent, gate.min_requests, gate.p99),
        (Duration::from_secs(120), Duration::from_secs(600), 0.5, 50, Some(Duration::from_millis(800)))
    );
    assert_eq!(
        gate.smoke,
        vec![
            Smoke { method: "GET".into(), host: None, path: "/healthz".into(), status: 200, body: None },
            Smoke { method: "POST".into(), host: Some("shop.example.com".into()), path: "/api?x=1".into(), status: 201, body: Some("^ok".into()) },
        ]
    );
    assert_eq!(load(MINI).unwrap().stack.x.gate, GateSpec::default());
}

#[test]
fn located_errors_in_the_gate() {
    let gate = |body: &str| MINI.replace("x-stackctl:\n", &format!("x-stackctl:\n  gate:\n{body}"));
    let cases: &[(String, usize, usize, &str, &str)] = &[
        (gate("    max_5xx: 1\n"), 4, 5, "x-stackctl.gate.max_5xx", "expected a share in percent"),
        (gate("    max_5xx: 150%\n"), 4, 5, "x-stackctl.gate.max_5xx", "not between 0% and 100%"),
        (gate("    window: 0s\n"), 4, 5, "x-stackctl.gate.window", "must be greater than 0"),
        (gate("    soak: soon\n"), 4, 5, "x-stackctl.gate.soak", "has an unknown unit"),
        (gate("    p99: 0s\n"), 4, 5, "x-stackctl.gate.p99", "must be greater than 0"),
        (gate("    smoke:\n      - { status: 200 }\n"), 5, 9, "x-stackctl.gate.smoke[0]", "missing path"),
        (gate("    smoke:\n      - { path: \"/a;b\" }\n"), 5, 11, "x-stackctl.gate.smoke[0].path", "contains ';' (semicolon)"),
        (gate("    smoke:\n      - { path: /, host: \"*.example.com\" }\n"), 5, 20, "x-stackctl.gate.smoke[0].host", "is a wildcard"),
        (gate("    smoke:\n      - { path: /, host: \"a b\" }\n"), 5, 20, "x-stackctl.gate.smoke[0].host", "contains a space"),
        (gate("    smoke:\n      - { path: /, method: FETCH }\n"), 5, 20, "x-stackctl.gate.smoke[0].method", "is not valid here"),
        (gate("    smoke:\n      - { path: /, status: 999 }\n"), 5, 20, "x-stackctl.gate.smoke[0].status", "not an HTTP status"),
        (gate("    smoke:\n      - { path: /, body: \"(\" }\n"), 5, 20, "x-stackctl.gate.smoke[0].body", "not a valid regular expression"),
        (gate("    windw: 1m\n"), 4, 5, "x-stackctl.gate.windw", "did you mean \"window\""),
    ];
    for (text, line, column, field, needle) in cases {
        let (l, c, f, message) = the_error(text);
        assert!(message.contains(needle), "{text}\nmessage {message:?} should contain {needle:?}");
        assert_eq!((l, c, f.as_str()), (*line, *column, *field), "{text}\nlocation of {message:?}");
    }
}

#!/usr/bin/env bash
# stackctl test rig: turns a bare Debian bookworm machine (root) into a test
# environment: Docker engine + single-node swarm + local registry on
# 127.0.0.1:5000 + locally built images (no pulls: Docker Hub is unreachable)
# + a second registry on 127.0.0.1:5001 that requires a login (htpasswd).
#
# Idempotent; every step is skipped quickly when already done.
#
#   tests/rig/setup.sh           set everything up
#   tests/rig/setup.sh --check   only report what is missing (exit 1 if anything is)
#
# Environment:
#   STACKCTL_RIG_DIR      state dir (default /tmp/stackctl-rig): dockerd data/exec
#                         root (only if the rig starts its own engine), registry
#                         data, debootstrap cache, logs, rig.env
#   STACKCTL_RIG_REBUILD  1 = rebuild and re-push all images (debootstrap cache is
#                         kept; delete $STACKCTL_RIG_DIR/cache to redo it)
#   STACKCTL_RIG_MIRROR   Debian mirror for debootstrap (default: taken from apt config)
set -euo pipefail

RIG="${STACKCTL_RIG_DIR:-/tmp/stackctl-rig}"
REGISTRY="127.0.0.1:5000"
REBUILD="${STACKCTL_RIG_REBUILD:-0}"
SUITE="bookworm"
HASH_LABEL="io.stackctl.rig.hash"
APT_PKGS=(docker.io busybox-static debootstrap docker-registry apache2-utils curl ca-certificates socat openssl websocketd e2fsprogs)
DEMO_IMAGES=(stackctl-demo:v1 stackctl-demo:v2 stackctl-demo:broken stackctl-demo:flaky stackctl-demo:dies stackctl-demo:fails)
NGINX_IMAGE="stackctl-nginx:latest"
NGINX_NORELOAD_IMAGE="stackctl-nginx:noreload"   # `nginx -s reload` can silently do nothing
WS_IMAGES=(stackctl-ws:v1 stackctl-ws:v2)          # websocketd echo servers (WebSocket tests)
ALL_IMAGES=("${DEMO_IMAGES[@]}" "$NGINX_IMAGE" "$NGINX_NORELOAD_IMAGE" "${WS_IMAGES[@]}")
# Registry with login: fixed user, password generated once (kept in $AUTH_DIR/password, 0600).
AUTH_REGISTRY="127.0.0.1:5001"
AUTH_DIR="$RIG/registry-auth"
AUTH_USER="stackctl"
AUTH_IMAGES=(stackctl-demo:v1 stackctl-demo:v2)

export DOCKER_BUILDKIT=0          # legacy builder: works offline, no buildx needed
export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C

CHECK=0
case "${1:-}" in
  "") ;;
  --check) CHECK=1 ;;
  -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

T0=$SECONDS
log()  { printf '[rig] %s\n' "$*"; }
die()  { printf '[rig] ERROR: %s\n' "$*" >&2; exit 1; }
tailf() { [[ -f $1 ]] && { echo "----- tail of $1 -----" >&2; tail -n "${2:-40}" "$1" >&2; echo "-----" >&2; }; return 0; }

mkdir -p "$RIG" "$RIG/logs" "$RIG/cache" "$RIG/build"
# One setup at a time (run-all.sh may be started from several shells).
# fd 9 is closed for every background daemon we spawn (9>&-).
exec 9>"$RIG/.setup.lock"
if ! flock -n 9; then log "another setup.sh is running; waiting for it"; flock 9; fi

# ---------------------------------------------------------------- helpers
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

engine_version() { timeout 10 docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null; }
engine_up() { engine_version >/dev/null; }

swarm_state() { timeout 10 docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown; }

registry_code() { curl -s -o /dev/null -m 3 -w '%{http_code}' "http://$REGISTRY/v2/" 2>/dev/null || true; }
registry_up() { [[ "$(registry_code)" == 200 ]]; }

# registry_digest NAME:TAG -> manifest digest in the registry, or "" if absent
registry_digest() {
  local name="${1%%:*}" tag="${1##*:}"
  curl -fsSI -m 5 -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://$REGISTRY/v2/$name/manifests/$tag" 2>/dev/null \
    | awk 'tolower($1)=="docker-content-digest:"{print $2}' | tr -d '\r' || true
}

# auth_curl URL [CURL-ARGS...]: curl with the auth registry's credentials, given through a
# config on stdin so the password never shows up in a process list.
auth_curl() {
  local url="$1"; shift
  printf 'user = "%s:%s"\n' "$AUTH_USER" "$(cat "$AUTH_DIR/password")" | curl -K - "$@" "$url"
}
# auth_codes -> "<HTTP code without credentials> <HTTP code with credentials>" for /v2/
auth_codes() {
  local anon with=000
  anon=$(curl -s -o /dev/null -m 3 -w '%{http_code}' "http://$AUTH_REGISTRY/v2/" 2>/dev/null || true)
  [[ -s $AUTH_DIR/password ]] \
    && with=$(auth_curl "http://$AUTH_REGISTRY/v2/" -s -o /dev/null -m 3 -w '%{http_code}' 2>/dev/null || true)
  echo "${anon:-000} ${with:-000}"
}
# auth_digest NAME:TAG -> manifest digest in the auth registry, or ""
auth_digest() {
  local name="${1%%:*}" tag="${1##*:}"
  auth_curl "http://$AUTH_REGISTRY/v2/$name/manifests/$tag" -fsSI -m 5 \
      -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' 2>/dev/null \
    | awk 'tolower($1)=="docker-content-digest:"{print $2}' | tr -d '\r' || true
}

# local_info IMAGE -> "<rig hash label> <repo digests...>" or "" if image absent
local_info() {
  docker image inspect --format "{{index .Config.Labels \"$HASH_LABEL\"}} {{join .RepoDigests \" \"}}" "$1" 2>/dev/null || true
}

SELFTEST_CONTAINER=""
cleanup() { [[ -z $SELFTEST_CONTAINER ]] || docker rm -f "$SELFTEST_CONTAINER" >/dev/null 2>&1 || true; }
trap cleanup EXIT

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# rm -rf a build tree, but never through a mount point (debootstrap mounts /proc etc.)
safe_rmtree() {
  local d="$1" m
  [[ -e $d ]] || return 0
  while read -r m; do [[ -n $m ]] && umount -l "$m" 2>/dev/null || true; done \
    < <(awk -v d="$(readlink -f "$d")/" 'index($2 "/", d)==1 {print $2}' /proc/mounts | sort -r)
  rm -rf --one-file-system "$d"
}

# Debian mirror that apt uses here (deb822 *.sources first, then one-line *.list).
apt_mirror() {
  local f uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    uri=$(awk -v suite="$SUITE" 'BEGIN{RS=""; FS="\n"}
      { types=""; uris=""; suites=""; enabled="yes"
        for (i=1; i<=NF; i++) { l=$i; if (l ~ /^[ \t]*#/) continue
          if (match(tolower(l), /^types:[ \t]*/))   types=substr(l, RLENGTH+1)
          if (match(tolower(l), /^uris:[ \t]*/))    uris=substr(l, RLENGTH+1)
          if (match(tolower(l), /^suites:[ \t]*/))  suites=substr(l, RLENGTH+1)
          if (match(tolower(l), /^enabled:[ \t]*/)) enabled=tolower(substr(l, RLENGTH+1)) }
        if (enabled != "no" && (" " types " ") ~ / deb / && (" " suites " ") ~ (" " suite " ")) {
          n=split(uris, u, /[ \t]+/); for (j=1; j<=n; j++) if (u[j] ~ /^https?:\/\//) { print u[j]; exit } } }' "$f")
    [[ -n $uri ]] && { echo "$uri"; return; }
  done
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | sed 's/#.*//' \
    | awk -v suite="$SUITE" '$1=="deb" { i=2; if ($i ~ /^\[/) { while (i<=NF && $i !~ /\]$/) i++; i++ }
        if ($(i+1)==suite && $i ~ /^https?:\/\//) { print $i; exit } }')
  echo "${uri:-http://deb.debian.org/debian}"
}

# ---------------------------------------------------------------- --check
if (( CHECK )); then
  missing=0
  for p in "${APT_PKGS[@]}"; do pkg_installed "$p" || { log "missing: apt package $p"; missing=1; }; done
  if v=$(engine_version); then
    log "ok: engine $v"
    s=$(swarm_state); [[ $s == active ]] && log "ok: swarm active" || { log "missing: swarm (state: $s)"; missing=1; }
    if registry_up; then
      log "ok: registry $REGISTRY"
      for img in "${ALL_IMAGES[@]}"; do
        ref="$REGISTRY/$img"
        [[ -n "$(registry_digest "$img")" ]] || { log "missing: $ref in registry"; missing=1; continue; }
        [[ -n "$(local_info "$ref")" ]] || { log "missing: $ref in local engine"; missing=1; continue; }
        log "ok: $ref"
      done
    else
      log "missing: registry on $REGISTRY (and therefore the images)"; missing=1
    fi
    if [[ "$(auth_codes)" == "401 200" ]]; then
      log "ok: registry $AUTH_REGISTRY (login required; user $AUTH_USER, password in $AUTH_DIR/password)"
      for img in "${AUTH_IMAGES[@]}"; do
        [[ -n "$(auth_digest "$img")" ]] && log "ok: $AUTH_REGISTRY/$img" \
          || { log "missing: $AUTH_REGISTRY/$img in registry"; missing=1; }
      done
    else
      log "missing: registry with login on $AUTH_REGISTRY (/v2/ without/with login: $(auth_codes), want 401 200)"; missing=1
    fi
  else
    log "missing: docker engine (docker version does not answer)"; missing=1
  fi
  (( missing )) && { log "rig NOT ready"; exit 1; }
  log "rig ready"; exit 0
fi

[[ $EUID -eq 0 ]] || die "must run as root (apt, dockerd, debootstrap)"

# ---------------------------------------------------------------- a. apt packages
missing=()
for p in "${APT_PKGS[@]}"; do pkg_installed "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
  log "apt: installing ${missing[*]}"
  apt-get update -qq >"$RIG/logs/apt.log" 2>&1 || { tailf "$RIG/logs/apt.log"; die "apt-get update failed"; }
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$RIG/logs/apt.log" 2>&1 \
    || { tailf "$RIG/logs/apt.log"; die "apt-get install failed"; }
else
  log "apt: all packages present"
fi
command -v docker >/dev/null || die "no docker client on PATH"
[[ -x /usr/sbin/dockerd ]] || die "/usr/sbin/dockerd missing"

# ---------------------------------------------------------------- b. engine
wait_engine() { # seconds
  local i
  for ((i = 0; i < $1 * 2; i++)); do engine_up && return 0; sleep 0.5; done
  return 1
}
# Start "$@" in the background in its own session, keeping no file descriptor but 0-2 (which
# the caller redirects): a daemon outlives this script, and an inherited descriptor would keep
# whatever it refers to open with it, such as the engine lock of whoever ran the script
# (`flock FILE cmd` passes its locked fd on; a test restarting dockerd runs this script).
daemon() {
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null; fi
    done
    exec setsid nohup "$@"
  ) &
}

if engine_up; then
  log "engine: already running, $(engine_version)"
elif pidof dockerd >/dev/null; then
  # e.g. apt's postinst just started one: give it time instead of starting a second one
  log "engine: a dockerd (pid $(pidof dockerd)) exists but does not answer yet; waiting"
  wait_engine 60 || die "dockerd pid $(pidof dockerd) does not answer on /var/run/docker.sock; stop it or fix it"
  log "engine: up, $(engine_version)"
else
  mkdir -p "$RIG/docker" "$RIG/exec"
  log "engine: starting dockerd (data-root $RIG/docker, log $RIG/dockerd.log)"
  # Stale pidfile from a killed rig dockerd would make dockerd refuse to start.
  pid_alive "$RIG/dockerd.pid" || rm -f "$RIG/dockerd.pid"
  daemon /usr/sbin/dockerd \
      --data-root "$RIG/docker" --exec-root "$RIG/exec" --pidfile "$RIG/dockerd.pid" \
      --host unix:///var/run/docker.sock \
    </dev/null >>"$RIG/dockerd.log" 2>&1
  if ! wait_engine 60; then
    tailf "$RIG/dockerd.log" 60
    die "dockerd did not answer within 60 s"
  fi
  log "engine: up, $(engine_version)"
fi

# ---------------------------------------------------------------- c. swarm
state=$(swarm_state)
if [[ $state == active ]]; then
  log "swarm: active"
else
  if [[ $state != inactive ]]; then
    log "swarm: state '$state', leaving first"
    docker swarm leave --force >/dev/null 2>&1 || true
  fi
  docker swarm init --advertise-addr 127.0.0.1 >"$RIG/logs/swarm-init.log" 2>&1 \
    || { tailf "$RIG/logs/swarm-init.log"; die "docker swarm init failed"; }
  log "swarm: initialised (advertise 127.0.0.1)"
fi
for ((i = 0; ; i++)); do
  [[ "$(docker node inspect self --format '{{.Status.State}}' 2>/dev/null)" == ready ]] && break
  ((i < 60)) || die "swarm node not Ready after 30 s"
  sleep 0.5
done

# ---------------------------------------------------------------- d. registry
cat >"$RIG/registry.yml.new" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $RIG/registry-data
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
if ! cmp -s "$RIG/registry.yml.new" "$RIG/registry.yml" 2>/dev/null; then
  mv "$RIG/registry.yml.new" "$RIG/registry.yml"
else
  rm -f "$RIG/registry.yml.new"
fi
code=$(registry_code)
if [[ $code == 200 ]]; then
  log "registry: already running on $REGISTRY"
else
  if [[ $code != 000 && -n $code ]]; then
    # something else owns the port, e.g. Debian's docker-registry service with htpasswd auth
    if command -v systemctl >/dev/null && systemctl is-active -q docker-registry 2>/dev/null; then
      log "registry: stopping the system docker-registry service (HTTP $code on /v2/)"
      systemctl stop docker-registry
    else
      die "port ${REGISTRY##*:} answers HTTP $code on /v2/ but is not an open registry; free the port"
    fi
  fi
  mkdir -p "$RIG/registry-data"
  if pid_alive "$RIG/registry.pid"; then kill "$(cat "$RIG/registry.pid")" 2>/dev/null || true; sleep 0.5; fi
  daemon /usr/bin/docker-registry serve "$RIG/registry.yml" \
    </dev/null >>"$RIG/registry.log" 2>&1
  echo $! >"$RIG/registry.pid"
  for ((i = 0; ; i++)); do
    registry_up && break
    if ((i >= 60)) || ! pid_alive "$RIG/registry.pid"; then tailf "$RIG/registry.log"; die "registry did not come up"; fi
    sleep 0.25
  done
  log "registry: started on $REGISTRY (pid $(cat "$RIG/registry.pid"), data $RIG/registry-data)"
fi

# ---------------------------------------------------------------- e. images
push_image() { # REF
  local l="$RIG/logs/push-${1//[\/:]/_}.log"
  docker push "$1" >"$l" 2>&1 || { tailf "$l"; die "docker push $1 failed"; }
}

# decide IMG HASH -> prints build|push|skip
image_action() {
  local img="$1" hash="$2" ref="$REGISTRY/$1" info rd
  [[ $REBUILD == 1 ]] && { echo build; return; }
  info=$(local_info "$ref")
  [[ -n $info && ${info%% *} == "$hash" ]] || { echo build; return; }
  rd=$(registry_digest "$img")
  if [[ -n $rd && " $info " == *" ${REGISTRY}/${img%%:*}@$rd "* ]]; then echo skip; else echo push; fi
}

image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
# after a rebuild, delete the image the tag pointed to before (best effort: skipped if in use)
drop_old_image() { # OLD-ID REF
  [[ -n $1 && $1 != "$(image_id "$2")" ]] || return 0
  docker image rm "$1" >/dev/null 2>&1 || true
}

ctx_hash() { tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf - . | sha256sum | cut -c1-16; }

# Self-test of a freshly built demo image: content, /healthz and health status.
selftest_demo() { # REF VERSION
  local ref="$1" ver="$2" c out st i want=healthy pass=0 fail=0
  c=$(docker run -d -e DIE_AFTER=4 "$ref") || die "cannot run $ref"
  SELFTEST_CONTAINER=$c   # removed by the EXIT trap even if we die below
  if [[ $ver == fails ]]; then
    # Healthy by its /healthz, but users get 500 on /.
    for ((i = 0; i < 40; i++)); do
      out=$(docker exec "$c" /bin/busybox wget -q -O - http://127.0.0.1/healthz 2>/dev/null) && break; sleep 0.25
    done
    [[ $out == ok ]] || die "$ref: /healthz returned '$out'"
    out=$(docker exec "$c" /bin/busybox wget -S -O /dev/null http://127.0.0.1/ 2>&1) && die "$ref: / must fail"
    [[ $out == *" 500 "* ]] || die "$ref: / must answer 500, got: $out"
  else
    for ((i = 0; i < 40; i++)); do
      out=$(docker exec "$c" /bin/busybox wget -q -O - http://127.0.0.1/ 2>/dev/null) && break; sleep 0.25
    done
    [[ $out == "$ver" ]] || die "$ref: / returned '$out', expected '$ver'"
  fi
  if [[ $ver == fails ]]; then
    :
  elif [[ $ver == broken ]]; then
    want=unhealthy
    docker exec "$c" /bin/busybox wget -q -O - http://127.0.0.1/healthz >/dev/null 2>&1 && die "$ref: /healthz must fail"
  elif [[ $ver == flaky ]]; then
    for ((i = 0; i < 16; i++)); do
      if docker exec "$c" /bin/busybox wget -q -O - http://127.0.0.1/healthz >/dev/null 2>&1; then
        pass=$((pass + 1)); else fail=$((fail + 1)); fi
      sleep 0.25
    done
    ((pass && fail)) || die "$ref: /healthz must alternate (passed $pass, failed $fail)"
  else
    out=$(docker exec "$c" /bin/busybox wget -q -O - http://127.0.0.1/healthz) || die "$ref: /healthz failed"
    [[ $out == ok ]] || die "$ref: /healthz returned '$out'"
    out=$(docker exec "$c" /bin/busybox wget -q -O - 'http://127.0.0.1/cgi-bin/slow?0') || die "$ref: cgi failed"
    [[ $out == "$ver" ]] || die "$ref: /cgi-bin/slow returned '$out'"
    if [[ $ver == dies ]]; then   # DIE_AFTER=4
      sleep 4.5
      docker exec "$c" /bin/busybox wget -q -O - http://127.0.0.1/healthz >/dev/null 2>&1 && die "$ref: /healthz must fail after DIE_AFTER"
      docker exec "$c" /bin/busybox wget -q -O - http://127.0.0.1/ >/dev/null 2>&1 && die "$ref: / must fail after DIE_AFTER"
    fi
  fi
  for ((i = 0; i < 60; i++)); do
    st=$(docker inspect --format '{{.State.Health.Status}}' "$c")
    if [[ $st == "$want" ]]; then docker rm -f "$c" >/dev/null; SELFTEST_CONTAINER=""; return 0; fi
    [[ $ver != broken && $st == unhealthy ]] && break
    [[ $ver == broken && $st == healthy ]] && break
    sleep 0.25
  done
  die "$ref: health status '$st', expected '$want'"
}

# busybox_rootfs DIR: a root filesystem of busybox-static with every applet as a symlink (sh,
# httpd, wget, sleep, cat, echo, nslookup, nc, ...), root and nobody, and a /tmp.
busybox_rootfs() {
  local r="$1" a
  mkdir -p "$r/bin" "$r/etc" "$r/tmp"
  chmod 1777 "$r/tmp"
  cp -L /bin/busybox "$r/bin/busybox"
  for a in $(/bin/busybox --list); do
    [[ $a == busybox || $a == */* ]] || ln -s busybox "$r/bin/$a"
  done
  printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
}

# busybox_dockerfile CTX VERSION HEALTH-PATH CMD: the Dockerfile of an image of CTX/rootfs
# serving port 80, healthy while HEALTH-PATH answers; CMD is the inside of the JSON array.
busybox_dockerfile() {
  cat >"$1/Dockerfile" <<EOF
FROM scratch
COPY rootfs/ /
LABEL org.opencontainers.image.version=$2
EXPOSE 80
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=1s --timeout=2s --start-period=1s --retries=2 CMD ["/bin/busybox","wget","-q","-O","-","http://127.0.0.1$3"]
CMD [$4]
EOF
}

# docker_build REF HASH CTX LOG: build CTX as REF labelled with HASH, dropping the image REF
# named before.
docker_build() {
  local ref="$1" hash="$2" ctx="$3" log="$RIG/logs/$4.log" old
  old=$(image_id "$ref")
  docker build -q $([[ $REBUILD == 1 ]] && echo --no-cache) --label "$HASH_LABEL=$hash" -t "$ref" "$ctx" >"$log" 2>&1 \
    || { tailf "$log"; die "docker build $ref failed"; }
  drop_old_image "$old" "$ref"
}

# ensure_image IMG CTX LOG SELFTEST...: as image_action decides from CTX's content, build CTX
# as $REGISTRY/IMG, run SELFTEST... and push it; or only push it; or nothing.
ensure_image() {
  local img="$1" ctx="$2" log="$3" ref="$REGISTRY/$1" hash
  shift 3
  hash=$(ctx_hash "$ctx")
  case $(image_action "$img" "$hash") in
    skip) log "image: $ref up to date" ;;
    push) push_image "$ref"; log "image: $ref pushed (local image was current)" ;;
    build)
      docker_build "$ref" "$hash" "$ctx" "$log"
      "$@"
      push_image "$ref"
      log "image: $ref built, self-tested, pushed" ;;
  esac
}

build_demo() { # VERSION  (v1 | v2 | broken | flaky | dies | fails)
  local ver="$1" img="stackctl-demo:$1" ref="$REGISTRY/stackctl-demo:$1"
  local ctx="$RIG/build/demo-$ver"
  rm -rf "$ctx"
  busybox_rootfs "$ctx/rootfs"
  mkdir -p "$ctx/rootfs/www/cgi-bin"
  printf '%s\n' "$ver" >"$ctx/rootfs/www/index.html"
  # "broken" has no /healthz -> 404 -> HEALTHCHECK never passes
  [[ $ver == broken ]] || printf 'ok\n' >"$ctx/rootfs/www/healthz"
  # "fails": healthy by /healthz, but / answers 500 to users: with no index.html, busybox httpd
  # runs /cgi-bin/index.cgi for the directory.
  if [[ $ver == fails ]]; then
    rm -f "$ctx/rootfs/www/index.html"
    cat >"$ctx/rootfs/www/cgi-bin/index.cgi" <<'EOF'
#!/bin/sh
printf 'Status: 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\nfails\n'
EOF
    chmod 755 "$ctx/rootfs/www/cgi-bin/index.cgi"
  fi
  cat >"$ctx/rootfs/www/cgi-bin/slow" <<EOF
#!/bin/sh
# /cgi-bin/slow?N : sleep N seconds (digits only, default 2, max 60), then answer the version.
s="\${QUERY_STRING:-2}"
case "\$s" in ''|*[!0-9]*) s=2 ;; esac
s=\$(( s > 60 ? 60 : s ))
sleep "\$s"
printf 'Content-Type: text/plain\r\n\r\n'
echo $ver
EOF
  chmod 755 "$ctx/rootfs/www/cgi-bin/slow"
  # flaky and dies: a /healthz that lies (see faults.sh). Docker's HEALTHCHECK asks /ping, which
  # never fails, so their tasks run and only stackctl's HTTP checks through nginx can catch them.
  local check=/healthz cmd='"/bin/busybox","httpd","-f","-v","-p","80","-h","/www"'
  if [[ $ver == flaky || $ver == dies ]]; then
    printf 'ok\n' >"$ctx/rootfs/www/ping"
    cat >"$ctx/rootfs/bin/faults.sh" <<'EOF'
#!/bin/sh
# faults.sh flaky|dies: busybox httpd with a /healthz that lies.
#   flaky: /healthz passes for one second and fails (404) the next, forever.
#   dies:  / and /healthz answer normally for $DIE_AFTER seconds (default 10), then 404.
case "$1" in
  flaky) while :; do echo ok >/www/healthz; sleep 1; rm -f /www/healthz; sleep 1; done & ;;
  dies) ( sleep "${DIE_AFTER:-10}"; rm -f /www/healthz /www/index.html ) & ;;
esac
exec /bin/busybox httpd -f -v -p 80 -h /www
EOF
    chmod 755 "$ctx/rootfs/bin/faults.sh"
    check=/ping cmd="\"/bin/sh\",\"/bin/faults.sh\",\"$ver\""
  fi
  busybox_dockerfile "$ctx" "$ver" "$check" "$cmd"
  ensure_image "$img" "$ctx" "build-demo-$ver" selftest_demo "$ref" "$ver"
  rm -rf "$ctx"
}

# ---- nginx image (debootstrap rootfs, laid out like the official nginx image)
NGINX_CACHE="$RIG/cache/nginx-rootfs-$SUITE-minbase.tar"

bootstrap_nginx_rootfs() {
  local root="$RIG/build/nginx-bootstrap" mirror="${STACKCTL_RIG_MIRROR:-$(apt_mirror)}" t=$SECONDS
  log "image: debootstrap $SUITE minbase + nginx-light from $mirror (takes a while)"
  safe_rmtree "$root"
  if ! debootstrap --variant=minbase --include=nginx-light "$SUITE" "$root" "$mirror" \
        >"$RIG/logs/debootstrap.log" 2>&1; then
    safe_rmtree "$root"; tailf "$RIG/logs/debootstrap.log"; die "debootstrap failed"
  fi
  safe_rmtree "$root/proc/"; safe_rmtree "$root/sys/"  # in case anything is still mounted
  mkdir -p "$root/proc" "$root/sys"
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
         "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
         "$root"/var/cache/debconf/*-old "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/dev/*
  tar -C "$root" --numeric-owner -cf "$NGINX_CACHE.tmp" . && mv "$NGINX_CACHE.tmp" "$NGINX_CACHE"
  safe_rmtree "$root"
  log "image: rootfs cached at $NGINX_CACHE ($(du -h "$NGINX_CACHE" | cut -f1), $((SECONDS - t))s)"
}

# Everything here is part of the image hash (via declare -f): edit it and the image is rebuilt.
customize_nginx_rootfs() {
  local r="$1"
  rm -rf "$r/etc/nginx/sites-enabled" "$r/etc/nginx/sites-available" "$r/var/www"
  mkdir -p "$r/etc/nginx/conf.d" "$r/etc/nginx/stackctl" "$r/usr/share/nginx/html" \
           "$r/run" "$r/var/log/nginx" "$r/var/cache/nginx"
  rm -f "$r"/etc/nginx/conf.d/*
  # user/group "nginx" like the official image (www-data exists too)
  grep -q '^nginx:' "$r/etc/group" || chroot "$r" /usr/sbin/groupadd --system nginx
  grep -q '^nginx:' "$r/etc/passwd" || chroot "$r" /usr/sbin/useradd --system --gid nginx \
      --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --comment "nginx user" nginx
  # logs go to the container's stdout/stderr, as in the official image
  rm -f "$r"/var/log/nginx/*
  ln -s /dev/stdout "$r/var/log/nginx/access.log"
  ln -s /dev/stderr "$r/var/log/nginx/error.log"
  cat >"$r/etc/nginx/nginx.conf" <<'EOF'
user  nginx;
worker_processes  auto;

error_log  /var/log/nginx/error.log notice;
pid        /run/nginx.pid;

# Debian ships some modules dynamically (nginx-light: http_echo)
include /etc/nginx/modules-enabled/*.conf;

events {
    worker_connections  1024;
}

http {
    include       /etc/nginx/mime.types;
    default_type  application/octet-stream;

    log_format  main  '$remote_addr - $remote_user [$time_local] "$request" '
                      '$status $body_bytes_sent "$http_referer" '
                      '"$http_user_agent" "$http_x_forwarded_for"';

    access_log  /var/log/nginx/access.log  main;

    sendfile        on;
    #tcp_nopush     on;

    keepalive_timeout  65;

    #gzip  on;

    include /etc/nginx/conf.d/*.conf;
}
EOF
  cat >"$r/etc/nginx/conf.d/default.conf" <<'EOF'
server {
    listen       80;
    listen  [::]:80;
    server_name  localhost;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }

    error_page   500 502 503 504  /50x.html;
    location = /50x.html {
        root   /usr/share/nginx/html;
    }
}
EOF
  rm -f "$r"/usr/share/nginx/html/*
  cat >"$r/usr/share/nginx/html/index.html" <<'EOF'
<!DOCTYPE html>
<html><head><title>Welcome to nginx!</title></head>
<body><h1>Welcome to nginx!</h1><p>stackctl-nginx test image (Debian bookworm nginx).</p></body></html>
EOF
  cat >"$r/usr/share/nginx/html/50x.html" <<'EOF'
<!DOCTYPE html>
<html><head><title>Error</title></head>
<body><h1>An error occurred.</h1></body></html>
EOF
}

NGINX_IMPORT_CHANGES=(
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  -c 'EXPOSE 80'
  -c 'CMD ["nginx","-g","daemon off;"]'
)

build_nginx() {
  local img="$NGINX_IMAGE" ref="$REGISTRY/$NGINX_IMAGE" root="$RIG/build/nginx-root" hash action ver base ctx out old
  [[ -s $NGINX_CACHE ]] || bootstrap_nginx_rootfs
  hash=$( { declare -f customize_nginx_rootfs; printf '%s\n' "${NGINX_IMPORT_CHANGES[@]}"; \
            stat -c '%s %Y' "$NGINX_CACHE"; echo "STOPSIGNAL SIGQUIT v2"; } | sha256sum | cut -c1-16)
  action=$(image_action "$img" "$hash")
  case $action in
    skip) log "image: $ref up to date"; return ;;
    push) push_image "$ref"; log "image: $ref pushed (local image was current)"; return ;;
  esac
  safe_rmtree "$root"; mkdir -p "$root"
  tar -C "$root" --numeric-owner -xpf "$NGINX_CACHE"
  customize_nginx_rootfs "$root"
  ver=$(dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Version}' nginx)
  # docker import cannot set STOPSIGNAL (20.10: "stopsignal is not a valid change command"),
  # so import the rootfs, then add STOPSIGNAL + labels with a (layer-less) docker build.
  base="stackctl-rig/nginx-rootfs:$hash"
  tar -C "$root" --numeric-owner -cf - . | docker import "${NGINX_IMPORT_CHANGES[@]}" - "$base" \
    >"$RIG/logs/import-nginx.log" 2>&1 || { tailf "$RIG/logs/import-nginx.log"; die "docker import failed"; }
  safe_rmtree "$root"
  ctx="$RIG/build/nginx-ctx"; rm -rf "$ctx"; mkdir -p "$ctx"
  cat >"$ctx/Dockerfile" <<EOF
FROM $base
LABEL org.opencontainers.image.version=$ver org.opencontainers.image.base.name=debian:$SUITE
STOPSIGNAL SIGQUIT
EOF
  old=$(image_id "$ref")
  docker build -q --label "$HASH_LABEL=$hash" -t "$ref" "$ctx" >"$RIG/logs/build-nginx.log" 2>&1 \
    || { tailf "$RIG/logs/build-nginx.log"; die "docker build $ref failed"; }
  drop_old_image "$old" "$ref"
  rm -rf "$ctx"
  docker rmi "$base" >/dev/null 2>&1 || true   # untag only; layers stay referenced by $ref
  out=$(docker run --rm "$ref" nginx -t 2>&1) || { echo "$out" >&2; die "$ref: nginx -t failed"; }
  out=$(docker run --rm "$ref" nginx -v 2>&1) || die "$ref: nginx -v failed"
  push_image "$ref"
  log "image: $ref built from cached rootfs, verified ($out), pushed"
}

# stackctl-nginx:noreload: the nginx image with a wrapper in front of the real binary whose
# `nginx -s reload` exits 0 and does nothing once /tmp/reload-limit reloads were done: a reload
# nginx rejects without saying so. Without that file every reload is real.
build_nginx_noreload() {
  local img="$NGINX_NORELOAD_IMAGE" ref="$REGISTRY/$NGINX_NORELOAD_IMAGE" base="$REGISTRY/$NGINX_IMAGE"
  local ctx="$RIG/build/nginx-noreload" hash action old c before after
  rm -rf "$ctx"; mkdir -p "$ctx"
  cat >"$ctx/nginx" <<'EOF'
#!/bin/sh
# stackctl test image: every `nginx -s reload` is counted in /tmp/reloads; beyond the number in
# /tmp/reload-limit (if that file exists) it exits 0 without signalling nginx. Everything else
# is the real nginx.
if [ "$1" = -s ] && [ "$2" = reload ]; then
  n=$(( $(cat /tmp/reloads 2>/dev/null || echo 0) + 1 ))
  echo "$n" >/tmp/reloads
  if [ -f /tmp/reload-limit ] && [ "$n" -gt "$(cat /tmp/reload-limit)" ]; then exit 0; fi
fi
exec /usr/sbin/nginx "$@"
EOF
  chmod 755 "$ctx/nginx"
  printf 'FROM %s\nCOPY nginx /usr/local/sbin/nginx\n' "$base" >"$ctx/Dockerfile"
  hash=$( { ctx_hash "$ctx"; image_id "$base"; } | sha256sum | cut -c1-16)
  action=$(image_action "$img" "$hash")
  case $action in
    skip) log "image: $ref up to date" ;;
    push) push_image "$ref"; log "image: $ref pushed (local image was current)" ;;
    build)
      old=$(image_id "$ref")
      docker build -q --label "$HASH_LABEL=$hash" -t "$ref" "$ctx" >"$RIG/logs/build-nginx-noreload.log" 2>&1 \
        || { tailf "$RIG/logs/build-nginx-noreload.log"; die "docker build $ref failed"; }
      drop_old_image "$old" "$ref"
      # Self-test: a reload beyond the limit exits 0 and leaves nginx's workers alone.
      c=$(docker run -d "$ref") || die "cannot run $ref"
      SELFTEST_CONTAINER=$c
      sleep 1
      docker exec "$c" sh -c 'echo 0 >/tmp/reload-limit'
      before=$(docker top "$c" -o pid | sort)
      docker exec "$c" nginx -s reload || die "$ref: nginx -s reload must exit 0"
      sleep 1
      after=$(docker top "$c" -o pid | sort)
      [[ $before == "$after" ]] || die "$ref: a dropped reload must not restart nginx's workers"
      docker exec "$c" nginx -t >/dev/null 2>&1 || die "$ref: nginx -t failed"
      docker rm -f "$c" >/dev/null; SELFTEST_CONTAINER=""
      push_image "$ref"
      log "image: $ref built, self-tested, pushed" ;;
  esac
  rm -rf "$ctx"
}

# stackctl-ws:VERSION: Debian's websocketd on busybox. On port 80, a WebSocket on any path
# echoes each message back as "VERSION <message>" ("headers" gets the request's headers);
# plain HTTP gets /healthz ("ok") and / (the version). On port 81, busybox httpd serves
# server-sent events: /cgi-bin/events writes "data: VERSION N" for N = 1 2 3, one a second.
# websocketd links only libc, which is copied from this (bookworm) machine.
build_ws() { # VERSION
  local ver="$1" img="stackctl-ws:$1" ref="$REGISTRY/stackctl-ws:$1" ctx="$RIG/build/ws-$1" lib
  rm -rf "$ctx"
  busybox_rootfs "$ctx/rootfs"
  mkdir -p "$ctx/rootfs/www"
  cp -L /usr/bin/websocketd "$ctx/rootfs/bin/websocketd"
  for lib in $(ldd /usr/bin/websocketd | grep -o '/[^ ]*'); do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"; cp -L "$lib" "$ctx/rootfs$lib"
  done
  printf '%s\n' "$ver" >"$ctx/rootfs/www/index.html"
  printf 'ok\n' >"$ctx/rootfs/www/healthz"
  cat >"$ctx/rootfs/bin/echo.sh" <<EOF
#!/bin/sh
# One per WebSocket: every line (message) read is written back with the version in front;
# the message "headers" is answered with the request headers websocketd was given (HTTP_*).
while read -r line; do
  case "\$line" in
    headers) echo "$ver \$(env | grep '^HTTP_' | sort | tr '\\n' ' ')" ;;
    *) echo "$ver \$line" ;;
  esac
done
EOF
  chmod 755 "$ctx/rootfs/bin/echo.sh"
  mkdir -p "$ctx/rootfs/sse/cgi-bin"
  printf 'ok\n' >"$ctx/rootfs/sse/healthz"
  cat >"$ctx/rootfs/sse/cgi-bin/events" <<EOF
#!/bin/sh
printf 'Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n'
for n in 1 2 3; do printf 'data: $ver %s\n\n' "\$n"; [ "\$n" = 3 ] || sleep 1; done
EOF
  chmod 755 "$ctx/rootfs/sse/cgi-bin/events"
  cat >"$ctx/rootfs/bin/start.sh" <<'EOF'
#!/bin/sh
/bin/busybox httpd -p 81 -h /sse
exec /bin/websocketd --port=80 --staticdir=/www --loglevel=error /bin/sh /bin/echo.sh
EOF
  chmod 755 "$ctx/rootfs/bin/start.sh"
  busybox_dockerfile "$ctx" "$ver" /healthz '"/bin/sh","/bin/start.sh"'
  ensure_image "$img" "$ctx" "build-ws-$ver" selftest_ws "$ref"
  rm -rf "$ctx"
}

# Self-test of a websocketd image: it serves /healthz over plain HTTP (the WebSocket echo is
# tested by cargo, tests/e2e_edge.rs).
selftest_ws() { # REF
  local ref="$1" c out="" i
  c=$(docker run -d "$ref") || die "cannot run $ref"
  SELFTEST_CONTAINER=$c
  for ((i = 0; i < 40; i++)); do
    out=$(docker exec "$c" /bin/busybox wget -q -O - http://127.0.0.1/healthz 2>/dev/null) && break; sleep 0.25
  done
  [[ $out == ok ]] || die "$ref: /healthz returned '$out'"
  out=$(docker exec "$c" /bin/busybox wget -q -O - http://127.0.0.1:81/cgi-bin/events) || die "$ref: events failed"
  [[ $out == *"data: ${ref##*:} 3"* ]] || die "$ref: /cgi-bin/events on port 81 returned '$out'"
  docker rm -f "$c" >/dev/null; SELFTEST_CONTAINER=""
}

for v in v1 v2 broken flaky dies fails; do build_demo "$v"; done
for v in v1 v2; do build_ws "$v"; done
build_nginx
build_nginx_noreload
rm -rf "$RIG/build"/demo-* 2>/dev/null || true

# ---------------------------------------------------------------- f. registry with login
# Same registry binary with `auth: htpasswd` (bcrypt). Basic auth over plain HTTP: the
# registry accepts it and docker allows plain HTTP for 127.0.0.0/8, so no TLS is needed.
# Its images are the demo images plus a label, so their manifests differ from the ones on
# $REGISTRY: the engine keeps the manifests it pulled, and a Swarm task pulling a digest the
# engine already knows succeeds without any login. They are pushed with a throwaway
# DOCKER_CONFIG (the machine's docker config is never touched), then removed from the engine,
# so a task has to pull them, with the credentials it was given.
auth_registry() {
  local pw conf="$AUTH_DIR/registry.yml" codes restarted="" pushed=() cfg img src id d stamp l tags i
  mkdir -p "$AUTH_DIR/data"; chmod 700 "$AUTH_DIR"
  if [[ ! -s $AUTH_DIR/password ]]; then
    # "~?~?~?" puts a '~' and a '?' at every offset mod 3, so the standard base64 of any JSON
    # holding this password contains '+' and '/': the X-Registry-Auth encoding trap (the engine
    # decodes base64url) is always exercised.
    ( umask 077; printf '%s~?~?~?\n' "$(head -c 18 /dev/urandom | base64 | tr -d '+/=')" >"$AUTH_DIR/password.new" )
    mv "$AUTH_DIR/password.new" "$AUTH_DIR/password"
  fi
  chmod 600 "$AUTH_DIR/password"
  pw=$(cat "$AUTH_DIR/password")
  if ! htpasswd -vb "$AUTH_DIR/htpasswd" "$AUTH_USER" "$pw" >/dev/null 2>&1; then
    ( umask 077; htpasswd -Bbn "$AUTH_USER" "$pw" >"$AUTH_DIR/htpasswd.new" 2>/dev/null ) || die "htpasswd failed"
    mv "$AUTH_DIR/htpasswd.new" "$AUTH_DIR/htpasswd"
    restarted="new htpasswd"
  fi
  cat >"$conf.new" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $AUTH_DIR/data
  delete:
    enabled: true
auth:
  htpasswd:
    realm: stackctl-rig
    path: $AUTH_DIR/htpasswd
http:
  addr: $AUTH_REGISTRY
EOF
  if cmp -s "$conf.new" "$conf"; then rm -f "$conf.new"; else mv "$conf.new" "$conf"; restarted="new config"; fi
  codes=$(auth_codes)
  if [[ $codes != "401 200" || -n $restarted ]]; then
    if pid_alive "$RIG/registry-auth.pid"; then
      kill "$(cat "$RIG/registry-auth.pid")" 2>/dev/null || true
      for ((i = 0; i < 20; i++)); do pid_alive "$RIG/registry-auth.pid" || break; sleep 0.25; done
      codes=$(auth_codes)
    fi
    [[ ${codes%% *} == 000 ]] || die "port ${AUTH_REGISTRY##*:} answers HTTP ${codes%% *} on /v2/ but is not the rig's registry with login; free the port"
    daemon /usr/bin/docker-registry serve "$conf" </dev/null >>"$RIG/registry-auth.log" 2>&1
    echo $! >"$RIG/registry-auth.pid"
    for ((i = 0; ; i++)); do
      codes=$(auth_codes)
      [[ $codes == "401 200" ]] && break
      if ((i >= 60)) || ! pid_alive "$RIG/registry-auth.pid"; then
        tailf "$RIG/registry-auth.log"; die "registry with login on $AUTH_REGISTRY did not come up (/v2/ without/with login: $codes)"
      fi
      sleep 0.25
    done
    restarted="started (pid $(cat "$RIG/registry-auth.pid"))"
  fi
  cfg="$AUTH_DIR/docker-config"   # throwaway client config, removed below
  for img in "${AUTH_IMAGES[@]}"; do
    src="$REGISTRY/$img"
    id=$(image_id "$src"); [[ -n $id ]] || die "$src missing locally"
    stamp="$AUTH_DIR/pushed-${img//[\/:]/_}"
    d=$(auth_digest "$img")
    [[ $REBUILD != 1 && -n $d && -f $stamp && "$(cat "$stamp")" == "$id $d" ]] && continue
    l="$RIG/logs/push-auth-${img//[\/:]/_}.log"
    if [[ ! -d $cfg ]]; then
      mkdir -p "$cfg"; chmod 700 "$cfg"
      printf '%s' "$pw" | docker --config "$cfg" login -u "$AUTH_USER" --password-stdin "$AUTH_REGISTRY" >"$l" 2>&1 \
        || { rm -rf "$cfg"; tailf "$l"; die "docker login $AUTH_REGISTRY failed"; }
    fi
    printf 'FROM %s\nLABEL io.stackctl.rig.registry=%s\n' "$src" "$AUTH_REGISTRY" \
      | docker build -q -t "$AUTH_REGISTRY/$img" - >>"$l" 2>&1 || { rm -rf "$cfg"; tailf "$l"; die "docker build $AUTH_REGISTRY/$img failed"; }
    docker --config "$cfg" push "$AUTH_REGISTRY/$img" >>"$l" 2>&1 || { rm -rf "$cfg"; tailf "$l"; die "docker push $AUTH_REGISTRY/$img failed"; }
    docker image rm "$AUTH_REGISTRY/$img" >/dev/null   # the labelled image; its layers stay with $src
    d=$(auth_digest "$img"); [[ -n $d ]] || die "$AUTH_REGISTRY/$img not in the registry after the push"
    echo "$id $d" >"$stamp"
    pushed+=("${img##*:}")
  done
  rm -rf "$cfg"
  tags=$(IFS='|'; echo "${AUTH_IMAGES[*]##*:}")
  log "registry with login: $AUTH_REGISTRY ${restarted:-already running} (user $AUTH_USER, password in $AUTH_DIR/password), stackctl-demo:$tags $( ((${#pushed[@]})) && echo "pushed (${pushed[*]})" || echo "up to date")"
}
auth_registry

# ---------------------------------------------------------------- g. summary
cat >"$RIG/rig.env" <<EOF
# written by tests/rig/setup.sh
STACKCTL_RIG_DIR=$RIG
STACKCTL_RIG_REGISTRY=$REGISTRY
STACKCTL_RIG_DEMO_V1=$REGISTRY/stackctl-demo:v1
STACKCTL_RIG_DEMO_V2=$REGISTRY/stackctl-demo:v2
STACKCTL_RIG_DEMO_BROKEN=$REGISTRY/stackctl-demo:broken
STACKCTL_RIG_NGINX=$REGISTRY/$NGINX_IMAGE
STACKCTL_RIG_WS_V1=$REGISTRY/stackctl-ws:v1
STACKCTL_RIG_WS_V2=$REGISTRY/stackctl-ws:v2
STACKCTL_AUTH_REGISTRY=$AUTH_REGISTRY
STACKCTL_AUTH_USER=$AUTH_USER
STACKCTL_AUTH_PASSWORD_FILE=$AUTH_DIR/password
STACKCTL_AUTH_DEMO_V1=$AUTH_REGISTRY/stackctl-demo:v1
STACKCTL_AUTH_DEMO_V2=$AUTH_REGISTRY/stackctl-demo:v2
EOF
log "rig ready: engine $(engine_version), swarm $(swarm_state), registries $REGISTRY and $AUTH_REGISTRY (login), images: ${ALL_IMAGES[*]} ($((SECONDS - T0))s)"

#!/usr/bin/env bash
# stackctl test rig cleanup.
#
#   tests/rig/teardown.sh [STACK]           remove every Swarm service, config, secret and
#                                           network (and stray container) labelled
#                                           io.stackctl.stack (=STACK if given)
#   tests/rig/teardown.sh --engine [STACK]  same, then stop the registry and the dockerd that
#                                           setup.sh started (by their pidfiles in
#                                           $STACKCTL_RIG_DIR); an engine not started by the
#                                           rig is left alone. Images/data stay on disk.
set -euo pipefail

RIG="${STACKCTL_RIG_DIR:-/tmp/stackctl-rig}"
ENGINE=0
STACK=""
for a in "$@"; do
  case "$a" in
    --engine) ENGINE=1 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "usage: $0 [--engine] [STACK]" >&2; exit 2 ;;
    *) STACK="$a" ;;
  esac
done
LABEL="io.stackctl.stack${STACK:+=$STACK}"
log() { printf '[rig] %s\n' "$*"; }

if timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  mapfile -t svcs < <(docker service ls --filter "label=$LABEL" --format '{{.Name}}' 2>/dev/null || true)
  if ((${#svcs[@]})); then
    docker service rm "${svcs[@]}" >/dev/null
    log "removed ${#svcs[@]} service(s) labelled $LABEL"
    # don't sit out stop grace periods (busybox httpd ignores SIGTERM as PID 1): kill the tasks
    for s in "${svcs[@]}"; do
      mapfile -t tc < <(docker ps -aq --filter "label=com.docker.swarm.service.name=$s")
      ((${#tc[@]} == 0)) || docker rm -f "${tc[@]}" >/dev/null 2>&1 || true
    done
    # wait for their task containers to go (needed before the networks can be removed)
    for ((i = 0; i < 60; i++)); do
      left=0
      for s in "${svcs[@]}"; do
        [[ -n "$(docker ps -aq --filter "label=com.docker.swarm.service.name=$s")" ]] && left=1
      done
      ((left)) || break
      sleep 0.5
    done
  else
    log "no services labelled $LABEL"
  fi
  mapfile -t ctrs < <(docker ps -aq --filter "label=$LABEL")
  if ((${#ctrs[@]})); then docker rm -f "${ctrs[@]}" >/dev/null; log "removed ${#ctrs[@]} container(s)"; fi
  for kind in config secret; do
    mapfile -t objs < <(docker "$kind" ls -q --filter "label=$LABEL" 2>/dev/null || true)
    if ((${#objs[@]})); then
      docker "$kind" rm "${objs[@]}" >/dev/null || log "warning: some ${kind}s could not be removed (still in use?)"
      log "removed ${#objs[@]} ${kind}(s)"
    fi
  done
  mapfile -t nets < <(docker network ls -q --filter "label=$LABEL")
  if ((${#nets[@]})); then
    for ((i = 0; i < 30; i++)); do
      for n in "${nets[@]}"; do docker network rm "$n" >/dev/null 2>&1 || true; done
      mapfile -t nets < <(docker network ls -q --filter "label=$LABEL")
      ((${#nets[@]})) || break
      sleep 1
    done
    if ((${#nets[@]})); then log "warning: network(s) still present: ${nets[*]}"; else log "removed networks"; fi
  fi
else
  log "engine not answering; nothing to clean in Swarm"
fi

((ENGINE)) || exit 0

# stop_by_pidfile NAME PIDFILE CMDLINE-PATTERN
stop_by_pidfile() {
  local name="$1" pf="$2" pat="$3" pid i
  if [[ ! -f $pf ]]; then log "$name: no pidfile $pf (not started by the rig?)"; return 0; fi
  pid=$(cat "$pf")
  if ! kill -0 "$pid" 2>/dev/null; then log "$name: not running"; rm -f "$pf"; return 0; fi
  if ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pat"; then
    log "$name: pid $pid is not $pat; left alone"; return 0
  fi
  kill "$pid"
  for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "$name: pid $pid still running after 30 s"; return 1; fi
  rm -f "$pf"
  log "$name: stopped (pid $pid)"
}
stop_by_pidfile registry "$RIG/registry.pid" docker-registry
stop_by_pidfile "registry with login" "$RIG/registry-auth.pid" docker-registry
stop_by_pidfile dockerd "$RIG/dockerd.pid" dockerd

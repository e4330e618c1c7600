#!/usr/bin/env bash
# The project's full test command: test rig + release build + all tests (incl. e2e).
#
#   tests/run-all.sh [CARGO-TEST-ARGS] [-- TEST-BINARY-ARGS]
#   e.g. tests/run-all.sh -- --nocapture deploy     (only tests whose name contains "deploy")
#
# Runs `cargo test --release --all-targets --no-fail-fast ... -- --include-ignored ...`: the e2e tests are
# #[ignore]d for plain `cargo test`; here they run, and FAIL (never skip) when the engine is
# missing. The benchmark (benches/switch.rs) reports itself ignored: `cargo bench` runs it.
# Exit code = cargo test's exit code (or the failing earlier stage's).
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -d $HOME/.cargo/bin ]] && PATH="$HOME/.cargo/bin:$PATH"

stage() { # NAME CMD...
  local name="$1" t=$SECONDS rc=0
  shift
  echo "=== stage $name: $*"
  "$@" || rc=$?
  echo "=== stage $name took $((SECONDS - t))s (exit $rc)"
  return "$rc"
}

stage rig tests/rig/setup.sh
RIG="${STACKCTL_RIG_DIR:-/tmp/stackctl-rig}"
if [[ -f $RIG/rig.env ]]; then set -a; . "$RIG/rig.env"; set +a; fi

if [[ -f Cargo.lock ]]; then
  stage build cargo build --release --locked
else
  stage build cargo build --release
fi

cargo_args=() bin_args=()
while (($#)); do
  if [[ $1 == -- ]]; then shift; bin_args=("$@"); break; fi
  cargo_args+=("$1"); shift
done
rc=0
stage test cargo test --release --all-targets --no-fail-fast "${cargo_args[@]}" -- --include-ignored "${bin_args[@]}" || rc=$?
exit "$rc"

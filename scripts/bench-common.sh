# bench-common.sh — sourced by scripts/bench-*.sh: the sandbox, the work folder, the topo
# build and the helpers every benchmark shares. Before sourcing, set HERE (the scripts
# folder), PROFILE (debug|release) and, where it has something of its own to end, a
# `bench_cleanup_extra` function (called first on exit).
ROOT=$(dirname "$HERE")
SBX=$HERE/sandbox.sh
eval "$("$SBX" env)"
export LIBVIRT_DEFAULT_URI TOPO_NETNS TOPO_GUEST_DIR
NS=$TOPO_NETNS
log() { echo "bench: $*" >&2; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { awk -v ms="$1" 'BEGIN{printf "%.2f", ms/1000}'; }

WORK=$(mktemp -d)
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if declare -F bench_cleanup_extra >/dev/null; then bench_cleanup_extra || true; fi
  rm -rf "$WORK"
  if [ "${KEEP:-0}" = 1 ]; then log "KEEP=1: sandbox left up"; else "$SBX" down >&2 || rc=1; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The sandbox up, the tiny guest built, topo built ($PROFILE) and copied to $WORK/topo.
bench_setup() {
  "$SBX" up >&2
  "$HERE/mkguest.sh" >&2
  cd "$ROOT"
  local flag=()
  [ "$PROFILE" = release ] && flag=(--release)
  cargo build -q "${flag[@]}" --bin topo
  cp "${CARGO_TARGET_DIR:-target}/$PROFILE/topo" "$WORK/topo"
}

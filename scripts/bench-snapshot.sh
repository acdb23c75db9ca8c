#!/bin/bash
# bench-snapshot.sh — `topo snapshot save` against a `virsh suspend; snapshot-create-as;
# resume` of the same VM, in the same run: the e2e test e2e_snapshot_save_change_restore
# (tests/e2e/snapshots.rs: one Debian cloud guest, 512 MiB, overlay + seed) in the libvirt
# sandbox, which prints both times and restore's time and table. Needs root; takes the
# sandbox lock (one sandbox per machine). Result: docs/benchmarks.md, "Snapshots".
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
flock -o /tmp/topo-sandbox.lock "$HERE/e2e.sh" e2e_snapshot_save_change_restore 2>&1 |
  grep -E -A4 'e2e: (benchmark|snapshot|virsh|restore|apply|delete|destroy)|^e2e: (PASS|FAIL)'

#!/usr/bin/env bash
# Layer index figures for issue #2, each beside its baseline from the same run:
#   index size as % of a ~300 MB realistic layer; cold random 4 KiB reads deep in its gzip
#   blob against a full gunzip; peak RSS while indexing a ~1 GB layer.
# Usage: scripts/bench/layerindex.sh [WORKDIR]   (needs ~3 GB of disk in WORKDIR)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-$(mktemp -d)}
mkdir -p "$work"
go build -o "$work/lxbench" ./scripts/bench/lxbench
b="$work/lxbench"

[ -f "$work/300.tar.gz" ] || { "$b" mktar -size $((300<<20)) -o "$work/300.tar"; pigz -6 -c "$work/300.tar" >"$work/300.tar.gz"; }
"$b" index "$work/300.tar.gz"
"$b" random -n 101 "$work/300.tar.gz"
TIMEFORMAT='gzip -dc of the same blob: %R s'
for i in 1 2 3; do time gzip -dc "$work/300.tar.gz" >/dev/null; done

[ -f "$work/1g.tar.gz" ] || { "$b" mktar -size $((1000<<20)) -o "$work/1g.tar"; pigz -6 -c "$work/1g.tar" >"$work/1g.tar.gz"; rm -f "$work/1g.tar"; }
"$b" index "$work/1g.tar.gz"
echo "work files kept in $work"

#!/usr/bin/env bash
# Import speed for issue #3: `imgfs import` of a ~350 MB two-layer gzip OCI image against
# `skopeo copy oci:… oci:…` of the same image, in the same run, 3 times each, alternating;
# both verify every blob's digest, imgfs also builds each layer's index.
# Usage: scripts/bench/import.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-$(mktemp -d)}
mkdir -p "$work"
make -s build
go build -o "$work/lxbench" ./scripts/bench/lxbench
b="$work/lxbench"
if [ ! -d "$work/img" ]; then
  "$b" mktar -size $((200<<20)) -o "$work/l1.tar"
  "$b" mktar -size $((150<<20)) -o "$work/l2.tar"
  pigz -6 -c "$work/l1.tar" >"$work/l1.tar.gz"; pigz -6 -c "$work/l2.tar" >"$work/l2.tar.gz"
  rm -f "$work/l1.tar" "$work/l2.tar"
  "$b" mkoci -o "$work/img" -name bench/app:1 "$work/l1.tar.gz" "$work/l2.tar.gz"
fi
du -sh "$work/img"
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); awk "BEGIN{printf \"%.2f\", $t1 - $t0}"; }
imgfs=() skopeo=()
for i in 1 2 3; do
  rm -rf "$work/s1" "$work/s2"; sync
  imgfs+=("$(secs bin/imgfs --store "$work/s1" import -q "$work/img")")
  skopeo+=("$(secs skopeo copy -q "oci:$work/img:bench/app:1" "oci:$work/s2:bench/app:1")")
done
med() { printf '%s\n' "$@" | sort -n | sed -n 2p; }
mi=$(med "${imgfs[@]}"); ms=$(med "${skopeo[@]}")
echo "imgfs import: ${imgfs[*]} s (median $mi)"
echo "skopeo copy:  ${skopeo[*]} s (median $ms)"
echo "ratio imgfs/skopeo: $(awk "BEGIN{printf \"%.2f\", $mi / $ms}")"

# Uncompressed layers (a docker save): imgfs stores them as they are. What compressing
# them at import would add: gzip -1 (the cheapest level) of the same layer bytes.
[ -f "$work/app.tar" ] || skopeo copy -q "oci:$work/img:bench/app:1" "docker-archive:$work/app.tar:bench/app:1"
t=()
for i in 1 2 3; do rm -rf "$work/s3"; t+=("$(secs bin/imgfs --store "$work/s3" import -q "$work/app.tar")"); done
echo "imgfs import of the docker-archive form ($(du -m "$work/app.tar" | cut -f1) MB, layers stored uncompressed): ${t[*]} s (median $(med "${t[@]}"))"
g=()
for i in 1 2 3; do g+=("$(secs sh -c "tar -xOf '$work/app.tar' --wildcards '*.tar' | gzip -1 >/dev/null")")
done
echo "gzip -1 of its layers alone (what storing them compressed would add): ${g[*]} s (median $(med "${g[@]}"))"

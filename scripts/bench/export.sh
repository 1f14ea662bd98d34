#!/usr/bin/env bash
# export.tar speed for issue #5: a cold `cp export.tar` of a ~350 MB two-layer gzip image on
# a fresh imgfs mount, against `skopeo copy oci:… docker-archive:…` of the same image (what
# a docker-save-like export costs today) and against `gzip -dc` of its layers (the
# decompression alone, single-threaded), in the same run, 3 times each, alternating, page
# cache dropped before every run when allowed. Two more figures place the result: `cat
# export.tar >/dev/null` (no file written), and `cp export.tar` of the same image stored
# with uncompressed layers, its blobs in the page cache (what FUSE and cp cost without any
# decompression or disk reads).
# Usage: scripts/bench/export.sh [WORKDIR]   (as root; needs /dev/fuse, skopeo, ~2 GB)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-$(mktemp -d)}
mkdir -p "$work"
work=$(realpath "$work")
export PATH=$PATH:/usr/local/go/bin
make -s build
go build -o "$work/lxbench" ./scripts/bench/lxbench
b="$work/lxbench" imgfs=$PWD/bin/imgfs
ref=bench/app:1 mnt=$work/mnt store=$work/store
if [ ! -d "$work/img" ]; then
  "$b" mktar -size $((200<<20)) -o "$work/l1.tar"
  "$b" mktar -size $((150<<20)) -o "$work/l2.tar"
  pigz -6 -c "$work/l1.tar" >"$work/l1.tar.gz"; pigz -6 -c "$work/l2.tar" >"$work/l2.tar.gz"
  rm -f "$work/l1.tar" "$work/l2.tar"
  "$b" mkoci -o "$work/img" -name "$ref" "$work/l1.tar.gz" "$work/l2.tar.gz"
fi
rm -rf "$store" "$work/plain"
"$imgfs" --store "$store" import -q "$work/img" >/dev/null
# The same image with uncompressed layers, from a docker-archive of it.
skopeo copy -q "oci:$work/img:$ref" "docker-archive:$work/plain.tar:$ref"
"$imgfs" --store "$work/plain" import -q "$work/plain.tar" >/dev/null
rm -f "$work/plain.tar"
echo "image: $(du -smL "$work/img" | cut -f1) MB OCI layout, layers gzip (pigz -6)"

umnt() {
  if mountpoint -q "$mnt" 2>/dev/null; then "$imgfs" umount "$mnt" 2>/dev/null || umount -l "$mnt" || true; fi
}
trap umnt EXIT
mkdir -p "$mnt"
umnt
# Memory the kernel hands out for the first time (or again after a VM balloon's free page
# reporting gave it back to the host) costs a fault on the host: 4 ms per MiB on the 2-core
# VM these figures come from, against 0.02 ms for a page used before. A run that follows a
# step which used little memory (gzip -dc) then pays for every page-cache page it fills:
# cp fills about 750 MiB (its copy and export.tar's pages), and cp of the same image went
# from 0.6 to 1.1 s between such runs. Before every timed run, warm touches and frees 1.5 GiB
# so that every command starts on memory that was in use, as on a machine of its own.
warm() { dd if=/dev/zero of=/dev/null bs=1500M count=1 status=none 2>/dev/null || true; }
if sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
  drop() { sync; echo 3 >/proc/sys/vm/drop_caches; warm; }
  echo "page cache: dropped before every run (then 1.5 GiB of memory touched and freed)"
else
  drop() { sync; warm; }
  echo "page cache: NOT dropped (not permitted): runs are page-cache warm"
fi
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; t1=$(date +%s.%N); awk "BEGIN{printf \"%.2f\", $t1 - $t0}"; }
med() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

ti=() ts=() tg=() tv=() tc=() tp=()
for i in 1 2 3; do
  umnt; rm -f "$work/out.tar"; "$imgfs" --store "$store" mount "$mnt" >/dev/null; drop
  ti+=("$(secs cp "$mnt/bench/app/1/export.tar" "$work/out.tar")")
  umnt; "$imgfs" --store "$store" mount "$mnt" >/dev/null; drop
  tc+=("$(secs sh -c "cat '$mnt/bench/app/1/export.tar' >/dev/null")")
  umnt; rm -f "$work/out.tar"; "$imgfs" --store "$work/plain" mount "$mnt" >/dev/null; drop
  cat "$work"/plain/blobs/sha256/* >/dev/null # its blobs in the page cache: no disk reads
  tp+=("$(secs cp "$mnt/bench/app/1/export.tar" "$work/out.tar")")
  umnt; "$imgfs" --store "$store" mount "$mnt" >/dev/null
  rm -f "$work/skopeo.tar"; drop
  ts+=("$(secs skopeo copy -q "oci:$work/img:$ref" "docker-archive:$work/skopeo.tar:$ref")")
  rm -f "$work/save.tar"; drop
  tv+=("$(secs "$imgfs" --store "$store" save -o "$work/save.tar" "$ref")")
  drop
  tg+=("$(secs sh -c "gzip -dc '$work/l1.tar.gz' '$work/l2.tar.gz' >/dev/null")")
done
size=$(stat -c %s "$work/out.tar")
[ "$size" = "$(stat -c %s "$mnt/bench/app/1/export.tar")" ] || { echo "export.sh: size differs from stat" >&2; exit 1; }
cmp -s "$work/out.tar" "$work/save.tar" || { echo "export.sh: imgfs save and export.tar differ" >&2; exit 1; }
mi=$(med "${ti[@]}") ms=$(med "${ts[@]}") mg=$(med "${tg[@]}") mv=$(med "${tv[@]}") mc=$(med "${tc[@]}") mp=$(med "${tp[@]}")
echo "export.tar: $((size >> 20)) MiB"
echo "cp export.tar (cold mount):        ${ti[*]} s (median $mi, $(awk "BEGIN{printf \"%.0f\", $size / 1048576 / $mi}") MiB/s)"
echo "skopeo copy oci: docker-archive:   ${ts[*]} s (median $ms)"
echo "imgfs save -o (no mount):          ${tv[*]} s (median $mv)"
echo "gzip -dc of the layers:            ${tg[*]} s (median $mg)"
echo "cat export.tar >/dev/null:         ${tc[*]} s (median $mc)"
echo "cp export.tar, uncompressed layers: ${tp[*]} s (median $mp): FUSE and cp alone (blobs cached)"
echo "skopeo / cp export.tar: $(awk "BEGIN{printf \"%.2f\", $ms / $mi}")x   skopeo / imgfs save: $(awk "BEGIN{printf \"%.2f\", $ms / $mv}")x   gzip -dc / cp export.tar: $(awk "BEGIN{printf \"%.2f\", $mg / $mi}")x   skopeo / cat export.tar: $(awk "BEGIN{printf \"%.2f\", $ms / $mc}")x"
rm -f "$work/out.tar" "$work/skopeo.tar" "$work/save.tar"

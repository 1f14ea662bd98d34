#!/usr/bin/env bash
# Full-tree walk of a mounted image for issue #4: `tar -c` of rootfs/ of a realistic
# ~18k-entry, ~170 MB gzip image on a fresh imgfs mount against `tar -c` of the same tar
# extracted on local disk, in the same run, 3 times each, alternating, page cache dropped
# before every run of either side; then a stat-only walk (find) of both, a warm second walk
# on the same mount, and the daemon's RSS after a full walk against 64 MiB + 200 B/entry.
# Usage: scripts/bench/walk.sh [WORKDIR]   (as root; needs /dev/fuse and ~1 GB in WORKDIR)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-$(mktemp -d)}
mkdir -p "$work"
work=$(realpath "$work")
export PATH=$PATH:/usr/local/go/bin
make -s build
go build -o "$work/lxbench" ./scripts/bench/lxbench
b="$work/lxbench"
imgfs=$PWD/bin/imgfs
mnt=$work/mnt store=$work/store native=$work/native
ref=bench/walk:1 rootfs=$mnt/bench/walk/1/rootfs

daemon=
umnt() {
  if mountpoint -q "$mnt" 2>/dev/null; then
    "$imgfs" umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  fi
  # Wait for the daemon to exit so it takes no CPU or memory from the next run.
  if [ -n "$daemon" ]; then
    for _ in $(seq 100); do [ -d "/proc/$daemon" ] || break; sleep 0.05; done
    daemon=
  fi
}
trap umnt EXIT
trap 'exit 130' INT TERM
mkdir -p "$mnt"
umnt

# The image: ~18k entries (files, directories, symlinks), pigz -6, one layer.
if [ ! -f "$work/img.tar" ] || [ ! -d "$work/img" ]; then
  rm -rf "$work/img" "$work/img.tar" "$work/img.tar.gz"
  "$b" mktar -size $((172 << 20)) -o "$work/img.tar"
  pigz -6 -c "$work/img.tar" >"$work/img.tar.gz"
  "$b" mkoci -o "$work/img" -name "$ref" "$work/img.tar.gz"
fi
rm -rf "$store" "$native"
"$imgfs" --store "$store" import -q "$work/img"
mkdir -p "$native"
tar -xf "$work/img.tar" -C "$native" --numeric-owner
entries=$(($(find "$native" | wc -l) - 1))
echo "image: $entries entries, $(du -m "$work/img.tar" | cut -f1) MB tar, $(du -m "$work/img.tar.gz" | cut -f1) MB gzip"

mnt_fresh() {
  umnt
  local out
  out=$("$imgfs" --store "$store" mount "$mnt")
  daemon=$(sed -n 's/.*(pid \([0-9]*\).*/\1/p' <<<"$out")
  [ -n "$daemon" ] || daemon=$(pgrep -n -f "imgfs --store $store mount" || true)
  [ -d "$rootfs" ] || { echo "walk.sh: $rootfs missing" >&2; exit 1; }
}
cold=1
if sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
  drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
  echo "page cache: dropped (sync; echo 3 >/proc/sys/vm/drop_caches) before every cold run"
else
  cold=0
  drop() { sync; }
  echo "page cache: NOT dropped (drop_caches not permitted): every run below is page-cache warm"
fi

now() { date +%s.%N; }
# walk DIR: seconds and bytes of a full tar -c of DIR, as "SECS BYTES".
walk() { local t0 n; t0=$(now); n=$(tar -cf - -C "$1" . | wc -c); awk "BEGIN{printf \"%.2f %d\\n\", $(now) - $t0, $n}"; }
# statwalk DIR: seconds and entries of a stat-only walk (find -printf %s stats every entry).
statwalk() { local t0 n; t0=$(now); n=$(find "$1" -printf '%s\n' | wc -l); awk "BEGIN{printf \"%.2f %d\\n\", $(now) - $t0, $n}"; }
med() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

ti=() tn=() si=() sn=()
for i in 1 2 3; do
  mnt_fresh; drop; read -r t bi < <(walk "$rootfs"); ti+=("$t")
  drop; read -r t bn < <(walk "$native"); tn+=("$t")
done
for i in 1 2 3; do
  mnt_fresh; drop; read -r t ni < <(statwalk "$rootfs"); si+=("$t")
  drop; read -r t nn < <(statwalk "$native"); sn+=("$t")
done
mi=$(med "${ti[@]}") mn=$(med "${tn[@]}")
echo "cold tar -c | wc -c, imgfs (fresh mount): ${ti[*]} s (median $mi), $bi bytes"
echo "cold tar -c | wc -c, native ext4:         ${tn[*]} s (median $mn), $bn bytes"
echo "ratio imgfs/native: $(awk "BEGIN{printf \"%.2f\", $mi / $mn}")x (goal <= 1.5x)$([ $cold = 1 ] || echo ' [page-cache warm]')"
msi=$(med "${si[@]}") msn=$(med "${sn[@]}")
echo "cold stat-only walk (find -printf %s), imgfs: ${si[*]} s (median $msi), $ni entries; native: ${sn[*]} s (median $msn), $nn entries; ratio $(awk "BEGIN{printf \"%.2f\", $msi / ($msn > 0 ? $msn : 0.01)}")x"

# One fresh mount: RSS before and after a full walk, then a warm second walk (kernel caches).
rss() { awk '/^VmRSS|^VmHWM/{printf "%s %d MiB  ", $1, $2/1024}' "/proc/$daemon/status"; }
# cpu: the daemon's user+system CPU seconds so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$daemon/stat"; }
mnt_fresh
echo "daemon pid $daemon after mount:     $(rss)"
c0=$(cpu); drop; read -r t1 _ < <(walk "$rootfs"); c1=$(cpu)
hwm=$(awk '/^VmHWM/{print $2}' "/proc/$daemon/status")
echo "daemon after a full cold walk ($t1 s, daemon CPU $(awk "BEGIN{printf \"%.2f\", $c1 - $c0}") s): $(rss)for $entries entries; goal < $(awk "BEGIN{printf \"%.1f\", 64 + $entries * 200 / 1048576}") MiB (64 MiB + 200 B/entry): $(awk "BEGIN{print ($hwm / 1024 < 64 + $entries * 200 / 1048576) ? \"met\" : \"NOT met\"}")"
w=()
c0=$(cpu)
for i in 1 2 3; do read -r t _ < <(walk "$rootfs"); w+=("$t"); done
c1=$(cpu)
walk "$native" >/dev/null # its pages were dropped before the last cold walk
wn=(); for i in 1 2 3; do read -r t _ < <(walk "$native"); wn+=("$t"); done
echo "warm walk, same mount (no drop): ${w[*]} s (median $(med "${w[@]}"), daemon CPU $(awk "BEGIN{printf \"%.2f\", ($c1 - $c0) / 3}") s per walk); native warm: ${wn[*]} s (median $(med "${wn[@]}"))"
echo "daemon after the warm walks:        $(rss)"
umnt
echo "work files kept in $work"

#!/usr/bin/env bash
# Memory at a million entries for issue #15: a one-layer gzip image of 1,000,000 small
# files (1000 directories of 1000 files of a few bytes) is imported, and its peak RSS taken;
# then, on a fresh mount, `tar -c` of rootfs/ and then of layers/0/, with the daemon's peak
# (VmHWM) and current (VmRSS) RSS after each, and its RSS once the kernel has forgotten
# its inodes (echo 2 >/proc/sys/vm/drop_caches sends the FORGETs). Every figure is printed
# against the goal, 64 MiB + 200 B per entry (per entry of the image: a walk of layers/0/
# after rootfs/ walks the same entries again, and is held to the same bound).
# With a second argument, a git revision, the same steps run first with imgfs built from
# that revision (A), then with this tree's (B), on the same image, in the same run.
# Usage: scripts/bench/million.sh [WORKDIR [BASE_REV]]   (as root; needs /dev/fuse, ~1 GB)
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-$(mktemp -d)}
base=${2:-}
mkdir -p "$work"
work=$(realpath "$work")
export PATH=$PATH:/usr/local/go/bin
make -s build
go build -o "$work/lxbench" ./scripts/bench/lxbench
b="$work/lxbench"
mnt=$work/mnt store=$work/store
ref=bench/million:1 rootfs=$mnt/bench/million/1/rootfs layer0=$mnt/bench/million/1/layers/0
bins=() labels=()
if [ -n "$base" ]; then
  rev=$(git rev-parse --short "$base")
  rm -rf "$work/base-src"
  mkdir -p "$work/base-src"
  git archive "$rev" | tar -x -C "$work/base-src"
  (cd "$work/base-src" && GOFLAGS=-tags=isal go build -o "$work/imgfs-$rev" ./cmd/imgfs)
  rm -rf "$work/base-src"
  bins+=("$work/imgfs-$rev") labels+=("A ($rev)")
fi
bins+=("$PWD/bin/imgfs") labels+=("B ($(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . || echo +changes))")
imgfs=${bins[0]}

daemon=
umnt() {
  if mountpoint -q "$mnt" 2>/dev/null; then
    "$imgfs" umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  fi
  if [ -n "$daemon" ]; then
    for _ in $(seq 200); do [ -d "/proc/$daemon" ] || break; sleep 0.05; done
    daemon=
  fi
}
trap umnt EXIT
trap 'exit 130' INT TERM
mkdir -p "$mnt"
umnt

if [ ! -d "$work/img" ]; then
  rm -f "$work/many.tar.gz"
  "$b" mkmany -files 1000000 -per 1000 -o "$work/many.tar.gz"
  "$b" mkoci -o "$work/img" -name "$ref" "$work/many.tar.gz"
  rm -f "$work/many.tar.gz" # mkoci linked it into the layout
fi
entries=1001000 # 1000 directories and their files
goal=$(awk "BEGIN{printf \"%.1f\", 64 + $entries * 200 / 1048576}")
echo "image: $entries entries (1000 directories x 1000 files), $(du -smL "$work/img" | cut -f1) MB OCI layout (gzip)"
echo "goal: < $goal MiB (64 MiB + 200 B/entry) for the import's and the daemon's peak RSS"
can_drop=1
sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || can_drop=0

mib() { awk "BEGIN{printf \"%.0f\", $1 / 1024}"; }
verdict() { awk "BEGIN{print ($1 / 1024 < $goal) ? \"met\" : \"NOT met\"}"; }
status() { awk -v k="$1" '$1 == k":" {print $2}' "/proc/$daemon/status"; }
now() { date +%s.%N; }
# walk DIR: seconds and entries of a tar -c of DIR (every entry looked up, every file read).
walk() {
  local t0 n
  t0=$(now)
  n=$(tar -cvf /dev/null -C "$1" . | wc -l)
  awk "BEGIN{printf \"%.1f %d\\n\", $(now) - $t0, $n}"
}

for k in "${!bins[@]}"; do
  imgfs=${bins[$k]}
  echo "== ${labels[$k]}: $imgfs"
  rm -rf "$store"
  t0=$(now)
  kb=$(/usr/bin/time -f %M "$imgfs" --store "$store" import -q "$work/img" 2>&1 >/dev/null | tail -1)
  echo "import: peak RSS $(mib "$kb") MiB in $(awk "BEGIN{printf \"%.1f\", $(now) - $t0}") s: $(verdict "$kb")"

  [ $can_drop = 1 ] && { sync; echo 3 >/proc/sys/vm/drop_caches; }
  out=$("$imgfs" --store "$store" mount "$mnt")
  daemon=$(sed -n 's/.*(pid \([0-9]*\).*/\1/p' <<<"$out")
  [ -n "$daemon" ] || daemon=$(pgrep -n -f "imgfs --store $store mount" || true)
  [ -d "$rootfs" ] || { echo "million.sh: $rootfs missing" >&2; exit 1; }
  echo "daemon pid $daemon after mount: VmHWM $(mib "$(status VmHWM)") MiB, VmRSS $(mib "$(status VmRSS)") MiB"
  read -r t n < <(walk "$rootfs")
  hwm=$(status VmHWM)
  echo "after tar -c rootfs/ ($n entries, $t s): VmHWM $(mib "$hwm") MiB, VmRSS $(mib "$(status VmRSS)") MiB: $(verdict "$hwm")"
  read -r t n < <(walk "$layer0")
  hwm=$(status VmHWM)
  echo "after tar -c layers/0/ too ($n entries, $t s): VmHWM $(mib "$hwm") MiB, VmRSS $(mib "$(status VmRSS)") MiB: $(verdict "$hwm")"
  if [ $can_drop = 1 ]; then
    echo 2 >/proc/sys/vm/drop_caches
    sleep 5
    echo "5 s after echo 2 >/proc/sys/vm/drop_caches (the kernel forgets the inodes): VmRSS $(mib "$(status VmRSS)") MiB"
  fi
  umnt
done
echo "work files kept in $work"

#!/usr/bin/env bash
# Full-tree walk of a mounted image for issue #4: `tar -c` of rootfs/ of a realistic
# ~18k-entry, ~170 MB gzip image on a fresh imgfs mount against `tar -c` of the same tar
# extracted on local disk, in the same run, 3 times each, alternating, page cache dropped
# before every run of either side; then a stat-only walk (find) of both, a warm second walk
# on the same mount, and the daemon's RSS after a full walk against 64 MiB + 200 B/entry.
# With BASE=REV, REV's imgfs is built too and every imgfs figure is measured for both (each
# binary imports into a store of its own), base and new alternating within each round; the
# daemons' memory is measured on a fresh mount of each. ROUNDS=N sets the rounds (3),
# SIZE_MB=N the tar's size (172); see ab.sh.
# Usage: [BASE=REV] [ROUNDS=N] [SIZE_MB=N] scripts/bench/walk.sh [WORKDIR]
#        (as root; needs /dev/fuse and ~1 GB in WORKDIR, ~1.3 GB with BASE)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/ab.sh
make -s build
[ $ab = 0 ] || ab_build_base
go build -o "$work/lxbench" ./scripts/bench/lxbench
native=$work/native
# Per side (new: this tree's bin/imgfs; base: BASE's): binary, store, mount point, daemon.
declare -A bin=([new]=$PWD/bin/imgfs) store=([new]=$work/store) mnt=([new]=$work/mnt) daemon=([new]="")
if [ $ab = 1 ]; then bin[base]=$work/imgfs-base store[base]=$work/store-base mnt[base]=$work/mnt-base daemon[base]=; fi
rootfs() { echo "${mnt[$1]}/bench/walk/1/rootfs"; }

ab_mounts

walk_image
# Each binary imports into its own store: it builds its own indexes, in its own format.
rm -rf "${store[@]}" "$native"
for s in "${sides[@]}"; do "${bin[$s]}" --store "${store[$s]}" import -q "$work/img"; done
mkdir -p "$native"
tar -xf "$work/img.tar" -C "$native" --numeric-owner
entries=$(($(find "$native" | wc -l) - 1))
echo "image: $entries entries, $(du -m "$work/img.tar" | cut -f1) MB tar, $(du -m "$work/img.tar.gz" | cut -f1) MB gzip"

# mount_side SIDE: a fresh mount of SIDE's store (others stay mounted); mnt_fresh SIDE: the
# same with every other mount gone.
mount_side() {
  umnt "$1"
  local out
  out=$("${bin[$1]}" --store "${store[$1]}" mount "${mnt[$1]}")
  daemon[$1]=$(sed -n 's/.*(pid \([0-9]*\).*/\1/p' <<<"$out")
  [ -n "${daemon[$1]}" ] || daemon[$1]=$(pgrep -n -f "$(basename "${bin[$1]}") --store ${store[$1]} mount" || true)
  [ -d "$(rootfs "$1")" ] || { echo "walk.sh: $(rootfs "$1") missing" >&2; exit 1; }
}
mnt_fresh() { umnt_all; mount_side "$1"; }
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
# sp: a space before the next word of a list of times (none before the first).
sp() { [ -z "$1" ] || echo " "; }

# Times per side as space-separated words; bytes (bi) and entries (ni) per side.
declare -A ti=() si=() bi=() ni=()
tn=() sn=()
for _ in $(seq "$rounds"); do
  for s in "${sides[@]}"; do
    mnt_fresh "$s"; drop; read -r t "bi[$s]" < <(walk "$(rootfs "$s")"); ti[$s]="${ti[$s]:-}$(sp "${ti[$s]:-}")$t"
  done
  drop; read -r t bn < <(walk "$native"); tn+=("$t")
done
for _ in $(seq "$rounds"); do
  for s in "${sides[@]}"; do
    mnt_fresh "$s"; drop; read -r t "ni[$s]" < <(statwalk "$(rootfs "$s")"); si[$s]="${si[$s]:-}$(sp "${si[$s]:-}")$t"
  done
  drop; read -r t nn < <(statwalk "$native"); sn+=("$t")
done
# shellcheck disable=SC2086 # the times are words
mi=$(med ${ti[new]}) mn=$(med "${tn[@]}")
# shellcheck disable=SC2086
msi=$(med ${si[new]}) msn=$(med "${sn[@]}")
if [ $ab = 0 ]; then
  echo "cold tar -c | wc -c, imgfs (fresh mount): ${ti[new]} s (median $mi), ${bi[new]} bytes"
  echo "cold tar -c | wc -c, native ext4:         ${tn[*]} s (median $mn), $bn bytes"
  echo "ratio imgfs/native: $(awk "BEGIN{printf \"%.2f\", $mi / $mn}")x (goal <= 1.5x)$([ $cold = 1 ] || echo ' [page-cache warm]')"
  echo "cold stat-only walk (find -printf %s), imgfs: ${si[new]} s (median $msi), ${ni[new]} entries; native: ${sn[*]} s (median $msn), $nn entries; ratio $(awk "BEGIN{printf \"%.2f\", $msi / ($msn > 0 ? $msn : 0.01)}")x"
else
  # shellcheck disable=SC2086
  mib=$(med ${ti[base]}) msib=$(med ${si[base]})
  ab_line "cold tar -c | wc -c, imgfs (fresh mount):" "${ti[base]}" "${ti[new]}"
  echo "cold tar -c | wc -c, native ext4:         ${tn[*]} s (median $mn), $bn bytes; imgfs ${bi[new]} bytes"
  echo "ratio imgfs/native: base $(ratio "$mib" "$mn")x, new $(ratio "$mi" "$mn")x (goal <= 1.5x)$([ $cold = 1 ] || echo ' [page-cache warm]')"
  ab_line "cold stat-only walk (find -printf %s), imgfs:" "${si[base]}" "${si[new]}"
  echo "cold stat-only walk, native: ${sn[*]} s (median $msn), $nn entries, imgfs ${ni[new]}; ratio imgfs/native: base $(ratio "$msib" "$msn")x, new $(ratio "$msi" "$msn")x"
  # Nothing a user sees may change between the two.
  [ "${bi[base]}" = "${bi[new]}" ] || { echo "walk.sh: tar -c of rootfs/ is ${bi[base]} bytes on base, ${bi[new]} on new" >&2; exit 1; }
  [ "${ni[base]}" = "${ni[new]}" ] || { echo "walk.sh: find sees ${ni[base]} entries on base, ${ni[new]} on new" >&2; exit 1; }
fi

# One fresh mount per side: RSS before and after a full walk, then warm walks (kernel caches).
# rss SIDE, cpu SIDE: the side's daemon's VmRSS and VmHWM; its user+system CPU seconds so far.
rss() { awk '/^VmRSS|^VmHWM/{printf "%s %d MiB  ", $1, $2/1024}' "/proc/${daemon[$1]}/status"; }
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/${daemon[$1]}/stat"; }
goal=$(awk "BEGIN{printf \"%.1f\", 64 + $entries * 200 / 1048576}")
met() { awk "BEGIN{print ($1 / 1024 < 64 + $entries * 200 / 1048576) ? \"met\" : \"NOT met\"}"; }
declare -A rss0=() rss1=() rss2=() hwm=() t1=() ccold=() cwarm=() w=()
umnt_all
for s in "${sides[@]}"; do
  mount_side "$s"
  rss0[$s]=$(rss "$s")
  [ $ab = 1 ] || echo "daemon pid ${daemon[$s]} after mount:     ${rss0[$s]}"
done
# Each side's cold walk (the other side mounted, idle), its peak memory right after.
for s in "${sides[@]}"; do
  c0=$(cpu "$s"); drop; read -r "t1[$s]" _ < <(walk "$(rootfs "$s")"); c1=$(cpu "$s")
  ccold[$s]=$(awk "BEGIN{printf \"%.2f\", $c1 - $c0}")
  hwm[$s]=$(awk '/^VmHWM/{print $2}' "/proc/${daemon[$s]}/status")
  rss1[$s]=$(rss "$s")
done
[ $ab = 0 ] || walk "$(rootfs base)" >/dev/null # its caches were dropped before new's cold walk
declare -A cw0=()
for s in "${sides[@]}"; do cw0[$s]=$(cpu "$s"); done
for _ in $(seq "$rounds"); do
  for s in "${sides[@]}"; do read -r t _ < <(walk "$(rootfs "$s")"); w[$s]="${w[$s]:-}$(sp "${w[$s]:-}")$t"; done
done
for s in "${sides[@]}"; do
  cwarm[$s]=$(awk "BEGIN{printf \"%.2f\", ($(cpu "$s") - ${cw0[$s]}) / $rounds}")
  rss2[$s]=$(rss "$s")
done
walk "$native" >/dev/null # its pages were dropped before the last cold walk
wn=(); for _ in $(seq "$rounds"); do read -r t _ < <(walk "$native"); wn+=("$t"); done
if [ $ab = 0 ]; then
  echo "daemon after a full cold walk (${t1[new]} s, daemon CPU ${ccold[new]} s): ${rss1[new]}for $entries entries; goal < $goal MiB (64 MiB + 200 B/entry): $(met "${hwm[new]}")"
  # shellcheck disable=SC2086
  echo "warm walk, same mount (no drop): ${w[new]} s (median $(med ${w[new]}), daemon CPU ${cwarm[new]} s per walk); native warm: ${wn[*]} s (median $(med "${wn[@]}"))"
  echo "daemon after the warm walks:        ${rss2[new]}"
else
  for s in "${sides[@]}"; do
    echo "daemon $s (pid ${daemon[$s]}) after mount: ${rss0[$s]}"
  done
  for s in "${sides[@]}"; do
    echo "daemon $s after a full cold walk (${t1[$s]} s, daemon CPU ${ccold[$s]} s): ${rss1[$s]}for $entries entries; goal < $goal MiB (64 MiB + 200 B/entry): $(met "${hwm[$s]}")"
  done
  echo "VmHWM after a full cold walk: base $((hwm[base] / 1024)) MiB, new $((hwm[new] / 1024)) MiB, new/base $(ratio "${hwm[new]}" "${hwm[base]}")x"
  ab_line "warm walk, same mount (no drop):" "${w[base]}" "${w[new]}"
  echo "warm walk daemon CPU per walk: base ${cwarm[base]} s, new ${cwarm[new]} s; native warm: ${wn[*]} s (median $(med "${wn[@]}"))"
  for s in "${sides[@]}"; do
    echo "daemon $s after the warm walks: ${rss2[$s]}"
  done
fi
umnt_all
echo "work files kept in $work"

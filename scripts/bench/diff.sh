#!/usr/bin/env bash
# imgfs diff speed for issue #19: two images that share walk.sh's ~18k-entry, ~170 MB gzip
# layer and differ in one small top layer, both imported into one store (the shared layer
# is stored and indexed once). Timed, 3 times each, alternating, page cache dropped before
# every run: `imgfs diff A B` and `imgfs diff B` (B against its parent, A) in a fresh
# process, the indexes built by import as users have them; against `diff -r` of A's and B's
# rootfs/ on a fresh imgfs mount. Both imgfs diffs must print exactly the top layer's changes.
# The top layer, made from files of the walk image: one file whose bytes change (same size,
# so imgfs reads both), one that grows, one that only changes mode, one written again with
# the same bytes and mode (read by imgfs and not listed), a deleted file and directory
# (whiteouts), an added file and an added directory of two files.
# With BASE=REV, REV's imgfs is built too and every figure is measured for both (each binary
# imports into a store of its own and diffs on its own mount), base and new alternating
# within each round. ROUNDS=N sets the rounds (3), SIZE_MB=N the walk image's file data
# (172); see ab.sh.
# Usage: [BASE=REV] [ROUNDS=N] [SIZE_MB=N] scripts/bench/diff.sh [WORKDIR]
#        (as root; needs /dev/fuse and ~0.8 GB in WORKDIR, ~1 GB with BASE)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/ab.sh
make -s build
[ $ab = 0 ] || ab_build_base
go build -o "$work/lxbench" ./scripts/bench/lxbench
a=bench/walk:1 b=bench/walk:2
# Per side (new: this tree's bin/imgfs; base: BASE's): binary, store, mount point, daemon.
declare -A bin=([new]=$PWD/bin/imgfs) store=([new]=$work/store) mnt=([new]=$work/mnt) daemon=([new]="")
if [ $ab = 1 ]; then
  bin[base]=$work/imgfs-base store[base]=$work/store-base mnt[base]=$work/mnt-base daemon[base]=
  "${bin[base]}" --help | grep -q '^  diff ' || { echo "diff.sh: BASE=$BASE's imgfs has no diff command" >&2; exit 2; }
fi
# rootfs SIDE TAG: bench/walk:TAG's rootfs/ on SIDE's mount.
rootfs() { echo "${mnt[$1]}/bench/walk/$2/rootfs"; }

ab_mounts

walk_image

# The top layer. Its files are picked from the walk image by their place in it, so the same
# image gets the same layer: regular files of 64 B to 1 MiB with plain names, and a
# directory holding none of them.
mapfile -t files < <(tar -tvf "$work/img.tar" |
  awk '$1 ~ /^-/ && NF == 6 && $3 >= 64 && $3 <= 1048576 && $6 ~ /^[A-Za-z0-9._\/+-]+$/ {print $6}')
n=${#files[@]}
[ "$n" -ge 6 ] || { echo "diff.sh: only $n files to change in the walk image: SIZE_MB=${SIZE_MB:-172} is too small" >&2; exit 1; }
bytes=${files[n / 6]} grows=${files[2 * n / 6]} chmod=${files[3 * n / 6]} same=${files[4 * n / 6]} del=${files[5 * n / 6]}
deldir=
while read -r d; do
  d=${d%/}
  case " $bytes $grows $chmod $same $del " in *" $d/"*) continue ;; esac
  deldir=$d
  break
done < <(tar -tvf "$work/img.tar" | awk '$1 ~ /^d/ && NF == 6 && $6 ~ /^[A-Za-z0-9._\/+-]+$/ {print $6}' | tac)
[ -n "$deldir" ] || { echo "diff.sh: no directory to delete in the walk image" >&2; exit 1; }
added=$(dirname "$bytes")/imgfs-bench-added newdir=r0/imgfs-bench-new
top=$work/top
rm -rf "$top"
mkdir -p "$top/$newdir"
tar -xf "$work/img.tar" -C "$top" --no-recursion "$bytes" "$grows" "$chmod" "$same"
# The first byte of $bytes becomes another one.
[ "$(head -c1 "$top/$bytes")" = x ] && c=y || c=x
printf %s "$c" | dd of="$top/$bytes" conv=notrunc status=none
echo "imgfs diff bench" >>"$top/$grows"
chmod "$(printf %o $((8#$(stat -c %a "$top/$chmod") ^ 8#100)))" "$top/$chmod"
mkdir -p "$top/$(dirname "$del")" "$top/$(dirname "$deldir")"
: >"$top/$(dirname "$del")/.wh.$(basename "$del")"
: >"$top/$(dirname "$deldir")/.wh.$(basename "$deldir")"
echo added >"$top/$added"
echo a >"$top/$newdir/a"
echo b >"$top/$newdir/b"
chmod 0755 "$top/$newdir"
chmod 0644 "$top/$added" "$top/$newdir/a" "$top/$newdir/b" "$top/$(dirname "$del")/.wh.$(basename "$del")" "$top/$(dirname "$deldir")/.wh.$(basename "$deldir")"
# Only the entries above go in: no entry for the directories they are in, whose mode and
# owner stay the walk image's.
tar -cf - -C "$top" --no-recursion --format=gnu --numeric-owner --owner=0 --group=0 \
  "$bytes" "$grows" "$chmod" "$same" "$(dirname "$del")/.wh.$(basename "$del")" \
  "$(dirname "$deldir")/.wh.$(basename "$deldir")" "$added" "$newdir" "$newdir/a" "$newdir/b" |
  gzip -n -6 >"$work/top.tar.gz"
rm -rf "$work/img-b"
"$work/lxbench" mkoci -o "$work/img-b" -name "$b" "$work/img.tar.gz" "$work/top.tar.gz"
# What both imgfs diffs must print, in docker diff's order (by path, bytewise).
printf '%s\n' "C /$bytes" "C /$grows" "C /$chmod" "D /$del" "D /$deldir" "A /$added" "A /$newdir" \
  "A /$newdir/a" "A /$newdir/b" | LC_ALL=C sort -t ' ' -k 2 >"$work/expected"

# Each binary imports both into its own store: one copy and one index of the shared layer.
rm -rf "${store[@]}"
for s in "${sides[@]}"; do
  "${bin[$s]}" --store "${store[$s]}" import -q "$work/img"
  "${bin[$s]}" --store "${store[$s]}" import -q "$work/img-b"
done
entries=$(tar -tf "$work/img.tar" | wc -l)
echo "image A ($a): $entries entries, $(du -m "$work/img.tar" | cut -f1) MB tar, $(du -m "$work/img.tar.gz" | cut -f1) MB gzip"
echo "image B ($b): A + a top layer of $(tar -tzf "$work/top.tar.gz" | wc -l) entries, $(du -k "$work/top.tar.gz" | cut -f1) KB gzip; its changes:"
sed 's/^/  /' "$work/expected"
echo "  (same size, other bytes: /$bytes; mode only: /$chmod; written again unchanged, not listed: /$same)"

# mount_side SIDE: a fresh mount of SIDE's store with every other mount gone.
mount_side() {
  umnt_all
  local out
  out=$("${bin[$1]}" --store "${store[$1]}" mount "${mnt[$1]}")
  daemon[$1]=$(sed -n 's/.*(pid \([0-9]*\).*/\1/p' <<<"$out")
  [ -n "${daemon[$1]}" ] || daemon[$1]=$(pgrep -n -f "$(basename "${bin[$1]}") --store ${store[$1]} mount" || true)
  [ -d "$(rootfs "$1" 2)" ] || { echo "diff.sh: $(rootfs "$1" 2) missing" >&2; exit 1; }
}
cold=1
if sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
  drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
  echo "page cache: dropped (sync; echo 3 >/proc/sys/vm/drop_caches) before every run"
else
  cold=0
  drop() { sync; }
  echo "page cache: NOT dropped (drop_caches not permitted): every run below is page-cache warm"
fi

now() { date +%s.%N; }
# timed MAX OUT CMD...: run CMD with its output in OUT and set t to its seconds; an exit
# status above MAX fails the script (diff -r exits 1 when it finds differences).
timed() {
  local max=$1 out=$2 t0 rc=0
  shift 2
  t0=$(now)
  "$@" >"$out" || rc=$?
  t=$(awk "BEGIN{printf \"%.3f\", $(now) - $t0}")
  [ "$rc" -le "$max" ] || { echo "diff.sh: '$*' exited $rc" >&2; exit 1; }
}
# check OUT WHAT: OUT must be the expected changes.
check() {
  cmp -s "$work/expected" "$1" && return
  echo "diff.sh: $2 printed other changes than the top layer's (- expected, + printed):" >&2
  diff -u "$work/expected" "$1" >&2 || true
  exit 1
}

declare -A t2=() t1=() tr=()
for _ in $(seq "$rounds"); do
  umnt_all
  for s in "${sides[@]}"; do
    drop; timed 0 "$work/out" "${bin[$s]}" --store "${store[$s]}" diff "$a" "$b"; add t2 "$s" "$t"
    check "$work/out" "$s imgfs diff $a $b"
  done
  for s in "${sides[@]}"; do
    drop; timed 0 "$work/out" "${bin[$s]}" --store "${store[$s]}" diff "$b"; add t1 "$s" "$t"
    check "$work/out" "$s imgfs diff $b"
  done
  for s in "${sides[@]}"; do
    mount_side "$s"; drop; timed 1 "$work/diff-r.out" diff -r "$(rootfs "$s" 1)" "$(rootfs "$s" 2)"; add tr "$s" "$t"
    # diff -r sees neither the mode nor the file written again: it reports the two files
    # whose bytes differ and the four paths only in one tree.
    reports=$(grep -c -e '^diff -r ' -e '^Only in ' -e '^Binary files ' "$work/diff-r.out" || true)
    [ "$reports" = 6 ] || { echo "diff.sh: $s: diff -r reported $reports paths, not 6; its output is in $work/diff-r.out" >&2; exit 1; }
  done
done
umnt_all
warm=$([ $cold = 1 ] || echo ' [page-cache warm]')
if [ $ab = 0 ]; then
  # shellcheck disable=SC2086 # the times are words
  m2=$(med ${t2[new]}) m1=$(med ${t1[new]}) mr=$(med ${tr[new]})
  echo "cold imgfs diff A B (fresh process):        ${t2[new]} s (median $m2)"
  echo "cold imgfs diff B (B against its parent):   ${t1[new]} s (median $m1)"
  echo "cold diff -r of A's and B's rootfs/ (fresh mount): ${tr[new]} s (median $mr)"
  echo "ratio diff -r / imgfs diff: A B $(ratio "$mr" "$m2")x, B $(ratio "$mr" "$m1")x$warm"
else
  ab_line "cold imgfs diff A B (fresh process):" "${t2[base]}" "${t2[new]}"
  ab_line "cold imgfs diff B (against its parent):" "${t1[base]}" "${t1[new]}"
  ab_line "cold diff -r of A's and B's rootfs/ (fresh mount):" "${tr[base]}" "${tr[new]}"
  # shellcheck disable=SC2086 # the times are words
  echo "ratio diff -r / imgfs diff A B: base $(ratio "$(med ${tr[base]})" "$(med ${t2[base]})")x, new $(ratio "$(med ${tr[new]})" "$(med ${t2[new]})")x$warm"
fi
echo "work files kept in $work"

#!/usr/bin/env bash
# export.tar speed for issue #5: a cold `cp export.tar` of a ~350 MB two-layer gzip image on
# a fresh imgfs mount, against `skopeo copy oci:… docker-archive:…` of the same image (what
# a docker-save-like export costs today) and against `gzip -dc` of its layers (the
# decompression alone, single-threaded), in the same run, 3 times each, alternating, page
# cache dropped before every run when allowed. Two more figures place the result: `cat
# export.tar >/dev/null` (no file written), and `cp export.tar` of the same image stored
# with uncompressed layers, its blobs in the page cache (what FUSE and cp cost without any
# decompression or disk reads).
# With BASE=REV, REV's imgfs is built too, each binary imports both stores into stores of its
# own, and every imgfs figure (cp, cat, cp of the uncompressed image, imgfs save) is timed
# for both, base and new alternating within each round; skopeo and gzip -dc once per round.
# base's export.tar must be new's, byte for byte. ROUNDS=N sets the rounds (3), SIZE_MB=N
# the image's size (350: layers of 4/7 and 3/7 of it); see ab.sh.
# Usage: [BASE=REV] [ROUNDS=N] [SIZE_MB=N] scripts/bench/export.sh [WORKDIR]
#        (as root; needs /dev/fuse, skopeo, ~2 GB, ~3 GB with BASE)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/ab.sh
make -s build
[ $ab = 0 ] || ab_build_base
go build -o "$work/lxbench" ./scripts/bench/lxbench
ref=bench/app:1 mnt=$work/mnt
# Per side (new: this tree's bin/imgfs; base: BASE's): binary, stores (gzip layers and
# uncompressed layers), and a suffix for the files it writes.
declare -A bin=([new]=$PWD/bin/imgfs) store=([new]=$work/store) plain=([new]=$work/plain) sfx=([new]="")
if [ $ab = 1 ]; then bin[base]=$work/imgfs-base store[base]=$work/store-base plain[base]=$work/plain-base sfx[base]=-base; fi
app_image
rm -rf "${store[@]}" "${plain[@]}"
for s in "${sides[@]}"; do "${bin[$s]}" --store "${store[$s]}" import -q "$work/img" >/dev/null; done
# The same image with uncompressed layers, from a docker-archive of it.
skopeo copy -q "oci:$work/img:$ref" "docker-archive:$work/plain.tar:$ref"
for s in "${sides[@]}"; do "${bin[$s]}" --store "${plain[$s]}" import -q "$work/plain.tar" >/dev/null; done
rm -f "$work/plain.tar"
echo "image: $(du -smL "$work/img" | cut -f1) MB OCI layout, layers gzip (pigz -6)"

# umnt: unmount $mnt (whichever side mounted it); mnt_side SIDE STORE: mount STORE with SIDE's
# binary.
umnt() {
  if mountpoint -q "$mnt" 2>/dev/null; then "${bin[new]}" umount "$mnt" 2>/dev/null || umount -l "$mnt" || true; fi
}
mnt_side() { "${bin[$1]}" --store "$2" mount "$mnt" >/dev/null; }
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
if sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
  drop() { sync; echo 3 >/proc/sys/vm/drop_caches; warm; }
  echo "page cache: dropped before every run (then 1.5 GiB of memory touched and freed)"
else
  drop() { sync; warm; }
  echo "page cache: NOT dropped (not permitted): runs are page-cache warm"
fi
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; t1=$(date +%s.%N); awk "BEGIN{printf \"%.2f\", $t1 - $t0}"; }

declare -A ti=() tv=() tc=() tp=()
ts=() tg=()
for i in $(seq "$rounds"); do
  for s in "${sides[@]}"; do
    umnt; rm -f "$work/out${sfx[$s]}.tar"; mnt_side "$s" "${store[$s]}"; drop
    add ti "$s" "$(secs cp "$mnt/bench/app/1/export.tar" "$work/out${sfx[$s]}.tar")"
  done
  # Nothing a user sees may change: base's export.tar is new's, byte for byte.
  if [ $ab = 1 ] && [ "$i" = 1 ]; then
    cmp -s "$work/out-base.tar" "$work/out.tar" || { echo "export.sh: export.tar differs between base and new" >&2; exit 1; }
  fi
  for s in "${sides[@]}"; do
    umnt; mnt_side "$s" "${store[$s]}"; drop
    add tc "$s" "$(secs sh -c "cat '$mnt/bench/app/1/export.tar' >/dev/null")"
  done
  for s in "${sides[@]}"; do
    umnt; rm -f "$work/out${sfx[$s]}.tar"; mnt_side "$s" "${plain[$s]}"; drop
    cat "${plain[$s]}"/blobs/sha256/* >/dev/null # its blobs in the page cache: no disk reads
    add tp "$s" "$(secs cp "$mnt/bench/app/1/export.tar" "$work/out${sfx[$s]}.tar")"
  done
  umnt; mnt_side new "${store[new]}"
  rm -f "$work/skopeo.tar"; drop
  ts+=("$(secs skopeo copy -q "oci:$work/img:$ref" "docker-archive:$work/skopeo.tar:$ref")")
  for s in "${sides[@]}"; do
    rm -f "$work/save${sfx[$s]}.tar"; drop
    add tv "$s" "$(secs "${bin[$s]}" --store "${store[$s]}" save -o "$work/save${sfx[$s]}.tar" "$ref")"
  done
  drop
  tg+=("$(secs sh -c "gzip -dc '$work/l1.tar.gz' '$work/l2.tar.gz' >/dev/null")")
done
size=$(stat -c %s "$work/out.tar")
[ "$size" = "$(stat -c %s "$mnt/bench/app/1/export.tar")" ] || { echo "export.sh: size differs from stat" >&2; exit 1; }
cmp -s "$work/out.tar" "$work/save.tar" || { echo "export.sh: imgfs save and export.tar differ" >&2; exit 1; }
if [ $ab = 1 ]; then
  cmp -s "$work/out-base.tar" "$work/out.tar" || { echo "export.sh: export.tar of the uncompressed image differs between base and new" >&2; exit 1; }
  cmp -s "$work/save-base.tar" "$work/save.tar" || { echo "export.sh: imgfs save differs between base and new" >&2; exit 1; }
fi
# shellcheck disable=SC2086 # the times are words
mi=$(med ${ti[new]}) ms=$(med "${ts[@]}") mg=$(med "${tg[@]}") mv=$(med ${tv[new]}) mc=$(med ${tc[new]}) mp=$(med ${tp[new]})
echo "export.tar: $((size >> 20)) MiB"
if [ $ab = 0 ]; then
  echo "cp export.tar (cold mount):        ${ti[new]} s (median $mi, $(awk "BEGIN{printf \"%.0f\", $size / 1048576 / $mi}") MiB/s)"
  echo "skopeo copy oci: docker-archive:   ${ts[*]} s (median $ms)"
  echo "imgfs save -o (no mount):          ${tv[new]} s (median $mv)"
  echo "gzip -dc of the layers:            ${tg[*]} s (median $mg)"
  echo "cat export.tar >/dev/null:         ${tc[new]} s (median $mc)"
  echo "cp export.tar, uncompressed layers: ${tp[new]} s (median $mp): FUSE and cp alone (blobs cached)"
  echo "skopeo / cp export.tar: $(awk "BEGIN{printf \"%.2f\", $ms / $mi}")x   skopeo / imgfs save: $(awk "BEGIN{printf \"%.2f\", $ms / $mv}")x   gzip -dc / cp export.tar: $(awk "BEGIN{printf \"%.2f\", $mg / $mi}")x   skopeo / cat export.tar: $(awk "BEGIN{printf \"%.2f\", $ms / $mc}")x"
else
  echo "export.tar of base and new: the same bytes (cp of both stores, imgfs save)"
  # shellcheck disable=SC2086
  mib=$(med ${ti[base]}) mvb=$(med ${tv[base]}) mcb=$(med ${tc[base]})
  mibs() { awk "BEGIN{if ($1 > 0) printf \"%.0f\", $size / 1048576 / $1; else printf \"n/a\"}"; }
  ab_line "cp export.tar (cold mount):        " "${ti[base]}" "${ti[new]}" ", $(mibs "$mib") MiB/s" ", $(mibs "$mi") MiB/s"
  ab_line "cat export.tar >/dev/null:         " "${tc[base]}" "${tc[new]}"
  ab_line "cp export.tar, uncompressed layers:" "${tp[base]}" "${tp[new]}"
  ab_line "imgfs save -o (no mount):          " "${tv[base]}" "${tv[new]}"
  echo "skopeo copy oci: docker-archive:    ${ts[*]} s (median $ms)"
  echo "gzip -dc of the layers:             ${tg[*]} s (median $mg)"
  for s in "${sides[@]}"; do
    if [ "$s" = base ]; then x=$mib v=$mvb c=$mcb; else x=$mi v=$mv c=$mc; fi
    echo "$s: skopeo / cp export.tar: $(ratio "$ms" "$x")x   skopeo / imgfs save: $(ratio "$ms" "$v")x   gzip -dc / cp export.tar: $(ratio "$mg" "$x")x   skopeo / cat export.tar: $(ratio "$ms" "$c")x"
  done
fi
rm -f "$work/out.tar" "$work/skopeo.tar" "$work/save.tar" "$work/out-base.tar" "$work/save-base.tar"

#!/usr/bin/env bash
# Lazy mount speed for issue #18, on a registry on 127.0.0.1 (Debian's docker-registry,
# storage in WORKDIR) holding the ~350 MB two-layer gzip image of export.sh and pull.sh
# (whose fixture it shares in the same WORKDIR) twice:
#   - bench/app:1, pushed by skopeo: no shared layer indexes, so a mount's first touch of
#     the image builds them by streaming each layer once (then keeps them in its store);
#   - bench/idx:1, pushed by `imgfs push`: with its layer indexes as an artifact whose
#     subject is the manifest (the fallback tag sha256-HEX, the registry having no referrers
#     API), which a mount may take instead of streaming the layers.
# In one run, alternating, ROUNDS times each (3):
#   1. time to the first byte: `imgfs mount --registry` on an empty store (no chunk cache,
#      no index) and `head -c1` of one small file of the top layer in rootfs/, timed from the
#      mount's start, for each of the two images, against `skopeo copy docker://… oci:…` of
#      the whole image into an empty directory (goal: under 0.1x); the mount alone; and the
#      same head -c1 alone on a mount that serves already (started on an empty store once
#      the page cache was dropped), as a fleet's daemon sees an image for the first time;
#   2. cold `tar -c rootfs/ | wc -c` (tar -f /dev/null reads no file data) on a fresh mount
#      of an empty store with --registry, for each image, against the same on a fresh mount
#      of a store the image was pulled into by `imgfs pull` (goal: within 1.5x).
# Before every run the page cache is dropped when allowed; before a run that reads the
# registry its blobs are then read back into memory, as a registry serves them (pull.sh).
# The bytes of blobs the registry sent for each run come from its access log (with the
# mount's read-ahead: counted once its daemon has exited), in % of the layers' bytes.
# With BASE=REV, REV's imgfs is built too and every imgfs figure is timed for base and new
# alternating within each round (each binary pulls into a store of its own); SIZE_MB=N sets
# the image's size (350: layers of 4/7 and 3/7 of it); see ab.sh.
# Usage: [BASE=REV] [ROUNDS=N] [SIZE_MB=N] scripts/bench/lazy.sh [WORKDIR]
#        (as root; needs /dev/fuse, skopeo, docker-registry, pigz, ~2 GB)
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/bench/ab.sh
need skopeo docker-registry pigz
make -s build
[ $ab = 0 ] || ab_build_base
go build -o "$work/lxbench" ./scripts/bench/lxbench
ref=bench/app:1
# Per side (new: this tree's bin/imgfs; base: BASE's): binary, mount point, its daemon, the
# empty store of a lazy mount, and the store it pulls into.
declare -A bin=([new]=$PWD/bin/imgfs) mnt=([new]=$work/mnt) daemon=([new]="") lazy=([new]=$work/lazy) pulled=([new]=$work/pulled)
if [ $ab = 1 ]; then
  bin[base]=$work/imgfs-base mnt[base]=$work/mnt-base daemon[base]="" lazy[base]=$work/lazy-base pulled[base]=$work/pulled-base
fi
app_image
manifest=$(sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p' "$work/img/index.json")
layers=$(($(stat -c %s "$work/l1.tar.gz") + $(stat -c %s "$work/l2.tar.gz")))
echo "image: $((layers >> 20)) MiB of layers (manifest $manifest), 2 layers gzip (pigz -6)"
# The small file read: the top layer's first regular file of 1 to 4096 bytes (one whose
# name has no spaces, for the listing's columns), and its first byte.
read -r small_size small < <(tar -tvzf "$work/l2.tar.gz" | awk '$1 ~ /^-/ && $3 > 0 && $3 <= 4096 && NF == 6 {print $3, $6; exit}') || true
[ -n "${small:-}" ] || { echo "lazy.sh: no file of 1 to 4096 bytes in the top layer" >&2; exit 1; }
want=$(tar -xOzf "$work/l2.tar.gz" "$small" | head -c1 | od -An -tx1)
small=${small#./}
echo "small file: $small ($small_size bytes, top layer)"

ab_mounts
# The registry, as pull.sh starts one, with its access log on: on 127.0.0.1 at the port it
# picks itself (addr :0, read back from its log), its storage and log in $work/reg; stopped
# on exit, after the mounts.
reg=$work/reg reg_pid=
trap 'umnt_all; [ -z "$reg_pid" ] || { kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null; } || true' EXIT
rm -rf "$reg"; mkdir -p "$reg"
cat >"$reg/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $reg/storage
http:
  addr: 127.0.0.1:0
EOF
: >"$reg/registry.log"
docker-registry serve "$reg/config.yml" >>"$reg/registry.log" 2>&1 &
reg_pid=$! src=
for _ in $(seq 200); do
  src=$(sed -n 's/.*msg="listening on \(127\.0\.0\.1:[0-9]*\)".*/\1/p' "$reg/registry.log")
  if [ -n "$src" ] || ! kill -0 "$reg_pid" 2>/dev/null; then break; fi
  sleep 0.05
done
[ -n "$src" ] || { echo "lazy.sh: the registry did not start: $(tail -3 "$reg/registry.log")" >&2; exit 1; }
repos=$reg/storage/docker/registry/v2/repositories
# reg_tag REPO TAG: the manifest digest the registry holds as REPO:TAG.
reg_tag() { cat "$repos/$1/_manifests/tags/$2/current/link" 2>/dev/null || echo none; }

skopeo copy -q --dest-tls-verify=false "oci:$work/img:$ref" "docker://$src/bench/app:1"
rm -rf "$work/store"
"${bin[new]}" --store "$work/store" import -q "$work/img" >/dev/null
"${bin[new]}" --store "$work/store" tag "$ref" "$src/bench/idx:1"
"${bin[new]}" --store "$work/store" push -q "$src/bench/idx:1"
rm -rf "$work/store"
for r in app idx; do
  [ "$(reg_tag bench/$r 1)" = "$manifest" ] || { echo "lazy.sh: the registry holds $(reg_tag bench/$r 1) as bench/$r:1, want $manifest" >&2; exit 1; }
done
# Which is which: imgfs push left the indexes' artifact under the fallback tag, skopeo none.
fallback=sha256-${manifest#sha256:}
[ "$(reg_tag bench/idx "$fallback")" != none ] || { echo "lazy.sh: imgfs push left no layer indexes (tag $fallback) in bench/idx" >&2; exit 1; }
[ "$(reg_tag bench/app "$fallback")" = none ] || { echo "lazy.sh: bench/app has layer indexes (tag $fallback)" >&2; exit 1; }
echo "registry $src: bench/app:1 pushed by skopeo (no indexes), bench/idx:1 by imgfs push (indexes under tag $fallback)"
# Each binary pulls into a store of its own, its indexes built as it pulls.
rm -rf "${pulled[@]}"
for s in "${sides[@]}"; do
  "${bin[$s]}" --store "${pulled[$s]}" pull -q "$src/$ref" >/dev/null
  "${bin[$s]}" --store "${pulled[$s]}" tag "$src/$ref" "$ref"
done

# The same as export.sh and pull.sh: every timed run starts on memory that was in use.
if sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
  drop() { sync; echo 3 >/proc/sys/vm/drop_caches; warm; }
  echo "page cache: dropped before every run (then 1.5 GiB of memory touched and freed; before a registry run, its blobs read back)"
else
  drop() { sync; warm; }
  echo "page cache: NOT dropped (not permitted): runs are page-cache warm"
fi
# cold_reg: the page cache dropped, the registry's blobs in it again.
cold_reg() { drop; find "$reg/storage" -name data -type f -exec cat {} + >/dev/null; }
now() { date +%s.%N; }
since() { awk "BEGIN{printf \"%.2f\", $(now) - $1}"; }
# secs CMD...: CMD's wall time in seconds; its output goes to $work/run.log, shown if it fails.
secs() {
  local t0
  t0=$(now)
  "$@" >"$work/run.log" 2>&1 || { echo "failed: $*" >&2; tail -5 "$work/run.log" >&2; exit 1; }
  since "$t0"
}
# mount_side SIDE STORE [FLAGS...]: a fresh mount of STORE by SIDE's binary, every other one gone.
mount_side() {
  local s=$1 st=$2 out
  shift 2
  umnt_all
  out=$("${bin[$s]}" --store "$st" mount "$@" "${mnt[$s]}") || { echo "lazy.sh: mount of $st ($s) failed" >&2; exit 1; }
  daemon[$s]=$(sed -n 's/.*(pid \([0-9]*\).*/\1/p' <<<"$out")
}
# mark: the access log's lines so far; fetched MARK: the % of the layers' bytes the registry
# sent in blob GETs after MARK, once the log is still (called with the daemons gone, so that
# their reads ahead are counted).
mark() { wc -l <"$reg/registry.log"; }
fetched() {
  local n=-1
  while [ "$n" != "$(wc -l <"$reg/registry.log")" ]; do n=$(wc -l <"$reg/registry.log"); sleep 0.3; done
  tail -n +"$(($1 + 1))" "$reg/registry.log" |
    sed -n 's/.*"GET \/v2\/[^"]*\/blobs\/sha256:[0-9a-f]* HTTP\/[0-9.]*" 20[06] \([0-9]*\).*/\1/p' |
    awk -v l="$layers" '{n += $1} END {printf "%.1f", 100 * n / l}'
}
# walk DIR: seconds and bytes of a full tar -c of DIR, as "SECS BYTES" (walk.sh's).
walk() { local t0 n; t0=$(now); n=$(tar -cf - -C "$1" . | wc -c); echo "$(since "$t0") $n"; }

# Per side and image (KEY "SIDE IMG", IMG app or idx): times to the first byte (mount
# included; the mount alone), cold walk times, fetched %; per side: local walks.
declare -A tf=() tm=() tr=() pf=() tw=() pw=() tl=() bw=() bl=()
tsk=()
for _ in $(seq "$rounds"); do
  rm -rf "$work/oci-pulled"; cold_reg
  tsk+=("$(secs skopeo copy -q --src-tls-verify=false "docker://$src/$ref" "oci:$work/oci-pulled:$ref")")
  for img in app idx; do
    for s in "${sides[@]}"; do
      umnt_all; rm -rf "${lazy[$s]}"; cold_reg; m=$(mark)
      t0=$(now)
      mount_side "$s" "${lazy[$s]}" --registry "$src"
      t1=$(now)
      got=$(head -c1 "${mnt[$s]}/$src/bench/$img/1/rootfs/$small" | od -An -tx1)
      add tf "$s $img" "$(since "$t0")"; add tm "$s $img" "$(awk "BEGIN{printf \"%.2f\", $t1 - $t0}")"
      [ "$got" = "$want" ] || { echo "lazy.sh: the first byte of $small on bench/$img ($s) is '$got', want '$want'" >&2; exit 1; }
      umnt_all; add pf "$s $img" "$(fetched "$m")"
      # The same read on a mount already serving (as a fleet's daemon is when an image is
      # first asked for): the page cache dropped, then mounted on an empty store (its code
      # in memory, as a serving daemon's is), its catalog asked, then timed.
      rm -rf "${lazy[$s]}"; umnt_all; cold_reg; mount_side "$s" "${lazy[$s]}" --registry "$src"; sleep 0.5
      t0=$(now)
      got=$(head -c1 "${mnt[$s]}/$src/bench/$img/1/rootfs/$small" | od -An -tx1)
      add tr "$s $img" "$(since "$t0")"
      [ "$got" = "$want" ] || { echo "lazy.sh: the first byte of $small on bench/$img ($s, mounted before) is '$got', want '$want'" >&2; exit 1; }
      umnt_all
    done
  done
  for img in app idx; do
    for s in "${sides[@]}"; do
      umnt_all; rm -rf "${lazy[$s]}"; mount_side "$s" "${lazy[$s]}" --registry "$src"; cold_reg; m=$(mark)
      read -r t "bw[$s $img]" < <(walk "${mnt[$s]}/$src/bench/$img/1/rootfs")
      umnt_all; add tw "$s $img" "$t"; add pw "$s $img" "$(fetched "$m")"
    done
  done
  for s in "${sides[@]}"; do
    mount_side "$s" "${pulled[$s]}"; drop
    read -r t "bl[$s]" < <(walk "${mnt[$s]}/bench/app/1/rootfs")
    add tl "$s" "$t"
  done
done
umnt_all
kill "$reg_pid" 2>/dev/null || true; wait "$reg_pid" 2>/dev/null || true; reg_pid=
rm -rf "$work/oci-pulled" "${lazy[@]}" "${pulled[@]}" "$reg"
# Every walk read the same tar stream's length: the lazy rootfs/ is the pulled one's.
for s in "${sides[@]}"; do
  for img in app idx; do
    [ "${bw[$s $img]}" = "${bl[$s]}" ] || { echo "lazy.sh: tar -c of bench/$img's rootfs/ ($s) is ${bw[$s $img]} bytes from the registry, ${bl[$s]} pulled" >&2; exit 1; }
  done
done

msk=$(med "${tsk[@]}")
echo "skopeo copy docker:// oci: (empty dir): ${tsk[*]} s (median $msk)"
# shellcheck disable=SC2086 # the times are words
for s in "${sides[@]}"; do
  [ $ab = 0 ] || echo "$s:"
  ml=$(med ${tl[$s]})
  for img in app idx; do
    if [ $img = app ]; then what="bench/app, pushed by skopeo: no indexes in the registry"; else what="bench/idx, pushed by imgfs push: its indexes in the registry"; fi
    mf=$(med ${tf[$s $img]}) mw=$(med ${tw[$s $img]})
    # Whether the mount built the indexes, from what it fetched: streaming the layers is 100 %.
    built=$(awk -v p="$(med ${pf[$s $img]})" 'BEGIN{print (p >= 100) ? "built the indexes itself (streamed the layers)" : "took the registry'"'"'s indexes (streamed no layer)"}')
    echo "  $what; the mount $built:"
    echo "    first byte (mount + head -c1, empty store): ${tf[$s $img]} s (median $mf; the mount alone ${tm[$s $img]} s), fetched ${pf[$s $img]} % of the layers"
    echo "    first byte on a mount already serving (head -c1 only): ${tr[$s $img]} s (median $(med ${tr[$s $img]})), $(ratio "$(med ${tr[$s $img]})" "$msk")x skopeo copy"
    echo "    cold tar -c rootfs/ | wc -c (empty store):  ${tw[$s $img]} s (median $mw), fetched ${pw[$s $img]} %, ${bw[$s $img]} bytes"
    echo "    first byte / skopeo copy: $(ratio "$mf" "$msk")x (goal under 0.1x)   tar -c lazy / pulled: $(ratio "$mw" "$ml")x (goal 1.5x at most)"
  done
  echo "  cold tar -c rootfs/ | wc -c, pulled store: ${tl[$s]} s (median $ml), ${bl[$s]} bytes"
done
if [ $ab = 1 ]; then
  for img in app idx; do
    ab_line "first byte, bench/$img:      " "${tf[base $img]}" "${tf[new $img]}"
    ab_line "first byte mounted, bench/$img:" "${tr[base $img]}" "${tr[new $img]}"
    ab_line "cold tar -c lazy, bench/$img:" "${tw[base $img]}" "${tw[new $img]}"
  done
  ab_line "cold tar -c pulled:          " "${tl[base]}" "${tl[new]}"
fi
echo "work files kept in $work"

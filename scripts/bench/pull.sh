#!/usr/bin/env bash
# Registry speed for issue #17: `imgfs pull` of a ~350 MB two-layer gzip image from a
# registry on 127.0.0.1 (Debian's docker-registry, storage in WORKDIR) into an empty store,
# against `skopeo copy docker://… oci:…` of the same image into an empty directory; and
# `imgfs push` of it from a store to an empty registry (a new one, new storage, for every
# run) against `skopeo copy oci:… docker://…` to another empty one. In the same run,
# alternating, ROUNDS times each (5). Before every run the page cache is dropped when
# allowed, so a push reads its store cold; before a pull the registry's blobs are then read
# back into memory, as a registry serves them, since its disk here is the user's disk.
# Both verify every blob's digest; imgfs pull also checks each layer's diffID and builds
# its index in the same pass, and fsyncs what it stores. The CPU seconds of each pull (and
# the registry's, serving it) are printed too, with the least a pull can take on this
# machine's cores: the CPU of the work it cannot leave out (lxbench floor), spread evenly.
# With BASE=REV, REV's imgfs is built too and its pull and push are timed as well, base and
# new alternating within each round, each binary pushing from a store it imported.
# SIZE_MB=N sets the image's size (350: layers of 4/7 and 3/7 of it, as export.sh's, whose
# fixture it shares in the same WORKDIR); see ab.sh.
# Usage: [BASE=REV] [ROUNDS=N] [SIZE_MB=N] scripts/bench/pull.sh [WORKDIR]
#        (as root to drop the page cache; needs skopeo, docker-registry, pigz, ~2.5 GB)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-5}
. scripts/bench/ab.sh
need skopeo docker-registry pigz
make -s build
[ $ab = 0 ] || ab_build_base
GOFLAGS=-tags=isal go build -o "$work/lxbench" ./scripts/bench/lxbench # floor inflates as imgfs does
ref=bench/app:1
# Per side (new: this tree's bin/imgfs; base: BASE's): binary, the store it pushes from,
# and a suffix for what it writes.
declare -A bin=([new]=$PWD/bin/imgfs) store=([new]=$work/store) sfx=([new]="")
if [ $ab = 1 ]; then bin[base]=$work/imgfs-base store[base]=$work/store-base sfx[base]=-base; fi
app_image
manifest=$(sed -n 's/.*"digest":"\(sha256:[0-9a-f]*\)".*/\1/p' "$work/img/index.json")
bytes=$(du -sbL "$work/img/blobs" | cut -f1)
echo "image: $((bytes >> 20)) MiB of blobs (manifest $manifest), 2 layers gzip (pigz -6)"

# Registries: each on 127.0.0.1 at the port it picks itself (addr :0, read back from its
# log), its storage and log in a directory of its own; every one is stopped on exit.
pids=()
stop_all() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap stop_all EXIT
trap 'exit 130' INT TERM
# reg_start DIR: a registry with an empty storage in DIR; sets reg_host and reg_pid.
reg_start() {
  rm -rf "$1"; mkdir -p "$1"
  cat >"$1/config.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $1/storage
http:
  addr: 127.0.0.1:0
EOF
  # The log exists before the registry's shell opens it, for the sed below (set -e).
  : >"$1/registry.log"
  docker-registry serve "$1/config.yml" >>"$1/registry.log" 2>&1 &
  reg_pid=$! reg_host=
  pids+=("$reg_pid")
  for _ in $(seq 200); do
    reg_host=$(sed -n 's/.*msg="listening on \(127\.0\.0\.1:[0-9]*\)".*/\1/p' "$1/registry.log")
    if [ -n "$reg_host" ] || ! kill -0 "$reg_pid" 2>/dev/null; then break; fi
    sleep 0.05
  done
  [ -n "$reg_host" ] || { echo "pull.sh: the registry in $1 did not start: $(tail -3 "$1/registry.log")" >&2; exit 1; }
}
# reg_stop PID DIR: stops a registry and removes its directory.
reg_stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; rm -rf "$2"; }
# reg_tag DIR: the manifest digest the registry in DIR holds as bench/app:1.
reg_tag() { cat "$1/storage/docker/registry/v2/repositories/bench/app/_manifests/tags/1/current/link" 2>/dev/null || echo none; }

# The same as export.sh: every timed run starts on memory that was in use.
if sync && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
  drop() { sync; echo 3 >/proc/sys/vm/drop_caches; warm; }
  echo "page cache: dropped before every run (then 1.5 GiB of memory touched and freed; before a pull, the registry's blobs read back)"
else
  drop() { sync; warm; }
  echo "page cache: NOT dropped (not permitted): runs are page-cache warm"
fi
# secs CMD...: CMD's wall time in seconds; its output goes to $work/run.log, shown if it fails.
# Called as t=$(secs …), so that set -e ends the script when it does. The CPU seconds CMD
# used (user and system, with its children's) go to $work/run.cpu: the command
# substitution's subshell has no other children.
secs() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$work/run.log" 2>&1 || { echo "failed: $*" >&2; tail -5 "$work/run.log" >&2; exit 1; }
  t1=$(date +%s.%N)
  times >"$work/run.times" # not in a pipe, whose subshell would have no children
  awk 'NR == 2 {n = 0; for (i = 1; i <= 2; i++) {split($i, a, /[ms]/); n += a[1] * 60 + a[2]}; printf "%.2f", n}' "$work/run.times" >"$work/run.cpu"
  awk "BEGIN{printf \"%.2f\", $t1 - $t0}"
}
# ticks PID: the CPU time PID has used so far, in clock ticks; cpu_since PID TICKS: in
# seconds since ticks gave TICKS (the registry's share of a run).
hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_since() { awk -v a="$2" -v b="$(ticks "$1")" -v hz="$hz" 'BEGIN{printf "%.2f", (b - a) / hz}'; }

# The registry pulled from, with the image pushed once by skopeo.
reg_start "$work/reg-src"
src=$reg_host src_pid=$reg_pid
skopeo copy -q --dest-tls-verify=false "oci:$work/img:$ref" "docker://$src/$ref"
[ "$(reg_tag "$work/reg-src")" = "$manifest" ] || { echo "pull.sh: skopeo's push left $(reg_tag "$work/reg-src"), want $manifest" >&2; exit 1; }
# cold_pull: the page cache dropped, the registry's blobs in it again.
cold_pull() { drop; find "$work/reg-src/storage" -name data -type f -exec cat {} + >/dev/null; }
# Each binary pushes from a store it imported (its own indexes, in its own format).
rm -rf "${store[@]}"
for s in "${sides[@]}"; do "${bin[$s]}" --store "${store[$s]}" import -q "$work/img" >/dev/null; done

declare -A tpull=() tpush=() cpull=() rpull=()
tsp=() tsu=() csp=() rsp=()
for _ in $(seq "$rounds"); do
  for s in "${sides[@]}"; do
    pulled=$work/pulled${sfx[$s]}
    rm -rf "$pulled"; cold_pull
    r0=$(ticks "$src_pid")
    t=$(secs "${bin[$s]}" --store "$pulled" pull -q "$src/$ref"); add tpull "$s" "$t"
    add cpull "$s" "$(cat "$work/run.cpu")"; add rpull "$s" "$(cpu_since "$src_pid" "$r0")"
  done
  rm -rf "$work/oci-pulled"; cold_pull
  r0=$(ticks "$src_pid")
  t=$(secs skopeo copy -q --src-tls-verify=false "docker://$src/$ref" "oci:$work/oci-pulled:$ref"); tsp+=("$t")
  csp+=("$(cat "$work/run.cpu")") rsp+=("$(cpu_since "$src_pid" "$r0")")
  # Both got the same blobs: manifest, config, layers, byte for byte (digest-named).
  for s in "${sides[@]}"; do
    diff -q <(ls "$work/pulled${sfx[$s]}/blobs/sha256") <(ls "$work/oci-pulled/blobs/sha256") >/dev/null ||
      { echo "pull.sh: imgfs pull ($s) and skopeo copy got different blobs" >&2; exit 1; }
  done

  for s in "${sides[@]}"; do
    reg_start "$work/reg-push"
    "${bin[$s]}" --store "${store[$s]}" tag "$ref" "$reg_host/$ref"
    drop
    t=$(secs "${bin[$s]}" --store "${store[$s]}" push -q "$reg_host/$ref"); add tpush "$s" "$t"
    "${bin[$s]}" --store "${store[$s]}" rm "$reg_host/$ref" >/dev/null
    [ "$(reg_tag "$work/reg-push")" = "$manifest" ] || { echo "pull.sh: imgfs push ($s) left $(reg_tag "$work/reg-push"), want $manifest" >&2; exit 1; }
    reg_stop "$reg_pid" "$work/reg-push"
  done
  reg_start "$work/reg-push"
  drop
  t=$(secs skopeo copy -q --dest-tls-verify=false "oci:$work/img:$ref" "docker://$reg_host/$ref"); tsu+=("$t")
  [ "$(reg_tag "$work/reg-push")" = "$manifest" ] || { echo "pull.sh: skopeo copy left $(reg_tag "$work/reg-push"), want $manifest" >&2; exit 1; }
  reg_stop "$reg_pid" "$work/reg-push"
done
reg_stop "$src_pid" "$work/reg-src"
rm -rf "$work"/pulled* "$work/oci-pulled"
# The work a pull cannot leave out (lxbench floor: the blobs' sha256, inflating them, their
# diffIDs' sha256 and the indexes, in memory), ROUNDS times.
fl=()
for _ in $(seq "$rounds"); do
  fl+=("$("$work/lxbench" floor "$work/l1.tar.gz" "$work/l2.tar.gz" | sed -n 's/^floor: \([0-9.]*\) CPU-s.*/\1/p')")
done

mibs() { awk "BEGIN{if ($1 > 0) printf \"%.0f\", $bytes / 1048576 / $1; else printf \"n/a\"}"; }
msp=$(med "${tsp[@]}") msu=$(med "${tsu[@]}")
if [ $ab = 0 ]; then
  # shellcheck disable=SC2086 # the times are words
  mp=$(med ${tpull[new]}) mu=$(med ${tpush[new]})
  echo "imgfs pull (empty store):               ${tpull[new]} s (median $mp, $(mibs "$mp") MiB/s)"
  echo "skopeo copy docker:// oci: (empty dir): ${tsp[*]} s (median $msp, $(mibs "$msp") MiB/s)"
  echo "imgfs push (empty registry):            ${tpush[new]} s (median $mu, $(mibs "$mu") MiB/s)"
  echo "skopeo copy oci: docker:// (empty reg): ${tsu[*]} s (median $msu, $(mibs "$msu") MiB/s)"
  echo "imgfs/skopeo: pull $(ratio "$mp" "$msp")x (goal 1.2x at most)   push $(ratio "$mu" "$msu")x (goal 1.0x at most)"
else
  ab_line "imgfs pull (empty store):   " "${tpull[base]}" "${tpull[new]}"
  ab_line "imgfs push (empty registry):" "${tpush[base]}" "${tpush[new]}"
  echo "skopeo copy docker:// oci: (empty dir): ${tsp[*]} s (median $msp)"
  echo "skopeo copy oci: docker:// (empty reg): ${tsu[*]} s (median $msu)"
  for s in "${sides[@]}"; do
    # shellcheck disable=SC2086
    echo "$s: imgfs/skopeo: pull $(ratio "$(med ${tpull[$s]})" "$msp")x (goal 1.2x at most)   push $(ratio "$(med ${tpush[$s]})" "$msu")x (goal 1.0x at most)"
  done
fi

# Where a pull's time goes on this machine: CPU seconds per pull (medians), and the least a
# pull can take with every core busy all the time: the work it cannot leave out, and the
# registry's share, over the cores.
ncpu=$(nproc) mfl=$(med "${fl[@]}") mcsp=$(med "${csp[@]}") mrsp=$(med "${rsp[@]}")
echo "CPU per pull (median CPU-s): skopeo copy ${mcsp} (the registry ${mrsp})"
for s in "${sides[@]}"; do
  # shellcheck disable=SC2086 # the times are words
  mc=$(med ${cpull[$s]}) mr=$(med ${rpull[$s]})
  echo "  imgfs pull ($s): ${cpull[$s]} (median ${mc}; the registry ${mr})"
done
# shellcheck disable=SC2086
least=$(awk -v f="$mfl" -v r="$(med ${rpull[new]})" -v n="$ncpu" 'BEGIN{printf "%.2f", (f + r) / n}')
echo "  the work a pull cannot leave out (lxbench floor: hashing, inflating, indexing): ${fl[*]} CPU-s (median $mfl)"
echo "  so on $ncpu cores, even with all of them busy all the time, imgfs pull takes at least $least s: $(ratio "$least" "$msp")x skopeo's median"

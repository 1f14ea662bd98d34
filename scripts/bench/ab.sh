# shellcheck shell=bash disable=SC2034,SC2154 # SC2154: bin, mnt, daemon are the sourcing script's; ab, sides, base_rev: read by the scripts that source this
# Sourced by walk.sh, export.sh, diff.sh, pull.sh and lazy.sh (from the repository's root,
# with their arguments): the work directory ($work: WORKDIR, the first argument, made if
# missing, or a new temp one), Go on the PATH, the tools they need, rounds, medians, the A/B
# mode that times another commit's imgfs in the same run, and fixtures.
#   ROUNDS=N    timed runs of every figure (default 3); the median is the middle one (the mean
#               of the middle two when N is even).
#   BASE=REV    also build REV's imgfs (in a throwaway `git worktree add --detach` under $work,
#               with the Makefile's build flags) as $work/imgfs-base; the scripts then time
#               every imgfs figure for base and new, alternating within each round, and print
#               both medians and new/base.
#   SIZE_MB=N   the fixture's size (each script has its own default); a smaller one for smoke
#               runs. The size is recorded in $work, and a fixture of another size is remade.

work=${1:-$(mktemp -d)}
mkdir -p "$work"
work=$(realpath "$work")
export PATH=$PATH:/usr/local/go/bin

# need TOOL...: fails the script, naming the package, unless every TOOL is installed.
need() {
  local p
  for p; do
    command -v "$p" >/dev/null || { echo "$(basename "$0"): $p not found: apt-get install $p (or scripts/install-deps.sh)" >&2; exit 1; }
  done
}

rounds=${ROUNDS:-3}
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a positive integer, not '$rounds'" >&2; exit 2; }
[[ ${SIZE_MB:-1} =~ ^[1-9][0-9]*$ ]] || { echo "SIZE_MB must be a positive integer, not '$SIZE_MB'" >&2; exit 2; }

# med T...: the median of the times given.
med() {
  printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1}
    END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
# ratio A B: A/B to 2 decimals ("n/a" when B is 0).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (b > 0) printf "%.2f", a / b; else printf "n/a"}'; }

# fixture_stale NAME DEFAULT_MB: true when the fixture in $work was made for another size than
# SIZE_MB (a fixture without a record of its size was made at DEFAULT_MB); fixture_made NAME
# records SIZE_MB (or the default) for it.
# shellcheck disable=SC2154 # work is set by the script that sources this
fixture_stale() { [ "$(cat "$work/$1.size_mb" 2>/dev/null || echo "$2")" != "${SIZE_MB:-$2}" ]; }
fixture_made() { echo "${SIZE_MB:-$2}" >"$work/$1.size_mb"; }

# app_image: the image of export.sh, pull.sh and lazy.sh in $work, made by $work/lxbench
# unless there already for SIZE_MB (350 by default): two pigz -6 layers of 4/7 and 3/7 of
# SIZE_MB of tar, l1.tar.gz and l2.tar.gz, and the OCI layout img naming it bench/app:1.
app_image() {
  if [ ! -d "$work/img" ] || fixture_stale img 350; then
    rm -rf "$work/img"
    local mb=${SIZE_MB:-350}
    "$work/lxbench" mktar -size $(((mb << 20) * 4 / 7)) -o "$work/l1.tar"
    "$work/lxbench" mktar -size $(((mb << 20) * 3 / 7)) -o "$work/l2.tar"
    pigz -6 -c "$work/l1.tar" >"$work/l1.tar.gz"; pigz -6 -c "$work/l2.tar" >"$work/l2.tar.gz"
    rm -f "$work/l1.tar" "$work/l2.tar"
    "$work/lxbench" mkoci -o "$work/img" -name bench/app:1 "$work/l1.tar.gz" "$work/l2.tar.gz"
    fixture_made img 350
  fi
}

# warm touches and frees 1.5 GiB, so that a timed run starts on memory that was in use
# (see export.sh); add ARRAY SIDE T appends T to SIDE's space-separated times in ARRAY.
warm() { dd if=/dev/zero of=/dev/null bs=1500M count=1 status=none 2>/dev/null || true; }
add() { local -n add_arr=$1; add_arr[$2]="${add_arr[$2]:-}${add_arr[$2]:+ }$3"; }

# walk_image: the image of walk.sh and diff.sh in $work, made by $work/lxbench unless there
# already for SIZE_MB (172 by default): one pigz -6 layer of ~18k entries (files, directories,
# symlinks) holding SIZE_MB of file data, as img.tar (uncompressed), img.tar.gz, and the OCI
# layout img naming it bench/walk:1.
walk_image() {
  if [ ! -f "$work/img.tar" ] || [ ! -d "$work/img" ] || fixture_stale img 172; then
    rm -rf "$work/img" "$work/img.tar" "$work/img.tar.gz"
    "$work/lxbench" mktar -size $((${SIZE_MB:-172} << 20)) -o "$work/img.tar"
    pigz -6 -c "$work/img.tar" >"$work/img.tar.gz"
    "$work/lxbench" mkoci -o "$work/img" -name bench/walk:1 "$work/img.tar.gz"
    fixture_made img 172
  fi
}

ab=0 sides=(new)
if [ -n "${BASE:-}" ]; then
  ab=1 sides=(base new)
  base_rev=$(git rev-parse --verify -q "$BASE^{commit}") || { echo "BASE=$BASE: not a commit" >&2; exit 2; }
  dirty=$(git status --porcelain | wc -l)
  echo "A/B: base $(git rev-parse --short "$base_rev") (BASE=$BASE) against new $(git rev-parse --short HEAD) (HEAD$([ "$dirty" = 0 ] && echo ", tree clean" || echo ", tree DIRTY: $dirty changed or untracked files, built as they are"))"
  # ab_build_base: $work/imgfs-base from BASE's tree, built as the Makefile builds bin/imgfs.
  ab_build_base() {
    local src=$work/base-src
    git worktree remove --force "$src" 2>/dev/null || true
    rm -rf "$src"
    git worktree prune
    git worktree add -q --detach "$src" "$base_rev"
    if ! (cd "$src" && GOFLAGS=-tags=isal go build \
      -ldflags "-X main.version=$(git describe --tags --always 2>/dev/null || echo dev)" \
      -o "$work/imgfs-base" ./cmd/imgfs); then
      git worktree remove --force "$src"
      echo "BASE=$BASE: build failed" >&2
      exit 1
    fi
    git worktree remove --force "$src"
  }
fi

# ab_line LABEL "BASE TIMES" "NEW TIMES" [BASE_EXTRA NEW_EXTRA]: one figure for base and new
# side by side, and new/base of their medians; an EXTRA follows its side's median.
ab_line() {
  local mb mn
  # shellcheck disable=SC2086 # the times are words
  mb=$(med $2) mn=$(med $3)
  echo "$1 base: $2 s (median $mb${4:-})   new: $3 s (median $mn${5:-})   new/base: $(ratio "$mn" "$mb")x"
}

# ab_mounts sets up the per-side mounts of a script with the arrays bin, mnt and daemon
# (by side): umnt SIDE unmounts SIDE's mount and waits for its daemon to exit, so it takes
# no CPU or memory from the next run; umnt_all does every side's, and runs on exit.
ab_mounts() {
  local s
  for s in "${sides[@]}"; do mkdir -p "${mnt[$s]}"; done
  trap umnt_all EXIT
  trap 'exit 130' INT TERM
  umnt_all
}
umnt() {
  if mountpoint -q "${mnt[$1]}" 2>/dev/null; then
    "${bin[$1]}" umount "${mnt[$1]}" 2>/dev/null || umount -l "${mnt[$1]}" 2>/dev/null || true
  fi
  if [ -n "${daemon[$1]}" ]; then
    for _ in $(seq 100); do [ -d "/proc/${daemon[$1]}" ] || break; sleep 0.05; done
    daemon[$1]=
  fi
}
umnt_all() { local s; for s in "${sides[@]}"; do umnt "$s"; done; }

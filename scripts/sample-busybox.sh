#!/usr/bin/env bash
# Builds a busybox image the way Docker Hub's busybox is made, from Debian's busybox-static
# package, and imports it into the imgfs store as busybox:latest.
#
#   scripts/sample-busybox.sh [--store DIR]      (the store defaults as imgfs's: $IMGFS_STORE, ...)
#
# The image: the static binary at /bin/busybox, every applet (busybox --list-full) a hard
# link to it, /etc/passwd and /etc/group as Docker Hub's has them, /tmp 1777, /root 0700,
# one gzip layer packed by GNU tar with fixed owners and mtimes, so the same package always
# gives the same digests and running this again changes nothing. Nothing is fetched but the
# package, with apt, when /bin/busybox is missing. Needs: tar, gzip, sha256sum, dpkg.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
imgfs=$root/bin/imgfs
name=busybox:latest
# Every date in the image (file mtimes, config created): fixed, overridable the usual way.
epoch=${SOURCE_DATE_EPOCH:-1704067200} # 2024-01-01T00:00:00Z

store_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --store) [ $# -ge 2 ] || { echo "sample-busybox: --store needs a directory" >&2; exit 2; }
             store_args=(--store "$2"); shift 2 ;;
    --store=*) store_args=(--store "${1#--store=}"); shift ;;
    -h|--help) sed -n '2,11s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "sample-busybox: unknown argument $1 (usage: $0 [--store DIR])" >&2; exit 2 ;;
  esac
done

if [ ! -x /bin/busybox ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "sample-busybox: /bin/busybox is missing: run as root, or: apt-get install busybox-static" >&2
    exit 1
  fi
  echo "sample-busybox: installing busybox-static"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends busybox-static >/dev/null
fi
if ! /bin/busybox --list-full >/dev/null 2>&1; then
  echo "sample-busybox: /bin/busybox has no --list-full (is it busybox-static's?)" >&2
  exit 1
fi
[ -x "$imgfs" ] || make -C "$root" build >/dev/null

# dpkg's architecture names to Go's (GOARCH, variant), as image configs use them.
case $(dpkg --print-architecture) in
  amd64) arch=amd64 variant= ;;
  arm64) arch=arm64 variant= ;;
  armhf) arch=arm variant=v7 ;;
  armel) arch=arm variant=v5 ;;
  i386) arch=386 variant= ;;
  ppc64el) arch=ppc64le variant= ;;
  s390x) arch=s390x variant= ;;
  mips64el) arch=mips64le variant= ;;
  riscv64) arch=riscv64 variant= ;;
  loong64) arch=loong64 variant= ;;
  *) echo "sample-busybox: unknown architecture $(dpkg --print-architecture)" >&2; exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 022

# The root filesystem.
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,dev,etc,home,root,tmp,usr/bin,usr/sbin,sbin,var/spool/mail,var/www}
chmod 0700 "$rootfs/root"
chmod 1777 "$rootfs/tmp"
cp /bin/busybox "$rootfs/bin/busybox"
chmod 0755 "$rootfs/bin/busybox"
# One process for the few hundred links (a fork per link takes seconds on a busy machine);
# perl-base is Essential in Debian.
mapfile -t applets < <(/bin/busybox --list-full)
declare -A dirs=()
for a in "${applets[@]}"; do
  if [[ $a == */* ]]; then dirs[$rootfs/${a%/*}]=1; fi
done
mkdir -p "${!dirs[@]}"
(cd "$rootfs" && perl -e 'my $bb = shift; for (@ARGV) { next if $_ eq "" || $_ eq $bb;
  link($bb, $_) or die "sample-busybox: link $_: $!\n" }' bin/busybox "${applets[@]}")
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
EOF
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"

# The OCI layout.
layout=$work/layout
mkdir -p "$layout/blobs/sha256"
sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
# put FILE: moves FILE into the layout's blobs and prints its hex digest.
put() { local h; h=$(sha "$1"); mv "$1" "$layout/blobs/sha256/$h"; echo "$h"; }

# Hard links stay hard links (tar records each file once, the rest as links to it).
# Members are named bin/..., etc/... (no ./ prefix), as in Docker's layers.
(cd "$rootfs" && LC_ALL=C tar --create --file="$work/layer.tar" \
  --format=gnu --sort=name --numeric-owner --owner=0 --group=0 --mtime="@$epoch" -- *)
diff_id=$(sha "$work/layer.tar")
gzip -n -9 "$work/layer.tar"
layer_size=$(size "$work/layer.tar.gz")
layer=$(put "$work/layer.tar.gz")

created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
pkg=$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)
variant_json=
[ -z "$variant" ] || variant_json=",\"variant\":\"$variant\""
printf '%s' "{\"architecture\":\"$arch\"$variant_json,\"config\":{\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\"Cmd\":[\"sh\"]},\"created\":\"$created\",\"history\":[{\"created\":\"$created\",\"created_by\":\"scripts/sample-busybox.sh (Debian busybox-static $pkg)\"}],\"os\":\"linux\",\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$diff_id\"]}}" >"$work/config.json"
config_size=$(size "$work/config.json")
config=$(put "$work/config.json")

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$config\",\"size\":$config_size},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$layer\",\"size\":$layer_size}]}" >"$work/manifest.json"
manifest_size=$(size "$work/manifest.json")
manifest=$(put "$work/manifest.json")

printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest\",\"size\":$manifest_size,\"annotations\":{\"org.opencontainers.image.ref.name\":\"$name\"}}]}" >"$layout/index.json"

# Already there (same package, same bytes)? Then nothing to do.
if "$imgfs" "${store_args[@]}" inspect "$name" 2>/dev/null | grep -q "^  \"digest\": \"sha256:$manifest\""; then
  echo "sample-busybox: $name is up to date (manifest sha256:${manifest:0:12})"
  exit 0
fi
"$imgfs" "${store_args[@]}" import --name "$name" "$layout"

#!/usr/bin/env bash
# Installs, with apt, what building imgfs needs (a C compiler and ISA-L's headers: gzip
# spans are decoded with libisal) and, unless the first argument is "build", the programs
# imgfs's tests drive. Does nothing when all are present, so `make test` stays fast on a
# machine that has them.
set -euo pipefail
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
[ -f /usr/include/isa-l/igzip_lib.h ] || missing+=(libisal-dev)
# command -> Debian package. podman and docker.io are the importers the tests load image
# archives with (podman load, dockerd + docker load, both on vfs storage, as root): their
# dependencies (conmon, crun/runc, containerd, tini) are enough, the recommends are not needed.
# openssl makes the test registry's CA and certificate, htpasswd its bcrypt password file.
# script (util-linux's, in bsdutils) runs imgfs on a pseudo-terminal.
# bsdtar (libarchive) writes tars the way libarchive cuts long names, for the header checks.
declare -A need=(
  [tar]=tar [gzip]=gzip [pigz]=pigz [zstd]=zstd [skopeo]=skopeo
  [fusermount3]=fuse3 [getfattr]=attr [findmnt]=util-linux [umoci]=umoci
  [podman]=podman [dockerd]=docker.io [docker-registry]=docker-registry
  [openssl]=openssl [htpasswd]=apache2-utils [script]=bsdutils [bsdtar]=libarchive-tools
)
[ "${1:-}" = build ] && need=()
for cmd in "${!need[@]}"; do
  # dockerd is in /usr/sbin, which a user's PATH may leave out.
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("${need[$cmd]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-deps: missing ${missing[*]}: run as root, or: apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

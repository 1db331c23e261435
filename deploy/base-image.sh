#!/usr/bin/env bash
# Makes a Debian 12 base image from Debian's own packages, for machines that
# cannot pull `debian:12` from a registry:
#   deploy/base-image.sh [NAME]          (default cardgate-debian:12)
# then build with it:
#   docker build -f deploy/Dockerfile --build-arg BUILD_IMAGE=cardgate-debian:12 \
#     --build-arg RUNTIME_IMAGE=cardgate-debian:12 -t cardgate .
# debootstrap's minbase variant from the mirror apt already uses (or
# $DEBIAN_MIRROR), trimmed as Debian's -slim images are: no documentation,
# manual pages, translations or apt lists, and dpkg told to keep them out of
# what later layers install.
set -euo pipefail
name=${1:-cardgate-debian:12}
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /tmp/cardgate-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 ||
    { tail -20 "$root.log"; exit 1; }
rm -f "$root.log"
cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/info/*
CFG
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$root/etc/apt/apt.conf.d/docker-no-recommends"
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
rm -rf "$root"/usr/share/{man,locale,info}/* "$root"/var/lib/apt/lists/* \
    "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$name" >/dev/null
echo "$name: $(docker image inspect -f '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1/1e6}')"

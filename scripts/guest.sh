#!/usr/bin/env bash
# Fetches what the running-guest tests boot: Debian 12's kernel
# (linux-image-amd64's vmlinuz) and busybox-static, from Debian's archive,
# into build/guest/ (not committed). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
out=build/guest
if [ -s "$out/vmlinuz" ] && [ -x "$out/busybox" ]; then
	exit 0
fi
kernel_pkg() {
	apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-amd64\)$/\1/p' | head -1
}
kpkg="$(kernel_pkg)"
if [ -z "$kpkg" ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	kpkg="$(kernel_pkg)"
fi
if [ -z "$kpkg" ]; then
	echo "guest: cannot tell which kernel package linux-image-amd64 is (apt-get update?)" >&2
	exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp" # apt's _apt user writes the downloads
echo "guest: fetching $kpkg and busybox-static"
(cd "$tmp" && apt-get download -qq "$kpkg" busybox-static 2>/dev/null)
mkdir -p "$tmp/x" "$out"
for deb in "$tmp"/*.deb; do
	dpkg-deb -x "$deb" "$tmp/x"
done
cp "$(ls "$tmp"/x/boot/vmlinuz-* | head -1)" "$out/vmlinuz"
cp "$tmp/x/bin/busybox" "$out/busybox"
chmod 755 "$out/busybox"
echo "guest: $out/vmlinuz ($kpkg), $out/busybox"

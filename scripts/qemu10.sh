#!/usr/bin/env bash
# Installs QEMU 10.0 from Debian's bookworm-backports beside Debian 12's
# QEMU 7.2, without touching apt's configuration or the system's QEMU:
# the three packages (qemu-system-x86, qemu-system-common,
# qemu-system-data) are unpacked with dpkg-deb -x into build/qemu10/.
# Their shared libraries all come from bookworm; the missing ones are
# installed with apt-get. Every download is checked: the suite's InRelease
# against Debian's archive keyring (gpgv), the package index against
# InRelease, each .deb against the index. Safe to run again.
#
# Run it as build/qemu10/bin/qemu-system-x86_64 (a wrapper that adds the
# -L options for its firmware), or set PAGEWIRE_QEMU10 to another binary.
set -euo pipefail
cd "$(dirname "$0")/.."

suite=bookworm-backports
want="1:10.0." # the version prefix the tests are written against
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
out=build/qemu10
wrapper="$out/bin/qemu-system-x86_64"

if [ -x "$wrapper" ] && "$wrapper" --version 2>/dev/null | grep -q "version 10\.0\."; then
	exit 0
fi
for tool in curl gpgv xz dpkg-deb sha256sum; do
	command -v "$tool" >/dev/null || { echo "qemu10: $tool is required" >&2; exit 1; }
done
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -s "$keyring" ] || { echo "qemu10: $keyring missing (apt-get install debian-archive-keyring)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
fetch() { curl -fsS --retry 3 -m 600 -o "$2" "$1" || { echo "qemu10: download failed: $1" >&2; exit 1; }; }

echo "qemu10: checking $suite's index"
fetch "$mirror/dists/$suite/InRelease" "$tmp/InRelease"
if ! gpgv --keyring "$keyring" "$tmp/InRelease" 2>"$tmp/gpgv.log"; then
	cat "$tmp/gpgv.log" >&2
	echo "qemu10: $suite's InRelease is not signed by Debian's archive key" >&2
	exit 1
fi
sum="$(awk '/^SHA256:/{s=1; next} /^[A-Za-z]/{s=0} s && $3=="main/binary-amd64/Packages.xz"{print $1}' "$tmp/InRelease")"
fetch "$mirror/dists/$suite/main/binary-amd64/Packages.xz" "$tmp/Packages.xz"
echo "$sum  $tmp/Packages.xz" | sha256sum -c --quiet - || { echo "qemu10: Packages.xz does not match InRelease" >&2; exit 1; }
xz -dc "$tmp/Packages.xz" >"$tmp/Packages"

# field PACKAGE FIELD: the field of the package's newest stanza of version
# $want* in the index.
stanza() {
	awk -v p="$1" -v w="$want" 'BEGIN{RS=""; FS="\n"} {
		name=""; ver=""
		for (i = 1; i <= NF; i++) {
			if ($i ~ /^Package: /) name = substr($i, 10)
			if ($i ~ /^Version: /) ver = substr($i, 10)
		}
		if (name == p && index(ver, w) == 1) last = $0
	} END { print last }' "$tmp/Packages"
}
field() { stanza "$1" | sed -n "s/^$2: //p" | head -1; }

version="$(field qemu-system-x86 Version)"
[ -n "$version" ] || { echo "qemu10: $suite has no qemu-system-x86 $want*" >&2; exit 1; }
deps=""
mkdir -p "$tmp/x"
for p in qemu-system-x86 qemu-system-common qemu-system-data; do
	[ "$(field $p Version)" = "$version" ] || { echo "qemu10: $p $version missing from $suite" >&2; exit 1; }
	file="$(field $p Filename)"
	echo "qemu10: fetching $(basename "$file")"
	fetch "$mirror/$file" "$tmp/$p.deb"
	echo "$(field $p SHA256)  $tmp/$p.deb" | sha256sum -c --quiet - || { echo "qemu10: $file does not match the index" >&2; exit 1; }
	dpkg-deb -x "$tmp/$p.deb" "$tmp/x"
	deps="$deps, $(field $p Depends)"
done

# The libraries: every dependency that is a library package (lib*), first
# alternative, without version; install those not installed.
missing=()
for d in $(echo "$deps" | tr ',' '\n' | sed 's/|.*//; s/(.*)//; s/:any//; s/ //g' | grep '^lib' | sort -u); do
	dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "install ok installed" || missing+=("$d")
done
if [ "${#missing[@]}" -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	echo "qemu10: installing ${missing[*]} from bookworm"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

rm -rf "$out.new"
mkdir -p "$out.new/bin"
mv "$tmp/x/usr" "$out.new/usr"
cat >"$out.new/bin/qemu-system-x86_64" <<'EOF'
#!/bin/sh
# QEMU 10.0 from bookworm-backports, unpacked by scripts/qemu10.sh: its
# firmware directory first, then Debian's SeaBIOS (the package's bios.bin
# is a link into the seabios package).
here="$(cd "$(dirname "$0")/.." && pwd)"
exec "$here/usr/bin/qemu-system-x86_64" -L "$here/usr/share/qemu" -L /usr/share/seabios "$@"
EOF
chmod 755 "$out.new/bin/qemu-system-x86_64"
rm -rf "$out"
mv "$out.new" "$out"
if ! "$wrapper" --version | grep -q "version 10\.0\."; then
	"$wrapper" --version >&2 || true
	echo "qemu10: $wrapper does not run" >&2
	exit 1
fi
echo "qemu10: $("$wrapper" --version | head -1) in $out ($version)"

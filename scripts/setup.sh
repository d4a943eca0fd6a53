#!/usr/bin/env bash
# Installs what pagewire's build, demo and tests need on a fresh Debian 12
# machine, and nothing that is already there. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_go="$(sed -n 's/^go \([0-9.]*\).*/\1/p' go.mod)"
if ! command -v go >/dev/null 2>&1; then
	echo "setup: Go $need_go or newer is required (https://go.dev/doc/install); none is on PATH" >&2
	exit 1
fi

# Debian packages the tests use, installed only when missing:
# qemu-system-x86 is the real QEMU 7.2 the QEMU-peer tests migrate from;
# clang, lld, wasi-libc and the wasm32 compiler-rt build the C Wasm plugins
# (examples/wasm-c, and zstd-c and lz4-c with scripts/build-c-plugins.sh,
# which fetches the libraries' sources from the npm registry with curl);
# gpgv, xz-utils and Debian's archive keyring check and unpack QEMU 10
# (scripts/qemu10.sh); gcc and libc6-dev build the lab's static guest
# workload; libzstd-dev and pkg-config build the native zstd tier
# (the libzstd build tag, plugins/zstd).
apt_packages="qemu-system-x86 clang lld wasi-libc libclang-rt-14-dev-wasm32 curl gpgv xz-utils debian-archive-keyring gcc libc6-dev libzstd-dev pkg-config"
pkgs=()
for p in $apt_packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || pkgs+=("$p")
done
if [ "${#pkgs[@]}" -gt 0 ]; then
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	echo "setup: installing ${pkgs[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

go mod download

# The running-guest gateway test boots Debian's kernel with busybox.
scripts/guest.sh

# QEMU 10.0 from bookworm-backports, unpacked beside Debian's 7.2 into
# build/qemu10 (the live QEMU 10 tests and the lab migrate with it).
scripts/qemu10.sh

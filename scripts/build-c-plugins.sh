#!/usr/bin/env bash
# Builds the C-built Wasm plugins zstd-c.wasm and lz4-c.wasm into OUTDIR
# (default bin/plugins) from our shims in plugins/zstd-c, plugins/lz4-c and
# the reference C libraries.
#
# The libraries' sources come from the npm packages pinned in
# plugins/csrc/sources.txt: downloaded once into the cache
# ($PAGEWIRE_CSRC_CACHE, else ${XDG_CACHE_HOME:-~/.cache}/pagewire/csrc),
# checked against the pinned sha512 (a mismatch is an error, never a
# warning) and never put into the repository. Library objects are cached
# there too, keyed by compiler and flags, so a rebuild only compiles the
# shims and links (about a second); the first build takes about half a
# minute on two cores.
#
# Needs clang, lld, wasi-libc and libclang-rt-14-dev-wasm32 (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
out=${1:-bin/plugins}
mkdir -p "$out"
out=$(cd "$out" && pwd)

CLANG=${CLANG:-clang}
cache=${PAGEWIRE_CSRC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pagewire/csrc}
mkdir -p "$cache"

command -v "$CLANG" >/dev/null || { echo "build-c-plugins: $CLANG not found (scripts/setup.sh installs clang, lld, wasi-libc)" >&2; exit 1; }

# The flags measured in ../shared/notes/plugin-feasibility.md: -O3 with
# SIMD (+4-10% decompression); no pthreads (ZSTD_MULTITHREAD must stay
# undefined: wasi-libc has no pthread.h), no assembly, no tracing.
CFLAGS=(--target=wasm32-wasi -O3 -msimd128 -mbulk-memory -ffunction-sections -fdata-sections)
LDFLAGS=(-mexec-model=reactor -Wl,--gc-sections -Wl,-z,stack-size=1048576)
ZSTD_DEFS=(-DZSTD_DISABLE_ASM -DZSTD_NO_TRACE -DZSTD_LEGACY_SUPPORT=0 -DXXH_NAMESPACE=ZSTD_ -DDEBUGLEVEL=0)
jobs=$(nproc 2>/dev/null || echo 2)

# fetch NAME: the package's extracted tree, downloaded and verified if needed.
fetch() {
	local line name version url sum tgz dir
	line=$(grep -E "^$1[[:space:]]" plugins/csrc/sources.txt) || { echo "build-c-plugins: $1 not in plugins/csrc/sources.txt" >&2; exit 1; }
	read -r name version _ url sum <<<"$line"
	tgz=$cache/$name-$version.tgz
	dir=$cache/$name-$version
	if [ ! -f "$tgz" ]; then
		echo "build-c-plugins: fetching $url" >&2
		curl -fsSL --retry 3 -o "$tgz.$$.partial" "$url" || { rm -f "$tgz.$$.partial"; echo "build-c-plugins: cannot download $url" >&2; exit 1; }
		mv -f "$tgz.$$.partial" "$tgz"
	fi
	local got
	got=$(sha512sum "$tgz" | cut -d' ' -f1)
	if [ "$got" != "$sum" ]; then
		echo "build-c-plugins: $tgz has sha512 $got, plugins/csrc/sources.txt pins $sum: refusing to build from it (delete it to download again)" >&2
		exit 1
	fi
	if [ ! -f "$dir/.ok" ]; then
		rm -rf "$dir.$$"
		mkdir -p "$dir.$$"
		tar -xzf "$tgz" -C "$dir.$$" --strip-components=1 package/deps
		touch "$dir.$$/.ok"
		# Only complete trees are ever moved into place; if another build
		# (a parallel test binary) got there first, keep its tree.
		mv -T "$dir.$$" "$dir" 2>/dev/null || rm -rf "$dir.$$"
	fi
	echo "$dir"
}

# objects KEY SRCDIR DEFS... -- FILES...: compiles FILES (relative to
# SRCDIR) once per compiler and flags; prints the object paths.
objects() {
	local key=$1 src=$2
	shift 2
	local defs=()
	while [ "$1" != "--" ]; do defs+=("$1"); shift; done
	shift
	local id
	id=$( { "$CLANG" --version | head -n 1; echo "${CFLAGS[*]} ${defs[*]}"; } | sha256sum | cut -c1-12)
	local objdir=$cache/obj/$key-$id
	mkdir -p "$objdir"
	local todo=()
	for f in "$@"; do
		local o=$objdir/${f//\//_}.o
		[ -f "$o" ] || todo+=("$f")
	done
	if [ "${#todo[@]}" -gt 0 ]; then
		echo "build-c-plugins: compiling ${#todo[@]} files of $key" >&2
		# One clang per file, the file last: bash -c splits it off.
		printf '%s\n' "${todo[@]}" | xargs -P "$jobs" -n 1 bash -c '
			objdir=$1 cc=$2 src=$3; shift 3
			f=${*: -1}; set -- "${@:1:$#-1}"
			o=$objdir/${f//\//_}.o
			"$cc" "$@" -c -o "$o.$$" "$src/$f" && mv -f "$o.$$" "$o"
		' _ "$objdir" "$CLANG" "$src" "${CFLAGS[@]}" "${defs[@]}" || true
	fi
	for f in "$@"; do
		local o=$objdir/${f//\//_}.o
		[ -f "$o" ] || { echo "build-c-plugins: $src/$f did not compile" >&2; exit 1; }
		echo "$o"
	done
}

zstd=$(fetch zstd-napi)/deps/zstd/lib
lz4=$(fetch lz4)/deps/lz4/lib

mapfile -t zfiles < <(cd "$zstd" && ls common/*.c compress/*.c decompress/*.c)
mapfile -t zobjs < <(objects zstd "$zstd" "${ZSTD_DEFS[@]}" -I"$zstd" -I"$zstd/common" -- "${zfiles[@]}")
mapfile -t lobjs < <(objects lz4 "$lz4" -- lz4.c lz4hc.c)
# (a failure inside <(...) does not stop the script: count instead)
[ "${#zfiles[@]}" -gt 0 ] && [ "${#zobjs[@]}" -eq "${#zfiles[@]}" ] && [ "${#lobjs[@]}" -eq 2 ] || exit 1

link() { # link NAME SHIMDIR INCLUDE DEFS... -- OBJECTS...
	local name=$1 shim=$2 inc=$3
	shift 3
	local defs=()
	while [ "$1" != "--" ]; do defs+=("$1"); shift; done
	shift
	"$CLANG" "${CFLAGS[@]}" "${defs[@]}" -Wall -Wextra -Werror -I"$top/plugins/csrc" -I"$inc" \
		"${LDFLAGS[@]}" -o "$out/$name.wasm.$$" "$shim/shim.c" "$@"
	mv -f "$out/$name.wasm.$$" "$out/$name.wasm"
	echo "build-c-plugins: $out/$name.wasm" >&2
}

link zstd-c plugins/zstd-c "$zstd" "${ZSTD_DEFS[@]}" -- "${zobjs[@]}"
link lz4-c plugins/lz4-c "$lz4" -- "${lobjs[@]}"

#!/usr/bin/env bash
# Fetch the Debian kernels the VM tests boot, and make sure QEMU is present.
# Idempotent: a series whose vmlinuz and version file exist is not downloaded
# again (delete its directory to refresh it to the newest package).
set -euo pipefail
trap 'echo "fetch-kernels: failed at line $LINENO" >&2' ERR

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
kdir=${UFFDGATE_KERNEL_DIR:-.cache/kernels}
# Relative paths are relative to the repo root, as in internal/vmtest.
[[ $kdir == /* ]] || kdir=$root/$kdir

sudo=
[[ $(id -u) == 0 ]] || sudo=sudo

updated=
tmps=()
trap 'rm -rf "${tmps[@]}"' EXIT
apt_update() {
	if [[ -z $updated ]]; then
		$sudo apt-get update -qq
		updated=1
	fi
}

if ! command -v qemu-system-x86_64 >/dev/null; then
	export DEBIAN_FRONTEND=noninteractive
	# Stale or empty package lists are the usual reason for failure.
	$sudo apt-get install -y -qq qemu-system-x86 >/dev/null ||
		{ apt_update && $sudo apt-get install -y -qq qemu-system-x86 >/dev/null; }
fi

# newest_pkg REGEX prints the newest package whose name matches REGEX.
newest_pkg() {
	apt-cache search --names-only "$1" | awk '{print $1}' | sort -V | tail -n1
}

fetch() {
	local series=$1 regex=$2 dest=$kdir/$1
	if [[ -s $dest/vmlinuz && -s $dest/version ]]; then
		return
	fi
	local pkg
	pkg=$(newest_pkg "$regex")
	if [[ -z $pkg ]]; then
		apt_update
		pkg=$(newest_pkg "$regex")
	fi
	if [[ -z $pkg ]]; then
		echo "fetch-kernels: no package matches $regex (is a Debian bookworm apt source configured?)" >&2
		return 1
	fi

	local tmp
	tmp=$(mktemp -d)
	tmps+=("$tmp")
	# Running apt as root avoids the "_apt cannot access" sandbox warning
	# for a root-owned temp dir.
	(cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg")
	local deb
	deb=$(echo "$tmp"/*.deb)
	mkdir -p "$tmp/x" "$dest"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/x" --wildcards './boot/vmlinuz-*'
	# Write the version last so an interrupted run is redone next time.
	rm -f "$dest/version" "$dest/vmlinux"
	mv "$tmp"/x/boot/vmlinuz-* "$dest/vmlinuz"
	dpkg-deb -f "$deb" Version >"$dest/version"
}

# unpack SERIES writes SERIES/vmlinux, the uncompressed ELF inside the
# bzImage. QEMU boots it through its PVH entry point, which skips the
# firmware and the decompressor: about 5s less per boot under TCG.
unpack() {
	local dir=$kdir/$1
	[[ -s $dir/vmlinux ]] && return
	local f=$dir/vmlinuz setup off len magic tool pkg
	# x86 boot protocol: setup_sects at 0x1f1, payload_offset/length at 0x248.
	setup=$(od -An -tu1 -j $((0x1f1)) -N1 "$f" | tr -d ' ')
	off=$(( (setup + 1) * 512 + $(od -An -tu4 -j $((0x248)) -N4 "$f" | tr -d ' ') ))
	len=$(od -An -tu4 -j $((0x24c)) -N4 "$f" | tr -d ' ')
	magic=$(od -An -tx1 -j "$off" -N4 "$f" | tr -d ' ')
	case $magic in
	fd377a58) tool=(xz -dc) pkg=xz-utils ;;
	28b52ffd) tool=(zstd -dcq) pkg=zstd ;;
	1f8b08*) tool=(gzip -dc) pkg=gzip ;;
	*)
		echo "fetch-kernels: $f: unknown payload compression $magic; VMs will boot the bzImage" >&2
		return
		;;
	esac
	if ! command -v "${tool[0]}" >/dev/null; then
		apt_update
		DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null
	fi
	# The payload ends with a 4-byte decompressed size, not part of the stream.
	# (head, not tail, cuts first: a reader that stops early would SIGPIPE
	# its writer and trip pipefail.)
	head -c $((off + len - 4)) "$f" | tail -c $((len - 4)) | "${tool[@]}" >"$dir/vmlinux.tmp"
	mv "$dir/vmlinux.tmp" "$dir/vmlinux"
}

fetch 6.1 '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$'
fetch 6.12 '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$'
unpack 6.1
unpack 6.12

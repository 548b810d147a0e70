#!/usr/bin/env bash
# Installs the Debian packages the tests (or, with "generate", the BPF build) need.
set -euo pipefail
pkgs=()
if [[ ${1:-} == generate ]]; then
	command -v clang >/dev/null || pkgs+=(clang)
	command -v llvm-strip >/dev/null || pkgs+=(llvm)
	[[ -f /usr/include/bpf/bpf_helpers.h ]] || pkgs+=(libbpf-dev)
fi
command -v qemu-system-x86_64 >/dev/null || pkgs+=(qemu-system-x86)
# A VM test subject is C (e2e/exeforge), built static.
command -v gcc >/dev/null || pkgs+=(gcc)
[[ -f /usr/lib/x86_64-linux-gnu/libc.a ]] || pkgs+=(libc6-dev)
# The seccomp profile tests compile profiles with libseccomp (cgo, test helper only).
pkg-config --exists libseccomp 2>/dev/null || pkgs+=(libseccomp-dev pkg-config)
((${#pkgs[@]})) || exit 0
sudo=
[[ $(id -u) == 0 ]] || sudo=sudo
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null ||
	{ $sudo apt-get update -qq && $sudo apt-get install -y -qq "${pkgs[@]}" >/dev/null; }

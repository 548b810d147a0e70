package gate

// The generated gate_x86_bpfel.{go,o} are committed so that building needs no
// clang; `make generate` rebuilds them (clang and libbpf-dev from Debian).
//go:generate go tool bpf2go -tags linux -target amd64 -type uffd_event -type uffd_config -type uffd_selftest -type exe_key -type id_key -type cgroup_key -type cgroup_val gate bpf/gate.bpf.c -- -I/usr/include -D__TARGET_ARCH_x86 -Wall -Werror

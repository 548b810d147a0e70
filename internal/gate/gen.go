package gate

// The generated gate_x86_bpfel.{go,o} are committed so that building needs no
// clang; `make generate` rebuilds them (clang and libbpf-dev from Debian).
// -mcpu=v3 for the atomic exchange in the event rate limit (Linux 5.12+; uffdgate
// needs 6.1 anyway).
//go:generate go tool bpf2go -tags linux -target amd64 -type uffd_event -type uffd_config -type uffd_selftest -type exe_key -type id_key -type cgroup_key -type cgroup_val -type rl_key -type rl_val -type exec_id -type file_ident gate bpf/gate.bpf.c -- -mcpu=v3 -I/usr/include -D__TARGET_ARCH_x86 -Wall -Werror

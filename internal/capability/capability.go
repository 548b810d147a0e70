// Package capability maps Linux capability names to numbers and masks.
package capability

import (
	"fmt"
	"strings"
)

// names in kernel order (include/uapi/linux/capability.h).
var names = [...]string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
	"CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
	"CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
	"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// Numbers of the capabilities uffdgate itself refers to.
const (
	SysPtrace = 19
	SysAdmin  = 21
	MacAdmin  = 33
	Perfmon   = 38
	BPF       = 39
	Last      = len(names) - 1
)

// Name returns the canonical name of capability c.
func Name(c int) string {
	if c >= 0 && c < len(names) {
		return names[c]
	}
	return fmt.Sprintf("CAP_%d", c)
}

// Parse accepts "CAP_SYS_PTRACE", "cap_sys_ptrace" or "sys_ptrace".
func Parse(s string) (int, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(u, "CAP_") {
		u = "CAP_" + u
	}
	for i, n := range names {
		if n == u {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown capability %q%s", s, suggest(u))
}

func suggest(u string) string {
	best, bestD := "", 4
	// Compared without the shared prefix, which alone would make "CAP_" close to CAP_BPF.
	bare := strings.TrimPrefix(u, "CAP_")
	for _, n := range names {
		if bare == "" {
			break
		}
		if d := distance(bare, strings.TrimPrefix(n, "CAP_")); d < bestD && d < len(bare) {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ": see capabilities(7) for the names"
	}
	return fmt.Sprintf(": did you mean %s?", best)
}

// distance is the Levenshtein distance, for "did you mean".
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Names lists the names of the capabilities in mask, in kernel order.
func Names(mask uint64) []string {
	var out []string
	for c := 0; c < 64; c++ {
		if mask&(1<<uint(c)) != 0 {
			out = append(out, Name(c))
		}
	}
	return out
}

package capability

import (
	"slices"
	"strings"
	"testing"
)

func TestParseAccepts(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{"CAP_SYS_PTRACE", SysPtrace},
		{"cap_sys_ptrace", SysPtrace},
		{"sys_ptrace", SysPtrace},
		{"SYS_PTRACE", SysPtrace},
		{"Cap_Sys_Ptrace", SysPtrace},
		{"  CAP_SYS_PTRACE\t", SysPtrace},
		{"CAP_CHOWN", 0},
		{"chown", 0},
		{"CAP_SYS_ADMIN", SysAdmin},
		{"mac_admin", MacAdmin},
		{"cap_perfmon", Perfmon},
		{"bpf", BPF},
		{"CAP_CHECKPOINT_RESTORE", 40},
		{"checkpoint_restore", Last},
	} {
		got, err := Parse(c.in)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, c := range []struct {
		in, want string
	}{
		{"CAP_SYS_PTRAC", `unknown capability "CAP_SYS_PTRAC": did you mean CAP_SYS_PTRACE?`},
		{"sys_ptrase", `unknown capability "sys_ptrase": did you mean CAP_SYS_PTRACE?`},
		{"cap_sysadmin", `unknown capability "cap_sysadmin": did you mean CAP_SYS_ADMIN?`},
		{"CAP_NET_ADMN", `unknown capability "CAP_NET_ADMN": did you mean CAP_NET_ADMIN?`},
		{"perfmom", `unknown capability "perfmom": did you mean CAP_PERFMON?`},
		{"root", `unknown capability "root": see capabilities(7) for the names`},
		{"setuid0", `unknown capability "setuid0": did you mean CAP_SETUID?`},
		{"CAP_EVERYTHING_PLEASE", `unknown capability "CAP_EVERYTHING_PLEASE": see capabilities(7) for the names`},
	} {
		n, err := Parse(c.in)
		if err == nil {
			t.Errorf("Parse(%q) = %d, want an error", c.in, n)
			continue
		}
		if err.Error() != c.want {
			t.Errorf("Parse(%q) error\n %q\nwant\n %q", c.in, err, c.want)
		}
	}
}

// Regression test (fixed): (capability.go, suggest): with nothing to compare, Parse("") and
// Parse("CAP_") answer "did you mean CAP_BPF?": the distance is computed on the
// "CAP_"-prefixed strings, so the shared prefix alone brings CAP_BPF within the
// threshold of 4. An empty name deserves no suggestion (and certainly not a
// powerful capability). Fix: compare the names without the "CAP_" prefix and
// suggest nothing for an empty name.
func TestParseEmptySuggestsNothing(t *testing.T) {
	for _, in := range []string{"", "CAP_", "  "} {
		_, err := Parse(in)
		if err == nil {
			t.Errorf("Parse(%q) succeeded", in)
			continue
		}
		if strings.Contains(err.Error(), "did you mean") {
			t.Errorf("Parse(%q): %v; want no suggestion for an empty name", in, err)
		}
	}
}

func TestNameAndConstants(t *testing.T) {
	// Kernel numbers (include/uapi/linux/capability.h).
	for _, c := range []struct {
		n    int
		name string
	}{
		{0, "CAP_CHOWN"}, {SysPtrace, "CAP_SYS_PTRACE"}, {SysAdmin, "CAP_SYS_ADMIN"},
		{MacAdmin, "CAP_MAC_ADMIN"}, {Perfmon, "CAP_PERFMON"}, {BPF, "CAP_BPF"},
		{12, "CAP_NET_ADMIN"}, {37, "CAP_AUDIT_READ"}, {40, "CAP_CHECKPOINT_RESTORE"},
		{41, "CAP_41"}, {63, "CAP_63"}, {-1, "CAP_-1"},
	} {
		if got := Name(c.n); got != c.name {
			t.Errorf("Name(%d) = %q, want %q", c.n, got, c.name)
		}
	}
	if SysPtrace != 19 || SysAdmin != 21 || MacAdmin != 33 || Perfmon != 38 || BPF != 39 || Last != 40 {
		t.Errorf("constants: ptrace %d admin %d mac_admin %d perfmon %d bpf %d last %d", SysPtrace, SysAdmin, MacAdmin, Perfmon, BPF, Last)
	}
	// Every name parses back to its number, and names are unique.
	for c := 0; c <= Last; c++ {
		if got, err := Parse(Name(c)); err != nil || got != c {
			t.Errorf("Parse(Name(%d)=%q) = %d, %v", c, Name(c), got, err)
		}
		short := strings.ToLower(strings.TrimPrefix(Name(c), "CAP_"))
		if got, err := Parse(short); err != nil || got != c {
			t.Errorf("Parse(%q) = %d, %v; want %d", short, got, err, c)
		}
	}
}

func TestNames(t *testing.T) {
	for _, c := range []struct {
		mask uint64
		want []string
	}{
		{0, nil},
		{1 << SysPtrace, []string{"CAP_SYS_PTRACE"}},
		// Kernel order, whatever order the bits were set in.
		{1<<BPF | 1<<SysPtrace | 1<<0, []string{"CAP_CHOWN", "CAP_SYS_PTRACE", "CAP_BPF"}},
		{1<<SysAdmin | 1<<SysPtrace, []string{"CAP_SYS_PTRACE", "CAP_SYS_ADMIN"}},
		{1<<Last | 1<<41 | 1<<63, []string{"CAP_CHECKPOINT_RESTORE", "CAP_41", "CAP_63"}},
	} {
		if got := Names(c.mask); !slices.Equal(got, c.want) {
			t.Errorf("Names(%#x) = %q, want %q", c.mask, got, c.want)
		}
	}
	all := Names(^uint64(0))
	if len(all) != 64 || all[0] != "CAP_CHOWN" || all[Last] != "CAP_CHECKPOINT_RESTORE" || all[63] != "CAP_63" {
		t.Errorf("Names(all) = %q", all)
	}
}

func TestDistance(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"", "ABC", 3}, {"ABC", "", 3}, {"KITTEN", "SITTING", 3},
		{"CAP_SYS_PTRAC", "CAP_SYS_PTRACE", 1}, {"FLAW", "LAWN", 2}, {"SAME", "SAME", 0},
	} {
		if got := distance(c.a, c.b); got != c.want {
			t.Errorf("distance(%q, %q) = %d, want %d", c.a, c.b, got, c.want)
		}
	}
}

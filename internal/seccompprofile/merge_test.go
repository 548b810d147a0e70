package seccompprofile

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// applies is moby's includes/excludes test, for the architecture part (no
// capabilities, no kernel version: the fixtures here use none).
func applies(s *seccomp.Syscall, arch string) bool {
	if s.Excludes != nil && slices.Contains(s.Excludes.Arches, arch) {
		return false
	}
	return s.Includes == nil || len(s.Includes.Arches) == 0 || slices.Contains(s.Includes.Arches, arch)
}

// condMatches is runc's reading of an entry's conditions: AND, unless an index
// repeats, then OR. Register values are full 64-bit, as libseccomp compares them
// on x86_64.
func condMatches(args []specs.LinuxSeccompArg, regs [6]uint64) bool {
	seen, or := map[uint]bool{}, false
	for _, a := range args {
		or = or || seen[a.Index]
		seen[a.Index] = true
	}
	for _, a := range args {
		v := regs[a.Index]
		var m bool
		switch a.Op {
		case specs.OpEqualTo:
			m = v == a.Value
		case specs.OpNotEqual:
			m = v != a.Value
		case specs.OpLessThan:
			m = v < a.Value
		case specs.OpLessEqual:
			m = v <= a.Value
		case specs.OpGreaterThan:
			m = v > a.Value
		case specs.OpGreaterEqual:
			m = v >= a.Value
		case specs.OpMaskedEqual:
			m = v&a.Value == a.ValueTwo
		}
		if or && m {
			return true
		}
		if !or && !m {
			return false
		}
	}
	return !or
}

// permitted reports whether some permissive rule for name matches, on arch.
func permitted(p *seccomp.Seccomp, arch, name string, regs [6]uint64) bool {
	for _, s := range p.Syscalls {
		if permissive(s.Action) && slices.Contains(names(s), name) && applies(s, arch) && condMatches(s.Args, regs) {
			return true
		}
	}
	return false
}

func generate(t *testing.T, base string) (*seccomp.Seccomp, []string) {
	t.Helper()
	p, err := Parse("base.json", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	out, notes, err := Generate(p, "base.json")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("out.json", out)
	if err != nil {
		t.Fatal(err)
	}
	return got, notes
}

func entryJSON(s *seccomp.Syscall) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// TestGenerateFromDockerDefault checks the profile written without --merge: every
// rule of Docker's default is still there, unchanged and in order, except that
// ioctl moved out of the big allow list into uffdgate's conditional rules.
func TestGenerateFromDockerDefault(t *testing.T) {
	base := Default()
	out, notes, err := Generate(Default(), DefaultName())
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("out.json", out)
	if err != nil {
		t.Fatal(err)
	}
	if got.DefaultAction != base.DefaultAction || *got.DefaultErrnoRet != *base.DefaultErrnoRet || len(got.ArchMap) != len(base.ArchMap) {
		t.Errorf("top-level fields changed: %s %v", got.DefaultAction, got.ArchMap)
	}
	var ours []*seccomp.Syscall
	theirs := got.Syscalls
	for len(theirs) > 0 && strings.HasPrefix(theirs[len(theirs)-1].Comment, Marker) {
		ours = append([]*seccomp.Syscall{theirs[len(theirs)-1]}, ours...)
		theirs = theirs[:len(theirs)-1]
	}
	if len(theirs) != len(base.Syscalls) {
		t.Fatalf("base has %d entries, the output keeps %d of them", len(base.Syscalls), len(theirs))
	}
	ioctlSeen := 0
	for i, b := range base.Syscalls {
		want := *b
		if slices.Contains(b.Names, "ioctl") {
			ioctlSeen++
			want.Names = slices.DeleteFunc(slices.Clone(b.Names), func(n string) bool { return n == "ioctl" })
		}
		if g, w := entryJSON(theirs[i]), entryJSON(&want); g != w {
			t.Errorf("syscalls[%d] changed:\nwant %s\ngot  %s", i, w, g)
		}
	}
	if ioctlSeen != 1 {
		t.Fatalf("Docker's default names ioctl in %d entries; the test expects its one unconditional allow", ioctlSeen)
	}
	var uffd, ioctls []*seccomp.Syscall
	for _, s := range ours {
		switch {
		case slices.Equal(s.Names, []string{"userfaultfd"}):
			uffd = append(uffd, s)
		case slices.Equal(s.Names, []string{"ioctl"}):
			ioctls = append(ioctls, s)
		default:
			t.Errorf("unexpected entry of uffdgate's: %s", entryJSON(s))
		}
	}
	wantUffd := `{"names":["userfaultfd"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"valueTwo":1,"op":"SCMP_CMP_MASKED_EQ"}],"comment":"uffdgate: userfaultfd with UFFD_USER_MODE_ONLY handles user-mode faults only: allowed"}`
	if len(uffd) != 1 || entryJSON(uffd[0]) != wantUffd {
		t.Errorf("userfaultfd entries: %v, want only %s (Docker's default action already refuses the rest with EPERM)", uffd, wantUffd)
	}
	if len(ioctls) != 34 {
		t.Errorf("%d ioctl entries, want 34: 31 shared command bits, bit 29 per encoding, the flag", len(ioctls))
	}
	for _, s := range ioctls {
		if s.Action != specs.ActAllow || len(s.Args) != 1 || s.Args[0].Op != specs.OpMaskedEqual {
			t.Errorf("ioctl entry is not a single masked allow: %s", entryJSON(s))
		}
	}
	for _, n := range []string{"base syscalls[0] (SCMP_ACT_ALLOW, unconditional) allowed ioctl: moved ioctl into conditional rules", "added: userfaultfd allowed with UFFD_USER_MODE_ONLY", "added: USERFAULTFD_IOC_NEW allowed with UFFD_USER_MODE_ONLY, refused otherwise"} {
		if !slices.ContainsFunc(notes, func(s string) bool { return strings.Contains(s, n) }) {
			t.Errorf("notes %q lack %q", notes, n)
		}
	}
	checkIoctlSplit(t, got)
}

// checkIoctlSplit evaluates the permissive ioctl rules the way moby and runc read
// them and checks, on both encodings of USERFAULTFD_IOC_NEW, that they admit
// exactly the ioctls that are not refused.
func checkIoctlSplit(t *testing.T, p *seccomp.Seccomp) {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	for _, arch := range []string{"amd64", "arm64", "s390x", "mips64", "ppc64le"} {
		ioc := uint64(iocNew)
		if slices.Contains(ioc1Arches, arch) {
			ioc = iocNewIOC1
		}
		cmds := []uint64{ioc, 1<<32 | ioc, 0xffffffff00000000 | ioc, ioc ^ 1, ioc ^ bit29, ioc ^ 1<<31, iocNew, iocNewIOC1, 0x5401, 0xc018aa3f, 0}
		flagsArgs := []uint64{0, 1, 2, 0x80800, 0x80801, 1 << 32, 1<<32 | 1, ^uint64(1), ^uint64(0)}
		check := func(cmd, arg uint64) {
			refused := uint32(cmd) == uint32(ioc) && arg&1 == 0
			if got := permitted(p, arch, "ioctl", [6]uint64{3, cmd, arg}); got == refused {
				t.Fatalf("%s: ioctl(3, %#x, %#x): permitted=%v, want %v", arch, cmd, arg, got, !refused)
			}
		}
		for _, c := range cmds {
			for _, a := range flagsArgs {
				check(c, a)
			}
		}
		for range 20000 {
			c := r.Uint64()
			if r.IntN(2) == 0 {
				c = c&^low32 | ioc ^ uint64(1)<<r.IntN(32)*uint64(r.IntN(2))
			}
			check(c, r.Uint64())
		}
	}
}

func TestMerge(t *testing.T) {
	const allowIoctl = `{"names": ["ioctl", "read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}`
	for _, c := range []struct {
		name      string
		base      string
		notes     []string
		check     func(t *testing.T, p *seccomp.Seccomp)
		wantUffd  []string // "ACTION MASK VALUE" of the userfaultfd entries
		wantIoctl int      // number of ioctl entries uffdgate adds
	}{
		{
			name: "CRI-O style: userfaultfd refused explicitly",
			base: `{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [` + allowIoctl + `,
				{"names": ["keyctl", "userfaultfd", "bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}`,
			notes:     []string{"base syscalls[1] (SCMP_ACT_ERRNO errno 1, unconditional) named userfaultfd: removed it there", "refused with EPERM without UFFD_USER_MODE_ONLY (rather than the default action SCMP_ACT_ERRNO)"},
			wantUffd:  []string{"SCMP_ACT_ALLOW 1 1", "SCMP_ACT_ERRNO 1 0"},
			wantIoctl: 34 + 2, // default errno 38, not EPERM: explicit refusals
			check: func(t *testing.T, p *seccomp.Seccomp) {
				if !slices.Equal(p.Syscalls[1].Names, []string{"keyctl", "bpf"}) || p.Syscalls[1].Action != specs.ActErrno {
					t.Errorf("the ERRNO entry lost more than userfaultfd: %s", entryJSON(p.Syscalls[1]))
				}
			},
		},
		{
			name:      "userfaultfd allowed outright, old single name",
			base:      `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [` + allowIoctl + `, {"name": "userfaultfd", "action": "SCMP_ACT_ALLOW"}]}`,
			notes:     []string{"base syscalls[1] (SCMP_ACT_ALLOW, unconditional) named userfaultfd: removed it there"},
			wantUffd:  []string{"SCMP_ACT_ALLOW 1 1"},
			wantIoctl: 34,
			check: func(t *testing.T, p *seccomp.Seccomp) {
				if len(p.Syscalls) != 1+1+34 {
					t.Errorf("%d entries, want the allow list, one userfaultfd rule and 34 ioctl rules", len(p.Syscalls))
				}
			},
		},
		{
			name:      "allow by default, blocking a few",
			base:      `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}`,
			notes:     []string{"added: userfaultfd refused with EPERM without UFFD_USER_MODE_ONLY (the default action SCMP_ACT_ALLOW allows the rest)", "added: USERFAULTFD_IOC_NEW refused with EPERM"},
			wantUffd:  []string{"SCMP_ACT_ERRNO 1 0"},
			wantIoctl: 2,
		},
		{
			name:      "kill by default",
			base:      `{"defaultAction": "SCMP_ACT_KILL_PROCESS", "syscalls": [` + allowIoctl + `]}`,
			wantUffd:  []string{"SCMP_ACT_ALLOW 1 1", "SCMP_ACT_ERRNO 1 0"},
			wantIoctl: 34 + 2,
		},
		{
			name:      "ioctl allowed only for chosen commands",
			base:      `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, "value": 21505, "op": "SCMP_CMP_EQ"}]}]}`,
			notes:     []string{"ioctl: the profile allows it only under conditions that never admit USERFAULTFD_IOC_NEW without UFFD_USER_MODE_ONLY (base syscalls[0]): left as it is"},
			wantUffd:  []string{"SCMP_ACT_ALLOW 1 1"},
			wantIoctl: 0,
		},
		{
			name:      "no ioctl at all",
			base:      `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}`,
			notes:     []string{"ioctl: the profile allows no ioctl"},
			wantUffd:  []string{"SCMP_ACT_ALLOW 1 1"},
			wantIoctl: 0,
		},
		{
			name:      "ioctl allowed only with a capability keeps its includes",
			base:      `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_LOG", "includes": {"caps": ["CAP_SYS_ADMIN"], "minKernel": "5.4"}}]}`,
			wantUffd:  []string{"SCMP_ACT_ALLOW 1 1"},
			wantIoctl: 34,
			check: func(t *testing.T, p *seccomp.Seccomp) {
				for _, s := range p.Syscalls {
					if slices.Contains(s.Names, "ioctl") && (s.Action != specs.ActLog || s.Includes == nil ||
						!slices.Equal(s.Includes.Caps, []string{"CAP_SYS_ADMIN"}) || s.Includes.MinKernel.String() != "5.4") {
						t.Errorf("split rule lost the original's action or includes: %s", entryJSON(s))
					}
				}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, notes := generate(t, c.base)
			var uffd []string
			ioctl := 0
			for _, s := range p.Syscalls {
				if !strings.HasPrefix(s.Comment, Marker) {
					continue
				}
				switch names(s)[0] {
				case "userfaultfd":
					a := s.Args[0]
					uffd = append(uffd, strings.Join([]string{string(s.Action), itoa(a.Value), itoa(a.ValueTwo)}, " "))
				case "ioctl":
					ioctl++
				}
			}
			if !slices.Equal(uffd, c.wantUffd) {
				t.Errorf("userfaultfd entries %q, want %q", uffd, c.wantUffd)
			}
			if ioctl != c.wantIoctl {
				t.Errorf("%d ioctl entries added, want %d", ioctl, c.wantIoctl)
			}
			for _, n := range c.notes {
				if !slices.ContainsFunc(notes, func(s string) bool { return strings.Contains(s, n) }) {
					t.Errorf("notes %q lack %q", notes, n)
				}
			}
			if c.check != nil {
				c.check(t, p)
			}
		})
	}
}

func itoa(v uint64) string { b, _ := json.Marshal(v); return string(b) }

func TestMergeRefuses(t *testing.T) {
	const allowIoctl = `{"names": ["ioctl", "read"], "action": "SCMP_ACT_ALLOW"}`
	for _, c := range []struct{ name, base, want string }{
		{"already merged", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["userfaultfd"], "action": "SCMP_ACT_ALLOW", "comment": "uffdgate: earlier run"}]}`,
			"base.json: syscalls[0]: this profile already has uffdgate's rules"},
		{"dead conditional refusal next to an unconditional allow", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [` + allowIoctl + `,
			{"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 1, "value": 21522, "op": "SCMP_CMP_EQ"}]}]}`,
			"base.json: syscalls[1]: this conditional ioctl rule has no effect today, because syscalls[0] allows ioctl unconditionally"},
		{"conditional allow admitting the device ioctl", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_EQ"}]}]}`,
			"base.json: syscalls[0]: this SCMP_ACT_ALLOW rule lets ioctl through under conditions that admit USERFAULTFD_IOC_NEW"},
		{"conditional allow with a 64-bit inequality", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, "value": 43520, "op": "SCMP_CMP_NE"}]}]}`,
			"syscalls[0]: this SCMP_ACT_ALLOW rule lets ioctl through"},
		{"conditional log in an allow-by-default profile", `{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_LOG", "args": [{"index": 2, "value": 0, "op": "SCMP_CMP_EQ"}]}]}`,
			"syscalls[0]: this SCMP_ACT_LOG rule lets ioctl through"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Parse("base.json", []byte(c.base))
			if err != nil {
				t.Fatal(err)
			}
			before, _ := Marshal(p)
			_, err = Merge(p, "base.json")
			var pe *Error
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), c.want) || pe.Fix == "" {
				t.Fatalf("error %v, want a *Error with a fix containing %q", err, c.want)
			}
			if after, _ := Marshal(p); string(after) != string(before) {
				t.Errorf("a refused merge changed the profile")
			}
		})
	}
}

func TestNeverMatchesRefusedIoctl(t *testing.T) {
	arg := func(i uint, op specs.LinuxSeccompOperator, v, v2 uint64) specs.LinuxSeccompArg {
		return specs.LinuxSeccompArg{Index: i, Op: op, Value: v, ValueTwo: v2}
	}
	for _, c := range []struct {
		name  string
		args  []specs.LinuxSeccompArg
		never bool
	}{
		{"cmd == TCGETS", []specs.LinuxSeccompArg{arg(1, specs.OpEqualTo, 0x5401, 0)}, true},
		{"cmd == IOC_NEW", []specs.LinuxSeccompArg{arg(1, specs.OpEqualTo, iocNew, 0)}, false},
		{"cmd == IOC_NEW with high bits", []specs.LinuxSeccompArg{arg(1, specs.OpEqualTo, 1<<32|iocNew, 0)}, false},
		{"cmd == mips IOC_NEW", []specs.LinuxSeccompArg{arg(1, specs.OpEqualTo, iocNewIOC1, 0)}, false},
		{"cmd masked type 0x54", []specs.LinuxSeccompArg{arg(1, specs.OpMaskedEqual, 0xff00, 0x5400)}, true},
		{"cmd masked type 0xAA", []specs.LinuxSeccompArg{arg(1, specs.OpMaskedEqual, 0xff00, 0xAA00)}, false},
		{"cmd masked in the high half only", []specs.LinuxSeccompArg{arg(1, specs.OpMaskedEqual, 0xff<<32, 0)}, false},
		{"impossible mask", []specs.LinuxSeccompArg{arg(1, specs.OpMaskedEqual, 0xff, 0x100)}, true},
		{"cmd < 0x100", []specs.LinuxSeccompArg{arg(1, specs.OpLessThan, 0x100, 0)}, true},
		{"cmd < 0xAA01", []specs.LinuxSeccompArg{arg(1, specs.OpLessThan, 0xAA01, 0)}, false},
		{"cmd <= 0xAA00", []specs.LinuxSeccompArg{arg(1, specs.OpLessEqual, 0xAA00, 0)}, false},
		{"cmd <= 0xA9FF", []specs.LinuxSeccompArg{arg(1, specs.OpLessEqual, 0xA9FF, 0)}, true},
		{"cmd != IOC_NEW (64-bit)", []specs.LinuxSeccompArg{arg(1, specs.OpNotEqual, iocNew, 0)}, false},
		{"cmd > 0xAA00", []specs.LinuxSeccompArg{arg(1, specs.OpGreaterThan, iocNew, 0)}, false},
		{"arg has the flag", []specs.LinuxSeccompArg{arg(2, specs.OpMaskedEqual, 1, 1)}, true},
		{"arg == 1", []specs.LinuxSeccompArg{arg(2, specs.OpEqualTo, 1, 0)}, true},
		{"arg == 0", []specs.LinuxSeccompArg{arg(2, specs.OpEqualTo, 0, 0)}, false},
		{"fd == 3", []specs.LinuxSeccompArg{arg(0, specs.OpEqualTo, 3, 0)}, false},
		{"AND: fd == 3 and cmd == TCGETS", []specs.LinuxSeccompArg{arg(0, specs.OpEqualTo, 3, 0), arg(1, specs.OpEqualTo, 0x5401, 0)}, true},
		{"OR: cmd == TCGETS or cmd == TCSETS", []specs.LinuxSeccompArg{arg(1, specs.OpEqualTo, 0x5401, 0), arg(1, specs.OpEqualTo, 0x5402, 0)}, true},
		{"OR: cmd == TCGETS or cmd == IOC_NEW", []specs.LinuxSeccompArg{arg(1, specs.OpEqualTo, 0x5401, 0), arg(1, specs.OpEqualTo, iocNew, 0)}, false},
	} {
		if got := neverMatchesRefusedIoctl(c.args); got != c.never {
			t.Errorf("%s: %v, want %v", c.name, got, c.never)
		}
	}
}

//go:build linux && amd64

package seccompprofile

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/net/bpf"

	"github.com/uffdgate/uffdgate/internal/seccompprofile/profiletest"
)

// Errnos the probes report (0: the syscall succeeded).
const (
	ok     = 0
	eperm  = 1
	eacces = 13
	enotty = 25
	enosys = 38
)

func writeProfile(t *testing.T, name string, p *seccomp.Seccomp) string {
	t.Helper()
	b, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func merged(t *testing.T, name string, base *seccomp.Seccomp) string {
	t.Helper()
	out, _, err := Generate(base, name)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustParse(t *testing.T, doc string) *seccomp.Seccomp {
	t.Helper()
	p, err := Parse("fixture.json", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The probes every variant answers the same way: what uffdgate decides, through
// every ABI the profile covers, with the high halves of the registers that the
// kernel ignores set to try to slip past.
var uffdgateRules = map[string]int{
	"userfaultfd:0":                  eperm,
	"userfaultfd:1":                  ok,
	"userfaultfd:0x80801":            ok,
	"userfaultfd:0x100000000":        eperm,
	"userfaultfd-ia32:0":             eperm,
	"userfaultfd-ia32:1":             ok,
	"userfaultfd-x32:0":              eperm, // x32 is off here (ENOSYS), but the filter answers first
	"ioctl:0":                        eperm,
	"ioctl:1":                        ok,
	"ioctl:0x80800":                  eperm,
	"ioctl:0x100000000":              eperm,
	"ioctl-ia32:0":                   eperm,
	"ioctl-ia32:1":                   ok,
	"ioctl-x32:0":                    eperm,
	"ioctl-dev:0x10000aa00:0":        eperm,
	"ioctl-dev:0xffffffff0000aa00:0": eperm,
	"ioctl-dev:0x10000aa00:1":        ok,
	"ioctl-null:0x5401:0":            enotty, // other ioctls reach the driver
	"ioctl-null:0xaa01:0":            enotty,
	"ioctl-null:0x2000aa00:0":        enotty, // the mips/powerpc encoding is just another ioctl on x86
	"getpid":                         ok,
}

func with(m map[string]int, extra map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = v
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

// TestProfilesUnderLibseccomp compiles each profile with libseccomp the way runc
// does, loads it into a real process and checks what its syscalls get: uffdgate's
// rules, and the base profile's own rules still in effect.
func TestProfilesUnderLibseccomp(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: without a filter root gets every context, so each EPERM is the profile's")
	}
	tools := profiletest.Build(t)

	// CRI-O-like: unknown syscalls get ENOSYS, userfaultfd is refused by name.
	crio := Default()
	crio.DefaultErrnoRet = new(uint)
	*crio.DefaultErrnoRet = enosys
	crio.Syscalls = append(crio.Syscalls, entry("userfaultfd", "SCMP_ACT_ERRNO", new(uint), "", nil, nil, nil))
	crio.Syscalls[len(crio.Syscalls)-1].Names = []string{"userfaultfd", "keyctl", "add_key"}
	*crio.Syscalls[len(crio.Syscalls)-1].ErrnoRet = eperm
	crioBase := writeProfile(t, "crio-base.json", crio) // before merging, which works in place

	killing := Default()
	killing.DefaultAction, killing.DefaultErrnoRet = "SCMP_ACT_KILL_PROCESS", nil

	allowing := `{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
		"syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}`

	for _, c := range []struct {
		name    string
		profile string
		want    map[string]int
	}{
		{"Docker's default, as generated", merged(t, "docker.json", Default()), with(uffdgateRules, map[string]int{
			"keyctl": eperm, "personality:0x1234": eperm, "personality:0xffffffff": ok, // Docker's own rules
		})},
		{"CRI-O-like, merged", merged(t, "crio.json", crio), with(uffdgateRules, map[string]int{
			"keyctl": eperm, "personality:0x1234": enosys, "personality:0xffffffff": ok,
		})},
		{"kill by default, merged", merged(t, "kill.json", killing), uffdgateRules}, // a refusal kills nothing
		{"allow by default, merged", merged(t, "allow.json", mustParse(t, allowing)), with(uffdgateRules, map[string]int{
			"keyctl": eacces, "personality:0x1234": ok,
		})},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := tools.Apply(t, c.profile, profiletest.Probes(c.want)...)
			profiletest.Check(t, c.name, got, c.want)
		})
	}

	// What the merge closes: the CRI-O-like base refuses userfaultfd outright,
	// user-mode-only included, and leaves /dev/userfaultfd wide open.
	t.Run("CRI-O-like base, not merged", func(t *testing.T) {
		want := map[string]int{"userfaultfd:1": eperm, "userfaultfd:0": eperm, "ioctl:0": ok, "ioctl:1": ok}
		profiletest.Check(t, "base", tools.Apply(t, crioBase, profiletest.Probes(want)...), want)
	})
}

// TestNaiveRefusalIsOverridden pins down why Merge splits the ioctl allow instead
// of adding one refusal: under libseccomp an unconditional allow for ioctl
// overrides a conditional ERRNO rule for it, whichever comes first. Should
// libseccomp change that, this fails, and the split may be revisited.
func TestNaiveRefusalIsOverridden(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root to open /dev/userfaultfd")
	}
	tools := profiletest.Build(t)
	for _, first := range []bool{false, true} {
		p := Default()
		refusal := entry("ioctl", "SCMP_ACT_ERRNO", new(uint), "naive", nil, nil, ioctlRefusals(nil, nil)[0].Args)
		*refusal.ErrnoRet = eacces // not the default errno, so runc keeps the rule
		if first {
			p.Syscalls = append([]*seccomp.Syscall{refusal}, p.Syscalls...)
		} else {
			p.Syscalls = append(p.Syscalls, refusal)
		}
		got := tools.Apply(t, writeProfile(t, "naive.json", p), "ioctl:0", "ioctl:1")
		if got["ioctl:0"] != ok {
			t.Errorf("refusal added first=%v: ioctl(dev, USERFAULTFD_IOC_NEW, 0) got errno %d: libseccomp now honours a conditional refusal next to an unconditional allow", first, got["ioctl:0"])
		}
	}
}

// TestExportedFilterOnEveryABI runs the BPF program libseccomp compiles from the
// generated profile on seccomp_data inputs in x/net/bpf's VM: every ABI,
// including x32, which this kernel does not run, and random register contents.
func TestExportedFilterOnEveryABI(t *testing.T) {
	tools := profiletest.Build(t)
	raw := tools.Export(t, merged(t, "docker.json", Default()))
	if len(raw)%8 != 0 {
		t.Fatalf("exported filter is %d bytes, not whole sock_filter records", len(raw))
	}
	var prog []bpf.RawInstruction
	for i := 0; i < len(raw); i += 8 {
		prog = append(prog, bpf.RawInstruction{
			Op: binary.LittleEndian.Uint16(raw[i:]), Jt: raw[i+2], Jf: raw[i+3], K: binary.LittleEndian.Uint32(raw[i+4:]),
		})
	}
	insns, allDecoded := bpf.Disassemble(prog)
	if !allDecoded {
		t.Fatalf("libseccomp's program has instructions x/net/bpf cannot decode")
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	const (
		allow  = 0x7fff0000
		refuse = 0x00050001 // SECCOMP_RET_ERRNO | EPERM
		x86_64 = 0xc000003e
		i386   = 0x40000003
	)
	run := func(arch, nr uint32, args [6]uint64) uint32 {
		b := make([]byte, 64)
		binary.BigEndian.PutUint32(b[0:], nr) // the VM loads big-endian; see seccompfilter's tests
		binary.BigEndian.PutUint32(b[4:], arch)
		for i, a := range args {
			binary.BigEndian.PutUint32(b[16+8*i:], uint32(a))
			binary.BigEndian.PutUint32(b[20+8*i:], uint32(a>>32))
		}
		out, err := vm.Run(b)
		if err != nil {
			t.Fatal(err)
		}
		return uint32(out)
	}
	abis := []struct {
		name        string
		arch        uint32
		uffd, ioctl uint32
	}{
		{"x86_64", x86_64, 323, 16},
		{"x32", x86_64, 0x40000000 | 323, 0x40000000 | 514},
		{"i386", i386, 374, 54},
	}
	r := rand.New(rand.NewPCG(5, 6))
	pick := func() uint64 {
		switch r.IntN(4) {
		case 0:
			return uint64(r.IntN(4))
		case 1:
			return r.Uint64()&^0xffffffff | 0xAA00
		}
		return r.Uint64()
	}
	for _, abi := range abis {
		for range 5000 {
			args := [6]uint64{pick(), pick(), pick()}
			want := uint32(allow)
			if uint32(args[0])&1 == 0 {
				want = refuse
			}
			if got := run(abi.arch, abi.uffd, args); got != want {
				t.Fatalf("%s userfaultfd(%#x): %#x, want %#x", abi.name, args[0], got, want)
			}
			want = allow
			if uint32(args[1]) == 0xAA00 && uint32(args[2])&1 == 0 {
				want = refuse
			}
			if got := run(abi.arch, abi.ioctl, args); got != want {
				t.Fatalf("%s ioctl(%#x, %#x, %#x): %#x, want %#x", abi.name, args[0], args[1], args[2], got, want)
			}
		}
	}
	// And Docker's own rules around them: getpid allowed, keyctl refused.
	if got := run(x86_64, 39, [6]uint64{}); got != allow {
		t.Errorf("getpid: %#x", got)
	}
	if got := run(x86_64, 250, [6]uint64{}); got != refuse {
		t.Errorf("keyctl: %#x", got)
	}
}

// TestOverlappingConditionalRulesFollowOrder pins down why Merge refuses a
// conditional refusing ioctl rule next to an unconditional allow: once the allow is
// split, libseccomp decides between a conditional refusal (here TIOCSTI) and the
// overlapping conditional allows by which was added first, not by action.
func TestOverlappingConditionalRulesFollowOrder(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root to run the probe's ioctls as the other tests do")
	}
	tools := profiletest.Build(t)
	tiocsti := entry("ioctl", "SCMP_ACT_ERRNO", new(uint), "TIOCSTI", nil, nil,
		[]specs.LinuxSeccompArg{{Index: 1, Value: 0x5412, Op: specs.OpEqualTo}})
	*tiocsti.ErrnoRet = eacces
	got := map[bool]int{}
	for _, first := range []bool{false, true} {
		p := Default()
		if _, err := Merge(p, "docker"); err != nil {
			t.Fatal(err)
		}
		if first {
			p.Syscalls = append([]*seccomp.Syscall{tiocsti}, p.Syscalls...)
		} else {
			p.Syscalls = append(p.Syscalls, tiocsti)
		}
		got[first] = tools.Apply(t, writeProfile(t, "order.json", p), "ioctl-null:0x5412:0")["ioctl-null:0x5412:0"]
	}
	if got[true] != eacces || got[false] != enotty {
		t.Errorf("TIOCSTI refusal added first: errno %d, added last: errno %d; libseccomp no longer resolves overlaps by order (want %d and %d)", got[true], got[false], eacces, enotty)
	}
}

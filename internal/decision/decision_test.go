package decision

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/capability"
)

const (
	ptraceBit = uint64(1) << capability.SysPtrace
	adminBit  = uint64(1) << capability.SysAdmin
	allCaps   = uint64(1)<<(capability.Last+1) - 1
)

var (
	exeA = FileID{Dev: 8<<20 | 1, Ino: 100}
	exeB = FileID{Dev: 8<<20 | 1, Ino: 200}
	// A cgroup tree: 1 is the root, 10 /machine.slice, 11 /machine.slice/vm, 20 /user.slice.
	cgVM, cgMachine, cgUser, cgRoot = uint64(11), uint64(10), uint64(20), uint64(1)
)

// Every value the properties are checked over. Modes past ModeDeny and paths past
// NumPaths are values a BPF map or a record could hold; the gate must fail closed
// on them.
var (
	allModes = []Mode{ModeAllow, ModeUserModeOnly, ModeDeny, Mode(3), Mode(255)}
	allPaths = func() []Path {
		var ps []Path
		for p := Path(0); p <= NumPaths; p++ {
			ps = append(ps, p)
		}
		return append(ps, Path(255))
	}()
	// Valid flag combinations, invalid ones with and without the UMO bit.
	allFlags = []uint32{0, UserModeOnly, NonBlock, CloseOnExec, UserModeOnly | CloseOnExec, ValidFlags, NonBlock | CloseOnExec,
		0x2, 0x3, 0x80000000, 0x80000001, 0xfffffffe, 0xffffffff}
)

func allSubjects() []Subject {
	var out []Subject
	for _, caps := range []uint64{0, ptraceBit, adminBit, allCaps &^ ptraceBit, ^uint64(0)} {
		for _, initNS := range []bool{true, false} {
			for _, exe := range []*FileID{nil, &exeA, &exeB} {
				for _, cgs := range [][]uint64{nil, {cgVM, cgMachine, cgRoot}, {cgMachine, cgRoot}, {cgUser, cgRoot}} {
					for _, id := range []struct {
						euid, egid uint32
						groups     []uint32
					}{{0, 0, nil}, {1000, 1000, []uint32{27, 1001}}, {1001, 27, nil}} {
						s := Subject{CapEffective: caps, InitUserNS: initNS, Cgroups: cgs, EUID: id.euid, EGID: id.egid, Groups: id.groups}
						if exe != nil {
							s.Exe, s.HasExe = *exe, true
						}
						out = append(out, s)
					}
				}
			}
		}
	}
	return out
}

// Rule sets: the default, capability lists, every selector kind, AND within a
// rule, OR across values, audit-only rules, user-mode-only grants, selectors
// present with no values (unresolved paths), a rule without selectors.
func allRuleSets() [][]Rule {
	exe := func(name string, ids ...FileID) Rule { return Rule{Name: name, HasExe: true, Exes: ids} }
	return [][]Rule{
		nil,
		{CapabilityRule(ptraceBit)},
		{CapabilityRule(ptraceBit | adminBit)},
		{exe("qemu", exeA)},
		{func() Rule { r := exe("trial", exeA); r.AuditOnly = true; return r }()},
		{func() Rule { r := exe("umo", exeA); r.Grant = GrantUserModeOnly; return r }()},
		{func() Rule { r := exe("umo-trial", exeA); r.Grant, r.AuditOnly = GrantUserModeOnly, true; return r }(), CapabilityRule(ptraceBit)},
		{CapabilityRule(ptraceBit), func() Rule { r := exe("kf-trial", exeB); r.AuditOnly = true; return r }()},
		{{Name: "vms", HasCgroup: true, Cgroups: []CgroupSel{{ID: cgMachine, Subtree: true}}}, {Name: "root-admin", HasUID: true, UIDs: []uint32{0}, Caps: adminBit}},
		{{Name: "machine-exact", HasCgroup: true, Cgroups: []CgroupSel{{ID: cgMachine}}, Grant: GrantUserModeOnly}, {Name: "group27", HasGID: true, GIDs: []uint32{27}}},
		{{Name: "unresolved", HasExe: true}, {Name: "no-uids", HasUID: true}, {Name: "no-cgroups", HasCgroup: true}},
		{{Name: "exe-and-uid", HasExe: true, Exes: []FileID{exeA, exeB}, HasUID: true, UIDs: []uint32{1000, 1001}}},
		{{Name: "everyone"}},
		{func() Rule { r := CapabilityRule(ptraceBit); r.AuditOnly = true; return r }(), {Name: "g1001", HasGID: true, GIDs: []uint32{1001}, Grant: GrantUserModeOnly}},
	}
}

// matches is the rule semantics of the package documentation, written out
// independently: AND across the selectors present, OR across a selector's values.
func matches(r Rule, s Subject) bool {
	if r.HasExe && !(s.HasExe && slices.Contains(r.Exes, s.Exe)) {
		return false
	}
	if r.HasUID && !slices.Contains(r.UIDs, s.EUID) {
		return false
	}
	if r.HasGID {
		ok := false
		for _, g := range r.GIDs {
			ok = ok || g == s.EGID || slices.Contains(s.Groups, g)
		}
		if !ok {
			return false
		}
	}
	if r.Caps != 0 && (!s.InitUserNS || s.CapEffective&r.Caps == 0) {
		return false
	}
	if r.HasCgroup {
		ok := false
		for _, c := range r.Cgroups {
			own := len(s.Cgroups) > 0 && s.Cgroups[0] == c.ID
			ok = ok || own || (c.Subtree && slices.Contains(s.Cgroups, c.ID))
		}
		if !ok {
			return false
		}
	}
	return true
}

type combo struct {
	g Gate
	s Subject
	r Request
}

func (c combo) String() string {
	var rules []string
	for _, r := range c.g.Rules {
		rules = append(rules, fmt.Sprintf("%s(%s,audit-only=%v)", r.Name, r.Grant, r.AuditOnly))
	}
	return fmt.Sprintf("mode=%s audit=%v rules=%v subject=%+v path=%s flags=%#x known=%v",
		c.g.Mode, c.g.Audit, rules, c.s, c.r.Path, c.r.Flags, c.r.FlagsKnown)
}

// forEach calls f for every mode × audit × rule set × subject × path × flags ×
// flags-known.
func forEach(subjects []Subject, ruleSets [][]Rule, paths []Path, flags []uint32, f func(c combo)) int {
	n := 0
	for _, m := range allModes {
		for _, audit := range []bool{false, true} {
			for _, rules := range ruleSets {
				g := Gate{Mode: m, Audit: audit, Rules: rules}
				for _, s := range subjects {
					for _, p := range paths {
						for _, fl := range flags {
							for _, known := range []bool{true, false} {
								f(combo{g, s, Request{Path: p, Flags: fl, FlagsKnown: known}})
								n++
							}
						}
					}
				}
			}
		}
	}
	return n
}

type failer struct {
	t *testing.T
	n int
}

func (f *failer) fail(c combo, format string, args ...any) {
	f.t.Helper()
	f.n++
	if f.n <= 5 {
		f.t.Errorf("%v:\n    %s", c, fmt.Sprintf(format, args...))
	}
}

func (f *failer) done() {
	if f.n > 5 {
		f.t.Errorf("... %d failures in all", f.n)
	}
}

func isKernelFault(r Request) bool { return !r.FlagsKnown || r.Flags&0x1 == 0 }

// Decide depends on the path only for fork events and on the flags only through
// the UMO bit and whether they are known: one path of each kind and flags of each
// kind keep the exhaustive enumeration fast. TestExpectProperties enumerates every
// path and all the flags.
var (
	decidePaths = []Path{PathUnknown, PathIoctl64, PathForkEvent}
	decideFlags = []uint32{0, UserModeOnly, NonBlock | CloseOnExec, ValidFlags, 0x2, 0x3, 0xffffffff}
)

func TestDecideProperties(t *testing.T) {
	f := &failer{t: t}
	counts := map[Verdict]int{}
	n := forEach(allSubjects(), allRuleSets(), decidePaths, decideFlags, func(c combo) {
		res := Decide(c.g, c.s, c.r)
		counts[res.Verdict]++
		kf := isKernelFault(c.r)

		if res.Reason == "" {
			f.fail(c, "empty reason")
		}
		// Fork-event duplicates are always allowed, whatever the policy and caller.
		if c.r.Path == PathForkEvent {
			if res.Verdict != Allow || res.Report {
				f.fail(c, "fork-event duplicate: %s, report %v; want allow, unreported", res.Verdict, res.Report)
			}
			return
		}

		var matched uint64
		var allowlisted, granted bool // kernel faults; anything
		for i, r := range c.g.Rules {
			if !matches(r, c.s) {
				continue
			}
			matched |= 1 << uint(i)
			if !r.AuditOnly {
				granted = true
				allowlisted = allowlisted || r.Grant == GrantKernelFaults
			}
		}
		if res.Matched != matched {
			f.fail(c, "Matched = %#x, want %#x", res.Matched, matched)
		}
		if res.Allowlisted != allowlisted {
			f.fail(c, "Allowlisted = %v, want %v", res.Allowlisted, allowlisted)
		}
		if dm := DecideMatched(c.g, c.g.Match(c.s), c.r); !reflect.DeepEqual(dm, res) {
			f.fail(c, "DecideMatched(Match) = %+v, Decide = %+v", dm, res)
		}

		// What enforcement decides, by mode.
		var deny bool
		switch {
		case allowlisted: // allowlisted processes are never denied
		case c.g.Mode == ModeAllow: // mode allow never denies
		case c.g.Mode == ModeUserModeOnly: // exactly the kernel-fault requests
			deny = kf
		default: // deny, and any unknown mode (fail closed): everything not granted
			deny = kf || !granted
		}
		want := Allow
		if deny {
			want = Deny
			if c.g.Audit {
				want = WouldDeny
			}
		}
		if res.Verdict != want {
			f.fail(c, "verdict %s, want %s (kernel-fault=%v allowlisted=%v granted=%v)", res.Verdict, want, kf, allowlisted, granted)
		}
		if c.g.Mode == ModeDeny && !allowlisted && !granted && res.Verdict == Allow {
			f.fail(c, "mode deny let a request of a process no rule grants anything through")
		}

		// Audit never denies; it would-denies exactly where enforcing denies.
		enf, aud := c.g, c.g
		enf.Audit, aud.Audit = false, true
		re, ra := Decide(enf, c.s, c.r), Decide(aud, c.s, c.r)
		if ra.Verdict == Deny || re.Verdict == WouldDeny {
			f.fail(c, "audit %s, enforce %s", ra.Verdict, re.Verdict)
		}
		if (re.Verdict == Deny) != (ra.Verdict == WouldDeny) {
			f.fail(c, "enforce %s vs audit %s", re.Verdict, ra.Verdict)
		}

		// Report: every denial and would-be denial, and every kernel-fault request.
		if res.Verdict != Allow && !res.Report {
			f.fail(c, "%s not reported", res.Verdict)
		}
		if wantReport := res.Verdict != Allow || kf; res.Report != wantReport {
			f.fail(c, "Report = %v, want %v", res.Report, wantReport)
		}

		// Capabilities held outside the initial user namespace count for nothing.
		if !c.s.InitUserNS {
			capless := c.s
			capless.CapEffective = 0
			if rc := Decide(c.g, capless, c.r); rc.Verdict != res.Verdict || rc.Matched != res.Matched || rc.Allowlisted != res.Allowlisted {
				f.fail(c, "outside the initial userns: %s matched %#x; without capabilities: %s matched %#x", res.Verdict, res.Matched, rc.Verdict, rc.Matched)
			}
		}

		// Audit-only rules never change a verdict: replacing them by rules that
		// match nothing decides the same.
		if slices.ContainsFunc(c.g.Rules, func(r Rule) bool { return r.AuditOnly }) {
			g2 := c.g
			g2.Rules = slices.Clone(c.g.Rules)
			for i, r := range g2.Rules {
				if r.AuditOnly {
					g2.Rules[i] = Rule{Name: r.Name, HasExe: true}
				}
			}
			if r2 := Decide(g2, c.s, c.r); r2.Verdict != res.Verdict || r2.Allowlisted != res.Allowlisted {
				f.fail(c, "audit-only rules changed the verdict: %s with them, %s without", res.Verdict, r2.Verdict)
			}
		}

		// Every refusal says why and what to change.
		if res.Verdict != Allow {
			if res.Remedy == "" {
				f.fail(c, "%s without remedy", res.Verdict)
			}
			if c.g.Mode == ModeUserModeOnly && !c.r.FlagsKnown && !strings.Contains(res.Reason, "could not be determined") {
				f.fail(c, "reason %q does not say the flags were unknown", res.Reason)
			}
		}
	})
	f.done()
	for v := Verdict(0); v < NumVerdicts; v++ {
		if counts[v] == 0 {
			t.Errorf("no combination produced %s: the enumeration proves little", v)
		}
	}
	t.Logf("%d combinations checked; verdicts %v", n, counts)
}

// Regression test (fixed): (decision.go, explain; see also TestTrialRuleRemedyGrantUserModeOnly): when
// a matching audit-only rule only grants
// user-mode-only contexts and the request is a kernel-fault one (mode deny,
// `grant: user-mode-only`, `audit_only: true`), the reason says "audit-only rule
// X would allow it" and the remedy "set audit_only: false on rule X to allow it";
// doing so still denies the request. Fix: in explain, name as trial rules only
// the audit-only matched rules that would allow this request (Grant ==
// GrantKernelFaults, or any grant for a user-mode-only request in mode deny),
// i.e. those for which DecideMatched with AuditOnly cleared returns Allow.
func TestRemediesWork(t *testing.T) {
	f := &failer{t: t}
	checked := 0
	forEach(allSubjects(), allRuleSets(), []Path{PathIoctl64}, decideFlags, func(c combo) {
		res := Decide(c.g, c.s, c.r)
		if res.Verdict == Allow {
			return
		}
		checked++
		// "set audit_only: false on rule X to allow it"
		if strings.Contains(res.Remedy, "set audit_only: false on rule") {
			g2 := c.g
			g2.Rules = slices.Clone(c.g.Rules)
			for i := range g2.Rules {
				g2.Rules[i].AuditOnly = false
			}
			if r2 := Decide(g2, c.s, c.r); r2.Verdict != Allow {
				f.fail(c, "remedy %q: with audit_only false the verdict is still %s", res.Remedy, r2.Verdict)
			}
		}
		// "pass UFFD_USER_MODE_ONLY if only user-mode faults are needed"
		if strings.Contains(res.Remedy, "pass UFFD_USER_MODE_ONLY") {
			r2 := c.r
			r2.Flags |= UserModeOnly
			r2.FlagsKnown = true
			if d := Decide(c.g, c.s, r2); d.Verdict != Allow {
				f.fail(c, "remedy %q: with UFFD_USER_MODE_ONLY the verdict is still %s", res.Remedy, d.Verdict)
			}
		}
		// "grant it one of CAPS in the initial user namespace"
		if strings.Contains(res.Remedy, "grant it one of") {
			s2 := c.s
			s2.InitUserNS, s2.CapEffective = true, c.g.Rules[0].Caps
			if d := Decide(c.g, s2, c.r); d.Verdict != Allow {
				f.fail(c, "remedy %q: holding the capabilities the verdict is still %s", res.Remedy, d.Verdict)
			}
		}
		// "add a rule with `grant: user-mode-only` (or kernel-faults) for this process"
		if strings.Contains(res.Remedy, "add a rule with `grant: user-mode-only`") {
			g2 := c.g
			g2.Rules = append(slices.Clone(c.g.Rules), Rule{Name: "this-process", HasUID: true, UIDs: []uint32{c.s.EUID}, Grant: GrantUserModeOnly})
			if d := Decide(g2, c.s, c.r); d.Verdict != Allow {
				f.fail(c, "remedy %q: with such a rule the verdict is still %s", res.Remedy, d.Verdict)
			}
		}
	})
	f.done()
	t.Logf("%d refusals' remedies checked", checked)
}

// Regression test (fixed): (decision.go, explain): the case of TestRemediesWork that a valid policy
// reaches (`mode: deny`, a rule with `grant: user-mode-only` and `audit_only:
// true`): a kernel-fault request from a process that rule matches is told the
// trial rule "would allow it", and to set audit_only: false; it would not.
func TestTrialRuleRemedyGrantUserModeOnly(t *testing.T) {
	trial := Rule{Name: "qemu-trial", HasExe: true, Exes: []FileID{exeA}, Grant: GrantUserModeOnly, AuditOnly: true}
	g := Gate{Mode: ModeDeny, Rules: []Rule{CapabilityRule(ptraceBit), trial}}
	s := Subject{InitUserNS: true, HasExe: true, Exe: exeA, EUID: 1000}

	// A user-mode-only request: the trial rule would indeed allow it.
	umo := Decide(g, s, Request{Path: PathIoctl64, Flags: UserModeOnly, FlagsKnown: true})
	if umo.Verdict != Deny || !strings.Contains(umo.Reason, "audit-only rule qemu-trial would allow it") {
		t.Errorf("user-mode-only request: %s, reason %q", umo.Verdict, umo.Reason)
	}
	g2 := Gate{Mode: ModeDeny, Rules: []Rule{CapabilityRule(ptraceBit), trial}}
	g2.Rules[1].AuditOnly = false
	if d := Decide(g2, s, Request{Path: PathIoctl64, Flags: UserModeOnly, FlagsKnown: true}); d.Verdict != Allow {
		t.Errorf("user-mode-only request with the rule enforced: %s, want allow", d.Verdict)
	}

	// A kernel-fault request: it would not.
	r := Request{Path: PathIoctl64, Flags: CloseOnExec, FlagsKnown: true}
	kf := Decide(g, s, r)
	if d := Decide(g2, s, r); d.Verdict != Allow &&
		(strings.Contains(kf.Reason, "qemu-trial would allow it") || strings.Contains(kf.Remedy, "audit_only: false on rule qemu-trial")) {
		t.Errorf("kernel-fault request: the rule grants user-mode-only contexts, enforced it still gives %s, yet\n reason %q\n remedy %q",
			d.Verdict, kf.Reason, kf.Remedy)
	}
}

// The capability list of the default policy, named in the remedy.
func TestRemedyNamesCapabilities(t *testing.T) {
	g := Gate{Mode: ModeUserModeOnly, Rules: []Rule{CapabilityRule(ptraceBit | adminBit)}}
	res := Decide(g, Subject{InitUserNS: true}, Request{Path: PathIoctl64, FlagsKnown: true})
	want := "pass UFFD_USER_MODE_ONLY if only user-mode faults are needed, or grant it one of CAP_SYS_PTRACE, CAP_SYS_ADMIN in the initial user namespace, or add a rule for it (executable, cgroup, user)"
	if res.Verdict != Deny || res.Remedy != want {
		t.Errorf("Decide = %s, remedy\n %q\nwant\n %q", res.Verdict, res.Remedy, want)
	}
}

// kernelErrno is the kernel's own answer, without any gate, written from
// kernel-facts.md: the syscall's privilege check, then flag validation.
func kernelErrno(k Kernel, s Subject, r Request) syscall.Errno {
	syscallPath := r.Path == PathSyscall64 || r.Path == PathSyscallIA32 || r.Path == PathSyscallX32
	privileged := s.InitUserNS && s.CapEffective&ptraceBit != 0
	if syscallPath && r.Flags&0x1 == 0 && !privileged && !k.UnprivilegedUserfaultfd {
		return syscall.EPERM
	}
	if r.Flags&^uint32(0x80801) != 0 {
		return syscall.EINVAL
	}
	return 0
}

// Expect adds the kernel's checks, which depend on the path, all the flags, the
// sysctl and CAP_SYS_PTRACE in the initial user namespace; subjects and rule sets
// that make a process allowlisted or not are enough for the gate's part, which
// TestDecideProperties covers in full.
func expectSubjects() []Subject {
	var out []Subject
	for _, caps := range []uint64{0, ptraceBit, allCaps &^ ptraceBit, ^uint64(0)} {
		for _, initNS := range []bool{true, false} {
			for _, hasExe := range []bool{false, true} {
				out = append(out, Subject{CapEffective: caps, InitUserNS: initNS, HasExe: hasExe, Exe: exeA, EUID: 1000})
			}
		}
	}
	return out
}

func expectRuleSets() [][]Rule {
	return [][]Rule{
		nil,
		{CapabilityRule(ptraceBit)},
		{{Name: "qemu", HasExe: true, Exes: []FileID{exeA}}},
		{{Name: "umo", HasExe: true, Exes: []FileID{exeA}, Grant: GrantUserModeOnly}},
		{{Name: "trial", HasUID: true, UIDs: []uint32{1000}, AuditOnly: true}},
	}
}

func TestExpectProperties(t *testing.T) {
	f := &failer{t: t}
	outcomes := map[string]int{}
	n := 0
	for _, sysctl := range []bool{false, true} {
		k := Kernel{UnprivilegedUserfaultfd: sysctl}
		n += forEach(expectSubjects(), expectRuleSets(), allPaths, allFlags, func(c combo) {
			if c.r.Path == PathForkEvent && c.r.Flags&^ValidFlags != 0 {
				return // a duplicate copies a valid context's flags: not a request the kernel can see
			}
			o := Expect(k, c.g, c.s, c.r)
			outcomes[fmt.Sprintf("%s:%s", o.Layer, errnoName(o.Errno))]++
			ke := kernelErrno(k, c.s, c.r)
			// Kernel errors come first, unchanged: the gate never turns a kernel
			// EPERM or EINVAL into success, nor into the other error.
			if ke != 0 {
				if o.Errno != ke || o.Layer != "kernel" || o.GateSaw {
					f.fail(c, "sysctl=%v: kernel says %v; Expect gave %v, layer %q, gate saw %v", sysctl, ke, o.Errno, o.Layer, o.GateSaw)
				}
				return
			}
			if !o.GateSaw {
				f.fail(c, "sysctl=%v: the kernel allows it but the gate did not see it (%v, layer %q)", sysctl, o.Errno, o.Layer)
				return
			}
			d := Decide(c.g, c.s, c.r)
			if !reflect.DeepEqual(o.Gate, d) {
				f.fail(c, "Expect's gate result %+v differs from Decide %+v", o.Gate, d)
			}
			switch d.Verdict {
			case Deny:
				if o.Errno != syscall.EPERM || o.Layer != "uffdgate" {
					f.fail(c, "gate denies: %v, layer %q; want EPERM from uffdgate", o.Errno, o.Layer)
				}
			default: // allow and would-deny create the context
				if o.Errno != 0 || o.Layer != "" {
					f.fail(c, "gate %s: %v, layer %q; want a context", d.Verdict, o.Errno, o.Layer)
				}
			}
			if c.r.Path == PathForkEvent && o.Errno != 0 {
				f.fail(c, "fork-event duplicate refused with %v", o.Errno)
			}
		})
	}
	f.done()
	for _, want := range []string{"kernel:EPERM", "kernel:EINVAL", "uffdgate:EPERM", ":ok"} {
		if outcomes[want] == 0 {
			t.Errorf("no combination produced %s (outcomes %v)", want, outcomes)
		}
	}
	t.Logf("%d combinations checked; outcomes %v", n, outcomes)
}

func errnoName(e syscall.Errno) string {
	if e == 0 {
		return "ok"
	}
	return unix.ErrnoName(e)
}

// Concrete cases from the issue, in the kernel's order, under the default policy.
func TestExpectCases(t *testing.T) {
	def := Gate{Mode: ModeUserModeOnly, Rules: []Rule{CapabilityRule(ptraceBit)}}
	unpriv := Subject{InitUserNS: true, EUID: 1000}
	rootNoPtrace := Subject{CapEffective: allCaps &^ ptraceBit, InitUserNS: true}
	ptrace := Subject{CapEffective: ptraceBit, InitUserNS: true, EUID: 1000}
	nsRoot := Subject{CapEffective: allCaps, InitUserNS: false}
	off, on := Kernel{}, Kernel{UnprivilegedUserfaultfd: true}
	cases := []struct {
		name  string
		k     Kernel
		g     Gate
		s     Subject
		r     Request
		errno syscall.Errno
		layer string
	}{
		{"syscall no UMO unprivileged sysctl 0", off, def, unpriv, Request{PathSyscall64, 0, true}, syscall.EPERM, "kernel"},
		{"syscall invalid flags without UMO: EPERM comes first", off, def, unpriv, Request{PathSyscall64, 0x2, true}, syscall.EPERM, "kernel"},
		{"syscall invalid flags with UMO", off, def, unpriv, Request{PathSyscall64, 0x3, true}, syscall.EINVAL, "kernel"},
		{"syscall-ia32 no UMO unprivileged sysctl 0", off, def, unpriv, Request{PathSyscallIA32, CloseOnExec, true}, syscall.EPERM, "kernel"},
		{"syscall-x32 no UMO unprivileged sysctl 0", off, def, unpriv, Request{PathSyscallX32, CloseOnExec, true}, syscall.EPERM, "kernel"},
		{"syscall no UMO userns root: not capable", off, def, nsRoot, Request{PathSyscall64, 0, true}, syscall.EPERM, "kernel"},
		{"syscall no UMO uid 0 without ptrace", off, def, rootNoPtrace, Request{PathSyscall64, 0, true}, syscall.EPERM, "kernel"},
		{"syscall no UMO unprivileged sysctl 1: the gate refuses", on, def, unpriv, Request{PathSyscall64, 0, true}, syscall.EPERM, "uffdgate"},
		{"syscall no UMO ptrace", off, def, ptrace, Request{PathSyscall64, 0, true}, 0, ""},
		{"syscall UMO unprivileged", off, def, unpriv, Request{PathSyscall64, UserModeOnly | CloseOnExec, true}, 0, ""},
		{"ioctl no UMO unprivileged: no kernel check, the gate refuses", off, def, unpriv, Request{PathIoctl64, 0, true}, syscall.EPERM, "uffdgate"},
		{"ioctl no UMO uid 0 without ptrace", off, def, rootNoPtrace, Request{PathIoctl64, CloseOnExec, true}, syscall.EPERM, "uffdgate"},
		{"ioctl-ia32 no UMO userns root", off, def, nsRoot, Request{PathIoctlIA32, 0, true}, syscall.EPERM, "uffdgate"},
		{"ioctl invalid flags", off, def, unpriv, Request{PathIoctl64, 0x2, true}, syscall.EINVAL, "kernel"},
		{"ioctl invalid flags mode deny", off, Gate{Mode: ModeDeny}, unpriv, Request{PathIoctl64, 0x80000000, true}, syscall.EINVAL, "kernel"},
		{"ioctl UMO", off, def, unpriv, Request{PathIoctl64, UserModeOnly, true}, 0, ""},
		{"ioctl no UMO ptrace", off, def, ptrace, Request{PathIoctl64, 0, true}, 0, ""},
		{"ioctl no UMO audit", off, Gate{Mode: ModeUserModeOnly, Audit: true}, unpriv, Request{PathIoctl64, 0, true}, 0, ""},
		{"mode deny UMO", off, Gate{Mode: ModeDeny, Rules: []Rule{CapabilityRule(ptraceBit)}}, unpriv, Request{PathIoctl64, UserModeOnly, true}, syscall.EPERM, "uffdgate"},
		{"mode deny UMO, user-mode-only grant", off, Gate{Mode: ModeDeny, Rules: []Rule{{Name: "u", HasUID: true, UIDs: []uint32{1000}, Grant: GrantUserModeOnly}}}, unpriv, Request{PathIoctl64, UserModeOnly, true}, 0, ""},
		{"mode deny no UMO, user-mode-only grant", off, Gate{Mode: ModeDeny, Rules: []Rule{{Name: "u", HasUID: true, UIDs: []uint32{1000}, Grant: GrantUserModeOnly}}}, unpriv, Request{PathIoctl64, 0, true}, syscall.EPERM, "uffdgate"},
		{"mode deny allowlisted", off, Gate{Mode: ModeDeny, Rules: []Rule{CapabilityRule(ptraceBit)}}, ptrace, Request{PathIoctl64, 0, true}, 0, ""},
		{"unknown flags fail closed", off, def, unpriv, Request{PathUnknown, 0, false}, syscall.EPERM, "uffdgate"},
		{"fork event", off, Gate{Mode: ModeDeny}, unpriv, Request{PathForkEvent, 0, false}, 0, ""},
		{"mode allow", off, Gate{Mode: ModeAllow}, unpriv, Request{PathIoctl64, 0, true}, 0, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := Expect(c.k, c.g, c.s, c.r)
			if o.Errno != c.errno || o.Layer != c.layer {
				t.Errorf("Expect = %s layer %q, want %s layer %q", errnoName(o.Errno), o.Layer, errnoName(c.errno), c.layer)
			}
			if o.GateSaw != (c.layer != "kernel") {
				t.Errorf("GateSaw = %v with layer %q", o.GateSaw, c.layer)
			}
		})
	}
}

func TestDecideTexts(t *testing.T) {
	def := []Rule{CapabilityRule(ptraceBit)}
	unpriv := Subject{InitUserNS: true, HasExe: true, Exe: exeA}
	trial := Rule{Name: "qemu", HasExe: true, Exes: []FileID{exeA}, AuditOnly: true}
	cases := []struct {
		name           string
		g              Gate
		s              Subject
		r              Request
		verdict        Verdict
		reason, remedy string
	}{
		{"user-mode-only kernel fault", Gate{Mode: ModeUserModeOnly, Rules: def}, unpriv, Request{PathIoctl64, CloseOnExec, true}, Deny,
			"kernel-fault userfaultfd context (no UFFD_USER_MODE_ONLY) requested by a process no rule allows",
			"pass UFFD_USER_MODE_ONLY if only user-mode faults are needed, or grant it one of CAP_SYS_PTRACE in the initial user namespace, or add a rule for it (executable, cgroup, user)"},
		{"user-mode-only unknown flags, several rules", Gate{Mode: ModeUserModeOnly, Rules: append(def, Rule{Name: "x", HasUID: true, UIDs: []uint32{7}})}, unpriv, Request{PathUnknown, 0, false}, Deny,
			"the creation flags could not be determined, so the request counts as a kernel-fault request (fail closed), and no rule allows this process kernel-fault contexts",
			"create the context through the userfaultfd syscall or USERFAULTFD_IOC_NEW with UFFD_USER_MODE_ONLY, or add a rule for this process (its executable, cgroup or user) to the policy's rules"},
		{"deny, no rules, audit, UMO request", Gate{Mode: ModeDeny, Audit: true}, unpriv, Request{PathSyscall64, UserModeOnly, true}, WouldDeny,
			"mode deny refuses userfaultfd contexts to processes no rule grants them to",
			"add a rule with `grant: user-mode-only` (or kernel-faults) for this process"},
		{"deny, kernel fault", Gate{Mode: ModeDeny, Rules: def}, unpriv, Request{PathSyscall64, 0, true}, Deny,
			"mode deny refuses every userfaultfd context to processes no rule allows",
			"grant it one of CAP_SYS_PTRACE in the initial user namespace, or add a rule for it (executable, cgroup, user), or set mode: user-mode-only to let user-mode-only contexts through"},
		{"audit-only rule on trial", Gate{Mode: ModeUserModeOnly, Rules: append(def, trial)}, unpriv, Request{PathIoctl64, 0, true}, Deny,
			"kernel-fault userfaultfd context (no UFFD_USER_MODE_ONLY) requested by a process no rule allows; audit-only rule qemu would allow it",
			"set audit_only: false on rule qemu to allow it, or pass UFFD_USER_MODE_ONLY if only user-mode faults are needed, or add a rule for this process (its executable, cgroup or user) to the policy's rules"},
		{"mode allow kernel fault observed", Gate{Mode: ModeAllow, Rules: def}, unpriv, Request{PathIoctl64, 0, true}, Allow,
			"kernel-fault context allowed by mode allow (observe only)",
			"set mode: user-mode-only to refuse such requests"},
		{"user-mode-only request", Gate{Mode: ModeUserModeOnly, Rules: def}, unpriv, Request{PathIoctl64, UserModeOnly, true}, Allow,
			"allowed by mode user-mode-only", ""},
		{"allowlisted kernel fault", Gate{Mode: ModeDeny, Rules: append(def, Rule{Name: "qemu", HasExe: true, Exes: []FileID{exeA}})}, unpriv, Request{PathIoctl64, 0, true}, Allow,
			"kernel-fault context allowed by rule qemu", ""},
		{"allowlisted UMO by two rules", Gate{Mode: ModeDeny, Rules: []Rule{CapabilityRule(ptraceBit), {Name: "qemu", HasExe: true, Exes: []FileID{exeA}}}}, Subject{CapEffective: ptraceBit, InitUserNS: true, HasExe: true, Exe: exeA}, Request{PathIoctl64, UserModeOnly, true}, Allow,
			"allowed by rule allowlist.capabilities, qemu", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := Decide(c.g, c.s, c.r)
			if res.Verdict != c.verdict || res.Reason != c.reason || res.Remedy != c.remedy {
				t.Errorf("Decide = %s\n reason %q\n remedy %q\nwant %s\n reason %q\n remedy %q", res.Verdict, res.Reason, res.Remedy, c.verdict, c.reason, c.remedy)
			}
		})
	}
	if res := Decide(Gate{Mode: ModeDeny}, unpriv, Request{PathForkEvent, 0, false}); res.Reason != "fork-event duplicate of an existing context" || res.Report {
		t.Errorf("fork event: %+v", res)
	}
}

func TestRuleMatches(t *testing.T) {
	s := Subject{CapEffective: ptraceBit, InitUserNS: true, HasExe: true, Exe: exeA,
		Cgroups: []uint64{cgVM, cgMachine, cgRoot}, EUID: 1000, EGID: 1000, Groups: []uint32{27, 1001}}
	for _, c := range []struct {
		name string
		r    Rule
		want bool
	}{
		{"no selector", Rule{}, true},
		{"exe", Rule{HasExe: true, Exes: []FileID{exeA}}, true},
		{"exe, one of several", Rule{HasExe: true, Exes: []FileID{exeB, exeA}}, true},
		{"other exe", Rule{HasExe: true, Exes: []FileID{exeB}}, false},
		{"exe on another device", Rule{HasExe: true, Exes: []FileID{{Dev: exeA.Dev + 1, Ino: exeA.Ino}}}, false},
		{"exe selector, unresolved", Rule{HasExe: true}, false},
		{"uid", Rule{HasUID: true, UIDs: []uint32{0, 1000}}, true},
		{"other uid", Rule{HasUID: true, UIDs: []uint32{0}}, false},
		{"gid: egid", Rule{HasGID: true, GIDs: []uint32{1000}}, true},
		{"gid: supplementary", Rule{HasGID: true, GIDs: []uint32{1001}}, true},
		{"other gid", Rule{HasGID: true, GIDs: []uint32{5}}, false},
		{"caps", Rule{Caps: ptraceBit | adminBit}, true},
		{"other caps", Rule{Caps: adminBit}, false},
		{"own cgroup exact", Rule{HasCgroup: true, Cgroups: []CgroupSel{{ID: cgVM}}}, true},
		{"ancestor exact", Rule{HasCgroup: true, Cgroups: []CgroupSel{{ID: cgMachine}}}, false},
		{"ancestor subtree", Rule{HasCgroup: true, Cgroups: []CgroupSel{{ID: cgMachine, Subtree: true}}}, true},
		{"root subtree", Rule{HasCgroup: true, Cgroups: []CgroupSel{{ID: cgRoot, Subtree: true}}}, true},
		{"other subtree", Rule{HasCgroup: true, Cgroups: []CgroupSel{{ID: cgUser, Subtree: true}}}, false},
		{"AND: all match", Rule{HasExe: true, Exes: []FileID{exeA}, HasUID: true, UIDs: []uint32{1000}, Caps: ptraceBit}, true},
		{"AND: one fails", Rule{HasExe: true, Exes: []FileID{exeA}, HasUID: true, UIDs: []uint32{1000}, Caps: adminBit}, false},
	} {
		if got := c.r.Matches(s); got != c.want {
			t.Errorf("%s: Matches = %v, want %v", c.name, got, c.want)
		}
	}
	ns := s
	ns.InitUserNS = false
	if (Rule{Caps: ptraceBit}).Matches(ns) {
		t.Error("a capability held outside the initial user namespace matched")
	}
	noExe := s
	noExe.HasExe = false
	noExe.Exe = FileID{}
	if (Rule{HasExe: true, Exes: []FileID{{}}}).Matches(noExe) {
		t.Error("a task without an executable matched the zero FileID")
	}
}

// At most MaxRules rules exist for the kernel (one bit each): a 65th never matches.
func TestMaxRules(t *testing.T) {
	var rules []Rule
	for i := 0; i < MaxRules; i++ {
		rules = append(rules, Rule{Name: fmt.Sprintf("r%d", i), HasUID: true, UIDs: []uint32{uint32(i) + 5000}})
	}
	rules = append(rules, Rule{Name: "everyone"})
	g := Gate{Mode: ModeUserModeOnly, Rules: rules}
	s := Subject{InitUserNS: true, EUID: 5063}
	if m := g.Match(s); m != 1<<63 {
		t.Errorf("Match = %#x, want only bit 63", m)
	}
	if res := Decide(g, Subject{InitUserNS: true, EUID: 1}, Request{PathIoctl64, 0, true}); res.Verdict != Deny || res.Matched != 0 {
		t.Errorf("rule 65 took effect: %+v", res)
	}
	if n := g.RuleNames(^uint64(0)); len(n) != MaxRules || n[63] != "r63" {
		t.Errorf("RuleNames(all) = %d names, last %q", len(n), n[len(n)-1])
	}
	if n := g.RuleNames(1<<0 | 1<<5); !slices.Equal(n, []string{"r0", "r5"}) {
		t.Errorf("RuleNames = %q", n)
	}
}

func TestKernelDev(t *testing.T) {
	for _, c := range []struct{ major, minor uint32 }{{0, 0}, {8, 1}, {259, 3}, {0, 46}, {253, 0xfffff}, {0xfff, 0xff}, {4, 0x100}} {
		d := unix.Mkdev(c.major, c.minor)
		if got, want := KernelDev(d), c.major<<20|c.minor; got != want {
			t.Errorf("KernelDev(Mkdev(%d, %#x) = %#x) = %#x, want %#x", c.major, c.minor, d, got, want)
		}
	}
	// A real file: what stat says, in the kernel's encoding.
	var st unix.Stat_t
	if err := unix.Stat(t.TempDir(), &st); err != nil {
		t.Fatal(err)
	}
	if got, want := KernelDev(st.Dev), unix.Major(st.Dev)<<20|unix.Minor(st.Dev); got != want {
		t.Errorf("KernelDev(%#x) = %#x, want %#x", st.Dev, got, want)
	}
}

func TestKernelFaultAndHasCap(t *testing.T) {
	for _, c := range []struct {
		r    Request
		want bool
	}{
		{Request{PathSyscall64, 0, true}, true},
		{Request{PathSyscall64, UserModeOnly, true}, false},
		{Request{PathSyscall64, ValidFlags, true}, false},
		{Request{PathSyscall64, CloseOnExec | NonBlock, true}, true},
		{Request{PathSyscall64, UserModeOnly, false}, true}, // unknown: fail closed
		{Request{PathIoctl64, 0xfffffffe, true}, true},
	} {
		if got := c.r.KernelFault(); got != c.want {
			t.Errorf("%+v.KernelFault() = %v, want %v", c.r, got, c.want)
		}
	}
	for _, c := range []struct {
		s    Subject
		cap  uint
		want bool
	}{
		{Subject{CapEffective: ptraceBit, InitUserNS: true}, capability.SysPtrace, true},
		{Subject{CapEffective: ptraceBit}, capability.SysPtrace, false},
		{Subject{CapEffective: allCaps &^ ptraceBit, InitUserNS: true}, capability.SysPtrace, false},
		{Subject{CapEffective: allCaps, InitUserNS: true}, capability.SysAdmin, true},
		{Subject{InitUserNS: true}, 0, false},
	} {
		if got := c.s.HasCap(c.cap); got != c.want {
			t.Errorf("%+v.HasCap(%d) = %v, want %v", c.s, c.cap, got, c.want)
		}
	}
}

func TestFlagNames(t *testing.T) {
	for _, c := range []struct {
		f    uint32
		want string
	}{
		{0, "0"},
		{UserModeOnly, "UFFD_USER_MODE_ONLY"},
		{NonBlock, "O_NONBLOCK"},
		{CloseOnExec, "O_CLOEXEC"},
		{0x80001, "UFFD_USER_MODE_ONLY|O_CLOEXEC"},
		{ValidFlags, "UFFD_USER_MODE_ONLY|O_NONBLOCK|O_CLOEXEC"},
		{0x2, "0x2"},
		{0x80003, "UFFD_USER_MODE_ONLY|O_CLOEXEC|0x2"},
		{0x80000000, "0x80000000"},
		{0xffffffff, "UFFD_USER_MODE_ONLY|O_NONBLOCK|O_CLOEXEC|0xfff7f7fe"},
	} {
		if got := FlagNames(c.f); got != c.want {
			t.Errorf("FlagNames(%#x) = %q, want %q", c.f, got, c.want)
		}
	}
	if ValidFlags != 0x80801 || UserModeOnly != 1 || NonBlock != unix.O_NONBLOCK || CloseOnExec != unix.O_CLOEXEC {
		t.Errorf("flag constants %#x %#x %#x %#x differ from the kernel's", ValidFlags, UserModeOnly, NonBlock, CloseOnExec)
	}
}

func TestStrings(t *testing.T) {
	for _, c := range []struct {
		got, want string
	}{
		{ModeAllow.String(), "allow"},
		{ModeUserModeOnly.String(), "user-mode-only"},
		{ModeDeny.String(), "deny"},
		{Mode(3).String(), "mode(3)"},
		{Mode(255).String(), "mode(255)"},
		{PathUnknown.String(), "unknown"},
		{PathSyscall64.String(), "syscall"},
		{PathSyscallIA32.String(), "syscall-ia32"},
		{PathSyscallX32.String(), "syscall-x32"},
		{PathIoctl64.String(), "ioctl"},
		{PathIoctlIA32.String(), "ioctl-ia32"},
		{PathIoctlX32.String(), "ioctl-x32"},
		{PathForkEvent.String(), "fork-event"},
		{NumPaths.String(), "path(8)"},
		{Path(255).String(), "path(255)"},
		{Allow.String(), "allow"},
		{Deny.String(), "deny"},
		{WouldDeny.String(), "would-deny"},
		{NumVerdicts.String(), "verdict(3)"},
		{Verdict(200).String(), "verdict(200)"},
		{GrantKernelFaults.String(), "kernel-faults"},
		{GrantUserModeOnly.String(), "user-mode-only"},
	} {
		if c.got != c.want {
			t.Errorf("String() = %q, want %q", c.got, c.want)
		}
	}
	if NumPaths != 8 || NumVerdicts != 3 {
		t.Errorf("NumPaths = %d, NumVerdicts = %d: the BPF program's P_NUM and V_NUM are 8 and 3", NumPaths, NumVerdicts)
	}
}

func TestPathKinds(t *testing.T) {
	dev := map[Path]bool{PathIoctl64: true, PathIoctlIA32: true, PathIoctlX32: true}
	sys := map[Path]bool{PathSyscall64: true, PathSyscallIA32: true, PathSyscallX32: true}
	for _, p := range allPaths {
		if p.IsDevice() != dev[p] || p.IsSyscall() != sys[p] {
			t.Errorf("%s: IsDevice %v IsSyscall %v, want %v %v", p, p.IsDevice(), p.IsSyscall(), dev[p], sys[p])
		}
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range Modes() {
		got, err := ParseMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", m.String(), got, err, m)
		}
	}
	if got := Modes(); !slices.Equal(got, []Mode{ModeAllow, ModeUserModeOnly, ModeDeny}) {
		t.Errorf("Modes() = %v", got)
	}
	for _, bad := range []string{"", "Allow", "DENY", "user_mode_only", "usermodeonly", " deny", "deny ", "mode(3)", "audit"} {
		m, err := ParseMode(bad)
		if err == nil {
			t.Errorf("ParseMode(%q) = %v, want an error", bad, m)
			continue
		}
		want := fmt.Sprintf("unknown mode %q: use one of allow, user-mode-only, deny", bad)
		if err.Error() != want {
			t.Errorf("ParseMode(%q) error %q, want %q", bad, err, want)
		}
	}
}

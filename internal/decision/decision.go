// Package decision is the reference model of uffdgate: what the gate decides for a
// userfaultfd context creation, and what the caller finally sees once the kernel's
// own checks are taken into account. The BPF program implements Decide; the VM tests
// use this package as the oracle for both.
package decision

import (
	"fmt"
	"slices"
	"strings"
	"syscall"

	"github.com/uffdgate/uffdgate/internal/capability"
)

// Creation flags the kernel knows (include/uapi/linux/userfaultfd.h, fcntl.h).
const (
	UserModeOnly uint32 = 0x1     // UFFD_USER_MODE_ONLY
	NonBlock     uint32 = 0x800   // O_NONBLOCK
	CloseOnExec  uint32 = 0x80000 // O_CLOEXEC
	ValidFlags          = UserModeOnly | NonBlock | CloseOnExec
)

// Mode is what the policy does with processes that are not allowlisted.
type Mode uint8

const (
	// ModeAllow lets every request through and only reports the dangerous ones.
	ModeAllow Mode = iota
	// ModeUserModeOnly refuses requests without UFFD_USER_MODE_ONLY.
	ModeUserModeOnly
	// ModeDeny refuses every request.
	ModeDeny
	NumModes
)

var modeNames = [...]string{"allow", "user-mode-only", "deny"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode accepts the policy spelling of a mode.
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if s == n {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("unknown mode %q: use one of %s", s, strings.Join(modeNames[:], ", "))
}

// Modes lists every mode, for tests and documentation.
func Modes() []Mode { return []Mode{ModeAllow, ModeUserModeOnly, ModeDeny} }

// Path is the way a context is being created: the syscall through one of the x86
// syscall ABIs, the /dev/userfaultfd ioctl through one of them, or the kernel's
// duplication of a context for a fork event.
type Path uint8

const (
	PathUnknown Path = iota
	PathSyscall64
	PathSyscallIA32
	PathSyscallX32
	PathIoctl64
	PathIoctlIA32
	PathIoctlX32
	PathForkEvent
	NumPaths
)

var pathNames = [...]string{"unknown", "syscall", "syscall-ia32", "syscall-x32", "ioctl", "ioctl-ia32", "ioctl-x32", "fork-event"}

func (p Path) String() string {
	if int(p) < len(pathNames) {
		return pathNames[p]
	}
	return fmt.Sprintf("path(%d)", uint8(p))
}

// IsDevice reports whether the path is the /dev/userfaultfd ioctl.
func (p Path) IsDevice() bool { return p == PathIoctl64 || p == PathIoctlIA32 || p == PathIoctlX32 }

// IsSyscall reports whether the path is the userfaultfd syscall.
func (p Path) IsSyscall() bool {
	return p == PathSyscall64 || p == PathSyscallIA32 || p == PathSyscallX32
}

// Verdict is what the gate does with one request.
type Verdict uint8

const (
	Allow Verdict = iota
	Deny
	// WouldDeny is a denial turned into an allow by the audit switch.
	WouldDeny
	NumVerdicts
)

var verdictNames = [...]string{"allow", "deny", "would-deny"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// MaxRules is how many rules a policy may have (one bit each in the kernel).
const MaxRules = 64

// The kernel side looks at the effective gid and the first MaxGroups
// supplementary groups (the kernel keeps them sorted), and at MaxCgroupDepth
// levels of cgroups from the task's own upwards; beyond them a selector does not
// match (fail closed).
const (
	MaxGroups      = 16
	MaxCgroupDepth = 32
)

// Grant is what a matching rule lets a process create.
type Grant uint8

const (
	// GrantKernelFaults allows any context, including kernel-fault ones.
	GrantKernelFaults Grant = iota
	// GrantUserModeOnly allows user-mode-only contexts; it matters in mode deny.
	GrantUserModeOnly
)

func (g Grant) String() string {
	if g == GrantUserModeOnly {
		return "user-mode-only"
	}
	return "kernel-faults"
}

// FileID identifies a file: the kernel's dev_t of its filesystem (major<<20 |
// minor), its inode number and the inode's generation. Hard links and symlinks
// lead to the same FileID; a copy does not; nor does a later file that is given
// the numbers of one that is gone (file systems reuse them, generations differ).
// Gen is known only from the kernel (gate.Identify); elsewhere it is 0.
type FileID struct {
	Dev uint32
	Ino uint64
	Gen uint32
}

// KernelDev converts a user-space dev_t (stat's st_dev) to the kernel's internal
// encoding, which the BPF side reads from super_block.s_dev.
func KernelDev(d uint64) uint32 {
	major := uint32((d>>8)&0xfff) | uint32((d>>32)&^0xfff)
	minor := uint32(d&0xff) | uint32((d>>12)&^0xff)
	return major<<20 | minor
}

// CgroupSel names a cgroup v2 by id, with or without its subtree.
type CgroupSel struct {
	ID      uint64
	Subtree bool
}

// Rule is a compiled allowlist rule: it matches when every selector present
// matches (AND); a selector matches when any of its values does (OR). A selector
// that is present with no values (a path that does not exist yet) matches nothing.
type Rule struct {
	Name                              string
	HasExe, HasCgroup, HasUID, HasGID bool
	Exes                              []FileID
	Cgroups                           []CgroupSel
	UIDs, GIDs                        []uint32
	Caps                              uint64 // selector present iff non-zero
	Grant                             Grant
	AuditOnly                         bool
}

// Gate is the part of a policy the decision needs.
type Gate struct {
	Mode  Mode
	Audit bool
	Rules []Rule
}

// CapabilityRule is the rule that allowlists holders of any capability in mask,
// as the policy's `allowlist.capabilities` does.
func CapabilityRule(mask uint64) Rule {
	return Rule{Name: "allowlist.capabilities", Caps: mask}
}

// Subject is the calling task as the gate sees it.
type Subject struct {
	// CapEffective is the task's effective capability set.
	CapEffective uint64
	// InitUserNS is true when the task's credentials belong to the initial user
	// namespace; capabilities held in any other namespace do not count.
	InitUserNS bool
	Exe        FileID
	HasExe     bool
	// Cgroups is the task's cgroup v2 id followed by its ancestors' up to the root.
	Cgroups []uint64
	EUID    uint32
	EGID    uint32
	Groups  []uint32
}

// HasCap reports whether the subject holds capability c in the initial user
// namespace: the kernel's capable(c).
func (s Subject) HasCap(c uint) bool { return s.InitUserNS && s.CapEffective&(1<<c) != 0 }

// Matches reports whether rule r matches subject s.
func (r Rule) Matches(s Subject) bool {
	if r.HasExe && !(s.HasExe && slices.Contains(r.Exes, s.Exe)) {
		return false
	}
	if r.HasUID && !slices.Contains(r.UIDs, s.EUID) {
		return false
	}
	groups := s.Groups[:min(len(s.Groups), MaxGroups)]
	if r.HasGID && !slices.ContainsFunc(r.GIDs, func(g uint32) bool { return g == s.EGID || slices.Contains(groups, g) }) {
		return false
	}
	if r.Caps != 0 && !(s.InitUserNS && s.CapEffective&r.Caps != 0) {
		return false
	}
	if r.HasCgroup && !slices.ContainsFunc(r.Cgroups, func(c CgroupSel) bool {
		for i, id := range s.Cgroups[:min(len(s.Cgroups), MaxCgroupDepth)] {
			if id == c.ID && (i == 0 || c.Subtree) {
				return true
			}
		}
		return false
	}) {
		return false
	}
	return true
}

// Match returns the bit mask of the rules that match s (bit i for Rules[i]).
func (g Gate) Match(s Subject) uint64 {
	var m uint64
	for i, r := range g.Rules {
		if i < MaxRules && r.Matches(s) {
			m |= 1 << uint(i)
		}
	}
	return m
}

// Request is one context creation.
type Request struct {
	Path Path
	// Flags are the creation flags the kernel will use; meaningful only if FlagsKnown.
	Flags      uint32
	FlagsKnown bool
}

// KernelFault reports whether the request may produce a context that handles
// kernel-mode faults. Unknown flags count as such: the gate fails closed.
func (r Request) KernelFault() bool { return !r.FlagsKnown || r.Flags&UserModeOnly == 0 }

// Result is the gate's decision with its explanation.
type Result struct {
	Verdict     Verdict
	Allowlisted bool
	// Matched is the mask of matching rules, audit-only ones included.
	Matched uint64
	// Report is true when the request deserves an event: a denial, a would-be
	// denial, or any kernel-fault request.
	Report bool
	Reason string
	Remedy string
}

// Decide is the gate's decision. Fork-event duplicates copy the flags of a context
// that passed the gate when it was created, and give its holder nothing it did not
// already have, so they are always allowed.
func Decide(g Gate, s Subject, r Request) Result {
	if r.Path == PathForkEvent {
		return Result{Verdict: Allow, Reason: "fork-event duplicate of an existing context"}
	}
	return DecideMatched(g, g.Match(s), r)
}

// DecideMatched decides given the mask of matching rules, as the kernel does once it
// has matched them; the event enricher uses it with the kernel's mask.
func DecideMatched(g Gate, matched uint64, r Request) Result {
	res := decideMatched(g, matched, r)
	res.Reason, res.Remedy = explain(g, r, res)
	return res
}

// decideMatched is DecideMatched without the explanation.
func decideMatched(g Gate, matched uint64, r Request) Result {
	res := Result{Matched: matched}
	var enforced, grantKernel, grantAny uint64
	for i, rule := range g.Rules {
		bit := uint64(1) << uint(i)
		if matched&bit == 0 || rule.AuditOnly {
			continue
		}
		enforced |= bit
		grantAny |= bit
		if rule.Grant == GrantKernelFaults {
			grantKernel |= bit
		}
	}
	kf := r.KernelFault()
	res.Allowlisted = grantKernel != 0
	var deny bool
	if !res.Allowlisted {
		switch g.Mode {
		case ModeAllow:
		case ModeUserModeOnly:
			deny = kf
		default: // ModeDeny, and any unknown mode: fail closed
			deny = kf || grantAny == 0
		}
	}
	switch {
	case !deny:
	case g.Audit:
		res.Verdict = WouldDeny
	default:
		res.Verdict = Deny
	}
	res.Report = res.Verdict != Allow || kf
	return res
}

// RuleNames lists the names of the rules in mask.
func (g Gate) RuleNames(mask uint64) []string {
	var out []string
	for i, r := range g.Rules {
		if mask&(1<<uint(i)) != 0 {
			out = append(out, r.Name)
		}
	}
	return out
}

func explain(g Gate, r Request, res Result) (reason, remedy string) {
	var auditOnly uint64
	for i, rule := range g.Rules {
		if rule.AuditOnly {
			auditOnly |= 1 << uint(i)
		}
	}
	// Trial rules worth naming are those that, enforced, would allow this request.
	var wouldAllow uint64
	for i := range g.Rules {
		bit := uint64(1) << uint(i)
		if res.Matched&auditOnly&bit == 0 {
			continue
		}
		g2 := g
		g2.Rules = slices.Clone(g.Rules)
		g2.Rules[i].AuditOnly = false
		if decideMatched(g2, res.Matched, r).Verdict == Allow {
			wouldAllow |= bit
		}
	}
	trial := g.RuleNames(wouldAllow)
	byRule := g.RuleNames(res.Matched &^ auditOnly)
	allow := "add a rule for this process (its executable, cgroup or user) to the policy's rules"
	if len(g.Rules) > 0 && g.Rules[0].Name == "allowlist.capabilities" && len(g.Rules) == 1 {
		allow = "grant it one of " + strings.Join(capability.Names(g.Rules[0].Caps), ", ") + " in the initial user namespace, or add a rule for it (executable, cgroup, user)"
	}
	if res.Verdict == Allow {
		switch {
		case res.Allowlisted && r.KernelFault():
			return "kernel-fault context allowed by rule " + strings.Join(byRule, ", "), ""
		case res.Allowlisted:
			return "allowed by rule " + strings.Join(byRule, ", "), ""
		case r.KernelFault():
			return "kernel-fault context allowed by mode allow (observe only)", "set mode: user-mode-only to refuse such requests"
		}
		return "allowed by mode " + g.Mode.String(), ""
	}
	switch {
	case g.Mode == ModeDeny && !r.KernelFault():
		reason = "mode deny refuses userfaultfd contexts to processes no rule grants them to"
		remedy = "add a rule with `grant: user-mode-only` (or kernel-faults) for this process"
	case g.Mode != ModeUserModeOnly:
		reason = "mode " + g.Mode.String() + " refuses every userfaultfd context to processes no rule allows"
		remedy = allow + ", or set mode: user-mode-only to let user-mode-only contexts through"
	case !r.FlagsKnown:
		reason = "the creation flags could not be determined, so the request counts as a kernel-fault request (fail closed), and no rule allows this process kernel-fault contexts"
		remedy = "create the context through the userfaultfd syscall or USERFAULTFD_IOC_NEW with UFFD_USER_MODE_ONLY, or " + allow
	default:
		reason = "kernel-fault userfaultfd context (no UFFD_USER_MODE_ONLY) requested by a process no rule allows"
		remedy = "pass UFFD_USER_MODE_ONLY if only user-mode faults are needed, or " + allow
	}
	if len(trial) > 0 {
		reason += "; audit-only rule " + strings.Join(trial, ", ") + " would allow it"
		remedy = "set audit_only: false on rule " + strings.Join(trial, ", ") + " to allow it, or " + remedy
	}
	return reason, remedy
}

// Kernel is the state of the kernel's own checks, which run before the gate.
type Kernel struct {
	// UnprivilegedUserfaultfd is vm.unprivileged_userfaultfd.
	UnprivilegedUserfaultfd bool
}

// Outcome is what the caller of one request finally sees: the errno (0 for a new
// context) and which layer decided.
type Outcome struct {
	Errno syscall.Errno
	Layer string // "kernel" or "uffdgate"; "" when the context was created
	Gate  Result // the gate's decision; meaningful only if GateSaw
	// GateSaw is false when the kernel refused before the gate's hook ran.
	GateSaw bool
}

// Expect predicts the outcome of a request with the gate g running: first the
// kernel's checks in the kernel's order, then the gate.
func Expect(k Kernel, g Gate, s Subject, r Request) Outcome {
	if r.Path.IsSyscall() && r.Flags&UserModeOnly == 0 &&
		!s.HasCap(capability.SysPtrace) && !k.UnprivilegedUserfaultfd {
		return Outcome{Errno: syscall.EPERM, Layer: "kernel"}
	}
	if r.Flags&^ValidFlags != 0 {
		return Outcome{Errno: syscall.EINVAL, Layer: "kernel"}
	}
	res := Decide(g, s, r)
	o := Outcome{Gate: res, GateSaw: true}
	if res.Verdict == Deny {
		o.Errno, o.Layer = syscall.EPERM, "uffdgate"
	}
	return o
}

// FlagNames decodes creation flags for people.
func FlagNames(f uint32) string {
	var parts []string
	for _, n := range []struct {
		bit  uint32
		name string
	}{{UserModeOnly, "UFFD_USER_MODE_ONLY"}, {NonBlock, "O_NONBLOCK"}, {CloseOnExec, "O_CLOEXEC"}} {
		if f&n.bit != 0 {
			parts = append(parts, n.name)
			f &^= n.bit
		}
	}
	if f != 0 {
		parts = append(parts, fmt.Sprintf("0x%x", f))
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, "|")
}

// Package decision is the reference model of uffdgate: what the gate decides for a
// userfaultfd context creation, and what the caller finally sees once the kernel's
// own checks are taken into account. The BPF program implements Decide; the VM tests
// use this package as the oracle for both.
package decision

import (
	"fmt"
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

// Gate is the part of a policy the decision needs.
type Gate struct {
	Mode  Mode
	Audit bool
	// AllowCaps is a bit mask of capabilities; holding any of them effective in the
	// initial user namespace puts a process on the allowlist.
	AllowCaps uint64
}

// Subject is the calling task as the gate sees it.
type Subject struct {
	// CapEffective is the task's effective capability set.
	CapEffective uint64
	// InitUserNS is true when the task's credentials belong to the initial user
	// namespace; capabilities held in any other namespace do not count.
	InitUserNS bool
}

// HasCap reports whether the subject holds capability c in the initial user
// namespace: the kernel's capable(c).
func (s Subject) HasCap(c uint) bool { return s.InitUserNS && s.CapEffective&(1<<c) != 0 }

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
	// Report is true when the request deserves an event: a denial, a would-be
	// denial, or a kernel-fault request from a process that is not allowlisted.
	Report bool
	Reason string
	Remedy string
}

// Allowlisted reports whether the subject is on the policy's allowlist.
func (g Gate) Allowlisted(s Subject) bool {
	return s.InitUserNS && s.CapEffective&g.AllowCaps != 0
}

// Decide is the gate's decision. Fork-event duplicates copy the flags of a context
// that passed the gate when it was created, and give its holder nothing it did not
// already have, so they are always allowed.
func Decide(g Gate, s Subject, r Request) Result {
	if r.Path == PathForkEvent {
		return Result{Verdict: Allow, Reason: "fork-event duplicate of an existing context"}
	}
	res := Result{Allowlisted: g.Allowlisted(s)}
	if res.Allowlisted {
		res.Reason = "process is allowlisted"
		return res
	}
	kf := r.KernelFault()
	var deny bool
	switch g.Mode {
	case ModeAllow:
		deny = false
	case ModeUserModeOnly:
		deny = kf
	default: // ModeDeny, and any unknown mode: fail closed
		deny = true
	}
	res.Report = deny || kf
	switch {
	case !deny:
		res.Reason = "allowed by mode " + g.Mode.String()
		if kf {
			res.Reason = "kernel-fault context allowed by mode allow (observe only)"
			res.Remedy = "set mode: user-mode-only to refuse such requests"
		}
		return res
	case g.Audit:
		res.Verdict = WouldDeny
	default:
		res.Verdict = Deny
	}
	res.Reason, res.Remedy = denialText(g, r)
	return res
}

func denialText(g Gate, r Request) (reason, remedy string) {
	allow := "allowlist the process (the policy's allowlist is empty)"
	if g.AllowCaps != 0 {
		allow = "allowlist the process (grant it one of " + strings.Join(capability.Names(g.AllowCaps), ", ") + " in the initial user namespace)"
	}
	switch {
	case g.Mode != ModeUserModeOnly:
		return "mode " + g.Mode.String() + " refuses every userfaultfd context to processes that are not allowlisted",
			allow + ", or set mode: user-mode-only to let user-mode-only contexts through"
	case !r.FlagsKnown:
		return "the creation flags could not be determined, so the request counts as a kernel-fault request (fail closed) and the process is not allowlisted",
			"create the context through the userfaultfd syscall or USERFAULTFD_IOC_NEW with UFFD_USER_MODE_ONLY, or " + allow
	default:
		return "kernel-fault userfaultfd context (no UFFD_USER_MODE_ONLY) requested by a process that is not allowlisted",
			"pass UFFD_USER_MODE_ONLY if only user-mode faults are needed, or " + allow
	}
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

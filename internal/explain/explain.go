// Package explain is `uffdgate explain`: for one process, real or hypothetical,
// and each kind of userfaultfd request, the outcome and the layer that decides
// it, with every layer in the order the request meets it: seccomp, the sysctl,
// the capability check, the device node's permissions, the LSMs, and uffdgate.
// It never blames uffdgate for a request it does not see: when the kernel
// refuses first, or when uffdgate is not running.
package explain

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/hostinfo"
)

// Layer verdicts.
const (
	Allows       = "allows"        // this layer lets the request through and decides it
	Passes       = "passes"        // this layer does not object; a later one decides
	Refuses      = "refuses"       // this layer refuses: the outcome is its
	MayRefuse    = "may-refuse"    // this layer can refuse but what it does cannot be read
	NotConsulted = "not-consulted" // an earlier check already decided
	NotApplied   = "n/a"           // this layer plays no part on this path
	NotRunning   = "not-running"   // uffdgate is not running
	Unknown      = "unknown"
)

// Layer is one check on a request's way.
type Layer struct {
	Name    string `json:"layer"` // seccomp, sysctl, capability, device, lsm, uffdgate
	Verdict string `json:"verdict"`
	Detail  string `json:"detail"`
}

// Row is one kind of request.
type Row struct {
	Path         string `json:"path"` // "syscall" or "ioctl" (/dev/userfaultfd)
	UserModeOnly bool   `json:"user_mode_only"`
	Flags        string `json:"flags"`
	// Outcome: "allowed" (a context is created), "EPERM", "EACCES", "ENOENT",
	// or "killed" (seccomp strict mode).
	Outcome   string   `json:"outcome"`
	DecidedBy string   `json:"decided_by"` // seccomp, kernel, device, uffdgate
	Why       string   `json:"why"`
	Caveats   []string `json:"caveats,omitempty"`
	Layers    []Layer  `json:"layers"`
}

// Kernel is the host state every row shares.
type Kernel struct {
	Sysctl      string   `json:"unprivileged_userfaultfd"` // "0", "1" or "" (unreadable)
	SysctlError string   `json:"unprivileged_userfaultfd_error,omitempty"`
	LSMs        []string `json:"lsms"`
	LSMError    string   `json:"lsm_error,omitempty"`
	Device      string   `json:"device"` // "crw------- 0:0" or "absent"
	Gate        string   `json:"uffdgate"`
	GateRunning bool     `json:"uffdgate_running"`
}

// Report is explain's answer.
type Report struct {
	Identity Identity `json:"identity"`
	Kernel   Kernel   `json:"host"`
	Rows     []Row    `json:"requests"`
}

// Explain explains every kind of request for id on host h, with gate the
// uffdgate state (only a running daemon's policy is evaluated).
func Explain(h hostinfo.Host, id Identity, gate hostinfo.Gate) *Report {
	r := &Report{Identity: id}
	k := &r.Kernel
	if v, err := h.Sysctl(hostinfo.UffdSysctl); err != nil {
		k.SysctlError = err.Error()
	} else {
		k.Sysctl = v
	}
	lsms, err := h.LSMs()
	if err != nil {
		k.LSMError = err.Error()
	}
	k.LSMs = lsms
	switch {
	case id.nodeErr != nil:
		k.Device = "unreadable: " + id.nodeErr.Error()
	case !id.node.Present:
		k.Device = "absent"
	default:
		k.Device = fmt.Sprintf("%s %d:%d", id.node.ModeString(), id.node.UID, id.node.GID)
		if id.node.ACL != nil {
			k.Device += " ACL " + id.node.ACL.String()
		}
	}
	k.GateRunning = gate.Enforced()
	k.Gate = gate.Describe()
	for _, p := range []decision.Path{decision.PathSyscall64, decision.PathIoctl64} {
		for _, umo := range []bool{false, true} {
			r.Rows = append(r.Rows, r.row(id, gate, p, umo))
		}
	}
	return r
}

func (r *Report) row(id Identity, gate hostinfo.Gate, p decision.Path, umo bool) Row {
	flags := decision.CloseOnExec
	if umo {
		flags |= decision.UserModeOnly
	}
	req := decision.Request{Path: p, Flags: flags, FlagsKnown: true}
	row := Row{Path: "syscall", UserModeOnly: umo, Flags: decision.FlagNames(flags)}
	if p.IsDevice() {
		row.Path = "ioctl"
	}
	s := id.subject
	sysctlOn := r.Kernel.Sysctl == "1"
	ptraceHeld := s.HasCap(capability.SysPtrace)
	k := decision.Kernel{UnprivilegedUserfaultfd: sysctlOn}
	var decided bool // an earlier layer fixed the outcome
	decide := func(outcome, by, why string) {
		if !decided {
			row.Outcome, row.DecidedBy, row.Why, decided = outcome, by, why, true
		}
	}
	// Once a layer has refused, later ones are never reached.
	add := func(name, verdict, detail string) {
		if decided && verdict != NotApplied && verdict != NotRunning && verdict != NotConsulted {
			verdict, detail = NotConsulted, "an earlier layer refused; "+detail
		}
		row.Layers = append(row.Layers, Layer{name, verdict, detail})
	}

	// 1. seccomp runs at syscall entry, before anything else.
	switch id.Seccomp {
	case "none":
		add("seccomp", Passes, "no seccomp filter")
	case "strict":
		add("seccomp", Refuses, "strict mode allows only read, write, _exit and sigreturn")
		decide("killed", "seccomp", "seccomp strict mode kills the process (SIGKILL) at this syscall")
	case "filter":
		add("seccomp", MayRefuse, fmt.Sprintf("%d seccomp filter(s) attached: a filter exists and may refuse (container runtimes' default profiles refuse userfaultfd; `uffdgate exec` refuses kernel-fault requests); its program cannot be read from here", id.SeccompFilters))
		row.Caveats = append(row.Caveats, "the process's seccomp filter may refuse this request first (typically EPERM)")
	default:
		add("seccomp", Unknown, "unknown for a hypothetical process: a seccomp filter, if it has one, may refuse first")
		row.Caveats = append(row.Caveats, "a seccomp filter, if the process has one, may refuse this request first")
	}

	// 2-4. The kernel's own checks.
	sysctlText := "vm.unprivileged_userfaultfd = " + r.Kernel.Sysctl
	if r.Kernel.Sysctl == "" {
		sysctlText = "vm.unprivileged_userfaultfd is unreadable (" + r.Kernel.SysctlError + "), taken as 0"
	}
	if p.IsSyscall() {
		switch {
		case umo:
			add("sysctl", NotConsulted, "UFFD_USER_MODE_ONLY is allowed before the sysctl and the capability are checked")
			add("capability", NotConsulted, "UFFD_USER_MODE_ONLY needs no capability")
		case ptraceHeld:
			add("sysctl", NotConsulted, sysctlText+"; not consulted, the capability check comes first and allows")
			add("capability", Allows, "CAP_SYS_PTRACE is effective in the initial user namespace")
		case sysctlOn:
			add("sysctl", Allows, sysctlText+": every process may create kernel-fault contexts")
			add("capability", Passes, capMissing(id)+"; the sysctl allows it anyway")
		default:
			add("sysctl", Refuses, sysctlText+": kernel-fault contexts need CAP_SYS_PTRACE")
			add("capability", Refuses, capMissing(id))
		}
		add("device", NotApplied, "the syscall does not use /dev/userfaultfd")
	} else {
		add("sysctl", NotApplied, "the device path has no sysctl check")
		add("capability", NotApplied, "the device path has no capability check")
		switch {
		case id.nodeErr != nil:
			add("device", Unknown, id.nodeErr.Error())
			row.Caveats = append(row.Caveats, "/dev/userfaultfd could not be inspected")
		case !id.node.Present:
			add("device", Refuses, "/dev/userfaultfd does not exist here (a kernel before 6.1, or no node in its mount namespace)")
			decide("ENOENT", "device", "open(/dev/userfaultfd) fails: there is no node")
		default:
			ok, why := id.node.Opens(id.cred)
			if ok {
				add("device", Passes, fmt.Sprintf("opens %s (%s): %s", id.node.Path(), id.node.ModeString(), why))
			} else {
				add("device", Refuses, fmt.Sprintf("cannot open %s (%s): %s", id.node.Path(), id.node.ModeString(), why))
				decide("EACCES", "device", "open(/dev/userfaultfd) is refused by the node's mode and ACL: "+why)
			}
		}
	}
	kernelOnly := decision.Expect(k, hostinfo.KernelOnly, s, req)
	if kernelOnly.Errno != 0 {
		decide(errnoName(kernelOnly.Errno), "kernel", "no CAP_SYS_PTRACE in the initial user namespace and "+sysctlText)
	}

	// 5. The LSM stack (the anon inode hook, and for the device the open and
	// ioctl hooks).
	v, d := lsmLayer(r.Kernel, p)
	if v == MayRefuse && !decided {
		row.Caveats = append(row.Caveats, d)
	}
	add("lsm", v, d)

	// 6. uffdgate, last, only if it runs and only if it sees the request.
	switch {
	case !gate.Enforced():
		add("uffdgate", NotRunning, "uffdgate is not running: it decides nothing")
	case decided:
		add("uffdgate", NotConsulted, "the request is refused before it reaches uffdgate's hook: uffdgate never sees it")
	default:
		res := decision.Decide(gate.Model(), s, req)
		switch res.Verdict {
		case decision.Deny:
			add("uffdgate", Refuses, res.Reason)
			decide("EPERM", "uffdgate", res.Reason+" (remedy: "+res.Remedy+")")
		case decision.WouldDeny:
			add("uffdgate", Passes, auditWhy(gate)+": would refuse ("+res.Reason+"), reports instead")
		default:
			add("uffdgate", Allows, res.Reason)
		}
	}
	if !decided {
		row.Outcome, row.DecidedBy, row.Why = "allowed", "kernel", allowedWhy(id, p, umo, ptraceHeld, sysctlOn)
		if gate.Enforced() {
			if res := decision.Decide(gate.Model(), s, req); res.Verdict == decision.WouldDeny {
				row.Why += "; uffdgate would refuse it but only reports (" + auditWhy(gate) + "): " + res.Reason
			} else {
				row.Why += "; uffdgate allows it: " + res.Reason
			}
		}
	}
	return row
}

func capMissing(id Identity) string {
	if id.SysPtrace && !id.InitUserNS {
		return "CAP_SYS_PTRACE is held only in a child user namespace; the kernel checks the initial one"
	}
	return "no CAP_SYS_PTRACE in the initial user namespace"
}

func allowedWhy(id Identity, p decision.Path, umo, ptrace, sysctlOn bool) string {
	switch {
	case umo && p.IsDevice():
		return "the node opens, and a user-mode-only context needs nothing more"
	case umo:
		return "UFFD_USER_MODE_ONLY needs no privilege"
	case p.IsDevice():
		return "the node opens, and the device path has no capability or sysctl check: a kernel-fault context"
	case ptrace:
		return "CAP_SYS_PTRACE in the initial user namespace: a kernel-fault context"
	case sysctlOn:
		return "vm.unprivileged_userfaultfd = 1: a kernel-fault context for anyone"
	}
	return ""
}

// lsmLayer says what the active LSMs may do.
func lsmLayer(k Kernel, p decision.Path) (verdict, detail string) {
	if k.LSMError != "" {
		return Unknown, "the active LSM list is unreadable (" + k.LSMError + "): SELinux or AppArmor, if active, may refuse"
	}
	var may []string
	if slices.Contains(k.LSMs, "selinux") {
		may = append(may, "SELinux may refuse creating the [userfaultfd] anonymous inode (class anon_inode) under its policy")
	}
	if slices.Contains(k.LSMs, "apparmor") {
		may = append(may, "AppArmor may refuse it under the process's profile")
	}
	if p.IsDevice() && slices.Contains(k.LSMs, "landlock") {
		may = append(may, "Landlock may refuse opening the node or its ioctl if the process is sandboxed with it (ABI 5+ restricts device ioctls)")
	}
	stack := strings.Join(k.LSMs, ",")
	if len(may) == 0 {
		return Passes, "active LSMs " + stack + ": none of them checks userfaultfd contexts (uffdgate's BPF hook is the next layer)"
	}
	return MayRefuse, strings.Join(may, "; ") + " (active LSMs " + stack + ")"
}

func errnoName(e syscall.Errno) string {
	switch e {
	case 0:
		return "allowed"
	case syscall.EPERM:
		return "EPERM"
	case syscall.EINVAL:
		return "EINVAL"
	case syscall.EACCES:
		return "EACCES"
	}
	return fmt.Sprintf("errno %d", int(e))
}

// WriteJSON writes the report for machines.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the table for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	id := r.Identity
	if id.Hypothetical {
		p("Hypothetical process")
	} else {
		p("Process %d (%s)", id.PID, id.Comm)
	}
	if id.Exe != "" {
		p(" %s", id.Exe)
	}
	p("\n  uid %d (fsuid %d), gid %d (fsgid %d), groups %v\n", id.UID, id.FSUID, id.GID, id.FSGID, id.Groups)
	ns := "the initial user namespace"
	if !id.InitUserNS {
		ns = "a child user namespace"
		if id.UserNS != "" {
			ns += " (" + id.UserNS + ")"
		}
	}
	p("  capabilities %s in %s; CAP_SYS_PTRACE %s\n", capsText(id.CapEff), ns, yesNo(id.SysPtrace, "held", "not held"))
	p("  seccomp %s", id.Seccomp)
	if id.Seccomp == "filter" {
		p(" (%d filters)", id.SeccompFilters)
	}
	if id.Cgroup != "" {
		p(", cgroup %s", id.Cgroup)
	}
	p("\n")
	for _, n := range id.Notes {
		p("  note: %s\n", n)
	}
	k := r.Kernel
	sysctl := k.Sysctl
	if sysctl == "" {
		sysctl = "unreadable"
	}
	p("Host: vm.unprivileged_userfaultfd = %s; /dev/userfaultfd %s; LSMs %s\n", sysctl, k.Device, strings.Join(k.LSMs, ","))
	p("%s\n\n", k.Gate)
	p("%-9s %-16s %-9s %-10s %s\n", "PATH", "REQUEST", "OUTCOME", "DECIDED BY", "WHY")
	for _, row := range r.Rows {
		p("%-9s %-16s %-9s %-10s %s\n", row.Path, kind(row.UserModeOnly), row.Outcome, row.DecidedBy, row.Why)
	}
	for _, row := range r.Rows {
		p("\n%s, %s (%s): %s\n", row.Path, kind(row.UserModeOnly), row.Flags, row.Outcome)
		for i, l := range row.Layers {
			p("  %d %-10s %-13s %s\n", i+1, l.Name, l.Verdict, l.Detail)
		}
		for _, c := range row.Caveats {
			p("  caveat: %s\n", c)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func kind(umo bool) string { return yesNo(umo, "user-mode-only", "kernel-fault") }

func yesNo(b bool, y, n string) string {
	if b {
		return y
	}
	return n
}

// capsText lists a few capabilities by name, or counts many.
func capsText(hex string) string {
	var m uint64
	fmt.Sscanf(hex, "%x", &m)
	names := capability.Names(m)
	switch {
	case len(names) == 0:
		return "none"
	case len(names) <= 6:
		return strings.Join(names, ",")
	}
	return fmt.Sprintf("%d capabilities (0x%s)", len(names), strings.TrimLeft(hex, "0"))
}

// auditWhy names why uffdgate reports instead of refusing.
func auditWhy(g hostinfo.Gate) string {
	if g.Backend == "audit" {
		return "audit backend"
	}
	return "audit mode"
}

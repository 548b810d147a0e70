package hostaudit

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/uffdgate/uffdgate/internal/hostinfo"
)

// Severity ranks findings.
type Severity int

const (
	Info Severity = iota
	Warning
	Critical
)

var severityNames = [...]string{"info", "warning", "critical"}

func (s Severity) String() string { return severityNames[s] }

// MarshalText writes the name, so JSON carries "info", "warning", "critical".
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText accepts the names.
func (s *Severity) UnmarshalText(b []byte) error {
	i := slices.Index(severityNames[:], string(b))
	if i < 0 {
		return fmt.Errorf("unknown severity %q", b)
	}
	*s = Severity(i)
	return nil
}

// Finding is one thing the audit reports.
type Finding struct {
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	Title    string   `json:"title"`
	Detail   string   `json:"detail,omitempty"`
	Remedy   string   `json:"remedy,omitempty"`
	PIDs     []int    `json:"pids,omitempty"`
}

// KernelInfo is what the kernel offers.
type KernelInfo struct {
	Release string `json:"release"`
	// Userfaultfd: "present", "absent" (ENOSYS: not compiled in) or "unknown".
	Userfaultfd       string   `json:"userfaultfd"`
	UserfaultfdDetail string   `json:"userfaultfd_detail"`
	BTF               bool     `json:"btf"`
	BPFLSMBuilt       *bool    `json:"bpf_lsm_built"` // null: could not be established
	LSMs              []string `json:"lsms"`
	BPFLSMActive      bool     `json:"bpf_lsm_active"`
	// LSMBootParam is the lsm= parameter to add when BPF LSM is built but not
	// active; CurrentLSMParam the one on the command line now, if any.
	LSMBootParam    string `json:"lsm_boot_param,omitempty"`
	CurrentLSMParam string `json:"current_lsm_param,omitempty"`
}

// GateInfo is uffdgate's state as the audit used it.
type GateInfo struct {
	Running      bool     `json:"running"`
	PID          int      `json:"pid,omitempty"`
	State        string   `json:"state,omitempty"`
	Evaluated    bool     `json:"evaluated"` // a policy was evaluated (running or --policy)
	Hypothetical bool     `json:"hypothetical"`
	PolicySource string   `json:"policy_source,omitempty"`
	Mode         string   `json:"mode,omitempty"`
	Audit        bool     `json:"audit,omitempty"`
	Unresolved   []string `json:"unresolved,omitempty"`
	Description  string   `json:"description"`
}

// SysctlInfo is vm.unprivileged_userfaultfd now and at boot.
type SysctlInfo struct {
	Name string `json:"name"`
	// Value is the current value from /proc/sys ("" when unreadable: ValueError).
	Value       string                      `json:"value"`
	ValueError  string                      `json:"value_error,omitempty"`
	Assignments []hostinfo.SysctlAssignment `json:"assignments"`
	Files       []string                    `json:"files_applied"`
	BootValue   string                      `json:"boot_value,omitempty"`
	BootSource  string                      `json:"boot_source,omitempty"`
	Unreadable  []string                    `json:"unreadable,omitempty"`
	winner      *hostinfo.SysctlAssignment
}

// ACLEntry is one entry of the node's ACL for JSON.
type ACLEntry struct {
	Tag       string `json:"tag"` // user, group, mask, other
	ID        *int64 `json:"id,omitempty"`
	Name      string `json:"name,omitempty"`
	Perm      string `json:"perm"`
	Effective string `json:"effective"` // after the mask
}

// DeviceInfo is /dev/userfaultfd.
type DeviceInfo struct {
	Path          string           `json:"path"`
	Present       bool             `json:"present"`
	CharDev       bool             `json:"char_device,omitempty"`
	Rdev          string           `json:"rdev,omitempty"` // "10:257"
	IsUserfaultfd *bool            `json:"is_userfaultfd,omitempty"`
	OwnerUID      uint32           `json:"owner_uid"`
	Owner         string           `json:"owner,omitempty"`
	GroupGID      uint32           `json:"group_gid"`
	Group         string           `json:"group,omitempty"`
	Mode          string           `json:"mode,omitempty"` // "0600"
	ModeString    string           `json:"mode_string,omitempty"`
	ACL           string           `json:"acl,omitempty"` // getfacl short form
	ACLEntries    []ACLEntry       `json:"acl_entries,omitempty"`
	Grants        []hostinfo.Grant `json:"grants"`
	UdevRules     []string         `json:"udev_rules,omitempty"`
	Error         string           `json:"error,omitempty"`
}

// Proc is a process in the audit's lists.
type Proc struct {
	PID    int    `json:"pid"`
	Comm   string `json:"comm"`
	Exe    string `json:"exe"`
	UID    int    `json:"uid"`
	User   string `json:"user,omitempty"`
	Cgroup string `json:"cgroup"`
}

// Holder holds userfaultfd contexts now.
type Holder struct {
	Proc
	FDs []int `json:"fds"`
}

// Capable can create kernel-fault contexts under the kernel's rules.
type Capable struct {
	Proc
	// Via lists the ways: "syscall: ...", "device: ...".
	Via []string `json:"via"`
	// SysPtrace: it holds CAP_SYS_PTRACE in the initial user namespace, the
	// kernel's own rule for kernel-fault contexts.
	SysPtrace bool `json:"cap_sys_ptrace"`
	// UnderPolicy: whether the evaluated policy lets it (null: no policy).
	UnderPolicy *bool  `json:"under_policy"`
	PolicyWhy   string `json:"policy_why,omitempty"`
	// Caveat: what may still refuse it that /proc cannot tell (a seccomp filter).
	Caveat string `json:"caveat,omitempty"`
}

// Summary counts findings by severity.
type Summary struct {
	Info     int `json:"info"`
	Warning  int `json:"warning"`
	Critical int `json:"critical"`
}

// Report is the audit's result.
type Report struct {
	Kernel    KernelInfo `json:"kernel"`
	Gate      GateInfo   `json:"gate"`
	Sysctl    SysctlInfo `json:"sysctl"`
	Device    DeviceInfo `json:"device"`
	Holders   []Holder   `json:"uffd_holders"`
	Capable   []Capable  `json:"kernel_fault_capable"`
	Scanned   int        `json:"processes_scanned"`
	Findings  []Finding  `json:"findings"`
	Summary   Summary    `json:"summary"`
	ExitCode  int        `json:"exit_status"`
	selfPID   int
	hasPolicy bool
}

func (r *Report) add(f Finding) { r.Findings = append(r.Findings, f) }

func (r *Report) finish() {
	slices.SortStableFunc(r.Findings, func(a, b Finding) int { return int(b.Severity) - int(a.Severity) })
	r.Summary = Summary{}
	for _, f := range r.Findings {
		switch f.Severity {
		case Info:
			r.Summary.Info++
		case Warning:
			r.Summary.Warning++
		case Critical:
			r.Summary.Critical++
		}
	}
	r.ExitCode = 0
	if r.Summary.Warning+r.Summary.Critical > 0 {
		r.ExitCode = 1
	}
	if r.Holders == nil {
		r.Holders = []Holder{}
	}
	if r.Capable == nil {
		r.Capable = []Capable{}
	}
}

// WriteJSON writes the report for machines.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// maxListed bounds the processes listed per group in text; --json has them all.
const maxListed = 15

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	k := r.Kernel
	p("uffdgate audit (kernel %s)\n\n", k.Release)
	p("Kernel\n")
	p("  userfaultfd        %s: %s\n", k.Userfaultfd, k.UserfaultfdDetail)
	lsm := "not active"
	if k.BPFLSMActive {
		lsm = "active"
	} else if k.BPFLSMBuilt != nil && !*k.BPFLSMBuilt {
		lsm = "not built in"
	}
	p("  BTF                %s\n", yesNo(k.BTF, "present", "missing"))
	p("  BPF LSM            %s (active LSMs: %s)\n", lsm, orNone(strings.Join(k.LSMs, ",")))
	if k.LSMBootParam != "" {
		p("                     boot with %s\n", k.LSMBootParam)
	}
	p("\nuffdgate\n  %s\n", r.Gate.Description)
	s := r.Sysctl
	p("\n%s\n", s.Name)
	if s.ValueError != "" {
		p("  current value      unknown (%s)\n", s.ValueError)
	} else {
		p("  current value      %s\n", s.Value)
	}
	if s.BootSource != "" {
		p("  at boot            %s, from %s\n", s.BootValue, s.BootSource)
	} else {
		p("  at boot            no configuration file sets it (kernel default 0)\n")
	}
	for _, a := range s.Assignments {
		state := "applied"
		switch {
		case a.Wins:
			state = "wins"
		case !a.Applied:
			state = "not read: shadowed by " + a.ShadowedBy
		default:
			state = "overridden by a later file"
		}
		p("  %s:%d: %s = %s (%s)\n", a.File, a.Line, a.Key, a.Value, state)
	}
	d := r.Device
	p("\n%s\n", d.Path)
	switch {
	case d.Error != "":
		p("  unreadable: %s\n", d.Error)
	case !d.Present:
		p("  absent\n")
	default:
		p("  %s %s:%s (%s)", d.ModeString, orNum(d.Owner, d.OwnerUID), orNum(d.Group, d.GroupGID), d.Rdev)
		if d.ACL != "" {
			p(", ACL %s", d.ACL)
		}
		p("\n")
		var who []string
		for _, g := range d.Grants {
			who = append(who, fmt.Sprintf("%s (%s, by %s)", g.Who(), g.Perm, g.Via))
		}
		p("  opens it without capabilities: %s\n", orNone(strings.Join(who, "; ")))
		for _, u := range d.UdevRules {
			p("  udev: %s\n", u)
		}
	}
	p("\nProcesses (%d scanned)\n", r.Scanned)
	p("  holding userfaultfd contexts: %d\n", len(r.Holders))
	for i, h := range r.Holders {
		if i == maxListed {
			p("    ... and %d more (see --json)\n", len(r.Holders)-maxListed)
			break
		}
		p("    %s fds %v\n", procLine(h.Proc), h.FDs)
	}
	p("  able to create kernel-fault contexts under the kernel's rules: %d\n", len(r.Capable))
	for i, c := range r.Capable {
		if i == maxListed {
			p("    ... and %d more (see --json)\n", len(r.Capable)-maxListed)
			break
		}
		pol := ""
		if c.UnderPolicy != nil {
			pol = " | policy: " + yesNo(*c.UnderPolicy, "allowed", "refused")
		}
		p("    %s via %s%s\n", procLine(c.Proc), strings.Join(c.Via, "; "), pol)
	}
	p("\nFindings\n")
	for _, f := range r.Findings {
		p("  [%s] %s\n", f.Severity, f.Title)
		if f.Detail != "" {
			p("      %s\n", f.Detail)
		}
		if f.Remedy != "" {
			p("      remedy: %s\n", f.Remedy)
		}
	}
	p("\n%d critical, %d warning, %d info: exit status %d\n", r.Summary.Critical, r.Summary.Warning, r.Summary.Info, r.ExitCode)
	_, err := io.WriteString(w, b.String())
	return err
}

func procLine(p Proc) string {
	exe := p.Exe
	if exe == "" {
		exe = "?"
	}
	user := fmt.Sprintf("uid %d", p.UID)
	if p.User != "" {
		user = fmt.Sprintf("%s (%d)", p.User, p.UID)
	}
	return fmt.Sprintf("pid %d %s [%s] %s cgroup %s", p.PID, p.Comm, exe, user, p.Cgroup)
}

func yesNo(b bool, y, n string) string {
	if b {
		return y
	}
	return n
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func orNum(name string, id uint32) string {
	if name != "" {
		return name
	}
	return fmt.Sprint(id)
}

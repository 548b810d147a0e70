// Package hostaudit is `uffdgate audit`: who on this host can get userfaultfd
// contexts that handle kernel faults, through which door (capability, sysctl,
// device node), what uffdgate does about it, and what to change. It reads the
// host through hostinfo (an fs.FS and an xattr reader) and the kernel through
// the small Kernel interface, so it runs against fixtures in tests.
package hostaudit

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"syscall"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/hostinfo"
)

// Kernel is what the audit asks the running kernel directly.
type Kernel interface {
	// UserfaultfdSyscall creates and closes a user-mode-only context with the
	// userfaultfd syscall: ENOSYS means the kernel has no userfaultfd.
	UserfaultfdSyscall() error
	// BPFLSMInBTF checks that the kernel exposes BTF and was built with BPF LSM
	// (preflight.CheckBTF); its error says which is missing and the fix.
	BPFLSMInBTF() error
	// MountSecurityFS mounts securityfs, which holds the LSM list, when it is
	// not mounted (a minimal initramfs), as `uffdgate run` does.
	MountSecurityFS() error
	// LoadLSMProgram loads (without attaching) a trivial BPF LSM program: some
	// kernels refuse them even with bpf in the active LSM list.
	LoadLSMProgram() error
}

// Options are the audit's inputs.
type Options struct {
	Host   hostinfo.Host
	Kernel Kernel
	Gate   hostinfo.Gate
	// GateErr is set when whether uffdgate runs could not be established.
	GateErr error
	// Self is the audit's own pid, left out of the process lists.
	Self int
}

// Run audits the host.
func Run(o Options) *Report {
	r := &Report{selfPID: o.Self, hasPolicy: o.Gate.Policy != nil}
	h := o.Host
	names := h.Names()
	r.Kernel.Release = h.KernelRelease()
	present := r.kernel(o)
	r.Sysctl = sysctlInfo(h)
	r.Device = deviceInfo(h, names)
	r.gateInfo(o)
	if !present {
		// Nothing else matters: no process can create a context.
		r.finish()
		return r
	}
	r.gateFindings(o)
	r.sysctlFindings(o.Gate)
	r.deviceFindings(h, o.Gate, names)
	r.processes(h, o.Gate, names)
	r.finish()
	return r
}

func (r *Report) kernel(o Options) (present bool) {
	h, k := o.Host, &r.Kernel
	_, sysctlErr := h.Sysctl(hostinfo.UffdSysctl)
	err := o.Kernel.UserfaultfdSyscall()
	switch {
	case err == nil:
		k.Userfaultfd, k.UserfaultfdDetail = "present", "the userfaultfd syscall created a user-mode-only context"
		r.add(Finding{ID: "userfaultfd.present", Severity: Info, Title: "userfaultfd is compiled into this kernel"})
	case errors.Is(err, syscall.ENOSYS) && sysctlErr != nil:
		k.Userfaultfd, k.UserfaultfdDetail = "absent", "the userfaultfd syscall returned ENOSYS and there is no vm.unprivileged_userfaultfd sysctl (CONFIG_USERFAULTFD is off)"
		r.add(Finding{ID: "userfaultfd.absent", Severity: Info, Title: "userfaultfd is not compiled into this kernel: no process can create contexts, there is nothing to gate"})
		return false
	default:
		// ENOSYS while the sysctl exists, or EPERM: a seccomp filter on this very
		// process answers instead of the kernel.
		k.Userfaultfd = "unknown"
		k.UserfaultfdDetail = fmt.Sprintf("the userfaultfd syscall failed with %s", errName(err))
		if sysctlErr == nil {
			k.UserfaultfdDetail += ", yet vm.unprivileged_userfaultfd exists, so the kernel has userfaultfd"
		}
		r.add(Finding{ID: "userfaultfd.probe_failed", Severity: Warning,
			Title:  "could not create even a user-mode-only context from the audit itself",
			Detail: k.UserfaultfdDetail + ": probably a seccomp filter on this process (see Seccomp in /proc/self/status); the rest of the audit still reads the host",
			Remedy: "run uffdgate audit outside the container or sandbox that filters it"})
	}
	if _, err := fs.Stat(h.FS, "sys/kernel/btf/vmlinux"); err == nil {
		k.BTF = true
	}
	lsms, lsmErr := h.LSMs()
	if errors.Is(lsmErr, fs.ErrNotExist) && o.Kernel.MountSecurityFS() == nil {
		lsms, lsmErr = h.LSMs()
	}
	k.LSMs = lsms
	for _, l := range lsms {
		k.BPFLSMActive = k.BPFLSMActive || l == "bpf"
	}
	cur, hasCur, _ := h.BootParam("lsm")
	if hasCur {
		k.CurrentLSMParam = "lsm=" + cur
	}
	switch {
	case lsmErr != nil:
		r.add(Finding{ID: "bpf_lsm.unknown", Severity: Warning, Title: "cannot read the active LSM list",
			Detail: lsmErr.Error(), Remedy: "mount securityfs: `mount -t securityfs securityfs /sys/kernel/security`"})
	case k.BPFLSMActive:
		t := true
		k.BPFLSMBuilt = &t
		if !k.BTF {
			r.add(Finding{ID: "btf.missing", Severity: Warning, Title: "BPF LSM is active but the kernel exposes no BTF: uffdgate run cannot load its program",
				Remedy: "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y"})
		} else if err := o.Kernel.LoadLSMProgram(); err != nil {
			r.add(Finding{ID: "bpf_lsm.refused", Severity: Warning, Title: "BPF LSM is active, but this kernel refuses LSM programs: uffdgate run cannot enforce here",
				Detail: err.Error(), Remedy: "run a kernel that accepts BPF LSM programs; meanwhile `uffdgate run --accept-audit-only` reports (the audit backend) and `uffdgate exec` holds process trees to user-mode-only"})
		} else {
			r.add(Finding{ID: "bpf_lsm.active", Severity: Info, Title: "BPF LSM is active, BTF is present and the kernel loads LSM programs: uffdgate run can enforce here"})
		}
	default:
		if err := o.Kernel.BPFLSMInBTF(); err != nil {
			f := false
			k.BPFLSMBuilt = &f
			r.add(Finding{ID: "bpf_lsm.unavailable", Severity: Warning, Title: "this kernel cannot run uffdgate's BPF LSM program",
				Detail: err.Error(), Remedy: "use `uffdgate exec` (a seccomp filter) for the process trees that must be held to user-mode-only contexts"})
			break
		}
		t := true
		k.BPFLSMBuilt = &t
		k.LSMBootParam = "lsm=" + strings.Join(append(append([]string{}, lsms...), "bpf"), ",")
		now := "there is no lsm= parameter now"
		if hasCur {
			now = "it is " + k.CurrentLSMParam + " now"
		}
		r.add(Finding{ID: "bpf_lsm.inactive", Severity: Warning,
			Title:  "BPF LSM is built in but not active, so uffdgate cannot enforce",
			Detail: fmt.Sprintf("active LSMs: %s; %s", strings.Join(lsms, ","), now),
			Remedy: fmt.Sprintf("add `%s` to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub) and reboot", k.LSMBootParam)})
	}
	return true
}

func errName(err error) string {
	var e syscall.Errno
	if errors.As(err, &e) {
		return e.Error() + " (" + errnoName(e) + ")"
	}
	return err.Error()
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.ENOSYS:
		return "ENOSYS"
	case syscall.EPERM:
		return "EPERM"
	case syscall.EACCES:
		return "EACCES"
	case syscall.EINVAL:
		return "EINVAL"
	}
	return "errno " + strconv.Itoa(int(e))
}

func (r *Report) gateInfo(o Options) {
	g := o.Gate
	r.Gate = GateInfo{Running: g.Running, PID: g.PID, State: g.State, Hypothetical: g.Hypothetical,
		Evaluated: g.Policy != nil, Unresolved: g.Unresolved, Description: g.Describe()}
	if g.Policy != nil {
		r.Gate.PolicySource, r.Gate.Mode, r.Gate.Audit = g.Policy.Source, g.Policy.Mode.String(), g.Policy.Audit
	}
	if o.GateErr != nil {
		r.Gate.Description = o.GateErr.Error() + "; evaluating the kernel's rules alone"
	}
}

func (r *Report) gateFindings(o Options) {
	g := o.Gate
	if o.GateErr != nil {
		r.add(Finding{ID: "gate.state_unreadable", Severity: Warning, Title: "cannot tell whether uffdgate is running",
			Detail: o.GateErr.Error(), Remedy: "check /run/uffdgate/state.json and `uffdgate run`'s log"})
		return
	}
	switch {
	case !g.Running:
		r.add(Finding{ID: "gate.not_running", Severity: Warning, Title: "uffdgate is not running: the kernel's own checks alone decide who gets kernel-fault contexts",
			Detail: g.NotRunning,
			Remedy: "start `uffdgate run` (needs BPF LSM), or run the process trees to hold to user-mode-only contexts under `uffdgate exec`"})
	case g.Backend == "audit" && !g.Hypothetical:
		r.add(Finding{ID: "gate.audit_backend", Severity: Warning, Title: "uffdgate runs the audit backend: it reports kernel-fault contexts after they are made, it refuses nothing",
			Remedy: "run a kernel that accepts BPF LSM programs (`bpf` in lsm=), then restart `uffdgate run`"})
	case g.Policy != nil && g.Policy.Audit && !g.Hypothetical:
		r.add(Finding{ID: "gate.audit_mode", Severity: Warning, Title: "uffdgate runs in audit mode: it reports, it refuses nothing",
			Remedy: "set `audit: false` in the policy once its reports look right, then reload"})
	case g.Policy != nil && g.Policy.Mode == decision.ModeAllow && !g.Hypothetical:
		r.add(Finding{ID: "gate.mode_allow", Severity: Warning, Title: "uffdgate runs with mode allow: it observes, it refuses nothing",
			Remedy: "set `mode: user-mode-only`"})
	default:
		if !g.Hypothetical {
			r.add(Finding{ID: "gate.running", Severity: Info, Title: g.Describe()})
		}
	}
	if g.Hypothetical {
		r.add(Finding{ID: "gate.hypothetical", Severity: Info, Title: g.Describe()})
	}
	if len(g.Unresolved) > 0 {
		r.add(Finding{ID: "gate.unresolved", Severity: Warning, Title: "policy rules name paths that do not resolve on this host, so they match nothing",
			Detail: strings.Join(g.Unresolved, "; "), Remedy: "correct the paths in the policy, or create what they name"})
	}
}

func sysctlInfo(h hostinfo.Host) SysctlInfo {
	s := SysctlInfo{Name: hostinfo.UffdSysctl}
	v, err := h.Sysctl(hostinfo.UffdSysctl)
	if err != nil {
		s.ValueError = err.Error()
	} else {
		s.Value = v
	}
	cfg, _ := h.SysctlConfig(hostinfo.UffdSysctl)
	s.Assignments, s.Files, s.Unreadable = cfg.Assignments, cfg.Files, cfg.Unreadable
	if s.Assignments == nil {
		s.Assignments = []hostinfo.SysctlAssignment{}
	}
	if w := cfg.Winner; w != nil {
		s.BootValue, s.BootSource = w.Value, fmt.Sprintf("%s:%d", w.File, w.Line)
		s.winner = w
	}
	return s
}

// gateHolds reports whether the evaluated policy refuses kernel-fault contexts
// to processes no rule allows: then the widened doors lead to the gate.
func gateHolds(g hostinfo.Gate) bool {
	if g.Policy == nil {
		return false
	}
	m := g.Model()
	return !m.Audit && m.Mode != decision.ModeAllow
}

// heldBy words who stands behind an open door, for severities and titles.
func heldBy(g hostinfo.Gate) (Severity, string) {
	switch {
	case gateHolds(g) && g.Hypothetical:
		return Warning, "the evaluated policy would refuse them to processes it does not allow, but nothing enforces it now"
	case gateHolds(g):
		return Warning, "uffdgate refuses them to processes its policy does not allow; if it stops, the door is open"
	}
	return Critical, "nothing refuses them: uffdgate does not enforce"
}

func (r *Report) sysctlFindings(g hostinfo.Gate) {
	s := r.Sysctl
	src := "no configuration file sets it (the kernel's default is 0)"
	if s.BootSource != "" {
		src = "boot sets it to " + s.BootValue + " (" + s.BootSource + ")"
	}
	switch {
	case s.ValueError != "":
		r.add(Finding{ID: "sysctl.unreadable", Severity: Warning, Title: "cannot read vm.unprivileged_userfaultfd", Detail: s.ValueError})
	case s.Value == "1":
		sev, held := heldBy(g)
		remedy := "sysctl -w vm.unprivileged_userfaultfd=0"
		if s.BootValue == "1" {
			remedy += ", and remove " + s.BootSource + " or mask it with a same-named symlink to /dev/null in /etc/sysctl.d"
		} else {
			remedy += " (no configuration file sets it to 1: it was set at runtime, by hand or by a service)"
		}
		r.add(Finding{ID: "sysctl.enabled", Severity: sev,
			Title:  "vm.unprivileged_userfaultfd = 1: every process may create kernel-fault contexts through the syscall, no capability needed",
			Detail: held + "; " + src,
			Remedy: remedy + "; allow the programs that need kernel-fault contexts in uffdgate's policy instead"})
	default:
		r.add(Finding{ID: "sysctl.disabled", Severity: Info, Title: "vm.unprivileged_userfaultfd = " + s.Value + ": the syscall path needs CAP_SYS_PTRACE for kernel-fault contexts", Detail: src})
	}
	if s.Value != "1" && s.BootValue == "1" {
		r.add(Finding{ID: "sysctl.boot_enables", Severity: Warning,
			Title:  "the boot configuration sets vm.unprivileged_userfaultfd = 1 (" + s.BootSource + "): after the next boot every process may create kernel-fault contexts",
			Remedy: "remove that line, or mask the file with a same-named file in /etc/sysctl.d (a symlink to /dev/null), e.g. `ln -s /dev/null /etc/sysctl.d/" + baseName(s.winner.File) + "`"})
	}
	for _, a := range s.Assignments {
		if a.Value == "1" && !a.Wins {
			why := "a later file overrides it"
			if !a.Applied {
				why = "it is shadowed by " + a.ShadowedBy
			}
			r.add(Finding{ID: "sysctl.dormant_enable", Severity: Info,
				Title: fmt.Sprintf("%s:%d sets vm.unprivileged_userfaultfd = 1, without effect: %s", a.File, a.Line, why)})
		}
	}
	for _, u := range s.Unreadable {
		r.add(Finding{ID: "sysctl.config_unreadable", Severity: Warning, Title: "a sysctl configuration source could not be read: the boot value may differ", Detail: u})
	}
}

func baseName(p string) string { return p[strings.LastIndex(p, "/")+1:] }

func deviceInfo(h hostinfo.Host, names hostinfo.Names) DeviceInfo {
	d := DeviceInfo{Path: "/" + hostinfo.DeviceName, Grants: []hostinfo.Grant{}}
	n, err := h.Node(hostinfo.DeviceName)
	if err != nil {
		d.Error = err.Error()
		return d
	}
	d.Present = n.Present
	if !n.Present {
		return d
	}
	d.CharDev = n.CharDev
	d.Rdev = fmt.Sprintf("%d:%d", n.Major, n.Minor)
	if minor, ok := h.MiscMinor("userfaultfd"); ok {
		is := n.CharDev && n.Major == 10 && n.Minor == minor
		d.IsUserfaultfd = &is
	}
	d.OwnerUID, d.Owner, d.GroupGID, d.Group = n.UID, names.User(n.UID), n.GID, names.Group(n.GID)
	d.Mode, d.ModeString = fmt.Sprintf("%04o", uint32(n.Perm)), n.ModeString()
	if n.ACL != nil {
		d.ACL = n.ACL.String()
		mask := hostinfo.Perm(7)
		for _, e := range n.ACL.Entries {
			if e.Tag == hostinfo.TagMask {
				mask = e.Perm
			}
		}
		for _, e := range n.ACL.Entries {
			je := ACLEntry{Tag: e.Tag.String(), Perm: e.Perm.String(), Effective: e.Perm.String()}
			switch e.Tag {
			case hostinfo.TagUser, hostinfo.TagGroup:
				id := int64(e.ID)
				je.ID = &id
				if e.Tag == hostinfo.TagUser {
					je.Name = names.User(e.ID)
				} else {
					je.Name = names.Group(e.ID)
				}
				je.Effective = (e.Perm & mask).String()
			case hostinfo.TagGroupObj:
				je.Effective = (e.Perm & mask).String()
			}
			d.ACLEntries = append(d.ACLEntries, je)
		}
	}
	d.Grants = n.Grants(names)
	d.UdevRules = udevRules(h)
	return d
}

var udevDirs = []string{"etc/udev/rules.d", "run/udev/rules.d", "usr/lib/udev/rules.d", "lib/udev/rules.d"}

// udevRules finds rule lines that mention userfaultfd: where a widened mode or
// group usually comes from.
func udevRules(h hostinfo.Host) []string {
	var out []string
	seen := map[string]bool{}
	for _, dir := range udevDirs {
		ents, err := fs.ReadDir(h.FS, dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".rules") {
				continue
			}
			b, err := fs.ReadFile(h.FS, dir+"/"+e.Name())
			if err != nil {
				continue
			}
			for i, l := range strings.Split(string(b), "\n") {
				if !strings.Contains(strings.ToLower(l), "userfaultfd") || strings.HasPrefix(strings.TrimSpace(l), "#") {
					continue
				}
				// /lib is often /usr/lib: report each rule once.
				key := e.Name() + "\x00" + strconv.Itoa(i) + "\x00" + l
				if seen[key] {
					continue
				}
				seen[key] = true
				out = append(out, fmt.Sprintf("/%s/%s:%d: %s", dir, e.Name(), i+1, strings.TrimSpace(l)))
			}
		}
	}
	return out
}

func (r *Report) deviceFindings(h hostinfo.Host, g hostinfo.Gate, names hostinfo.Names) {
	d := r.Device
	switch {
	case d.Error != "":
		r.add(Finding{ID: "device.unreadable", Severity: Warning, Title: "cannot inspect " + d.Path, Detail: d.Error})
		return
	case !d.Present:
		r.add(Finding{ID: "device.absent", Severity: Info, Title: d.Path + " does not exist: the device path is closed (a kernel before 6.1, or no node created)"})
		return
	case d.IsUserfaultfd != nil && !*d.IsUserfaultfd:
		r.add(Finding{ID: "device.not_userfaultfd", Severity: Warning, Title: d.Path + " is not the userfaultfd misc device (" + d.ModeString + " " + d.Rdev + ")",
			Remedy: "remove it and let devtmpfs provide the node"})
	}
	var wide []string
	for _, gr := range d.Grants {
		if gr.Kind == "owner" && *gr.ID == 0 {
			continue
		}
		wide = append(wide, fmt.Sprintf("%s (%s, by %s)", gr.Who(), gr.Perm, gr.Via))
	}
	if len(wide) == 0 {
		r.add(Finding{ID: "device.root_only", Severity: Info, Title: d.Path + " is " + d.ModeString + " " + orNum(d.Owner, d.OwnerUID) + ":" + orNum(d.Group, d.GroupGID) + ": only root opens it"})
		return
	}
	sev, held := heldBy(g)
	remedy := "chmod 0600 " + d.Path + " and chown root:root it"
	if d.ACL != "" {
		remedy += "; remove the ACL: setfacl -b " + d.Path
	}
	if len(d.UdevRules) > 0 {
		remedy += "; fix the udev rule that sets it (" + strings.Join(d.UdevRules, "; ") + ")"
	} else {
		remedy += "; find what widens it at boot (a udev rule, a tmpfiles.d line, a service's ExecStartPre)"
	}
	remedy += "; let the programs that need the device through uffdgate's policy instead"
	r.add(Finding{ID: "device.widened", Severity: sev,
		Title:  d.Path + " lets " + strings.Join(wide, ", ") + " open it: whoever opens it gets kernel-fault contexts with no capability or sysctl check (read or write access is enough)",
		Detail: held, Remedy: remedy})
}

// processes scans /proc: who holds contexts, who could create kernel-fault ones.
func (r *Report) processes(h hostinfo.Host, g hostinfo.Gate, names hostinfo.Names) {
	pids, err := h.PIDs()
	if err != nil {
		r.add(Finding{ID: "scan.failed", Severity: Warning, Title: "cannot list processes", Detail: err.Error()})
		return
	}
	initNS, nsErr := h.InitUserNS()
	if nsErr != nil {
		r.add(Finding{ID: "scan.userns_unknown", Severity: Warning, Title: "cannot identify the initial user namespace: capabilities are judged by each process's uid_map",
			Detail: nsErr.Error()})
	}
	k := decision.Kernel{UnprivilegedUserfaultfd: r.Sysctl.Value == "1"}
	selfMnt, _ := fs.ReadLink(h.FS, "proc/self/ns/mnt")
	hostNode, _ := h.Node(hostinfo.DeviceName)
	// Processes by why they can: the groups the findings report.
	var unreadable, ptrace, allowed, wide, rootNoPtrace, refused []int
	for _, pid := range pids {
		if pid == r.selfPID {
			continue
		}
		p, err := h.Process(pid, initNS)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				unreadable = append(unreadable, pid)
			}
			continue
		}
		if !p.IsUserProcess() {
			continue
		}
		r.Scanned++
		pr := Proc{PID: pid, Comm: p.Status.Name, Exe: p.Exe, UID: p.Status.UID[0], User: names.User(uint32(p.Status.UID[0])), Cgroup: p.Cgroup}
		if p.FDsErr != nil && !errors.Is(p.FDsErr, fs.ErrNotExist) {
			unreadable = append(unreadable, pid)
		}
		if len(p.UffdFDs) > 0 {
			r.Holders = append(r.Holders, Holder{Proc: pr, FDs: p.UffdFDs})
		}
		subj, _ := h.SubjectOf(p)
		node := hostNode
		if mnt, err := fs.ReadLink(h.FS, "proc/"+strconv.Itoa(pid)+"/ns/mnt"); err == nil && selfMnt != "" && mnt != selfMnt {
			// Another mount namespace: its /dev/userfaultfd, if any, is its own.
			if n, err := h.Node("proc/" + strconv.Itoa(pid) + "/root/" + hostinfo.DeviceName); err == nil {
				node = n
			}
		}
		c := Capable{Proc: pr}
		sysReq := decision.Request{Path: decision.PathSyscall64, Flags: decision.CloseOnExec, FlagsKnown: true}
		devReq := decision.Request{Path: decision.PathIoctl64, Flags: decision.CloseOnExec, FlagsKnown: true}
		sysOK := decision.Expect(k, hostinfo.KernelOnly, subj, sysReq).Errno == 0
		if sysOK {
			if subj.HasCap(capability.SysPtrace) {
				c.Via = append(c.Via, "syscall: CAP_SYS_PTRACE in the initial user namespace")
			} else {
				c.Via = append(c.Via, "syscall: vm.unprivileged_userfaultfd = 1")
			}
		}
		devOK, why := node.Opens(p.Cred())
		if devOK {
			c.Via = append(c.Via, "device: "+why)
		}
		if !sysOK && !devOK {
			continue
		}
		c.SysPtrace = subj.HasCap(capability.SysPtrace)
		switch p.Status.Seccomp {
		case 1:
			c.Caveat = "seccomp strict mode: any userfaultfd request kills it"
		case 2:
			c.Caveat = "it has a seccomp filter, which may refuse userfaultfd"
		}
		if g.Policy != nil {
			polSys := sysOK && decision.Expect(k, g.Model(), subj, sysReq).Errno == 0
			polDev := devOK && decision.Expect(k, g.Model(), subj, devReq).Errno == 0
			ok := polSys || polDev
			c.UnderPolicy = &ok
			c.PolicyWhy = decision.Decide(g.Model(), subj, sysReq).Reason
		}
		r.Capable = append(r.Capable, c)
		switch {
		case c.UnderPolicy != nil && !*c.UnderPolicy:
			refused = append(refused, pid)
		case c.SysPtrace:
			ptrace = append(ptrace, pid)
		case c.UnderPolicy != nil:
			allowed = append(allowed, pid)
		case sysOK || !hostNode.RootOnly(names) || !node.RootOnly(names):
			wide = append(wide, pid)
		default:
			rootNoPtrace = append(rootNoPtrace, pid)
		}
	}
	if len(unreadable) > 0 {
		r.add(Finding{ID: "scan.incomplete", Severity: Warning, Title: fmt.Sprintf("%d processes could not be fully inspected", len(unreadable)),
			Detail: "their /proc entries were not readable", Remedy: "run uffdgate audit as root", PIDs: unreadable})
	}
	if len(r.Holders) > 0 {
		var pids []int
		var who []string
		for _, hd := range r.Holders {
			pids = append(pids, hd.PID)
			who = append(who, fmt.Sprintf("%d (%s)", hd.PID, hd.Comm))
		}
		r.add(Finding{ID: "holders", Severity: Info, Title: fmt.Sprintf("%d processes hold userfaultfd contexts now", len(r.Holders)),
			Detail: "pids " + strings.Join(who, ", ") + "; whether a context handles kernel faults is not visible from /proc", PIDs: pids})
	}
	verb := "allows"
	if g.Hypothetical {
		verb = "would allow"
	}
	if len(ptrace) > 0 {
		title := fmt.Sprintf("%d processes can create kernel-fault contexts because they hold CAP_SYS_PTRACE in the initial user namespace (the kernel's own rule)", len(ptrace))
		if g.Policy != nil {
			title += "; the policy " + verb + " them"
		}
		r.add(Finding{ID: "capable.ptrace", Severity: Info, Title: title, PIDs: ptrace})
	}
	if len(allowed) > 0 {
		r.add(Finding{ID: "capable.allowlisted", Severity: Info,
			Title: fmt.Sprintf("the policy %s kernel-fault contexts to %d processes without CAP_SYS_PTRACE (a rule matches them)", verb, len(allowed)),
			PIDs:  allowed})
	}
	if len(wide) > 0 {
		r.add(Finding{ID: "capable.unprivileged", Severity: Critical,
			Title:  fmt.Sprintf("%d processes without CAP_SYS_PTRACE can create kernel-fault contexts through the sysctl or the widened device node", len(wide)),
			Detail: "nothing refuses them: uffdgate does not enforce", PIDs: wide,
			Remedy: "close the sysctl and the device node (see the other findings) and allow the programs that need kernel-fault contexts in uffdgate's policy"})
	}
	if len(rootNoPtrace) > 0 {
		r.add(Finding{ID: "capable.root_without_ptrace", Severity: Warning,
			Title:  fmt.Sprintf("%d processes without CAP_SYS_PTRACE can create kernel-fault contexts by opening the root-only device node (as its owner, or with CAP_DAC_OVERRIDE)", len(rootNoPtrace)),
			Detail: "the device path has no capability check: dropping CAP_SYS_PTRACE does not stop root", PIDs: rootNoPtrace,
			Remedy: "run uffdgate, which holds them to user-mode-only contexts unless its policy allows them"})
	}
	if len(refused) > 0 {
		v := "refuses"
		if g.Hypothetical {
			v = "would refuse"
		}
		r.add(Finding{ID: "capable.held_by_gate", Severity: Info,
			Title: fmt.Sprintf("the policy %s kernel-fault contexts to %d processes the kernel's rules alone would let have them", v, len(refused)),
			PIDs:  refused})
	}
}

//go:build linux && amd64

package hostaudit_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/hostaudit"
	"github.com/uffdgate/uffdgate/internal/hostinfo"
	. "github.com/uffdgate/uffdgate/internal/hostinfo/hostfixture"
	"github.com/uffdgate/uffdgate/internal/policy"
	"github.com/uffdgate/uffdgate/internal/state"
	"github.com/uffdgate/uffdgate/internal/testsubject"
)

func TestMain(m *testing.M) { os.Exit(testsubject.Run(m)) }

// kernel is a fake Kernel; mount, when set, is what mounting securityfs adds.
type kernel struct {
	syscallErr, btfErr, lsmLoadErr error
	mount                          func() error
}

func (k kernel) UserfaultfdSyscall() error { return k.syscallErr }
func (k kernel) BPFLSMInBTF() error        { return k.btfErr }
func (k kernel) LoadLSMProgram() error     { return k.lsmLoadErr }
func (k kernel) MountSecurityFS() error {
	if k.mount == nil {
		return errors.New("not permitted")
	}
	return k.mount()
}

// findings maps finding ids to their severities and pids.
func findings(r *hostaudit.Report) map[string]hostaudit.Finding {
	m := map[string]hostaudit.Finding{}
	for _, f := range r.Findings {
		m[f.ID] = f
	}
	return m
}

func ids(r *hostaudit.Report) string {
	var s []string
	for _, f := range r.Findings {
		s = append(s, f.Severity.String()+":"+f.ID)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

// libvirtHost is the field's common bad fix: libvirt's drop-in turns the sysctl
// on, a udev rule and an ACL widen the device node; QEMU holds a context.
func libvirtHost() *Host {
	f := New()
	f.File("usr/lib/sysctl.d/60-qemu-postcopy-migration.conf", "vm.unprivileged_userfaultfd = 1\n")
	f.File("proc/sys/vm/unprivileged_userfaultfd", "1\n")
	f.Node(hostinfo.DeviceName, 0o660, 0, 108, EncodeACL(UserObj(RW), User(64055, RW), GroupObj(RW), Mask(RW), Other(N)))
	f.File("etc/udev/rules.d/99-userfaultfd.rules", "# postcopy\nKERNEL==\"userfaultfd\", GROUP=\"kvm\", MODE=\"0660\"\n")
	f.AddProc(Proc{PID: 2, Name: "kthreadd", Kthread: true})
	f.AddProc(Proc{PID: 100, Name: "qemu-system-x86", UID: 64055, GID: 108, Groups: []int{108}, Exe: "/usr/bin/qemu-system-x86_64", UffdFDs: []int{7}, Cgroup: "/machine.slice/vm1.scope"})
	f.AddProc(Proc{PID: 200, Name: "bash", UID: 1000, GID: 1000, Groups: []int{108}, Exe: "/usr/bin/bash"})
	// Root of a container: all capabilities in its own user namespace, and a
	// /dev of its own without the node.
	f.AddProc(Proc{PID: 300, Name: "sh", UID: 100000, GID: 100000, CapEff: AllCaps, Exe: "/bin/sh", UserNS: "user:[4026532999]",
		UIDMap: "0 100000 65536\n", MntNS: "mnt:[4026533000]", NSpid: []int{300, 1}})
	f.AddProc(Proc{PID: 400, Name: "zombie", UID: 1000, Zombie: true, Exe: "/bin/true"})
	return f
}

func run(f *Host, g hostinfo.Gate, k kernel) *hostaudit.Report {
	return hostaudit.Run(hostaudit.Options{Host: f.Host(), Kernel: k, Gate: g})
}

func notRunning() hostinfo.Gate { return hostinfo.Gate{NotRunning: "no /run/uffdgate/state.json"} }

func TestLibvirtHostUngated(t *testing.T) {
	f := libvirtHost()
	r := run(f, notRunning(), kernel{})
	fs := findings(r)
	want := "critical:capable.unprivileged critical:device.widened critical:sysctl.enabled info:bpf_lsm.active info:capable.ptrace info:holders info:userfaultfd.present warning:gate.not_running"
	if got := ids(r); got != want {
		t.Errorf("findings\n got %s\nwant %s", got, want)
	}
	if r.ExitCode != 1 || r.Summary.Critical != 3 {
		t.Errorf("exit %d, summary %+v", r.ExitCode, r.Summary)
	}
	if got := fs["capable.unprivileged"].PIDs; !slices.Equal(got, []int{100, 200, 300}) {
		t.Errorf("unprivileged capable pids %v, want qemu, alice's shell and the container root", got)
	}
	if got := fs["capable.ptrace"].PIDs; !slices.Equal(got, []int{1}) {
		t.Errorf("ptrace pids %v", got)
	}
	if len(r.Holders) != 1 || r.Holders[0].PID != 100 || !slices.Equal(r.Holders[0].FDs, []int{7}) || r.Holders[0].Cgroup != "/machine.slice/vm1.scope" {
		t.Errorf("holders %+v", r.Holders)
	}
	d := fs["device.widened"]
	for _, w := range []string{"user libvirt-qemu (64055) (rw-, by acl)", "members of its group kvm (108) (rw-, by acl)"} {
		if !strings.Contains(d.Title, w) {
			t.Errorf("device finding %q does not name %q", d.Title, w)
		}
	}
	if !strings.Contains(d.Remedy, "setfacl -b /dev/userfaultfd") || !strings.Contains(d.Remedy, "99-userfaultfd.rules:2") {
		t.Errorf("device remedy %q", d.Remedy)
	}
	if s := fs["sysctl.enabled"]; !strings.Contains(s.Detail, "/usr/lib/sysctl.d/60-qemu-postcopy-migration.conf:1") {
		t.Errorf("sysctl finding does not name the drop-in: %+v", s)
	}
	vias := map[int]string{}
	for _, c := range r.Capable {
		vias[c.PID] = strings.Join(c.Via, " | ")
	}
	for pid, want := range map[int]string{
		100: "syscall: vm.unprivileged_userfaultfd = 1 | device: ACL entry user:64055:rw-",
		200: "syscall: vm.unprivileged_userfaultfd = 1 | device: ACL entry group::rw- for the owning group 108",
		300: "syscall: vm.unprivileged_userfaultfd = 1",
	} {
		if !strings.HasPrefix(vias[pid], want) || (pid == 300 && vias[pid] != want) {
			t.Errorf("pid %d via %q, want %q", pid, vias[pid], want)
		}
	}
	if r.Scanned != 4 {
		t.Errorf("scanned %d, want 4 (kernel threads and zombies left out)", r.Scanned)
	}
}

// TestLibvirtHostGated: the same host under the default policy, enforced: the
// widened doors lead to the gate, so they are warnings, and the processes it
// holds back are reported as such.
func TestLibvirtHostGated(t *testing.T) {
	f := libvirtHost()
	g := f.Host().WithPolicy(policy.Default(), true)
	g.PID, g.State = 4242, "enforcing"
	r := run(f, g, kernel{})
	want := "info:bpf_lsm.active info:capable.held_by_gate info:capable.ptrace info:gate.running info:holders info:userfaultfd.present warning:device.widened warning:sysctl.enabled"
	if got := ids(r); got != want {
		t.Errorf("findings\n got %s\nwant %s", got, want)
	}
	fs := findings(r)
	if got := fs["capable.held_by_gate"].PIDs; !slices.Equal(got, []int{100, 200, 300}) {
		t.Errorf("held pids %v", got)
	}
	for _, c := range r.Capable {
		if c.UnderPolicy == nil || *c.UnderPolicy != (c.PID == 1) {
			t.Errorf("pid %d under policy %v", c.PID, c.UnderPolicy)
		}
	}
}

// TestAuditModeIsNotProtection: a daemon in audit mode refuses nothing.
func TestAuditModeIsNotProtection(t *testing.T) {
	f := libvirtHost()
	p, err := policy.Parse("p.yaml", []byte("mode: user-mode-only\naudit: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := run(f, f.Host().WithPolicy(p, true), kernel{})
	fs := findings(r)
	if fs["gate.audit_mode"].Severity != hostaudit.Warning || fs["sysctl.enabled"].Severity != hostaudit.Critical {
		t.Errorf("audit-mode daemon: %s", ids(r))
	}
	if got := fs["capable.allowlisted"].PIDs; !slices.Equal(got, []int{100, 200, 300}) {
		t.Errorf("processes the audit-mode policy lets through: %v (%s)", got, ids(r))
	}
}

// TestHardenedHost: sysctl 0, node 0600, gate enforcing: nothing to warn about.
func TestHardenedHost(t *testing.T) {
	f := New()
	f.AddProc(Proc{PID: 500, Name: "dockerd-child", UID: 0, CapEff: AllCaps &^ (1 << 19), Exe: "/usr/bin/runc"})
	g := f.Host().WithPolicy(policy.Default(), true)
	r := run(f, g, kernel{})
	if r.ExitCode != 0 || r.Summary.Warning+r.Summary.Critical != 0 {
		t.Errorf("exit %d: %s", r.ExitCode, ids(r))
	}
	if got := findings(r)["capable.held_by_gate"].PIDs; !slices.Equal(got, []int{500}) {
		t.Errorf("root without CAP_SYS_PTRACE opens the root-owned node, and the gate holds it: %v (%s)", got, ids(r))
	}
	// Without the gate that root process is a warning of its own.
	r = run(f, notRunning(), kernel{})
	if fs := findings(r); !slices.Equal(fs["capable.root_without_ptrace"].PIDs, []int{500}) || fs["capable.root_without_ptrace"].Severity != hostaudit.Warning {
		t.Errorf("ungated: %s", ids(r))
	}
}

func TestNoUserfaultfd(t *testing.T) {
	f := New()
	delete(f.FS, "proc/sys/vm/unprivileged_userfaultfd")
	r := run(f, notRunning(), kernel{syscallErr: syscall.ENOSYS})
	if got := ids(r); got != "info:userfaultfd.absent" || r.ExitCode != 0 || r.Kernel.Userfaultfd != "absent" {
		t.Errorf("compiled out: %s, exit %d", got, r.ExitCode)
	}
	// ENOSYS while the sysctl exists: the audit itself is filtered.
	f = New()
	r = run(f, notRunning(), kernel{syscallErr: syscall.ENOSYS})
	if fs := findings(r); fs["userfaultfd.probe_failed"].Severity != hostaudit.Warning || r.Kernel.Userfaultfd != "unknown" {
		t.Errorf("filtered audit: %s", ids(r))
	}
}

func TestBPFLSM(t *testing.T) {
	f := New()
	f.File("sys/kernel/security/lsm", "lockdown,capability,yama,apparmor")
	f.File("proc/cmdline", "BOOT_IMAGE=/vmlinuz lsm=lockdown,yama,apparmor quiet -- init-arg lsm=bogus\n")
	r := run(f, notRunning(), kernel{})
	fd := findings(r)["bpf_lsm.inactive"]
	if !strings.Contains(fd.Remedy, "`lsm=lockdown,capability,yama,apparmor,bpf`") || !strings.Contains(fd.Detail, "it is lsm=lockdown,yama,apparmor now") {
		t.Errorf("inactive BPF LSM: %+v", fd)
	}
	if r.Kernel.LSMBootParam != "lsm=lockdown,capability,yama,apparmor,bpf" || *r.Kernel.BPFLSMBuilt != true {
		t.Errorf("kernel info %+v", r.Kernel)
	}
	r = run(f, notRunning(), kernel{btfErr: errors.New("this kernel was built without BPF LSM support")})
	if fd := findings(r)["bpf_lsm.unavailable"]; fd.Severity != hostaudit.Warning || !strings.Contains(fd.Detail, "without BPF LSM") {
		t.Errorf("no BPF LSM: %s", ids(r))
	}
}

// TestLSMProgramsRefused: bpf in the LSM list is not enough when the kernel
// refuses LSM programs (as the development machine's does): the audit must not
// say uffdgate can enforce. (Regression: it did.)
func TestLSMProgramsRefused(t *testing.T) {
	r := run(New(), notRunning(), kernel{lsmLoadErr: errors.New("the kernel refused the BPF LSM program: operation not permitted")})
	fs := findings(r)
	if fd := fs["bpf_lsm.refused"]; fd.Severity != hostaudit.Warning || !strings.Contains(fd.Detail, "operation not permitted") || !strings.Contains(fd.Remedy, "--accept-audit-only") {
		t.Errorf("LSM programs refused: %s", ids(r))
	}
	if _, claims := fs["bpf_lsm.active"]; claims {
		t.Errorf("the audit still says uffdgate can enforce: %s", ids(r))
	}
}

// TestSecurityFSUnmounted: the LSM list appears once securityfs is mounted;
// if it cannot be, the audit says it does not know.
func TestSecurityFSUnmounted(t *testing.T) {
	f := New()
	delete(f.FS, "sys/kernel/security/lsm")
	r := run(f, notRunning(), kernel{})
	if fd := findings(r)["bpf_lsm.unknown"]; fd.Severity != hostaudit.Warning || !strings.Contains(fd.Remedy, "mount -t securityfs") {
		t.Errorf("unmountable securityfs: %s", ids(r))
	}
	r = run(f, notRunning(), kernel{mount: func() error {
		f.File("sys/kernel/security/lsm", "lockdown,capability,bpf")
		return nil
	}})
	if !r.Kernel.BPFLSMActive || findings(r)["bpf_lsm.active"].ID == "" {
		t.Errorf("after mounting securityfs: %+v %s", r.Kernel, ids(r))
	}
}

func TestBootEnables(t *testing.T) {
	f := New()
	f.File("usr/lib/sysctl.d/60-qemu-postcopy-migration.conf", "vm.unprivileged_userfaultfd = 1\n")
	f.File("etc/sysctl.d/10-harden.conf", "vm.unprivileged_userfaultfd = 0\n")
	r := run(f, notRunning(), kernel{})
	fd := findings(r)["sysctl.boot_enables"]
	if fd.Severity != hostaudit.Warning || !strings.Contains(fd.Remedy, "ln -s /dev/null /etc/sysctl.d/60-qemu-postcopy-migration.conf") {
		t.Errorf("boot enables: %+v (%s)", fd, ids(r))
	}
	if r.Sysctl.BootValue != "1" || r.Sysctl.Value != "0" {
		t.Errorf("sysctl %+v", r.Sysctl)
	}
}

// TestJSON: the documented fields are there, with severities as words.
func TestJSON(t *testing.T) {
	var b bytes.Buffer
	if err := run(libvirtHost(), notRunning(), kernel{}).WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"kernel", "gate", "sysctl", "device", "uffd_holders", "kernel_fault_capable", "processes_scanned", "findings", "summary", "exit_status"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no %q in the JSON", k)
		}
	}
	f0 := m["findings"].([]any)[0].(map[string]any)
	if f0["severity"] != "critical" {
		t.Errorf("first finding %v: want the critical ones first, severity as a word", f0)
	}
	var back hostaudit.Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Errorf("the JSON does not read back: %v", err)
	}
}

// TestLive audits this host with real subjects and checks each claim against
// what those subjects really could do.
func TestLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("subjects with other uids need root")
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
	subjects := map[string]*testsubject.Subject{
		"nobody":          testsubject.Start(t, testsubject.Spec{Cred: nobody, Action: "attempts"}),
		"nobody+ptrace":   testsubject.Start(t, testsubject.Spec{Cred: nobody, AmbientCaps: []uintptr{unix.CAP_SYS_PTRACE}, Action: "attempts"}),
		"nobody+override": testsubject.Start(t, testsubject.Spec{Cred: nobody, AmbientCaps: []uintptr{unix.CAP_DAC_OVERRIDE}, Action: "attempts"}),
	}
	holder := testsubject.Start(t, testsubject.Spec{Cred: nobody, Action: "hold"})
	var held testsubject.Held
	json.Unmarshal(holder.Result, &held)

	h := hostinfo.Live()
	g, gerr := h.ResolveGate(state.DefaultPath, "")
	r := hostaudit.Run(hostaudit.Options{Host: h, Kernel: hostaudit.LiveKernel{}, Gate: g, GateErr: gerr, Self: os.Getpid()})
	capable := map[int]hostaudit.Capable{}
	for _, c := range r.Capable {
		capable[c.PID] = c
		if c.PID == os.Getpid() {
			t.Error("the audit lists itself")
		}
	}
	for name, s := range subjects {
		var a testsubject.Attempts
		if err := json.Unmarshal(s.Result, &a); err != nil {
			t.Fatal(err)
		}
		c, listed := capable[s.PID]
		t.Logf("%s: attempts %+v; audit lists it: %v %v", name, a, listed, c.Via)
		could := a.SyscallKernelFault == 0 || a.IoctlKernelFault == 0
		if listed != could {
			t.Errorf("%s (pid %d): listed as kernel-fault capable %v (%v), but its own attempts %+v", name, s.PID, listed, c.Via, a)
		}
		if listed && (a.SyscallKernelFault == 0) != strings.HasPrefix(strings.Join(c.Via, ","), "syscall") {
			t.Errorf("%s: via %v, but the syscall gave errno %d", name, c.Via, a.SyscallKernelFault)
		}
		if listed && (a.IoctlKernelFault == 0) != strings.Contains(strings.Join(c.Via, ","), "device") {
			t.Errorf("%s: via %v, but the device gave errno %d", name, c.Via, a.IoctlKernelFault)
		}
		if name == "nobody" {
			// Without capabilities, the syscall says what the sysctl is.
			want := map[int]string{0: "1", int(unix.EPERM): "0"}[a.SyscallKernelFault]
			if r.Sysctl.Value != want {
				t.Errorf("sysctl reported %q, but an unprivileged kernel-fault request gave errno %d", r.Sysctl.Value, a.SyscallKernelFault)
			}
		}
	}
	found := false
	for _, hd := range r.Holders {
		if hd.PID == holder.PID {
			found = slices.Contains(hd.FDs, held.FD) && hd.UID == 65534
		}
	}
	if !found {
		t.Errorf("holder pid %d fd %d not reported: %+v", holder.PID, held.FD, r.Holders)
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/dev/userfaultfd", &st); err == nil {
		if r.Device.OwnerUID != st.Uid || r.Device.GroupGID != st.Gid || r.Device.Mode != fmt.Sprintf("%04o", st.Mode&0o7777) {
			t.Errorf("device %+v, stat says %d:%d %o", r.Device, st.Uid, st.Gid, st.Mode)
		}
	} else if r.Device.Present {
		t.Errorf("device reported present, stat: %v", err)
	}
	_, serr := state.Read(state.DefaultPath)
	if _, ok := findings(r)["gate.not_running"]; ok != errors.Is(serr, state.ErrNotRunning) {
		t.Errorf("gate.not_running reported %v, state.Read says %v", ok, serr)
	}
	if (r.ExitCode == 0) != (r.Summary.Warning+r.Summary.Critical == 0) {
		t.Errorf("exit %d with summary %+v", r.ExitCode, r.Summary)
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil || !strings.Contains(b.String(), "Findings") {
		t.Errorf("text output: %v\n%s", err, b.String())
	}
}

// TestMinimalInitramfs: /proc, /sys and /dev only, as in the VM tests' guests:
// no /etc/passwd, no sysctl.d, no udev rules, no BTF file.
func TestMinimalInitramfs(t *testing.T) {
	f := New()
	for name := range f.FS {
		if strings.HasPrefix(name, "etc/") {
			delete(f.FS, name)
		}
	}
	delete(f.FS, "sys/kernel/btf/vmlinux")
	f.Node(hostinfo.DeviceName, 0o666, 0, 0, nil)
	f.AddProc(Proc{PID: 50, Name: "uffdtry", UID: 1000, GID: 1000, Exe: "/uffdtry"})
	r := run(f, notRunning(), kernel{})
	fs := findings(r)
	if fs["device.widened"].Severity != hostaudit.Critical || !strings.Contains(fs["device.widened"].Title, "every user") {
		t.Errorf("0666 node: %+v", fs["device.widened"])
	}
	if fs["btf.missing"].Severity != hostaudit.Warning {
		t.Errorf("no BTF: %s", ids(r))
	}
	if r.Device.Owner != "" || r.Sysctl.BootSource != "" || len(r.Sysctl.Unreadable) != 0 {
		t.Errorf("device %+v, sysctl %+v", r.Device, r.Sysctl)
	}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil || !strings.Contains(b.String(), "crw-rw-rw- 0:0") {
		t.Errorf("text without names:\n%s", b.String())
	}
}

//go:build linux && amd64

package explain_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/explain"
	"github.com/uffdgate/uffdgate/internal/hostinfo"
	. "github.com/uffdgate/uffdgate/internal/hostinfo/hostfixture"
	"github.com/uffdgate/uffdgate/internal/policy"
	"github.com/uffdgate/uffdgate/internal/state"
	"github.com/uffdgate/uffdgate/internal/testsubject"
	"github.com/uffdgate/uffdgate/internal/uffd"
)

func TestMain(m *testing.M) { os.Exit(testsubject.Run(m)) }

// rows renders the four outcomes as "syscall/kf=EPERM:kernel ...".
func rows(r *explain.Report) string {
	var s []string
	for _, row := range r.Rows {
		k := "kf"
		if row.UserModeOnly {
			k = "umo"
		}
		s = append(s, row.Path+"/"+k+"="+row.Outcome+":"+row.DecidedBy)
	}
	return strings.Join(s, " ")
}

func layer(row explain.Row, name string) explain.Layer {
	for _, l := range row.Layers {
		if l.Name == name {
			return l
		}
	}
	return explain.Layer{}
}

func notRunning() hostinfo.Gate { return hostinfo.Gate{NotRunning: "no /run/uffdgate/state.json"} }

func fromPID(t *testing.T, f *Host, pid int) explain.Identity {
	t.Helper()
	id, err := explain.FromPID(f.Host(), pid)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestLayering explains fixture processes on fixture hosts.
func TestLayering(t *testing.T) {
	running := func(f *Host, yaml string) hostinfo.Gate {
		p, err := policy.Parse("p.yaml", []byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		g := f.Host().WithPolicy(p, true)
		g.PID, g.State = 4242, "enforcing"
		return g
	}
	for _, c := range []struct {
		name  string
		setup func(f *Host) (pid int, g hostinfo.Gate)
		want  string
		check func(t *testing.T, r *explain.Report)
	}{
		{"root, no gate", func(f *Host) (int, hostinfo.Gate) { return 1, notRunning() },
			"syscall/kf=allowed:kernel syscall/umo=allowed:kernel ioctl/kf=allowed:kernel ioctl/umo=allowed:kernel",
			func(t *testing.T, r *explain.Report) {
				row := r.Rows[0]
				if l := layer(row, "capability"); l.Verdict != explain.Allows {
					t.Errorf("capability layer %+v", l)
				}
				if l := layer(row, "sysctl"); l.Verdict != explain.NotConsulted {
					t.Errorf("sysctl layer %+v: CAP_SYS_PTRACE is checked first", l)
				}
				if l := layer(row, "uffdgate"); l.Verdict != explain.NotRunning || !strings.Contains(l.Detail, "decides nothing") {
					t.Errorf("uffdgate layer %+v", l)
				}
			}},
		{"unprivileged, seccomp, node 0666", func(f *Host) (int, hostinfo.Gate) {
			f.Node(hostinfo.DeviceName, 0o666, 0, 0, nil)
			f.AddProc(Proc{PID: 10, Name: "gc", UID: 1000, GID: 1000, Seccomp: 2, Filters: 2, Exe: "/usr/bin/java"})
			return 10, notRunning()
		}, "syscall/kf=EPERM:kernel syscall/umo=allowed:kernel ioctl/kf=allowed:kernel ioctl/umo=allowed:kernel",
			func(t *testing.T, r *explain.Report) {
				for _, row := range r.Rows {
					if l := layer(row, "seccomp"); l.Verdict != explain.MayRefuse || !strings.Contains(l.Detail, "2 seccomp filter(s)") || len(row.Caveats) == 0 {
						t.Errorf("%s: seccomp %+v, caveats %v", row.Path, l, row.Caveats)
					}
				}
				if l := layer(r.Rows[0], "sysctl"); l.Verdict != explain.Refuses {
					t.Errorf("sysctl layer %+v", l)
				}
				if !strings.Contains(r.Rows[2].Why, "no capability or sysctl check") {
					t.Errorf("device row why %q", r.Rows[2].Why)
				}
			}},
		{"sysctl 1", func(f *Host) (int, hostinfo.Gate) {
			f.File("proc/sys/vm/unprivileged_userfaultfd", "1\n")
			f.AddProc(Proc{PID: 10, Name: "qemu", UID: 64055, GID: 108, Exe: "/usr/bin/qemu"})
			return 10, notRunning()
		}, "syscall/kf=allowed:kernel syscall/umo=allowed:kernel ioctl/kf=EACCES:device ioctl/umo=EACCES:device",
			func(t *testing.T, r *explain.Report) {
				if l := layer(r.Rows[0], "sysctl"); l.Verdict != explain.Allows {
					t.Errorf("sysctl layer %+v", l)
				}
				if l := layer(r.Rows[2], "uffdgate"); l.Verdict != explain.NotRunning {
					t.Errorf("uffdgate layer of a refused device request %+v", l)
				}
			}},
		{"strict seccomp", func(f *Host) (int, hostinfo.Gate) {
			f.AddProc(Proc{PID: 10, Name: "sandboxed", UID: 0, CapEff: AllCaps, Seccomp: 1, Exe: "/bin/x"})
			return 10, notRunning()
		}, "syscall/kf=killed:seccomp syscall/umo=killed:seccomp ioctl/kf=killed:seccomp ioctl/umo=killed:seccomp", nil},
		{"container root", func(f *Host) (int, hostinfo.Gate) {
			f.AddProc(Proc{PID: 10, Name: "sh", UID: 100000, GID: 100000, CapEff: AllCaps, Exe: "/bin/sh",
				UserNS: "user:[4026532999]", UIDMap: "0 100000 65536\n", MntNS: "mnt:[4026533000]", NSpid: []int{10, 1}})
			return 10, notRunning()
		}, "syscall/kf=EPERM:kernel syscall/umo=allowed:kernel ioctl/kf=ENOENT:device ioctl/umo=ENOENT:device",
			func(t *testing.T, r *explain.Report) {
				if l := layer(r.Rows[0], "capability"); !strings.Contains(l.Detail, "only in a child user namespace") {
					t.Errorf("capability layer %+v", l)
				}
				if !strings.Contains(strings.Join(r.Identity.Notes, ";"), "child PID namespace") {
					t.Errorf("notes %v", r.Identity.Notes)
				}
			}},
		{"gate enforcing", func(f *Host) (int, hostinfo.Gate) {
			f.Node(hostinfo.DeviceName, 0o666, 0, 0, nil)
			f.AddProc(Proc{PID: 10, Name: "gc", UID: 1000, GID: 1000, Exe: "/usr/bin/java"})
			return 10, running(f, "mode: user-mode-only\n")
		}, "syscall/kf=EPERM:kernel syscall/umo=allowed:kernel ioctl/kf=EPERM:uffdgate ioctl/umo=allowed:kernel",
			func(t *testing.T, r *explain.Report) {
				if l := layer(r.Rows[0], "uffdgate"); l.Verdict != explain.NotConsulted || !strings.Contains(l.Detail, "never sees it") {
					t.Errorf("uffdgate blamed, or not cleared, for the kernel's refusal: %+v", l)
				}
				if l := layer(r.Rows[2], "uffdgate"); l.Verdict != explain.Refuses || !strings.Contains(r.Rows[2].Why, "remedy") {
					t.Errorf("uffdgate layer %+v, why %q", l, r.Rows[2].Why)
				}
				if l := layer(r.Rows[3], "uffdgate"); l.Verdict != explain.Allows {
					t.Errorf("user-mode-only under the gate %+v", l)
				}
			}},
		{"gate auditing", func(f *Host) (int, hostinfo.Gate) {
			f.Node(hostinfo.DeviceName, 0o666, 0, 0, nil)
			f.AddProc(Proc{PID: 10, Name: "gc", UID: 1000, GID: 1000, Exe: "/usr/bin/java"})
			return 10, running(f, "mode: user-mode-only\naudit: true\n")
		}, "syscall/kf=EPERM:kernel syscall/umo=allowed:kernel ioctl/kf=allowed:kernel ioctl/umo=allowed:kernel",
			func(t *testing.T, r *explain.Report) {
				if l := layer(r.Rows[2], "uffdgate"); l.Verdict != explain.Passes || !strings.Contains(l.Detail, "would refuse") {
					t.Errorf("audit-mode layer %+v", l)
				}
				if !strings.Contains(r.Rows[2].Why, "audit mode") {
					t.Errorf("audit-mode why %q", r.Rows[2].Why)
				}
			}},
		{"SELinux", func(f *Host) (int, hostinfo.Gate) {
			f.File("sys/kernel/security/lsm", "lockdown,capability,selinux,bpf")
			return 1, notRunning()
		}, "syscall/kf=allowed:kernel syscall/umo=allowed:kernel ioctl/kf=allowed:kernel ioctl/umo=allowed:kernel",
			func(t *testing.T, r *explain.Report) {
				for _, row := range r.Rows {
					if l := layer(row, "lsm"); l.Verdict != explain.MayRefuse || !strings.Contains(l.Detail, "SELinux may refuse") {
						t.Errorf("lsm layer %+v", l)
					}
				}
			}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := New()
			pid, g := c.setup(f)
			id := fromPID(t, f, pid)
			r := explain.Explain(f.Host(), id, g)
			if got := rows(r); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
			checkAgainstModel(t, f.Host(), r, pid, g)
			if c.check != nil {
				c.check(t, r)
			}
			for _, row := range r.Rows {
				if len(row.Layers) != 6 {
					t.Errorf("%s: %d layers, want seccomp, sysctl, capability, device, lsm, uffdgate", row.Path, len(row.Layers))
				}
			}
		})
	}
}

// checkAgainstModel: where the kernel or uffdgate decides, the outcome is
// decision.Expect's.
func checkAgainstModel(t *testing.T, h hostinfo.Host, r *explain.Report, pid int, g hostinfo.Gate) {
	t.Helper()
	p, err := h.Process(pid, InitNS)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := h.SubjectOf(p)
	model := hostinfo.KernelOnly
	if g.Enforced() {
		model = g.Model()
	}
	k := decision.Kernel{UnprivilegedUserfaultfd: r.Kernel.Sysctl == "1"}
	for _, row := range r.Rows {
		if row.DecidedBy != "kernel" && row.DecidedBy != "uffdgate" {
			continue
		}
		path := decision.PathSyscall64
		if row.Path == "ioctl" {
			path = decision.PathIoctl64
		}
		flags := decision.CloseOnExec
		if row.UserModeOnly {
			flags |= decision.UserModeOnly
		}
		o := decision.Expect(k, model, s, decision.Request{Path: path, Flags: flags, FlagsKnown: true})
		want := "allowed"
		if o.Errno != 0 {
			want = unix.ErrnoName(o.Errno)
		}
		if row.Outcome != want || (o.Layer != "" && o.Layer != row.DecidedBy) {
			t.Errorf("%s umo=%v: %s by %s, the model says %s by %q", row.Path, row.UserModeOnly, row.Outcome, row.DecidedBy, want, o.Layer)
		}
	}
}

// TestHypothetical explains processes described on the command line against a
// policy that allowlists an executable.
func TestHypothetical(t *testing.T) {
	f := New()
	f.Node(hostinfo.DeviceName, 0o660, 0, 108, nil)
	f.Exe("usr/bin/qemu-system-x86_64", 0x801, 4711)
	f.Exe("usr/bin/other", 0x801, 4712)
	f.Dir("sys/fs/cgroup/machine.slice", 50)
	p, err := policy.Parse("p.yaml", []byte("mode: user-mode-only\nrules:\n  - name: qemu\n    executables: [/usr/bin/qemu-system-x86_64]\n"))
	if err != nil {
		t.Fatal(err)
	}
	g := f.Host().WithPolicy(p, true)
	for _, c := range []struct {
		spec explain.Spec
		want string
		note string
	}{
		{explain.Spec{Exe: "/usr/bin/qemu-system-x86_64", UID: 64055, Cgroup: "/machine.slice"},
			"syscall/kf=EPERM:kernel syscall/umo=allowed:kernel ioctl/kf=allowed:kernel ioctl/umo=allowed:kernel", "primary group in /etc/passwd"},
		{explain.Spec{Exe: "/usr/bin/other", UID: 64055},
			"syscall/kf=EPERM:kernel syscall/umo=allowed:kernel ioctl/kf=EPERM:uffdgate ioctl/umo=allowed:kernel", "no --cgroup"},
		{explain.Spec{Exe: "/usr/bin/other", UID: 5000, Caps: 1 << 19},
			"syscall/kf=allowed:kernel syscall/umo=allowed:kernel ioctl/kf=EACCES:device ioctl/umo=EACCES:device", "assuming gid 5000"},
		{explain.Spec{Exe: "/usr/bin/other", UID: 5000, Caps: AllCaps, UserNS: true},
			"syscall/kf=EPERM:kernel syscall/umo=allowed:kernel ioctl/kf=EACCES:device ioctl/umo=EACCES:device", "child user namespace"},
	} {
		id, err := explain.FromSpec(f.Host(), c.spec)
		if err != nil {
			t.Fatal(err)
		}
		r := explain.Explain(f.Host(), id, g)
		if got := rows(r); got != c.want {
			t.Errorf("%+v:\n got  %s\n want %s", c.spec, got, c.want)
		}
		if !strings.Contains(strings.Join(id.Notes, ";"), c.note) {
			t.Errorf("%+v: notes %v, want one about %q", c.spec, id.Notes, c.note)
		}
		if l := layer(r.Rows[0], "seccomp"); l.Verdict != explain.Unknown {
			t.Errorf("seccomp of a hypothetical process: %+v", l)
		}
	}
	for _, c := range []struct {
		spec explain.Spec
		want string
	}{
		{explain.Spec{Exe: "usr/bin/other"}, "give an absolute path"},
		{explain.Spec{Exe: "/usr/bin/missing"}, "--exe /usr/bin/missing"},
		{explain.Spec{Exe: "/usr/bin/other", Cgroup: "/nope"}, "--cgroup"},
	} {
		if _, err := explain.FromSpec(f.Host(), c.spec); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error about %q", c.spec, err, c.want)
		}
	}
	for in, want := range map[string]uint64{"none": 0, "CAP_SYS_PTRACE,cap_dac_override": 1<<19 | 1<<1, "sys_ptrace": 1 << 19} {
		if got, err := explain.ParseCaps(in); err != nil || got != want {
			t.Errorf("ParseCaps(%q) = %#x, %v", in, got, err)
		}
	}
	if _, err := explain.ParseCaps("CAP_SYS_PTRAC"); err == nil || !strings.Contains(err.Error(), "did you mean CAP_SYS_PTRACE") {
		t.Errorf("misspelt capability: %v", err)
	}
}

func TestNoSuchProcess(t *testing.T) {
	f := New()
	f.AddProc(Proc{PID: 2, Name: "kthreadd", Kthread: true})
	if _, err := explain.FromPID(f.Host(), 4711); err == nil || !strings.Contains(err.Error(), "no process 4711") {
		t.Errorf("missing pid: %v", err)
	}
	if _, err := explain.FromPID(f.Host(), 2); err == nil || !strings.Contains(err.Error(), "kernel thread") {
		t.Errorf("kernel thread: %v", err)
	}
}

// outcome maps an errno a subject saw to explain's outcome words.
func outcome(errno int) string {
	if errno == 0 {
		return "allowed"
	}
	return unix.ErrnoName(unix.Errno(errno))
}

func compareWithAttempts(t *testing.T, who string, r *explain.Report, a testsubject.Attempts) {
	t.Helper()
	got := map[string]int{"syscall/false": a.SyscallKernelFault, "syscall/true": a.SyscallUserModeOnly,
		"ioctl/false": a.IoctlKernelFault, "ioctl/true": a.IoctlUserModeOnly}
	for _, row := range r.Rows {
		k := row.Path + "/" + map[bool]string{false: "false", true: "true"}[row.UserModeOnly]
		if row.Outcome != outcome(got[k]) {
			t.Errorf("%s: explain says %s %s is %s (%s: %s); the process itself got %s", who, row.Path, row.Flags, row.Outcome, row.DecidedBy, row.Why, outcome(got[k]))
		}
	}
	t.Logf("%s: %s", who, rows(r))
}

// TestLiveSelf explains this test process and compares with what it can do.
func TestLiveSelf(t *testing.T) {
	h := hostinfo.Live()
	g, err := h.ResolveGate(state.DefaultPath, "")
	if err != nil {
		t.Fatal(err)
	}
	id, err := explain.FromPID(h, os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if id.UID != uint32(os.Geteuid()) || id.Exe == "" {
		t.Errorf("identity %+v", id)
	}
	r := explain.Explain(h, id, g)
	try := func(p decision.Path, flags uint32) int {
		fd, err := uffd.Create(p, uint64(flags))
		if err == nil {
			unix.Close(fd)
			return 0
		}
		var e unix.Errno
		if !errors.As(err, &e) {
			t.Fatal(err)
		}
		return int(e)
	}
	a := testsubject.Attempts{
		SyscallKernelFault: try(decision.PathSyscall64, decision.CloseOnExec), SyscallUserModeOnly: try(decision.PathSyscall64, decision.CloseOnExec|decision.UserModeOnly),
		IoctlKernelFault: try(decision.PathIoctl64, decision.CloseOnExec), IoctlUserModeOnly: try(decision.PathIoctl64, decision.CloseOnExec|decision.UserModeOnly),
	}
	compareWithAttempts(t, "this test process", r, a)
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil || !strings.Contains(b.String(), "DECIDED BY") {
		t.Errorf("text: %v\n%s", err, b.String())
	}
	b.Reset()
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back explain.Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || len(back.Rows) != 4 {
		t.Errorf("JSON: %v, %d rows", err, len(back.Rows))
	}
}

// TestLiveSubjects explains children started with dropped capabilities and
// compares each row with what the child itself got.
func TestLiveSubjects(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("subjects with other uids need root")
	}
	h := hostinfo.Live()
	g, err := h.ResolveGate(state.DefaultPath, "")
	if err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
	for name, spec := range map[string]testsubject.Spec{
		"nobody, no capabilities":  {Cred: nobody, Action: "attempts"},
		"nobody, CAP_SYS_PTRACE":   {Cred: nobody, AmbientCaps: []uintptr{unix.CAP_SYS_PTRACE}, Action: "attempts"},
		"nobody, CAP_DAC_OVERRIDE": {Cred: nobody, AmbientCaps: []uintptr{unix.CAP_DAC_OVERRIDE}, Action: "attempts"},
	} {
		t.Run(name, func(t *testing.T) {
			sub := testsubject.Start(t, spec)
			var a testsubject.Attempts
			if err := json.Unmarshal(sub.Result, &a); err != nil {
				t.Fatal(err)
			}
			t.Logf("attempts %+v", a)
			id, err := explain.FromPID(h, sub.PID)
			if err != nil {
				t.Fatal(err)
			}
			if id.UID != 65534 || id.Seccomp != "none" || !id.InitUserNS {
				t.Errorf("identity %+v", id)
			}
			compareWithAttempts(t, name, explain.Explain(h, id, g), a)
		})
	}
}

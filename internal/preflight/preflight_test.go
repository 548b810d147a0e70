//go:build linux

package preflight

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fixture is a fake host: a /proc with self/status and cmdline, a securityfs with
// lsm, and a vmlinux BTF path, all under a temporary directory. Empty strings
// leave the file out.
type fixture struct {
	status, cmdline, lsm string
}

func (f fixture) host(t *testing.T) Host {
	t.Helper()
	root := t.TempDir()
	h := Host{
		Proc:       filepath.Join(root, "proc"),
		SecurityFS: filepath.Join(root, "sys/kernel/security"),
		VmlinuxBTF: filepath.Join(root, "sys/kernel/btf/vmlinux"),
		// Never mount anything over a fixture.
		MountSecurity: false,
	}
	for _, d := range []string{filepath.Join(h.Proc, "self"), h.SecurityFS, filepath.Dir(h.VmlinuxBTF)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, content string) {
		if content == "" {
			return
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(h.Proc, "self/status"), f.status)
	write(filepath.Join(h.Proc, "cmdline"), f.cmdline)
	write(filepath.Join(h.SecurityFS, "lsm"), f.lsm)
	return h
}

func status(capEff string) string {
	return "Name:\tuffdgate\nUmask:\t0022\nState:\tR (running)\nTgid:\t42\nPid:\t42\n" +
		"CapInh:\t0000000000000000\nCapPrm:\t" + capEff + "\nCapEff:\t" + capEff + "\nCapBnd:\t000001ffffffffff\n" +
		"CapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n"
}

func asProblem(t *testing.T, err error) *Problem {
	t.Helper()
	var p *Problem
	if !errors.As(err, &p) {
		t.Fatalf("error %v (%T) is not a *Problem", err, err)
	}
	if p.What == "" || p.Fix == "" {
		t.Errorf("problem without what or fix: %+v", p)
	}
	if p.Error() != p.What+"\nfix: "+p.Fix {
		t.Errorf("Error() = %q", p.Error())
	}
	return p
}

func TestCheckPrivileges(t *testing.T) {
	for _, c := range []struct {
		name, capEff string
		missing      string // "" when the check passes
	}{
		{"root", "000001ffffffffff", ""},
		{"CAP_SYS_ADMIN only", "0000000000200000", ""},
		{"CAP_BPF and CAP_PERFMON", "000000c000000000", ""},
		{"CAP_BPF, CAP_PERFMON and more", "000000c000080001", ""},
		{"no capabilities", "0000000000000000", "missing CAP_BPF and CAP_PERFMON (effective capabilities 0x0)"},
		{"CAP_BPF only", "0000008000000000", "missing CAP_PERFMON (effective capabilities 0x8000000000)"},
		{"CAP_PERFMON only", "0000004000000000", "missing CAP_BPF (effective capabilities 0x4000000000)"},
		{"CAP_SYS_PTRACE only", "0000000000080000", "missing CAP_BPF and CAP_PERFMON (effective capabilities 0x80000)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := fixture{status: status(c.capEff)}.host(t).CheckPrivileges()
			if c.missing == "" {
				if err != nil {
					t.Fatalf("CheckPrivileges: %v", err)
				}
				return
			}
			p := asProblem(t, err)
			if want := "not privileged enough to load BPF LSM programs: " + c.missing; p.What != want {
				t.Errorf("What = %q\nwant   %q", p.What, want)
			}
			if !strings.Contains(p.Fix, "sudo uffdgate run") {
				t.Errorf("Fix = %q, want it to say to run as root", p.Fix)
			}
		})
	}
}

func TestCheckPrivilegesUnreadable(t *testing.T) {
	for _, c := range []struct {
		name, status, what string
	}{
		{"no status file", "", "no such file or directory"},
		{"no CapEff line", "Name:\tx\nCapPrm:\t000001ffffffffff\n", "no CapEff line"},
		{"garbage CapEff", "CapEff:\tzzzz\n", "invalid syntax"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := asProblem(t, fixture{status: c.status}.host(t).CheckPrivileges())
			if !strings.HasPrefix(p.What, "cannot read this process's capabilities: ") || !strings.Contains(p.What, c.what) {
				t.Errorf("What = %q, want the cause %q", p.What, c.what)
			}
		})
	}
}

func TestCheckBPFLSM(t *testing.T) {
	const fixPrefix = "add `lsm="
	for _, c := range []struct {
		name, lsm, cmdline string
		wantOK             bool
		wantWhat, wantLSM  string
	}{
		{name: "bpf active", lsm: "lockdown,capability,landlock,bpf", wantOK: true},
		{name: "bpf active, no newline", lsm: "capability,bpf", wantOK: true},
		{name: "bpf first", lsm: "bpf,capability\n", wantOK: true},
		{
			name:     "Debian 12 default, no lsm= on the command line",
			lsm:      "lockdown,capability,landlock,yama,apparmor\n",
			cmdline:  "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=1234 ro quiet\n",
			wantWhat: `BPF LSM is not active: the active LSMs are "lockdown,capability,landlock,yama,apparmor" (no lsm= parameter on the kernel command line)`,
			wantLSM:  "lsm=lockdown,capability,landlock,yama,apparmor,bpf",
		},
		{
			name:     "lsm= given without bpf",
			lsm:      "lockdown,capability,landlock\n",
			cmdline:  "BOOT_IMAGE=/vmlinuz root=/dev/vda1 lsm=lockdown,capability,landlock quiet\n",
			wantWhat: `BPF LSM is not active: the active LSMs are "lockdown,capability,landlock" (currently lsm=lockdown,capability,landlock on the kernel command line)`,
			wantLSM:  "lsm=lockdown,capability,landlock,bpf",
		},
		{
			name:     "the last lsm= wins",
			lsm:      "capability,selinux\n",
			cmdline:  "lsm=apparmor ro lsm=capability,selinux\n",
			wantWhat: `BPF LSM is not active: the active LSMs are "capability,selinux" (currently lsm=capability,selinux on the kernel command line)`,
			wantLSM:  "lsm=capability,selinux,bpf",
		},
		{
			name:     "a similar LSM name is not bpf",
			lsm:      "capability,bpffs,notbpf\n",
			cmdline:  "ro\n",
			wantWhat: `BPF LSM is not active: the active LSMs are "capability,bpffs,notbpf" (no lsm= parameter on the kernel command line)`,
			wantLSM:  "lsm=capability,bpffs,notbpf,bpf",
		},
		{
			name:     "no /proc/cmdline",
			lsm:      "capability,apparmor\n",
			wantWhat: `BPF LSM is not active: the active LSMs are "capability,apparmor" (no lsm= parameter on the kernel command line)`,
			wantLSM:  "lsm=capability,apparmor,bpf",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := fixture{lsm: c.lsm, cmdline: c.cmdline}.host(t).CheckBPFLSM()
			if c.wantOK {
				if err != nil {
					t.Fatalf("CheckBPFLSM: %v", err)
				}
				return
			}
			p := asProblem(t, err)
			if p.What != c.wantWhat {
				t.Errorf("What = %q\nwant   %q", p.What, c.wantWhat)
			}
			// The fix carries the exact parameter, between backquotes.
			want := "add `" + c.wantLSM + "` to the kernel command line"
			if !strings.HasPrefix(p.Fix, want) {
				t.Errorf("Fix = %q\nwant it to start with %q", p.Fix, want)
			}
			if !strings.HasPrefix(p.Fix, fixPrefix) || !strings.Contains(p.Fix, "update-grub") {
				t.Errorf("Fix = %q, want the grub steps", p.Fix)
			}
		})
	}
}

func TestCheckBPFLSMNoSecurityFS(t *testing.T) {
	h := fixture{}.host(t)
	for _, err := range []error{h.CheckBPFLSM(), func() error { _, err := h.ActiveLSMs(); return err }()} {
		p := asProblem(t, err)
		lsmFile := filepath.Join(h.SecurityFS, "lsm")
		if !strings.HasPrefix(p.What, "cannot read the active LSM list "+lsmFile) {
			t.Errorf("What = %q", p.What)
		}
		if want := "mount securityfs: `mount -t securityfs securityfs " + h.SecurityFS + "`"; p.Fix != want {
			t.Errorf("Fix = %q, want %q", p.Fix, want)
		}
	}
}

func TestActiveLSMs(t *testing.T) {
	got, err := fixture{lsm: "lockdown,capability,landlock,bpf\n"}.host(t).ActiveLSMs()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != "lockdown|capability|landlock|bpf" {
		t.Errorf("ActiveLSMs = %q", got)
	}
}

func TestCheckBTFMissing(t *testing.T) {
	h := fixture{}.host(t)
	p := asProblem(t, h.CheckBTF())
	want := "this kernel exposes no BTF (" + h.VmlinuxBTF + " is missing): BPF LSM programs need it (CONFIG_DEBUG_INFO_BTF)"
	if p.What != want {
		t.Errorf("What = %q\nwant   %q", p.What, want)
	}
	if !strings.Contains(p.Fix, "CONFIG_DEBUG_INFO_BTF=y") {
		t.Errorf("Fix = %q", p.Fix)
	}
}

func TestCheckBTFGarbage(t *testing.T) {
	h := fixture{}.host(t)
	if err := os.WriteFile(h.VmlinuxBTF, []byte("this is not BTF at all, nor an ELF file"), 0o444); err != nil {
		t.Fatal(err)
	}
	p := asProblem(t, h.CheckBTF())
	if !strings.HasPrefix(p.What, "cannot parse the kernel's BTF: ") {
		t.Errorf("What = %q", p.What)
	}
}

// Live checks on this host: it has userfaultfd, BTF and BPF LSM support.

func TestCheckUserfaultfdLive(t *testing.T) {
	if err := CheckUserfaultfd(); err != nil {
		t.Fatalf("CheckUserfaultfd on this host: %v", err)
	}
}

func TestCheckBTFLive(t *testing.T) {
	h := Default()
	if err := h.CheckBTF(); err != nil {
		t.Fatalf("CheckBTF on this host's /sys/kernel/btf/vmlinux: %v", err)
	}
	// This host's kernel has BPF LSM compiled in and active (it refuses the
	// programs later, at load: kernel-facts.md).
	if err := h.CheckLSM(); err != nil {
		t.Fatalf("CheckLSM on this host: %v", err)
	}
}

func TestDefault(t *testing.T) {
	want := Host{Proc: "/proc", SecurityFS: "/sys/kernel/security", VmlinuxBTF: "/sys/kernel/btf/vmlinux", MountSecurity: true}
	if got := Default(); got.Proc != want.Proc || got.SecurityFS != want.SecurityFS || got.VmlinuxBTF != want.VmlinuxBTF || !got.MountSecurity {
		t.Errorf("Default() = %+v, want %+v", got, want)
	}
}

// This host as root: privileged, and the checks agree with its own files.
func TestCheckPrivilegesLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (the development machine runs tests as root)")
	}
	if err := Default().CheckPrivileges(); err != nil {
		t.Fatalf("CheckPrivileges as root: %v", err)
	}
}

func TestCheckBPFLSMLive(t *testing.T) {
	h := Default()
	h.MountSecurity = false
	b, err := os.ReadFile(filepath.Join(h.SecurityFS, "lsm"))
	if err != nil {
		t.Fatalf("this host has securityfs mounted: %v", err)
	}
	active := strings.Contains(","+strings.TrimSpace(string(b))+",", ",bpf,")
	err = h.CheckBPFLSM()
	if active != (err == nil) {
		t.Errorf("lsm list %q: CheckBPFLSM = %v", b, err)
	}
}

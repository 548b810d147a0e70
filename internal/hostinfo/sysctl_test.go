//go:build linux && amd64

package hostinfo_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/uffdgate/uffdgate/internal/hostinfo"
	"github.com/uffdgate/uffdgate/internal/hostinfo/hostfixture"
)

const key = hostinfo.UffdSysctl

// describe renders assignments as "file:line=value[applied|shadowed][*winner]".
func describe(cfg hostinfo.SysctlConfig) string {
	var parts []string
	for _, a := range cfg.Assignments {
		s := fmt.Sprintf("%s:%d=%s", a.File, a.Line, a.Value)
		if !a.Applied {
			s += " shadowed by " + a.ShadowedBy
		}
		if a.Wins {
			s += " *"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// TestSysctlPrecedence: files are applied in order of their names across all
// directories; of same-named files only the one in the most important
// directory is read; /etc/sysctl.conf comes last unless a drop-in links to it;
// within a file, and across files, the last assignment wins.
func TestSysctlPrecedence(t *testing.T) {
	for _, c := range []struct {
		name  string
		files map[string]string // name -> content; "->TARGET" makes a symlink
		want  string
	}{
		{"libvirt drop-in", map[string]string{
			"usr/lib/sysctl.d/60-qemu-postcopy-migration.conf": "# libvirt\nvm.unprivileged_userfaultfd = 1\n"},
			"/usr/lib/sysctl.d/60-qemu-postcopy-migration.conf:2=1 *"},
		{"masked by /etc", map[string]string{
			"usr/lib/sysctl.d/60-qemu-postcopy-migration.conf": "vm.unprivileged_userfaultfd = 1\n",
			"etc/sysctl.d/60-qemu-postcopy-migration.conf":     "->/dev/null"},
			"/usr/lib/sysctl.d/60-qemu-postcopy-migration.conf:1=1 shadowed by /etc/sysctl.d/60-qemu-postcopy-migration.conf (a symlink to /dev/null: masked)"},
		{"overridden by /etc, same name", map[string]string{
			"usr/lib/sysctl.d/60-qemu.conf": "vm.unprivileged_userfaultfd = 1\n",
			"etc/sysctl.d/60-qemu.conf":     "vm/unprivileged_userfaultfd=0\n"},
			"/usr/lib/sysctl.d/60-qemu.conf:1=1 shadowed by /etc/sysctl.d/60-qemu.conf; /etc/sysctl.d/60-qemu.conf:1=0 *"},
		{"name order beats directory", map[string]string{
			"etc/sysctl.d/10-harden.conf":      "vm.unprivileged_userfaultfd = 0\n",
			"usr/lib/sysctl.d/90-vendor.conf":  "vm.unprivileged_userfaultfd = 1\n",
			"run/sysctl.d/50-transient.conf":   "-vm.unprivileged_userfaultfd = 0\n",
			"usr/local/lib/sysctl.d/00-a.conf": "; nothing\nkernel.pid_max = 1\n"},
			"/etc/sysctl.d/10-harden.conf:1=0; /run/sysctl.d/50-transient.conf:1=0; /usr/lib/sysctl.d/90-vendor.conf:1=1 *"},
		{"sysctl.conf last", map[string]string{
			"etc/sysctl.d/99-zzz.conf": "vm.unprivileged_userfaultfd = 0\n",
			"etc/sysctl.conf":          "vm.unprivileged_userfaultfd=1\n"},
			"/etc/sysctl.d/99-zzz.conf:1=0; /etc/sysctl.conf:1=1 *"},
		{"sysctl.conf through Debian's symlink, read once", map[string]string{
			"etc/sysctl.d/99-sysctl.conf":    "->../sysctl.conf",
			"etc/sysctl.conf":                "vm.unprivileged_userfaultfd=1\n",
			"usr/lib/sysctl.d/99-zzzz.conf":  "vm.unprivileged_userfaultfd=0\n",
			"usr/lib/sysctl.d/README.sysctl": "vm.unprivileged_userfaultfd=1\n"},
			"/etc/sysctl.d/99-sysctl.conf:1=1; /usr/lib/sysctl.d/99-zzzz.conf:1=0 *"},
		{"glob, last line of a file", map[string]string{
			"etc/sysctl.d/30-all.conf": "vm.unprivileged_* = 1\n# vm.unprivileged_userfaultfd = 1\nvm.swappiness\nvm.unprivileged_userfaultfd = 0   \n"},
			"/etc/sysctl.d/30-all.conf:1=1; /etc/sysctl.d/30-all.conf:4=0 *"},
		{"/lib shadowed by /usr/lib", map[string]string{
			"usr/lib/sysctl.d/50-x.conf": "vm.unprivileged_userfaultfd = 0\n",
			"lib/sysctl.d/50-x.conf":     "vm.unprivileged_userfaultfd = 1\n"},
			"/lib/sysctl.d/50-x.conf:1=1 shadowed by /usr/lib/sysctl.d/50-x.conf; /usr/lib/sysctl.d/50-x.conf:1=0 *"},
		{"nothing sets it", map[string]string{"usr/lib/sysctl.d/50-pid-max.conf": "kernel.pid_max = 4194304\n"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := hostfixture.New()
			for n, content := range c.files {
				if target, ok := strings.CutPrefix(content, "->"); ok {
					f.Link(n, target)
				} else {
					f.File(n, content)
				}
			}
			cfg, err := f.Host().SysctlConfig(key)
			if err != nil {
				t.Fatal(err)
			}
			if got := describe(cfg); got != c.want {
				t.Errorf("got  %s\nwant %s", got, c.want)
			}
			if (cfg.Winner == nil) != !strings.Contains(c.want, "*") {
				t.Errorf("winner %+v", cfg.Winner)
			}
			if len(cfg.Unreadable) > 0 {
				t.Errorf("unreadable: %v", cfg.Unreadable)
			}
		})
	}
}

// TestSysctlLive reads this host: the value is the one /proc/sys holds, and
// every file read is a .conf file in one of the directories or sysctl.conf.
func TestSysctlLive(t *testing.T) {
	h := hostinfo.Live()
	v, err := h.Sysctl(key)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("/proc/sys/vm/unprivileged_userfaultfd")
	if err != nil || strings.TrimSpace(string(raw)) != v {
		t.Errorf("Sysctl = %q, /proc/sys says %q (%v)", v, raw, err)
	}
	cfg, err := h.SysctlConfig(key)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range cfg.Files {
		if seen[f] {
			t.Errorf("%s applied twice", f)
		}
		seen[f] = true
		if f != "/etc/sysctl.conf" && !strings.HasSuffix(f, ".conf") {
			t.Errorf("%s is not a sysctl.d file", f)
		}
		if real, err := os.Readlink(f); err == nil && strings.HasSuffix(real, "sysctl.conf") && seen["/etc/sysctl.conf"] {
			t.Errorf("/etc/sysctl.conf applied both directly and through %s", f)
		}
	}
	for _, a := range cfg.Assignments {
		b, err := os.ReadFile(a.File)
		if err != nil {
			t.Fatal(err)
		}
		if line := strings.Split(string(b), "\n")[a.Line-1]; !strings.Contains(line, a.Value) {
			t.Errorf("%s:%d is %q, not an assignment of %s", a.File, a.Line, line, a.Value)
		}
	}
}

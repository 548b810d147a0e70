//go:build linux

// Package preflight checks that this host can run the gate and, when it cannot,
// says exactly why and what to change.
package preflight

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/uffd"
)

// Problem is a reason the gate cannot run here, with the fix.
type Problem struct {
	What string
	Fix  string
}

func (p *Problem) Error() string { return p.What + "\nfix: " + p.Fix }

// Host describes where to look; tests point it at fixture trees.
type Host struct {
	Proc          string // "/proc"
	SecurityFS    string // "/sys/kernel/security"
	VmlinuxBTF    string // "/sys/kernel/btf/vmlinux"
	MountSecurity bool   // try to mount securityfs when it is missing
}

// Default is the running host.
func Default() Host {
	return Host{Proc: "/proc", SecurityFS: "/sys/kernel/security", VmlinuxBTF: "/sys/kernel/btf/vmlinux", MountSecurity: true}
}

// CheckPrivileges verifies the effective capabilities needed to load and attach
// BPF LSM programs.
func (h Host) CheckPrivileges() error {
	eff, err := h.effectiveCaps()
	if err != nil {
		return &Problem{What: "cannot read this process's capabilities: " + err.Error(), Fix: "run uffdgate with /proc mounted"}
	}
	has := func(c int) bool { return eff&(1<<uint(c)) != 0 }
	var missing []string
	if !has(capability.BPF) && !has(capability.SysAdmin) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(capability.Perfmon) && !has(capability.SysAdmin) {
		missing = append(missing, "CAP_PERFMON")
	}
	if len(missing) > 0 {
		return &Problem{
			What: fmt.Sprintf("not privileged enough to load BPF LSM programs: missing %s (effective capabilities 0x%x)", strings.Join(missing, " and "), eff),
			Fix:  "run it as root: `sudo uffdgate run`",
		}
	}
	return nil
}

func (h Host) effectiveCaps() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(h.Proc, "self/status"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff line in /proc/self/status")
}

// CheckUserfaultfd verifies the kernel has userfaultfd at all.
func CheckUserfaultfd() error {
	fd, err := uffd.Syscall(decision.UserModeOnly | decision.CloseOnExec)
	if errors.Is(err, unix.ENOSYS) {
		return &Problem{
			What: "this kernel has no userfaultfd (built without CONFIG_USERFAULTFD): there is nothing to gate",
			Fix:  "none needed: no process on this host can create userfaultfd contexts",
		}
	}
	if err != nil {
		return &Problem{What: "creating a user-mode-only userfaultfd context failed: " + err.Error(),
			Fix: "check for a seccomp filter on uffdgate (`grep Seccomp /proc/self/status`) and run it unconfined"}
	}
	unix.Close(fd)
	return nil
}

// CheckBTF verifies the kernel exposes BTF, which both backends need (CO-RE).
func (h *Host) CheckBTF() error {
	if _, err := os.Stat(h.VmlinuxBTF); err != nil {
		return &Problem{
			What: "this kernel exposes no BTF (" + h.VmlinuxBTF + " is missing): BPF LSM programs need it (CONFIG_DEBUG_INFO_BTF)",
			Fix:  "boot a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian, Ubuntu, Fedora and RHEL kernels are)",
		}
	}
	var spec *btf.Spec
	var err error
	if h.VmlinuxBTF == Default().VmlinuxBTF {
		// The kernel's own BTF is mapped, not read into memory: it is large.
		spec, err = btf.LoadKernelSpec()
	} else {
		var f *os.File
		if f, err = os.Open(h.VmlinuxBTF); err != nil {
			return &Problem{What: "cannot read " + h.VmlinuxBTF + ": " + err.Error(), Fix: "run uffdgate as root"}
		}
		defer f.Close()
		spec, err = btf.LoadSpecFromReader(f)
	}
	if err != nil {
		return &Problem{What: "cannot parse the kernel's BTF: " + err.Error(), Fix: "report this kernel's version to uffdgate's issue tracker"}
	}
	_ = spec // parsed to prove it is BTF; the loader maps its own
	return nil
}

// CheckLSMCompiled verifies the kernel was built with BPF LSM: its hook
// functions are in kallsyms. (Looking it up in the BTF would index every kernel
// type: megabytes the daemon then keeps as its peak memory.)
func (h *Host) CheckLSMCompiled() error {
	f, err := os.Open(filepath.Join(h.Proc, "kallsyms"))
	if err != nil {
		return nil // cannot tell here; loading the program will
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasSuffix(sc.Text(), " bpf_lsm_inode_init_security_anon") {
			return nil
		}
	}
	if sc.Err() != nil {
		return nil
	}
	return &Problem{
		What: "this kernel was built without BPF LSM support (no bpf_lsm_inode_init_security_anon in /proc/kallsyms; CONFIG_BPF_LSM)",
		Fix:  "boot a kernel built with CONFIG_BPF_LSM=y (Debian, Ubuntu, Fedora and RHEL kernels are)",
	}
}

// ActiveLSMs returns the active LSM list, mounting securityfs if needed.
func (h Host) ActiveLSMs() ([]string, error) {
	lsmFile := filepath.Join(h.SecurityFS, "lsm")
	b, err := os.ReadFile(lsmFile)
	if errors.Is(err, os.ErrNotExist) && h.MountSecurity {
		if merr := unix.Mount("securityfs", h.SecurityFS, "securityfs", 0, ""); merr == nil {
			b, err = os.ReadFile(lsmFile)
		}
	}
	if err != nil {
		return nil, &Problem{What: "cannot read the active LSM list " + lsmFile + ": " + err.Error(),
			Fix: "mount securityfs: `mount -t securityfs securityfs " + h.SecurityFS + "`"}
	}
	return strings.Split(strings.TrimSpace(string(b)), ","), nil
}

// CheckBPFLSM verifies "bpf" is in the active LSM list.
func (h Host) CheckBPFLSM() error {
	lsms, err := h.ActiveLSMs()
	if err != nil {
		return err
	}
	for _, l := range lsms {
		if l == "bpf" {
			return nil
		}
	}
	want := strings.Join(append(lsms, "bpf"), ",")
	cmdline, _ := os.ReadFile(filepath.Join(h.Proc, "cmdline"))
	current := "no lsm= parameter"
	for _, f := range strings.Fields(string(cmdline)) {
		if strings.HasPrefix(f, "lsm=") {
			current = "currently " + f
		}
	}
	return &Problem{
		What: fmt.Sprintf("BPF LSM is not active: the active LSMs are %q (%s on the kernel command line)", strings.Join(lsms, ","), current),
		Fix:  fmt.Sprintf("add `lsm=%s` to the kernel command line (e.g. in GRUB_CMDLINE_LINUX of /etc/default/grub, then `update-grub` and reboot)", want),
	}
}

// CheckCommon runs the checks both backends need, in the order that makes the
// first failure the most useful one to fix.
func (h *Host) CheckCommon() error {
	if err := h.CheckPrivileges(); err != nil {
		return err
	}
	if err := CheckUserfaultfd(); err != nil {
		return err
	}
	return h.CheckBTF()
}

// CheckLSM runs what only the LSM backend needs: BPF LSM compiled in and active.
func (h *Host) CheckLSM() error {
	if err := h.CheckLSMCompiled(); err != nil {
		return err
	}
	return h.CheckBPFLSM()
}

// CheckAll runs every check the LSM backend needs.
func (h *Host) CheckAll() error {
	if err := h.CheckCommon(); err != nil {
		return err
	}
	return h.CheckLSM()
}

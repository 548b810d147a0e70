//go:build vme2e

package e2e

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Requests used by the rule tests. The device node is widened (TestMain), so the
// kernel's own checks let everyone through and the gate alone decides.
const (
	kfReq  = "ioctl:0x80000" // kernel-fault context
	umoReq = "ioctl:0x80001" // user-mode-only context
	ok     = 0
	eperm  = int(unix.EPERM)
)

// install copies the test subject to path (a new file: its own identity).
func install(t *testing.T, path string, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(tryBin)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tmp := path + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	// syscall.Chmod: os.Chmod would drop a raw 04000 bit (os.FileMode spells it ModeSetuid).
	if err := syscall.Chmod(tmp, uint32(mode)); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func mkCgroup(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll("/sys/fs/cgroup"+path, 0o755); err != nil {
		t.Fatal(err)
	}
}

// step runs one subject invocation; want lists the errno of the first request of
// each report it prints (one per process in an exec/spawn chain).
type step struct {
	name string
	argv []string
	want []int
}

func runSteps(t *testing.T, d *daemon, steps []step) {
	t.Helper()
	for _, s := range steps {
		reps := runAll(t, s.argv)
		var got []int
		for _, r := range reps {
			if len(r.Attempts) == 0 {
				t.Fatalf("%s: report without attempts: %+v", s.name, r)
			}
			got = append(got, r.Attempts[0].Errno)
		}
		if fmt.Sprint(got) != fmt.Sprint(s.want) {
			t.Errorf("%s: got %v, want %v (%v)", s.name, names(got), names(s.want), s.argv)
		}
	}
}

func names(es []int) []string {
	var out []string
	for _, e := range es {
		out = append(out, errnoName(e))
	}
	return out
}

// runAll runs a subject and decodes every report it (and what it execs or
// spawns) prints.
func runAll(t *testing.T, argv []string) []report {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	out, err := cmd.Output()
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var reps []report
	for {
		var r report
		if derr := dec.Decode(&r); derr == io.EOF {
			break
		} else if derr != nil {
			t.Fatalf("%v: %v: %s %s", argv, derr, out, stderr.String())
		}
		if r.Error != "" {
			t.Fatalf("%v: %s (%s)", argv, r.Error, stderr.String())
		}
		reps = append(reps, r)
	}
	if err != nil {
		t.Fatalf("%v: %v: %s %s", argv, err, out, stderr.String())
	}
	return reps
}

func as(uid int, extra ...string) []string {
	return append([]string{"-uid", fmt.Sprint(uid), "-caps", "none"}, extra...)
}

func subj(bin string, args ...string) []string { return append([]string{bin}, args...) }

// TestRuleSelectors: each selector alone, and combined with AND; decided for the
// calling process at the call.
func TestRuleSelectors(t *testing.T) {
	vmm := install(t, "/tmp/opt/vmm/qemu", 0o755)
	if err := os.Symlink(vmm, "/tmp/opt/qemu-link"); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(vmm, "/tmp/opt/vmm/qemu-hardlink"); err != nil {
		t.Fatal(err)
	}
	cp := install(t, "/tmp/opt/copy/qemu", 0o755)
	for _, c := range []string{"/vms/vm1/sub", "/other"} {
		mkCgroup(t, c)
	}
	cases := []struct {
		name, policy string
		steps        []step
	}{
		{"executable", "rules:\n  - name: vmm\n    executables: [/tmp/opt/vmm/qemu]\nallowlist: {capabilities: []}\n", []step{
			{"the allowed file", subj(vmm, as(1000, "-try", kfReq)...), []int{ok}},
			{"through a symlink", subj("/tmp/opt/qemu-link", as(1000, "-try", kfReq)...), []int{ok}},
			{"through a hard link", subj("/tmp/opt/vmm/qemu-hardlink", as(1000, "-try", kfReq)...), []int{ok}},
			{"a copy elsewhere", subj(cp, as(1000, "-try", kfReq)...), []int{eperm}},
			{"another binary", subj(tryBin, as(1000, "-try", kfReq)...), []int{eperm}},
			{"root running another binary", subj(tryBin, "-caps", "all", "-try", kfReq), []int{eperm}},
		}},
		{"cgroup", "rules:\n  - name: vm1\n    cgroups: [/vms/vm1]\nallowlist: {capabilities: []}\n", []step{
			{"in the cgroup", subj(tryBin, as(1000, "-cgroup", "/vms/vm1", "-try", kfReq)...), []int{ok}},
			{"below it", subj(tryBin, as(1000, "-cgroup", "/vms/vm1/sub", "-try", kfReq)...), []int{eperm}},
			{"above it", subj(tryBin, as(1000, "-cgroup", "/vms", "-try", kfReq)...), []int{eperm}},
			{"elsewhere", subj(tryBin, as(1000, "-cgroup", "/other", "-try", kfReq)...), []int{eperm}},
		}},
		{"cgroup subtree", "rules:\n  - name: vms\n    cgroups: [/vms/**]\nallowlist: {capabilities: []}\n", []step{
			{"the cgroup itself", subj(tryBin, as(1000, "-cgroup", "/vms", "-try", kfReq)...), []int{ok}},
			{"two levels below", subj(tryBin, as(1000, "-cgroup", "/vms/vm1/sub", "-try", kfReq)...), []int{ok}},
			{"elsewhere", subj(tryBin, as(1000, "-cgroup", "/other", "-try", kfReq)...), []int{eperm}},
			{"the root cgroup", subj(tryBin, as(1000, "-cgroup", "/", "-try", kfReq)...), []int{eperm}},
		}},
		{"uid", "rules:\n  - name: tester\n    uids: [tester]\nallowlist: {capabilities: []}\n", []step{
			{"uid 1000 (tester)", subj(tryBin, as(1000, "-try", kfReq)...), []int{ok}},
			{"uid 1001", subj(tryBin, as(1001, "-try", kfReq)...), []int{eperm}},
			{"root", subj(tryBin, "-caps", "all", "-try", kfReq), []int{eperm}},
		}},
		{"gid", "rules:\n  - name: kvm-group\n    gids: [2000]\nallowlist: {capabilities: []}\n", []step{
			{"gid 2000", subj(tryBin, as(1001, "-gid", "2000", "-try", kfReq)...), []int{ok}},
			{"gid 1001", subj(tryBin, as(1001, "-try", kfReq)...), []int{eperm}},
		}},
		{"capability", "rules:\n  - name: admins\n    capabilities: [CAP_SYS_ADMIN]\nallowlist: {capabilities: []}\n", []step{
			{"root without CAP_SYS_PTRACE, with CAP_SYS_ADMIN", subj(tryBin, "-caps", "all-but-ptrace", "-try", kfReq), []int{ok}},
			{"uid 1000 with CAP_SYS_PTRACE only", subj(tryBin, "-uid", "1000", "-caps", "ptrace", "-try", kfReq), []int{eperm}},
			{"root of a user namespace", subj(tryBin, "-userns", "-uid", "1000", "-caps", "none", "-try", kfReq), []int{eperm}},
		}},
		{"AND of selectors", "rules:\n  - name: vmm-as-tester-in-vms\n    executables: [/tmp/opt/vmm/qemu]\n    uids: [1000]\n    cgroups: [/vms/**]\nallowlist: {capabilities: []}\n", []step{
			{"all three match", subj(vmm, as(1000, "-cgroup", "/vms/vm1", "-try", kfReq)...), []int{ok}},
			{"wrong uid", subj(vmm, as(1001, "-cgroup", "/vms/vm1", "-try", kfReq)...), []int{eperm}},
			{"wrong cgroup", subj(vmm, as(1000, "-cgroup", "/other", "-try", kfReq)...), []int{eperm}},
			{"wrong executable", subj(tryBin, as(1000, "-cgroup", "/vms/vm1", "-try", kfReq)...), []int{eperm}},
		}},
		{"mode deny with a user-mode-only grant", "mode: deny\nrules:\n  - name: gc\n    uids: [1000]\n    grant: user-mode-only\n", []step{
			{"granted process, user-mode-only", subj(tryBin, as(1000, "-try", umoReq)...), []int{ok}},
			{"granted process, kernel-fault", subj(tryBin, as(1000, "-try", kfReq)...), []int{eperm}},
			{"other process, user-mode-only", subj(tryBin, as(1001, "-try", umoReq)...), []int{eperm}},
		}},
		{"audit-only rule", "rules:\n  - name: trial\n    uids: [1000]\n    audit_only: true\nallowlist: {capabilities: []}\n", []step{
			{"matching process is still refused", subj(tryBin, as(1000, "-try", kfReq)...), []int{eperm}},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := startDaemon(t, c.policy)
			runSteps(t, d, c.steps)
			if c.name == "audit-only rule" {
				if _, found := d.waitFor(func(m map[string]any) bool {
					r, _ := m["reason"].(string)
					return m["decision"] == "deny" && m["rules"] == "trial" && strings.Contains(r, "audit-only rule trial would allow it")
				}, 10*time.Second); !found {
					t.Errorf("no denial naming the audit-only rule:\n%s", d.log())
				}
			}
			if c.name == "executable" {
				if _, found := d.waitFor(func(m map[string]any) bool {
					return m["decision"] == "allow" && m["rules"] == "vmm" && m["exe"] == vmm
				}, 10*time.Second); !found {
					t.Errorf("no event naming rule vmm for the allowed kernel-fault context:\n%s", d.log())
				}
			}
			d.stop(t)
		})
	}
	fmt.Printf("RULES selector cases: %d policies\n", len(cases))
}

// setFileCaps gives path the file capability CAP_SYS_PTRACE, permitted and
// effective (struct vfs_cap_data, revision 2).
func setFileCaps(t *testing.T, path string) {
	t.Helper()
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x1) // VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
	binary.LittleEndian.PutUint32(b[4:], 1<<19)          // permitted: CAP_SYS_PTRACE
	if err := unix.Setxattr(path, "security.capability", b, 0); err != nil {
		t.Fatalf("setting file capabilities on %s: %v", path, err)
	}
}

// TestProcessTree: the allowlist does not follow the process tree, either way.
func TestProcessTree(t *testing.T) {
	vmm := install(t, "/tmp/tree/vmm", 0o755)
	suid := install(t, "/tmp/tree/suid", 0o4755)
	fcap := install(t, "/tmp/tree/fcap", 0o755)
	setFileCaps(t, fcap)
	next := func(bin string, args ...string) string { return strings.Join(append([]string{bin}, args...), " ") }
	t.Run("executable rule", func(t *testing.T) {
		d := startDaemon(t, "rules:\n  - name: vmm\n    executables: [/tmp/tree/vmm]\nallowlist: {capabilities: []}\n")
		runSteps(t, d, []step{
			{"allowed child of a denied parent", subj(tryBin, as(1000, "-try", kfReq, "-then", "spawn", "-next", next(vmm, "-uid", "1000", "-caps", "none", "-try", kfReq))...), []int{eperm, ok}},
			{"denied child of an allowed parent", subj(vmm, as(1000, "-try", kfReq, "-then", "spawn", "-next", next(tryBin, "-uid", "1000", "-caps", "none", "-try", kfReq))...), []int{ok, eperm}},
			{"allowed process execs another binary", subj(vmm, as(1000, "-try", kfReq, "-then", "exec", "-next", next(tryBin, "-uid", "1000", "-caps", "none", "-try", kfReq))...), []int{ok, eperm}},
			{"denied process execs the allowed binary", subj(tryBin, as(1000, "-try", kfReq, "-then", "exec", "-next", next(vmm, "-uid", "1000", "-caps", "none", "-try", kfReq))...), []int{eperm, ok}},
		})
		d.stop(t)
	})
	t.Run("setuid binary", func(t *testing.T) {
		d := startDaemon(t, "rules:\n  - name: root\n    uids: [0]\nallowlist: {capabilities: []}\n")
		runSteps(t, d, []step{
			{"uid 1000 execs a setuid-root binary", subj(tryBin, as(1000, "-try", kfReq, "-then", "exec", "-next", next(suid, "-caps", "all", "-try", kfReq))...), []int{eperm, ok}},
		})
		d.stop(t)
	})
	t.Run("file-capability binary", func(t *testing.T) {
		d := startDaemon(t, "") // default policy: CAP_SYS_PTRACE allowlists
		runSteps(t, d, []step{
			{"uid 1000 execs a binary with file capability cap_sys_ptrace+ep", subj(tryBin, as(1000, "-try", kfReq, "-then", "exec", "-next", next(fcap, "-uid", "1000", "-caps", "all", "-try", kfReq))...), []int{eperm, ok}},
		})
		d.stop(t)
	})
	fmt.Println("TREE hierarchy cases: 7")
}

// TestUpgradeRenameOver: a package upgrade renames a new binary over the allowed
// path; the rule follows without a restart, the replaced file stays allowed for
// the processes (and links) that still use it, and a copy is never allowed.
func TestUpgradeRenameOver(t *testing.T) {
	path := install(t, "/tmp/up/vmm", 0o755)
	if err := os.MkdirAll("/tmp/keep", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(path, "/tmp/keep/old-vmm"); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "rules:\n  - name: vmm\n    executables: [/tmp/up/vmm]\nallowlist: {capabilities: []}\n")
	defer d.stop(t)
	runSteps(t, d, []step{{"before the upgrade", subj(path, as(1000, "-try", kfReq)...), []int{ok}}})
	install(t, path, 0o755) // writes a new file and renames it over the path
	start := time.Now()
	for {
		r := runAll(t, subj(path, as(1000, "-try", kfReq)...))
		if r[0].Attempts[0].Errno == ok {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the new binary at %s is still refused 10 s after the upgrade", path)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("the upgraded binary was allowed %v after the rename", time.Since(start).Round(time.Millisecond))
	runSteps(t, d, []step{
		{"the replaced binary, through a link", subj("/tmp/keep/old-vmm", as(1000, "-try", kfReq)...), []int{ok}},
		{"a copy of the new binary", subj(install(t, "/tmp/elsewhere/vmm", 0o755), as(1000, "-try", kfReq)...), []int{eperm}},
	})
}

// TestReloadUnderLoad: while processes keep creating contexts, the policy is
// reloaded again and again (SIGHUP and file changes, and once a broken file):
// the allowed process is never refused and the refused one never allowed, so at
// no moment was neither policy in force.
func TestReloadUnderLoad(t *testing.T) {
	vmm := install(t, "/tmp/load/vmm", 0o755)
	policyA := "rules:\n  - name: vmm\n    executables: [/tmp/load/vmm]\n  - name: a\n    uids: [4242]\nallowlist: {capabilities: []}\n"
	policyB := "rules:\n  - name: vmm\n    executables: [/tmp/load/vmm]\n  - name: b\n    uids: [4343]\nallowlist: {capabilities: []}\n"
	dir := t.TempDir()
	pfile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pfile, []byte(policyA), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemonFile(t, pfile)
	defer d.stop(t)

	const n = 4000
	load := func(argv []string) chan []report {
		ch := make(chan []report, 1)
		go func() { ch <- runAll(t, argv) }()
		return ch
	}
	allowed := load(subj(vmm, as(1000, "-repeat", fmt.Sprint(n), "-try", kfReq)...))
	refused := load(subj(tryBin, as(1000, "-repeat", fmt.Sprint(n), "-try", kfReq)...))
	reloads := 0
	var ra, rr []report
	for ra == nil || rr == nil {
		select {
		case ra = <-allowed:
		case rr = <-refused:
		case <-time.After(150 * time.Millisecond):
			text := policyA
			if reloads%2 == 0 {
				text = policyB
			}
			if reloads == 5 {
				text = "mode: sometimes\n" // broken: must leave the current policy in force
			}
			if err := os.WriteFile(pfile+".new", []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			os.Rename(pfile+".new", pfile)
			d.cmd.Process.Signal(syscall.SIGHUP)
			reloads++
		}
	}
	if got := ra[0].Counts[kfReq]; got[ok] != n {
		t.Errorf("allowed binary during %d reloads: %v, want %d successes", reloads, got, n)
	}
	if got := rr[0].Counts[kfReq]; got[eperm] != n {
		t.Errorf("refused binary during %d reloads: %v, want %d refusals", reloads, got, n)
	}
	ok, bad := 0, 0
	for _, l := range strings.Split(d.log(), "\n") {
		ok += strings.Count(l, `"event":"reloaded"`)
		bad += strings.Count(l, `"event":"reload_failed"`)
	}
	if ok < 5 || bad < 1 {
		t.Errorf("daemon logged %d reloads and %d failed ones; want at least 5 and 1", ok, bad)
	}
	t.Logf("RELOAD %d reload attempts (%d applied, %d rejected) during 2x%d requests: no gap", reloads, ok, bad, n)
	fmt.Printf("RELOAD %d reload attempts (%d applied, %d rejected) during 2x%d requests: no gap\n", reloads, ok, bad, n)
}

// TestExamplePolicies: each policy in examples/ does what its comment says.
func TestExamplePolicies(t *testing.T) {
	inCg := func(cg string, args ...string) []string { return append([]string{"-cgroup", cg}, args...) }
	cases := []struct {
		file  string
		setup func(t *testing.T)
		steps []step
	}{
		{"qemu-libvirt-postcopy.yaml", func(t *testing.T) {
			install(t, "/usr/bin/qemu-system-x86_64", 0o755)
			install(t, "/usr/libexec/qemu-kvm", 0o755)
			mkCgroup(t, "/machine.slice/machine-qemu-1-vm.scope")
			mkCgroup(t, "/user.slice")
		}, []step{
			{"qemu in its machine's cgroup", subj("/usr/bin/qemu-system-x86_64", as(107, inCg("/machine.slice/machine-qemu-1-vm.scope", "-try", kfReq)...)...), []int{ok}},
			{"qemu-kvm in its machine's cgroup", subj("/usr/libexec/qemu-kvm", as(107, inCg("/machine.slice/machine-qemu-1-vm.scope", "-try", kfReq)...)...), []int{ok}},
			{"qemu started by a user outside libvirt", subj("/usr/bin/qemu-system-x86_64", as(1000, inCg("/user.slice", "-try", kfReq)...)...), []int{eperm}},
			{"another program in the machine's cgroup", subj(tryBin, as(107, inCg("/machine.slice/machine-qemu-1-vm.scope", "-try", kfReq)...)...), []int{eperm}},
			{"anyone, user-mode-only", subj(tryBin, as(1000, inCg("/user.slice", "-try", umoReq)...)...), []int{ok}},
			{"root with CAP_SYS_PTRACE", subj(tryBin, "-caps", "all", "-try", kfReq), []int{ok}},
		}},
		{"firecracker.yaml", func(t *testing.T) {
			install(t, "/usr/bin/firecracker", 0o755)
			install(t, "/usr/local/bin/uffd-page-fault-handler", 0o755)
			mkCgroup(t, "/firecracker/vm-42")
		}, []step{
			{"firecracker in the jailer's cgroup", subj("/usr/bin/firecracker", as(1000, inCg("/firecracker/vm-42", "-try", kfReq)...)...), []int{ok}},
			{"the page-fault handler in the jailer's cgroup", subj("/usr/local/bin/uffd-page-fault-handler", as(1000, inCg("/firecracker/vm-42", "-try", kfReq)...)...), []int{ok}},
			{"firecracker outside the jail", subj("/usr/bin/firecracker", as(1000, inCg("/", "-try", kfReq)...)...), []int{eperm}},
			{"another process that can open /dev/userfaultfd", subj(tryBin, as(1000, inCg("/firecracker/vm-42", "-try", kfReq)...)...), []int{eperm}},
			{"that process, user-mode-only", subj(tryBin, as(1000, "-try", umoReq)...), []int{ok}},
		}},
		{"cloud-hypervisor.yaml", func(t *testing.T) {
			install(t, "/usr/bin/cloud-hypervisor", 0o755)
			install(t, "/tmp/stolen/cloud-hypervisor", 0o755)
		}, []step{
			{"cloud-hypervisor as its service user", subj("/usr/bin/cloud-hypervisor", as(990, "-try", kfReq)...), []int{ok}},
			{"cloud-hypervisor as someone else", subj("/usr/bin/cloud-hypervisor", as(1000, "-try", kfReq)...), []int{eperm}},
			{"a copy of the binary, as the service user", subj("/tmp/stolen/cloud-hypervisor", as(990, "-try", kfReq)...), []int{eperm}},
		}},
		{"criu-lazy-pages.yaml", func(t *testing.T) {
			install(t, "/usr/sbin/criu", 0o755)
		}, []step{
			{"criu restoring as root", subj("/usr/sbin/criu", "-caps", "all-but-ptrace", "-try", kfReq), []int{ok}},
			{"criu run by a user", subj("/usr/sbin/criu", as(1000, "-try", kfReq)...), []int{eperm}},
			{"another root process with CAP_SYS_PTRACE", subj(tryBin, "-caps", "all", "-try", kfReq), []int{eperm}},
		}},
		{"no-kernel-faults.yaml", func(t *testing.T) {}, []step{
			{"root with CAP_SYS_PTRACE, kernel-fault", subj(tryBin, "-caps", "all", "-try", kfReq), []int{eperm}},
			{"root with CAP_SYS_PTRACE, syscall path", subj(tryBin, "-caps", "all", "-try", "syscall:0"), []int{eperm}},
			{"root, user-mode-only", subj(tryBin, "-caps", "all", "-try", umoReq), []int{ok}},
			{"uid 1000, user-mode-only", subj(tryBin, as(1000, "-try", umoReq)...), []int{ok}},
		}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			c.setup(t)
			d := startDaemonFile(t, "/examples/"+c.file)
			runSteps(t, d, c.steps)
			d.stop(t)
		})
	}
}

const forgeBin = "/exeforge"

// forgeResult is what exeforge prints.
type forgeResult struct {
	ForgedErrno int    `json:"forged_errno"`
	UffdErrno   int    `json:"uffd_errno"`
	PID         int    `json:"pid"`
	Error       string `json:"error"`
}

// TestExecutableForgery: an unprivileged process that points its executable link
// at an allowed binary (prctl PR_SET_MM_MAP with exe_fd, from inside a user
// namespace of its own) is still judged by the file it exec'd; the event says
// its link was replaced. The allowed binary itself keeps working.
func TestExecutableForgery(t *testing.T) {
	vmm := install(t, "/tmp/forge/vmm", 0o755)
	d := startDaemon(t, "rules:\n  - name: vmm\n    executables: [/tmp/forge/vmm]\nallowlist: {capabilities: []}\n")
	defer d.stop(t)
	setSysctl(t, 1) // the kernel's own check lets uid 1000 through: the gate alone decides
	defer setSysctl(t, 0)
	runSteps(t, d, []step{{"the allowed binary", subj(vmm, as(testUID, "-try", kfReq)...), []int{ok}}})
	for _, path := range []string{"syscall", "/dev/userfaultfd"} {
		out, err := exec.Command(forgeBin, fmt.Sprint(testUID), vmm, path).CombinedOutput()
		var r forgeResult
		if jerr := json.Unmarshal(out, &r); err != nil || jerr != nil || r.Error != "" {
			t.Fatalf("exeforge %s: %v %v: %s", path, err, jerr, out)
		}
		if r.ForgedErrno != 0 {
			t.Fatalf("exeforge %s: prctl(PR_SET_MM_MAP) failed with %s: the forgery did not happen, so this test proves nothing", path, errnoName(r.ForgedErrno))
		}
		if r.UffdErrno != eperm {
			t.Errorf("%s: a process posing as %s got %s for a kernel-fault context, want EPERM", path, vmm, errnoName(r.UffdErrno))
		}
		ev, found := d.waitFor(func(m map[string]any) bool { return m["pid"] == float64(r.PID) && m["event"] == "decision" }, 10*time.Second)
		switch {
		case !found:
			t.Errorf("%s: no event for the forging process %d:\n%s", path, r.PID, d.log())
		case ev["decision"] != "deny" || ev["exe_replaced"] != true || ev["exe"] != vmm || !strings.Contains(ev["reason"].(string), "replaced after exec"):
			t.Errorf("%s: event for the forging process: %v; want a denial with exe_replaced, exe %s and the reason saying so", path, ev, vmm)
		}
	}
	fmt.Println("RULES forgery cases: 2 paths")
}

// waiting is a subject started with a "wait" option: it has printed "ready" on
// stderr and acts when it reads a line on stdin.
type waiting struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *strings.Builder
}

func startWaiting(t *testing.T, argv ...string) *waiting {
	t.Helper()
	w := &waiting{cmd: exec.Command(argv[0], argv[1:]...), out: &strings.Builder{}}
	var err error
	if w.in, err = w.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stderr, err := w.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	w.cmd.Stdout = w.out
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.cmd.Process.Kill() })
	if line, err := bufio.NewReader(stderr).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("%v: %q, %v", argv, line, err)
	}
	return w
}

// release lets the subject act and decodes what it printed into v.
func (w *waiting) release(t *testing.T, v any) {
	t.Helper()
	fmt.Fprintln(w.in, "go")
	if err := w.cmd.Wait(); err != nil {
		t.Fatalf("%v: %v: %s", w.cmd.Args, err, w.out)
	}
	if err := json.Unmarshal([]byte(w.out.String()), v); err != nil {
		t.Fatalf("%v: %v: %s", w.cmd.Args, err, w.out)
	}
}

// TestExecRecordsAcrossRestart: exec records outlive a restart of uffdgate, so
// a process started under one daemon is judged by what it exec'd under the next
// one too: the allowed binary keeps its grant, and a process that forges its
// executable link in between is still refused. A process started while no
// daemon ran has no record: no executable rule allows it (the gate cannot tell
// what it exec'd), and the daemon names it.
func TestExecRecordsAcrossRestart(t *testing.T) {
	vmm := install(t, "/tmp/restart/vmm", 0o755)
	policy := "rules:\n  - name: vmm\n    executables: [/tmp/restart/vmm]\nallowlist: {capabilities: []}\n"
	setSysctl(t, 1)
	defer setSysctl(t, 0)
	d1 := startDaemon(t, policy)
	allowed := startWaiting(t, append([]string{vmm}, as(testUID, "-wait", "-try", kfReq)...)...)
	forger := startWaiting(t, forgeBin, fmt.Sprint(testUID), vmm, "syscall", "wait")
	d1.stop(t)
	gap := startWaiting(t, append([]string{vmm}, as(testUID, "-wait", "-try", kfReq)...)...)
	d2 := startDaemon(t, policy)
	defer d2.stop(t)
	if _, found := d2.waitFor(func(m map[string]any) bool {
		return m["event"] == "no_exec_record" && m["pid"] == float64(gap.cmd.Process.Pid) && m["exe"] == vmm
	}, 10*time.Second); !found {
		t.Errorf("the daemon did not name the process without an exec record (pid %d):\n%s", gap.cmd.Process.Pid, d2.log())
	}

	var r report
	allowed.release(t, &r)
	if len(r.Attempts) != 1 || r.Attempts[0].Errno != ok {
		t.Errorf("the allowed binary, started under the previous daemon: %+v, want ok", r)
	}
	var f forgeResult
	forger.release(t, &f)
	if f.Error != "" || f.ForgedErrno != 0 {
		t.Fatalf("exeforge: %+v: the forgery did not happen, so this proves nothing", f)
	}
	if f.UffdErrno != eperm {
		t.Errorf("a process that forged its executable link after the restart got %s, want EPERM", errnoName(f.UffdErrno))
	}
	var g report
	gap.release(t, &g)
	if len(g.Attempts) != 1 || g.Attempts[0].Errno != eperm {
		t.Errorf("the allowed binary, started while no daemon ran: %+v, want EPERM", g)
	}
	if m, _ := d2.find(func(m map[string]any) bool { return m["event"] == "started" }); m["exec_records"] != "pinned in /sys/fs/bpf/uffdgate" {
		t.Errorf("started line: exec_records = %v", m["exec_records"])
	}
	fmt.Println("RULES restart cases: 3")
}

// TestLongExecutablePath: an executable under a directory with a long name
// (as Go's build cache makes) is logged by its full path, or, when the process
// is gone before the daemon reads /proc, by the kernel's copy with the cut name
// marked; never by a wrong path. (Regression: the cut was silent.)
func TestLongExecutablePath(t *testing.T) {
	dir := "/tmp/" + strings.Repeat("c8", 32)
	bin := install(t, dir+"/uffdtry", 0o755)
	cut := "/tmp/" + strings.Repeat("c8", 32)[:47] + "…/uffdtry"
	d := startDaemon(t, "")
	defer d.stop(t)
	const n = 10
	for range n {
		runAll(t, subj(bin, as(testUID, "-try", kfReq)...))
	}
	var full, marked int
	count := func(m map[string]any) bool {
		if m["event"] == "decision" && m["comm"] == "uffdtry" && strings.HasPrefix(fmt.Sprint(m["exe"]), "/tmp/c8") {
			switch m["exe"] {
			case bin:
				full++
			case cut:
				marked++
			default:
				t.Errorf("event names the executable %q; want %q or %q", m["exe"], bin, cut)
			}
		}
		return false
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		full, marked = 0, 0
		d.find(count)
		if full+marked >= n {
			break
		}
	}
	if full+marked != n {
		t.Errorf("%d events for the long path (%d full, %d marked), want %d:\n%s", full+marked, full, marked, n, d.log())
	}
	t.Logf("long path: %d events by /proc, %d by the kernel's marked copy", full, marked)
}

// TestContainerIDInEvents: a request from a process in a container runtime's
// cgroup names the container in its event.
func TestContainerIDInEvents(t *testing.T) {
	id := strings.Repeat("0123456789abcdef", 4)
	cg := "/system.slice/docker-" + id + ".scope"
	mkCgroup(t, cg)
	d := startDaemon(t, "")
	defer d.stop(t)
	r := runAll(t, subj(tryBin, as(testUID, "-cgroup", cg, "-try", kfReq)...))[0]
	ev, found := d.waitFor(func(m map[string]any) bool { return m["event"] == "decision" && m["tgid"] == float64(r.PID) }, 10*time.Second)
	if !found || ev["cgroup"] != cg || ev["container_id"] != id {
		t.Errorf("event for a process in %s: %v; want cgroup and container_id %s", cg, ev, id)
	}
}

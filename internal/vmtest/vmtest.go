// Package vmtest boots Debian kernels in QEMU with a tiny initramfs so tests
// can run programs under a real BPF LSM. Kernels come from `make kernels`.
package vmtest

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Kernel is one fetched kernel image.
type Kernel struct {
	Series  string // "6.1" or "6.12"
	Vmlinuz string // absolute path
	Version string // Debian package version, e.g. "6.1.192-3"
	// Vmlinux is the uncompressed ELF from the same package if
	// fetch-kernels.sh extracted it (else ""); Run boots it via PVH, which
	// skips firmware and decompression (~5s per boot under TCG).
	Vmlinux string
}

// Series are the kernel series every VM test runs against.
var Series = []string{"6.1", "6.12"}

// Exit codes Result.ExitCode uses besides the command's own status.
const (
	ExitSignal  = -1 // the command was killed by a signal
	ExitTimeout = -2 // guestinit killed the command at the guest timeout
	ExitSetup   = -3 // guestinit could not run the command
)

const exitMarker = "UFFDGATE-VM-EXIT"

var markerRE = regexp.MustCompile(exitMarker + ` (-?[0-9]+)`)

// Kernels returns all kernels in Series. A missing kernel fails the test
// rather than skipping it, so enforcement tests cannot silently vanish.
func Kernels(t testing.TB) []Kernel {
	t.Helper()
	dir := kernelDir(t)
	var ks []Kernel
	var missing []string
	for _, s := range Series {
		vmlinuz := filepath.Join(dir, s, "vmlinuz")
		ver, err := os.ReadFile(filepath.Join(dir, s, "version"))
		if err == nil {
			_, err = os.Stat(vmlinuz)
		}
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (%v)", s, err))
			continue
		}
		k := Kernel{Series: s, Vmlinuz: vmlinuz, Version: strings.TrimSpace(string(ver))}
		if vmlinux := filepath.Join(dir, s, "vmlinux"); fileExists(vmlinux) {
			k.Vmlinux = vmlinux
		}
		ks = append(ks, k)
	}
	if len(missing) > 0 {
		t.Fatalf("VM test kernels missing in %s: %s; run `make kernels` at the repo root", dir, strings.Join(missing, ", "))
	}
	return ks
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// kernelDir mirrors scripts/fetch-kernels.sh: UFFDGATE_KERNEL_DIR, relative
// paths resolved against the repo root, default .cache/kernels.
func kernelDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("UFFDGATE_KERNEL_DIR")
	if dir == "" {
		dir = ".cache/kernels"
	}
	if filepath.IsAbs(dir) {
		return dir
	}
	return filepath.Join(repoRoot(t), dir)
}

// repoRoot finds the module root from the test's working directory (the
// package directory under `go test`).
func repoRoot(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(out))
	if err != nil || gomod == "" || gomod == os.DevNull {
		t.Fatalf("vmtest: cannot locate go.mod (go env GOMOD: %q, %v)", gomod, err)
	}
	return filepath.Dir(gomod)
}

// BuildStatic builds the main package pkg as a static linux/amd64 binary in
// dir and returns its path. pkg is resolved like `go build` does from the
// test's working directory.
func BuildStatic(t testing.TB, pkg, dir string) string {
	t.Helper()
	out := filepath.Join(dir, path.Base(pkg))
	goBuild(t, "build", out, pkg, nil)
	return out
}

// BuildTest compiles the tests of pkg (`go test -c`) as a static binary in
// dir, with optional build tags, and returns its path.
func BuildTest(t testing.TB, pkg, dir string, tags ...string) string {
	t.Helper()
	out := filepath.Join(dir, path.Base(pkg)+".test")
	goBuild(t, "test", out, pkg, tags, "-c")
	return out
}

// BuildC compiles the C program src (relative to the repository root) as a
// static x86-64 binary in dir with the host's gcc, and returns its path. For
// test subjects that Go cannot be, such as a process that unmaps its own
// executable.
func BuildC(t testing.TB, src, dir string) string {
	t.Helper()
	out := filepath.Join(dir, strings.TrimSuffix(path.Base(src), ".c"))
	args := []string{"-static", "-O2", "-Wall", "-Werror", "-fno-stack-protector", "-fcf-protection=none", "-o", out, filepath.Join(repoRoot(t), src)}
	if b, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s (scripts/install-test-deps.sh installs gcc and libc6-dev)", strings.Join(args, " "), err, b)
	}
	return out
}

func goBuild(t testing.TB, verb, out, pkg string, tags []string, extra ...string) {
	t.Helper()
	args := append([]string{verb}, extra...)
	args = append(args, "-trimpath", "-o", out)
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	args = append(args, pkg)
	cmd := exec.Command("go", args...)
	// The guest is always x86-64 with no libc.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, b)
	}
}

// Guest describes what runs inside the VM.
type Guest struct {
	Files map[string]string // guest absolute path -> host file path (mode 0755 in the image)
	Argv  []string          // command the guest init runs, e.g. {"/e2e.test", "-test.v"}
	Env   []string          // added to PATH, HOME=/tmp, TMPDIR=/tmp
	LSM   string            // the kernel's lsm= list; DefaultLSM when empty
	// ICount runs the guest under TCG with QEMU's instruction counting: its
	// clock advances 1 ns per guest instruction executed, so timings inside are
	// instruction counts, untouched by the host's load. For cost measurements.
	ICount bool
	SMP    int // virtual CPUs; 2 when 0
}

// Result is the outcome of one VM run.
type Result struct {
	Output   string        // console output, "\n" line endings
	ExitCode int           // the command's exit status, or ExitSignal/ExitTimeout/ExitSetup
	Duration time.Duration // QEMU wall time, boot to power off
}

// guestSpec is read by guestinit from /vmtest.json; keep in sync with it.
type guestSpec struct {
	Argv       []string `json:"argv"`
	Env        []string `json:"env"`
	TimeoutSec int      `json:"timeout_sec"`
}

// DefaultLSM is the lsm= list the guests boot with: BPF LSM active.
const DefaultLSM = "lockdown,capability,landlock,bpf"

const cmdlineBase = "console=ttyS0 panic=-1 quiet rdinit=/init" +
	// Debian builds x32 in but disables it unless asked to.
	" syscall.x32=y"

// Run boots k with an initramfs holding guestinit, g.Files and the command
// spec, runs g.Argv and returns its console output and exit status. The
// test fails if the VM is not done within timeout or no exit marker shows.
func Run(t testing.TB, k Kernel, g Guest, timeout time.Duration) Result {
	t.Helper()
	if len(g.Argv) == 0 {
		t.Fatalf("vmtest.Run: empty Argv")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Fatalf("vmtest: %v; run `make kernels` to install QEMU", err)
	}
	dir := t.TempDir()
	initBin := BuildStatic(t, "github.com/uffdgate/uffdgate/internal/vmtest/guestinit", dir)

	// The guest gives up a bit before the host does, so a hung command
	// still yields its output and a marker instead of a killed QEMU.
	spec := guestSpec{Argv: g.Argv, Env: g.Env}
	if s := int((timeout - guestMargin(timeout)) / time.Second); s > 0 {
		spec.TimeoutSec = s
	}
	initrd := filepath.Join(dir, "initramfs.cpio")
	if err := writeInitramfs(initrd, initBin, g.Files, spec); err != nil {
		t.Fatalf("vmtest: initramfs: %v", err)
	}

	logPath := logFile(t, k)
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	defer logf.Close()

	accel, cpu := accelerator(qemu, k)
	var icount []string
	if g.ICount {
		accel, cpu = "tcg", "max"
		icount = []string{"-icount", "shift=0,align=off,sleep=off"}
	}
	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
		"-serial", "stdio", "-no-reboot",
		"-accel", accel, "-cpu", cpu, "-m", "1024", "-smp", strconv.Itoa(cmp.Or(g.SMP, 2)),
		"-kernel", cmp.Or(k.Vmlinux, k.Vmlinuz), "-initrd", initrd, "-append", cmdlineBase + " lsm=" + cmp.Or(g.LSM, DefaultLSM),
	}
	args = append(args, icount...)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, args...)
	console := &crlfWriter{w: logf}
	var stderr bytes.Buffer
	cmd.Stdout = console
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second

	start := time.Now()
	runErr := cmd.Run()
	res := Result{Output: console.String(), ExitCode: ExitSetup, Duration: time.Since(start)}
	fmt.Fprintf(logf, "\n--- qemu %s (accel %s) finished in %v: %v\n%s", k.Series, accel, res.Duration.Round(time.Millisecond), runErr, stderr.Bytes())

	fail := func(format string, a ...any) {
		t.Helper()
		if oops := kernelOops(res.Output); oops != "" {
			t.Logf("vmtest: the guest kernel oopsed:\n%s", oops)
		}
		t.Logf("vmtest: console tail (full log %s):\n%s", logPath, tail(res.Output, 60))
		if stderr.Len() > 0 {
			t.Logf("vmtest: qemu stderr:\n%s", stderr.Bytes())
		}
		t.Fatalf("vmtest: kernel %s: "+format, append([]any{k.Series}, a...)...)
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		fail("VM did not finish within %v (killed QEMU)", timeout)
	}
	m := markerRE.FindAllStringSubmatch(res.Output, -1)
	if len(m) == 0 {
		fail("no %s marker in console output (qemu: %v)", exitMarker, runErr)
	}
	res.ExitCode, _ = strconv.Atoi(m[len(m)-1][1])
	if res.ExitCode == ExitTimeout {
		fail("guest command did not finish within %ds", spec.TimeoutSec)
	}
	if runErr != nil {
		fail("qemu: %v", runErr)
	}
	return res
}

// guestMargin is how much of the timeout is left for boot and power off
// after the guest-side timeout fires: a TCG boot takes 5-15s depending on
// host load, and the guest timer only starts once the command runs.
func guestMargin(timeout time.Duration) time.Duration {
	return max(20*time.Second, timeout/4)
}

// accelerator picks KVM when it actually works and TCG otherwise;
// UFFDGATE_QEMU_ACCEL=kvm|tcg overrides.
func accelerator(qemu string, k Kernel) (accel, cpu string) {
	accel = os.Getenv("UFFDGATE_QEMU_ACCEL")
	if accel == "" {
		accel = "tcg"
		if kvmMu.Lock(); kvmOK == nil {
			ok := kvmWorks(qemu, k)
			kvmOK = &ok
		}
		if *kvmOK {
			accel = "kvm"
		}
		kvmMu.Unlock()
	}
	if accel == "kvm" {
		return accel, "host"
	}
	return accel, "max"
}

var (
	kvmMu sync.Mutex
	kvmOK *bool
)

// kvmWorks reports whether a KVM guest gets as far as the kernel's "no root"
// panic. Opening /dev/kvm is not enough: nested setups (e.g. inside
// Firecracker) accept the device but QEMU aborts or the guest hangs. The
// verdict is cached per host boot because a hang costs the whole deadline.
func kvmWorks(qemu string, k Kernel) bool {
	if unix.Access("/dev/kvm", unix.R_OK|unix.W_OK) != nil {
		return false
	}
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	cache := filepath.Join(os.TempDir(), "uffdgate-vmtest-kvm-"+strings.TrimSpace(string(bootID)))
	if b, err := os.ReadFile(cache); err == nil && len(bootID) > 0 {
		return string(b) == "kvm"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, qemu, "-nodefaults", "-no-user-config", "-display", "none",
		"-monitor", "none", "-serial", "stdio", "-no-reboot", "-accel", "kvm", "-cpu", "host",
		"-m", "256", "-kernel", k.Vmlinuz, "-append", "console=ttyS0 panic=-1").CombinedOutput()
	ok := err == nil && bytes.Contains(out, []byte("Kernel panic"))
	verdict := "tcg"
	if ok {
		verdict = "kvm"
	}
	if len(bootID) > 0 {
		tmp := fmt.Sprintf("%s.%d", cache, os.Getpid())
		if os.WriteFile(tmp, []byte(verdict), 0o644) == nil {
			_ = os.Rename(tmp, cache)
		}
	}
	return ok
}

func logFile(t testing.TB, k Kernel) string {
	t.Helper()
	dir := os.Getenv("UFFDGATE_VM_LOG_DIR")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return filepath.Join(dir, fmt.Sprintf("%s-%s-%d.log", name, k.Series, time.Now().UnixNano()))
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// crlfWriter keeps the console output with serial "\r\n" turned into "\n",
// copying it to w as it arrives so a hung VM's log is still useful.
type crlfWriter struct {
	mu    sync.Mutex
	w     *os.File
	buf   bytes.Buffer
	cr    bool // previous chunk ended in '\r'
	chunk []byte
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.chunk[:0]
	for _, b := range p {
		if c.cr && b != '\n' {
			out = append(out, '\r')
		}
		c.cr = b == '\r'
		if !c.cr {
			out = append(out, b)
		}
	}
	c.chunk = out
	c.buf.Write(out)
	_, _ = c.w.Write(out) // the log is best effort
	return len(p), nil
}

func (c *crlfWriter) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

// kernelOops returns the first kernel oops report in out (from its first line
// to 80 lines on), so that a crash's call trace is not lost above the tail.
func kernelOops(out string) string {
	lines := strings.Split(out, "\n")
	for i, l := range lines {
		for _, m := range []string{"BUG:", "Oops:", "general protection fault", "kernel BUG at", "WARNING: CPU:"} {
			if strings.Contains(l, m) {
				return strings.Join(lines[max(0, i-2):min(len(lines), i+80)], "\n")
			}
		}
	}
	return ""
}

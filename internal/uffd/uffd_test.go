//go:build linux && amd64

package uffd

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
)

// These tests create real userfaultfd contexts on this host (no gate attached):
// they pin down what the kernel does on every path and ABI, which the gate's
// decoding and the reference model rely on.

const scenarioEnv = "UFFD_TEST_SCENARIO"

func TestMain(m *testing.M) {
	if spec := os.Getenv(scenarioEnv); spec != "" {
		// Child process of TestEndToEnd: run one scenario, print its report.
		os.Exit(scenarioMain(spec))
	}
	os.Exit(m.Run())
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (the development machine runs tests as root)")
	}
}

// kernelConfig reads /proc/config.gz; nil when the kernel does not expose it.
func kernelConfig(t *testing.T) map[string]string {
	t.Helper()
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return nil
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]string{}
	sc := bufio.NewScanner(z)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasPrefix(k, "CONFIG_") {
			cfg[k] = v
		}
	}
	return cfg
}

func cmdline(t *testing.T) []string {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	kernelPart, _, _ := strings.Cut(string(b), " -- ")
	return strings.Fields(kernelPart)
}

// abis says which ABIs this kernel offers, from its configuration and command
// line: i386 needs CONFIG_IA32_EMULATION (and not ia32_emulation=0), x32 needs
// CONFIG_X86_X32_ABI (and syscall.x32=y where Debian's CONFIG_X86_X32_DISABLED
// is set).
type abis struct{ ia32, x32, known bool }

func hostABIs(t *testing.T) abis {
	cfg := kernelConfig(t)
	if cfg == nil {
		// No /proc/config.gz: assume Debian's defaults (i386 on), x32 unknown.
		return abis{ia32: true}
	}
	a := abis{known: true, ia32: cfg["CONFIG_IA32_EMULATION"] == "y", x32: cfg["CONFIG_X86_X32_ABI"] == "y"}
	// Debian builds x32 in but disables it unless booted with syscall.x32=y.
	if a.x32 && cfg["CONFIG_X86_X32_DISABLED"] == "y" && !slices.Contains(cmdline(t), "syscall.x32=y") {
		a.x32 = false
	}
	for _, p := range cmdline(t) {
		switch p {
		case "ia32_emulation=0", "ia32_emulation=false", "ia32_emulation=n":
			a.ia32 = false
		}
	}
	if a.ia32 && cfg["CONFIG_IA32_EMULATION_DEFAULT_DISABLED"] == "y" &&
		!slices.Contains(cmdline(t), "ia32_emulation=1") && !slices.Contains(cmdline(t), "ia32_emulation=true") {
		a.ia32 = false
	}
	return a
}

func fdTarget(t *testing.T, fd int) string {
	t.Helper()
	s, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if errors.As(err, &e) {
		return e
	}
	if err != nil {
		return unix.Errno(^uintptr(0) >> 1) // not an errno: never equal to a wanted one
	}
	return 0
}

func errnoName(e unix.Errno) string {
	if e == 0 {
		return "ok"
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("errno(%d)", int(e))
}

// wantFD checks that fd is a new userfaultfd with the close-on-exec and
// non-blocking state that flags (the low 32 bits the kernel keeps) ask for.
func wantFD(t *testing.T, what string, fd int, flags uint32) {
	t.Helper()
	if got := fdTarget(t, fd); got != "anon_inode:[userfaultfd]" {
		t.Errorf("%s: fd %d is %q, want anon_inode:[userfaultfd]", what, fd, got)
	}
	fdFlags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fdFlags&unix.FD_CLOEXEC != 0, flags&decision.CloseOnExec != 0; got != want {
		t.Errorf("%s: close-on-exec %v, want %v", what, got, want)
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fl&unix.O_NONBLOCK != 0, flags&decision.NonBlock != 0; got != want {
		t.Errorf("%s: non-blocking %v, want %v", what, got, want)
	}
	if err := Handshake(fd); err != nil {
		t.Errorf("%s: UFFDIO_API: %v", what, err)
	}
}

func TestConstants(t *testing.T) {
	if IocNew != 0xAA00 || API != 0xAA || IoctlAPI != 0xc018aa3f || IoctlRegister != 0xc020aa00 || IoctlCopy != 0xc028aa03 ||
		EventPagefault != 0x12 || MsgSize != 32 || RegisterMissing != 1 {
		t.Error("ABI constants differ from include/uapi/linux/userfaultfd.h (kernel-facts.md)")
	}
	if unsafe.Sizeof(apiMsg{}) != 0x18 || unsafe.Sizeof(registerMsg{}) != 0x20 || unsafe.Sizeof(copyMsg{}) != 0x28 {
		t.Errorf("ioctl argument sizes %#x %#x %#x do not match the _IOWR sizes in the ioctl numbers (0x18 0x20 0x28)",
			unsafe.Sizeof(apiMsg{}), unsafe.Sizeof(registerMsg{}), unsafe.Sizeof(copyMsg{}))
	}
}

// TestCreateEveryPath: a user-mode-only context through every path and ABI this
// host offers; the ABIs it does not offer fail with ENOSYS.
func TestCreateEveryPath(t *testing.T) {
	requireRoot(t)
	a := hostABIs(t)
	t.Logf("this kernel (config known %v): i386 ABI %v, x32 ABI %v", a.known, a.ia32, a.x32)
	flags := decision.UserModeOnly | decision.CloseOnExec
	for _, c := range []struct {
		path    decision.Path
		offered bool
	}{
		{decision.PathSyscall64, true},
		{decision.PathSyscallIA32, a.ia32},
		{decision.PathSyscallX32, a.x32},
		{decision.PathIoctl64, true},
		{decision.PathIoctlIA32, a.ia32},
		{decision.PathIoctlX32, a.x32},
	} {
		t.Run(c.path.String(), func(t *testing.T) {
			fd, err := Create(c.path, uint64(flags))
			if !a.known && (c.path == decision.PathSyscallX32 || c.path == decision.PathIoctlX32) {
				// Without the kernel's configuration, only consistency can be asserted.
				c.offered = errnoOf(err) != unix.ENOSYS
				t.Logf("%s: %v (kernel configuration unknown)", c.path, err)
			}
			if !c.offered {
				if errnoOf(err) != unix.ENOSYS {
					t.Fatalf("%s on a kernel without that ABI: fd %d, %v; want ENOSYS", c.path, fd, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s user-mode-only: %v", c.path, err)
			}
			defer unix.Close(fd)
			wantFD(t, c.path.String(), fd, flags)
		})
	}
	// The wrappers are the x86_64 paths.
	for _, c := range []struct {
		name   string
		create func(uint32) (int, error)
	}{{"Syscall", Syscall}, {"Device", Device}} {
		for _, f := range []uint32{decision.UserModeOnly, decision.UserModeOnly | decision.NonBlock, decision.CloseOnExec, 0} {
			fd, err := c.create(f)
			if err != nil {
				t.Errorf("%s(%#x) as root: %v", c.name, f, err)
				continue
			}
			wantFD(t, fmt.Sprintf("%s(%#x)", c.name, f), fd, f)
			unix.Close(fd)
		}
	}
}

func TestCreateNotACreationPath(t *testing.T) {
	for _, p := range []decision.Path{decision.PathUnknown, decision.PathForkEvent, decision.NumPaths} {
		if fd, err := Create(p, 1); err == nil || !strings.Contains(err.Error(), "is not a creation path") {
			t.Errorf("Create(%s) = %d, %v; want 'is not a creation path'", p, fd, err)
		}
	}
	for _, p := range []decision.Path{decision.PathSyscall64, decision.PathSyscallIA32, decision.PathForkEvent} {
		if fd, err := CreateOnDevice(-1, p, 1); err == nil || !strings.Contains(err.Error(), "is not a device path") {
			t.Errorf("CreateOnDevice(%s) = %d, %v; want 'is not a device path'", p, fd, err)
		}
	}
}

// TestDeviceFDReuse: one open fd of the node creates any number of contexts, on
// every device ABI (the fd is a transferable capability).
func TestDeviceFDReuse(t *testing.T) {
	requireRoot(t)
	dev, err := unix.Open(DevicePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("root cannot open %s: %v", DevicePath, err)
	}
	defer unix.Close(dev)
	paths := []decision.Path{decision.PathIoctl64}
	if hostABIs(t).ia32 {
		paths = append(paths, decision.PathIoctlIA32)
	}
	for i := 0; i < 3; i++ {
		for _, p := range paths {
			fd, err := CreateOnDevice(dev, p, uint64(decision.UserModeOnly))
			if err != nil {
				t.Fatalf("context %d through %s on one device fd: %v", i, p, err)
			}
			wantFD(t, p.String(), fd, decision.UserModeOnly)
			unix.Close(fd)
		}
	}
}

// TestHighBitsIgnored: the kernel keeps the low 32 bits of the flags (int flags),
// of the ioctl argument (new_userfaultfd(int)), of the ioctl command (unsigned
// int) and of the syscall number. Were a high bit used, the request would be
// invalid (EINVAL) or a different syscall.
func TestHighBitsIgnored(t *testing.T) {
	requireRoot(t)
	for _, c := range []struct {
		name  string
		path  decision.Path
		arg   uint64
		errno unix.Errno
	}{
		{"syscall UMO with bits 32-63 set", decision.PathSyscall64, 0xffffffff_00000000 | uint64(decision.UserModeOnly), 0},
		{"syscall UMO|CLOEXEC with bit 32", decision.PathSyscall64, 1<<32 | uint64(decision.UserModeOnly|decision.CloseOnExec), 0},
		{"syscall flags 0 with bit 32 (root holds CAP_SYS_PTRACE)", decision.PathSyscall64, 1 << 32, 0},
		{"syscall NONBLOCK with bit 63", decision.PathSyscall64, 1<<63 | uint64(decision.NonBlock), 0},
		{"syscall invalid low bits, valid-looking high bits", decision.PathSyscall64, 0x00000001_00000003, unix.EINVAL},
		{"ioctl UMO with bits 32-63 set", decision.PathIoctl64, 0xffffffff_00000000 | uint64(decision.UserModeOnly), 0},
		{"ioctl flags 0 with bit 32", decision.PathIoctl64, 1 << 32, 0},
		{"ioctl CLOEXEC with bit 40", decision.PathIoctl64, 1<<40 | uint64(decision.CloseOnExec), 0},
		{"ioctl invalid low bits", decision.PathIoctl64, 1<<32 | 0x2, unix.EINVAL},
	} {
		t.Run(c.name, func(t *testing.T) {
			fd, err := Create(c.path, c.arg)
			if got := errnoOf(err); got != c.errno {
				t.Fatalf("%s arg %#x: %v (%s), want %s", c.path, c.arg, err, errnoName(got), errnoName(c.errno))
			}
			if err == nil {
				wantFD(t, c.name, fd, uint32(c.arg))
				unix.Close(fd)
			}
		})
	}

	t.Run("syscall number with bit 32", func(t *testing.T) {
		r, _, e := unix.RawSyscall(nrUserfaultfd64|1<<32, uintptr(decision.UserModeOnly), 0, 0)
		if e != 0 {
			t.Fatalf("userfaultfd with rax = 1<<32|323: %v; the kernel uses the low 32 bits of the number", e)
		}
		wantFD(t, "nr 1<<32|323", int(r), decision.UserModeOnly)
		unix.Close(int(r))
	})
	t.Run("ioctl command with bit 32", func(t *testing.T) {
		dev, err := unix.Open(DevicePath, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(dev)
		r, _, e := unix.RawSyscall(unix.SYS_IOCTL, uintptr(dev), 1<<32|IocNew, uintptr(decision.UserModeOnly))
		if e != 0 {
			t.Fatalf("USERFAULTFD_IOC_NEW with cmd 1<<32|0xAA00: %v; the kernel uses the low 32 bits of cmd", e)
		}
		wantFD(t, "cmd 1<<32|0xAA00", int(r), decision.UserModeOnly)
		unix.Close(int(r))
	})
}

// onThreadWithout runs f on a fresh OS thread whose effective capabilities lack
// CAP_SYS_PTRACE. Credentials are per thread; the thread is never handed back to
// the scheduler (it exits with the goroutine), so no other test sees them.
func onThreadWithout(t *testing.T, f func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // not unlocked: the thread dies with this goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		data[0].Effective &^= 1 << capability.SysPtrace
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- fmt.Errorf("capset: %w", err)
			return
		}
		b, _ := os.ReadFile("/proc/thread-self/status")
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
				eff, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
				if eff&(1<<capability.SysPtrace) != 0 {
					done <- fmt.Errorf("CAP_SYS_PTRACE still effective: %s", v)
					return
				}
			}
		}
		f()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestKernelChecksMatchModel: with no gate attached, every path × ABI × flags,
// with and without CAP_SYS_PTRACE, gives exactly the errno the reference model's
// kernel layer predicts (mode allow: the gate refuses nothing), in the kernel's
// order: the syscall's privilege check (EPERM) before flag validation (EINVAL).
func TestKernelChecksMatchModel(t *testing.T) {
	requireRoot(t)
	b, err := os.ReadFile("/proc/sys/vm/unprivileged_userfaultfd")
	if err != nil {
		t.Fatal(err)
	}
	k := decision.Kernel{UnprivilegedUserfaultfd: strings.TrimSpace(string(b)) == "1"}
	a := hostABIs(t)
	paths := []decision.Path{decision.PathSyscall64, decision.PathIoctl64}
	if a.ia32 {
		paths = append(paths, decision.PathSyscallIA32, decision.PathIoctlIA32)
	}
	flagSets := []uint32{0, decision.UserModeOnly, decision.CloseOnExec, decision.NonBlock,
		decision.ValidFlags, decision.CloseOnExec | decision.NonBlock,
		0x2, 0x3, 0x80002, 0x80000000, 0x80000001, 0xffffffff}
	allowAll := decision.Gate{Mode: decision.ModeAllow}
	caps := uint64(1)<<(capability.Last+1) - 1

	type result struct {
		path  decision.Path
		flags uint32
		errno unix.Errno
	}
	try := func() []result {
		var out []result
		for _, p := range paths {
			for _, f := range flagSets {
				fd, err := Create(p, uint64(f))
				if err == nil {
					unix.Close(fd)
				}
				out = append(out, result{p, f, errnoOf(err)})
			}
		}
		return out
	}
	check := func(name string, s decision.Subject, got []result) {
		seen := map[unix.Errno]int{}
		for _, r := range got {
			seen[r.errno]++
			want := decision.Expect(k, allowAll, s, decision.Request{Path: r.path, Flags: r.flags, FlagsKnown: true})
			if r.errno != want.Errno {
				t.Errorf("%s %s flags %s: kernel says %s, model says %s (%s)", name, r.path, decision.FlagNames(r.flags),
					errnoName(r.errno), errnoName(want.Errno), want.Layer)
			}
		}
		t.Logf("%s (vm.unprivileged_userfaultfd=%v): %d requests, outcomes %v", name, k.UnprivilegedUserfaultfd, len(got), seen)
	}

	check("root", decision.Subject{CapEffective: caps, InitUserNS: true}, try())
	var without []result
	onThreadWithout(t, func() { without = try() })
	check("root without CAP_SYS_PTRACE", decision.Subject{CapEffective: caps &^ (1 << capability.SysPtrace), InitUserNS: true}, without)
	if !k.UnprivilegedUserfaultfd {
		// Spelled out: sysctl 0, no CAP_SYS_PTRACE, syscall without UMO → EPERM,
		// even with invalid flags; the device has no such check.
		for _, r := range without {
			if r.path == decision.PathSyscall64 && r.flags == 0x2 && r.errno != unix.EPERM {
				t.Errorf("syscall(0x2) without CAP_SYS_PTRACE: %s, want EPERM (privilege check first)", errnoName(r.errno))
			}
			if r.path == decision.PathIoctl64 && r.flags == 0 && r.errno != 0 {
				t.Errorf("ioctl(0) without CAP_SYS_PTRACE: %s, want a context (no check on the device path)", errnoName(r.errno))
			}
		}
	}
}

// End to end, in a child process so that a context that misbehaves (a kernel-mode
// fault that is never served) cannot hang the test: the child gets a deadline and
// SIGKILL, the only signal that ends a task stuck in a kernel-mode fault.

type scenarioSpec struct {
	Path decision.Path `json:"path"`
	Arg  uint64        `json:"arg"`
}

type scenarioReport struct {
	Step            string `json:"step"` // where it stopped, "" when it ran through
	Error           string `json:"error"`
	UserFaultValue  bool   `json:"user_fault_value"`  // the faulting read saw the copied data
	UserFaultServed bool   `json:"user_fault_served"` // the handler served it with UFFDIO_COPY
	KernelErrno     int    `json:"kernel_errno"`      // errno of write(2) from the registered range
	KernelBytes     int    `json:"kernel_bytes"`
	KernelData      bool   `json:"kernel_data"` // what reached the pipe is the handler's page
	Served          []int  `json:"served"`      // page indexes the handler served, in order
}

const page = 4096

func scenarioMain(spec string) int {
	var s scenarioSpec
	rep := scenarioReport{}
	out := func() int {
		json.NewEncoder(os.Stdout).Encode(rep)
		return 0
	}
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		rep.Step, rep.Error = "spec", err.Error()
		return out()
	}
	fd, err := Create(s.Path, s.Arg)
	if err != nil {
		rep.Step, rep.Error = "create", err.Error()
		return out()
	}
	if err := Handshake(fd); err != nil {
		rep.Step, rep.Error = "UFFDIO_API", err.Error()
		return out()
	}
	mem, err := unix.Mmap(-1, 0, 2*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		rep.Step, rep.Error = "mmap", err.Error()
		return out()
	}
	base := uintptr(unsafe.Pointer(&mem[0]))
	if err := Register(fd, base, 2*page); err != nil {
		rep.Step, rep.Error = "UFFDIO_REGISTER", err.Error()
		return out()
	}
	src := make([]byte, page)
	for i := range src {
		src[i] = byte(i%251) + 1
	}
	served := make(chan int, 8)
	go func() {
		runtime.LockOSThread()
		for {
			m, err := ReadMsg(fd)
			if err != nil {
				return
			}
			if m.Event != EventPagefault {
				continue
			}
			at := uintptr(m.Address) &^ (page - 1)
			if err := Copy(fd, at, uintptr(unsafe.Pointer(&src[0])), page); err == nil {
				served <- int((at - base) / page)
			}
		}
	}()
	collect := func(d time.Duration) {
		timeout := time.After(d)
		for {
			select {
			case i := <-served:
				rep.Served = append(rep.Served, i)
			case <-timeout:
				return
			}
		}
	}

	// A user-mode fault on page 0, from this goroutine.
	rep.UserFaultValue = mem[7] == src[7] && mem[page-1] == src[page-1]
	collect(500 * time.Millisecond)
	rep.UserFaultServed = len(rep.Served) == 1 && rep.Served[0] == 0

	// A kernel-mode access to page 1: write(2) reads it with copy_from_user.
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		rep.Step, rep.Error = "pipe", err.Error()
		return out()
	}
	done := make(chan struct{})
	go func() {
		n, werr := unix.Write(p[1], mem[page:2*page])
		rep.KernelBytes = n
		rep.KernelErrno = int(errnoOf(werr))
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		rep.Step, rep.Error = "kernel access", "write(2) from the registered range did not return in 10 s"
		out()
		os.Exit(0) // exit_group kills the stuck thread
	}
	collect(200 * time.Millisecond)
	if rep.KernelBytes == page {
		got := make([]byte, page)
		n, _ := unix.Read(p[0], got)
		rep.KernelData = n == page && string(got) == string(src)
	}
	return out()
}

func runScenario(t *testing.T, s scenarioSpec) scenarioReport {
	t.Helper()
	spec, _ := json.Marshal(s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), scenarioEnv+"="+string(spec))
	cmd.WaitDelay = 5 * time.Second
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ctx.Err() != nil {
		t.Fatalf("scenario %s arg %#x: killed after the 30 s deadline (a fault was never served?); stderr: %s", s.Path, s.Arg, stderr.String())
	}
	var rep scenarioReport
	if jerr := json.Unmarshal(out, &rep); err != nil || jerr != nil {
		t.Fatalf("scenario %s arg %#x: %v / %v; output %q; stderr %s", s.Path, s.Arg, err, jerr, out, stderr.String())
	}
	if rep.Step != "" {
		t.Fatalf("scenario %s arg %#x: failed at %s: %s", s.Path, s.Arg, rep.Step, rep.Error)
	}
	return rep
}

// TestEndToEnd: through every path and ABI, a user-mode-only context serves a
// user-mode fault with UFFDIO_COPY from a handler thread, and a kernel-mode access
// to its range fails with EFAULT instead of waiting for the handler. As a control
// (so the test can tell the two apart), a kernel-fault context created the same
// way serves the same kernel-mode access. The high-bit variants show which
// context the kernel really made.
func TestEndToEnd(t *testing.T) {
	requireRoot(t)
	umo := uint64(decision.UserModeOnly | decision.CloseOnExec)
	kf := uint64(decision.CloseOnExec) // root holds CAP_SYS_PTRACE: the syscall allows it
	paths := []decision.Path{decision.PathSyscall64, decision.PathIoctl64}
	if hostABIs(t).ia32 {
		paths = append(paths, decision.PathSyscallIA32, decision.PathIoctlIA32)
	}
	type tc struct {
		name       string
		spec       scenarioSpec
		userModeOK bool // true: user-mode-only context expected
	}
	var cases []tc
	for _, p := range paths {
		cases = append(cases,
			tc{p.String() + " user-mode-only", scenarioSpec{p, umo}, true},
			tc{p.String() + " kernel-fault (control)", scenarioSpec{p, kf}, false})
	}
	cases = append(cases,
		tc{"syscall UMO in the low bits, high bits set", scenarioSpec{decision.PathSyscall64, 0xffffffff_00000000 | umo}, true},
		tc{"ioctl UMO in the low bits, high bits set", scenarioSpec{decision.PathIoctl64, 0xffffffff_00000000 | umo}, true},
		tc{"ioctl bit 32 is not UMO", scenarioSpec{decision.PathIoctl64, 1<<32 | kf}, false},
		tc{"syscall bit 32 is not UMO", scenarioSpec{decision.PathSyscall64, 1<<32 | kf}, false},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := runScenario(t, c.spec)
			if !r.UserFaultValue || !r.UserFaultServed {
				t.Errorf("user-mode fault: data ok %v, served by the handler %v (served pages %v)", r.UserFaultValue, r.UserFaultServed, r.Served)
			}
			if c.userModeOK {
				if r.KernelErrno != int(unix.EFAULT) || r.KernelBytes > 0 {
					t.Errorf("kernel-mode access to a user-mode-only range: %d bytes, %s; want EFAULT", r.KernelBytes, errnoName(unix.Errno(r.KernelErrno)))
				}
				if len(r.Served) != 1 {
					t.Errorf("the handler served pages %v; want only the user-mode fault's page 0", r.Served)
				}
			} else {
				if r.KernelErrno != 0 || r.KernelBytes != page || !r.KernelData {
					t.Errorf("kernel-mode access to a kernel-fault range: %d bytes (%s), data ok %v; want the handler to serve it",
						r.KernelBytes, errnoName(unix.Errno(r.KernelErrno)), r.KernelData)
				}
				if len(r.Served) != 2 || r.Served[1] != 1 {
					t.Errorf("the handler served pages %v; want 0 then 1", r.Served)
				}
			}
		})
	}
}

//go:build linux

// Command demo runs inside a VM booted by `make demo`: it starts `uffdgate run`
// with the embedded default policy and has real processes ask for userfaultfd
// contexts the ways real programs do, printing what the kernel answered next to
// what uffdgate logged. It exits non-zero if any outcome is not the expected one.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

type scenario struct {
	who, what string
	args      []string
	want      string // "ok", "EPERM", or "e2e" checks
}

func main() {
	os.Exit(run())
}

func run() int {
	// As admins do to let a VMM use the node (field cases 2 and 8): now anyone can
	// open it, and the kernel alone would hand out kernel-fault contexts.
	must(os.Chmod("/dev/userfaultfd", 0o666))
	must(os.WriteFile("/proc/sys/vm/unprivileged_userfaultfd", []byte("0"), 0))
	say("host: /dev/userfaultfd widened to 0666, vm.unprivileged_userfaultfd=0, lsm=%s", strings.TrimSpace(read("/sys/kernel/security/lsm")))

	d := exec.Command("/uffdgate", "run")
	out, _ := d.StdoutPipe()
	d.Stderr = os.Stderr
	must(d.Start())
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		once := false
		for sc.Scan() {
			fmt.Println("  uffdgate | " + sc.Text())
			if !once && strings.Contains(sc.Text(), `"event":"started"`) {
				once = true
				close(started)
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(60 * time.Second):
		say("uffdgate run did not start")
		return 1
	}

	scenarios := []scenario{
		{"a managed runtime's GC, uid 1000", "userfaultfd(UFFD_USER_MODE_ONLY)", []string{"-uid", "1000", "-caps", "none", "-try", "syscall:0x80001"}, "ok"},
		{"an emulator, uid 1000", "user-mode-only context from /dev/userfaultfd, used end to end", []string{"-uid", "1000", "-caps", "none", "-e2e", "user-mode-only", "-path", "ioctl"}, "e2e-umo"},
		{"an unprivileged process, uid 1000", "kernel-fault context from the widened /dev/userfaultfd", []string{"-uid", "1000", "-caps", "none", "-try", "ioctl:0x80000"}, "EPERM"},
		{"the same process, through the i386 syscall ABI", "ioctl(USERFAULTFD_IOC_NEW, 0) via int $0x80", []string{"-uid", "1000", "-caps", "none", "-try", "ioctl-ia32:0"}, "EPERM"},
		{"root without CAP_SYS_PTRACE", "kernel-fault context from /dev/userfaultfd", []string{"-uid", "0", "-caps", "all-but-ptrace", "-try", "ioctl:0"}, "EPERM"},
		{"root of a user namespace made by uid 1000", "kernel-fault context from /dev/userfaultfd", []string{"-userns", "-uid", "1000", "-caps", "none", "-try", "ioctl:0"}, "EPERM"},
		{"an allowlisted VMM (CAP_SYS_PTRACE) doing postcopy", "kernel-fault context; a kernel-mode fault served", []string{"-uid", "0", "-caps", "all", "-e2e", "kernel-fault", "-path", "ioctl"}, "e2e-kf"},
	}
	failed := 0
	for _, s := range scenarios {
		time.Sleep(300 * time.Millisecond) // let the daemon's line for the previous one print first
		got := try(s.args)
		ok := got == s.want || (s.want == "e2e-umo" && got == "e2e-umo") || (s.want == "e2e-kf" && got == "e2e-kf")
		mark := "as expected"
		if !ok {
			mark = "UNEXPECTED (want " + s.want + ")"
			failed++
		}
		say("%-48s %-62s -> %-8s %s", s.who, s.what, describe(got), mark)
	}
	time.Sleep(500 * time.Millisecond)
	d.Process.Signal(syscall.SIGTERM)
	d.Wait()
	if failed > 0 {
		say("%d scenario(s) did not behave as expected", failed)
		return 1
	}
	say("every request behaved as the policy says")
	return 0
}

func describe(got string) string {
	switch got {
	case "e2e-umo":
		return "ok (user fault served; kernel access EFAULT)"
	case "e2e-kf":
		return "ok (kernel-mode fault served)"
	}
	return got
}

// try runs uffdtry and condenses its report.
func try(args []string) string {
	out, err := exec.Command("/uffdtry", args...).Output()
	var r struct {
		Attempts []struct {
			Errno int `json:"errno"`
		} `json:"attempts"`
		UserFaultServed   bool   `json:"user_fault_served"`
		KernelAccessErrno int    `json:"kernel_access_errno"`
		KernelFaultServed bool   `json:"kernel_fault_served"`
		Error             string `json:"error"`
	}
	if jerr := json.Unmarshal(out, &r); jerr != nil || err != nil {
		return fmt.Sprintf("error(%v %s)", err, r.Error)
	}
	switch {
	case r.UserFaultServed && r.KernelAccessErrno == int(syscall.EFAULT):
		return "e2e-umo"
	case r.KernelFaultServed:
		return "e2e-kf"
	case len(r.Attempts) == 1 && r.Attempts[0].Errno == 0:
		return "ok"
	case len(r.Attempts) == 1:
		return syscallName(syscall.Errno(r.Attempts[0].Errno))
	}
	return "error(" + r.Error + ")"
}

func syscallName(e syscall.Errno) string {
	if e == syscall.EPERM {
		return "EPERM"
	}
	return e.Error()
}

func say(format string, a ...any) { fmt.Printf("demo | "+format+"\n", a...) }

func read(p string) string { b, _ := os.ReadFile(p); return string(b) }

func must(err error) {
	if err != nil {
		say("setup failed: %v", err)
		os.Exit(1)
	}
}

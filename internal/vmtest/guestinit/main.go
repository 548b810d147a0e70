// Command guestinit is pid 1 of the vmtest initramfs: it mounts the kernel
// filesystems, runs the command from /vmtest.json, prints the exit marker the
// host looks for, and powers the VM off.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// spec mirrors vmtest.guestSpec (a main package cannot be imported).
type spec struct {
	Argv       []string `json:"argv"`
	Env        []string `json:"env"`
	TimeoutSec int      `json:"timeout_sec"`
}

// Exit codes reported in the marker besides the command's own.
const (
	codeSignal  = -1 // killed by a signal
	codeTimeout = -2 // killed by guestinit after spec.TimeoutSec
	codeSetup   = -3 // guestinit could not start the command
)

func main() {
	// Powering off is pid 1's job; refuse anywhere else (e.g. run by mistake
	// on a host as root).
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "guestinit: must run as pid 1 inside the VM")
		os.Exit(2)
	}
	mountAll()
	code := run()
	fmt.Printf("\nUFFDGATE-VM-EXIT %d\n", code)
	unix.Sync()
	// Serial output is buffered in the tty layer; wait for it to reach the
	// host before the VM disappears (TCSBRK with arg 1 is tcdrain).
	_ = unix.IoctlSetInt(1, unix.TCSBRK, 1)
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Println("guestinit: power off:", err)
	}
	// pid 1 exiting panics the kernel; with panic=-1 and -no-reboot that
	// still stops QEMU.
	os.Exit(1)
}

func mountAll() {
	mounts := []struct {
		fstype, target string
		required       bool
	}{
		{"proc", "/proc", true},
		{"sysfs", "/sys", true},
		{"devtmpfs", "/dev", true},
		{"tmpfs", "/tmp", true},
		{"tmpfs", "/run", true},
		{"securityfs", "/sys/kernel/security", true},
		{"bpf", "/sys/fs/bpf", true},
		{"cgroup2", "/sys/fs/cgroup", false},
		{"tracefs", "/sys/kernel/tracing", false},
		{"debugfs", "/sys/kernel/debug", false},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			fmt.Printf("guestinit: mkdir %s: %v\n", m.target, err)
			continue
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, 0, ""); err != nil {
			kind := "optional"
			if m.required {
				kind = "required"
			}
			fmt.Printf("guestinit: mount %s on %s (%s): %v\n", m.fstype, m.target, kind, err)
		}
		if m.target == "/dev" {
			// The initramfs /dev/console is now hidden, but the fds the
			// kernel opened on it stay valid; add the usual extras.
			_ = os.MkdirAll("/dev/pts", 0o755)
			_ = unix.Mount("devpts", "/dev/pts", "devpts", 0, "")
			_ = os.MkdirAll("/dev/shm", 0o1777)
			_ = unix.Mount("tmpfs", "/dev/shm", "tmpfs", 0, "")
		}
	}
}

// loopbackUp brings lo up, as an init system would, so guests can use 127.0.0.1.
func loopbackUp() {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		defer unix.Close(fd)
		var ifr *unix.Ifreq
		if ifr, err = unix.NewIfreq("lo"); err == nil {
			if err = unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err == nil {
				ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
				err = unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
			}
		}
	}
	if err != nil {
		fmt.Printf("guestinit: bringing up lo: %v\n", err)
	}
}

func run() int {
	loopbackUp()
	var s spec
	b, err := os.ReadFile("/vmtest.json")
	if err == nil {
		err = json.Unmarshal(b, &s)
	}
	if err == nil && len(s.Argv) == 0 {
		err = fmt.Errorf("empty argv")
	}
	if err != nil {
		fmt.Println("guestinit: /vmtest.json:", err)
		return codeSetup
	}

	cmd := exec.Command(s.Argv[0], s.Argv[1:]...)
	cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/tmp", "TMPDIR=/tmp"}, s.Env...)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Own process group so a timeout also kills anything it spawned.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		fmt.Println("guestinit: start:", err)
		return codeSetup
	}
	pid := cmd.Process.Pid

	timedOut := make(chan struct{})
	if s.TimeoutSec > 0 {
		t := time.AfterFunc(time.Duration(s.TimeoutSec)*time.Second, func() {
			close(timedOut)
			fmt.Printf("\nguestinit: timeout after %ds, killing %s\n", s.TimeoutSec, s.Argv[0])
			_ = unix.Kill(-pid, unix.SIGKILL)
		})
		defer t.Stop()
	}

	// As pid 1 we inherit every orphan, so reap everything with wait4(-1)
	// instead of cmd.Wait, until our own child shows up.
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			fmt.Println("guestinit: wait:", err)
			return codeSetup
		}
		if wpid != pid {
			continue
		}
		select {
		case <-timedOut:
			return codeTimeout
		default:
		}
		if ws.Signaled() {
			fmt.Printf("\nguestinit: %s killed by signal %d (%v)\n", s.Argv[0], int(ws.Signal()), ws.Signal())
			return codeSignal
		}
		return ws.ExitStatus()
	}
}

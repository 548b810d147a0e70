//go:build linux && amd64

package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uffdgate/uffdgate/internal/uffdprobe"
)

// buildFallbackBins builds the real binaries the fallback commands' tests run:
// uffdgate the way it ships (static, CGO_ENABLED=0, which also proves the cgo-only
// test helpers stay out of it) and the uffdprobe test subject.
func buildFallbackBins(t *testing.T) (uffdgate, probe string) {
	t.Helper()
	dir := t.TempDir()
	// One go build for both: most of its time is the go command's own start-up.
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/uffdgate/uffdgate/cmd/uffdgate", "github.com/uffdgate/uffdgate/internal/uffdprobe/uffdprobe")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return filepath.Join(dir, "uffdgate"), filepath.Join(dir, "uffdprobe")
}

// fbRun runs a binary and returns stdout, stderr and the exit code.
func fbRun(t *testing.T, name string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	t.Fatalf("%s %v: %v", name, args, err)
	return "", "", 0
}

// fbRunProbes runs a command line that ends in uffdprobe and returns its results.
func fbRunProbes(t *testing.T, name string, args ...string) map[string]int {
	t.Helper()
	stdout, stderr, code := fbRun(t, name, args...)
	if code != 0 {
		t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	m, err := uffdprobe.Parse([]byte(stdout))
	if err != nil {
		t.Fatalf("%v\nstderr: %s", err, stderr)
	}
	return m
}

func fbCheck(t *testing.T, got map[string]int, want map[string]int) {
	t.Helper()
	for p, w := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("%s: not run", p)
		} else if g != w {
			t.Errorf("%s: errno %d, want %d", p, g, w)
		}
	}
}

func fbProbeArgs(want map[string]int) []string {
	var a []string
	for p := range want {
		a = append(a, p)
	}
	return a
}

const (
	fbOK     = 0
	fbEPERM  = 1
	fbENOTTY = 25
)

func TestExecCommand(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: without the filter root gets every context, so each EPERM is the filter's")
	}
	ug, probe := buildFallbackBins(t)
	// As root every probe succeeds without the filter: the EPERMs below are the filter's.
	unfiltered := map[string]int{"userfaultfd:0": fbOK, "ioctl:0": fbOK, "userfaultfd-ia32:0": fbOK, "ioctl-ia32:0": fbOK}
	fbCheck(t, fbRunProbes(t, probe, fbProbeArgs(unfiltered)...), unfiltered)

	want := map[string]int{
		"userfaultfd:0":        fbEPERM,
		"userfaultfd:1":        fbOK,
		"userfaultfd-ia32:0":   fbEPERM,
		"userfaultfd-ia32:1":   fbOK,
		"userfaultfd-x32:0":    fbEPERM, // x32 is off on this kernel (ENOSYS); the filter answers first
		"ioctl:0":              fbEPERM,
		"ioctl:0x80801":        fbOK,
		"ioctl-ia32:0":         fbEPERM,
		"ioctl-ia32:1":         fbOK,
		"ioctl-x32:0":          fbEPERM,
		"ioctl-null:0x5401:0":  fbENOTTY, // other ioctls reach the driver
		"getpid":               fbOK,
		"keyctl":               fbOK,
		"thread:userfaultfd:0": fbEPERM, // every thread of the new program
		"thread:ioctl:1":       fbOK,
	}
	t.Run("command", func(t *testing.T) {
		fbCheck(t, fbRunProbes(t, ug, append([]string{"exec", "--", probe}, fbProbeArgs(want)...)...), want)
	})
	t.Run("descendant", func(t *testing.T) {
		// sh forks the probe (it is not the last command, so no exec shortcut).
		args := append([]string{"exec", "--", "/bin/sh", "-c", `"$0" "$@"; exit $?`, probe}, fbProbeArgs(want)...)
		fbCheck(t, fbRunProbes(t, ug, args...), want)
	})
	t.Run("cannot be relaxed", func(t *testing.T) {
		args := []string{"exec", "--", ug, "exec", "--allow-kernel-faults", "--", probe, "userfaultfd:0", "ioctl:0"}
		fbCheck(t, fbRunProbes(t, ug, args...), map[string]int{"userfaultfd:0": fbEPERM, "ioctl:0": fbEPERM})
	})
	t.Run("allow-kernel-faults", func(t *testing.T) {
		w := map[string]int{"userfaultfd:0": fbOK, "ioctl:0": fbOK, "userfaultfd-ia32:0": fbOK, "ioctl-ia32:0": fbOK}
		fbCheck(t, fbRunProbes(t, ug, append([]string{"exec", "--allow-kernel-faults", "--", probe}, fbProbeArgs(w)...)...), w)
	})
	t.Run("PATH lookup, argv, exit status", func(t *testing.T) {
		out, errOut, code := fbRun(t, ug, "exec", "--", "sh", "-c", `echo "$0:$1"; grep '^Seccomp:' /proc/self/status; exit 7`, "zero", "one")
		if code != 7 || !strings.Contains(out, "zero:one\n") || !strings.Contains(out, "Seccomp:\t2") {
			t.Errorf("exit %d, stdout %q, stderr %q; want 7, argv passed through, Seccomp 2", code, out, errOut)
		}
	})
	t.Run("errors", func(t *testing.T) {
		dir := t.TempDir()
		noexec := filepath.Join(dir, "script")
		if err := os.WriteFile(noexec, []byte("#!/bin/sh\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		badInterp := filepath.Join(dir, "badinterp")
		if err := os.WriteFile(badInterp, []byte("#!/nonexistent/interpreter\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			args []string
			code int
			msg  string
		}{
			{[]string{"exec"}, exitUsage, "missing the command to run after --"},
			{[]string{"exec", "--"}, exitUsage, "missing the command to run after --"},
			{[]string{"exec", "--allow-kernel-faults"}, exitUsage, "missing the command to run after --"},
			{[]string{"exec", "ls", "-l"}, exitUsage, "missing -- before the command: run uffdgate exec -- ls -l"},
			{[]string{"exec", "--bogus", "--", "true"}, exitUsage, "flag provided but not defined: -bogus"},
			{[]string{"exec", "--", "uffdgate-no-such-command"}, 127, "uffdgate-no-such-command: command not found"},
			{[]string{"exec", "--", filepath.Join(dir, "missing")}, 127, "command not found"},
			{[]string{"exec", "--", noexec}, 126, "permission denied"},
			{[]string{"exec", "--", dir}, 126, "is a directory"},
			{[]string{"exec", "--", badInterp}, 126, "interpreter or ELF loader is missing"},
		} {
			_, stderr, code := fbRun(t, ug, c.args...)
			if code != c.code || !strings.Contains(stderr, c.msg) {
				t.Errorf("uffdgate %s: exit %d, stderr %q; want exit %d and %q", strings.Join(c.args, " "), code, stderr, c.code, c.msg)
			}
		}
	})
}

//go:build linux && amd64

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/uffdgate/uffdgate/internal/explain"
	"github.com/uffdgate/uffdgate/internal/hostaudit"
	"github.com/uffdgate/uffdgate/internal/probe"
)

// hostcmdsBinary builds uffdgate as it ships (static, no cgo: probe children
// switch credentials on all threads, which cgo rules out).
func hostcmdsBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "uffdgate")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func hostcmdsRun(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// TestHostCommandsLive runs the shipped binary on this host: probe must match
// the model in every cell, and audit and explain must agree with what probe's
// children really got.
func TestHostCommandsLive(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("probe switches credentials: needs root")
	}
	bin := hostcmdsBinary(t)
	var before syscall.Stat_t
	devErr := syscall.Stat("/dev/userfaultfd", &before)

	out, errOut, code := hostcmdsRun(t, bin, "probe", "--json", "--timeout", "10s")
	var pr probe.Report
	if err := json.Unmarshal([]byte(out), &pr); err != nil {
		t.Fatalf("probe --json: %v (exit %d)\n%s\n%s", err, code, out, errOut)
	}
	if code != 0 || pr.Summary.Mismatch != 0 || pr.Summary.Match == 0 || pr.Summary.Cells != 48 {
		t.Errorf("probe: exit %d, summary %+v\n%s", code, pr.Summary, errOut)
	}
	cells := map[string]probe.Cell{}
	for _, c := range pr.Cells {
		cells[c.Identity+" "+c.Path+" "+strconv.FormatBool(c.UserModeOnly)] = c
		if c.Verdict == probe.Mismatch {
			t.Errorf("mismatch: %+v", c)
		}
		if c.Verdict == probe.NotOffered && !strings.HasSuffix(c.Path, "-x32") && !strings.HasSuffix(c.Path, "-ia32") {
			t.Errorf("the 64-bit ABI reported not offered: %+v", c)
		}
	}
	if c := cells["root+ptrace syscall false"]; c.Got != "created" || c.Behaviour != "kernel fault served" {
		t.Errorf("root with CAP_SYS_PTRACE, kernel-fault syscall: %+v", c)
	}
	if c := cells["nobody-ptrace syscall true"]; c.Got != "created" || c.Behaviour != "user fault served, kernel access EFAULT" {
		t.Errorf("nobody, user-mode-only syscall: %+v", c)
	}
	var after syscall.Stat_t
	if devErr == nil && (syscall.Stat("/dev/userfaultfd", &after) != nil || after.Mode != before.Mode || after.Uid != before.Uid || after.Gid != before.Gid) {
		t.Errorf("probe changed /dev/userfaultfd: %o %d:%d -> %o %d:%d", before.Mode, before.Uid, before.Gid, after.Mode, after.Uid, after.Gid)
	}
	t.Logf("probe: %+v, ABIs not offered %v", pr.Summary, pr.NotOfferedABI)

	// audit: what it says about the sysctl must be what probe's unprivileged
	// child met.
	out, errOut, code = hostcmdsRun(t, bin, "audit", "--json")
	var ar hostaudit.Report
	if err := json.Unmarshal([]byte(out), &ar); err != nil {
		t.Fatalf("audit --json: %v\n%s", err, errOut)
	}
	if code != ar.ExitCode || (code == 0) != (ar.Summary.Warning+ar.Summary.Critical == 0) {
		t.Errorf("audit exit %d, report says %d with %+v", code, ar.ExitCode, ar.Summary)
	}
	unprivCreated := cells["nobody-ptrace syscall false"].Got == "created"
	if !pr.GateRunning && (ar.Sysctl.Value == "1") != unprivCreated {
		t.Errorf("audit says vm.unprivileged_userfaultfd = %s, but an unprivileged kernel-fault syscall gave %q", ar.Sysctl.Value, cells["nobody-ptrace syscall false"].Got)
	}
	if ar.Sysctl.Value != pr.Sysctl {
		t.Errorf("audit read the sysctl as %q, probe as %q", ar.Sysctl.Value, pr.Sysctl)
	}

	// explain: a child started with no capabilities, compared with probe's
	// child of the same credentials.
	sleeper := exec.Command("sleep", "60")
	sleeper.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: probe.Nobody, Gid: probe.Nobody, Groups: []uint32{}}, Pdeathsig: syscall.SIGKILL}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	out, errOut, code = hostcmdsRun(t, bin, "explain", "--json", strconv.Itoa(sleeper.Process.Pid))
	var er explain.Report
	if err := json.Unmarshal([]byte(out), &er); err != nil || code != 0 {
		t.Fatalf("explain --json: exit %d, %v\n%s", code, err, errOut)
	}
	if er.Identity.UID != probe.Nobody || er.Identity.SysPtrace {
		t.Errorf("explained identity %+v", er.Identity)
	}
	for _, row := range er.Rows {
		c := cells["nobody-ptrace "+row.Path+" "+strconv.FormatBool(row.UserModeOnly)]
		want := map[string]string{"created": "allowed", "unreachable (EACCES on open)": "EACCES", "unreachable (ENOENT on open)": "ENOENT"}[c.Got]
		if want == "" {
			want = c.Got
		}
		if row.Outcome != want {
			t.Errorf("explain says %s umo=%v is %s (%s), probe's child of the same credentials got %s", row.Path, row.UserModeOnly, row.Outcome, row.DecidedBy, c.Got)
		}
	}
	out, _, _ = hostcmdsRun(t, bin, "explain", strconv.Itoa(sleeper.Process.Pid))
	if !strings.Contains(out, "DECIDED BY") || !strings.Contains(out, "uffdgate") {
		t.Errorf("explain text:\n%s", out)
	}
}

func TestHostCommandsUsage(t *testing.T) {
	bin := hostcmdsBinary(t)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"explain"}, exitUsage, "usage: uffdgate explain"},
		{[]string{"explain", "abc"}, exitUsage, `"abc" is not a process id`},
		{[]string{"explain", "1", "2"}, exitUsage, "usage"},
		{[]string{"explain", "--uid", "1000", "--caps", "none"}, exitUsage, "needs --exe"},
		{[]string{"explain", "1", "--uid", "1"}, exitUsage, "not both"},
		{[]string{"explain", "--exe", "/bin/sh", "--uid", "-1", "--caps", "none"}, exitUsage, "--uid"},
		{[]string{"explain", "--exe", "/bin/sh", "--uid", "1", "--caps", "CAP_NOPE"}, exitUsage, "unknown capability"},
		{[]string{"explain", "999999999"}, exitFailure, "no process 999999999"},
		{[]string{"audit", "--policy", "/nonexistent.yaml"}, exitUsage, "cannot read the policy"},
		{[]string{"audit", "now"}, exitUsage, `unexpected argument "now"`},
		{[]string{"probe", "--timeout", "-1s"}, exitUsage, "want a positive duration"},
		{[]string{"probe", "--bogus"}, exitUsage, "flag provided but not defined"},
	} {
		_, stderr, code := hostcmdsRun(t, bin, c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) {
			t.Errorf("uffdgate %s: exit %d, stderr %q; want exit %d and %q", strings.Join(c.args, " "), code, stderr, c.code, c.want)
		}
	}
	// The probe child is not a command.
	out, _, _ := hostcmdsRun(t, bin, "help")
	if strings.Contains(out, "__probe-child") {
		t.Error("usage lists the hidden probe child")
	}
}

//go:build linux && amd64

package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/uffdgate/uffdgate/internal/harden"
)

func TestHardenCommand(t *testing.T) {
	ug, _ := buildFallbackBins(t)
	root := t.TempDir()
	for p, c := range map[string]string{
		"etc/sysctl.conf": "# empty\n",
		"usr/lib/sysctl.d/60-qemu-postcopy-migration.conf": "vm.unprivileged_userfaultfd = 1\n",
	} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte(c), 0o644)
	}
	sysctlFile := filepath.Join(root, harden.SysctlDir, harden.SysctlName)
	udevFile := filepath.Join(root, harden.UdevDir, harden.UdevName)

	stdout, stderr, code := fbRun(t, ug, "harden", "--dry-run", "--root", root)
	if code != exitOK || !strings.Contains(stdout, "would write "+sysctlFile) || !strings.Contains(stdout, "60-qemu-postcopy-migration.conf:1 sets vm.unprivileged_userfaultfd = 1") {
		t.Fatalf("dry run: exit %d\n%s%s", code, stdout, stderr)
	}
	if _, err := os.Stat(sysctlFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dry run wrote %s", sysctlFile)
	}
	stdout, stderr, code = fbRun(t, ug, "harden", "--root", root)
	if code != exitOK || !strings.Contains(stdout, "done: write "+sysctlFile) || !strings.Contains(stdout, "done: write "+udevFile) {
		t.Fatalf("apply: exit %d\n%s%s", code, stdout, stderr)
	}
	stdout, stderr, code = fbRun(t, ug, "harden", "--undo", "--root", root)
	if code != exitOK || !strings.Contains(stdout, "done: remove "+sysctlFile) || !strings.Contains(stdout, "done: remove "+udevFile) {
		t.Fatalf("undo: exit %d\n%s%s", code, stdout, stderr)
	}

	late := filepath.Join(root, "etc/sysctl.d/zzz-late.conf")
	os.WriteFile(late, []byte("vm.unprivileged_userfaultfd = 1\n"), 0o644)
	_, stderr, code = fbRun(t, ug, "harden", "--root", root)
	if code != exitHost || !strings.Contains(stderr, late+":1: sets vm.unprivileged_userfaultfd = 1 and is applied after zz-uffdgate.conf") || !strings.Contains(stderr, "(fix: ") {
		t.Errorf("conflict: exit %d, stderr %s", code, stderr)
	}
	if _, err := os.Stat(sysctlFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("refused run wrote %s", sysctlFile)
	}
	if _, stderr, code = fbRun(t, ug, "harden", "now"); code != exitUsage || !strings.Contains(stderr, `unexpected argument "now"`) {
		t.Errorf("extra argument: exit %d, %s", code, stderr)
	}
	t.Run("dry run on this host", func(t *testing.T) { testHardenDryRunOnThisHost(t, ug) })
	t.Run("live changes need root", func(t *testing.T) { testHardenNeedsRootForLiveChanges(t, ug) })
}

// testHardenDryRunOnThisHost reads the real system and changes nothing.
func testHardenDryRunOnThisHost(t *testing.T, ug string) {
	ours := []string{filepath.Join(harden.SysctlDir, harden.SysctlName), filepath.Join(harden.UdevDir, harden.UdevName)}
	existed := make([]bool, len(ours))
	for i, f := range ours {
		_, err := os.Stat(f)
		existed[i] = err == nil
	}
	stdout, stderr, code := fbRun(t, ug, "harden", "--dry-run")
	if code != exitOK || !strings.Contains(stdout, "on this system") || !strings.Contains(stdout, "dry run: nothing is changed") || !strings.Contains(stdout, "/dev/userfaultfd") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	for i, f := range ours {
		if _, err := os.Stat(f); (err == nil) != existed[i] {
			t.Errorf("dry run changed whether %s exists", f)
		}
	}
	// That the dry run leaves the live sysctl alone is checked on a scratch stand-in
	// in internal/harden: other tests on this machine may flip the real one meanwhile.
}

func testHardenNeedsRootForLiveChanges(t *testing.T, ug string) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root to run the command as another user")
	}
	os.Chmod(filepath.Dir(ug), 0o755) // t.TempDir is 0700: let nobody reach the binary
	os.Chmod(filepath.Dir(filepath.Dir(ug)), 0o755)
	cmd := exec.Command(ug, "harden")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitHost || !strings.Contains(stderr.String(), "changing the live system needs root") {
		t.Errorf("as nobody: %v, stderr %s", err, stderr.String())
	}
}

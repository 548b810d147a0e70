//go:build linux && amd64

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uffdgate/uffdgate/internal/seccompprofile"
	"github.com/uffdgate/uffdgate/internal/seccompprofile/profiletest"
)

func TestSeccompProfileCommand(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: without a filter root gets every context, so each EPERM is the profile's")
	}
	ug, _ := buildFallbackBins(t)
	tools := profiletest.Build(t)
	dir := t.TempDir()

	// Docker's default as a file, the way an operator would export it.
	dockerDefault, err := seccompprofile.Marshal(seccompprofile.Default())
	if err != nil {
		t.Fatal(err)
	}
	dockerFile := filepath.Join(dir, "docker-default.json")
	if err := os.WriteFile(dockerFile, dockerDefault, 0o644); err != nil {
		t.Fatal(err)
	}

	out := filepath.Join(dir, "uffdgate.json")
	stdout, stderr, code := fbRun(t, ug, "seccomp-profile", "-o", out)
	if code != exitOK || stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	for _, w := range []string{"base: Docker's default profile (github.com/moby/profiles/seccomp v", "moved ioctl into conditional rules", "added: userfaultfd allowed with UFFD_USER_MODE_ONLY", "wrote " + out} {
		if !strings.Contains(stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, stderr)
		}
	}
	generated, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o644 {
		t.Errorf("profile mode %v, want 0644", fi.Mode().Perm())
	}
	if _, err := seccompprofile.Parse(out, generated); err != nil {
		t.Fatal(err)
	}

	t.Run("stdout and --merge of Docker's default give the same profile", func(t *testing.T) {
		toStdout, stderr, code := fbRun(t, ug, "seccomp-profile")
		if code != exitOK || toStdout != string(generated) {
			t.Errorf("stdout differs from -o (exit %d, stderr %s)", code, stderr)
		}
		merged, stderr, code := fbRun(t, ug, "seccomp-profile", "--merge", dockerFile)
		if code != exitOK || merged != string(generated) || !strings.Contains(stderr, "base: "+dockerFile) {
			t.Errorf("merging into Docker's default exported as a file differs from the built-in base (exit %d, stderr %s)", code, stderr)
		}
	})

	t.Run("applied with libseccomp", func(t *testing.T) {
		want := map[string]int{
			"userfaultfd:0": fbEPERM, "userfaultfd:1": fbOK, "userfaultfd-ia32:0": fbEPERM,
			"ioctl:0": fbEPERM, "ioctl:1": fbOK, "ioctl-ia32:0": fbEPERM, "ioctl-dev:0x10000aa00:0": fbEPERM,
			"ioctl-null:0x5401:0": fbENOTTY, "getpid": fbOK,
			"keyctl": fbEPERM, "personality:0x1234": fbEPERM, // Docker's default still in effect
		}
		profiletest.Check(t, "generated profile", tools.Apply(t, out, profiletest.Probes(want)...), want)
	})

	t.Run("merge reports what it overrides", func(t *testing.T) {
		base := filepath.Join(dir, "crio.json")
		doc := strings.Replace(string(dockerDefault), `"syscalls": [`, `"syscalls": [
		{"names": ["userfaultfd", "bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},`, 1)
		if err := os.WriteFile(base, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		mergedFile := filepath.Join(dir, "crio-uffdgate.json")
		_, stderr, code := fbRun(t, ug, "seccomp-profile", "--merge", base, "-o", mergedFile)
		if code != exitOK || !strings.Contains(stderr, "base syscalls[0] (SCMP_ACT_ERRNO errno 1, unconditional) named userfaultfd: removed it there") {
			t.Fatalf("exit %d, stderr:\n%s", code, stderr)
		}
		want := map[string]int{"userfaultfd:1": fbOK, "userfaultfd:0": fbEPERM, "ioctl:0": fbEPERM}
		profiletest.Check(t, "merged profile", tools.Apply(t, mergedFile, profiletest.Probes(want)...), want)

		// Merging twice would stack rules on rules: refused.
		_, stderr, code = fbRun(t, ug, "seccomp-profile", "--merge", mergedFile)
		if code != exitUsage || !strings.Contains(stderr, "already has uffdgate's rules") {
			t.Errorf("re-merge: exit %d, stderr %s", code, stderr)
		}
	})

	t.Run("errors", func(t *testing.T) {
		bad := filepath.Join(dir, "bad.json")
		os.WriteFile(bad, []byte("{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n  \"syscalls\": [{\"names\": [\"ioctl\"], \"action\": \"SCMP_ACT_ALLOWW\"}]\n}\n"), 0o644)
		unmergeable := filepath.Join(dir, "unmergeable.json")
		os.WriteFile(unmergeable, []byte(`{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, "value": 43520, "op": "SCMP_CMP_NE"}]}]}`), 0o644)
		for _, c := range []struct {
			args []string
			code int
			msg  string
		}{
			{[]string{"seccomp-profile", "--merge", filepath.Join(dir, "missing.json")}, exitUsage, "cannot read the profile to merge into: open " + filepath.Join(dir, "missing.json") + ": no such file or directory"},
			{[]string{"seccomp-profile", "--merge", bad}, exitUsage, "invalid profile: " + bad + ":3:37: syscalls[0].action: unknown action \"SCMP_ACT_ALLOWW\""},
			{[]string{"seccomp-profile", "--merge", unmergeable}, exitUsage, "cannot merge: " + unmergeable + ": syscalls[0]: this SCMP_ACT_ALLOW rule lets ioctl through"},
			{[]string{"seccomp-profile", dockerFile}, exitUsage, "unexpected argument"},
			{[]string{"seccomp-profile", "-o", filepath.Join(dir, "no", "such", "dir.json")}, exitFailure, "writing the profile:"},
		} {
			stdout, stderr, code := fbRun(t, ug, c.args...)
			if code != c.code || !strings.Contains(stderr, c.msg) || stdout != "" {
				t.Errorf("uffdgate %s: exit %d, stdout %d bytes, stderr %q; want exit %d and %q", strings.Join(c.args, " "), code, len(stdout), stderr, c.code, c.msg)
			}
		}
	})
}

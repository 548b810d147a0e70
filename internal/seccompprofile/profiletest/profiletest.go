//go:build linux && amd64

// Package profiletest applies seccomp profiles for real in tests: it builds the
// scmpload helper (libseccomp through cgo, with runc's rule semantics) and the
// uffdprobe test subject, runs the probe under a profile and returns what each
// syscall got.
package profiletest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/uffdgate/uffdgate/internal/uffdprobe"
)

// Tools are the built helpers.
type Tools struct {
	Loader, Probe string
}

// Build builds both helpers into a temporary directory. The loader needs cgo, gcc,
// pkg-config and libseccomp-dev; a machine without them fails here, with the fix.
func Build(t testing.TB) Tools {
	t.Helper()
	dir := t.TempDir()
	tools := Tools{Loader: filepath.Join(dir, "scmpload"), Probe: filepath.Join(dir, "uffdprobe")}
	build := func(out, pkg string, env []string, tags ...string) {
		args := append([]string{"build", "-o", out}, tags...)
		cmd := exec.Command("go", append(args, pkg)...)
		cmd.Env = append(os.Environ(), env...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s\nThe libseccomp helper needs cgo and Debian's libseccomp-dev, pkg-config and gcc: apt-get install libseccomp-dev pkg-config gcc", pkg, err, b)
		}
	}
	build(tools.Loader, "github.com/uffdgate/uffdgate/internal/seccompprofile/internal/scmpload", []string{"CGO_ENABLED=1"}, "-tags", "libseccomp")
	build(tools.Probe, "github.com/uffdgate/uffdgate/internal/uffdprobe/uffdprobe", []string{"CGO_ENABLED=0"})
	return tools
}

// Apply compiles the profile file with libseccomp, loads it, executes uffdprobe
// with the probes under it and returns each probe's errno.
func (tl Tools) Apply(t testing.TB, profile string, probes ...string) map[string]int {
	t.Helper()
	cmd := exec.Command(tl.Loader, append([]string{profile, "apply", tl.Probe}, probes...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("applying %s: %v\nstdout: %s\nstderr: %s", profile, err, stdout.Bytes(), stderr.Bytes())
	}
	m, err := uffdprobe.Parse(stdout.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != len(probes) {
		t.Fatalf("applying %s: %d results for %d probes: %s", profile, len(m), len(probes), stdout.Bytes())
	}
	return m
}

// Export compiles the profile file with libseccomp and returns the BPF program
// it would load, as raw sock_filter bytes.
func (tl Tools) Export(t testing.TB, profile string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "filter.bpf")
	if b, err := exec.Command(tl.Loader, profile, "export", out).CombinedOutput(); err != nil {
		t.Fatalf("exporting %s: %v\n%s", profile, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Check compares probe results with expectations, errno by errno.
func Check(t testing.TB, what string, got, want map[string]int) {
	t.Helper()
	for p, w := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("%s: %s not run", what, p)
		} else if g != w {
			t.Errorf("%s: %s got errno %d, want %d", what, p, g, w)
		}
	}
}

// Probes lists the keys of want, for Apply.
func Probes(want map[string]int) []string {
	var p []string
	for k := range want {
		p = append(p, k)
	}
	return p
}

//go:build !vme2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/uffdgate/uffdgate/internal/vmtest"
)

// TestAuditBackendOnHost runs `uffdgate run --backend audit` on this machine,
// whose kernel refuses LSM programs, and has real processes create userfaultfd
// contexts through every path and ABI the kernel offers: each kernel-fault
// creation is reported with the right fields, user-mode-only ones are not, and
// nothing is refused.
func TestAuditBackendOnHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("the audit backend test needs root (BPF programs)")
	}
	dir := t.TempDir()
	ug := vmtest.BuildStatic(t, module+"/cmd/uffdgate", dir)
	try := vmtest.BuildStatic(t, module+"/e2e/uffdtry", dir)
	cmd := exec.Command(ug, "run", "--backend", "audit", "--state", dir+"/state.json", "--metrics-addr", "")
	out, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var mu sync.Mutex
	var lines []map[string]any
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := sync.OnceFunc(func() { close(started) })
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				mu.Lock()
				lines = append(lines, m)
				mu.Unlock()
				if m["event"] == "started" {
					once()
				}
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(30 * time.Second):
		t.Fatalf("no started line: %s", stderr.String())
	}

	// Every ABI this kernel offers; x32 is off on most kernels (ENOSYS) and then
	// has nothing to report.
	var tries []string
	for _, p := range []string{"syscall", "syscall-ia32", "syscall-x32", "ioctl", "ioctl-ia32", "ioctl-x32"} {
		tries = append(tries, p+":0x80000", p+":0x80001")
	}
	res, err := exec.Command(try, "-caps", "all-but-ptrace", "-try", strings.Join(tries, ",")).Output()
	if err != nil {
		t.Fatalf("uffdtry: %v %s", err, res)
	}
	var rep report
	if err := json.Unmarshal(res, &rep); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{} // path -> a kernel-fault context was created and must be reported
	for _, a := range rep.Attempts {
		switch {
		case a.Errno == int(syscall.ENOSYS):
		case a.Errno != 0:
			t.Errorf("%s:%#x failed with errno %d: the audit backend must not refuse", a.Path, a.Arg, a.Errno)
		case a.Arg&1 == 0:
			want[a.Path] = true
		}
	}
	if len(want) < 4 {
		t.Fatalf("only %v created: want the x86_64 and i386 ABIs of both paths", want)
	}
	find := func(path string, umo bool) map[string]any {
		mu.Lock()
		defer mu.Unlock()
		flags := "0x80000"
		if umo {
			flags = "0x80001"
		}
		for _, m := range lines {
			if m["event"] == "decision" && m["tgid"] == float64(rep.PID) && m["path"] == path && m["flags"] == flags {
				return m
			}
		}
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for path := range want {
		var m map[string]any
		for m = find(path, false); m == nil && time.Now().Before(deadline); m = find(path, false) {
			time.Sleep(50 * time.Millisecond)
		}
		if m == nil {
			t.Errorf("no event for the kernel-fault context created through %s", path)
			continue
		}
		for k, v := range map[string]any{"backend": "audit", "decision": "would-deny", "uid": 0.0, "comm": "uffdtry",
			"exe": try, "allowlisted": false, "init_userns": true, "ppid": float64(os.Getpid())} {
			if m[k] != v {
				t.Errorf("%s event: %s = %v, want %v", path, k, m[k], v)
			}
		}
		if r, _ := m["reason"].(string); !strings.Contains(r, "audit backend") {
			t.Errorf("%s event reason does not say it was only audited: %q", path, r)
		}
		if find(path, true) != nil {
			t.Errorf("a user-mode-only context through %s was reported", path)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("uffdgate exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("uffdgate did not stop within 10 s of SIGTERM")
	}
	fmt.Printf("AUDIT backend on this host: %d creation paths reported\n", len(want))
}

// TestRunRefusesSilentDowngrade: where the LSM gate cannot run, an enforcing
// policy does not quietly become reporting-only.
func TestRunRefusesSilentDowngrade(t *testing.T) {
	dir := t.TempDir()
	ug := vmtest.BuildStatic(t, module+"/cmd/uffdgate", dir)
	cmd := exec.Command(ug, "run", "--state", "", "--metrics-addr", "")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	if cmd.ProcessState.ExitCode() != 3 || !strings.Contains(stderr.String(), "--accept-audit-only") {
		t.Fatalf("run on this host: %v, stderr %q; want exit 3 naming --accept-audit-only", err, stderr.String())
	}
}

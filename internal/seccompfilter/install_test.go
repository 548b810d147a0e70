//go:build linux && amd64

package seccompfilter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/uffdgate/uffdgate/internal/uffdprobe"
)

// The child mode of this test binary: Install is irreversible, so it runs in a
// re-executed copy of the test binary, never in the test process itself.
const childEnv = "UFFDGATE_SECCOMPFILTER_CHILD"

type childReport struct {
	Results    []uffdprobe.Result `json:"results"`
	Seccomp    string             `json:"seccomp"`
	NoNewPrivs string             `json:"no_new_privs"`
	Error      string             `json:"error,omitempty"`
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(child(mode, strings.Fields(os.Getenv(childEnv+"_PROBES"))))
	}
	os.Exit(m.Run())
}

// child installs the filter (mode "filter"), the AllowKernelFaults variant
// ("allow-kernel-faults") or nothing ("none"), then runs the probes on the same
// thread and prints a childReport.
func child(mode string, probes []string) int {
	var rep childReport
	var err error
	switch mode {
	case "filter":
		err = Install(Options{})
	case "allow-kernel-faults":
		err = Install(Options{AllowKernelFaults: true})
	case "none":
	default:
		err = fmt.Errorf("unknown child mode %q", mode)
	}
	for _, p := range probes {
		if err != nil {
			break
		}
		var r uffdprobe.Result
		r, err = uffdprobe.Run(p)
		rep.Results = append(rep.Results, r)
	}
	if err != nil {
		rep.Error = err.Error()
	}
	rep.Seccomp, rep.NoNewPrivs = threadStatus("Seccomp"), threadStatus("NoNewPrivs")
	json.NewEncoder(os.Stdout).Encode(rep)
	return 0
}

func threadStatus(key string) string {
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		return err.Error()
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "missing"
}

func runChild(t *testing.T, mode string, probes []string) childReport {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, childEnv+"_PROBES="+strings.Join(probes, " "))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child %s: %v\nstderr: %s", mode, err, stderr.Bytes())
	}
	var rep childReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("child %s printed %q: %v", mode, out, err)
	}
	if rep.Error != "" {
		t.Fatalf("child %s: %s", mode, rep.Error)
	}
	if len(rep.Results) != len(probes) {
		t.Fatalf("child %s ran %d of %d probes", mode, len(rep.Results), len(probes))
	}
	return rep
}

const (
	ok     = 0
	eperm  = 1
	enotty = 25
	enosys = 38
)

// The probes and what each returns as root (CAP_SYS_PTRACE, so the kernel itself
// refuses nothing) without and with the filter. x32 is compiled out or disabled
// on this kernel (ENOSYS), but seccomp runs before the syscall dispatch and sees
// the x32 number, so the x32 branch is exercised on the real kernel too: a refused
// call gets EPERM from the filter instead of ENOSYS.
var installCases = []struct {
	probe          string
	without, under int
}{
	{"userfaultfd:0", ok, eperm},
	{"userfaultfd:1", ok, ok},
	{"userfaultfd:0x80801", ok, ok},
	{"userfaultfd:0x80800", ok, eperm},
	{"userfaultfd:0x100000000", ok, eperm}, // the kernel's int flags drop the high half
	{"userfaultfd:0x100000001", ok, ok},
	{"userfaultfd-ia32:0", ok, eperm},
	{"userfaultfd-ia32:1", ok, ok},
	{"userfaultfd-x32:0", enosys, eperm},
	{"userfaultfd-x32:1", enosys, enosys},
	{"ioctl:0", ok, eperm},
	{"ioctl:1", ok, ok},
	{"ioctl:0x80801", ok, ok},
	{"ioctl:0x100000000", ok, eperm},
	{"ioctl-ia32:0", ok, eperm},
	{"ioctl-ia32:1", ok, ok},
	{"ioctl-x32:0", enosys, eperm},
	{"ioctl-x32:1", enosys, enosys},
	{"ioctl-dev:0x10000aa00:0", ok, eperm}, // the kernel's unsigned int cmd drops the high half
	{"ioctl-dev:0x10000aa00:1", ok, ok},
	{"ioctl-null:0xaa00:0", enotty, eperm}, // documented false positive: seccomp cannot see the file
	{"ioctl-null:0xaa00:1", enotty, enotty},
	{"ioctl-null:0x5401:0", enotty, enotty},
	{"getpid", ok, ok},
	{"keyctl", ok, ok},
	{"personality:0xffffffff", ok, ok},
}

func TestInstallRefusesKernelFaultContexts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: it compares the filter's answers with what the kernel grants CAP_SYS_PTRACE")
	}
	probes := make([]string, len(installCases))
	for i, c := range installCases {
		probes[i] = c.probe
	}
	without := runChild(t, "none", probes)
	under := runChild(t, "filter", probes)
	for i, c := range installCases {
		if got := without.Results[i].Errno; got != c.without {
			t.Errorf("%s without the filter: errno %d, want %d (host differs from what the test assumes)", c.probe, got, c.without)
		}
		if got := under.Results[i].Errno; got != c.under {
			t.Errorf("%s under the filter: errno %d, want %d", c.probe, got, c.under)
		}
	}
	if under.Seccomp != "2" || under.NoNewPrivs != "1" {
		t.Errorf("under the filter the thread shows Seccomp %q NoNewPrivs %q, want 2 and 1", under.Seccomp, under.NoNewPrivs)
	}
	if without.Seccomp != "0" {
		t.Errorf("the unfiltered child shows Seccomp %q: the test runs under some other filter", without.Seccomp)
	}
}

// TestInstallIsPerThread documents why uffdgate exec calls execve from the very
// thread Install ran on: other threads of the process are not filtered.
func TestInstallIsPerThread(t *testing.T) {
	rep := runChild(t, "filter", []string{"userfaultfd:0", "thread:userfaultfd:0"})
	if rep.Results[0].Errno != eperm || rep.Results[1].Errno != ok {
		t.Errorf("calling thread errno %d (want EPERM), other thread errno %d (want 0): %+v", rep.Results[0].Errno, rep.Results[1].Errno, rep.Results)
	}
}

func TestInstallAllowKernelFaultsInstallsNothing(t *testing.T) {
	rep := runChild(t, "allow-kernel-faults", []string{"userfaultfd:0", "ioctl:0", "userfaultfd-ia32:0"})
	for _, r := range rep.Results {
		if r.Errno != ok {
			t.Errorf("%s: errno %d, want 0", r.Probe, r.Errno)
		}
	}
	if rep.Seccomp != "0" || rep.NoNewPrivs != "0" {
		t.Errorf("thread shows Seccomp %q NoNewPrivs %q, want 0 and 0: nothing should be installed", rep.Seccomp, rep.NoNewPrivs)
	}
}

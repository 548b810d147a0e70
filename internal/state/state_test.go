package state

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startNamed runs a sleeping process whose comm is name (the kernel takes comm
// from the executable's file name), standing in for a running daemon.
func startNamed(t *testing.T, name string) *exec.Cmd {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), name)
	src, err := os.Open(sleep)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	// The comm is set at exec; wait until the child has exec'd.
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/comm")
		if strings.TrimSpace(string(b)) == name[:min(len(name), 15)] {
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("child never showed comm %q (last %q)", name, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sample(pid int) State {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 123456789, time.UTC)
	return State{
		PID: pid, Version: "v1.2.3", Backend: "lsm", State: "enforcing",
		Started: t0, Updated: t0.Add(2 * time.Second),
		Mode: "user-mode-only", Audit: false,
		PolicySource: "/etc/uffdgate/policy.yaml", PolicyDigest: "sha256:abc",
		PolicyYAML:        "mode: user-mode-only\n",
		AllowCapabilities: []string{"CAP_SYS_PTRACE"},
		Decisions:         map[string]uint64{"deny/ioctl": 3, "allow/syscall": 7},
		EventsLost:        1, ReloadsOK: 2, ReloadsFailed: 1,
		LastReload: t0.Add(time.Second),
	}
}

func TestWriteReadRoundTrip(t *testing.T) {
	daemon := startNamed(t, "uffdgate")
	path := filepath.Join(t.TempDir(), "run", "uffdgate", "state.json")
	want := sample(daemon.Process.Pid)
	if err := Write(path, want); err != nil {
		t.Fatalf("Write: %v", err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("state file mode %v, want 0644 (other commands read it)", fi.Mode().Perm())
	}
	// Rewriting replaces it and leaves no temporary file behind.
	want.Updated = want.Updated.Add(time.Minute)
	want.Decisions["deny/ioctl"] = 4
	want.State, want.Audit = "auditing", true
	if err := Write(path, want); err != nil {
		t.Fatal(err)
	}
	if got, err := Read(path); err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("after rewrite: %+v, %v", got, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 || entries[0].Name() != "state.json" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %v, want only state.json", names)
	}
}

// The JSON field names are an interface (`uffdgate status --json`).
func TestFieldNames(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	s := sample(1)
	if err := Write(path, s); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"pid", "version", "backend", "state", "started", "updated", "mode", "audit", "policy_source",
		"policy_digest", "policy_yaml", "allow_capabilities", "decisions", "events_lost", "reloads_ok", "reloads_failed", "last_reload",
		"exec_tracking"} {
		if !strings.Contains(string(b), `"`+k+`":`) {
			t.Errorf("state file has no %q field:\n%s", k, b)
		}
	}
	// last_reload is omitted while there was no reload.
	s.LastReload = time.Time{}
	if err := Write(path, s); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); strings.Contains(string(b), "last_reload") {
		t.Errorf("zero last_reload written:\n%s", b)
	}
}

func TestReadNotRunning(t *testing.T) {
	dir := t.TempDir()

	// A pid that is gone: a child that has exited and been reaped.
	exited := exec.Command("true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	// A pid that is alive but is not uffdgate.
	other := startNamed(t, "not-uffdgate")

	for _, c := range []struct {
		name string
		pid  int
		want string
	}{
		{"stale pid", exited.Process.Pid, "which is gone"},
		{"pid of another program", other.Process.Pid, "which is gone"},
		{"this test process", os.Getpid(), "which is gone"},
		{"pid 0", 0, "which is gone"},
		{"negative pid", -1, "which is gone"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".json")
			if err := Write(path, sample(c.pid)); err != nil {
				t.Fatal(err)
			}
			_, err := Read(path)
			if !errors.Is(err, ErrNotRunning) {
				t.Fatalf("Read with pid %d: %v, want ErrNotRunning", c.pid, err)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file and say the pid is gone", err)
			}
		})
	}

	t.Run("no file", func(t *testing.T) {
		path := filepath.Join(dir, "absent.json")
		_, err := Read(path)
		if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), path) {
			t.Errorf("Read(absent) = %v, want ErrNotRunning naming %s", err, path)
		}
	})
}

func TestReadCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := os.WriteFile(path, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Read(path)
	if err == nil || errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "is not a uffdgate state file") {
		t.Errorf("Read(corrupt) = %v, want a 'not a uffdgate state file' error", err)
	}
}

func TestRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := Write(path, sample(1)); err != nil {
		t.Fatal(err)
	}
	if err := Remove(path); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file still there: %v", err)
	}
	if err := Remove(path); err != nil {
		t.Errorf("Remove of an absent file: %v, want nil", err)
	}
}

func TestWriteUnwritable(t *testing.T) {
	// A regular file where the directory should be.
	dir := t.TempDir()
	blocker := filepath.Join(dir, "blocker")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(blocker, "state.json"), sample(1)); err == nil {
		t.Error("Write under a regular file succeeded")
	}
}

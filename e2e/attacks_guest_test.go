//go:build vme2e

package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Regression tests for attacks on the exec records, their pinned map and the
// event budget (found by attacking the gate; each failed before its fix).

const recycleBin = "/recycle"

// asUser does a file operation as uid (recycle fs).
func asUser(t *testing.T, uid int, args ...string) {
	t.Helper()
	out, err := exec.Command(recycleBin, append([]string{"fs", fmt.Sprint(uid)}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v as %d: %v\n%s", args, uid, err, out)
	}
}

// TestPinDirPlantedByUser: on a bpffs mounted without mode= (1777, as the test
// VMs' init and a plain `mount -t bpf bpf /sys/fs/bpf` leave it), an
// unprivileged user can create /sys/fs/bpf/uffdgate first. The daemon must not
// use it (before the fix a planted dangling pin kept it from starting at all)
// and must still enforce.
func TestPinDirPlantedByUser(t *testing.T) {
	var st unix.Stat_t
	if err := unix.Stat("/sys/fs/bpf", &st); err != nil || st.Mode&0o002 == 0 {
		t.Fatalf("/sys/fs/bpf: %v, mode %o: this test needs a world-writable bpffs, as the guest init mounts it", err, st.Mode&0o7777)
	}
	os.RemoveAll("/sys/fs/bpf/uffdgate") // no daemon runs now: its records are of no one's
	defer os.RemoveAll("/sys/fs/bpf/uffdgate")
	asUser(t, testUID, "mkdir", "/sys/fs/bpf/uffdgate")
	asUser(t, testUID, "symlink", "/nonexistent/exec_ids", "/sys/fs/bpf/uffdgate/exec_ids")
	d := startDaemon(t, "")
	defer d.stop(t)
	m, _ := d.find(func(m map[string]any) bool { return m["event"] == "started" })
	if note, _ := m["exec_records"].(string); !strings.Contains(note, "not a directory that only root can change") {
		t.Errorf("started line: exec_records = %q; want it to say why the records are not pinned", note)
	}
	runSteps(t, d, []step{{"uid 1000, kernel-fault context", subj(tryBin, as(testUID, "-try", kfReq)...), []int{eperm}}})
}

// TestStaleExecRecord: a user execs its own file on a tmpfs of its own, drops
// every reference to it and unmounts the tmpfs, so that its device and inode
// numbers are free while its exec record stays valid. An admin then mounts a new
// tmpfs (same anonymous device number) and installs the allowed binary as its
// first file (same inode number). The record must not name that binary: the
// inode generation differs. (Before the fix, uid 1000 got a kernel-fault
// context.)
func TestStaleExecRecord(t *testing.T) {
	atk := "/tmp/stale-atk"
	os.MkdirAll(atk, 0o777)
	os.Chmod(atk, 0o777)
	os.MkdirAll("/mnt/app", 0o755)
	setSysctl(t, 1)
	defer setSysctl(t, 0)
	d := startDaemon(t, "rules:\n  - name: app\n    executables: [/mnt/app/vmm]\nallowlist: {capabilities: []}\n")
	defer d.stop(t)

	cmd := exec.Command(recycleBin, fmt.Sprint(testUID), atk)
	in, _ := cmd.StdinPipe()
	errp, _ := cmd.StderrPipe()
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	br := bufio.NewReader(errp)
	staged, _ := br.ReadString('\n')
	if ready, err := br.ReadString('\n'); err != nil || ready != "ready\n" {
		rest, _ := io.ReadAll(br)
		t.Fatalf("recycle: %q %q %v %s", staged, ready, err, rest)
	}

	if err := unix.Mount("tmpfs", "/mnt/app", "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount("/mnt/app", unix.MNT_DETACH)
	install(t, "/mnt/app/vmm", 0o755)
	var st unix.Stat_t
	unix.Stat("/mnt/app/vmm", &st)
	app := fmt.Sprintf("dev=%d:%d ino=%d\n", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	if "staged "+app != staged {
		t.Fatalf("the attack did not set up: the attacker's file was %q, the allowed binary %q; this test proves nothing", staged, app)
	}
	if _, ok := d.waitFor(func(m map[string]any) bool { return m["event"] == "resolved" }, 10*time.Second); !ok {
		t.Fatalf("the daemon did not resolve /mnt/app/vmm:\n%s", d.log())
	}
	runSteps(t, d, []step{
		{"the installed binary", subj("/mnt/app/vmm", as(testUID, "-try", kfReq)...), []int{ok}},
		{"a copy elsewhere", subj(install(t, "/tmp/stale-other/vmm", 0o755), as(testUID, "-try", kfReq)...), []int{eperm}},
	})
	fmt.Fprintln(in, "go")
	cmd.Wait()
	var forged, umounted, uffd int
	if n, _ := fmt.Sscanf(strings.TrimSpace(stdout.String()), "forged=%d umount=%d uffd=%d", &forged, &umounted, &uffd); n != 3 || forged != 0 || umounted != 0 {
		t.Fatalf("recycle: %q: the attack did not run through", stdout.String())
	}
	if uffd != -int(unix.EPERM) {
		t.Errorf("a process that never exec'd /mnt/app/vmm, with an exec record naming its numbers: %d, want -EPERM", uffd)
	}
}

// TestFloodHidesNoOtherUser: a user flooding with another user's program, or
// posing as it (exe link repointed), must not spend that user's budget: every
// one of the other user's refused requests is logged. (Before the fix: 0 of 10.)
func TestFloodHidesNoOtherUser(t *testing.T) {
	setSysctl(t, 1)
	defer setSysctl(t, 0)
	for _, variant := range []string{"same-binary", "posing"} {
		t.Run(variant, func(t *testing.T) {
			tool := install(t, "/tmp/hide/"+variant+"/tool", 0o755)
			d := startDaemon(t, "")
			defer d.stop(t)
			flood := exec.Command(tool, as(testUID, "-repeat", "200000", "-try", kfReq)...)
			if variant == "posing" {
				flood = exec.Command(recycleBin, "flood", fmt.Sprint(testUID), tool, "200000")
			}
			if err := flood.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { flood.Process.Kill(); flood.Wait() })
			time.Sleep(700 * time.Millisecond)
			var victims []float64
			for range 10 {
				r := runAll(t, subj(tool, as(testUID+1, "-try", kfReq)...))
				if r[0].Attempts[0].Errno != eperm {
					t.Fatalf("the other user's request: %+v", r)
				}
				victims = append(victims, float64(r[0].PID))
				time.Sleep(100 * time.Millisecond)
			}
			flood.Process.Kill()
			seen := 0
			for _, pid := range victims {
				if _, ok := d.waitFor(func(m map[string]any) bool { return m["event"] == "decision" && m["tgid"] == pid }, 5*time.Second); ok {
					seen++
				}
			}
			if seen != len(victims) {
				t.Errorf("%s: %d of the other user's %d refused requests logged during a flood", variant, seen, len(victims))
			}
		})
	}
}

//go:build vme2e

package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scrape returns the value of one sample of the daemon's /metrics.
func scrape(t *testing.T, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://127.0.0.1:9808/metrics")
	if err != nil {
		t.Fatalf("scraping metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no sample %s in /metrics", sample)
	return 0
}

func peakRSSKiB(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestFlood: several processes make 100,000 refused requests at once. The kernel
// counters stay exact to the request, the log stays bounded (logged + suppressed
// + lost add up exactly), the daemon's memory stays bounded, and enforcement of
// everything else is unaffected.
func TestFlood(t *testing.T) {
	setSysctl(t, 1) // the syscall path: one syscall per request, the gate decides
	defer setSysctl(t, 0)
	d := startDaemon(t, "")
	const procs, each = 4, 25000
	start := time.Now()
	chans := make([]chan []report, procs)
	for i := range chans {
		chans[i] = make(chan []report, 1)
		go func(ch chan []report) {
			ch <- runAll(t, subj(tryBin, as(1000, "-repeat", fmt.Sprint(each), "-try", "syscall:0x80000")...))
		}(chans[i])
	}
	// Meanwhile, the gate still decides everything else as usual.
	time.Sleep(200 * time.Millisecond)
	runSteps(t, d, []step{
		{"allowlisted process during the flood", subj(tryBin, "-caps", "all", "-try", kfReq), []int{ok}},
		{"user-mode-only request during the flood", subj(tryBin, as(1001, "-try", umoReq)...), []int{ok}},
		{"another refused request during the flood", subj(tryBin, as(1001, "-try", kfReq)...), []int{eperm}},
	})
	pids := map[float64]bool{}
	for _, ch := range chans {
		r := <-ch
		pids[float64(r[0].PID)] = true
		if got := r[0].Counts["syscall:0x80000"]; got[eperm] != each {
			t.Errorf("flooding process %d: %v, want %d refusals", r[0].PID, got, each)
		}
	}
	elapsed := time.Since(start)
	const total = procs * each
	// Exact kernel counters, via Prometheus, while the daemon runs.
	deadline := time.Now().Add(10 * time.Second)
	for scrape(t, `uffdgate_decisions_total{decision="deny",mode="user-mode-only",path="syscall"}`) != total && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if got := scrape(t, `uffdgate_decisions_total{decision="deny",mode="user-mode-only",path="syscall"}`); got != total {
		t.Errorf("metrics count %v syscall denials, want exactly %d", got, total)
	}
	rss := peakRSSKiB(t, d.cmd.Process.Pid)
	time.Sleep(time.Second) // let the reader drain
	d.stop(t)

	stopped, _ := d.find(func(m map[string]any) bool { return m["event"] == "stopped" })
	decisions, _ := stopped["decisions"].(map[string]any)
	if decisions["deny/syscall"] != float64(total) {
		t.Errorf("stopped line counts %v syscall denials, want exactly %d", decisions["deny/syscall"], total)
	}
	lost, _ := stopped["events_lost"].(float64)
	logged, suppressed := 0.0, 0.0
	for _, l := range strings.Split(d.log(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			continue
		}
		switch {
		case m["event"] == "decision" && m["exe"] == tryBin && m["decision"] == "deny":
			logged++
			if !pids[m["tgid"].(float64)] {
				continue // the one request made during the flood by uid 1001
			}
			for k, want := range map[string]any{"decision": "deny", "path": "syscall", "uid": 1000.0, "user": "tester",
				"comm": "uffdtry", "exe": tryBin, "ppid": float64(os.Getpid()), "cgroup": "/", "flags": "0x80000"} {
				if m[k] != want {
					t.Errorf("flood event field %s = %v, want %v: %v", k, m[k], want, m)
					break
				}
			}
		case m["event"] == "suppressed" && m["exe"] == tryBin && m["decision"] == "deny":
			suppressed += m["suppressed"].(float64)
		}
	}
	// Every refused request of the key is logged, summarized or counted lost:
	// 100,000 from the flood and one made during it by uid 1001.
	if logged+suppressed+lost != total+1 {
		t.Errorf("logged %v + suppressed %v + lost %v != %d refused requests", logged, suppressed, lost, total+1)
	}
	if logged > 10+elapsed.Seconds()/10+2 {
		t.Errorf("%v lines logged for one executable in %v: the rate limit did not hold", logged, elapsed)
	}
	if rss > 30*1024 {
		t.Errorf("daemon peak RSS %d KiB, want under 30 MiB", rss)
	}
	line := fmt.Sprintf("FLOOD %d refused requests from %d processes in %v (%.0f/s): counters exact, %v lines logged, %v suppressed, %v lost; daemon peak RSS %.1f MiB",
		total, procs, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), logged, suppressed, lost, float64(rss)/1024)
	t.Log(line)
	fmt.Println(line)
}

// TestStatus: `uffdgate status` describes the running daemon, as a table and as
// JSON, and says clearly when none runs.
func TestStatus(t *testing.T) {
	d := startDaemon(t, "rules:\n  - name: vmm\n    uids: [4242]\n")
	runAll(t, subj(tryBin, as(1000, "-try", kfReq)...))
	time.Sleep(2500 * time.Millisecond) // the state is republished every 2 s
	out, err := exec.Command(uffdgateBin, "status").CombinedOutput()
	if err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	for _, want := range []string{"enforcing", "user-mode-only", "vmm:kernel-faults", "user-mode-only/deny/ioctl", "uptime", "sha256:", "off (no executable rules)"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("status table lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.Command(uffdgateBin, "status", "--json").Output()
	var s map[string]any
	if err != nil || json.Unmarshal(out, &s) != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if s["pid"] != float64(d.cmd.Process.Pid) || s["state"] != "enforcing" || s["decisions_by_mode"].(map[string]any)["user-mode-only/deny/ioctl"] != 1.0 || s["exec_tracking"] != false {
		t.Errorf("status --json: %v", s)
	}
	if v := scrape(t, `uffdgate_enforcing`); v != 1 {
		t.Errorf("uffdgate_enforcing = %v", v)
	}
	d.stop(t)
	cmd := exec.Command(uffdgateBin, "status")
	cmd.Stdout = io.Discard
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	if cmd.ProcessState.ExitCode() != 4 || !strings.Contains(stderr.String(), "no uffdgate daemon is running") {
		t.Errorf("status without a daemon: exit %d, %q (%v)", cmd.ProcessState.ExitCode(), stderr.String(), err)
	}
}

// TestAuditBackend: on a stock kernel, the audit backend (what runs where LSM
// programs cannot) reports kernel-fault creations through every ABI, x32
// included, refuses nothing, and with --kill kills the process after the fact.
func TestAuditBackend(t *testing.T) {
	d := startDaemonFile(t, "", "--backend", "audit")
	var tries []string
	for _, p := range []string{"syscall", "syscall-ia32", "syscall-x32", "ioctl", "ioctl-ia32", "ioctl-x32"} {
		tries = append(tries, p+":0x80000")
	}
	setSysctl(t, 1)
	defer setSysctl(t, 0)
	r := runAll(t, subj(tryBin, as(1000, "-try", strings.Join(tries, ","))...))[0]
	for _, a := range r.Attempts {
		if a.Errno != 0 {
			t.Errorf("%s: errno %d under the audit backend, which must not refuse", a.Path, a.Errno)
			continue
		}
		if _, found := d.waitFor(func(m map[string]any) bool {
			return m["event"] == "decision" && m["tgid"] == float64(r.PID) && m["path"] == a.Path &&
				m["backend"] == "audit" && m["decision"] == "would-deny" && m["exe"] == tryBin
		}, 10*time.Second); !found {
			t.Errorf("no audit event for %s", a.Path)
		}
	}
	d.stop(t)

	d = startDaemonFile(t, "", "--backend", "audit", "--kill")
	defer d.stop(t)
	cmd := exec.Command(tryBin, as(1000, "-try", kfReq)...)
	err := cmd.Run()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("with --kill, a refused-by-policy request: %v, want the process killed by SIGKILL", err)
	}
	if out, err := exec.Command(tryBin, as(1000, "-try", umoReq)...).Output(); err != nil {
		t.Errorf("with --kill, a user-mode-only request: %v %s", err, out)
	}
}

// TestProbeAndExplainWithGate: with the gate running, `uffdgate probe` finds the
// kernel behaving exactly as the kernel plus the policy should, and `uffdgate
// explain` names uffdgate as the layer that refuses what the gate refuses, and
// not what it never sees.
func TestProbeAndExplainWithGate(t *testing.T) {
	d := startDaemon(t, "")
	defer d.stop(t)
	out, err := exec.Command(uffdgateBin, "probe", "--json").Output()
	var p struct {
		Summary struct{ Cells, Match, Mismatch int } `json:"summary"`
		Cells   []struct {
			Expected string `json:"expected"`
		} `json:"cells"`
	}
	if err != nil || json.Unmarshal(out, &p) != nil {
		t.Fatalf("probe: %v\n%s", err, out)
	}
	gateRefusals := 0
	for _, c := range p.Cells {
		if c.Expected == "EPERM (uffdgate)" {
			gateRefusals++
		}
	}
	if p.Summary.Mismatch != 0 || p.Summary.Match < 32 || gateRefusals == 0 {
		t.Errorf("probe with the gate: %+v, %d cells expected refused by uffdgate\n%s", p.Summary, gateRefusals, out)
	}
	fmt.Printf("PROBE with the gate: %d cells, %d match, %d mismatch, %d refused by uffdgate\n", p.Summary.Cells, p.Summary.Match, p.Summary.Mismatch, gateRefusals)

	// Root without CAP_SYS_PTRACE: the device hands it a kernel-fault context
	// unless uffdgate refuses; the syscall is refused by the kernel first.
	out, err = exec.Command(uffdgateBin, "explain", "--json", "--exe", tryBin, "--uid", "0", "--caps", "CAP_SYS_ADMIN").Output()
	var e struct {
		Requests []struct {
			Path         string `json:"path"`
			UserModeOnly bool   `json:"user_mode_only"`
			Outcome      string `json:"outcome"`
			DecidedBy    string `json:"decided_by"`
		} `json:"requests"`
	}
	if err != nil || json.Unmarshal(out, &e) != nil {
		t.Fatalf("explain: %v\n%s", err, out)
	}
	seen := 0
	for _, r := range e.Requests {
		if r.UserModeOnly {
			continue
		}
		seen++
		want := map[string]string{"ioctl": "uffdgate", "syscall": "kernel"}[r.Path]
		if r.Outcome != "EPERM" || r.DecidedBy != want {
			t.Errorf("explain, kernel-fault %s request: %s decided by %s, want EPERM decided by %s\n%s", r.Path, r.Outcome, r.DecidedBy, want, out)
		}
	}
	if seen != 2 {
		t.Errorf("explain gave %d kernel-fault requests, want 2:\n%s", seen, out)
	}
}

// TestFloodFromCopies: one user flooding from many copies of a program (each
// copy a distinct executable, with its own per-executable budget) still cannot
// crowd another user's events out: the kernel also budgets events per user.
// (Regression: 48 copies overflowed the ring buffer: 85,000-100,000 events
// lost.)
func TestFloodFromCopies(t *testing.T) {
	setSysctl(t, 1)
	defer setSysctl(t, 0)
	d := startDaemon(t, "")
	const copies, each = 48, 3000
	done := make(chan bool, copies)
	for i := range copies {
		bin := install(t, fmt.Sprintf("/tmp/copies/c%02d", i), 0o755)
		go func() {
			runAll(t, subj(bin, as(testUID, "-repeat", fmt.Sprint(each), "-try", "syscall:0x80000")...))
			done <- true
		}()
	}
	time.Sleep(300 * time.Millisecond)
	var victims []float64
	for i := range 30 { // distinct files: the log's own limit per executable does not apply
		bin := install(t, fmt.Sprintf("/tmp/copies/victim%02d", i), 0o755)
		victims = append(victims, float64(runAll(t, subj(bin, as(testUID+1, "-try", kfReq)...))[0].PID))
		time.Sleep(30 * time.Millisecond)
	}
	for range copies {
		<-done
	}
	seen := 0
	for _, pid := range victims {
		// tgid: the Go subject may ask from any of its threads.
		if _, ok := d.waitFor(func(m map[string]any) bool { return m["event"] == "decision" && m["tgid"] == pid }, 5*time.Second); ok {
			seen++
		}
	}
	lost := scrape(t, "uffdgate_events_lost_total")
	d.stop(t)
	line := fmt.Sprintf("FLOOD from %d copies x %d: %d of %d other-user denials logged, %v events lost", copies, each, seen, len(victims), lost)
	t.Log(line)
	fmt.Println(line)
	if seen != len(victims) || lost != 0 {
		t.Errorf("a flood from copies crowded events out: %s", line)
	}
}

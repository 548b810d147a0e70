//go:build linux && amd64

// Command benchguest measures uffdgate's cost inside one VM boot (make bench):
// no protection, the LSM gate, one seccomp filter (uffdgate exec), and the audit
// backend, interleaved; then the daemon under a flood and its time to enforce.
// With -child it is the measured process.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/uffdgate/uffdgate/internal/benchrun"
)

func main() {
	child := flag.String("child", "", "run this workload and print ns/op")
	n := flag.Int("n", 200000, "iterations per measurement")
	rounds := flag.Int("rounds", 5, "rounds of every variant")
	only := flag.String("variants", "", "comma-separated variants to measure (default all)")
	workloads := flag.String("workloads", strings.Join(benchrun.Workloads, ","), "comma-separated workloads")
	table := flag.Bool("table", true, "measure the cost table")
	flood := flag.Bool("flood", true, "measure the daemon under a flood")
	startups := flag.Int("startups", 0, "start and stop the LSM gate this many more times, timing each start")
	flag.StringVar(&uffdgateBin, "uffdgate", uffdgateBin, "the uffdgate binary")
	flag.StringVar(&uffdtryBin, "uffdtry", uffdtryBin, "the uffdtry binary (flood)")
	backend := flag.String("backend", "lsm", "backend for -startups and the flood: lsm, or audit where the LSM gate cannot run")
	flag.Parse()
	if *child != "" {
		ns, err := benchrun.Child(*child, *n)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%.3f\n", ns)
		return
	}
	err := func() error {
		if *table {
			if err := costTable(*n, *rounds, *only, strings.Split(*workloads, ",")); err != nil {
				return err
			}
		}
		if *startups > 0 {
			var ms []float64
			for range *startups {
				stop, t, err := daemon("--backend", *backend)
				if err != nil {
					return err
				}
				stop()
				ms = append(ms, t)
			}
			fmt.Printf("BENCH startup of the %s backend (start to attached, self-tested where it enforces), ms: %v\n", *backend, ms)
		}
		if *flood {
			return floodRun(*backend)
		}
		return nil
	}()
	if err != nil {
		fmt.Println("BENCH failed:", err)
		os.Exit(1)
	}
}

var uffdgateBin, uffdtryBin = "/uffdgate", "/uffdtry"

// daemon starts `uffdgate run` with args and waits for its started line.
func daemon(args ...string) (stop func(), startupMs float64, err error) {
	cmd := exec.Command(uffdgateBin, append([]string{"run", "--state", "", "--metrics-addr", ""}, args...)...)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["event"] == "started" {
			startupMs, _ = m["startup_ms"].(float64)
			go func() {
				for sc.Scan() {
				}
			}()
			return func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }, startupMs, nil
		}
	}
	cmd.Wait()
	return nil, 0, fmt.Errorf("uffdgate run %v did not start", args)
}

// costTable measures every workload under every variant, interleaved.
func costTable(n, rounds int, only string, workloads []string) error {
	self, _ := os.Executable()
	var startups []float64
	up := func(args ...string) func() (func(), error) {
		return func() (func(), error) {
			stop, ms, err := daemon(args...)
			if err == nil && len(args) == 0 {
				startups = append(startups, ms)
			}
			return stop, err
		}
	}
	// A policy with an executable rule: the exec tracker runs too.
	tracked := "/tmp/bench-exe-rule.yaml"
	if err := os.WriteFile(tracked, []byte("rules:\n  - name: vmm\n    executables: [/uffdtry]\n"), 0o600); err != nil {
		return err
	}
	// No rules at all: the hook's fixed cost, without matching.
	empty := "/tmp/bench-no-rules.yaml"
	if err := os.WriteFile(empty, []byte("allowlist: {capabilities: []}\n"), 0o600); err != nil {
		return err
	}
	all := []benchrun.Variant{
		{Name: "none"},
		{Name: "lsm-gate", Up: up()},
		{Name: "lsm-gate-no-rules", Up: up("--policy", empty)},
		{Name: "lsm-gate+exec-tracker", Up: up("--policy", tracked)},
		{Name: "seccomp", Wrap: func(a []string) []string { return append([]string{uffdgateBin, "exec", "--"}, a...) }},
		{Name: "audit-backend", Up: up("--backend", "audit")},
	}
	variants := all
	if only != "" {
		variants = nil
		for _, v := range all {
			if v.Name == "none" || slices.Contains(strings.Split(only, ","), v.Name) {
				variants = append(variants, v)
			}
		}
	}
	samples, err := benchrun.Run(self, variants, workloads, rounds, n, func(s string) { fmt.Println("bench:", s) })
	if err != nil {
		return err
	}
	fmt.Println("BENCH-TABLE-BEGIN")
	fmt.Print(benchrun.Table(samples, variants, workloads))
	fmt.Println("BENCH-TABLE-END")
	if len(startups) > 0 {
		fmt.Printf("BENCH startup of the LSM gate (start to self-tested and enforcing), ms: %v\n", startups)
	}
	return nil
}

// floodRun: refused requests from 4 processes; the rate absorbed with exact
// counters, the daemon's CPU time and peak RSS. With the audit backend the
// requests succeed and are counted as would-be denials: the same events, rate
// limit and log, on a kernel that will not run the LSM gate.
func floodRun(backend string) error {
	os.WriteFile("/proc/sys/vm/unprivileged_userfaultfd", []byte("1"), 0)
	cmd := exec.Command(uffdgateBin, "run", "--state", "", "--metrics-addr", "", "--backend", backend)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		return err
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() && !strings.Contains(sc.Text(), `"event":"started"`) {
	}
	lines := make(chan string, 1024)
	go func() {
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	const procs, each = 4, 25000
	start := time.Now()
	done := make(chan error, procs)
	for range procs {
		go func() {
			done <- exec.Command(uffdtryBin, "-uid", "1000", "-caps", "none", "-repeat", strconv.Itoa(each), "-try", "syscall:0x80000").Run()
		}()
	}
	for range procs {
		if err := <-done; err != nil {
			return err
		}
	}
	elapsed := time.Since(start)
	stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", cmd.Process.Pid))
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	f := strings.Fields(string(stat))
	ut, _ := strconv.Atoi(f[13])
	st, _ := strconv.Atoi(f[14])
	hwm := ""
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			hwm = strings.TrimSpace(strings.TrimPrefix(l, "VmHWM:"))
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	var decisions any
	for l := range lines {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["event"] == "stopped" {
			decisions = m["decisions"]
		}
	}
	cmd.Wait()
	fmt.Printf("BENCH flood (%s backend): %d refused requests from %d processes in %v = %.0f/s; kernel counters %v; daemon CPU %d ms (user+system, whole run); daemon peak RSS %s\n",
		backend, procs*each, procs, elapsed.Round(time.Millisecond), float64(procs*each)/elapsed.Seconds(), decisions, (ut+st)*10, hwm)
	return nil
}

//go:build linux && amd64

// Package benchrun measures what uffdgate costs the rest of the system: the
// same workloads run in child processes under each protection variant, the
// variants interleaved round by round in one boot, so that drift and noise hit
// them alike and ratios to "none" measured in the same run can be compared.
package benchrun

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/uffd"
)

// Workloads a child can run. ioctl is a syscall a userfaultfd filter must
// look into (for USERFAULTFD_IOC_NEW), as hot in a VMM as KVM_RUN; fork (the
// child exits at once) is what the exec tracker adds to when the policy has
// executable rules, and runs n/forkDivisor times.
var Workloads = []string{"getpid", "mixed", "ioctl", "uffd-create", "fork"}

const forkDivisor = 500

// Child runs n iterations of workload in this process and returns ns per op.
func Child(workload string, n int) (float64, error) {
	var op func() error
	switch workload {
	case "getpid":
		op = func() error { unix.RawSyscall(unix.SYS_GETPID, 0, 0, 0); return nil }
	case "mixed":
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return 0, err
		}
		b := []byte{1}
		var st unix.Stat_t
		op = func() error {
			if _, err := unix.Write(p[1], b); err != nil {
				return err
			}
			if _, err := unix.Read(p[0], b); err != nil {
				return err
			}
			fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			unix.Close(fd)
			return unix.Stat("/", &st)
		}
	case "ioctl":
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
			return 0, err
		}
		op = func() error {
			_, err := unix.IoctlGetInt(p[0], unix.TIOCINQ) // FIONREAD
			return err
		}
	case "uffd-create":
		op = func() error {
			fd, err := uffd.Syscall(decision.UserModeOnly | decision.CloseOnExec)
			if err != nil {
				return err
			}
			return unix.Close(fd)
		}
	case "fork":
		n = max(n/forkDivisor, 100)
		op = func() error {
			// A raw fork whose child only exits: the child runs no Go code
			// beyond the test of pid, so the runtime's threads do not matter.
			pid, _, e := unix.RawSyscall(unix.SYS_FORK, 0, 0, 0)
			if e != 0 {
				return e
			}
			if pid == 0 {
				unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
			}
			var ws unix.WaitStatus
			_, err := unix.Wait4(int(pid), &ws, 0, nil)
			return err
		}
	default:
		return 0, fmt.Errorf("unknown workload %q", workload)
	}
	for range min(n/10, 10000) { // warm up
		if err := op(); err != nil {
			return 0, err
		}
	}
	start := time.Now()
	for range n {
		if err := op(); err != nil {
			return 0, err
		}
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n), nil
}

// Variant is one protection setting.
type Variant struct {
	Name string
	// Up starts it (e.g. the daemon) and returns how to stop it; nil for none.
	Up func() (down func(), err error)
	// Wrap turns the child's argv into the command to run (e.g. under seccomp).
	Wrap func(argv []string) []string
}

// Sample is one measurement.
type Sample struct {
	Variant, Workload string
	NsPerOp           float64
}

// Run measures every workload under every variant, rounds times, rotating the
// variants' order each round. self is the binary that runs Child with
// `-child WORKLOAD -n N`.
func Run(self string, variants []Variant, workloads []string, rounds, n int, log func(string)) ([]Sample, error) {
	var out []Sample
	// One discarded pass: the first run of a workload in a boot pays for cold
	// caches (the binary, page tables), whichever variant it falls to.
	for _, w := range workloads {
		if err := exec.Command(self, "-child", w, "-n", strconv.Itoa(n)).Run(); err != nil {
			return nil, fmt.Errorf("warm-up %s: %v", w, err)
		}
	}
	for r := range rounds {
		for i := range variants {
			v := variants[(i+r)%len(variants)]
			down := func() {}
			if v.Up != nil {
				d, err := v.Up()
				if err != nil {
					return nil, fmt.Errorf("%s: %w", v.Name, err)
				}
				down = d
			}
			for _, w := range workloads {
				argv := []string{self, "-child", w, "-n", strconv.Itoa(n)}
				if v.Wrap != nil {
					argv = v.Wrap(argv)
				}
				cmd := exec.Command(argv[0], argv[1:]...)
				cmd.Stderr = os.Stderr
				b, err := cmd.Output()
				if err != nil {
					down()
					return nil, fmt.Errorf("%s/%s: %v", v.Name, w, err)
				}
				ns, err := strconv.ParseFloat(strings.TrimSpace(string(b)), 64)
				if err != nil {
					down()
					return nil, fmt.Errorf("%s/%s: child said %q", v.Name, w, b)
				}
				out = append(out, Sample{v.Name, w, ns})
				if log != nil {
					log(fmt.Sprintf("round %d %s %s %.1f ns/op", r+1, v.Name, w, ns))
				}
			}
			down()
		}
	}
	return out, nil
}

// Stats are the median, min and max of a set of samples.
type Stats struct{ Median, Min, Max float64 }

func stats(xs []float64) Stats {
	s := slices.Clone(xs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stats{m, s[0], s[len(s)-1]}
}

// Table renders the samples as markdown: per workload and variant, the median
// and range in ns/op and the ratio of medians to the first variant's.
func Table(samples []Sample, variants []Variant, workloads []string) string {
	var b strings.Builder
	b.WriteString("| workload | variant | median ns/op | min–max | ratio to " + variants[0].Name + " |\n|---|---|---:|---:|---:|\n")
	for _, w := range workloads {
		var base float64
		for i, v := range variants {
			var xs []float64
			for _, s := range samples {
				if s.Variant == v.Name && s.Workload == w {
					xs = append(xs, s.NsPerOp)
				}
			}
			if len(xs) == 0 {
				continue
			}
			st := stats(xs)
			if i == 0 {
				base = st.Median
			}
			fmt.Fprintf(&b, "| %s | %s | %.1f | %.1f–%.1f | %.3f |\n", w, v.Name, st.Median, st.Min, st.Max, st.Median/base)
		}
	}
	return b.String()
}

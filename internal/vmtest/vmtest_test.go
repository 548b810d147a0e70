package vmtest

import (
	"testing"
	"time"
)

// TestBootKernels boots every kernel with a probe that checks the guest has
// BPF LSM, BTF, /dev/userfaultfd, a working userfaultfd syscall and x32.
func TestBootKernels(t *testing.T) {
	kernels := Kernels(t)
	probe := BuildStatic(t, "github.com/uffdgate/uffdgate/internal/vmtest/internal/probe", t.TempDir())
	for _, k := range kernels {
		t.Run(k.Series, func(t *testing.T) {
			t.Parallel()
			res := Run(t, k, Guest{
				Files: map[string]string{"/bin/probe": probe},
				Argv:  []string{"/bin/probe", k.Series},
			}, 2*time.Minute)
			t.Logf("kernel %s (%s) booted and powered off in %v", k.Series, k.Version, res.Duration.Round(time.Millisecond))
			if res.ExitCode != 0 {
				t.Errorf("probe exit code %d, output:\n%s", res.ExitCode, res.Output)
			}
		})
	}
}

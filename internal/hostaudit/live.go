//go:build linux && amd64

package hostaudit

import (
	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/gate"
	"github.com/uffdgate/uffdgate/internal/preflight"
	"github.com/uffdgate/uffdgate/internal/uffd"
)

// LiveKernel asks the running kernel.
type LiveKernel struct{}

// UserfaultfdSyscall implements Kernel.
func (LiveKernel) UserfaultfdSyscall() error {
	fd, err := uffd.Syscall(decision.UserModeOnly | decision.CloseOnExec)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// BPFLSMInBTF implements Kernel with preflight's check.
func (LiveKernel) BPFLSMInBTF() error {
	h := preflight.Default()
	return h.CheckLSMCompiled()
}

// MountSecurityFS implements Kernel: preflight mounts securityfs when the LSM
// list is missing.
func (LiveKernel) MountSecurityFS() error {
	_, err := preflight.Default().ActiveLSMs()
	return err
}

// LoadLSMProgram implements Kernel with the gate's probe.
func (LiveKernel) LoadLSMProgram() error { return gate.ProbeLSM() }

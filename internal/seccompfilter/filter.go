// Package seccompfilter is uffdgate's fallback for hosts without BPF LSM: a
// classic-BPF seccomp filter that refuses, with EPERM, the userfaultfd contexts
// that handle kernel faults, on every syscall ABI an x86_64 kernel offers:
//
//   - userfaultfd(flags) without UFFD_USER_MODE_ONLY in the low 32 bits of flags
//     (the kernel takes an int);
//   - ioctl(fd, USERFAULTFD_IOC_NEW, flags) with bit 0 clear in the low 32 bits of
//     flags (the kernel takes cmd as unsigned int and new_userfaultfd an int).
//
// Everything else is allowed. Unlike the gate, a seccomp filter applies to one
// process tree, is inherited across fork and execve, can never be removed or
// relaxed, and costs every syscall of the filtered processes a few BPF
// instructions.
//
// The ioctl rule looks at the command number only: seccomp cannot see which file
// fd refers to. An ioctl 0xAA00 on an unrelated device with bit 0 of its argument
// clear is refused too. No in-tree driver other than userfaultfd uses 0xAA00 (type
// 0xAA, number 0, no direction, no size), so this is a theoretical false positive.
package seccompfilter

import (
	"fmt"

	"golang.org/x/net/bpf"

	"github.com/uffdgate/uffdgate/internal/decision"
)

// Syscall ABI constants the filter matches (include/uapi/linux/audit.h,
// arch/x86/entry/syscalls/syscall_{64,32}.tbl, include/uapi/linux/seccomp.h).
const (
	AuditArchX86_64 = 0xc000003e // AUDIT_ARCH_X86_64: the 64-bit and the x32 ABI
	AuditArchI386   = 0x40000003 // AUDIT_ARCH_I386: the ia32 ABI (int $0x80, sysenter)

	X32SyscallBit = 0x40000000 // __X32_SYSCALL_BIT

	NrUserfaultfd64   = 323
	NrIoctl64         = 16
	NrUserfaultfdX32  = X32SyscallBit | 323 // x32 shares the 64-bit number
	NrIoctlX32        = X32SyscallBit | 514 // x32 has its own compat ioctl entry
	NrUserfaultfdI386 = 374
	NrIoctlI386       = 54

	IocNew = 0xAA00 // USERFAULTFD_IOC_NEW, _IO(0xAA, 0x00)

	RetAllow    = 0x7fff0000   // SECCOMP_RET_ALLOW
	RetErrno    = 0x00050000   // SECCOMP_RET_ERRNO; the errno is the low 16 bits
	RetErrEPERM = RetErrno | 1 // SECCOMP_RET_ERRNO | EPERM
)

// Offsets in struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer;
// __u64 args[6]; }. Both ABIs the filter knows are little-endian, so the low 32
// bits of args[i] are the word at 16+8i.
const (
	offNr   = 0
	offArch = 4
	offArg0 = 16
	offArg1 = 24
	offArg2 = 32
	// SeccompDataSize is sizeof(struct seccomp_data).
	SeccompDataSize = 64
)

// Options selects the filter.
type Options struct {
	// AllowKernelFaults lets every userfaultfd context through: Program is a
	// single allow, and Install installs nothing.
	AllowKernelFaults bool
}

// Program returns the filter as cBPF instructions.
//
// An architecture other than AUDIT_ARCH_X86_64 and AUDIT_ARCH_I386 is allowed.
// An x86_64 kernel reports no other (seccomp_data.arch is AUDIT_ARCH_I386 for
// compat tasks and AUDIT_ARCH_X86_64 otherwise), so the branch is reachable only
// on another CPU architecture, where the syscall numbers below mean other
// syscalls and the filter cannot tell userfaultfd apart: refusing there would
// turn a one-syscall rule into refusing everything. Install fails closed instead:
// it refuses to install the filter on a machine it was not written for.
func Program(o Options) []bpf.Instruction {
	if o.AllowKernelFaults {
		return []bpf.Instruction{bpf.RetConstant{Val: RetAllow}}
	}
	// Jump offsets are computed by the label resolver below, not by hand: a
	// miscounted skip in a security filter is the bug to rule out.
	p := &program{}
	p.load(offArch)
	p.jeq(AuditArchX86_64, "x86_64", "")
	p.jeq(AuditArchI386, "i386", "")
	p.ret(RetAllow) // unknown architecture, see above

	p.label("x86_64")
	p.load(offNr)
	p.jeq(NrUserfaultfd64, "uffd", "")
	p.jeq(NrIoctl64, "ioctl", "")
	p.jeq(NrUserfaultfdX32, "uffd", "")
	p.jeq(NrIoctlX32, "ioctl", "")
	p.ret(RetAllow)

	p.label("i386")
	p.load(offNr)
	p.jeq(NrUserfaultfdI386, "uffd", "")
	p.jeq(NrIoctlI386, "ioctl", "")
	p.ret(RetAllow)

	p.label("uffd")
	p.load(offArg0)
	p.jset(decision.UserModeOnly, "allow", "deny")

	p.label("ioctl")
	p.load(offArg1)
	p.jeq(IocNew, "", "allow")
	p.load(offArg2)
	p.jset(decision.UserModeOnly, "allow", "deny")

	p.label("allow")
	p.ret(RetAllow)
	p.label("deny")
	p.ret(RetErrEPERM)
	insns, err := p.resolve()
	if err != nil {
		panic("seccompfilter: " + err.Error()) // a bug in the program above, caught by every test
	}
	return insns
}

// Assemble returns the filter as raw instructions, ready for seccomp(2).
func Assemble(o Options) ([]bpf.RawInstruction, error) {
	return bpf.Assemble(Program(o))
}

// program is a tiny assembler with forward labels for conditional jumps.
type program struct {
	insns  []bpf.Instruction
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at          int
	true, false string // "" means the next instruction
}

func (p *program) load(off uint32) {
	p.insns = append(p.insns, bpf.LoadAbsolute{Off: off, Size: 4})
}

func (p *program) ret(v uint32) { p.insns = append(p.insns, bpf.RetConstant{Val: v}) }

func (p *program) jeq(v uint32, t, f string) { p.jump(bpf.JumpEqual, v, t, f) }

func (p *program) jset(v uint32, t, f string) { p.jump(bpf.JumpBitsSet, v, t, f) }

func (p *program) jump(c bpf.JumpTest, v uint32, t, f string) {
	p.fixups = append(p.fixups, fixup{at: len(p.insns), true: t, false: f})
	p.insns = append(p.insns, bpf.JumpIf{Cond: c, Val: v})
}

func (p *program) label(name string) {
	if p.labels == nil {
		p.labels = map[string]int{}
	}
	p.labels[name] = len(p.insns)
}

func (p *program) resolve() ([]bpf.Instruction, error) {
	skip := func(from int, label string) (uint8, error) {
		if label == "" {
			return 0, nil
		}
		to, ok := p.labels[label]
		if !ok {
			return 0, fmt.Errorf("undefined label %q", label)
		}
		d := to - from - 1
		if d < 0 || d > 255 {
			return 0, fmt.Errorf("jump from %d to %q (%d) out of range", from, label, to)
		}
		return uint8(d), nil
	}
	for _, f := range p.fixups {
		j := p.insns[f.at].(bpf.JumpIf)
		var err error
		if j.SkipTrue, err = skip(f.at, f.true); err != nil {
			return nil, err
		}
		if j.SkipFalse, err = skip(f.at, f.false); err != nil {
			return nil, err
		}
		p.insns[f.at] = j
	}
	return p.insns, nil
}

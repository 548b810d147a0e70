package seccompfilter

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"golang.org/x/net/bpf"
)

// SeccompData is struct seccomp_data as the filter sees it.
type SeccompData struct {
	Nr   uint32
	Arch uint32
	IP   uint64
	Args [6]uint64
}

// Bytes encodes d for bpf.VM. The VM loads 32-bit words big-endian, where the
// kernel loads them in native (little-endian) order, so each word is stored
// big-endian at its little-endian offset: the low half of a 64-bit argument at
// 16+8i, the high half at 20+8i. Every load of the filter then sees the value the
// kernel's would.
func (d SeccompData) Bytes() []byte {
	b := make([]byte, SeccompDataSize)
	put := func(off int, v uint32) { binary.BigEndian.PutUint32(b[off:], v) }
	put(0, d.Nr)
	put(4, d.Arch)
	put(8, uint32(d.IP))
	put(12, uint32(d.IP>>32))
	for i, a := range d.Args {
		put(16+8*i, uint32(a))
		put(20+8*i, uint32(a>>32))
	}
	return b
}

func run(t *testing.T, vm *bpf.VM, d SeccompData) uint32 {
	t.Helper()
	out, err := vm.Run(d.Bytes())
	if err != nil {
		t.Fatalf("bpf VM on %+v: %v", d, err)
	}
	return uint32(out)
}

func newVM(t *testing.T, o Options) *bpf.VM {
	t.Helper()
	// Through the assembler and back, so the VM runs the bytes the kernel gets.
	raw, err := Assemble(o)
	if err != nil {
		t.Fatal(err)
	}
	insns, ok := bpf.Disassemble(raw)
	if !ok {
		t.Fatalf("filter does not disassemble cleanly: %v", insns)
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// refuses is the specification, written independently of Program: what the
// kernel would turn into a kernel-fault context.
func refuses(d SeccompData) bool {
	var uffdNr, ioctlNr []uint32
	switch d.Arch {
	case AuditArchX86_64:
		uffdNr, ioctlNr = []uint32{323, 0x40000000 | 323}, []uint32{16, 0x40000000 | 514}
	case AuditArchI386:
		uffdNr, ioctlNr = []uint32{374}, []uint32{54}
	default:
		return false
	}
	for _, n := range uffdNr {
		if d.Nr == n {
			return int32(d.Args[0])&1 == 0 // the kernel's int flags
		}
	}
	for _, n := range ioctlNr {
		if d.Nr == n {
			return uint32(d.Args[1]) == 0xAA00 && int32(d.Args[2])&1 == 0
		}
	}
	return false
}

const (
	aarch64 = 0xc00000b7 // AUDIT_ARCH_AARCH64
	x86     = AuditArchX86_64
	i386    = AuditArchI386
)

func TestProgramBranches(t *testing.T) {
	vm := newVM(t, Options{})
	hi := uint64(1) << 32
	for _, c := range []struct {
		name string
		d    SeccompData
		deny bool
	}{
		// userfaultfd, 64-bit
		{"64 userfaultfd(0)", SeccompData{Nr: 323, Arch: x86}, true},
		{"64 userfaultfd(UMO)", SeccompData{Nr: 323, Arch: x86, Args: [6]uint64{1}}, false},
		{"64 userfaultfd(UMO|NONBLOCK|CLOEXEC)", SeccompData{Nr: 323, Arch: x86, Args: [6]uint64{0x80801}}, false},
		{"64 userfaultfd(NONBLOCK|CLOEXEC)", SeccompData{Nr: 323, Arch: x86, Args: [6]uint64{0x80800}}, true},
		{"64 userfaultfd(UMO only in the high half)", SeccompData{Nr: 323, Arch: x86, Args: [6]uint64{hi}}, true},
		{"64 userfaultfd(UMO, high junk)", SeccompData{Nr: 323, Arch: x86, Args: [6]uint64{hi | 1}}, false},
		{"64 userfaultfd(~UMO)", SeccompData{Nr: 323, Arch: x86, Args: [6]uint64{^uint64(1)}}, true},
		{"64 userfaultfd(0), UMO in arg1", SeccompData{Nr: 323, Arch: x86, Args: [6]uint64{0, 1}}, true},
		// userfaultfd, x32 and i386
		{"x32 userfaultfd(0)", SeccompData{Nr: 0x40000000 | 323, Arch: x86}, true},
		{"x32 userfaultfd(UMO)", SeccompData{Nr: 0x40000000 | 323, Arch: x86, Args: [6]uint64{1}}, false},
		{"i386 userfaultfd(0)", SeccompData{Nr: 374, Arch: i386}, true},
		{"i386 userfaultfd(UMO)", SeccompData{Nr: 374, Arch: i386, Args: [6]uint64{1}}, false},
		{"i386 userfaultfd(0), high junk", SeccompData{Nr: 374, Arch: i386, Args: [6]uint64{hi}}, true},
		// ioctl, every ABI
		{"64 ioctl(IOC_NEW, 0)", SeccompData{Nr: 16, Arch: x86, Args: [6]uint64{3, 0xAA00, 0}}, true},
		{"64 ioctl(IOC_NEW, UMO)", SeccompData{Nr: 16, Arch: x86, Args: [6]uint64{3, 0xAA00, 1}}, false},
		{"64 ioctl(IOC_NEW, 0x80800)", SeccompData{Nr: 16, Arch: x86, Args: [6]uint64{3, 0xAA00, 0x80800}}, true},
		{"64 ioctl(IOC_NEW, UMO in high half)", SeccompData{Nr: 16, Arch: x86, Args: [6]uint64{3, 0xAA00, hi}}, true},
		{"64 ioctl(IOC_NEW|high junk, 0)", SeccompData{Nr: 16, Arch: x86, Args: [6]uint64{3, hi | 0xAA00, 0}}, true},
		{"64 ioctl(IOC_NEW|high junk, UMO)", SeccompData{Nr: 16, Arch: x86, Args: [6]uint64{3, hi | 0xAA00, 1}}, false},
		{"64 ioctl(0xAA01, 0)", SeccompData{Nr: 16, Arch: x86, Args: [6]uint64{3, 0xAA01, 0}}, false},
		{"64 ioctl(TCGETS, 0)", SeccompData{Nr: 16, Arch: x86, Args: [6]uint64{3, 0x5401, 0}}, false},
		{"64 ioctl(UFFDIO_API, 0)", SeccompData{Nr: 16, Arch: x86, Args: [6]uint64{3, 0xc018aa3f, 0}}, false},
		{"64 ioctl(IOC_NEW in the fd slot)", SeccompData{Nr: 16, Arch: x86, Args: [6]uint64{0xAA00, 0, 0}}, false},
		{"x32 ioctl(IOC_NEW, 0)", SeccompData{Nr: 0x40000000 | 514, Arch: x86, Args: [6]uint64{3, 0xAA00, 0}}, true},
		{"x32 ioctl(IOC_NEW, UMO)", SeccompData{Nr: 0x40000000 | 514, Arch: x86, Args: [6]uint64{3, 0xAA00, 1}}, false},
		{"i386 ioctl(IOC_NEW, 0)", SeccompData{Nr: 54, Arch: i386, Args: [6]uint64{3, 0xAA00, 0}}, true},
		{"i386 ioctl(IOC_NEW, UMO)", SeccompData{Nr: 54, Arch: i386, Args: [6]uint64{3, 0xAA00, 1}}, false},
		// numbers that mean something else on the ABI at hand
		{"x32 bit on ioctl's 64-bit number", SeccompData{Nr: 0x40000000 | 16, Arch: x86, Args: [6]uint64{3, 0xAA00, 0}}, false},
		{"64-bit number 514 (no x32 bit)", SeccompData{Nr: 514, Arch: x86, Args: [6]uint64{3, 0xAA00, 0}}, false},
		{"i386 323 (not userfaultfd there)", SeccompData{Nr: 323, Arch: i386}, false},
		{"i386 16 (lchown)", SeccompData{Nr: 16, Arch: i386, Args: [6]uint64{3, 0xAA00, 0}}, false},
		{"64 374 (not userfaultfd there)", SeccompData{Nr: 374, Arch: x86}, false},
		{"64 54 (setsockopt)", SeccompData{Nr: 54, Arch: x86, Args: [6]uint64{3, 0xAA00, 0}}, false},
		{"64 getpid", SeccompData{Nr: 39, Arch: x86}, false},
		// unknown architecture: allowed, see Program
		{"aarch64 userfaultfd(0)", SeccompData{Nr: 282, Arch: aarch64}, false},
		{"aarch64 323", SeccompData{Nr: 323, Arch: aarch64}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := refuses(c.d); got != c.deny {
				t.Fatalf("the test's own specification says deny=%v, the table %v", got, c.deny)
			}
			want := uint32(RetAllow)
			if c.deny {
				want = RetErrEPERM
			}
			if got := run(t, vm, c.d); got != want {
				t.Errorf("filter returned %#x, want %#x", got, want)
			}
		})
	}
}

// TestProgramMatchesSpecification runs the filter on random and boundary inputs
// against the independent specification.
func TestProgramMatchesSpecification(t *testing.T) {
	vm := newVM(t, Options{})
	r := rand.New(rand.NewPCG(1, 2))
	arches := []uint32{x86, i386, aarch64, 0}
	nrs := []uint32{323, 374, 16, 54, 514, 0x40000000 | 323, 0x40000000 | 514, 0x40000000 | 16, 0x40000000 | 374, 0, 39, 0xffffffff}
	args := []uint64{0, 1, 2, 3, 0xAA00, 0xAA01, 0x80800, 0x80801, 1 << 32, 1<<32 | 1, 1<<32 | 0xAA00, ^uint64(0), ^uint64(1), 0xffffffff}
	pick := func() uint64 {
		if r.IntN(4) == 0 {
			return r.Uint64()
		}
		return args[r.IntN(len(args))]
	}
	for i := 0; i < 200000; i++ {
		d := SeccompData{Arch: arches[r.IntN(len(arches))], Nr: nrs[r.IntN(len(nrs))], IP: r.Uint64()}
		for j := range d.Args {
			d.Args[j] = pick()
		}
		want := uint32(RetAllow)
		if refuses(d) {
			want = RetErrEPERM
		}
		if got := run(t, vm, d); got != want {
			t.Fatalf("input %+v: filter returned %#x, want %#x", d, got, want)
		}
	}
}

func TestAllowKernelFaultsAllowsEverything(t *testing.T) {
	vm := newVM(t, Options{AllowKernelFaults: true})
	for _, d := range []SeccompData{
		{Nr: 323, Arch: x86},
		{Nr: 0x40000000 | 323, Arch: x86},
		{Nr: 374, Arch: i386},
		{Nr: 16, Arch: x86, Args: [6]uint64{3, 0xAA00, 0}},
		{Nr: 54, Arch: i386, Args: [6]uint64{3, 0xAA00, 0}},
	} {
		if got := run(t, vm, d); got != RetAllow {
			t.Errorf("%+v: %#x, want allow", d, got)
		}
	}
}

// TestProgramIsSmall guards the cost every syscall of a filtered process pays:
// the longest path is the ioctl one.
func TestProgramIsSmall(t *testing.T) {
	if n := len(Program(Options{})); n > 32 {
		t.Errorf("filter has %d instructions; it runs on every syscall, keep it short", n)
	}
}

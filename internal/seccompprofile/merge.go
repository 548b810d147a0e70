// Package seccompprofile writes container seccomp profiles (Docker's format, which
// containerd and CRI-O read too) that hold userfaultfd to user-mode-only contexts:
// userfaultfd(flags) is allowed iff flags has UFFD_USER_MODE_ONLY, and
// ioctl(fd, USERFAULTFD_IOC_NEW, flags) iff flags has it; every other rule of the
// profile it starts from keeps its effect.
//
// The obvious design, one ERRNO rule for the refused ioctl on top of the profile's
// unconditional "ioctl: allow", does not work: libseccomp, which runc and crun
// compile profiles with, lets an unconditional rule for a syscall override every
// conditional rule for it, whatever their actions (and runc drops an ERRNO rule
// equal to the default action before libseccomp even sees it). The tests show both.
// So the unconditional ioctl allow is split into conditional allows that together
// admit every ioctl but the refused one: the command differs from
// USERFAULTFD_IOC_NEW in some bit (one rule per bit, with a mask, so the high half
// of the register, which the kernel ignores, cannot smuggle the command past), or
// the argument has UFFD_USER_MODE_ONLY.
package seccompprofile

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Marker starts the comment of every entry uffdgate adds.
const Marker = "uffdgate:"

const (
	userModeOnly = 1 // UFFD_USER_MODE_ONLY
	// USERFAULTFD_IOC_NEW is _IO(0xAA, 0x00): 0xAA00 where _IOC_NONE is 0 (x86,
	// arm, s390, riscv, loongarch), 0x2000AA00 where it is 1 (mips, powerpc).
	iocNew     = 0xAA00
	iocNewIOC1 = 0x2000AA00
	bit29      = 1 << 29 // the only bit in which the two encodings differ
	low32      = 0xffffffff
)

// ioc1Arches are the native architecture names moby matches includes/excludes
// "arches" against, for the architectures whose _IOC_NONE is 1.
var ioc1Arches = []string{"mips", "mipsel", "mips64", "mips64n32", "mipsel64", "mips3l64n32", "mipsel64n32", "ppc", "ppc64", "ppc64le"}

// Default returns Docker's default profile as vendored in
// github.com/moby/profiles/seccomp, the base when no profile is given to merge
// into: a profile that only gated userfaultfd and allowed everything else would,
// once given to `docker run --security-opt seccomp=`, replace Docker's default and
// drop all its protections.
func Default() *seccomp.Seccomp { return seccomp.DefaultProfile() }

// DefaultName describes Default's origin for people.
func DefaultName() string {
	v := "(unknown version)"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/moby/profiles/seccomp" {
				v = d.Version
			}
		}
	}
	return "Docker's default profile (github.com/moby/profiles/seccomp " + v + ")"
}

// permissive reports whether an action may let the syscall run: allow and log do,
// trace and notify leave it to another process.
func permissive(a specs.LinuxSeccompAction) bool {
	switch a {
	case specs.ActAllow, specs.ActLog, specs.ActTrace, specs.ActNotify:
		return true
	}
	return false
}

func names(s *seccomp.Syscall) []string {
	if s.Name != "" {
		return []string{s.Name}
	}
	return s.Names
}

func describe(s *seccomp.Syscall) string {
	d := string(s.Action)
	if s.ErrnoRet != nil {
		d += fmt.Sprintf(" errno %d", *s.ErrnoRet)
	}
	if len(s.Args) == 0 {
		d += ", unconditional"
	} else {
		d += fmt.Sprintf(", %d argument conditions", len(s.Args))
	}
	if s.Includes != nil || s.Excludes != nil {
		d += ", with includes/excludes"
	}
	return d
}

// Merge rewrites p in place (see the package comment) and returns what it did, one
// line each, for the operator. file names p in errors. Nothing is changed when it
// returns an error.
func Merge(p *seccomp.Seccomp, file string) ([]string, error) {
	fail := func(i int, msg, fix string) error {
		return &Error{File: file, Path: fmt.Sprintf("syscalls[%d]", i), Msg: msg, Fix: fix}
	}
	var notes []string
	defPermissive := permissive(p.DefaultAction)
	// Whether the default action is exactly the refusal uffdgate wants (EPERM), in
	// which case explicit refusals would be dropped by runc as redundant anyway.
	defEPERM := p.DefaultAction == specs.ActErrno && (p.DefaultErrnoRet == nil || *p.DefaultErrnoRet == 1)

	var (
		splitFrom   []int // unconditional permissive ioctl entries to split
		blockingIfs []int // conditional refusing ioctl entries
		narrowIfs   []int // conditional permissive ioctl entries that never admit the refused ioctl
	)
	for i, s := range p.Syscalls {
		if strings.HasPrefix(s.Comment, Marker) {
			return nil, fail(i, "this profile already has uffdgate's rules (comment "+fmt.Sprintf("%q", s.Comment)+")",
				"merge into the profile you started from, not into uffdgate's output")
		}
		if !slices.Contains(names(s), "ioctl") {
			continue
		}
		switch {
		case permissive(s.Action) && len(s.Args) == 0:
			splitFrom = append(splitFrom, i)
		case permissive(s.Action) && !neverMatchesRefusedIoctl(s.Args):
			return nil, fail(i, fmt.Sprintf("this %s rule lets ioctl through under conditions that admit USERFAULTFD_IOC_NEW without UFFD_USER_MODE_ONLY, and uffdgate cannot narrow a conditional rule safely", s.Action),
				"add a condition on argument 1 that excludes 0xAA00 (for example SCMP_CMP_MASKED_EQ value 4294967295 valueTwo N with N != 43520), or remove the rule")
		case permissive(s.Action):
			narrowIfs = append(narrowIfs, i)
		case len(s.Args) > 0:
			blockingIfs = append(blockingIfs, i)
		}
	}
	if len(splitFrom) > 0 && len(blockingIfs) > 0 {
		return nil, fail(blockingIfs[0], fmt.Sprintf("this conditional ioctl rule has no effect today, because syscalls[%d] allows ioctl unconditionally and libseccomp lets an unconditional rule override conditional ones; once uffdgate splits syscalls[%d] into conditional rules, libseccomp would decide between overlapping conditional rules by the order they were added, not by their actions", splitFrom[0], splitFrom[0]),
			"remove this rule (it is not enforced now), or restrict the ioctl allow rule yourself, then merge")
	}

	// Nothing fails from here on: apply.
	kept := make([]*seccomp.Syscall, 0, len(p.Syscalls)+40)
	var splits []*seccomp.Syscall
	for i, s := range p.Syscalls {
		ns := names(s)
		if !slices.Contains(ns, "userfaultfd") && !slices.Contains(splitFrom, i) {
			kept = append(kept, s)
			continue
		}
		if slices.Contains(ns, "userfaultfd") {
			notes = append(notes, fmt.Sprintf("base syscalls[%d] (%s) named userfaultfd: removed it there; uffdgate's rules decide userfaultfd now", i, describe(s)))
		}
		if slices.Contains(splitFrom, i) {
			orig := *s
			splits = append(splits, &orig)
			notes = append(notes, fmt.Sprintf("base syscalls[%d] (%s) allowed ioctl: moved ioctl into conditional rules with the same action and includes/excludes that allow every ioctl except USERFAULTFD_IOC_NEW without UFFD_USER_MODE_ONLY", i, describe(s)))
		}
		rest := slices.DeleteFunc(slices.Clone(ns), func(n string) bool { return n == "userfaultfd" || (n == "ioctl" && slices.Contains(splitFrom, i)) })
		if len(rest) == 0 {
			continue
		}
		c := *s
		c.Name, c.Names = "", rest
		kept = append(kept, &c)
	}

	// userfaultfd: allowed iff flags & UFFD_USER_MODE_ONLY.
	flagsArg := func(v uint64) []specs.LinuxSeccompArg { return []specs.LinuxSeccompArg{masked(0, userModeOnly, v)} }
	refuseUFFD := entry("userfaultfd", specs.ActErrno, epermRet(), Marker+" userfaultfd without UFFD_USER_MODE_ONLY handles kernel faults: refused", nil, nil, flagsArg(0))
	if defPermissive {
		kept = append(kept, refuseUFFD)
		notes = append(notes, fmt.Sprintf("added: userfaultfd refused with EPERM without UFFD_USER_MODE_ONLY (the default action %s allows the rest)", p.DefaultAction))
	} else {
		kept = append(kept, entry("userfaultfd", specs.ActAllow, nil, Marker+" userfaultfd with UFFD_USER_MODE_ONLY handles user-mode faults only: allowed", nil, nil, flagsArg(userModeOnly)))
		notes = append(notes, "added: userfaultfd allowed with UFFD_USER_MODE_ONLY")
		if !defEPERM {
			kept = append(kept, refuseUFFD)
			notes = append(notes, fmt.Sprintf("added: userfaultfd refused with EPERM without UFFD_USER_MODE_ONLY (rather than the default action %s)", p.DefaultAction))
		}
	}

	// ioctl: USERFAULTFD_IOC_NEW allowed iff arg & UFFD_USER_MODE_ONLY.
	for _, s := range splits {
		kept = append(kept, ioctlAllows(s)...)
		if !defPermissive && !defEPERM {
			kept = append(kept, ioctlRefusals(s.Includes, s.Excludes)...)
		}
	}
	switch {
	case defPermissive:
		kept = append(kept, ioctlRefusals(nil, nil)...)
		notes = append(notes, "added: USERFAULTFD_IOC_NEW refused with EPERM without UFFD_USER_MODE_ONLY")
	case len(splits) > 0:
		notes = append(notes, "added: USERFAULTFD_IOC_NEW allowed with UFFD_USER_MODE_ONLY, refused otherwise")
	case len(narrowIfs) > 0:
		notes = append(notes, fmt.Sprintf("ioctl: the profile allows it only under conditions that never admit USERFAULTFD_IOC_NEW without UFFD_USER_MODE_ONLY (base syscalls%v): left as it is", narrowIfs))
	default:
		notes = append(notes, "ioctl: the profile allows no ioctl, so /dev/userfaultfd cannot create contexts at all: left as it is")
	}
	p.Syscalls = kept
	return notes, nil
}

func epermRet() *uint { e := uint(1); return &e }

func masked(index uint, mask, value uint64) specs.LinuxSeccompArg {
	return specs.LinuxSeccompArg{Index: index, Value: mask, ValueTwo: value, Op: specs.OpMaskedEqual}
}

func entry(name string, act specs.LinuxSeccompAction, errnoRet *uint, comment string, inc, exc *seccomp.Filter, args []specs.LinuxSeccompArg) *seccomp.Syscall {
	return &seccomp.Syscall{
		LinuxSyscall: specs.LinuxSyscall{Names: []string{name}, Action: act, ErrnoRet: errnoRet, Args: args},
		Comment:      comment, Includes: inc, Excludes: exc,
	}
}

// ioctlAllows splits the unconditional ioctl rule s into conditional rules with
// its action and includes/excludes: together they match every ioctl except
// USERFAULTFD_IOC_NEW (in the architecture's encoding) without UFFD_USER_MODE_ONLY.
// The command is compared bit by bit under a mask of the low 32 bits, because the
// kernel takes it as unsigned int: a plain inequality on the 64-bit register would
// let 0x1_0000AA00 through as "not 0xAA00".
func ioctlAllows(s *seccomp.Syscall) []*seccomp.Syscall {
	comment := fmt.Sprintf("%s ioctl as the base profile allowed it (%s), except USERFAULTFD_IOC_NEW without UFFD_USER_MODE_ONLY: ", Marker, s.Action)
	var out []*seccomp.Syscall
	add := func(inc, exc *seccomp.Filter, why string, arg specs.LinuxSeccompArg) {
		out = append(out, entry("ioctl", s.Action, s.ErrnoRet, comment+why, inc, exc, []specs.LinuxSeccompArg{arg}))
	}
	for b := 0; b < 32; b++ {
		m := uint64(1) << b
		if m == bit29 {
			continue
		}
		add(cloneFilter(s.Includes), cloneFilter(s.Excludes), fmt.Sprintf("command bit %d differs from USERFAULTFD_IOC_NEW's", b), masked(1, m, ^uint64(iocNew)&m))
	}
	if inc, exc, ok := ioc0Only(s.Includes, s.Excludes); ok {
		add(inc, exc, "command bit 29 differs from USERFAULTFD_IOC_NEW's (0xAA00)", masked(1, bit29, bit29))
	}
	if inc, exc, ok := ioc1Only(s.Includes, s.Excludes); ok {
		add(inc, exc, "command bit 29 differs from USERFAULTFD_IOC_NEW's (0x2000AA00)", masked(1, bit29, 0))
	}
	add(cloneFilter(s.Includes), cloneFilter(s.Excludes), "argument has UFFD_USER_MODE_ONLY", masked(2, userModeOnly, userModeOnly))
	return out
}

// ioctlRefusals refuses USERFAULTFD_IOC_NEW without UFFD_USER_MODE_ONLY with
// EPERM, where the profile's default action would do something else.
func ioctlRefusals(inc, exc *seccomp.Filter) []*seccomp.Syscall {
	comment := Marker + " USERFAULTFD_IOC_NEW without UFFD_USER_MODE_ONLY creates a context that handles kernel faults: refused"
	var out []*seccomp.Syscall
	if i, e, ok := ioc0Only(inc, exc); ok {
		out = append(out, entry("ioctl", specs.ActErrno, epermRet(), comment, i, e, []specs.LinuxSeccompArg{masked(1, low32, iocNew), masked(2, userModeOnly, 0)}))
	}
	if i, e, ok := ioc1Only(inc, exc); ok {
		out = append(out, entry("ioctl", specs.ActErrno, epermRet(), comment, i, e, []specs.LinuxSeccompArg{masked(1, low32, iocNewIOC1), masked(2, userModeOnly, 0)}))
	}
	return out
}

// ioc0Only narrows includes/excludes to the architectures where
// USERFAULTFD_IOC_NEW is 0xAA00; ok is false when nothing is left.
func ioc0Only(inc, exc *seccomp.Filter) (*seccomp.Filter, *seccomp.Filter, bool) {
	if inc != nil && len(inc.Arches) > 0 && !slices.ContainsFunc(inc.Arches, func(a string) bool { return !slices.Contains(ioc1Arches, a) }) {
		return nil, nil, false
	}
	e := cloneFilter(exc)
	if e == nil {
		e = &seccomp.Filter{}
	}
	for _, a := range ioc1Arches {
		if !slices.Contains(e.Arches, a) {
			e.Arches = append(e.Arches, a)
		}
	}
	return cloneFilter(inc), e, true
}

// ioc1Only narrows includes/excludes to the architectures where
// USERFAULTFD_IOC_NEW is 0x2000AA00; ok is false when nothing is left.
func ioc1Only(inc, exc *seccomp.Filter) (*seccomp.Filter, *seccomp.Filter, bool) {
	i := cloneFilter(inc)
	if i == nil {
		i = &seccomp.Filter{}
	}
	if len(i.Arches) == 0 {
		i.Arches = slices.Clone(ioc1Arches)
	} else {
		i.Arches = slices.DeleteFunc(i.Arches, func(a string) bool { return !slices.Contains(ioc1Arches, a) })
	}
	if exc != nil {
		i.Arches = slices.DeleteFunc(i.Arches, func(a string) bool { return slices.Contains(exc.Arches, a) })
	}
	if len(i.Arches) == 0 {
		return nil, nil, false
	}
	return i, cloneFilter(exc), true
}

func cloneFilter(f *seccomp.Filter) *seccomp.Filter {
	if f == nil {
		return nil
	}
	c := *f
	c.Caps, c.Arches = slices.Clone(f.Caps), slices.Clone(f.Arches)
	if f.MinKernel != nil {
		k := *f.MinKernel
		c.MinKernel = &k
	}
	return &c
}

// neverMatchesRefusedIoctl reports whether the conditions of a rule provably never
// match ioctl(fd, USERFAULTFD_IOC_NEW, flags without UFFD_USER_MODE_ONLY), in
// either encoding. runc ANDs an entry's conditions, except when an argument index
// repeats: then each condition becomes a rule of its own (OR).
func neverMatchesRefusedIoctl(args []specs.LinuxSeccompArg) bool {
	seen := map[uint]bool{}
	or := false
	for _, a := range args {
		or = or || seen[a.Index]
		seen[a.Index] = true
	}
	for _, a := range args {
		ex := excludesRefusedIoctl(a)
		if or && !ex {
			return false
		}
		if !or && ex {
			return true
		}
	}
	return or
}

func excludesRefusedIoctl(a specs.LinuxSeccompArg) bool {
	if a.Op == specs.OpMaskedEqual && a.ValueTwo&^a.Value != 0 {
		return true // can never match
	}
	switch a.Index {
	case 1:
		for _, cmd := range []uint64{iocNew, iocNewIOC1} {
			var ex bool
			switch a.Op {
			case specs.OpEqualTo:
				ex = a.Value&low32 != cmd
			case specs.OpMaskedEqual:
				ex = a.ValueTwo&low32 != cmd&a.Value&low32
			case specs.OpLessThan:
				ex = a.Value <= cmd // the smallest register value with that low half is cmd itself
			case specs.OpLessEqual:
				ex = a.Value < cmd
			}
			if !ex {
				return false
			}
		}
		return true
	case 2:
		switch a.Op {
		case specs.OpEqualTo:
			return a.Value&userModeOnly != 0
		case specs.OpMaskedEqual:
			return a.Value&userModeOnly != 0 && a.ValueTwo&userModeOnly != 0
		}
	}
	return false
}

// Marshal writes p the way Docker's default profile is written.
func Marshal(p *seccomp.Seccomp) ([]byte, error) {
	b, err := json.MarshalIndent(p, "", "\t")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Generate merges uffdgate's rules into base (see Merge) and returns the profile
// as JSON with the notes for the operator. The result is read back through Parse
// and moby's own loader before it is returned, so a profile Docker would reject is
// never written.
func Generate(base *seccomp.Seccomp, baseName string) ([]byte, []string, error) {
	notes, err := Merge(base, baseName)
	if err != nil {
		return nil, nil, err
	}
	out, err := Marshal(base)
	if err != nil {
		return nil, nil, fmt.Errorf("seccompprofile: encoding the profile: %w", err)
	}
	if _, err := Parse("uffdgate's output", out); err != nil {
		return nil, nil, fmt.Errorf("seccompprofile: the merged profile does not read back (a bug): %w", err)
	}
	if _, err := seccomp.LoadProfile(string(out), &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}}); err != nil {
		return nil, nil, fmt.Errorf("seccompprofile: moby's loader rejects the merged profile (a bug): %w", err)
	}
	return out, notes, nil
}

// WriteFile writes data to path through a temporary file in the same directory
// and a rename, so a reader (or a crash) never sees half a profile.
func WriteFile(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

//go:build libseccomp && cgo

// Command scmpload compiles a Docker-format seccomp profile the way Docker and
// containerd have it compiled: moby's profile loader (includes, excludes, archMap),
// then libseccomp through libseccomp-golang with runc's rule semantics
// (libcontainer/seccomp.matchCall: rules whose action equals the default are
// dropped, conditions on a repeated argument become separate rules, binary-tree
// optimisation past 32 rules). It then either applies the filter and executes a
// command, or exports the BPF program.
//
// It is a test helper only: it needs cgo and libseccomp-dev, which the uffdgate
// binary must not. Build it with `go build -tags libseccomp`.
//
//	scmpload [-caps CAP,...] PROFILE apply CMD ARGS...
//	scmpload [-caps CAP,...] PROFILE export OUT
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	libseccomp "github.com/seccomp/libseccomp-golang"
)

// dockerCaps is Docker's default bounding set, which decides the profile's
// capability-dependent rules.
const dockerCaps = "CAP_CHOWN,CAP_DAC_OVERRIDE,CAP_FSETID,CAP_FOWNER,CAP_MKNOD,CAP_NET_RAW,CAP_SETGID,CAP_SETUID,CAP_SETFCAP,CAP_SETPCAP,CAP_NET_BIND_SERVICE,CAP_SYS_CHROOT,CAP_KILL,CAP_AUDIT_WRITE"

func main() {
	caps := flag.String("caps", dockerCaps, "the container's bounding capabilities, for the profile's includes/excludes")
	flag.Parse()
	a := flag.Args()
	if len(a) < 3 || (a[1] != "apply" && a[1] != "export") || (a[1] == "export" && len(a) != 3) {
		fmt.Fprintln(os.Stderr, "usage: scmpload [-caps CAP,...] PROFILE apply CMD ARGS... | PROFILE export OUT")
		os.Exit(2)
	}
	f, err := compile(a[0], strings.Split(*caps, ","))
	if err != nil {
		fmt.Fprintln(os.Stderr, "scmpload:", err)
		os.Exit(1)
	}
	switch a[1] {
	case "export":
		out, err := os.Create(a[2])
		if err == nil {
			err = f.ExportBPF(out)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "scmpload: export:", err)
			os.Exit(1)
		}
	case "apply":
		if err := f.Load(); err != nil {
			fmt.Fprintln(os.Stderr, "scmpload: load:", err)
			os.Exit(1)
		}
		err := syscall.Exec(a[2], a[2:], os.Environ())
		fmt.Fprintln(os.Stderr, "scmpload: exec:", err)
		os.Exit(1)
	}
}

func compile(path string, caps []string) (*libseccomp.ScmpFilter, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rs := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{Bounding: caps}}}
	cfg, err := seccomp.LoadProfile(string(body), rs)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, errors.New("profile disables seccomp")
	}
	def, err := action(cfg.DefaultAction, cfg.DefaultErrnoRet)
	if err != nil {
		return nil, fmt.Errorf("defaultAction: %w", err)
	}
	f, err := libseccomp.NewFilter(def)
	if err != nil {
		return nil, err
	}
	for _, a := range cfg.Architectures {
		name, ok := archNames[a]
		if !ok {
			return nil, fmt.Errorf("architecture %s unknown to this helper", a)
		}
		arch, err := libseccomp.GetArchFromString(name)
		if err != nil {
			return nil, err
		}
		if err := f.AddArch(arch); err != nil {
			return nil, err
		}
	}
	for _, fl := range cfg.Flags {
		switch fl {
		case specs.LinuxSeccompFlagLog:
			err = f.SetLogBit(true)
		case specs.LinuxSeccompFlagSpecAllow:
			err = f.SetSSB(true)
		case "SECCOMP_FILTER_FLAG_TSYNC":
		default:
			err = fmt.Errorf("flag %s unknown to this helper", fl)
		}
		if err != nil {
			return nil, err
		}
	}
	n := 0
	for _, c := range cfg.Syscalls {
		n += len(c.Names)
	}
	if n > 32 {
		if err := f.SetOptimize(2); err != nil {
			return nil, err
		}
	}
	for i, c := range cfg.Syscalls {
		act, err := action(c.Action, c.ErrnoRet)
		if err != nil {
			return nil, fmt.Errorf("syscalls[%d] (after includes/excludes): %w", i, err)
		}
		for _, name := range c.Names {
			if err := addRule(f, name, act, def, c.Args); err != nil {
				return nil, fmt.Errorf("syscall %s: %w", name, err)
			}
		}
	}
	return f, nil
}

var archNames = map[specs.Arch]string{
	specs.ArchX86_64: "amd64",
	specs.ArchX86:    "x86",
	specs.ArchX32:    "x32",
}

func action(a specs.LinuxSeccompAction, errnoRet *uint) (libseccomp.ScmpAction, error) {
	ret := int16(syscall.EPERM)
	if errnoRet != nil {
		ret = int16(*errnoRet)
	}
	switch a {
	case specs.ActKill, specs.ActKillThread:
		return libseccomp.ActKillThread, nil
	case specs.ActKillProcess:
		return libseccomp.ActKillProcess, nil
	case specs.ActTrap:
		return libseccomp.ActTrap, nil
	case specs.ActErrno:
		return libseccomp.ActErrno.SetReturnCode(ret), nil
	case specs.ActTrace:
		return libseccomp.ActTrace.SetReturnCode(ret), nil
	case specs.ActAllow:
		return libseccomp.ActAllow, nil
	case specs.ActLog:
		return libseccomp.ActLog, nil
	}
	return libseccomp.ActInvalid, fmt.Errorf("action %q unknown to this helper", a)
}

var ops = map[specs.LinuxSeccompOperator]libseccomp.ScmpCompareOp{
	specs.OpNotEqual:     libseccomp.CompareNotEqual,
	specs.OpLessThan:     libseccomp.CompareLess,
	specs.OpLessEqual:    libseccomp.CompareLessOrEqual,
	specs.OpEqualTo:      libseccomp.CompareEqual,
	specs.OpGreaterEqual: libseccomp.CompareGreaterEqual,
	specs.OpGreaterThan:  libseccomp.CompareGreater,
	specs.OpMaskedEqual:  libseccomp.CompareMaskedEqual,
}

// addRule is runc's matchCall.
func addRule(f *libseccomp.ScmpFilter, name string, act, def libseccomp.ScmpAction, args []specs.LinuxSeccompArg) error {
	if act == def {
		return nil
	}
	nr, err := libseccomp.GetSyscallFromName(name)
	if err != nil {
		return nil // runc ignores syscalls libseccomp does not know
	}
	if len(args) == 0 {
		return f.AddRule(nr, act)
	}
	var conds []libseccomp.ScmpCondition
	count := map[uint]int{}
	repeated := false
	for _, a := range args {
		op, ok := ops[a.Op]
		if !ok {
			return fmt.Errorf("operator %q unknown to this helper", a.Op)
		}
		c, err := libseccomp.MakeCondition(a.Index, op, a.Value, a.ValueTwo)
		if err != nil {
			return err
		}
		conds = append(conds, c)
		count[a.Index]++
		repeated = repeated || count[a.Index] > 1
	}
	if !repeated {
		return f.AddRuleConditional(nr, act, conds)
	}
	for _, c := range conds {
		if err := f.AddRuleConditional(nr, act, []libseccomp.ScmpCondition{c}); err != nil {
			return err
		}
	}
	return nil
}

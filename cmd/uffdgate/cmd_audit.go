package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/uffdgate/uffdgate/internal/hostaudit"
	"github.com/uffdgate/uffdgate/internal/hostinfo"
	"github.com/uffdgate/uffdgate/internal/policy"
	"github.com/uffdgate/uffdgate/internal/state"
)

func init() {
	commands["audit"] = command{"audit [--policy FILE] [--json]   who can get kernel-fault userfaultfd contexts here, and what to change (exit 1 on warnings)", cmdAudit}
}

func cmdAudit(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uffdgate audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	policyPath := fs.String("policy", "", "evaluate this policy instead of the running daemon's")
	asJSON := fs.Bool("json", false, "print JSON (fields in docs/audit-explain-probe.md)")
	statePath := fs.String("state", state.DefaultPath, "the running daemon's state file")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "uffdgate audit: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	host := hostinfo.Live()
	gate, gerr := host.ResolveGate(*statePath, *policyPath)
	var perr *policy.Error
	if errors.As(gerr, &perr) {
		fmt.Fprintln(stderr, "uffdgate audit: invalid policy:", gerr)
		return exitUsage
	}
	rep := hostaudit.Run(hostaudit.Options{Host: host, Kernel: hostaudit.LiveKernel{}, Gate: gate, GateErr: gerr, Self: os.Getpid()})
	var err error
	if *asJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "uffdgate audit:", err)
		return exitFailure
	}
	return rep.ExitCode
}

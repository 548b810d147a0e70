package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/uffdgate/uffdgate/internal/hostinfo"
	"github.com/uffdgate/uffdgate/internal/probe"
	"github.com/uffdgate/uffdgate/internal/state"
)

// probeChild is the hidden subcommand probe children run.
const probeChild = "__probe-child"

func init() {
	commands["probe"] = command{"probe [--json] [--timeout 10s]   self-test: try every creation path as several identities, compare with the model (exit 1 on a mismatch)", cmdProbe}
	// The child is dispatched here rather than registered in commands, which
	// usage() lists in full: it is an implementation detail, not a command.
	if len(os.Args) > 1 && os.Args[1] == probeChild {
		os.Exit(probe.ChildMain(os.Args[2:], os.Stdout, os.Stderr))
	}
}

// selfExe is this binary's path, so that children show as "uffdgate" in the
// gate's events, or /proc/self/exe when the path no longer leads to it.
func selfExe() string {
	p, err := os.Executable()
	if err != nil {
		return "/proc/self/exe"
	}
	var a, b syscall.Stat_t
	if syscall.Stat(p, &a) != nil || syscall.Stat("/proc/self/exe", &b) != nil || a.Dev != b.Dev || a.Ino != b.Ino {
		return "/proc/self/exe"
	}
	return p
}

func cmdProbe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uffdgate probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print JSON (fields in docs/audit-explain-probe.md)")
	timeout := fs.Duration("timeout", 10*time.Second, "each child is SIGKILLed after this long")
	statePath := fs.String("state", state.DefaultPath, "the running daemon's state file")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "uffdgate probe: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "uffdgate probe: --timeout %s: want a positive duration such as 10s\n", *timeout)
		return exitUsage
	}
	host := hostinfo.Live()
	gate, err := host.ResolveGate(*statePath, "")
	if err != nil {
		// Unknown policy: every comparison would be a guess.
		fmt.Fprintln(stderr, "uffdgate probe:", err)
		return exitFailure
	}
	rep, err := probe.Run(context.Background(), probe.Options{Host: host, Gate: gate, Exe: selfExe(), ChildArgs: []string{probeChild}, Timeout: *timeout})
	if err != nil {
		fmt.Fprintln(stderr, "uffdgate probe:", err)
		return exitHost
	}
	if *asJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "uffdgate probe:", err)
		return exitFailure
	}
	if !rep.OK() {
		return exitFailure
	}
	return exitOK
}

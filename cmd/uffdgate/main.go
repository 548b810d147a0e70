// Command uffdgate gates userfaultfd: every process may create user-mode-only
// contexts; only allowlisted ones may create contexts that handle kernel faults.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/uffdgate/uffdgate/internal/daemon"
	"github.com/uffdgate/uffdgate/internal/policy"
	"github.com/uffdgate/uffdgate/internal/preflight"
)

// Exit codes, documented in the README.
const (
	exitOK      = 0
	exitFailure = 1 // unexpected runtime error
	exitUsage   = 2 // bad command line or policy
	exitHost    = 3 // this host cannot run the gate; the message says why and the fix
)

var version = "dev"

const usage = `uffdgate: system-wide allowlist for kernel-fault userfaultfd contexts

Usage:
  uffdgate run [--policy FILE]    enforce a policy (embedded default without --policy)
  uffdgate policy check FILE      validate a policy file without touching the kernel
  uffdgate policy default         print the embedded default policy
  uffdgate version                print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "policy":
		return cmdPolicy(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "uffdgate", version)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "uffdgate: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uffdgate run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	policyPath := fs.String("policy", "", "policy file (YAML); the embedded default when empty")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "uffdgate run: unexpected argument %q (did you mean --policy %s?)\n", fs.Arg(0), fs.Arg(0))
		return exitUsage
	}
	pol := policy.Default()
	if *policyPath != "" {
		var err error
		if pol, err = policy.Load(*policyPath); err != nil {
			fmt.Fprintln(stderr, "uffdgate run: invalid policy:", err)
			return exitUsage
		}
	}
	log := slog.New(slog.NewJSONHandler(stdout, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := daemon.Run(ctx, daemon.Options{Policy: pol, Host: preflight.Default(), Log: log})
	if err == nil {
		return exitOK
	}
	var p *preflight.Problem
	if errors.As(err, &p) {
		log.Error("uffdgate cannot enforce on this host", slog.String("event", "refused"), slog.String("reason", p.What), slog.String("fix", p.Fix))
		fmt.Fprintf(stderr, "uffdgate: cannot enforce on this host: %s\n", p.Error())
		return exitHost
	}
	log.Error("uffdgate failed", slog.String("event", "error"), slog.String("error", err.Error()))
	fmt.Fprintln(stderr, "uffdgate:", err)
	return exitFailure
}

func cmdPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "uffdgate policy: missing subcommand: check FILE, or default\n")
		return exitUsage
	}
	switch args[0] {
	case "default":
		stdout.Write(policy.DefaultYAML())
		return exitOK
	case "check":
		if len(args) != 2 {
			fmt.Fprint(stderr, "usage: uffdgate policy check FILE\n")
			return exitUsage
		}
		p, err := policy.Load(args[1])
		if err != nil {
			fmt.Fprintln(stderr, err)
			return exitUsage
		}
		fmt.Fprintf(stdout, "%s: ok (mode %s, audit %v, %s)\n", args[1], p.Mode, p.Audit, p.Digest)
		return exitOK
	}
	fmt.Fprintf(stderr, "uffdgate policy: unknown subcommand %q: use check FILE, or default\n", args[0])
	return exitUsage
}

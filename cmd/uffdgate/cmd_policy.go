package main

import (
	"fmt"
	"io"

	"github.com/uffdgate/uffdgate/internal/policy"
)

func init() {
	commands["policy"] = command{"policy check FILE | default  validate a policy without touching the kernel; print the default", cmdPolicy}
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
		// Paths that do not exist here are warnings: they may on the hosts the
		// policy is for, and the daemon follows them as they appear.
		p.Check(policy.HostResolver{})
		for _, w := range p.Warnings {
			fmt.Fprintf(stderr, "%s: warning: %s (it matches nothing until it exists)\n", args[1], w)
		}
		fmt.Fprintf(stdout, "%s: ok (mode %s, audit %v, %d rules, %d warnings, %s)\n", args[1], p.Mode, p.Audit, len(p.Rules), len(p.Warnings), p.Digest)
		return exitOK
	}
	fmt.Fprintf(stderr, "uffdgate policy: unknown subcommand %q: use check FILE, or default\n", args[0])
	return exitUsage
}

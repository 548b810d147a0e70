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
		fmt.Fprintf(stdout, "%s: ok (mode %s, audit %v, %s)\n", args[1], p.Mode, p.Audit, p.Digest)
		return exitOK
	}
	fmt.Fprintf(stderr, "uffdgate policy: unknown subcommand %q: use check FILE, or default\n", args[0])
	return exitUsage
}

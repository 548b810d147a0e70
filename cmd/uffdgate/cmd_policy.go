package main

import (
	"fmt"
	"io"

	"github.com/uffdgate/uffdgate/internal/policy"
)

func init() {
	commands["policy"] = command{"policy check FILE... | policy default  validate policies without touching the kernel; print the embedded default", cmdPolicy}
}

func cmdPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "uffdgate policy: missing subcommand: check FILE..., or default\n")
		return exitUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, "usage: uffdgate policy check FILE...   validate policy files (errors as FILE:LINE:COLUMN, exit 2)\n       uffdgate policy default          print the embedded default policy\n")
		return exitOK
	case "default":
		stdout.Write(policy.DefaultYAML())
		return exitOK
	case "check":
		if len(args) < 2 {
			fmt.Fprint(stderr, "usage: uffdgate policy check FILE...\n")
			return exitUsage
		}
		code := exitOK
		for _, file := range args[1:] {
			p, err := policy.Load(file)
			if err != nil {
				fmt.Fprintln(stderr, err)
				code = exitUsage
				continue
			}
			// Paths that do not exist here are warnings: they may on the hosts the
			// policy is for, and the daemon follows them as they appear.
			p.Check(policy.HostResolver{})
			for _, w := range p.Warnings {
				fmt.Fprintf(stderr, "%s: warning: %s\n", file, w)
			}
			fmt.Fprintf(stdout, "%s: ok (mode %s, audit %v, %s, %s, %s)\n", file, p.Mode, p.Audit,
				plural(len(p.Rules), "rule"), plural(len(p.Warnings), "warning"), p.Digest)
		}
		return code
	}
	fmt.Fprintf(stderr, "uffdgate policy: unknown subcommand %q: use check FILE..., or default\n", args[0])
	return exitUsage
}

func plural(n int, what string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", what)
	}
	return fmt.Sprintf("%d %ss", n, what)
}

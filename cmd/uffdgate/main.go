// Command uffdgate gates userfaultfd: every process may create user-mode-only
// contexts; only allowlisted ones may create contexts that handle kernel faults.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Exit codes, documented in the README.
const (
	exitOK      = 0
	exitFailure = 1 // unexpected runtime error, or a finding/mismatch where a command reports one
	exitUsage   = 2 // bad command line or policy
	exitHost    = 3 // this host cannot do what was asked; the message says why and the fix
	// exitNotRunning: `status` found no running daemon (as LSB init scripts' status).
	exitNotRunning = 4
)

var version = "dev"

// command is one subcommand; each lives in its own cmd_*.go file and registers
// itself in init.
type command struct {
	usage string // one line: "NAME ARGS   what it does"
	run   func(args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{}

func usage() string {
	var b strings.Builder
	b.WriteString("uffdgate: system-wide allowlist for kernel-fault userfaultfd contexts\n\nUsage:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(&b, "  uffdgate %s\n", commands[n].usage)
	}
	b.WriteString("\nRun `uffdgate COMMAND -h` for a command's flags.\n")
	return b.String()
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return exitUsage
	}
	switch args[0] {
	case "version", "--version":
		fmt.Fprintln(stdout, "uffdgate", version)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage())
		return exitOK
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "uffdgate: unknown command %q\n\n%s", args[0], usage())
		return exitUsage
	}
	return c.run(args[1:], stdout, stderr)
}

// parseFailed is the exit status for a flag.Parse error: -h and --help asked
// for the usage, which the flag set printed; anything else is a usage error.
func parseFailed(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}

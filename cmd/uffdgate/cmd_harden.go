package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/uffdgate/uffdgate/internal/harden"
)

func init() {
	commands["harden"] = command{"harden [--dry-run] [--undo] [--root DIR]  set vm.unprivileged_userfaultfd=0 and keep /dev/userfaultfd to root, persistently", cmdHarden}
}

func cmdHarden(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uffdgate harden", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dryRun := fs.Bool("dry-run", false, "print every change and change nothing")
	undo := fs.Bool("undo", false, "remove the files harden wrote (only those carrying its marker line)")
	root := fs.String("root", "", "operate on the tree under DIR instead of / (no live settings are read or changed)")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "uffdgate harden: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	err := harden.Run(harden.Options{Root: *root, Live: *root == "", DryRun: *dryRun, Undo: *undo}, stdout)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "uffdgate harden:", err)
	var c *harden.Conflict
	if errors.As(err, &c) || errors.Is(err, harden.ErrNeedsRoot) {
		return exitHost
	}
	return exitFailure
}

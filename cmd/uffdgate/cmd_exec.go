package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/uffdgate/uffdgate/internal/seccompfilter"
)

func init() {
	commands["exec"] = command{"exec [--allow-kernel-faults] -- CMD ARGS...  run CMD under a seccomp filter refusing kernel-fault userfaultfd contexts (no BPF LSM needed)", cmdExec}
}

const execUsage = "usage: uffdgate exec [--allow-kernel-faults] -- CMD ARGS..."

func cmdExec(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uffdgate exec", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, execUsage)
		fmt.Fprintln(stderr, "Runs CMD (looked up in PATH) with a seccomp filter that CMD and every process it starts inherit and cannot remove:")
		fmt.Fprintln(stderr, "userfaultfd without UFFD_USER_MODE_ONLY and USERFAULTFD_IOC_NEW without it fail with EPERM.")
		fs.PrintDefaults()
	}
	allow := fs.Bool("allow-kernel-faults", false, "install no filter: run CMD as it is (for scripts that choose per command)")
	// The command must follow "--": without it, CMD's own options would be taken
	// for ours.
	dash := slices.Index(args, "--")
	flagArgs := args
	if dash >= 0 {
		flagArgs = args[:dash]
	}
	if err := fs.Parse(flagArgs); err != nil {
		return parseFailed(err)
	}
	switch {
	case dash < 0 && fs.NArg() > 0:
		fmt.Fprintf(stderr, "uffdgate exec: missing -- before the command: run uffdgate exec -- %s\n", strings.Join(fs.Args(), " "))
		return exitUsage
	case dash < 0 || dash == len(args)-1:
		fmt.Fprintf(stderr, "uffdgate exec: missing the command to run after --\n%s\n", execUsage)
		return exitUsage
	}
	argv := args[dash+1:]
	path, err := seccompfilter.LookPath(argv[0])
	if err != nil {
		return execFailure(err, stderr)
	}
	// Returns only on failure.
	return execFailure(seccompfilter.Exec(path, argv, os.Environ(), seccompfilter.Options{AllowKernelFaults: *allow}), stderr)
}

func execFailure(err error, stderr io.Writer) int {
	fmt.Fprintln(stderr, "uffdgate exec:", err)
	var ce *seccompfilter.CommandError
	if errors.As(err, &ce) {
		return ce.ExitCode
	}
	return exitHost // the filter could not be installed: nothing was run
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/uffdgate/uffdgate/internal/seccompprofile"
)

func init() {
	commands["seccomp-profile"] = command{"seccomp-profile [--merge FILE] [-o FILE]  write a Docker/containerd/CRI-O seccomp profile holding userfaultfd to user-mode-only", cmdSeccompProfile}
}

func cmdSeccompProfile(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uffdgate seccomp-profile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	merge := fs.String("merge", "", "profile to start from (Docker format); default: Docker's default profile")
	outPath := fs.String("o", "", "write the profile to this file instead of standard output")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "uffdgate seccomp-profile: unexpected argument %q (did you mean --merge %s?)\n", fs.Arg(0), fs.Arg(0))
		return exitUsage
	}
	base, baseName := seccompprofile.Default(), seccompprofile.DefaultName()
	if *merge != "" {
		data, err := os.ReadFile(*merge)
		if err != nil {
			fmt.Fprintf(stderr, "uffdgate seccomp-profile: cannot read the profile to merge into: %v\n", err)
			return exitUsage
		}
		if base, err = seccompprofile.Parse(*merge, data); err != nil {
			fmt.Fprintln(stderr, "uffdgate seccomp-profile: invalid profile:", err)
			return exitUsage
		}
		baseName = *merge
	}
	out, notes, err := seccompprofile.Generate(base, baseName)
	if err != nil {
		var pe *seccompprofile.Error
		if errors.As(err, &pe) {
			fmt.Fprintln(stderr, "uffdgate seccomp-profile: cannot merge:", err)
			return exitUsage
		}
		fmt.Fprintln(stderr, "uffdgate seccomp-profile:", err)
		return exitFailure
	}
	fmt.Fprintf(stderr, "uffdgate seccomp-profile: base: %s\n", baseName)
	for _, n := range notes {
		fmt.Fprintln(stderr, "uffdgate seccomp-profile:", n)
	}
	if *outPath == "" {
		if _, err := stdout.Write(out); err != nil {
			fmt.Fprintln(stderr, "uffdgate seccomp-profile:", err)
			return exitFailure
		}
		return exitOK
	}
	if err := seccompprofile.WriteFile(*outPath, out); err != nil {
		fmt.Fprintln(stderr, "uffdgate seccomp-profile: writing the profile:", err)
		return exitFailure
	}
	fmt.Fprintf(stderr, "uffdgate seccomp-profile: wrote %s; use it with docker run --security-opt seccomp=%s, or as a Localhost seccomp profile in Kubernetes\n", *outPath, *outPath)
	return exitOK
}

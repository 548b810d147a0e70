//go:build linux && amd64

// Command uffdprobe runs the probes named on its command line (see package
// uffdprobe) and prints their results as a JSON array. Tests run it under
// seccomp filters and profiles.
package main

import (
	"fmt"
	"os"

	"github.com/uffdgate/uffdgate/internal/uffdprobe"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: uffdprobe PROBE... (see package uffdprobe for the probe specs)")
		os.Exit(2)
	}
	if err := uffdprobe.RunAll(os.Stdout, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "uffdprobe:", err)
		os.Exit(1)
	}
}

package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/uffdgate/uffdgate/internal/state"
)

func init() {
	commands["status"] = command{"status [--json]                what the running daemon enforces, its counters and uptime", cmdStatus}
}

func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uffdgate status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the state as JSON (the fields of /run/uffdgate/state.json)")
	path := fs.String("state", state.DefaultPath, "the state file the daemon publishes")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "uffdgate status: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	s, err := state.Read(*path)
	if errors.Is(err, state.ErrNotRunning) {
		fmt.Fprintf(stderr, "uffdgate status: %v: start it with `sudo uffdgate run`\n", err)
		return exitNotRunning
	}
	if err != nil {
		fmt.Fprintln(stderr, "uffdgate status:", err)
		return exitFailure
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(s)
		return exitOK
	}
	state.WriteTable(stdout, s, time.Now())
	return exitOK
}

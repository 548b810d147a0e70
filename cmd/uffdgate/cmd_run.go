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
	"runtime/debug"
	"syscall"

	"github.com/uffdgate/uffdgate/internal/daemon"
	"github.com/uffdgate/uffdgate/internal/gate"
	"github.com/uffdgate/uffdgate/internal/metrics"
	"github.com/uffdgate/uffdgate/internal/policy"
	"github.com/uffdgate/uffdgate/internal/preflight"
	"github.com/uffdgate/uffdgate/internal/state"
)

func init() {
	commands["run"] = command{"run [--policy FILE]          enforce a policy (the embedded default without --policy)", cmdRun}
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uffdgate run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	policyPath := fs.String("policy", "", "policy file (YAML); the embedded default when empty")
	statePath := fs.String("state", state.DefaultPath, "where to publish the daemon's state for uffdgate status (empty: nowhere)")
	metricsAddr := fs.String("metrics-addr", metrics.DefaultAddr, "address to serve Prometheus /metrics on (empty: none)")
	backend := fs.String("backend", "auto", "auto (the LSM gate where it can run), lsm (only the gate), or audit (only report, at syscall exit)")
	acceptAudit := fs.Bool("accept-audit-only", false, "where the LSM gate cannot run, report with the audit backend instead of refusing to start")
	logBurst := fs.Int("log-burst", 0, "events logged per executable and decision before rate limiting (default: 20 a second in the kernel, 10 per 10 s in the log)")
	kill := fs.Bool("kill", false, "audit backend: SIGKILL processes whose requests the policy would refuse (after the fact; see README)")
	pinDir := fs.String("pin-dir", gate.DefaultPinDir, "bpffs directory keeping the exec records across restarts of uffdgate (empty: do not keep them)")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "uffdgate run: unexpected argument %q (did you mean --policy %s?)\n", fs.Arg(0), fs.Arg(0))
		return exitUsage
	}
	switch *backend {
	case "auto", "lsm", "audit":
	default:
		fmt.Fprintf(stderr, "uffdgate run: unknown --backend %q: use auto, lsm or audit\n", *backend)
		return exitUsage
	}
	if *logBurst < 0 {
		fmt.Fprintln(stderr, "uffdgate run: --log-burst must be 0 (the defaults) or more")
		return exitUsage
	}
	if *kill && *backend == "lsm" {
		fmt.Fprintln(stderr, "uffdgate run: --kill is for the audit backend; the LSM gate refuses the request itself")
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
	// A soft limit: the daemon's steady state is a few MiB, and under a flood of
	// events the garbage collector should work harder rather than grow the heap.
	debug.SetMemoryLimit(16 << 20)
	log := slog.New(slog.NewJSONHandler(stdout, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	err := daemon.Run(ctx, daemon.Options{Policy: pol, PolicyPath: *policyPath, Reload: hup,
		Host: preflight.Default(), Log: log, StatePath: *statePath, MetricsAddr: *metricsAddr, Version: version,
		Backend: *backend, AcceptAuditOnly: *acceptAudit, Kill: *kill, LogBurst: *logBurst, PinDir: *pinDir})
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

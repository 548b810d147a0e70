package hostinfo

import (
	"errors"
	"fmt"
	"strings"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/policy"
	"github.com/uffdgate/uffdgate/internal/state"
)

// KernelOnly is the gate model of a host where uffdgate is not running: a gate
// that lets everything through leaves decision.Expect with the kernel's checks.
var KernelOnly = decision.Gate{Mode: decision.ModeAllow}

// Gate is the policy other commands evaluate, and where it comes from.
type Gate struct {
	// Running: a uffdgate daemon is running and publishes its state.
	Running bool
	PID     int
	State   string // the daemon's "enforcing" or "auditing"
	// Backend is the running daemon's: "lsm", or "audit", which sees requests
	// only after the kernel made the context and so refuses nothing.
	Backend string
	// Policy is what the model evaluates: the daemon's, or one given on the
	// command line; nil when only the kernel decides.
	Policy *policy.Policy
	// Hypothetical: Policy was given on the command line, not taken from a
	// running daemon, so nothing enforces it.
	Hypothetical bool
	// NotRunning says why the daemon is not running (when it is not).
	NotRunning string
	// compiled is Policy with its paths resolved on this host; Unresolved lists
	// the paths that match nothing now (fail closed, as in the daemon).
	compiled   decision.Gate
	Unresolved []string
}

// Model is the decision model's gate: the compiled policy, or KernelOnly.
func (g Gate) Model() decision.Gate {
	if g.Policy == nil {
		return KernelOnly
	}
	return g.compiled
}

// Enforced reports whether a running daemon enforces Policy: only then can an
// outcome be blamed on uffdgate.
func (g Gate) Enforced() bool { return g.Running && !g.Hypothetical && g.Policy != nil }

// Describe is the gate in one line.
func (g Gate) Describe() string {
	switch {
	case g.Policy == nil:
		return "uffdgate is not running (" + g.NotRunning + "): it decides nothing, the kernel's checks alone apply"
	case g.Hypothetical && g.Running:
		return fmt.Sprintf("evaluating %s (mode %s, audit %v) instead of the running daemon's policy (pid %d)", g.Policy.Source, g.Policy.Mode, g.Policy.Audit, g.PID)
	case g.Hypothetical:
		return fmt.Sprintf("evaluating %s (mode %s, audit %v) as if uffdgate enforced it; it is not running (%s)", g.Policy.Source, g.Policy.Mode, g.Policy.Audit, g.NotRunning)
	}
	if g.Backend == "audit" {
		return fmt.Sprintf("uffdgate is running (pid %d) in the audit backend, which refuses nothing (this kernel cannot run the LSM gate): policy %s, mode %s", g.PID, g.Policy.Source, g.Policy.Mode)
	}
	return fmt.Sprintf("uffdgate is running (pid %d, %s): policy %s, mode %s, audit %v", g.PID, g.State, g.Policy.Source, g.Policy.Mode, g.Policy.Audit)
}

// ResolveGate loads policyFile, when not empty, to evaluate instead of the
// daemon's policy, then reads the running daemon's state at statePath. A policy
// file that does not load is returned as its *policy.Error, first. Other errors
// than "not running" come back with the Gate as far as it is known: a state file
// that cannot be read leaves the policy in force unknown, and guessing would
// misattribute refusals.
//
// Paths in the policy are resolved through h like the daemon resolves them; a
// daemon that saw an executable replaced keeps allowing the old file too, which
// this does not know.
func (h Host) ResolveGate(statePath, policyFile string) (Gate, error) {
	var g Gate
	if policyFile != "" {
		p, err := policy.Load(policyFile)
		if err != nil {
			return g, err
		}
		g.Policy, g.Hypothetical = p, true
		g.compiled, g.Unresolved = p.Compile(h.Resolver())
	}
	st, err := state.Read(statePath)
	switch {
	case errors.Is(err, state.ErrNotRunning):
		// Keep the detail: "no /run/uffdgate/state.json", or a stale pid.
		g.NotRunning = strings.Trim(strings.TrimPrefix(err.Error(), state.ErrNotRunning.Error()), " ()")
		return g, nil
	case err != nil:
		g.NotRunning = "unknown"
		return g, fmt.Errorf("cannot tell whether uffdgate runs or which policy it enforces: %w", err)
	}
	g.Running, g.PID, g.State, g.Backend = true, st.PID, st.State, st.Backend
	if g.Hypothetical {
		return g, nil
	}
	if st.PolicyYAML == "" {
		return g, fmt.Errorf("the running daemon (pid %d) publishes no policy text in %s", st.PID, statePath)
	}
	p, err := policy.Parse(st.PolicySource, []byte(st.PolicyYAML))
	if err != nil {
		return g, fmt.Errorf("the running daemon's policy (from %s) does not parse: %w", statePath, err)
	}
	g.Policy = p
	g.compiled, g.Unresolved = p.Compile(h.Resolver())
	if g.Backend == "audit" {
		// It reports what the policy would refuse, as audit mode does.
		g.compiled.Audit = true
	}
	return g, nil
}

// WithPolicy is a gate evaluating p as if a daemon enforced it, for tests and
// callers that have a policy in hand.
func (h Host) WithPolicy(p *policy.Policy, running bool) Gate {
	g := Gate{Policy: p, Running: running}
	g.compiled, g.Unresolved = p.Compile(h.Resolver())
	return g
}

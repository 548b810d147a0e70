//go:build linux

// Package daemon runs the gate: checks the host, loads and attaches the BPF side,
// proves it fires, then reports every decision worth reporting until stopped.
package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/events"
	"github.com/uffdgate/uffdgate/internal/gate"
	"github.com/uffdgate/uffdgate/internal/policy"
	"github.com/uffdgate/uffdgate/internal/preflight"
	"github.com/uffdgate/uffdgate/internal/state"
)

// Options configure Run.
type Options struct {
	Policy    *policy.Policy
	Host      preflight.Host
	Log       *slog.Logger
	StatePath string // where to publish state.State; "" for none
	Version   string
}

// stateInterval is how often the published counters are refreshed.
const stateInterval = 2 * time.Second

// Run enforces opts.Policy until ctx is done, then detaches. It returns an error
// (a *preflight.Problem where the host is the cause) when the gate cannot be
// brought up; nothing stays attached in that case.
func Run(ctx context.Context, opts Options) error {
	start := time.Now()
	pol, log := opts.Policy, opts.Log
	if err := opts.Host.CheckAll(); err != nil {
		return err
	}
	gt, err := gate.Load(pol.Gate())
	if err != nil {
		return asProblem(err)
	}
	defer gt.Close()
	if err := gt.Attach(); err != nil {
		return asProblem(err)
	}
	if err := gt.SelfTest(pol.Gate()); err != nil {
		return &preflight.Problem{What: err.Error(), Fix: "make sure `bpf` is in /sys/kernel/security/lsm and no other LSM program refuses first; report the kernel version if it is"}
	}

	gateState := "enforcing"
	if pol.Audit {
		gateState = "auditing"
	}
	log.Info("uffdgate "+gateState,
		slog.String("event", "started"),
		slog.String("state", gateState),
		slog.String("mode", pol.Mode.String()),
		slog.Bool("audit", pol.Audit),
		slog.Any("allow_capabilities", capNames(pol)),
		slog.String("policy_source", pol.Source),
		slog.String("policy_digest", pol.Digest),
		slog.Float64("startup_ms", float64(time.Since(start).Microseconds())/1000),
	)

	enr := &events.Enricher{AllowCaps: pol.AllowCaps}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			rec, err := gt.ReadEvent()
			if errors.Is(err, ringbuf.ErrClosed) {
				return
			}
			if err != nil {
				log.Error("reading an event", slog.String("event", "error"), slog.String("error", err.Error()))
				continue
			}
			events.Log(ctx, log, enr.Enrich(rec, time.Now()))
		}
	})

	publish := func() {
		if opts.StatePath == "" {
			return
		}
		st := state.State{
			PID: os.Getpid(), Version: opts.Version, Backend: "lsm", State: gateState, Started: start, Updated: time.Now(),
			Mode: pol.Mode.String(), Audit: pol.Audit, PolicySource: pol.Source, PolicyDigest: pol.Digest,
			PolicyYAML: string(pol.Text), AllowCapabilities: capNames(pol), Decisions: map[string]uint64{},
		}
		if c, err := gt.Counters(); err == nil {
			st.Decisions = summarize(c)
		}
		st.EventsLost, _ = gt.Lost()
		if err := state.Write(opts.StatePath, st); err != nil {
			log.Warn("cannot publish state", slog.String("event", "error"), slog.String("path", opts.StatePath), slog.String("error", err.Error()))
		}
	}
	publish()
	tick := time.NewTicker(stateInterval)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			publish()
		}
	}
	if opts.StatePath != "" {
		state.Remove(opts.StatePath)
	}
	counters, cerr := gt.Counters()
	lost, lerr := gt.Lost()
	err = gt.Close()
	wg.Wait()
	attrs := []any{slog.String("event", "stopped")}
	if cerr == nil && lerr == nil {
		attrs = append(attrs, slog.Any("decisions", summarize(counters)), slog.Uint64("events_lost", lost))
	}
	log.Info("uffdgate stopped: gate detached", attrs...)
	return err
}

func asProblem(err error) error {
	if errors.Is(err, gate.ErrKernelRefused) {
		return &preflight.Problem{What: err.Error(), Fix: "run uffdgate on a kernel that accepts BPF LSM programs (e.g. Debian's stock kernels with `bpf` in lsm=); on this host see `make demo` for a VM"}
	}
	return err
}

func capNames(p *policy.Policy) []string {
	if n := capability.Names(p.AllowCaps); n != nil {
		return n
	}
	return []string{}
}

// summarize keeps the non-zero counters, keyed "verdict/path".
func summarize(c gate.Counters) map[string]uint64 {
	out := map[string]uint64{}
	for v := range c {
		for p, n := range c[v] {
			if n > 0 {
				out[decision.Verdict(v).String()+"/"+decision.Path(p).String()] = n
			}
		}
	}
	return out
}

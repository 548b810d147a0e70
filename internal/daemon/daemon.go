//go:build linux

// Package daemon runs the gate: checks the host, loads and attaches the BPF side,
// proves it fires, then reports every decision worth reporting, reloads the
// policy on SIGHUP or when its file changes, and follows the files and cgroups
// the policy names, until stopped.
package daemon

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/events"
	"github.com/uffdgate/uffdgate/internal/gate"
	"github.com/uffdgate/uffdgate/internal/metrics"
	"github.com/uffdgate/uffdgate/internal/policy"
	"github.com/uffdgate/uffdgate/internal/preflight"
	"github.com/uffdgate/uffdgate/internal/state"
)

// Options configure Run.
type Options struct {
	Policy *policy.Policy
	// PolicyPath is reloaded on Reload and when its content changes; "" for the
	// embedded default, which never changes.
	PolicyPath string
	Reload     <-chan os.Signal
	Host       preflight.Host
	Log        *slog.Logger
	StatePath  string // where to publish state.State; "" for none
	// MetricsAddr is where /metrics is served; "" for nowhere.
	MetricsAddr string
	Version     string
	// Backend is "auto" (LSM where it can run, else audit if accepted), "lsm" or
	// "audit".
	Backend string
	// AcceptAuditOnly lets "auto" fall back to the audit backend when the policy
	// asks to enforce: reporting instead of refusing must be chosen, never implied.
	AcceptAuditOnly bool
	// Kill makes the audit backend SIGKILL processes whose requests the policy
	// would refuse.
	Kill bool
	// LogBurst is how many events per executable and decision are logged before
	// the rate limits apply (the kernel's per second, the log's per 10 s); 0 for
	// the defaults.
	LogBurst int
	// PinDir is where the exec records are pinned (gate.Options.PinDir).
	PinDir string
}

// tick is how often the daemon looks for a changed policy file, re-resolves the
// paths the policy names (a package upgrade renames a new binary over an allowed
// one; a VM's cgroup appears), and refreshes its published state.
const tick = time.Second

// summaryTicks is how often (in ticks) rate-limited log lines are summarized.
const summaryTicks = 10

type daemon struct {
	opts     Options
	log      *slog.Logger
	gt       *gate.Gate
	backend  gate.Backend
	lsmWhy   string // why the LSM backend is not running, when it is not
	resolver *rememberingResolver
	start    time.Time
	limiter  *events.Limiter
	exeNames *exeNames

	fileText []byte       // the policy file's content last read, valid or not
	noRecord map[int]bool // processes already reported without an exec record (by the one scan running)
	scanning atomic.Bool  // a warnNoExecRecord scan runs

	mu         sync.Mutex
	pol        *policy.Policy
	applied    decision.Gate
	unresolved []string
	gens       map[uint32]decision.Gate // recent generations, for explaining events
	reloadsOK  uint64
	reloadsBad uint64
	lastReload time.Time
}

// Run enforces opts.Policy until ctx is done, then detaches. It returns an error
// (a *preflight.Problem where the host is the cause) when the gate cannot be
// brought up; nothing stays attached in that case.
func Run(ctx context.Context, opts Options) error {
	limiter := events.NewLimiter()
	if opts.LogBurst > 0 {
		limiter.Burst = opts.LogBurst
	}
	d := &daemon{opts: opts, log: opts.Log, pol: opts.Policy, start: time.Now(), fileText: opts.Policy.Text, limiter: limiter, exeNames: newExeNames(),
		resolver: newRememberingResolver(policy.HostResolver{}), gens: map[uint32]decision.Gate{}}
	host := opts.Host
	if err := host.CheckCommon(); err != nil {
		return err
	}
	gt, g, unresolved, err := d.bringUp(&host)
	if err != nil {
		return err
	}
	defer gt.Close()
	d.gt = gt
	d.applied, d.unresolved = g, unresolved
	d.gens[gt.Generation()] = g
	if opts.MetricsAddr != "" {
		stop, err := metrics.Serve(ctx, opts.MetricsAddr, metrics.Registry(d, opts.Version))
		if err != nil {
			return fmt.Errorf("serving metrics on %s: %w (choose another address with --metrics-addr, or disable with --metrics-addr '')", opts.MetricsAddr, err)
		}
		defer stop()
	}
	started := []any{
		slog.String("event", "started"),
		slog.String("state", d.gateState()),
		slog.String("backend", d.backend.String()),
		slog.String("mode", d.pol.Mode.String()),
		slog.Bool("audit", d.pol.Audit),
		slog.Any("rules", ruleSummary(d.pol)),
		slog.String("policy_source", d.pol.Source),
		slog.String("policy_digest", d.pol.Digest),
		slog.Float64("startup_ms", float64(time.Since(d.start).Microseconds())/1000),
	}
	if d.backend == gate.Audit {
		started = append(started, slog.String("lsm_unavailable", d.lsmWhy), slog.Bool("kill", opts.Kill),
			slog.String("guarantee", "audit backend: requests are seen after the kernel created the context; nothing is refused"+
				map[bool]string{true: "; processes the policy would refuse are killed, after the fact", false: ""}[opts.Kill]))
	}
	if dir, note := gt.ExecRecordsPinned(); dir != "" {
		started = append(started, slog.String("exec_records", "pinned in "+dir))
	} else {
		started = append(started, slog.String("exec_records", cmp.Or(note, "not pinned")+": after a restart of uffdgate, running processes match no executable rule until they exec again"))
	}
	d.log.Info("uffdgate "+d.gateState(), started...)
	d.warnUnresolved(nil, unresolved)
	d.warnAdvice(d.pol)
	d.scanNoExecRecord(g)

	enr := &events.Enricher{Policy: d.generation}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			rec, err := gt.ReadEvent()
			if errors.Is(err, ringbuf.ErrClosed) {
				return
			}
			if err != nil {
				d.log.Error("reading an event", slog.String("event", "error"), slog.String("error", err.Error()))
				continue
			}
			// Limited before enrichment: under a flood, suppressed events cost a map lookup.
			now := time.Now()
			exe := cmp.Or(rec.ExePath, rec.Comm)
			d.exeNames.remember(decision.FileID{Dev: rec.ExeDev, Ino: rec.ExeIno}, exe)
			if !d.limiter.Allow(events.LimitKey{Exe: exe, EUID: rec.EUID, Verdict: rec.Verdict}, now, uint64(rec.KernelSuppressed)) {
				continue
			}
			events.Log(ctx, d.log, enr.Enrich(rec, now))
		}
	})

	d.publish()
	t := time.NewTicker(tick)
	defer t.Stop()
loop:
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			break loop
		case <-opts.Reload:
			d.reload("signal")
		case <-t.C:
			if d.policyFileChanged() {
				d.reload("file changed")
			}
			d.reresolve()
			if n%2 == 0 {
				d.publish()
			}
			if n%summaryTicks == summaryTicks-1 {
				d.summarizeSuppressed()
			}
		}
	}
	if opts.StatePath != "" {
		state.Remove(opts.StatePath)
	}
	counters, cerr := gt.Counters()
	lost, lerr := gt.Lost()
	held, _ := gt.PendingHeld()
	err = gt.Close()
	wg.Wait()
	for _, h := range held {
		d.limiter.Add(events.LimitKey{Exe: d.exeNames.name(h.Exe), EUID: h.EUID, Verdict: h.Verdict}, h.Count, time.Now())
	}
	d.summarizeSuppressed()
	attrs := []any{slog.String("event", "stopped")}
	if cerr == nil && lerr == nil {
		attrs = append(attrs, slog.Any("decisions", summarize(counters)), slog.Uint64("events_lost", lost),
			slog.Uint64("log_lines_suppressed", d.limiter.Suppressed()))
	}
	d.log.Info("uffdgate stopped: its BPF programs are detached", attrs...)
	return err
}

// summarizeSuppressed logs one line per key whose events the rate limit held back.
func (d *daemon) summarizeSuppressed() {
	for _, s := range d.limiter.Flush(time.Now()) {
		d.log.Warn("more userfaultfd decisions like the ones above were not logged (rate limit)",
			slog.String("event", "suppressed"), slog.String("exe", s.Key.Exe), slog.Uint64("euid", uint64(s.Key.EUID)),
			slog.String("decision", s.Key.Verdict.String()), slog.Uint64("suppressed", s.Suppressed),
			slog.String("note", "the exact counts are in uffdgate status and the metrics"))
	}
}

// Decisions, EventsLost, LogSuppressed, Reloads and Enforcing make the daemon a
// metrics.Source.
func (d *daemon) Decisions() ([decision.NumModes][decision.NumVerdicts][decision.NumPaths]uint64, error) {
	c, err := d.gt.Counters()
	return c, err
}
func (d *daemon) EventsLost() (uint64, error) { return d.gt.Lost() }
func (d *daemon) LogSuppressed() uint64       { return d.limiter.Suppressed() }
func (d *daemon) Reloads() (ok, failed uint64, last time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.reloadsOK, d.reloadsBad, d.lastReload
}
func (d *daemon) Enforcing() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return !d.pol.Audit && d.backend == gate.LSM
}

func (d *daemon) gateState() string {
	if d.pol.Audit || d.backend == gate.Audit {
		return "auditing"
	}
	return "enforcing"
}

// bringUp loads, attaches and self-tests the best backend allowed: LSM where the
// host runs it; otherwise, if chosen or accepted, the audit backend. Nothing is
// left attached when it fails.
func (d *daemon) bringUp(host *preflight.Host) (*gate.Gate, decision.Gate, []string, error) {
	var lsmErr error
	if d.opts.Backend != "audit" {
		gt, g, unresolved, err := d.tryBackend(host, gate.LSM)
		if err == nil {
			d.backend = gate.LSM
			return gt, g, unresolved, nil
		}
		lsmErr = err
		if d.opts.Backend == "lsm" {
			return nil, g, nil, err
		}
		var p *preflight.Problem
		if !errors.As(err, &p) {
			return nil, g, nil, err // not a property of the host: do not paper over it
		}
		d.lsmWhy = p.What
		if !d.pol.Audit && !d.opts.AcceptAuditOnly {
			return nil, g, nil, &preflight.Problem{
				What: p.What + "; only the audit backend can run here, which reports userfaultfd creations but cannot refuse them, and the policy asks to enforce",
				Fix:  p.Fix + "; or, to report without refusing, run `uffdgate run --accept-audit-only` (or set `audit: true` in the policy)",
			}
		}
	} else {
		d.lsmWhy = "the audit backend was chosen with --backend audit"
	}
	gt, g, unresolved, err := d.tryBackend(host, gate.Audit)
	if err != nil {
		if lsmErr != nil {
			return nil, g, nil, fmt.Errorf("%w\n(the LSM backend failed first: %v)", err, lsmErr)
		}
		return nil, g, nil, err
	}
	d.backend = gate.Audit
	return gt, g, unresolved, nil
}

// tryBackend loads backend b, compiles the policy (executables are identified
// by the kernel, through the loaded gate), writes it, attaches, and proves the
// hook fires.
func (d *daemon) tryBackend(host *preflight.Host, b gate.Backend) (*gate.Gate, decision.Gate, []string, error) {
	var g decision.Gate
	if b == gate.LSM {
		if err := host.CheckLSM(); err != nil {
			return nil, g, nil, err
		}
	}
	gt, err := gate.Load(gate.Options{Backend: b, Kill: d.opts.Kill, EventBurst: uint32(d.opts.LogBurst), PinDir: d.opts.PinDir})
	if err != nil {
		return nil, g, nil, asProblem(err)
	}
	d.resolver.setIdentify(gt.Identify)
	g, unresolved := d.pol.Compile(d.resolver)
	if err := gt.Apply(g); err != nil {
		gt.Close()
		return nil, g, nil, err
	}
	if err := gt.Attach(); err != nil {
		gt.Close()
		return nil, g, nil, asProblem(err)
	}
	if err := gt.SelfTest(); err != nil {
		gt.Close()
		return nil, g, nil, &preflight.Problem{What: err.Error(), Fix: "make sure `bpf` is in /sys/kernel/security/lsm and no other LSM program refuses first; report the kernel version if it is"}
	}
	return gt, g, unresolved, nil
}

func (d *daemon) generation(gen uint32) (decision.Gate, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	g, ok := d.gens[gen]
	return g, ok
}

// apply makes g the policy in force; the old one stays if it fails.
func (d *daemon) apply(g decision.Gate) error {
	if err := d.gt.Apply(g); err != nil {
		return err
	}
	defer d.scanNoExecRecord(g)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.applied = g
	gen := d.gt.Generation()
	d.gens[gen] = g
	for old := range d.gens {
		if old+8 < gen { // events are read within moments; eight is plenty
			delete(d.gens, old)
		}
	}
	return nil
}

func (d *daemon) policyFileChanged() bool {
	if d.opts.PolicyPath == "" {
		return false
	}
	b, err := os.ReadFile(d.opts.PolicyPath)
	return err == nil && !bytes.Equal(b, d.fileText)
}

// reload replaces the policy with the file's, atomically; a policy that fails
// validation or cannot be applied leaves the current one in force.
func (d *daemon) reload(why string) {
	if d.opts.PolicyPath == "" {
		d.log.Info("reload requested, but the embedded default policy is in use: nothing to reload",
			slog.String("event", "reload"))
		return
	}
	fail := func(err error) {
		d.mu.Lock()
		d.reloadsBad++
		d.lastReload = time.Now()
		d.mu.Unlock()
		d.log.Error("policy reload failed: the previous policy stays in force",
			slog.String("event", "reload_failed"), slog.String("trigger", why),
			slog.String("policy_source", d.opts.PolicyPath), slog.String("error", err.Error()),
			slog.String("policy_digest", d.pol.Digest))
	}
	// Remembered whatever happens, so that a broken file is reported once, not every tick.
	d.fileText, _ = os.ReadFile(d.opts.PolicyPath)
	p, err := policy.Parse(d.opts.PolicyPath, d.fileText)
	if err != nil {
		fail(err)
		return
	}
	g, unresolved := p.Compile(d.resolver)
	if err := d.apply(g); err != nil {
		fail(err)
		return
	}
	prev := d.unresolved
	d.mu.Lock()
	d.pol, d.unresolved = p, unresolved
	d.reloadsOK++
	d.lastReload = time.Now()
	d.mu.Unlock()
	d.log.Info("policy reloaded", slog.String("event", "reloaded"), slog.String("trigger", why),
		slog.String("mode", p.Mode.String()), slog.Bool("audit", p.Audit), slog.Any("rules", ruleSummary(p)),
		slog.String("policy_source", p.Source), slog.String("policy_digest", p.Digest),
		slog.Uint64("policy_generation", uint64(d.gt.Generation())))
	d.warnUnresolved(prev, unresolved)
	d.warnAdvice(p)
}

// reresolve applies the policy again when the files or cgroups it names now
// resolve to other identities.
func (d *daemon) reresolve() {
	g, unresolved := d.pol.Compile(d.resolver)
	if reflect.DeepEqual(g, d.applied) {
		return
	}
	if err := d.apply(g); err != nil {
		d.log.Error("cannot apply re-resolved paths: the previous resolution stays in force",
			slog.String("event", "error"), slog.String("error", err.Error()))
		return
	}
	d.log.Info("policy paths re-resolved", slog.String("event", "resolved"),
		slog.Uint64("policy_generation", uint64(d.gt.Generation())))
	prev := d.unresolved
	d.unresolved = unresolved
	d.warnUnresolved(prev, unresolved)
}

// scanNoExecRecord runs warnNoExecRecord in the background, one scan at a
// time: a /proc/PID/exe on a stuck file system (a user's FUSE mount) must not
// hold up the daemon's loop.
func (d *daemon) scanNoExecRecord(g decision.Gate) {
	if !d.scanning.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer d.scanning.Store(false)
		d.warnNoExecRecord(g)
	}()
}

// warnNoExecRecord names the running processes whose executable an executable
// rule names but that have no exec record: they started before the exec
// tracker ever ran, so the gate cannot tell what they exec'd, and no executable
// rule allows them until they are restarted. Each is named once.
func (d *daemon) warnNoExecRecord(g decision.Gate) {
	// By device and inode only: stat, used here, does not tell generations
	// (a warning, not a decision).
	rules := map[decision.FileID][]string{}
	for _, r := range g.Rules {
		for _, id := range r.Exes {
			id.Gen = 0
			rules[id] = append(rules[id], r.Name)
		}
	}
	if len(rules) == 0 || !d.gt.ExecTracking() {
		return
	}
	entries, _ := os.ReadDir("/proc")
	seen := map[int]bool{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		exe := fmt.Sprintf("/proc/%d/exe", pid)
		id, err := policy.FileIDOf(exe)
		if err != nil || rules[id] == nil {
			continue
		}
		if has, err := d.gt.HasExecRecord(pid); err != nil || has {
			continue
		}
		seen[pid] = true
		if d.noRecord[pid] {
			continue
		}
		path, _ := os.Readlink(exe)
		d.log.Warn("a running process that an executable rule names started before uffdgate's exec tracker: no executable rule allows it until it is restarted",
			slog.String("event", "no_exec_record"), slog.Int("pid", pid), slog.String("exe", path),
			slog.String("rules", strings.Join(rules[id], ",")),
			slog.String("remedy", "restart the process (uffdgate cannot tell what a process started before it exec'd; its records survive uffdgate's own restarts)"))
	}
	d.noRecord = seen
}

// warnAdvice logs the policy's valid but weak rules (policy.Advice).
func (d *daemon) warnAdvice(p *policy.Policy) {
	for _, a := range p.Advice() {
		d.log.Warn("a policy rule is weaker than it looks", slog.String("event", "advice"),
			slog.String("policy_source", p.Source), slog.String("detail", a))
	}
}

func (d *daemon) warnUnresolved(prev, now []string) {
	for _, u := range now {
		if !slices.Contains(prev, u) {
			d.log.Warn("a policy path does not resolve; it matches nothing until it does",
				slog.String("event", "unresolved"), slog.String("detail", u))
		}
	}
}

func (d *daemon) publish() {
	if d.opts.StatePath == "" {
		return
	}
	d.mu.Lock()
	pol := d.pol
	st := state.State{
		PID: os.Getpid(), Version: d.opts.Version, Backend: d.backend.String(), State: d.gateState(), Started: d.start, Updated: time.Now(),
		Mode: pol.Mode.String(), Audit: pol.Audit, PolicySource: pol.Source, PolicyDigest: pol.Digest,
		PolicyYAML: string(pol.Text), AllowCapabilities: allowCaps(pol), Decisions: map[string]uint64{},
		ReloadsOK: d.reloadsOK, ReloadsFailed: d.reloadsBad, LastReload: d.lastReload,
	}
	d.mu.Unlock()
	st.EventsLost, _ = d.gt.Lost()
	st.LogLinesSuppressed = d.limiter.Suppressed()
	st.MetricsAddr = d.opts.MetricsAddr
	st.ExecTracking = d.gt.ExecTracking()
	if c, err := d.gt.Counters(); err == nil {
		st.Decisions = summarize(c)
		st.DecisionsByMode = map[string]uint64{}
		for m := range c {
			for v := range c[m] {
				for p, n := range c[m][v] {
					if n > 0 {
						st.DecisionsByMode[decision.Mode(m).String()+"/"+decision.Verdict(v).String()+"/"+decision.Path(p).String()] = n
					}
				}
			}
		}
	}
	st.Rules = ruleSummary(pol)
	if err := state.Write(d.opts.StatePath, st); err != nil {
		d.log.Warn("cannot publish state", slog.String("event", "error"), slog.String("path", d.opts.StatePath), slog.String("error", err.Error()))
	}
}

func asProblem(err error) error {
	if errors.Is(err, gate.ErrKernelRefused) {
		return &preflight.Problem{What: err.Error(), Fix: "run uffdgate on a kernel that accepts BPF LSM programs (e.g. Debian's stock kernels with `bpf` in lsm=); `make demo` shows it in a VM"}
	}
	return err
}

func allowCaps(p *policy.Policy) []string {
	for _, r := range p.Rules {
		if r.Name == "allowlist.capabilities" {
			return capability.Names(r.Caps)
		}
	}
	return []string{}
}

// ruleSummary lists rule names with what they grant, for the log.
func ruleSummary(p *policy.Policy) []string {
	out := []string{}
	for _, r := range p.Rules {
		s := r.Name + ":" + r.Grant.String()
		if r.AuditOnly {
			s += "(audit-only)"
		}
		out = append(out, s)
	}
	return out
}

// summarize keeps the non-zero counters, keyed "verdict/path", summed over modes.
func summarize(c gate.Counters) map[string]uint64 {
	out := map[string]uint64{}
	for m := range c {
		for v := range c[m] {
			for p, n := range c[m][v] {
				if n > 0 {
					out[decision.Verdict(v).String()+"/"+decision.Path(p).String()] += n
				}
			}
		}
	}
	return out
}

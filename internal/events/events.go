// Package events turns the gate's kernel records into what an operator reads:
// one JSON line per event with who asked, how, what was decided, why, and what to
// change.
package events

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/uffdgate/uffdgate/internal/decision"
)

// Record is one decision as the kernel side saw it.
type Record struct {
	BootTime     time.Duration // CLOCK_BOOTTIME of the decision
	CgroupID     uint64
	CapEffective uint64
	ExeIno       uint64
	ExeDev       uint32 // kernel dev_t encoding (major<<20 | minor)
	PID, TGID    uint32
	PPID         uint32
	UID, EUID    uint32
	GID, EGID    uint32
	UsernsLevel  uint32
	Generation   uint32 // policy generation that decided
	// KernelSuppressed is how many events of the same executable and verdict the
	// kernel's rate limit held back since the previous one.
	KernelSuppressed uint32
	Backend          string // "lsm" or "audit"
	Matched          uint64 // rules that matched, as bits of that generation's rules
	Request          decision.Request
	Verdict          decision.Verdict
	Mode             decision.Mode
	Audit            bool
	Allowlisted      bool
	Comm             string
	ExePath          string // the executable's path as the kernel walked it; "" if none
	// ExeReplaced: the process's executable link (mm->exe_file, /proc/PID/exe) is
	// not the file it exec'd: it was changed with prctl(PR_SET_MM), as a process
	// posing as another program would. Executable rules judged the exec'd file.
	ExeReplaced bool
}

// Event is a Record with what user space adds to it.
type Event struct {
	Record
	Time       time.Time
	Executable string
	Cgroup     string
	// ContainerID is the container's id where the cgroup path shows one
	// (docker-ID.scope, cri-containerd-ID.scope, crio-ID.scope, libpod-ID.scope,
	// /docker/ID, kubepods .../ID): 64 hex digits; "" otherwise.
	ContainerID string
	User        string
	Rules       []string // names of the matching rules
	Reason      string
	Remedy      string
}

// Enricher resolves paths and names for records. It caches cgroup paths, which
// cost a walk of the cgroup tree to find.
type Enricher struct {
	ProcRoot   string // "/proc"
	CgroupRoot string // "/sys/fs/cgroup"
	// Policy returns the compiled policy of a generation, if still known.
	Policy func(gen uint32) (decision.Gate, bool)

	mu      sync.Mutex
	cgroups map[uint64]string
	users   map[uint32]string
}

// maxCache bounds the caches whatever the variety of events.
const maxCache = 4096

func (e *Enricher) Enrich(r Record, now time.Time) Event {
	ev := Event{Record: r, Time: now}
	ev.Executable = e.executable(r)
	ev.Cgroup = e.cgroup(r.CgroupID)
	ev.ContainerID = ContainerID(ev.Cgroup)
	ev.User = e.user(r.UID)
	g, ok := decision.Gate{Mode: r.Mode, Audit: r.Audit}, false
	if e.Policy != nil {
		g, ok = e.Policy(r.Generation)
	}
	if !ok {
		ev.Reason = fmt.Sprintf("decided by policy generation %d, which is no longer known", r.Generation)
		return ev
	}
	// The audit backend sees requests after the fact: it can only report.
	if r.Backend == "audit" {
		g.Audit = true
	}
	// The kernel matched the rules; the model explains its decision from them.
	res := decision.DecideMatched(g, r.Matched, r.Request)
	ev.Rules = g.RuleNames(r.Matched)
	ev.Reason, ev.Remedy = res.Reason, res.Remedy
	if r.Backend == "audit" && r.Verdict == decision.WouldDeny {
		ev.Reason += " (audit backend: the context was created; the LSM gate would have refused it)"
	}
	if res.Verdict != r.Verdict {
		// The kernel is authoritative; say so rather than explain something else.
		ev.Reason = fmt.Sprintf("kernel decided %s where the reference model says %s for the same rules (please report)", r.Verdict, res.Verdict)
	}
	if r.ExeReplaced {
		ev.Reason += "; its executable link was replaced after exec (prctl PR_SET_MM), so executable rules judged the file it executed, not " + cmp.Or(ev.Executable, "the link")
	}
	if r.Verdict != decision.Allow && r.Request.FlagsKnown && r.Request.Flags&decision.UserModeOnly == 0 && ev.Executable != "" {
		ev.Remedy += fmt.Sprintf("; the executable is %s; a rule allowing exactly it, as this user: %s", ev.Executable, suggestRule(ev.Executable, r.EUID))
	}
	return ev
}

// executable prefers /proc/PID/exe, which is exact, while it still names the file
// the kernel saw (the process may have exited and its pid been reused); otherwise
// the path the kernel recorded.
func (e *Enricher) executable(r Record) string {
	exe := filepath.Join(e.procRoot(), strconv.Itoa(int(r.TGID)), "exe")
	p, err := os.Readlink(exe)
	if err == nil {
		if st, ok := statBounded(exe, statWait); ok && st.Ino == r.ExeIno && decision.KernelDev(st.Dev) == r.ExeDev {
			return p
		}
	}
	return r.ExePath
}

// statWait is how long enrichment waits for a stat of an executable.
const statWait = 200 * time.Millisecond

// statSlots bounds the stats in flight: a stat can block for as long as the
// file system likes (a user's FUSE mount), and the event loop must not.
var statSlots = make(chan struct{}, 4)

var stat = syscall.Stat // tests replace it with one that blocks

// statBounded stats path unless that takes longer than wait or every slot is
// taken by stats that are still blocked; then ok is false.
func statBounded(path string, wait time.Duration) (st syscall.Stat_t, ok bool) {
	select {
	case statSlots <- struct{}{}:
	default:
		return st, false
	}
	type result struct {
		st  syscall.Stat_t
		err error
	}
	done, statFn := make(chan result, 1), stat
	go func() {
		defer func() { <-statSlots }()
		var r result
		r.err = statFn(path, &r.st)
		done <- r
	}()
	select {
	case r := <-done:
		return r.st, r.err == nil
	case <-time.After(wait):
		return st, false
	}
}

func (e *Enricher) procRoot() string {
	if e.ProcRoot == "" {
		return "/proc"
	}
	return e.ProcRoot
}

func (e *Enricher) cgroup(id uint64) string {
	if id == 0 {
		return ""
	}
	e.mu.Lock()
	p, ok := e.cgroups[id]
	e.mu.Unlock()
	if ok {
		return p
	}
	root := e.CgroupRoot
	if root == "" {
		root = "/sys/fs/cgroup"
	}
	p = fmt.Sprintf("cgroup id %d (not found under %s)", id, root)
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		var st syscall.Stat_t
		// On cgroup v2 a cgroup's id is its directory's inode number.
		if syscall.Stat(path, &st) == nil && st.Ino == id {
			p = "/"
			if rel, _ := filepath.Rel(root, path); rel != "." {
				p = "/" + filepath.ToSlash(rel)
			}
			return filepath.SkipAll
		}
		return nil
	})
	e.mu.Lock()
	if e.cgroups == nil || len(e.cgroups) >= maxCache {
		e.cgroups = map[uint64]string{}
	}
	e.cgroups[id] = p
	e.mu.Unlock()
	return p
}

func (e *Enricher) user(uid uint32) string {
	e.mu.Lock()
	n, ok := e.users[uid]
	e.mu.Unlock()
	if ok {
		return n
	}
	if u, err := user.LookupId(strconv.Itoa(int(uid))); err == nil {
		n = u.Username
	}
	e.mu.Lock()
	if e.users == nil || len(e.users) >= maxCache {
		e.users = map[uint32]string{}
	}
	e.users[uid] = n
	e.mu.Unlock()
	return n
}

// Message is the log message of an event.
func (ev Event) Message() string {
	switch ev.Verdict {
	case decision.Deny:
		return "userfaultfd request denied"
	case decision.WouldDeny:
		return "userfaultfd request would be denied (audit)"
	}
	if ev.Allowlisted {
		return "kernel-fault userfaultfd context allowed by rule"
	}
	return "kernel-fault userfaultfd context allowed (observed)"
}

// Log writes ev as one log record. Field names are part of uffdgate's interface:
// see the README before changing them.
func Log(ctx context.Context, l *slog.Logger, ev Event) {
	level := slog.LevelWarn
	if ev.Verdict == decision.Allow {
		level = slog.LevelInfo
	}
	flags := "unknown"
	if ev.Request.FlagsKnown {
		flags = fmt.Sprintf("0x%x", ev.Request.Flags)
	}
	l.LogAttrs(ctx, level, ev.Message(),
		slog.String("event", "decision"),
		slog.String("backend", ev.Backend),
		slog.String("decision", ev.Verdict.String()),
		slog.String("path", ev.Request.Path.String()),
		slog.String("flags", flags),
		slog.String("flags_decoded", flagsDecoded(ev.Request)),
		slog.Uint64("pid", uint64(ev.PID)),
		slog.Uint64("tgid", uint64(ev.TGID)),
		slog.Uint64("ppid", uint64(ev.PPID)),
		slog.Uint64("uid", uint64(ev.UID)),
		slog.Uint64("euid", uint64(ev.EUID)),
		slog.Uint64("egid", uint64(ev.EGID)),
		slog.String("user", ev.User),
		slog.String("comm", ev.Comm),
		slog.String("exe", ev.Executable),
		slog.Bool("exe_replaced", ev.ExeReplaced),
		slog.String("cgroup", ev.Cgroup),
		slog.String("container_id", ev.ContainerID),
		slog.String("mode", ev.Mode.String()),
		slog.Bool("audit", ev.Audit),
		slog.Bool("allowlisted", ev.Allowlisted),
		slog.String("rules", strings.Join(ev.Rules, ",")),
		slog.Uint64("policy_generation", uint64(ev.Generation)),
		slog.String("cap_effective", fmt.Sprintf("0x%x", ev.CapEffective)),
		slog.Bool("init_userns", ev.UsernsLevel == 0),
		slog.String("reason", ev.Reason),
		slog.String("remedy", ev.Remedy),
	)
}

// suggestRule is a policy rule, in YAML flow style, allowing exe run as euid.
func suggestRule(exe string, euid uint32) string {
	name := strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			return c
		}
		return '-'
	}, filepath.Base(exe))
	return fmt.Sprintf("`{name: %s, executables: [%s], uids: [%d]}` under rules:", cmp.Or(strings.Trim(name, "-"), "program"), strconv.Quote(exe), euid)
}

// containerIDRE is a container runtime's id: 64 hex digits, a whole word of a
// cgroup path component.
var containerIDRE = regexp.MustCompile(`(?:^|[-/])([0-9a-f]{64})(?:\.scope)?(?:/|$)`)

// ContainerID is the innermost container id a cgroup path shows, or "".
func ContainerID(cgroupPath string) string {
	m := containerIDRE.FindAllStringSubmatch(cgroupPath, -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1][1]
}

func flagsDecoded(r decision.Request) string {
	if !r.FlagsKnown {
		return "unknown (treated as kernel-fault)"
	}
	return decision.FlagNames(r.Flags)
}

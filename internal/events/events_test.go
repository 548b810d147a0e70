package events

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/policy"
)

// fakeProc makes root/PID/exe a symlink to a real file, as /proc shows it, and
// returns the file's path and identity in the kernel's encoding.
func fakeProc(t *testing.T, root string, pid int) (string, uint64, uint32) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "usr", "bin", "qemu-system-x86_64")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, strconv.Itoa(pid))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(bin, filepath.Join(dir, "exe")); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(bin, &st); err != nil {
		t.Fatal(err)
	}
	return bin, st.Ino, decision.KernelDev(st.Dev)
}

func TestEnrichExecutable(t *testing.T) {
	proc := t.TempDir()
	bin, ino, dev := fakeProc(t, proc, 1234)
	deletedBin, deletedIno, deletedDev := fakeProc(t, proc, 1300)
	if err := os.Remove(deletedBin); err != nil {
		t.Fatal(err)
	}
	e := &Enricher{ProcRoot: proc, CgroupRoot: t.TempDir()}
	const kernelPath = "/usr/bin/qemu-system-x86_64 (as the kernel walked it)"
	for _, c := range []struct {
		name string
		r    Record
		want string
	}{
		{"same file: /proc's path", Record{TGID: 1234, ExeIno: ino, ExeDev: dev, ExePath: kernelPath}, bin},
		{"the pid now runs another file (inode)", Record{TGID: 1234, ExeIno: ino + 1, ExeDev: dev, ExePath: kernelPath}, kernelPath},
		{"the pid now runs another file (device)", Record{TGID: 1234, ExeIno: ino, ExeDev: dev + 1, ExePath: kernelPath}, kernelPath},
		{"process gone", Record{TGID: 999, ExeIno: ino, ExeDev: dev, ExePath: kernelPath}, kernelPath},
		{"process gone, nothing recorded", Record{TGID: 999}, ""},
		{"executable deleted since", Record{TGID: 1300, ExeIno: deletedIno, ExeDev: deletedDev, ExePath: "…/bin/x"}, "…/bin/x"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := e.Enrich(c.r, time.Now()).Executable; got != c.want {
				t.Errorf("Executable = %q, want %q", got, c.want)
			}
		})
	}

	// The real /proc, by default: this process.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(self, &st); err != nil {
		t.Fatal(err)
	}
	r := Record{TGID: uint32(os.Getpid()), ExeIno: st.Ino, ExeDev: decision.KernelDev(st.Dev), ExePath: "/recorded"}
	if got := (&Enricher{CgroupRoot: t.TempDir()}).Enrich(r, time.Now()).Executable; got != self {
		t.Errorf("live /proc: Executable = %q, want %q", got, self)
	}
}

// cgroupTree makes a cgroup v2 hierarchy and returns the ids (inode numbers) of
// its directories by path relative to the root ("/" for the root).
func cgroupTree(t *testing.T, dirs ...string) (string, map[string]uint64) {
	t.Helper()
	root := t.TempDir()
	ids := map[string]uint64{}
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		ids[filepath.Clean("/"+rel)] = st.Ino
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Interface files are regular files and never a cgroup.
	if err := os.WriteFile(filepath.Join(root, "cgroup.procs"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return root, ids
}

func TestEnrichCgroup(t *testing.T) {
	root, ids := cgroupTree(t, "/system.slice/libvirtd.service", "/machine.slice/machine-qemu\\x2d1.scope/libvirt", "/user.slice/user-1000.slice")
	var fileIno uint64
	{
		var st syscall.Stat_t
		if err := syscall.Stat(filepath.Join(root, "cgroup.procs"), &st); err != nil {
			t.Fatal(err)
		}
		fileIno = st.Ino
	}
	e := &Enricher{ProcRoot: t.TempDir(), CgroupRoot: root}
	for _, c := range []struct {
		name string
		id   uint64
		want string
	}{
		{"root", ids["/"], "/"},
		{"service", ids["/system.slice/libvirtd.service"], "/system.slice/libvirtd.service"},
		{"nested, escaped name", ids["/machine.slice/machine-qemu\\x2d1.scope/libvirt"], "/machine.slice/machine-qemu\\x2d1.scope/libvirt"},
		{"intermediate", ids["/user.slice"], "/user.slice"},
		{"no cgroup id", 0, ""},
		{"unknown id", 1 << 60, fmt.Sprintf("cgroup id %d (not found under %s)", uint64(1<<60), root)},
		{"a file's inode is not a cgroup", fileIno, fmt.Sprintf("cgroup id %d (not found under %s)", fileIno, root)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := e.Enrich(Record{CgroupID: c.id}, time.Now()).Cgroup; got != c.want {
				t.Errorf("Cgroup = %q, want %q", got, c.want)
			}
		})
	}

	// Resolved paths are cached: the tree is not walked again for a known id.
	svc := ids["/system.slice/libvirtd.service"]
	if err := os.RemoveAll(filepath.Join(root, "system.slice")); err != nil {
		t.Fatal(err)
	}
	if got := e.Enrich(Record{CgroupID: svc}, time.Now()).Cgroup; got != "/system.slice/libvirtd.service" {
		t.Errorf("cached cgroup = %q", got)
	}
	if got := (&Enricher{CgroupRoot: root}).Enrich(Record{CgroupID: svc}, time.Now()).Cgroup; !strings.HasPrefix(got, "cgroup id ") {
		t.Errorf("a fresh enricher found the removed cgroup: %q", got)
	}
}

// Regression test (fixed): (events.go, Enricher.cgroup): the path is built with
// strings.TrimPrefix(rel, "."), meant for the root (rel "."), which also strips
// the dot of a cgroup whose name starts with one: ".hidden" is logged as
// "/hidden", a different (possibly existing) cgroup. Fix: `if rel == "." { p =
// "/" } else { p = "/" + filepath.ToSlash(rel) }`.
func TestEnrichCgroupDotName(t *testing.T) {
	root, ids := cgroupTree(t, "/.hidden", "/a/..b")
	e := &Enricher{ProcRoot: t.TempDir(), CgroupRoot: root}
	for _, d := range []string{"/.hidden", "/a/..b"} {
		if got := e.Enrich(Record{CgroupID: ids[d]}, time.Now()).Cgroup; got != d {
			t.Errorf("cgroup %s logged as %q", d, got)
		}
	}
}

func TestEnrichUser(t *testing.T) {
	e := &Enricher{ProcRoot: t.TempDir(), CgroupRoot: t.TempDir()}
	if got := e.Enrich(Record{UID: 0}, time.Now()).User; got != "root" {
		t.Errorf("uid 0: User = %q, want root", got)
	}
	if got := e.Enrich(Record{UID: 3999999999}, time.Now()).User; got != "" {
		t.Errorf("unknown uid: User = %q, want empty", got)
	}
	// EUID is not what names the user: the real uid is.
	if got := e.Enrich(Record{UID: 3999999999, EUID: 0}, time.Now()).User; got != "" {
		t.Errorf("uid 3999999999 euid 0: User = %q, want empty", got)
	}
}

var (
	ptrace = uint64(1) << capability.SysPtrace
	qemuID = decision.FileID{Dev: 8<<20 | 1, Ino: 77}
)

func testPolicy() decision.Gate {
	return decision.Gate{Mode: decision.ModeUserModeOnly, Rules: []decision.Rule{
		decision.CapabilityRule(ptrace),
		{Name: "qemu", HasExe: true, Exes: []decision.FileID{qemuID}},
		{Name: "qemu-trial", HasUID: true, UIDs: []uint32{107}, AuditOnly: true},
	}}
}

func TestEnrichExplains(t *testing.T) {
	proc := t.TempDir()
	bin, ino, dev := fakeProc(t, proc, 500)
	auditing := testPolicy()
	auditing.Audit = true
	policies := map[uint32]decision.Gate{3: testPolicy(), 4: {Mode: decision.ModeDeny}, 5: auditing}
	e := &Enricher{ProcRoot: proc, CgroupRoot: t.TempDir(), Policy: func(gen uint32) (decision.Gate, bool) {
		g, ok := policies[gen]
		return g, ok
	}}
	kf := decision.Request{Path: decision.PathIoctl64, Flags: decision.CloseOnExec, FlagsKnown: true}
	umo := decision.Request{Path: decision.PathIoctl64, Flags: decision.UserModeOnly, FlagsKnown: true}
	unknown := decision.Request{Path: decision.PathUnknown}
	base := Record{TGID: 500, ExeIno: ino, ExeDev: dev, Mode: decision.ModeUserModeOnly, Generation: 3}
	with := func(f func(*Record)) Record { r := base; f(&r); return r }

	for _, c := range []struct {
		name          string
		r             Record
		reason        string
		remedySuffix  string // "" when nothing is appended
		rules         []string
		remedyNonZero bool
	}{
		{
			name:          "denied kernel-fault request: the executable is named",
			r:             with(func(r *Record) { r.Request, r.Verdict = kf, decision.Deny }),
			reason:        decision.DecideMatched(testPolicy(), 0, kf).Reason,
			remedySuffix:  "; the executable is " + bin + "; a rule allowing exactly it, as this user: `{name: " + filepath.Base(bin) + ", executables: [\"" + bin + "\"], uids: [0]}` under rules:",
			remedyNonZero: true,
		},
		{
			name:          "denied, flags unknown: no executable hint",
			r:             with(func(r *Record) { r.Request, r.Verdict = unknown, decision.Deny }),
			reason:        decision.DecideMatched(testPolicy(), 0, unknown).Reason,
			remedyNonZero: true,
		},
		{
			name: "would-deny with a trial rule matched",
			r: with(func(r *Record) {
				r.Generation, r.Request, r.Verdict, r.Audit, r.Matched = 5, kf, decision.WouldDeny, true, 1<<2
			}),
			reason:        "kernel-fault userfaultfd context (no UFFD_USER_MODE_ONLY) requested by a process no rule allows; audit-only rule qemu-trial would allow it",
			remedySuffix:  "; the executable is " + bin + "; a rule allowing exactly it, as this user: `{name: " + filepath.Base(bin) + ", executables: [\"" + bin + "\"], uids: [0]}` under rules:",
			rules:         []string{"qemu-trial"},
			remedyNonZero: true,
		},
		{
			name:   "allowed by rule",
			r:      with(func(r *Record) { r.Request, r.Verdict, r.Allowlisted, r.Matched = kf, decision.Allow, true, 0b11 }),
			reason: "kernel-fault context allowed by rule allowlist.capabilities, qemu",
			rules:  []string{"allowlist.capabilities", "qemu"},
		},
		{
			name:   "kernel and model disagree: the kernel is authoritative",
			r:      with(func(r *Record) { r.Request, r.Verdict, r.Matched = umo, decision.Deny, 0 }),
			reason: "kernel decided deny where the reference model says allow for the same rules (please report)",
		},
		{
			name:          "mode deny generation, user-mode-only request",
			r:             with(func(r *Record) { r.Generation, r.Mode, r.Request, r.Verdict = 4, decision.ModeDeny, umo, decision.Deny }),
			reason:        "mode deny refuses userfaultfd contexts to processes no rule grants them to",
			remedyNonZero: true,
		},
		{
			name:   "generation no longer known",
			r:      with(func(r *Record) { r.Generation, r.Request, r.Verdict = 99, kf, decision.Deny }),
			reason: "decided by policy generation 99, which is no longer known",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			ev := e.Enrich(c.r, now)
			if ev.Reason != c.reason {
				t.Errorf("Reason = %q\nwant     %q", ev.Reason, c.reason)
			}
			if c.remedySuffix != "" && !strings.HasSuffix(ev.Remedy, c.remedySuffix) {
				t.Errorf("Remedy = %q, want it to end with %q", ev.Remedy, c.remedySuffix)
			}
			if c.remedySuffix == "" && strings.Contains(ev.Remedy, "the executable is") {
				t.Errorf("Remedy = %q names the executable", ev.Remedy)
			}
			if (ev.Remedy != "") != c.remedyNonZero {
				t.Errorf("Remedy = %q", ev.Remedy)
			}
			if !slices.Equal(ev.Rules, c.rules) {
				t.Errorf("Rules = %q, want %q", ev.Rules, c.rules)
			}
			if !ev.Time.Equal(now) || ev.Record != c.r || ev.Executable != bin {
				t.Errorf("Enrich lost the record or the time: %+v", ev)
			}
		})
	}
	if ev := (&Enricher{ProcRoot: proc}).Enrich(base, time.Now()); !strings.Contains(ev.Reason, "no longer known") {
		t.Errorf("Enricher without policies: Reason = %q", ev.Reason)
	}
}

// The documented field names of a decision line (README "Events"), and the
// slog fields every JSON line has.
var documentedFields = []string{"time", "level", "msg", "event", "decision", "path", "flags", "flags_decoded",
	"pid", "tgid", "ppid", "uid", "euid", "user", "comm", "exe", "exe_replaced", "cgroup", "container_id", "mode", "audit",
	"allowlisted", "cap_effective", "init_userns", "reason", "remedy"}

func logLine(t *testing.T, ev Event) map[string]any {
	t.Helper()
	var buf bytes.Buffer
	Log(context.Background(), slog.New(slog.NewJSONHandler(&buf, nil)), ev)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("Log wrote %d lines: %q", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, lines[0])
	}
	return m
}

func TestLogFields(t *testing.T) {
	ev := Event{
		Record: Record{
			CgroupID: 9, CapEffective: 0x80000, PID: 4243, TGID: 4242, PPID: 1, UID: 1000, EUID: 1001, GID: 100, EGID: 101,
			UsernsLevel: 0, Generation: 3, Matched: 1,
			Request: decision.Request{Path: decision.PathIoctl64, Flags: 0x80000, FlagsKnown: true},
			Verdict: decision.Deny, Mode: decision.ModeUserModeOnly, Audit: false, Allowlisted: false, Comm: "uffdtry",
		},
		Executable: "/usr/bin/uffdtry", Cgroup: "/user.slice", User: "tester", Rules: []string{"a", "b"},
		Reason: "why", Remedy: "what to change",
	}
	m := logLine(t, ev)
	for _, k := range documentedFields {
		if _, ok := m[k]; !ok {
			t.Errorf("field %q missing from %v", k, m)
		}
	}
	want := map[string]any{
		"level": "WARN", "msg": "userfaultfd request denied", "event": "decision", "decision": "deny", "path": "ioctl",
		"flags": "0x80000", "flags_decoded": "O_CLOEXEC", "pid": 4243.0, "tgid": 4242.0, "ppid": 1.0,
		"uid": 1000.0, "euid": 1001.0, "user": "tester", "comm": "uffdtry", "exe": "/usr/bin/uffdtry",
		"cgroup": "/user.slice", "mode": "user-mode-only", "audit": false, "allowlisted": false,
		"cap_effective": "0x80000", "init_userns": true, "reason": "why", "remedy": "what to change",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %#v (%T), want %#v (%T)", k, m[k], m[k], v, v)
		}
	}
	if ts, ok := m["time"].(string); !ok || ts == "" {
		t.Errorf("time = %#v", m["time"])
	}
}

func TestLogLevelsAndMessages(t *testing.T) {
	for _, c := range []struct {
		name          string
		verdict       decision.Verdict
		allowlisted   bool
		req           decision.Request
		userns        uint32
		level, msg    string
		flags, decode string
		initNS        bool
	}{
		{"deny", decision.Deny, false, decision.Request{Path: decision.PathSyscall64, Flags: 0, FlagsKnown: true}, 0,
			"WARN", "userfaultfd request denied", "0x0", "0", true},
		{"would-deny", decision.WouldDeny, false, decision.Request{Path: decision.PathSyscallIA32, Flags: 0x80800, FlagsKnown: true}, 0,
			"WARN", "userfaultfd request would be denied (audit)", "0x80800", "O_NONBLOCK|O_CLOEXEC", true},
		{"observed", decision.Allow, false, decision.Request{Path: decision.PathIoctlIA32, Flags: 0x80000, FlagsKnown: true}, 1,
			"INFO", "kernel-fault userfaultfd context allowed (observed)", "0x80000", "O_CLOEXEC", false},
		{"allowed by rule", decision.Allow, true, decision.Request{Path: decision.PathIoctl64, Flags: 0, FlagsKnown: true}, 0,
			"INFO", "kernel-fault userfaultfd context allowed by rule", "0x0", "0", true},
		{"flags unknown", decision.Deny, false, decision.Request{Path: decision.PathUnknown, Flags: 0x1234, FlagsKnown: false}, 3,
			"WARN", "userfaultfd request denied", "unknown", "unknown (treated as kernel-fault)", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev := Event{Record: Record{Verdict: c.verdict, Allowlisted: c.allowlisted, Request: c.req, UsernsLevel: c.userns}}
			if got := ev.Message(); got != c.msg {
				t.Errorf("Message() = %q, want %q", got, c.msg)
			}
			m := logLine(t, ev)
			for k, v := range map[string]any{"level": c.level, "msg": c.msg, "decision": c.verdict.String(), "path": c.req.Path.String(),
				"flags": c.flags, "flags_decoded": c.decode, "init_userns": c.initNS, "allowlisted": c.allowlisted} {
				if m[k] != v {
					t.Errorf("%s = %#v, want %#v", k, m[k], v)
				}
			}
		})
	}
}

// An enriched record logs what the enricher found.
func TestEnrichThenLog(t *testing.T) {
	proc := t.TempDir()
	bin, ino, dev := fakeProc(t, proc, 77)
	root, ids := cgroupTree(t, "/machine.slice/vm1")
	e := &Enricher{ProcRoot: proc, CgroupRoot: root, Policy: func(uint32) (decision.Gate, bool) { return testPolicy(), true }}
	r := Record{TGID: 77, PID: 78, UID: 0, ExeIno: ino, ExeDev: dev, CgroupID: ids["/machine.slice/vm1"], Comm: "qemu",
		Request: decision.Request{Path: decision.PathIoctl64, Flags: 0, FlagsKnown: true}, Verdict: decision.Deny, Mode: decision.ModeUserModeOnly}
	m := logLine(t, e.Enrich(r, time.Now()))
	for k, v := range map[string]any{"exe": bin, "cgroup": "/machine.slice/vm1", "user": "root", "pid": 78.0, "tgid": 77.0, "comm": "qemu"} {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
	if rem, _ := m["remedy"].(string); !strings.HasPrefix(rem, "pass UFFD_USER_MODE_ONLY") || !strings.Contains(rem, "; the executable is "+bin+"; a rule allowing exactly it") {
		t.Errorf("remedy = %q", rem)
	}
}

// TestStatBounded: a stat that blocks (a file on a user's FUSE mount whose
// server does not answer) must not hold up enrichment, and the stats left
// blocked are bounded in number.
func TestStatBounded(t *testing.T) {
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := statBounded(bin, time.Second); !ok {
		t.Fatalf("stat of %s failed", bin)
	}
	release := make(chan struct{})
	stat = func(string, *syscall.Stat_t) error { <-release; return nil }
	defer func() { stat = syscall.Stat }()
	for i := range cap(statSlots) {
		start := time.Now()
		if _, ok := statBounded(bin, 50*time.Millisecond); ok {
			t.Fatalf("blocked stat %d: ok", i)
		}
		if d := time.Since(start); d < 50*time.Millisecond || d > time.Second {
			t.Errorf("blocked stat %d returned after %v, want about 50ms", i, d)
		}
	}
	start := time.Now()
	if _, ok := statBounded(bin, time.Second); ok || time.Since(start) > 100*time.Millisecond {
		t.Errorf("with every slot held by a blocked stat: ok %v after %v, want refused at once", ok, time.Since(start))
	}
	close(release)
	stat = syscall.Stat
	for deadline := time.Now().Add(5 * time.Second); len(statSlots) > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok := statBounded(bin, time.Second); !ok {
		t.Errorf("slots not freed once the blocked stats returned")
	}
}

func TestContainerID(t *testing.T) {
	id := strings.Repeat("0123456789abcdef", 4)
	other := strings.Repeat("fedcba9876543210", 4)
	for _, c := range []struct{ path, want string }{
		{"/system.slice/docker-" + id + ".scope", id},
		{"/docker/" + id, id},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-" + id + ".scope", id},
		{"/kubepods/besteffort/pod5678/" + id, id},
		{"/machine.slice/libpod-" + id + ".scope/container", id},
		{"/system.slice/crio-" + id + ".scope", id},
		{"/docker/" + other + "/docker/" + id, id}, // nested: the innermost
		{"/user.slice/user-1000.slice/session-2.scope", ""},
		{"/machine.slice/machine-qemu-1-vm.scope", ""},
		{"/x/" + id + "0", ""},               // 65 digits: not an id
		{"/x/" + strings.ToUpper(id), ""},    // runtimes write lower case
		{"/x/not-" + id[:63] + ".scope", ""}, // 63 digits
		{"", ""},
	} {
		if got := ContainerID(c.path); got != c.want {
			t.Errorf("ContainerID(%q) = %q, want %q", c.path, got, c.want)
		}
	}
}

// TestSuggestedRuleParses: the rule a remedy suggests is a valid policy rule.
func TestSuggestedRuleParses(t *testing.T) {
	for _, exe := range []string{"/usr/bin/qemu-system-x86_64", "/opt/my vmm/fc.v1", "/opt/a,b]: c#d", "/"} {
		s := suggestRule(exe, 107)
		rule := strings.TrimSuffix(strings.TrimPrefix(s, "`"), "` under rules:")
		text := "rules:\n  - " + rule + "\n"
		p, err := policy.Parse("suggested.yaml", []byte(text))
		if err != nil {
			t.Errorf("suggested rule for %q does not parse: %v\n%s", exe, err, text)
			continue
		}
		if r := p.Rules[len(p.Rules)-1]; len(r.Executables) != 1 || r.Executables[0] != exe || len(r.UIDs) != 1 || r.UIDs[0] != 107 {
			t.Errorf("suggested rule for %q parses as %+v", exe, r)
		}
	}
}

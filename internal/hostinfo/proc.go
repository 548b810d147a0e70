package hostinfo

import (
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

// UffdLink is what /proc/PID/fd/N points to for a userfaultfd context.
const UffdLink = "anon_inode:[userfaultfd]"

// Status is the part of /proc/PID/status uffdgate needs.
type Status struct {
	Name    string
	State   string // first letter of the State field: R, S, D, Z, ...
	Kthread bool
	// UID and GID: real, effective, saved set, filesystem.
	UID, GID [4]int
	Groups   []int
	NSpid    []int
	CapPrm   uint64
	CapEff   uint64
	// NoNewPrivs is the no_new_privs bit.
	NoNewPrivs bool
	// Seccomp is 0 (none), 1 (strict) or 2 (filter); -1 when the kernel has no
	// seccomp (no such line).
	Seccomp int
	// SeccompFilters is the number of attached filters; -1 when not reported.
	SeccompFilters int
	// HasMM is false for kernel threads and zombies (no Vm* lines).
	HasMM bool
}

// ParseStatus parses /proc/PID/status; name is used in errors.
func ParseStatus(name string, b []byte) (Status, error) {
	s := Status{Seccomp: -1, SeccompFilters: -1}
	seen := map[string]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		bad := func(what string, err error) error {
			return fmt.Errorf("%s:%d: %s: %s %q: %v", name, i+1, key, what, val, err)
		}
		var err error
		switch key {
		case "Name":
			s.Name = val
		case "State":
			s.State, _, _ = strings.Cut(val, " ")
		case "Kthread":
			s.Kthread = val == "1"
		case "Uid", "Gid":
			var ids []int
			if ids, err = ints(val); err == nil && len(ids) != 4 {
				err = fmt.Errorf("want 4 ids (real, effective, saved, filesystem), got %d", len(ids))
			}
			if err != nil {
				return s, bad("bad id list", err)
			}
			if key == "Uid" {
				copy(s.UID[:], ids)
			} else {
				copy(s.GID[:], ids)
			}
		case "Groups":
			if s.Groups, err = ints(val); err != nil {
				return s, bad("bad group list", err)
			}
		case "NSpid":
			if s.NSpid, err = ints(val); err != nil {
				return s, bad("bad pid list", err)
			}
		case "CapPrm", "CapEff":
			v, err := strconv.ParseUint(val, 16, 64)
			if err != nil {
				return s, bad("bad capability mask", err)
			}
			if key == "CapPrm" {
				s.CapPrm = v
			} else {
				s.CapEff = v
			}
		case "NoNewPrivs":
			s.NoNewPrivs = val == "1"
		case "Seccomp":
			if s.Seccomp, err = strconv.Atoi(val); err != nil || s.Seccomp < 0 || s.Seccomp > 2 {
				return s, bad("bad seccomp mode (want 0, 1 or 2)", err)
			}
		case "Seccomp_filters":
			if s.SeccompFilters, err = strconv.Atoi(val); err != nil || s.SeccompFilters < 0 {
				return s, bad("bad filter count", err)
			}
		case "VmSize":
			s.HasMM = true
		default:
			continue
		}
		seen[key] = true
	}
	for _, k := range []string{"Name", "Uid", "Gid", "CapEff"} {
		if !seen[k] {
			return s, fmt.Errorf("%s: no %s line: not a /proc/PID/status file", name, k)
		}
	}
	return s, nil
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Fields(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

// IDRange is one line of a uid_map or gid_map: inside ids [Inside, Inside+Count)
// are outside ids [Outside, Outside+Count).
type IDRange struct{ Inside, Outside, Count uint64 }

// IDMap is a user namespace's uid_map or gid_map.
type IDMap []IDRange

// ParseIDMap parses /proc/PID/uid_map or gid_map.
func ParseIDMap(name string, b []byte) (IDMap, error) {
	var m IDMap
	for i, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		if len(f) != 3 {
			return nil, fmt.Errorf("%s:%d: want 3 numbers (inside outside count), got %q", name, i+1, l)
		}
		var r [3]uint64
		for j := range f {
			v, err := strconv.ParseUint(f[j], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %q: %v", name, i+1, f[j], err)
			}
			r[j] = v
		}
		m = append(m, IDRange{r[0], r[1], r[2]})
	}
	return m, nil
}

// MapsOutside reports whether the host id is mapped into the namespace.
func (m IDMap) MapsOutside(id uint64) bool {
	for _, r := range m {
		if id >= r.Outside && id-r.Outside < r.Count {
			return true
		}
	}
	return false
}

// IsIdentity reports whether the map is the initial namespace's: all 2^32-1 ids
// mapped to themselves.
func (m IDMap) IsIdentity() bool {
	return len(m) == 1 && m[0].Inside == 0 && m[0].Outside == 0 && m[0].Count == 4294967295
}

// Process is one process as uffdgate sees it.
type Process struct {
	PID    int
	Status Status
	// Exe is the target of /proc/PID/exe; "" when it cannot be read (ExeErr).
	Exe    string
	ExeErr error
	// Cgroup is the unified (v2) cgroup path (CgroupV2), or the first v1 line's
	// when there is no unified hierarchy.
	Cgroup   string
	CgroupV2 bool
	// UserNS is the /proc/PID/ns/user link, e.g. "user:[4026531837]".
	UserNS string
	// InitUserNS is true when the process's credentials belong to the initial
	// user namespace; UserNSKnown is false when that could not be established
	// (then InitUserNS is false: capabilities are not credited, the kernel's
	// conservative reading).
	InitUserNS  bool
	UserNSKnown bool
	UIDMap      IDMap
	GIDMap      IDMap
	// UffdFDs are its fds that are userfaultfd contexts; FDsErr is set when its
	// fd table could not be read.
	UffdFDs []int
	FDsErr  error
	// Threads that do not share the leader's credentials (uid or effective
	// capabilities), which /proc/PID/status does not show.
	DivergentThreads []int
}

// IsUserProcess is false for kernel threads and zombies, which create nothing.
func (p Process) IsUserProcess() bool {
	return !p.Status.Kthread && p.Status.HasMM && p.Status.State != "Z"
}

// Cred is the process's filesystem credentials, for permission checks.
func (p Process) Cred() Cred {
	return Cred{
		UID: uint32(p.Status.UID[3]), GID: uint32(p.Status.GID[3]), Groups: toU32(p.Status.Groups),
		CapEff: p.Status.CapEff, InitUserNS: p.InitUserNS, UIDMap: p.UIDMap, GIDMap: p.GIDMap,
	}
}

func toU32(v []int) []uint32 {
	out := make([]uint32, len(v))
	for i, x := range v {
		out[i] = uint32(x)
	}
	return out
}

// PIDs lists the processes (thread-group leaders) in /proc, ascending.
func (h Host) PIDs() ([]int, error) {
	ents, err := fs.ReadDir(h.FS, "proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	return pids, nil
}

// InitUserNS returns the initial user namespace's link: pid 1's, or, when pid 1
// is out of reach (an LSM refusing access to it), this process's own if its
// uid_map is the initial namespace's identity map. Run inside a container, that
// is the container's namespace: nothing there can see further.
func (h Host) InitUserNS() (string, error) {
	l, err := fs.ReadLink(h.FS, "proc/1/ns/user")
	if err == nil {
		return l, nil
	}
	if b, merr := fs.ReadFile(h.FS, "proc/self/uid_map"); merr == nil {
		if m, perr := ParseIDMap("/proc/self/uid_map", b); perr == nil && m.IsIdentity() {
			if self, serr := fs.ReadLink(h.FS, "proc/self/ns/user"); serr == nil {
				return self, nil
			}
		}
	}
	return "", fmt.Errorf("cannot identify the initial user namespace: %w", err)
}

// Process reads one process. initNS is the initial user namespace's link ("" if
// unknown: the identity uid_map decides then). A process that exits meanwhile
// gives an error satisfying errors.Is(err, fs.ErrNotExist).
func (h Host) Process(pid int, initNS string) (Process, error) {
	dir := "proc/" + strconv.Itoa(pid)
	p := Process{PID: pid}
	b, err := fs.ReadFile(h.FS, dir+"/status")
	if err != nil {
		if isNotExist(err) {
			return p, fmt.Errorf("no process %d: %w", pid, fs.ErrNotExist)
		}
		return p, err
	}
	if p.Status, err = ParseStatus("/"+dir+"/status", b); err != nil {
		return p, err
	}
	if p.Exe, p.ExeErr = fs.ReadLink(h.FS, dir+"/exe"); p.ExeErr != nil {
		p.Exe = ""
	}
	if b, err := fs.ReadFile(h.FS, dir+"/cgroup"); err == nil {
		p.Cgroup, p.CgroupV2 = parseCgroup(string(b))
	}
	if b, err := fs.ReadFile(h.FS, dir+"/uid_map"); err == nil {
		p.UIDMap, _ = ParseIDMap("/"+dir+"/uid_map", b)
	}
	if b, err := fs.ReadFile(h.FS, dir+"/gid_map"); err == nil {
		p.GIDMap, _ = ParseIDMap("/"+dir+"/gid_map", b)
	}
	if l, err := fs.ReadLink(h.FS, dir+"/ns/user"); err == nil {
		p.UserNS = l
		if initNS != "" {
			p.InitUserNS, p.UserNSKnown = l == initNS, true
		}
	}
	if !p.UserNSKnown && p.UIDMap != nil {
		// pid 1's link was unreadable: fall back to the initial namespace's mark,
		// the identity uid_map (a heuristic: root could give a child namespace one).
		p.InitUserNS, p.UserNSKnown = p.UIDMap.IsIdentity(), true
	}
	p.UffdFDs, p.FDsErr = h.uffdFDs(dir)
	p.DivergentThreads = h.divergentThreads(dir, p.Status)
	return p, nil
}

func (h Host) uffdFDs(dir string) ([]int, error) {
	ents, err := fs.ReadDir(h.FS, dir+"/fd")
	if err != nil {
		return nil, err
	}
	var fds []int
	for _, e := range ents {
		l, err := fs.ReadLink(h.FS, dir+"/fd/"+e.Name())
		if err != nil || l != UffdLink {
			continue // closed meanwhile, or not a context
		}
		if n, err := strconv.Atoi(e.Name()); err == nil {
			fds = append(fds, n)
		}
	}
	sort.Ints(fds)
	return fds, nil
}

func (h Host) divergentThreads(dir string, leader Status) []int {
	ents, err := fs.ReadDir(h.FS, dir+"/task")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		b, err := fs.ReadFile(h.FS, dir+"/task/"+e.Name()+"/status")
		if err != nil {
			continue
		}
		t, err := ParseStatus(e.Name(), b)
		if err != nil {
			continue
		}
		if t.UID != leader.UID || t.CapEff != leader.CapEff {
			if tid, err := strconv.Atoi(e.Name()); err == nil {
				out = append(out, tid)
			}
		}
	}
	sort.Ints(out)
	return out
}

// parseCgroup picks the unified hierarchy's path ("0::/path"), else the first
// line ("4:memory:/path" -> "memory:/path").
func parseCgroup(s string) (string, bool) {
	first := ""
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		id, rest, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		if id == "0" && strings.HasPrefix(rest, ":") {
			return rest[1:], true
		}
		if first == "" {
			first = rest
		}
	}
	return first, false
}

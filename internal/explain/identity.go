package explain

import (
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/hostinfo"
)

// Identity is who asks: a real process, or a hypothetical one described on the
// command line.
type Identity struct {
	PID          int    `json:"pid,omitempty"`
	Hypothetical bool   `json:"hypothetical"`
	Comm         string `json:"comm,omitempty"`
	Exe          string `json:"exe,omitempty"`
	// UID and GID are effective ids (the gate's), FSUID and FSGID the ones the
	// device node's permission check uses.
	UID    uint32   `json:"uid"`
	FSUID  uint32   `json:"fsuid"`
	GID    uint32   `json:"gid"`
	FSGID  uint32   `json:"fsgid"`
	Groups []uint32 `json:"groups"`
	CapEff string   `json:"cap_eff"` // hex, as in /proc/PID/status
	// SysPtrace: CAP_SYS_PTRACE effective, and InitUserNS: in the initial user
	// namespace (only there does it count).
	SysPtrace  bool   `json:"cap_sys_ptrace"`
	InitUserNS bool   `json:"init_user_ns"`
	UserNS     string `json:"user_ns,omitempty"`
	NSpid      []int  `json:"nspid,omitempty"`
	Cgroup     string `json:"cgroup,omitempty"`
	// Seccomp: "none", "strict", "filter", or "unknown" (hypothetical identity,
	// or a kernel without seccomp).
	Seccomp        string   `json:"seccomp"`
	SeccompFilters int      `json:"seccomp_filters"`
	NoNewPrivs     bool     `json:"no_new_privs"`
	Notes          []string `json:"notes,omitempty"`

	subject decision.Subject
	cred    hostinfo.Cred
	// node is /dev/userfaultfd as this process sees it.
	node    hostinfo.Node
	nodeErr error
}

// FromPID reads a process's identity from /proc.
func FromPID(h hostinfo.Host, pid int) (Identity, error) {
	initNS, nsErr := h.InitUserNS()
	p, err := h.Process(pid, initNS)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Identity{}, fmt.Errorf("no process %d (no /proc/%d)", pid, pid)
		}
		return Identity{}, err
	}
	if p.Status.Kthread {
		return Identity{}, fmt.Errorf("pid %d (%s) is a kernel thread: it creates no userfaultfd contexts", pid, p.Status.Name)
	}
	st := p.Status
	id := Identity{
		PID: pid, Comm: st.Name, Exe: p.Exe,
		UID: uint32(st.UID[1]), FSUID: uint32(st.UID[3]), GID: uint32(st.GID[1]), FSGID: uint32(st.GID[3]),
		Groups: u32s(st.Groups), CapEff: fmt.Sprintf("%016x", st.CapEff),
		InitUserNS: p.InitUserNS, UserNS: p.UserNS, NSpid: st.NSpid, Cgroup: p.Cgroup,
		SeccompFilters: st.SeccompFilters, NoNewPrivs: st.NoNewPrivs,
	}
	id.SysPtrace = st.CapEff&(1<<capability.SysPtrace) != 0
	id.Seccomp = map[int]string{-1: "unknown", 0: "none", 1: "strict", 2: "filter"}[st.Seccomp]
	if nsErr != nil {
		id.Notes = append(id.Notes, nsErr.Error()+": judged by its uid_map instead")
	}
	if !p.UserNSKnown {
		id.Notes = append(id.Notes, "its user namespace could not be read: its capabilities are not credited (the conservative reading)")
	}
	if p.Exe == "" && p.ExeErr != nil {
		id.Notes = append(id.Notes, "its executable could not be read: "+p.ExeErr.Error())
	}
	if len(st.NSpid) > 1 {
		id.Notes = append(id.Notes, fmt.Sprintf("it runs in a child PID namespace (pid %d there): likely a container", st.NSpid[len(st.NSpid)-1]))
	}
	if len(p.DivergentThreads) > 0 {
		id.Notes = append(id.Notes, fmt.Sprintf("threads %v have other credentials than its main thread, which this explains; each thread is checked with its own", p.DivergentThreads))
	}
	var notes []string
	id.subject, notes = h.SubjectOf(p)
	id.Notes = append(id.Notes, notes...)
	id.cred = p.Cred()
	id.node, id.nodeErr = nodeFor(h, pid)
	return id, nil
}

// nodeFor finds /dev/userfaultfd as pid sees it: through /proc/PID/root when
// it lives in another mount namespace (a container's /dev is its own).
func nodeFor(h hostinfo.Host, pid int) (hostinfo.Node, error) {
	self, _ := fs.ReadLink(h.FS, "proc/self/ns/mnt")
	theirs, err := fs.ReadLink(h.FS, "proc/"+strconv.Itoa(pid)+"/ns/mnt")
	if err == nil && self != "" && theirs != self {
		return h.Node("proc/" + strconv.Itoa(pid) + "/root/" + hostinfo.DeviceName)
	}
	return h.Node(hostinfo.DeviceName)
}

// Spec describes a hypothetical process.
type Spec struct {
	Exe    string // absolute path of an existing file
	UID    uint32
	GID    *uint32  // nil: the uid's primary group from /etc/passwd
	Groups []uint32 // nil: the uid's groups from /etc/group
	Caps   uint64
	UserNS bool   // the capabilities are held in a child user namespace
	Cgroup string // cgroup v2 path; "" for none given
}

// ParseCaps reads "CAP_A,CAP_B", "none" or "all".
func ParseCaps(s string) (uint64, error) {
	switch strings.TrimSpace(s) {
	case "none", "":
		return 0, nil
	case "all":
		return uint64(1)<<(capability.Last+1) - 1, nil
	}
	var m uint64
	for _, c := range strings.Split(s, ",") {
		n, err := capability.Parse(c)
		if err != nil {
			return 0, err
		}
		m |= 1 << uint(n)
	}
	return m, nil
}

// FromSpec builds a hypothetical identity. The executable and the cgroup must
// exist: the gate matches them by identity, so there is nothing to match
// otherwise.
func FromSpec(h hostinfo.Host, s Spec) (Identity, error) {
	names := h.Names()
	id := Identity{Hypothetical: true, Exe: s.Exe, UID: s.UID, FSUID: s.UID, InitUserNS: !s.UserNS,
		CapEff: fmt.Sprintf("%016x", s.Caps), Seccomp: "unknown", SeccompFilters: -1, Cgroup: s.Cgroup}
	id.SysPtrace = s.Caps&(1<<capability.SysPtrace) != 0
	gid, groups, known := names.Account(s.UID)
	switch {
	case s.GID != nil:
		gid = *s.GID
	case known:
		id.Notes = append(id.Notes, fmt.Sprintf("gid %d is uid %d's primary group in /etc/passwd", gid, s.UID))
	default:
		gid = s.UID
		id.Notes = append(id.Notes, fmt.Sprintf("/etc/passwd does not know uid %d: assuming gid %d; give --gid", s.UID, s.UID))
	}
	if s.Groups != nil {
		groups = s.Groups
	} else if known && len(groups) > 0 {
		id.Notes = append(id.Notes, fmt.Sprintf("supplementary groups %v from /etc/group; give --groups to change them", groups))
	}
	id.GID, id.FSGID, id.Groups = gid, gid, groups
	id.subject = decision.Subject{CapEffective: s.Caps, InitUserNS: !s.UserNS, EUID: s.UID, EGID: gid, Groups: groups}
	if s.Exe != "" {
		if !strings.HasPrefix(s.Exe, "/") {
			return id, fmt.Errorf("--exe %q: give an absolute path", s.Exe)
		}
		fid, err := h.FileID(strings.TrimPrefix(s.Exe, "/"))
		if err != nil {
			return id, fmt.Errorf("--exe %s: %w (the gate matches an executable by its file, so name one that exists)", s.Exe, err)
		}
		id.subject.Exe, id.subject.HasExe = fid, true
	} else {
		id.Notes = append(id.Notes, "no --exe: rules naming executables cannot match")
	}
	if s.Cgroup != "" {
		ids, err := h.CgroupIDs(s.Cgroup)
		if err != nil {
			return id, fmt.Errorf("--cgroup: %w", err)
		}
		id.subject.Cgroups = ids
	} else {
		id.Notes = append(id.Notes, "no --cgroup: rules naming cgroups cannot match")
	}
	if s.UserNS {
		id.Notes = append(id.Notes, "its capabilities are held in a child user namespace: none counts for userfaultfd, nor overrides the device node's permissions")
	}
	id.cred = hostinfo.Cred{UID: s.UID, GID: gid, Groups: groups, CapEff: s.Caps, InitUserNS: !s.UserNS}
	id.node, id.nodeErr = h.Node(hostinfo.DeviceName)
	return id, nil
}

func u32s(v []int) []uint32 {
	out := make([]uint32, len(v))
	for i, x := range v {
		out[i] = uint32(x)
	}
	return out
}

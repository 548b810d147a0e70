package hostinfo

import (
	"fmt"
	"io/fs"
	"path"
	"strings"
	"syscall"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/policy"
)

// rootCgroupID is the id of the unified hierarchy's root cgroup.
const rootCgroupID = 1

// CgroupRoot finds where the unified (v2) cgroup hierarchy is mounted, from
// /proc/self/mountinfo: "sys/fs/cgroup" on a pure v2 host, often
// "sys/fs/cgroup/unified" on a hybrid one. ok is false when it is not mounted.
func (h Host) CgroupRoot() (string, bool) {
	b, err := fs.ReadFile(h.FS, "proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	for _, l := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(l, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if ok && len(f) >= 5 && len(g) >= 1 && g[0] == "cgroup2" {
			return strings.TrimPrefix(path.Clean(f[4]), "/"), true
		}
	}
	return "", false
}

func statT(fsys fs.FS, name string) (*syscall.Stat_t, error) {
	fi, err := fs.Stat(fsys, name)
	if err != nil {
		return nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("/%s: the file system gives no inode numbers (no stat_t)", name)
	}
	return st, nil
}

// FileID is the gate's identity of the file at name (symlinks followed): its
// filesystem's kernel dev_t and its inode number.
func (h Host) FileID(name string) (decision.FileID, error) {
	st, err := statT(h.FS, name)
	if err != nil {
		return decision.FileID{}, err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return decision.FileID{}, fmt.Errorf("/%s is not a regular file", name)
	}
	return decision.FileID{Dev: decision.KernelDev(st.Dev), Ino: st.Ino}, nil
}

// CgroupIDs returns the ids of the cgroup v2 at cgPath ("/a/b") and of its
// ancestors up to the root, as the gate walks them: a cgroup's id is its
// directory's inode number.
func (h Host) CgroupIDs(cgPath string) ([]uint64, error) {
	if !path.IsAbs(cgPath) {
		return nil, fmt.Errorf("cgroup %q: want a path starting with '/' under the cgroup2 mount", cgPath)
	}
	root, ok := h.CgroupRoot()
	if !ok {
		if path.Clean(cgPath) == "/" {
			// Unmounted, the unified hierarchy has only its root, whose id is
			// kernfs's first: 1.
			return []uint64{rootCgroupID}, nil
		}
		return nil, fmt.Errorf("no cgroup2 file system is mounted (none in /proc/self/mountinfo)")
	}
	var ids []uint64
	for p := path.Clean(cgPath); ; p = path.Dir(p) {
		st, err := statT(h.FS, path.Join(root, p))
		if err != nil {
			return nil, fmt.Errorf("cgroup %s: %w", cgPath, err)
		}
		ids = append(ids, st.Ino)
		if p == "/" {
			return ids, nil
		}
	}
}

// Resolver resolves a policy's paths through h, as policy.HostResolver does
// through the live file system.
func (h Host) Resolver() policy.Resolver { return resolver{h} }

type resolver struct{ h Host }

func (r resolver) Executables(p string) ([]decision.FileID, error) {
	id, err := r.h.FileID(strings.TrimPrefix(p, "/"))
	if err != nil {
		return nil, err
	}
	return []decision.FileID{id}, nil
}

func (r resolver) Cgroup(p string) (uint64, error) {
	ids, err := r.h.CgroupIDs(p)
	if err != nil {
		return 0, err
	}
	return ids[0], nil
}

// SubjectOf is the decision model's view of a process. What cannot be read
// (a vanished executable, no cgroup2) is left out, so rules naming it do not
// match: the gate does the same with what it cannot see. notes say what was
// left out.
func (h Host) SubjectOf(p Process) (s decision.Subject, notes []string) {
	s = decision.Subject{
		CapEffective: p.Status.CapEff, InitUserNS: p.InitUserNS,
		EUID: uint32(p.Status.UID[1]), EGID: uint32(p.Status.GID[1]), Groups: toU32(p.Status.Groups),
	}
	if id, err := h.FileID(fmt.Sprintf("proc/%d/exe", p.PID)); err == nil {
		s.Exe, s.HasExe = id, true
	} else {
		notes = append(notes, "its executable's identity is unknown ("+errText(err)+"): rules naming executables cannot match it")
	}
	if p.CgroupV2 {
		if ids, err := h.CgroupIDs(p.Cgroup); err == nil {
			s.Cgroups = ids
		} else {
			notes = append(notes, "its cgroup's id is unknown ("+err.Error()+"): rules naming cgroups cannot match it")
		}
	}
	return s, notes
}

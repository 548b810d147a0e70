package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/uffdgate/uffdgate/internal/decision"
)

// Resolver finds what the paths of a policy name on this host.
type Resolver interface {
	// Executables returns the identities of the file at path (several when a
	// resolver remembers files replaced at the path).
	Executables(path string) ([]decision.FileID, error)
	// Cgroup returns the id of the cgroup v2 at path.
	Cgroup(path string) (uint64, error)
}

// HostResolver resolves against the running host.
type HostResolver struct {
	CgroupRoot string // "/sys/fs/cgroup" when empty
}

// Executables follows symlinks: a symlink or a hard link to a file is that file.
func (h HostResolver) Executables(path string) ([]decision.FileID, error) {
	id, err := FileIDOf(path)
	if err != nil {
		return nil, err
	}
	return []decision.FileID{id}, nil
}

// FileIDOf is the identity of the file at path, symlinks followed.
func FileIDOf(path string) (decision.FileID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return decision.FileID{}, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return decision.FileID{}, fmt.Errorf("%s is not a regular file", path)
	}
	return decision.FileID{Dev: decision.KernelDev(st.Dev), Ino: st.Ino}, nil
}

// Cgroup: on cgroup v2 a cgroup's id is its directory's inode number.
func (h HostResolver) Cgroup(path string) (uint64, error) {
	root := h.CgroupRoot
	if root == "" {
		root = "/sys/fs/cgroup"
	}
	var st syscall.Stat_t
	p := filepath.Join(root, path)
	if err := syscall.Stat(p, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return 0, fmt.Errorf("%s is not a cgroup directory", p)
	}
	return st.Ino, nil
}

// Compile resolves the policy's paths into the identities the gate matches. A
// path that cannot be resolved now matches nothing (fail closed) and is listed
// in unresolved; the daemon resolves again as paths appear and change.
func (p *Policy) Compile(r Resolver) (g decision.Gate, unresolved []string) {
	g = decision.Gate{Mode: p.Mode, Audit: p.Audit}
	for _, pr := range p.Rules {
		dr := decision.Rule{
			Name: pr.Name, Caps: pr.Caps, Grant: pr.Grant, AuditOnly: pr.AuditOnly,
			HasExe: len(pr.Executables) > 0, HasCgroup: len(pr.Cgroups) > 0,
			HasUID: pr.HasUIDs, HasGID: pr.HasGIDs, UIDs: pr.UIDs, GIDs: pr.GIDs,
		}
		for _, e := range pr.Executables {
			ids, err := r.Executables(e)
			if err != nil {
				unresolved = append(unresolved, fmt.Sprintf("rule %s: executable %s: %v", pr.Name, e, err))
			}
			dr.Exes = append(dr.Exes, ids...)
		}
		for _, c := range pr.Cgroups {
			id, err := r.Cgroup(c.Path)
			if err != nil {
				unresolved = append(unresolved, fmt.Sprintf("rule %s: cgroup %s: %v", pr.Name, c, err))
				continue
			}
			dr.Cgroups = append(dr.Cgroups, decision.CgroupSel{ID: id, Subtree: c.Subtree})
		}
		g.Rules = append(g.Rules, dr)
	}
	return g, unresolved
}

// Check fills p.Warnings with what resolving on this host finds missing (it
// matches nothing until it exists) and with Advice.
func (p *Policy) Check(r Resolver) {
	_, unresolved := p.Compile(r)
	p.Warnings = nil
	for _, u := range unresolved {
		p.Warnings = append(p.Warnings, u+" (it matches nothing until it exists)")
	}
	p.Warnings = append(p.Warnings, p.Advice()...)
}

// Advice lists rules that are valid but weaker than they look: a rule that
// grants kernel-fault contexts to executables alone lets anyone who can run
// them have them create contexts on their behalf.
func (p *Policy) Advice() []string {
	var out []string
	for _, r := range p.Rules {
		if len(r.Executables) > 0 && !r.HasUIDs && !r.HasGIDs && len(r.Cgroups) == 0 && r.Caps == 0 &&
			r.Grant == decision.GrantKernelFaults && !r.AuditOnly {
			out = append(out, fmt.Sprintf("line %d: rule %s allows its executables whoever runs them: anyone who can run one can make it create a kernel-fault context for them (LD_PRELOAD, ptrace, /proc/PID/mem) and take it; add uids or cgroups naming who runs it", r.Line, r.Name))
		}
	}
	return out
}

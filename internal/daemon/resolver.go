package daemon

import (
	"fmt"
	"os"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/policy"
)

// rememberedPerPath bounds how many replaced files a path keeps allowed.
const rememberedPerPath = 4

// rememberingResolver keeps allowing the files that were at an allowed path
// before an upgrade renamed a new one over it: processes started from the old
// binary keep working, and the new binary is allowed as soon as it is seen.
//
// It holds an O_PATH descriptor on every file it remembers: an identity is a
// device and inode number, and a freed inode number is soon handed to some
// other new file (ext4 does at once), which would then inherit the allowance.
// A held inode is never freed, so its number is never reused.
type rememberingResolver struct {
	policy.Resolver
	mu   sync.Mutex
	seen map[string][]held // newest last
	// identify gives the kernel's identity of an open file (gate.Identify):
	// with the inode's generation, which stat does not tell. Without it (tests)
	// the identity is stat's.
	identify func(fd int) (decision.FileID, error)
}

func (r *rememberingResolver) setIdentify(f func(fd int) (decision.FileID, error)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.identify = f
}

type held struct {
	id     decision.FileID // what the gate matches
	statID decision.FileID // what stat says, to recognize the file again cheaply
	fd     int
}

func newRememberingResolver(r policy.Resolver) *rememberingResolver {
	return &rememberingResolver{Resolver: r, seen: map[string][]held{}}
}

func (r *rememberingResolver) Executables(path string) ([]decision.FileID, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.seen[path]
	// The identity is taken from the descriptor that pins it: no race between
	// stat and open.
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err == nil {
		var st unix.Stat_t
		if err = unix.Fstat(fd, &st); err == nil && st.Mode&unix.S_IFMT != unix.S_IFREG {
			err = fmt.Errorf("%s is not a regular file", path)
		}
		if err != nil {
			unix.Close(fd)
		} else {
			// Held files are known by stat's numbers; the kernel is asked only
			// about a file not held yet.
			sid := decision.FileID{Dev: decision.KernelDev(st.Dev), Ino: st.Ino}
			if slices.ContainsFunc(old, func(h held) bool { return h.statID == sid }) {
				unix.Close(fd)
			} else {
				id := sid
				if r.identify != nil {
					id, err = r.identify(fd)
				}
				if err != nil {
					unix.Close(fd)
				} else {
					old = append(old, held{id: id, statID: sid, fd: fd})
				}
			}
		}
	}
	if err != nil {
		err = &os.PathError{Op: "open", Path: path, Err: err}
	}
	for len(old) > rememberedPerPath {
		unix.Close(old[0].fd)
		old = old[1:]
	}
	r.seen[path] = old
	ids := make([]decision.FileID, len(old))
	for i, h := range old {
		ids[i] = h.id
	}
	return ids, err
}

// exeNames remembers the paths of executables seen in events, by identity, so
// that counts the kernel holds by identity can be reported by path.
type exeNames struct {
	mu    sync.Mutex
	names map[decision.FileID]string
}

const maxExeNames = 4096

func newExeNames() *exeNames { return &exeNames{names: map[decision.FileID]string{}} }

func (e *exeNames) remember(id decision.FileID, name string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.names[id]; !ok && len(e.names) >= maxExeNames {
		clear(e.names) // bounded; an unknown identity is reported by inode
	}
	e.names[id] = name
}

func (e *exeNames) name(id decision.FileID) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if n, ok := e.names[id]; ok {
		return n
	}
	return fmt.Sprintf("(inode %d on device %d:%d)", id.Ino, id.Dev>>20, id.Dev&0xfffff)
}

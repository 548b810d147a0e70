package daemon

import (
	"fmt"
	"slices"
	"sync"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/policy"
)

// rememberedPerPath bounds how many replaced files a path keeps allowed.
const rememberedPerPath = 4

// rememberingResolver keeps allowing the files that were at an allowed path
// before an upgrade renamed a new one over it: processes started from the old
// binary keep working, and the new binary is allowed as soon as it is seen.
type rememberingResolver struct {
	policy.Resolver
	mu   sync.Mutex
	seen map[string][]decision.FileID // newest last
}

func newRememberingResolver(r policy.Resolver) *rememberingResolver {
	return &rememberingResolver{Resolver: r, seen: map[string][]decision.FileID{}}
}

func (r *rememberingResolver) Executables(path string) ([]decision.FileID, error) {
	ids, err := r.Resolver.Executables(path)
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.seen[path]
	for _, id := range ids {
		if !slices.Contains(old, id) {
			old = append(old, id)
		}
	}
	if len(old) > rememberedPerPath {
		old = old[len(old)-rememberedPerPath:]
	}
	r.seen[path] = old
	return slices.Clone(old), err
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

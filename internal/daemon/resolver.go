package daemon

import (
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

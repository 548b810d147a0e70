package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/uffdgate/uffdgate/internal/policy"
)

// TestRememberingResolverPinsInodes: the identity of a binary replaced by a
// rename stays allowed, and its inode stays held, so that a new file cannot be
// given the freed inode number and inherit the allowance.
func TestRememberingResolverPinsInodes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "vmm")
	os.WriteFile(p, []byte("old"), 0o755)
	r := newRememberingResolver(policy.HostResolver{})
	ids, err := r.Executables(p)
	if err != nil || len(ids) != 1 {
		t.Fatalf("first: %v %v", ids, err)
	}
	old := ids[0]
	os.WriteFile(p+".new", []byte("new"), 0o755)
	os.Rename(p+".new", p) // unlinks the old file: only our descriptor keeps it
	ids, err = r.Executables(p)
	if err != nil || len(ids) != 2 || ids[0] != old || ids[1] == old {
		t.Fatalf("after the upgrade: %v %v", ids, err)
	}
	// Create many files: none may get the old inode number while it is held.
	for i := range 2000 {
		f := filepath.Join(dir, fmt.Sprintf("f%d", i))
		os.WriteFile(f, nil, 0o644)
		if id, err := policy.FileIDOf(f); err == nil && id == old {
			t.Fatalf("file %s got the replaced binary's identity %v while it is remembered", f, old)
		}
	}
	// A missing path keeps its remembered identities (still held) and says why.
	os.Remove(p)
	ids, err = r.Executables(p)
	if err == nil || len(ids) != 2 {
		t.Errorf("after removal: %v %v", ids, err)
	}
	// Bounded: old descriptors are closed as identities age out.
	for i := range 2 * rememberedPerPath {
		os.WriteFile(p, []byte{byte(i)}, 0o755)
		os.Rename(p, p+".x") // a new inode each time
		os.WriteFile(p, []byte{byte(i)}, 0o755)
		r.Executables(p)
	}
	if n := len(r.seen[p]); n != rememberedPerPath {
		t.Errorf("%d identities remembered, want %d", n, rememberedPerPath)
	}
}

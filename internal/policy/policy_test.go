package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
)

func TestDefault(t *testing.T) {
	p := Default()
	if p.Mode != decision.ModeUserModeOnly || p.Audit {
		t.Errorf("default policy: mode %s audit %v", p.Mode, p.Audit)
	}
	if len(p.Rules) != 1 || p.Rules[0].Caps != 1<<capability.SysPtrace {
		t.Errorf("default policy rules: %+v, want only CAP_SYS_PTRACE", p.Rules)
	}
	if p.Source != DefaultSource || !strings.HasPrefix(p.Digest, "sha256:") {
		t.Errorf("source %q digest %q", p.Source, p.Digest)
	}
}

// TestMalformedCorpus: every file in testdata/bad is rejected with the message its
// first line promises ("# want: ..."), which starts with its line and column.
func TestMalformedCorpus(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	if len(files) < 20 {
		t.Fatalf("only %d malformed examples", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(b), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("%s: first line must be `# want: MESSAGE`", f)
			}
			_, err = Load(f)
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Load(%s) = %v, want a *policy.Error", f, err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error\n  %v\ndoes not contain\n  %s", err, want)
			}
			if pe.Fix == "" {
				t.Errorf("error without a fix: %v", err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	for _, c := range []struct {
		doc      string
		mode     decision.Mode
		capRules int
	}{
		{"audit: true\n", decision.ModeUserModeOnly, 1},
		{"mode: deny\nallowlist:\n  capabilities: []\n", decision.ModeDeny, 0},
		{"mode: allow\nallowlist: {capabilities: [sys_admin, CAP_SYS_PTRACE]}\n", decision.ModeAllow, 1},
	} {
		p, err := Parse("t", []byte(c.doc))
		if err != nil {
			t.Fatalf("%q: %v", c.doc, err)
		}
		n := 0
		for _, r := range p.Rules {
			if r.Name == "allowlist.capabilities" {
				n++
			}
		}
		if p.Mode != c.mode || n != c.capRules {
			t.Errorf("%q: mode %s, %d capability rules", c.doc, p.Mode, n)
		}
	}
}

func TestRulesParsed(t *testing.T) {
	p, err := Parse("t", []byte(`mode: deny
rules:
  - name: vmm
    executables: [/usr/bin/qemu, /usr/libexec/qemu-kvm]
    cgroups: [/machine.slice/**, /vm1]
    uids: [107, root]
    gids: [0]
    capabilities: [CAP_IPC_LOCK]
    audit_only: true
  - name: gc
    uids: [1000]
    grant: user-mode-only
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rules) != 3 {
		t.Fatalf("%d rules", len(p.Rules))
	}
	r := p.Rules[1]
	if r.Name != "vmm" || len(r.Executables) != 2 || !r.AuditOnly || r.Grant != decision.GrantKernelFaults ||
		r.Cgroups[0] != (CgroupPath{"/machine.slice", true}) || r.Cgroups[1] != (CgroupPath{"/vm1", false}) ||
		len(r.UIDs) != 2 || r.UIDs[1] != 0 || r.Caps != 1<<14 || r.Line != 3 {
		t.Errorf("rule vmm parsed as %+v", r)
	}
	if p.Rules[2].Grant != decision.GrantUserModeOnly {
		t.Errorf("rule gc: %+v", p.Rules[2])
	}
	if _, err := Parse("t", []byte("rules:\n  - name: all-cgroups\n    cgroups: [/**]\n")); err != nil {
		t.Errorf("the whole cgroup tree: %v", err)
	}
}

func TestTooManyRules(t *testing.T) {
	var b strings.Builder
	b.WriteString("allowlist: {capabilities: []}\nrules:\n")
	for i := range decision.MaxRules + 1 {
		b.WriteString("  - name: r" + string(rune('a'+i/26)) + string(rune('a'+i%26)) + "\n    uids: [" + string(rune('1'+i%9)) + string(rune('0'+i/9)) + "]\n")
	}
	_, err := Parse("t", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "at most 64") {
		t.Errorf("65 rules: %v", err)
	}
}

type fakeResolver struct {
	exes    map[string]decision.FileID
	cgroups map[string]uint64
}

func (f fakeResolver) Executables(p string) ([]decision.FileID, error) {
	if id, ok := f.exes[p]; ok {
		return []decision.FileID{id}, nil
	}
	return nil, os.ErrNotExist
}

func (f fakeResolver) Cgroup(p string) (uint64, error) {
	if id, ok := f.cgroups[p]; ok {
		return id, nil
	}
	return 0, os.ErrNotExist
}

func TestCompile(t *testing.T) {
	p, err := Parse("t", []byte(`rules:
  - name: vmm
    executables: [/usr/bin/qemu, /missing]
    cgroups: [/machine.slice/**, /gone]
`))
	if err != nil {
		t.Fatal(err)
	}
	r := fakeResolver{exes: map[string]decision.FileID{"/usr/bin/qemu": {Dev: 8, Ino: 42}}, cgroups: map[string]uint64{"/machine.slice": 7}}
	g, unresolved := p.Compile(r)
	if len(g.Rules) != 2 || g.Mode != decision.ModeUserModeOnly {
		t.Fatalf("compiled %+v", g)
	}
	vmm := g.Rules[1]
	if !vmm.HasExe || len(vmm.Exes) != 1 || vmm.Exes[0].Ino != 42 || !vmm.HasCgroup ||
		len(vmm.Cgroups) != 1 || vmm.Cgroups[0] != (decision.CgroupSel{ID: 7, Subtree: true}) {
		t.Errorf("rule vmm compiled to %+v", vmm)
	}
	if len(unresolved) != 2 || !strings.Contains(unresolved[0], "/missing") || !strings.Contains(unresolved[1], "/gone") {
		t.Errorf("unresolved = %q", unresolved)
	}
	// A rule whose only executable is missing matches nothing: fail closed.
	p2, _ := Parse("t", []byte("allowlist: {capabilities: []}\nrules:\n  - name: x\n    executables: [/missing]\n"))
	g2, _ := p2.Compile(r)
	if m := g2.Match(decision.Subject{InitUserNS: true}); m != 0 {
		t.Errorf("a rule with an unresolved executable matched: %b", m)
	}
}

// TestHostResolver resolves real files: a symlink is its target, a copy is not.
func TestHostResolver(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "bin")
	os.WriteFile(f, []byte("x"), 0o755)
	os.Symlink(f, filepath.Join(dir, "link"))
	os.Link(f, filepath.Join(dir, "hard"))
	os.WriteFile(filepath.Join(dir, "copy"), []byte("x"), 0o755)
	h := HostResolver{CgroupRoot: dir}
	id := func(p string) decision.FileID {
		ids, err := h.Executables(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		return ids[0]
	}
	if id("bin") != id("link") || id("bin") != id("hard") || id("bin") == id("copy") {
		t.Errorf("identities: bin %v link %v hard %v copy %v", id("bin"), id("link"), id("hard"), id("copy"))
	}
	if _, err := h.Executables(dir); err == nil {
		t.Error("a directory resolved as an executable")
	}
	if _, err := h.Cgroup("/"); err != nil {
		t.Errorf("cgroup root: %v", err)
	}
	if _, err := h.Cgroup("/bin"); err == nil {
		t.Error("a file resolved as a cgroup")
	}
}

func TestExamplesValid(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	if len(files) < 5 {
		t.Fatalf("%d example policies", len(files))
	}
	for _, f := range files {
		if _, err := Load(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// FuzzParse: no input makes the parser panic, and whatever it accepts compiles.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	ex, _ := filepath.Glob("../../examples/*.yaml")
	for _, p := range append(files, ex...) {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add(DefaultYAML())
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz", data)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error of another type: %T %v", err, err)
			}
			return
		}
		if len(p.Rules) > decision.MaxRules {
			t.Fatalf("accepted %d rules", len(p.Rules))
		}
		p.Compile(fakeResolver{})
	})
}

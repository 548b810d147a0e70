// Package policy reads uffdgate policy files: YAML, validated strictly, with
// errors that name the line, the column, what is wrong and how to fix it.
package policy

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
)

//go:embed default.yaml
var defaultPolicy []byte

// DefaultSource names the embedded default policy.
const DefaultSource = "embedded default"

// Policy is a validated policy, as written: paths are not resolved yet (see
// Compile), so that checking a policy never needs the files it names.
type Policy struct {
	Mode  decision.Mode
	Audit bool
	Rules []Rule
	// Warnings are things that are not errors but deserve a look, e.g. a path
	// that does not exist yet (filled by Check).
	Warnings []string
	Source   string // file path or DefaultSource
	Digest   string // sha256 of the file's bytes
	Text     []byte // the file's bytes
}

// Rule is one allowlist rule as written in the policy.
type Rule struct {
	Name        string
	Line        int
	Executables []string // absolute paths
	Cgroups     []CgroupPath
	UIDs, GIDs  []uint32
	HasUIDs     bool
	HasGIDs     bool
	Caps        uint64
	Grant       decision.Grant
	AuditOnly   bool
}

// CgroupPath is a cgroup v2 path relative to the cgroup2 mount ("/" is the root).
type CgroupPath struct {
	Path    string
	Subtree bool // written with a trailing "/**"
}

func (c CgroupPath) String() string {
	if c.Subtree {
		return strings.TrimSuffix(c.Path, "/") + "/**"
	}
	return c.Path
}

// Error is a validation error at a place in a policy file.
type Error struct {
	File      string
	Line, Col int
	Msg       string
	Fix       string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	if e.Fix != "" {
		b.WriteString(" (fix: ")
		b.WriteString(e.Fix)
		b.WriteString(")")
	}
	return b.String()
}

// Default returns the embedded default policy.
func Default() *Policy {
	p, err := Parse(DefaultSource, defaultPolicy)
	if err != nil {
		panic("embedded default policy is invalid: " + err.Error()) // caught by tests
	}
	return p
}

// DefaultYAML is the text of the embedded default policy.
func DefaultYAML() []byte { return bytes.Clone(defaultPolicy) }

// Load reads and validates a policy file.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Error{File: path, Msg: fmt.Sprintf("cannot read the policy: %v", errors.Unwrap(err)),
			Fix: "give the path of a readable policy file (`uffdgate run` without --policy uses the embedded default, which `uffdgate policy default` prints)"}
	}
	return Parse(path, data)
}

// Parse validates a policy document; name is used in errors.
func Parse(name string, data []byte) (*Policy, error) {
	sum := sha256.Sum256(data)
	p := &Policy{
		Mode:   decision.ModeUserModeOnly,
		Source: name,
		Digest: "sha256:" + hex.EncodeToString(sum[:]),
		Text:   bytes.Clone(data),
	}
	allowCaps := uint64(1) << capability.SysPtrace
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, &Error{File: name, Msg: "the policy is empty", Fix: "write at least `mode: user-mode-only`"}
	} else if err != nil {
		return nil, syntaxError(name, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &Error{File: name, Line: extra.Line, Col: extra.Column, Msg: "more than one YAML document",
			Fix: "keep one policy per file: remove the '---' and what follows"}
	}
	if len(doc.Content) == 0 {
		return nil, &Error{File: name, Msg: "the policy is empty", Fix: "write at least `mode: user-mode-only`"}
	}
	root := doc.Content[0]
	v := validator{file: name}
	var rulesNode *yaml.Node
	v.mapping(root, "the policy", map[string]func(*yaml.Node){
		"mode": func(n *yaml.Node) {
			if s, ok := v.scalar(n, "mode"); ok {
				m, err := decision.ParseMode(s)
				if err != nil {
					v.fail(n, err.Error(), "write `mode: user-mode-only` (the default), `mode: deny` or `mode: allow`")
				}
				p.Mode = m
			}
		},
		"audit": func(n *yaml.Node) {
			p.Audit = v.boolean(n, "audit", "write `audit: true` to report instead of refusing, `audit: false` to enforce")
		},
		"allowlist": func(n *yaml.Node) {
			v.mapping(n, "allowlist", map[string]func(*yaml.Node){
				"capabilities": func(n *yaml.Node) { allowCaps = v.capabilities(n) },
			})
		},
		"rules": func(n *yaml.Node) { rulesNode = n },
	})
	if allowCaps != 0 {
		p.Rules = append(p.Rules, Rule{Name: "allowlist.capabilities", Caps: allowCaps})
	}
	if rulesNode != nil {
		v.rules(rulesNode, p)
	}
	if v.err != nil {
		return nil, v.err
	}
	if len(p.Rules) > decision.MaxRules {
		return nil, &Error{File: name, Line: rulesNode.Line, Col: rulesNode.Column,
			Msg: fmt.Sprintf("%d rules: at most %d are supported", len(p.Rules), decision.MaxRules), Fix: "merge rules that grant the same thing (a selector takes a list)"}
	}
	return p, nil
}

var ruleFields = []string{"name", "executables", "cgroups", "uids", "gids", "capabilities", "grant", "audit_only"}

func (v *validator) rules(n *yaml.Node, p *Policy) {
	if n.Kind != yaml.SequenceNode {
		v.fail(n, "rules must be a list", "write `rules:` followed by `- name: ...` items")
		return
	}
	names := map[string]int{}
	for _, rn := range n.Content {
		r := Rule{Line: rn.Line}
		grantNode := (*yaml.Node)(nil)
		v.mapping(rn, "a rule", map[string]func(*yaml.Node){
			"name": func(n *yaml.Node) {
				if s, ok := v.scalar(n, "name"); ok {
					if s == "" || strings.ContainsAny(s, " \t\n") {
						v.fail(n, fmt.Sprintf("rule name %q must be one word", s), "name rules like `qemu-postcopy`")
					}
					r.Name = s
				}
			},
			"executables": func(n *yaml.Node) { r.Executables = v.paths(n) },
			"cgroups":     func(n *yaml.Node) { r.Cgroups = v.cgroups(n) },
			"uids":        func(n *yaml.Node) { r.UIDs, r.HasUIDs = v.ids(n, "uids", lookupUser), true },
			"gids":        func(n *yaml.Node) { r.GIDs, r.HasGIDs = v.ids(n, "gids", lookupGroup), true },
			"capabilities": func(n *yaml.Node) {
				r.Caps = v.capabilities(n)
				if r.Caps == 0 && len(n.Content) == 0 {
					v.fail(n, "an empty capabilities selector matches no process", "list capabilities, or remove the selector")
				}
			},
			"grant": func(n *yaml.Node) {
				grantNode = n
				if s, ok := v.scalar(n, "grant"); ok {
					switch s {
					case "kernel-faults":
						r.Grant = decision.GrantKernelFaults
					case "user-mode-only":
						r.Grant = decision.GrantUserModeOnly
					default:
						v.fail(n, fmt.Sprintf("unknown grant %q", s), "write `grant: kernel-faults` (the default) or `grant: user-mode-only`")
					}
				}
			},
			"audit_only": func(n *yaml.Node) {
				r.AuditOnly = v.boolean(n, "audit_only", "write `audit_only: true` to trial the rule (reported, not granted)")
			},
		})
		if v.err != nil {
			return
		}
		switch {
		case r.Name == "":
			v.fail(rn, "a rule without a name", "add `name: SOMETHING` (it appears in every event the rule decides)")
		case names[r.Name] != 0:
			v.fail(rn, fmt.Sprintf("rule name %q is already used by the rule at line %d", r.Name, names[r.Name]), "give each rule its own name")
		case len(r.Executables) == 0 && len(r.Cgroups) == 0 && !r.HasUIDs && !r.HasGIDs && r.Caps == 0:
			v.fail(rn, fmt.Sprintf("rule %q has no selector, so it would match every process", r.Name),
				"add at least one of: executables, cgroups, uids, gids, capabilities")
		case r.Grant == decision.GrantUserModeOnly && p.Mode != decision.ModeDeny:
			v.fail(grantNode, fmt.Sprintf("rule %q grants user-mode-only contexts, which mode %s already gives every process", r.Name, p.Mode),
				"remove the rule, or set `mode: deny` so that it matters")
		}
		for _, o := range p.Rules {
			if o.Name != "allowlist.capabilities" && sameSelectors(o, r) {
				v.fail(rn, fmt.Sprintf("rule %q has the same selectors as rule %q (line %d)", r.Name, o.Name, o.Line),
					"merge the two rules into one")
			}
		}
		names[r.Name] = r.Line
		p.Rules = append(p.Rules, r)
	}
}

func sameSelectors(a, b Rule) bool {
	return slices.Equal(a.Executables, b.Executables) && slices.Equal(a.Cgroups, b.Cgroups) &&
		slices.Equal(a.UIDs, b.UIDs) && slices.Equal(a.GIDs, b.GIDs) && a.HasUIDs == b.HasUIDs &&
		a.HasGIDs == b.HasGIDs && a.Caps == b.Caps
}

func (v *validator) list(n *yaml.Node, what, example string) []*yaml.Node {
	if n.Kind != yaml.SequenceNode {
		v.fail(n, what+" must be a list", "write `"+what+": ["+example+"]`")
		return nil
	}
	return n.Content
}

func (v *validator) paths(n *yaml.Node) []string {
	var out []string
	for _, c := range v.list(n, "executables", "/usr/bin/qemu-system-x86_64") {
		s, ok := v.scalar(c, "an executable")
		if !ok {
			continue
		}
		if !path.IsAbs(s) || path.Clean(s) != s {
			v.fail(c, fmt.Sprintf("malformed executable path %q: it must be absolute and clean", s), fmt.Sprintf("write %q", "/"+strings.TrimPrefix(path.Clean("/"+s), "/")))
			continue
		}
		out = append(out, s)
	}
	return out
}

func (v *validator) cgroups(n *yaml.Node) []CgroupPath {
	var out []CgroupPath
	for _, c := range v.list(n, "cgroups", "/machine.slice/**") {
		s, ok := v.scalar(c, "a cgroup")
		if !ok {
			continue
		}
		cp := CgroupPath{Path: s}
		if strings.HasSuffix(s, "/**") {
			cp = CgroupPath{Path: cmpOr(strings.TrimSuffix(s, "/**"), "/"), Subtree: true}
		}
		if !path.IsAbs(cp.Path) || path.Clean(cp.Path) != cp.Path || strings.Contains(cp.Path, "*") {
			v.fail(c, fmt.Sprintf("malformed cgroup %q: write a path under the cgroup2 mount, starting with '/', optionally ending in '/**' for its subtree", s),
				"e.g. `/machine.slice/**` or `/system.slice/libvirtd.service`")
			continue
		}
		out = append(out, cp)
	}
	return out
}

func cmpOr(a, b string) string {
	if a == "" {
		return b
	}
	return a
}

func (v *validator) ids(n *yaml.Node, what string, lookup func(string) (uint32, error)) []uint32 {
	var out []uint32
	for _, c := range v.list(n, what, "107") {
		s, ok := v.scalar(c, "an id")
		if !ok {
			continue
		}
		if id, err := strconv.ParseUint(s, 10, 32); err == nil {
			out = append(out, uint32(id))
			continue
		}
		id, err := lookup(s)
		if err != nil {
			v.fail(c, fmt.Sprintf("%s: %q is neither a number nor a known name (%v)", what, s, err), "write the numeric id, or a name this host knows")
			continue
		}
		out = append(out, id)
	}
	if len(out) == 0 && v.err == nil {
		v.fail(n, "an empty "+what+" selector matches no process", "list ids, or remove the selector")
	}
	return out
}

func lookupUser(name string) (uint32, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, err
	}
	id, err := strconv.ParseUint(u.Uid, 10, 32)
	return uint32(id), err
}

func lookupGroup(name string) (uint32, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	id, err := strconv.ParseUint(g.Gid, 10, 32)
	return uint32(id), err
}

func (v *validator) boolean(n *yaml.Node, what, fix string) bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
		v.fail(n, fmt.Sprintf("%s must be true or false, not %q", what, n.Value), fix)
	}
	return b
}

func syntaxError(name string, err error) error {
	msg := err.Error()
	line := 0
	// yaml.v3 reports "yaml: line N: ..."
	if _, e := fmt.Sscanf(strings.TrimPrefix(msg, "yaml: "), "line %d:", &line); e == nil {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	return &Error{File: name, Line: line, Col: 1, Msg: "not valid YAML: " + msg, Fix: "correct the YAML syntax (indentation, quoting, colons)"}
}

type validator struct {
	file string
	err  error
}

func (v *validator) fail(n *yaml.Node, msg, fix string) {
	if v.err == nil {
		v.err = &Error{File: v.file, Line: n.Line, Col: n.Column, Msg: msg, Fix: fix}
	}
}

func (v *validator) scalar(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		v.fail(n, what+" must be a single value", "write `"+what+": VALUE`")
		return "", false
	}
	return n.Value, true
}

// mapping walks a mapping node, rejecting unknown and repeated keys.
func (v *validator) mapping(n *yaml.Node, what string, fields map[string]func(*yaml.Node)) {
	if n.Kind != yaml.MappingNode {
		v.fail(n, what+" must be a mapping of `key: value` lines", "see the README for the policy schema")
		return
	}
	known := make([]string, 0, len(fields))
	for k := range fields {
		known = append(known, k)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		f, ok := fields[k.Value]
		switch {
		case !ok:
			v.fail(k, fmt.Sprintf("unknown field %q in %s", k.Value, what), "use one of: "+strings.Join(sorted(known), ", "))
		case seen[k.Value]:
			v.fail(k, fmt.Sprintf("field %q appears twice in %s", k.Value, what), "keep one of them")
		default:
			seen[k.Value] = true
			f(val)
		}
	}
}

func (v *validator) capabilities(n *yaml.Node) uint64 {
	if n.Kind != yaml.SequenceNode {
		v.fail(n, "capabilities must be a list", "write `capabilities: [CAP_SYS_PTRACE]`, or `[]` to allowlist no one by capability")
		return 0
	}
	var mask uint64
	for _, c := range n.Content {
		s, ok := v.scalar(c, "a capability")
		if !ok {
			continue
		}
		num, err := capability.Parse(s)
		if err != nil {
			v.fail(c, err.Error(), "use a name from capabilities(7), e.g. CAP_SYS_PTRACE")
			continue
		}
		mask |= 1 << uint(num)
	}
	return mask
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

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
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/uffdgate/uffdgate/internal/capability"
	"github.com/uffdgate/uffdgate/internal/decision"
)

//go:embed default.yaml
var defaultPolicy []byte

// DefaultSource names the embedded default policy.
const DefaultSource = "embedded default"

// Policy is a validated policy.
type Policy struct {
	Mode  decision.Mode
	Audit bool
	// AllowCaps: holding any of these effective in the initial user namespace
	// allowlists a process.
	AllowCaps uint64
	Source    string // file path or DefaultSource
	Digest    string // sha256 of the file's bytes
	Text      []byte // the file's bytes
}

// Gate is the decision model's view of the policy.
func (p *Policy) Gate() decision.Gate {
	return decision.Gate{Mode: p.Mode, Audit: p.Audit, AllowCaps: p.AllowCaps}
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
			Fix: "give the path of a readable policy file, or omit --policy for the embedded default"}
	}
	return Parse(path, data)
}

// Parse validates a policy document; name is used in errors.
func Parse(name string, data []byte) (*Policy, error) {
	sum := sha256.Sum256(data)
	p := &Policy{
		Mode:      decision.ModeUserModeOnly,
		AllowCaps: 1 << capability.SysPtrace,
		Source:    name,
		Digest:    "sha256:" + hex.EncodeToString(sum[:]),
		Text:      bytes.Clone(data),
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
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
			var b bool
			if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil || (n.Tag != "!!bool") {
				v.fail(n, fmt.Sprintf("audit must be true or false, not %q", n.Value), "write `audit: true` to report instead of refusing, `audit: false` to enforce")
				return
			}
			p.Audit = b
		},
		"allowlist": func(n *yaml.Node) {
			v.mapping(n, "allowlist", map[string]func(*yaml.Node){
				"capabilities": func(n *yaml.Node) { p.AllowCaps = v.capabilities(n) },
			})
		},
	})
	if v.err != nil {
		return nil, v.err
	}
	return p, nil
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

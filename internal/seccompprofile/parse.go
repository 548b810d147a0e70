package seccompprofile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
)

// Error is a problem in an input profile, at a place in it.
type Error struct {
	File      string
	Path      string // JSON path such as syscalls[3].args[0].op; "" for the whole document
	Line, Col int    // 0 when unknown
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
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Fix != "" {
		b.WriteString(" (fix: ")
		b.WriteString(e.Fix)
		b.WriteString(")")
	}
	return b.String()
}

// Parse reads a Docker-format seccomp profile (the format of Docker's, containerd's
// and CRI-O's default profiles: moby's seccomp.Seccomp) and validates it strictly:
// a field uffdgate does not know would be lost when the profile is written back, so
// it is an error, as is anything Docker or runc would reject when starting a
// container.
func Parse(file string, data []byte) (*seccomp.Seccomp, error) {
	pos, err := positions(file, data)
	if err != nil {
		return nil, err
	}
	at := func(path, msg, fix string) *Error {
		e := &Error{File: file, Path: path, Msg: msg, Fix: fix}
		// The place itself, or the closest enclosing one when it is missing.
		for p := path; ; p = parent(p) {
			if off, ok := pos[p]; ok {
				e.Line, e.Col = lineCol(data, off)
				break
			}
			if p == "" {
				break
			}
		}
		return e
	}
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, &Error{File: file, Msg: err.Error()}
	}
	if err := checkKeys(doc, "", profileShape, at); err != nil {
		return nil, err
	}
	if err := checkMinKernels(doc, at); err != nil {
		return nil, err
	}
	var p seccomp.Seccomp
	if err := json.Unmarshal(data, &p); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			// The decoder reports where the value ends and a path without indexes;
			// the member that starts last before that is the one, with its indexes.
			path, off := "", int64(-1)
			for p, o := range pos {
				if o < te.Offset && o > off {
					path, off = p, o
				}
			}
			l, c := lineCol(data, off)
			return nil, &Error{File: file, Path: path, Line: l, Col: c,
				Msg: fmt.Sprintf("%s where %s is expected", te.Value, te.Type), Fix: "see the format of Docker's default profile"}
		}
		return nil, &Error{File: file, Msg: err.Error()}
	}
	if err := validate(&p, at); err != nil {
		return nil, err
	}
	return &p, nil
}

// shape describes the keys a JSON object may have: a nested shape for an object,
// a one-element []shape for an array of objects, nil for anything else.
type shape map[string]any

var (
	filterShape  = shape{"caps": nil, "arches": nil, "minKernel": nil}
	argShape     = shape{"index": nil, "value": nil, "valueTwo": nil, "op": nil}
	syscallShape = shape{"names": nil, "name": nil, "action": nil, "errnoRet": nil, "args": []shape{argShape},
		"comment": nil, "includes": filterShape, "excludes": filterShape}
	profileShape = shape{"defaultAction": nil, "defaultErrnoRet": nil, "architectures": nil,
		"archMap": []shape{{"architecture": nil, "subArchitectures": nil}}, "flags": nil,
		"listenerPath": nil, "listenerMetadata": nil, "syscalls": []shape{syscallShape}}
)

func checkKeys(v any, path string, s shape, at func(path, msg, fix string) *Error) error {
	obj, ok := v.(map[string]any)
	if !ok {
		if v == nil {
			return nil // null: the typed decoder treats it as absent
		}
		return at(path, fmt.Sprintf("expected an object, found %s", jsonKind(v)), "")
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		sub, known := s[k]
		p := join(path, k)
		if !known {
			want := make([]string, 0, len(s))
			for k := range s {
				want = append(want, k)
			}
			slices.Sort(want)
			return at(p, fmt.Sprintf("unknown field %q: uffdgate would drop it when writing the profile back", k),
				"remove it or correct its spelling; known fields here: "+strings.Join(want, ", "))
		}
		switch sub := sub.(type) {
		case shape:
			if err := checkKeys(obj[k], p, sub, at); err != nil {
				return err
			}
		case []shape:
			arr, ok := obj[k].([]any)
			if !ok {
				if obj[k] == nil {
					continue
				}
				return at(p, fmt.Sprintf("expected an array, found %s", jsonKind(obj[k])), "")
			}
			for i, el := range arr {
				if err := checkKeys(el, fmt.Sprintf("%s[%d]", p, i), sub[0], at); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// checkMinKernels parses each minKernel on its own, so a bad one is reported at
// its place rather than by the decoder, which gives none.
func checkMinKernels(doc any, at func(path, msg, fix string) *Error) error {
	top, _ := doc.(map[string]any)
	calls, _ := top["syscalls"].([]any)
	for i, c := range calls {
		obj, _ := c.(map[string]any)
		for _, f := range []string{"includes", "excludes"} {
			filter, _ := obj[f].(map[string]any)
			mk, ok := filter["minKernel"]
			if !ok {
				continue
			}
			b, _ := json.Marshal(mk)
			var kv seccomp.KernelVersion
			if err := kv.UnmarshalJSON(b); err != nil {
				return at(fmt.Sprintf("syscalls[%d].%s.minKernel", i, f), err.Error(), `write it as "MAJOR.MINOR", e.g. "5.11"`)
			}
		}
	}
	return nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case float64, json.Number:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "null"
}

var (
	actions = []specs.LinuxSeccompAction{specs.ActKill, specs.ActKillProcess, specs.ActKillThread, specs.ActTrap,
		specs.ActErrno, specs.ActTrace, specs.ActAllow, specs.ActLog, specs.ActNotify}
	operators = []specs.LinuxSeccompOperator{specs.OpNotEqual, specs.OpLessThan, specs.OpLessEqual, specs.OpEqualTo,
		specs.OpGreaterEqual, specs.OpGreaterThan, specs.OpMaskedEqual}
	arches = []specs.Arch{specs.ArchX86, specs.ArchX86_64, specs.ArchX32, specs.ArchARM, specs.ArchAARCH64,
		specs.ArchMIPS, specs.ArchMIPS64, specs.ArchMIPS64N32, specs.ArchMIPSEL, specs.ArchMIPSEL64,
		specs.ArchMIPSEL64N32, specs.ArchPPC, specs.ArchPPC64, specs.ArchPPC64LE, specs.ArchS390, specs.ArchS390X,
		specs.ArchPARISC, specs.ArchPARISC64, specs.ArchRISCV64, specs.ArchLOONGARCH64, specs.ArchM68K,
		specs.ArchSH, specs.ArchSHEB}
	flags = []specs.LinuxSeccompFlag{"SECCOMP_FILTER_FLAG_TSYNC", specs.LinuxSeccompFlagLog,
		specs.LinuxSeccompFlagSpecAllow, specs.LinuxSeccompFlagWaitKillableRecv}
)

func oneOf[T ~string](list []T) string {
	s := make([]string, len(list))
	for i, v := range list {
		s[i] = string(v)
	}
	return "use one of " + strings.Join(s, ", ")
}

// validate checks what Docker (moby's loader) and runc check when a container
// starts, so a profile uffdgate writes back fails no later than it would have.
func validate(p *seccomp.Seccomp, at func(path, msg, fix string) *Error) error {
	if p.DefaultAction == "" {
		return at("defaultAction", "missing defaultAction: without it Docker treats the profile as no seccomp at all",
			`add "defaultAction": "SCMP_ACT_ERRNO" (Docker's default profile refuses what it does not list)`)
	}
	if !slices.Contains(actions, p.DefaultAction) {
		return at("defaultAction", fmt.Sprintf("unknown action %q", p.DefaultAction), oneOf(actions))
	}
	if len(p.Architectures) > 0 && len(p.ArchMap) > 0 {
		return at("archMap", "both architectures and archMap are set; Docker refuses such a profile", "keep only one of them")
	}
	for i, a := range p.Architectures {
		if !slices.Contains(arches, a) {
			return at(fmt.Sprintf("architectures[%d]", i), fmt.Sprintf("unknown architecture %q", a), oneOf(arches))
		}
	}
	for i, m := range p.ArchMap {
		if !slices.Contains(arches, m.Arch) {
			return at(fmt.Sprintf("archMap[%d].architecture", i), fmt.Sprintf("unknown architecture %q", m.Arch), oneOf(arches))
		}
		for j, a := range m.SubArches {
			if !slices.Contains(arches, a) {
				return at(fmt.Sprintf("archMap[%d].subArchitectures[%d]", i, j), fmt.Sprintf("unknown architecture %q", a), oneOf(arches))
			}
		}
	}
	for i, f := range p.Flags {
		if !slices.Contains(flags, f) {
			return at(fmt.Sprintf("flags[%d]", i), fmt.Sprintf("unknown flag %q", f), oneOf(flags))
		}
	}
	for i, s := range p.Syscalls {
		path := fmt.Sprintf("syscalls[%d]", i)
		if s == nil {
			return at(path, "null entry", "remove it")
		}
		switch {
		case s.Name != "" && len(s.Names) > 0:
			return at(path, "both name and names are set; Docker refuses such an entry", `keep only "names"`)
		case s.Name == "" && len(s.Names) == 0:
			return at(path, "no syscall names", `list the syscalls in "names", or remove the entry`)
		}
		for j, n := range s.Names {
			if n == "" {
				return at(fmt.Sprintf("%s.names[%d]", path, j), "empty syscall name", "remove it")
			}
		}
		if !slices.Contains(actions, s.Action) {
			return at(path+".action", fmt.Sprintf("unknown action %q", s.Action), oneOf(actions))
		}
		if s.ErrnoRet != nil && s.Action != specs.ActErrno && s.Action != specs.ActTrace {
			return at(path+".errnoRet", fmt.Sprintf("errnoRet with action %s: runc accepts it only with SCMP_ACT_ERRNO and SCMP_ACT_TRACE", s.Action), "remove errnoRet")
		}
		for j, a := range s.Args {
			ap := fmt.Sprintf("%s.args[%d]", path, j)
			if a.Index > 5 {
				return at(ap+".index", fmt.Sprintf("argument index %d: syscalls have arguments 0 to 5", a.Index), "use an index from 0 to 5")
			}
			if !slices.Contains(operators, a.Op) {
				return at(ap+".op", fmt.Sprintf("unknown operator %q", a.Op), oneOf(operators))
			}
		}
	}
	return nil
}

// positions maps every JSON path in data to the offset where it starts (the key,
// for object members),
// checking the syntax on the way (with the line and column of any error) and
// refusing duplicate keys, which the JSON decoder would resolve silently.
func positions(file string, data []byte) (map[string]int64, error) {
	pos := map[string]int64{}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	syntax := func(err error) error {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			l, c := lineCol(data, se.Offset)
			return &Error{File: file, Line: l, Col: c, Msg: "invalid JSON: " + se.Error()}
		}
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			l, c := lineCol(data, int64(len(data)))
			return &Error{File: file, Line: l, Col: c, Msg: "invalid JSON: unexpected end of file", Fix: "the document is truncated or a bracket is not closed"}
		}
		return &Error{File: file, Msg: "invalid JSON: " + err.Error()}
	}
	var walk func(path string) error
	walk = func(path string) error {
		if _, ok := pos[path]; !ok { // object members are placed at their key
			pos[path] = skipSpace(data, dec.InputOffset())
		}
		tok, err := dec.Token()
		if err != nil {
			return syntax(err)
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				keyOff := skipSpace(data, dec.InputOffset())
				kt, err := dec.Token()
				if err != nil {
					return syntax(err)
				}
				key := kt.(string)
				p := join(path, key)
				if seen[key] {
					l, c := lineCol(data, keyOff)
					return &Error{File: file, Path: p, Line: l, Col: c, Msg: fmt.Sprintf("duplicate key %q: JSON decoders disagree on which one counts", key), Fix: "keep one"}
				}
				seen[key] = true
				pos[p] = keyOff
				if err := walk(p); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return syntax(err)
			}
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return syntax(err)
			}
		}
		return nil
	}
	if err := walk(""); err != nil {
		return nil, err
	}
	end := dec.InputOffset()
	if _, err := dec.Token(); err != io.EOF {
		l, c := lineCol(data, skipSpace(data, end))
		return nil, &Error{File: file, Line: l, Col: c, Msg: "invalid JSON: data after the profile's closing brace", Fix: "one profile per file"}
	}
	if off := pos[""]; data[off] != '{' {
		l, c := lineCol(data, off)
		return nil, &Error{File: file, Line: l, Col: c, Msg: "not a seccomp profile: the document is not a JSON object"}
	}
	return pos, nil
}

// skipSpace moves off past the separators the decoder leaves before a value.
func skipSpace(data []byte, off int64) int64 {
	for off < int64(len(data)) {
		switch data[off] {
		case ' ', '\t', '\r', '\n', ':', ',':
			off++
		default:
			return off
		}
	}
	return off
}

func lineCol(data []byte, off int64) (int, int) {
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// parent is the enclosing path: syscalls[3].args[0].op → syscalls[3].args[0] →
// syscalls[3].args → syscalls[3] → syscalls → "".
func parent(p string) string {
	if strings.HasSuffix(p, "]") {
		return p[:strings.LastIndexByte(p, '[')]
	}
	if i := strings.LastIndexByte(p, '.'); i >= 0 {
		return p[:i]
	}
	return ""
}

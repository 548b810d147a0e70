package seccompprofile

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseErrors(t *testing.T) {
	for _, c := range []struct {
		name, doc string
		want      []string // substrings of the error, in order
	}{
		{"empty", ``, []string{"p.json:1:1: invalid JSON: unexpected end of file"}},
		{"syntax", "{\n \"defaultAction\": \"SCMP_ACT_ERRNO\",\n \"syscalls\": [}\n", []string{"p.json:3:15: invalid JSON: invalid character '}'"}},
		{"truncated", "{\n \"defaultAction\": \"SCMP_ACT_ERRNO\",\n \"syscalls\": [", []string{"unexpected end of file", "truncated"}},
		{"trailing data", `{"defaultAction": "SCMP_ACT_ERRNO"} {}`, []string{"p.json:1:37: invalid JSON: data after the profile's closing brace"}},
		{"not an object", `["SCMP_ACT_ERRNO"]`, []string{"p.json:1:1: not a seccomp profile"}},
		{"duplicate key", "{\"defaultAction\": \"SCMP_ACT_ERRNO\",\n \"syscalls\": [{\"names\": [\"read\"], \"action\": \"SCMP_ACT_ALLOW\", \"action\": \"SCMP_ACT_ERRNO\"}]}",
			[]string{"p.json:2:63: syscalls[0].action: duplicate key \"action\"", "fix: keep one"}},
		{"unknown top field", "{\"defaultAction\": \"SCMP_ACT_ERRNO\",\n \"defaultActoin\": 1}", []string{"p.json:2:2: defaultActoin: unknown field", "would drop it", "known fields here: archMap, architectures"}},
		{"unknown syscall field", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "argz": []}]}`, []string{"syscalls[0].argz: unknown field \"argz\""}},
		{"unknown arg field", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "opp": "SCMP_CMP_EQ"}]}]}`, []string{"syscalls[0].args[0].opp: unknown field"}},
		{"unknown filter field", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"capz": []}}]}`, []string{"syscalls[0].includes.capz: unknown field"}},
		{"syscalls not an array", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {}}`, []string{"syscalls: expected an array, found an object"}},
		{"wrong type", "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [\n{\"names\": [\"read\"], \"action\": \"SCMP_ACT_ALLOW\", \"args\": [{\"index\": \"zero\"}]}]}", []string{"p.json:2:59: syscalls[0].args[0].index: string where uint is expected"}},
		{"missing defaultAction", `{"syscalls": []}`, []string{"defaultAction: missing defaultAction", "no seccomp at all"}},
		{"unknown default action", `{"defaultAction": "SCMP_ACT_DENY"}`, []string{"p.json:1:2: defaultAction: unknown action \"SCMP_ACT_DENY\"", "use one of SCMP_ACT_KILL"}},
		{"unknown action", "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [\n  {\"names\": [\"read\"], \"action\": \"SCMP_ACT_ALOW\"}]}", []string{"p.json:2:23: syscalls[0].action: unknown action \"SCMP_ACT_ALOW\""}},
		{"no names", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}`, []string{"syscalls[0]: no syscall names"}},
		{"empty name", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", ""], "action": "SCMP_ACT_ALLOW"}]}`, []string{"syscalls[0].names[1]: empty syscall name"}},
		{"name and names", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW"}]}`, []string{"syscalls[0]: both name and names"}},
		{"errnoRet with allow", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}]}`, []string{"syscalls[0].errnoRet: errnoRet with action SCMP_ACT_ALLOW"}},
		{"arg index", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}`, []string{"syscalls[0].args[0].index: argument index 6"}},
		{"operator", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_MASKED"}]}]}`, []string{"syscalls[0].args[0].op: unknown operator \"SCMP_CMP_MASKED\"", "SCMP_CMP_MASKED_EQ"}},
		{"architecture", `{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AMD64"]}`, []string{"architectures[1]: unknown architecture \"SCMP_ARCH_AMD64\""}},
		{"sub-architecture", `{"defaultAction": "SCMP_ACT_ERRNO", "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_I386"]}]}`, []string{"archMap[0].subArchitectures[0]: unknown architecture \"SCMP_ARCH_I386\""}},
		{"both arch lists", `{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": null}]}`, []string{"archMap: both architectures and archMap"}},
		{"flag", `{"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_LOUD"]}`, []string{"flags[0]: unknown flag"}},
		{"minKernel", "{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [{\"names\": [\"read\"], \"action\": \"SCMP_ACT_ALLOW\",\n \"excludes\": {\"minKernel\": \"5\"}}]}", []string{"p.json:2:15: syscalls[0].excludes.minKernel: invalid kernel version", "\"MAJOR.MINOR\""}},
		{"null entry", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [null]}`, []string{"syscalls[0]: null entry"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("p.json", []byte(c.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Errorf("error %T is not a *seccompprofile.Error: %v", err, err)
			}
			msg, rest := err.Error(), err.Error()
			for _, w := range c.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error %q lacks %q", msg, w)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

// TestParseRoundTrip: a profile read and written back is the same profile,
// field for field; here Docker's default in its own format.
func TestParseRoundTrip(t *testing.T) {
	want, err := Marshal(Default())
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse("docker-default.json", want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("round trip changed the profile:\n%s", firstDiff(want, got))
	}
}

func firstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			lo := max(0, i-80)
			return "want …" + string(a[lo:min(len(a), i+80)]) + "…\ngot  …" + string(b[lo:min(len(b), i+80)]) + "…"
		}
	}
	return "lengths differ"
}

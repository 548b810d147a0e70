//go:build linux && amd64

package probe

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// WriteJSON writes the report for machines.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the matrix for people: one line per identity and path, the
// kernel-fault and the user-mode-only request side by side.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("uffdgate probe: kernel %s\n", r.Kernel)
	if r.NotApplicable != "" {
		p("%s\n", r.NotApplicable)
		_, err := io.WriteString(w, b.String())
		return err
	}
	p("vm.unprivileged_userfaultfd = %s; /dev/userfaultfd %s\n", r.Sysctl, r.Device)
	p("compared with: %s\n\n", r.Model)
	mark := map[string]string{Match: "ok", Mismatch: "MISMATCH", NotOffered: "-"}
	cell := func(c Cell) string {
		s := c.Got
		if c.Behaviour != "" {
			s += ", " + c.Behaviour
		}
		return fmt.Sprintf("%-46s %-8s", s, mark[c.Verdict])
	}
	p("%-14s %-12s %-55s %s\n", "IDENTITY", "PATH", "KERNEL-FAULT (O_CLOEXEC)", "USER-MODE-ONLY (+UFFD_USER_MODE_ONLY)")
	byKey := map[string]Cell{}
	var order []string
	for _, c := range r.Cells {
		k := c.Identity + "\x00" + c.Path
		if _, ok := byKey[k+"\x00kf"]; !ok && !c.UserModeOnly {
			order = append(order, k)
		}
		if c.UserModeOnly {
			byKey[k+"\x00umo"] = c
		} else {
			byKey[k+"\x00kf"] = c
		}
	}
	for _, k := range order {
		kf, umo := byKey[k+"\x00kf"], byKey[k+"\x00umo"]
		p("%s\n", strings.TrimRight(fmt.Sprintf("%-14s %-12s %s %s", kf.Identity, kf.Path, cell(kf), cell(umo)), " "))
	}
	var bad []Cell
	for _, c := range r.Cells {
		if c.Verdict == Mismatch {
			bad = append(bad, c)
		}
	}
	if len(bad) > 0 {
		p("\nMismatches\n")
		for _, c := range bad {
			p("  %s %s %s (cap_eff %s): expected %s, got %s", c.Identity, c.Path, c.Flags, c.CapEff, c.Expected, c.Got)
			if c.Behaviour != "" {
				p(" (%s)", c.Behaviour)
			}
			if c.Detail != "" {
				p("; %s", c.Detail)
			}
			p("\n")
		}
	}
	s := r.Summary
	p("\n%d cells: %d match, %d mismatch, %d not offered", s.Cells, s.Match, s.Mismatch, s.NotOffered)
	if len(r.NotOfferedABI) > 0 {
		p(" (this kernel does not offer %s: ENOSYS)", strings.Join(r.NotOfferedABI, ", "))
	}
	p("; %d ms\n", r.Millis)
	_, err := io.WriteString(w, b.String())
	return err
}

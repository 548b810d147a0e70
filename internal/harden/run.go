//go:build linux

package harden

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// effects says, per layer, what its setting achieves.
var effects = map[Layer]string{
	LayerSysctl: "processes without CAP_SYS_PTRACE get EPERM from userfaultfd() unless they ask for UFFD_USER_MODE_ONLY",
	LayerDevice: "only uid 0 (or CAP_DAC_OVERRIDE) can open the node; everyone else gets EACCES at open(2)",
}

// ErrNeedsRoot is returned for live changes by anyone but root.
var ErrNeedsRoot = errors.New("changing the live system needs root: run as root, or add --dry-run to see the changes, or --root DIR for a tree")

// Run plans, prints and (unless o.DryRun) applies, writing a report to w. The
// report says which layer each change hardens and what the knobs leave open.
func Run(o Options, w io.Writer) error {
	if (o.Live || o.Root == "" || o.Root == "/") && !o.DryRun && os.Geteuid() != 0 {
		return ErrNeedsRoot
	}
	p, err := NewPlan(o)
	if err != nil {
		return err
	}
	if p.NotApplicable != "" {
		fmt.Fprintf(w, "uffdgate harden: not applicable: %s\n", p.NotApplicable)
		return nil
	}
	what := "making the kernel's own userfaultfd knobs strict"
	if o.Undo {
		what = "removing the files `uffdgate harden` wrote"
	}
	where := "this system"
	switch {
	case o.Root != "" && o.Live:
		where = o.Root + " and the live settings"
	case o.Root != "":
		where = o.Root + " (a tree: live settings are neither read nor changed)"
	}
	fmt.Fprintf(w, "uffdgate harden: %s on %s\n", what, where)
	if o.DryRun {
		fmt.Fprintln(w, "dry run: nothing is changed")
	}
	var applyErr error
	if !o.DryRun {
		applyErr = p.Apply()
	}
	for _, l := range []Layer{LayerSysctl, LayerDevice} {
		fmt.Fprintf(w, "\n%s\n", l)
		for _, c := range p.Changes {
			if c.Layer != l {
				continue
			}
			switch {
			case o.DryRun:
				fmt.Fprintf(w, "  would %s\n", c.What)
			case c.Done:
				fmt.Fprintf(w, "  done: %s\n", c.What)
			default:
				fmt.Fprintf(w, "  NOT done: %s\n", c.What)
			}
		}
		for _, f := range p.Findings {
			if f.Layer == l {
				fmt.Fprintf(w, "  note: %s\n", f.What)
			}
		}
		if !o.Undo {
			fmt.Fprintf(w, "  effect: %s\n", effects[l])
		}
	}
	if !o.Undo {
		fmt.Fprintln(w, "\nNot covered by these knobs (they complement the BPF LSM gate, they do not replace it):")
		for _, n := range NotCovered {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	if applyErr != nil {
		return applyErr
	}
	if len(p.Changes) == 0 {
		fmt.Fprintln(w, "\nnothing to change")
	}
	return nil
}

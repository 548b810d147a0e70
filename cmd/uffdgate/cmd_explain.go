package main

import (
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/uffdgate/uffdgate/internal/explain"
	"github.com/uffdgate/uffdgate/internal/hostinfo"
	"github.com/uffdgate/uffdgate/internal/state"
)

func init() {
	commands["explain"] = command{"explain PID | --exe PATH --uid N --caps CAPS [--userns] [--cgroup PATH]  which layer decides each kind of userfaultfd request, and why", cmdExplain}
}

const explainUsage = "usage: uffdgate explain [--json] PID\n       uffdgate explain [--json] --exe PATH --uid N --caps CAP_A,CAP_B|none|all [--gid N] [--groups G1,G2] [--userns] [--cgroup PATH]"

func cmdExplain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("uffdgate explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, explainUsage); fs.PrintDefaults() }
	asJSON := fs.Bool("json", false, "print JSON (fields in docs/audit-explain-probe.md)")
	exe := fs.String("exe", "", "hypothetical process: its executable (an existing file)")
	uid := fs.String("uid", "", "hypothetical process: its uid")
	gid := fs.String("gid", "", "hypothetical process: its gid (default: the uid's primary group in /etc/passwd)")
	groups := fs.String("groups", "", "hypothetical process: supplementary gids, comma-separated (default: from /etc/group)")
	caps := fs.String("caps", "", "hypothetical process: effective capabilities, e.g. CAP_SYS_PTRACE,CAP_DAC_OVERRIDE, or none, or all")
	userns := fs.Bool("userns", false, "hypothetical process: its capabilities are held in a child user namespace")
	cgroup := fs.String("cgroup", "", "hypothetical process: its cgroup v2 path, e.g. /machine.slice/qemu.scope")
	statePath := fs.String("state", state.DefaultPath, "the running daemon's state file")
	// Flags may follow the PID: parse what comes after it too.
	var pos []string
	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			return parseFailed(err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos, rest = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	hypo := set["exe"] || set["uid"] || set["gid"] || set["groups"] || set["caps"] || set["userns"] || set["cgroup"]
	host := hostinfo.Live()
	var id explain.Identity
	var err error
	switch {
	case hypo && len(pos) > 0:
		fmt.Fprintf(stderr, "uffdgate explain: give a PID or a hypothetical process (--exe, --uid, --caps), not both\n%s\n", explainUsage)
		return exitUsage
	case hypo:
		var missing []string
		for _, f := range []string{"exe", "uid", "caps"} {
			if !set[f] {
				missing = append(missing, "--"+f)
			}
		}
		if len(missing) > 0 {
			fmt.Fprintf(stderr, "uffdgate explain: a hypothetical process needs %s (--caps none for no capabilities)\n%s\n", strings.Join(missing, " and "), explainUsage)
			return exitUsage
		}
		spec := explain.Spec{Exe: *exe, UserNS: *userns, Cgroup: *cgroup}
		if spec.UID, err = parseID("--uid", *uid); err == nil && set["gid"] {
			var g uint32
			g, err = parseID("--gid", *gid)
			spec.GID = &g
		}
		if err == nil && set["groups"] {
			spec.Groups = []uint32{}
			for _, s := range strings.Split(*groups, ",") {
				var g uint32
				if g, err = parseID("--groups", s); err != nil {
					break
				}
				spec.Groups = append(spec.Groups, g)
			}
		}
		if err == nil {
			if spec.Caps, err = explain.ParseCaps(*caps); err != nil {
				err = fmt.Errorf("--caps: %w", err)
			}
		}
		if err == nil {
			id, err = explain.FromSpec(host, spec)
		}
		if err != nil {
			fmt.Fprintln(stderr, "uffdgate explain:", err)
			return exitUsage
		}
	case len(pos) == 1:
		pid, perr := strconv.Atoi(pos[0])
		if perr != nil || pid <= 0 {
			fmt.Fprintf(stderr, "uffdgate explain: %q is not a process id\n%s\n", pos[0], explainUsage)
			return exitUsage
		}
		if id, err = explain.FromPID(host, pid); err != nil {
			fmt.Fprintln(stderr, "uffdgate explain:", err)
			return exitFailure
		}
	default:
		fmt.Fprintln(stderr, explainUsage)
		return exitUsage
	}
	gate, err := host.ResolveGate(*statePath, "")
	if err != nil {
		// Unknown policy: explaining anyway could blame the wrong layer.
		fmt.Fprintln(stderr, "uffdgate explain:", err)
		return exitFailure
	}
	rep := explain.Explain(host, id, gate)
	if *asJSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "uffdgate explain:", err)
		return exitFailure
	}
	return exitOK
}

func parseID(flagName, s string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil || n == 4294967295 {
		return 0, fmt.Errorf("%s %q: want a numeric id from 0 to 4294967294", flagName, s)
	}
	return uint32(n), nil
}

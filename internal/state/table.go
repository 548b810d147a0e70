package state

import (
	"cmp"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints s for people.
func WriteTable(w io.Writer, s State, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("state", fmt.Sprintf("%s (backend %s)", s.State, s.Backend))
	row("pid", s.PID)
	row("version", s.Version)
	row("uptime", now.Sub(s.Started).Round(time.Second))
	row("mode", s.Mode)
	row("audit", s.Audit)
	row("policy", s.PolicySource)
	row("policy digest", s.PolicyDigest)
	row("rules", cmp.Or(strings.Join(s.Rules, ", "), "(none: no process is allowlisted)"))
	row("exec tracker", map[bool]string{true: "running (executable rules judge the file each process exec'd)", false: "off (no executable rules)"}[s.ExecTracking])
	reload := "never"
	if !s.LastReload.IsZero() {
		reload = s.LastReload.Format(time.RFC3339)
	}
	row("reloads", fmt.Sprintf("%d ok, %d failed (last: %s)", s.ReloadsOK, s.ReloadsFailed, reload))
	row("events lost", s.EventsLost)
	row("log lines suppressed", s.LogLinesSuppressed)
	if s.MetricsAddr != "" {
		row("metrics", "http://"+s.MetricsAddr+"/metrics")
	}
	row("updated", s.Updated.Format(time.RFC3339))
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "DECISIONS (mode/decision/path)\tCOUNT")
	keys := make([]string, 0, len(s.DecisionsByMode))
	for k := range s.DecisionsByMode {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) == 0 {
		fmt.Fprintln(tw, "(none yet)\t")
	}
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%d\n", k, s.DecisionsByMode[k])
	}
	return tw.Flush()
}

package hostinfo

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// UffdSysctl is the sysctl that lets everyone create kernel-fault contexts.
const UffdSysctl = "vm.unprivileged_userfaultfd"

// SysctlDirs are the drop-in directories, most important first: of files with
// the same name, only the one in the earliest directory is read (sysctl.d(5)).
var SysctlDirs = []string{"etc/sysctl.d", "run/sysctl.d", "usr/local/lib/sysctl.d", "usr/lib/sysctl.d", "lib/sysctl.d"}

// SysctlConf is read after every drop-in by `sysctl --system` (procps);
// systemd-sysctl reads it only through the 99-sysctl.conf symlink Debian ships.
const SysctlConf = "etc/sysctl.conf"

// Sysctl reads a sysctl's current value from /proc/sys.
func (h Host) Sysctl(key string) (string, error) {
	return h.readTrim("proc/sys/" + strings.ReplaceAll(key, ".", "/"))
}

// SysctlAssignment is one line of a sysctl configuration file that sets the key.
type SysctlAssignment struct {
	File  string `json:"file"`
	Line  int    `json:"line"`
	Key   string `json:"key"` // as written (may be a glob)
	Value string `json:"value"`
	// Applied is false for a file that another one shadows: same name in a more
	// important directory (a symlink to /dev/null there masks it).
	Applied    bool   `json:"applied"`
	ShadowedBy string `json:"shadowed_by,omitempty"`
	// Wins: the last applied assignment, the value boot leaves in effect.
	Wins bool `json:"wins"`
}

// SysctlConfig is what the boot-time configuration says about one key.
type SysctlConfig struct {
	Key string
	// Files lists every configuration file in the order it is applied.
	Files []string
	// Assignments to Key in application order, shadowed ones included where
	// they would have come.
	Assignments []SysctlAssignment
	// Winner is the assignment boot leaves in effect; nil when no file sets the key.
	Winner *SysctlAssignment
	// Unreadable lists files that could not be read (the picture is incomplete).
	Unreadable []string
}

type confFile struct {
	name       string // FS path
	shadowedBy string
	masked     bool
	isConf     bool // resolves to /etc/sysctl.conf
}

// SysctlConfig finds every configuration file that sets key and which one wins.
func (h Host) SysctlConfig(key string) (SysctlConfig, error) {
	cfg := SysctlConfig{Key: key}
	chosen := map[string]*confFile{}
	var shadowed []*confFile
	for _, dir := range SysctlDirs {
		ents, err := fs.ReadDir(h.FS, dir)
		if isNotExist(err) {
			continue
		}
		if err != nil {
			cfg.Unreadable = append(cfg.Unreadable, "/"+dir+": "+errText(err))
			continue
		}
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), ".conf") || e.IsDir() {
				continue
			}
			f := &confFile{name: dir + "/" + e.Name()}
			if e.Type()&fs.ModeSymlink != 0 {
				if t, err := fs.ReadLink(h.FS, f.name); err == nil {
					r := resolveLink(f.name, t)
					f.masked = r == "dev/null"
					f.isConf = r == SysctlConf
				}
			}
			if first, ok := chosen[e.Name()]; ok {
				f.shadowedBy = "/" + first.name
				if first.masked {
					f.shadowedBy += " (a symlink to /dev/null: masked)"
				}
				shadowed = append(shadowed, f)
				continue
			}
			chosen[e.Name()] = f
		}
	}
	names := make([]string, 0, len(chosen))
	for n := range chosen {
		names = append(names, n)
	}
	sort.Strings(names)
	var order []*confFile
	confIncluded := false
	for _, n := range names {
		// Shadowed files of the same name are listed just before the one read.
		for _, s := range shadowed {
			if path.Base(s.name) == n {
				order = append(order, s)
			}
		}
		order = append(order, chosen[n])
		confIncluded = confIncluded || (chosen[n].isConf && !chosen[n].masked)
	}
	if !confIncluded {
		order = append(order, &confFile{name: SysctlConf})
	}
	for _, f := range order {
		applied := f.shadowedBy == "" && !f.masked
		if applied {
			cfg.Files = append(cfg.Files, "/"+f.name)
		}
		if f.masked {
			continue // /dev/null: nothing to read
		}
		b, err := fs.ReadFile(h.FS, f.name)
		if err != nil {
			if !(f.name == SysctlConf && isNotExist(err)) {
				cfg.Unreadable = append(cfg.Unreadable, "/"+f.name+": "+errText(err))
			}
			continue
		}
		for _, a := range ParseSysctlConf("/"+f.name, b, key) {
			a.Applied, a.ShadowedBy = applied, f.shadowedBy
			cfg.Assignments = append(cfg.Assignments, a)
		}
	}
	for i := len(cfg.Assignments) - 1; i >= 0; i-- {
		if cfg.Assignments[i].Applied {
			cfg.Assignments[i].Wins = true
			cfg.Winner = &cfg.Assignments[i]
			break
		}
	}
	return cfg, nil
}

// ParseSysctlConf returns the lines of a sysctl.d file that set key: "key =
// value", '#' or ';' comments, an optional leading '-' (ignore failures), '/' or
// '.' as separators, and shell globs in the key (systemd-sysctl).
func ParseSysctlConf(file string, b []byte, key string) []SysctlAssignment {
	var out []SysctlAssignment
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue // systemd-sysctl warns and skips such lines
		}
		k = strings.TrimPrefix(strings.TrimSpace(k), "-")
		norm := strings.ReplaceAll(k, "/", ".")
		if norm != key {
			if m, err := path.Match(norm, key); err != nil || !m {
				continue
			}
		}
		out = append(out, SysctlAssignment{File: file, Line: i + 1, Key: k, Value: strings.TrimSpace(v)})
	}
	return out
}

func errText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return fmt.Sprint(err)
}

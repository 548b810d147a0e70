//go:build linux

// Package harden makes the kernel's own userfaultfd knobs as strict as uffdgate's
// default policy allows, for hosts that cannot run the BPF LSM gate and as a
// second layer under it:
//
//   - vm.unprivileged_userfaultfd = 0, persisted in a sysctl.d drop-in named to be
//     applied last, and set live;
//   - /dev/userfaultfd 0600 root:root without ACLs, persisted in a udev rule, and
//     applied live.
//
// Neither touches processes running as root or holding CAP_SYS_PTRACE: those keep
// kernel-fault contexts, which only the gate can refuse.
package harden

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Marker is the first line of every file harden writes; --undo removes only
// files that start with it.
const Marker = "# Managed by uffdgate harden: `uffdgate harden --undo` removes this file."

// The files harden writes and the live knobs it sets.
const (
	SysctlKey    = "vm.unprivileged_userfaultfd"
	SysctlDir    = "/etc/sysctl.d"
	SysctlName   = "zz-uffdgate.conf" // sorts after digits and letters: applied after every other drop-in
	UdevDir      = "/etc/udev/rules.d"
	UdevName     = "99-uffdgate-userfaultfd.rules"
	ProcSysctl   = "/proc/sys/vm/unprivileged_userfaultfd"
	DevicePath   = "/dev/userfaultfd"
	procpsConf   = "/etc/sysctl.conf"
	aclAccessKey = "system.posix_acl_access"
)

// Where systemd-sysctl and procps `sysctl --system` look for drop-ins, in the order
// that decides between files of the same name (the first one wins); files are
// then applied in order of their names, a later setting overriding an earlier one.
// procps applies /etc/sysctl.conf after all of them; Debian's systemd reaches it as
// /etc/sysctl.d/99-sysctl.conf.
var sysctlDirs = []string{"/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d"}

// udev's rules directories, in the same sense.
var udevDirs = []string{"/etc/udev/rules.d", "/run/udev/rules.d", "/usr/local/lib/udev/rules.d", "/usr/lib/udev/rules.d", "/lib/udev/rules.d"}

// SysctlContent is what harden writes to /etc/sysctl.d/zz-uffdgate.conf.
var SysctlContent = Marker + `
# Named to sort after every other drop-in: systemd-sysctl and ` + "`sysctl --system`" + `
# apply files in name order and the last setting wins (libvirt, for one, ships a
# drop-in setting 1 for QEMU postcopy migration).
# 0: the userfaultfd syscall gives contexts that handle kernel faults only to
# processes with CAP_SYS_PTRACE; UFFD_USER_MODE_ONLY contexts stay open to all.
vm.unprivileged_userfaultfd = 0
`

// UdevContent is what harden writes to /etc/udev/rules.d/99-uffdgate-userfaultfd.rules.
var UdevContent = Marker + `
# /dev/userfaultfd hands out contexts that handle kernel faults with no capability
# or sysctl check: keep it to root. ":=" keeps later rules from widening it.
KERNEL=="userfaultfd", SUBSYSTEM=="misc", MODE:="0600", OWNER:="root", GROUP:="root"
`

// Options selects what Run does.
type Options struct {
	// Root is a directory tree whose files to inspect and change instead of /.
	Root string
	// Live also reads and changes the running kernel's setting and the device
	// node; the command sets it unless --root is given.
	Live   bool
	DryRun bool
	Undo   bool
	// ProcSysctl and Device override the live paths, for tests on scratch files.
	ProcSysctl, Device string
}

func (o Options) live() bool { return o.Live }

func (o Options) path(p string) string {
	if o.Root == "" {
		return p
	}
	return filepath.Join(o.Root, p)
}

// Layer names what a change hardens.
type Layer string

const (
	LayerSysctl Layer = "vm.unprivileged_userfaultfd: the kernel's check on the userfaultfd syscall"
	LayerDevice Layer = "/dev/userfaultfd: USERFAULTFD_IOC_NEW, which the kernel does not check at all"
)

// Change is one change harden makes (or would make).
type Change struct {
	Layer Layer
	What  string // "write /etc/sysctl.d/zz-uffdgate.conf: ...", in the imperative
	file  *fileOp
	do    func() error // a live change
	Done  bool
}

// fileOp writes or removes one of harden's files; old is what was there, to roll
// back to.
type fileOp struct {
	path    string
	content string // "" with remove
	remove  bool
	old     []byte
	existed bool
}

// Finding is something harden saw and reports without changing it.
type Finding struct {
	Layer Layer
	What  string
}

// Plan is everything Run would do, computed without changing anything.
type Plan struct {
	Changes       []Change
	Findings      []Finding
	NotApplicable string // non-empty: userfaultfd is not in this kernel; nothing to do
}

// Conflict is a setting elsewhere that would defeat harden's; Run refuses before
// changing anything.
type Conflict struct {
	File string
	Line int
	Msg  string
	Fix  string
}

func (c *Conflict) Error() string {
	return fmt.Sprintf("%s:%d: %s (fix: %s)", c.File, c.Line, c.Msg, c.Fix)
}

// NewPlan inspects the system (or the tree under o.Root) and plans the changes.
func NewPlan(o Options) (*Plan, error) {
	if o.ProcSysctl == "" {
		o.ProcSysctl = ProcSysctl
	}
	if o.Device == "" {
		o.Device = DevicePath
	}
	p := &Plan{}
	if o.live() && !o.Undo {
		if _, err := os.Stat(o.ProcSysctl); errors.Is(err, fs.ErrNotExist) {
			p.NotApplicable = fmt.Sprintf("%s does not exist: this kernel has no userfaultfd (CONFIG_USERFAULTFD is off), so there is nothing to harden", o.ProcSysctl)
			return p, nil
		}
	}
	if o.Undo {
		return p, p.planUndo(o)
	}
	if err := p.planSysctl(o); err != nil {
		return nil, err
	}
	if err := p.planUdev(o); err != nil {
		return nil, err
	}
	return p, nil
}

// confFile is one effective drop-in.
type confFile struct {
	name, path string
}

// effectiveFiles lists the files with suffix in dirs as systemd and procps see
// them: one per name (the first directory wins), sorted by name.
func effectiveFiles(o Options, dirs []string, suffix string) ([]confFile, error) {
	var out []confFile
	var seenDirs []os.FileInfo
	for _, d := range dirs {
		full := o.path(d)
		fi, err := os.Stat(full)
		if err != nil {
			continue
		}
		if slices.ContainsFunc(seenDirs, func(s os.FileInfo) bool { return os.SameFile(s, fi) }) {
			continue // /lib is /usr/lib on merged-/usr systems
		}
		seenDirs = append(seenDirs, fi)
		ents, err := os.ReadDir(full)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", full, err)
		}
		for _, e := range ents {
			if !strings.HasSuffix(e.Name(), suffix) || slices.ContainsFunc(out, func(c confFile) bool { return c.name == e.Name() }) {
				continue
			}
			out = append(out, confFile{e.Name(), filepath.Join(full, e.Name())})
		}
	}
	slices.SortFunc(out, func(a, b confFile) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// sysctlSetting is one line setting the key.
type sysctlSetting struct {
	file  string
	line  int
	value string
}

// sysctlSettings returns the lines of file that set SysctlKey, in the syntax both
// systemd-sysctl and procps accept: "key = value", '#' or ';' comments, '/' as
// an alternative separator, a leading '-' to ignore failures, and (systemd) glob
// patterns.
func sysctlSettings(file string) ([]sysctlSetting, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil // a dangling symlink: systemd and procps skip it too
	}
	if err != nil {
		return nil, err
	}
	want := strings.ReplaceAll(SysctlKey, ".", "/")
	var out []sysctlSetting
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		k = strings.ReplaceAll(strings.TrimPrefix(strings.TrimSpace(k), "-"), ".", "/")
		if m, _ := path.Match(k, want); m || k == want {
			out = append(out, sysctlSetting{file, i + 1, strings.TrimSpace(v)})
		}
	}
	return out, nil
}

func (p *Plan) planSysctl(o Options) error {
	files, err := effectiveFiles(o, sysctlDirs, ".conf")
	if err != nil {
		return err
	}
	ours := filepath.Join(o.path(SysctlDir), SysctlName)
	for _, f := range files {
		if f.name == SysctlName && f.path != ours {
			p.Findings = append(p.Findings, Finding{LayerSysctl, fmt.Sprintf("%s is shadowed by %s, which harden writes", f.path, ours)})
			continue
		}
		if f.name == SysctlName {
			continue
		}
		sets, err := sysctlSettings(f.path)
		if err != nil {
			return err
		}
		for _, s := range sets {
			switch {
			case f.name < SysctlName:
				p.Findings = append(p.Findings, Finding{LayerSysctl, fmt.Sprintf("%s:%d sets %s = %s: applied before %s, which overrides it", s.file, s.line, SysctlKey, s.value, SysctlName)})
			case s.value != "0":
				return &Conflict{s.file, s.line, fmt.Sprintf("sets %s = %s and is applied after %s, so it would win at boot", SysctlKey, s.value, SysctlName),
					"remove that line, or set it to 0"}
			}
		}
	}
	// procps applies /etc/sysctl.conf after every drop-in.
	sets, err := sysctlSettings(o.path(procpsConf))
	if err != nil {
		return err
	}
	for _, s := range sets {
		if s.value != "0" {
			return &Conflict{s.file, s.line, fmt.Sprintf("sets %s = %s, and `sysctl --system` applies %s after every drop-in, so it would win", SysctlKey, s.value, procpsConf),
				"remove that line, or set it to 0"}
		}
	}
	if err := p.planFile(LayerSysctl, ours, SysctlContent, SysctlKey+" = 0, applied after every other drop-in"); err != nil {
		return err
	}
	if !o.live() {
		return nil
	}
	cur, err := os.ReadFile(o.ProcSysctl)
	if err != nil {
		return fmt.Errorf("reading %s: %w", o.ProcSysctl, err)
	}
	if v := strings.TrimSpace(string(cur)); v != "0" {
		target := o.ProcSysctl
		p.Changes = append(p.Changes, Change{Layer: LayerSysctl, What: fmt.Sprintf("write 0 to %s (now %s)", target, v), do: func() error {
			if err := os.WriteFile(target, []byte("0\n"), 0); err != nil {
				return err
			}
			if b, err := os.ReadFile(target); err != nil || strings.TrimSpace(string(b)) != "0" {
				return fmt.Errorf("%s reads %q after writing 0 (%v)", target, b, err)
			}
			return nil
		}})
	} else {
		p.Findings = append(p.Findings, Finding{LayerSysctl, o.ProcSysctl + " is 0 already"})
	}
	return nil
}

func (p *Plan) planUdev(o Options) error {
	files, err := effectiveFiles(o, udevDirs, ".rules")
	if err != nil {
		return err
	}
	ours := filepath.Join(o.path(UdevDir), UdevName)
	for _, f := range files {
		if f.path == ours {
			continue
		}
		b, err := os.ReadFile(f.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		for i, l := range strings.Split(string(b), "\n") {
			t := strings.TrimSpace(l)
			if t == "" || t[0] == '#' || !strings.Contains(t, "userfaultfd") {
				continue
			}
			final := strings.Contains(t, "MODE:=") || strings.Contains(t, "OWNER:=") || strings.Contains(t, "GROUP:=")
			if final && f.name < UdevName {
				return &Conflict{f.path, i + 1, "fixes the mode or owner of /dev/userfaultfd with := before harden's rule, which then cannot change it",
					"remove that rule, or let it assign with = instead of :="}
			}
			p.Findings = append(p.Findings, Finding{LayerDevice, fmt.Sprintf("%s:%d also concerns userfaultfd: %s (harden's rule assigns with := and so overrides later plain assignments; ACL tags such as uaccess are not undone)", f.path, i+1, t)})
		}
	}
	if err := p.planFile(LayerDevice, ours, UdevContent, "mode 0600, owner root:root, final"); err != nil {
		return err
	}
	if !slices.ContainsFunc([]string{"/usr/bin/udevadm", "/bin/udevadm", "/usr/sbin/udevadm", "/sbin/udevadm"}, func(f string) bool {
		_, err := os.Lstat(o.path(f))
		return err == nil
	}) {
		p.Findings = append(p.Findings, Finding{LayerDevice, "udev is not installed (no udevadm): the rule takes effect once it is; until then devtmpfs creates the node 0600 root:root and nothing widens it at boot"})
	}
	if !o.live() {
		return nil
	}
	return p.planDevice(o.Device)
}

// planFile plans writing one of harden's files, refusing to overwrite a file that
// is not harden's.
func (p *Plan) planFile(layer Layer, file, content, summary string) error {
	old, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("cannot write %s: %w", file, err)
	case !startsWithMarker(old):
		return &Conflict{file, 1, "exists and was not written by uffdgate harden (no marker line), so harden will not overwrite it",
			"move it aside or merge its settings elsewhere, then run harden again"}
	case string(old) == content:
		p.Findings = append(p.Findings, Finding{layer, file + " is in place already"})
		return nil
	}
	verb := "write"
	if err == nil {
		verb = "rewrite"
	}
	p.Changes = append(p.Changes, Change{Layer: layer, What: fmt.Sprintf("%s %s: %s", verb, file, summary),
		file: &fileOp{path: file, content: content, old: old, existed: err == nil}})
	return nil
}

func (p *Plan) planDevice(dev string) error {
	fi, err := os.Lstat(dev)
	if errors.Is(err, fs.ErrNotExist) {
		p.Findings = append(p.Findings, Finding{LayerDevice, dev + " does not exist (kernel older than 6.1, or no devtmpfs): nothing to restrict now; the udev rule applies when it appears"})
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeDevice|fs.ModeCharDevice {
		return &Conflict{dev, 0, fmt.Sprintf("is not a character device but %v", fi.Mode().Type()), "find out who replaced the device node, and restore it (udevadm trigger /sys/class/misc/userfaultfd)"}
	}
	st := fi.Sys().(*syscall.Stat_t)
	mode := fi.Mode().Perm()
	if mode != 0o600 {
		p.Changes = append(p.Changes, Change{Layer: LayerDevice, What: fmt.Sprintf("chmod 0600 %s (now %04o)", dev, mode), do: func() error { return os.Chmod(dev, 0o600) }})
	}
	if st.Uid != 0 || st.Gid != 0 {
		p.Changes = append(p.Changes, Change{Layer: LayerDevice, What: fmt.Sprintf("chown root:root %s (now %d:%d)", dev, st.Uid, st.Gid), do: func() error { return os.Lchown(dev, 0, 0) }})
	}
	if _, err := unix.Lgetxattr(dev, aclAccessKey, nil); err == nil {
		// chmod alone would only mask the ACL's entries; they would come back with
		// the next chmod g+rw.
		p.Changes = append(p.Changes, Change{Layer: LayerDevice, What: "remove the POSIX ACL of " + dev + " (it grants access beyond the mode)", do: func() error { return unix.Lremovexattr(dev, aclAccessKey) }})
	}
	if mode == 0o600 && st.Uid == 0 && st.Gid == 0 {
		if _, err := unix.Lgetxattr(dev, aclAccessKey, nil); err != nil {
			p.Findings = append(p.Findings, Finding{LayerDevice, dev + " is 0600 root:root without an ACL already"})
		}
	}
	return nil
}

func startsWithMarker(b []byte) bool {
	first, _, _ := bytes.Cut(b, []byte("\n"))
	return string(first) == Marker
}

func (p *Plan) planUndo(o Options) error {
	for _, f := range []struct {
		layer Layer
		file  string
	}{{LayerSysctl, filepath.Join(o.path(SysctlDir), SysctlName)}, {LayerDevice, filepath.Join(o.path(UdevDir), UdevName)}} {
		b, err := os.ReadFile(f.file)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			p.Findings = append(p.Findings, Finding{f.layer, f.file + " is not there: nothing to remove"})
			continue
		case err != nil:
			return err
		case !startsWithMarker(b):
			return &Conflict{f.file, 1, "was not written by uffdgate harden (no marker line), so --undo will not remove it", "remove it yourself if it is yours to remove"}
		}
		p.Changes = append(p.Changes, Change{Layer: f.layer, What: "remove " + f.file, file: &fileOp{path: f.file, remove: true, old: b, existed: true}})
	}
	if o.live() && len(p.Changes) > 0 {
		p.Findings = append(p.Findings, Finding{LayerSysctl, "the live value stays 0 until the next boot or `sysctl --system`"},
			Finding{LayerDevice, "the node keeps its mode until the next boot or `udevadm trigger /sys/class/misc/userfaultfd`"})
	}
	return nil
}

// NotCovered is what harden cannot do, said every time.
var NotCovered = []string{
	"root, and any process with CAP_SYS_PTRACE, still gets contexts that handle kernel faults from userfaultfd(); only the BPF LSM gate (`uffdgate run`) refuses them",
	"whoever can open /dev/userfaultfd (root, CAP_DAC_OVERRIDE) still gets such contexts through USERFAULTFD_IOC_NEW with no check, and an open descriptor of the node passed to another process is a capability",
	"a copy of the node made with mknod (the numbers in /sys/class/misc/userfaultfd/dev) grants the same; the mode of /dev/userfaultfd does not cover it",
	"containers: their seccomp profile decides first (`uffdgate seccomp-profile`)",
}

// Apply carries out the plan: first every file, staged next to its target and
// renamed into place, all rolled back if one fails; then the live settings, which
// each check their own result.
func (p *Plan) Apply() error {
	var files []*fileOp
	for _, c := range p.Changes {
		if c.file != nil {
			files = append(files, c.file)
		}
	}
	if err := commitFiles(files); err != nil {
		return err
	}
	for i := range p.Changes {
		if p.Changes[i].file != nil {
			p.Changes[i].Done = true
		}
	}
	for i := range p.Changes {
		c := &p.Changes[i]
		if c.do == nil {
			continue
		}
		if err := c.do(); err != nil {
			return fmt.Errorf("%s: %w", c.What, err)
		}
		c.Done = true
	}
	return nil
}

// commitFiles applies the file operations together: nothing is left changed when
// it returns an error.
func commitFiles(ops []*fileOp) (err error) {
	var createdDirs, temps []string
	var done []*fileOp
	defer func() {
		for _, t := range temps {
			os.Remove(t)
		}
		if err == nil {
			return
		}
		for i := len(done) - 1; i >= 0; i-- {
			op := done[i]
			if op.existed {
				writeAtomic(op.path, op.old) // best effort: the original error is the news
			} else {
				os.Remove(op.path)
			}
		}
		for i := len(createdDirs) - 1; i >= 0; i-- {
			os.Remove(createdDirs[i]) // only if empty
		}
	}()
	staged := make([]string, len(ops))
	for i, op := range ops {
		if op.remove {
			continue
		}
		dirs, err := mkdirAll(filepath.Dir(op.path))
		createdDirs = append(createdDirs, dirs...)
		if err != nil {
			return fmt.Errorf("creating %s: %w", filepath.Dir(op.path), err)
		}
		if staged[i], err = stage(op.path, []byte(op.content)); err != nil {
			return fmt.Errorf("writing %s: %w", op.path, err)
		}
		temps = append(temps, staged[i])
	}
	for i, op := range ops {
		if op.remove {
			err = os.Remove(op.path)
		} else {
			err = rename(staged[i], op.path)
		}
		if err != nil {
			return fmt.Errorf("%s: %w; nothing was changed", op.path, err)
		}
		done = append(done, op)
	}
	return nil
}

// rename is os.Rename; tests make it fail to see the rollback.
var rename = os.Rename

// mkdirAll is os.MkdirAll that reports the directories it created.
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		missing = append(missing, d)
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil {
			return created, err
		}
		created = append(created, missing[i])
	}
	return created, nil
}

// stage writes data to a temporary file next to path, synced, mode 0644.
func stage(path string, data []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

func writeAtomic(path string, data []byte) error {
	tmp, err := stage(path, data)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

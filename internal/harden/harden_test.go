//go:build linux

package harden

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const libvirtDropIn = "/usr/lib/sysctl.d/60-qemu-postcopy-migration.conf"

// tree builds a fixture root: files maps a path to its content, or to "->TARGET"
// for a symlink.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(c, "->"); ok {
			err = os.Symlink(target, full)
		} else {
			err = os.WriteFile(full, []byte(c), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// debian is the sysctl and udev layout of a Debian 12 host with libvirt's QEMU
// driver installed.
func debian() map[string]string {
	return map[string]string{
		"/etc/sysctl.conf":                       "# /etc/sysctl.conf - Configuration file for setting system variables\n#kernel.domainname = example.com\n",
		"/etc/sysctl.d/99-sysctl.conf":           "->../sysctl.conf",
		"/etc/sysctl.d/README.sysctl":            "not a .conf file\nvm.unprivileged_userfaultfd = 1\n",
		"/usr/lib/sysctl.d/50-pid-max.conf":      "kernel.pid_max = 4194304\n",
		libvirtDropIn:                            "# Allow QEMU postcopy migration\nvm.unprivileged_userfaultfd = 1\n",
		"/usr/lib/udev/rules.d/99-systemd.rules": "SUBSYSTEM==\"tty\", KERNEL==\"tty[0-9]*\", TAG+=\"systemd\"\n",
		"/lib":                                   "->usr/lib",
	}
}

// snapshot is every path under root with its mode and content, to prove a run
// changed nothing.
func snapshot(t *testing.T, root string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		l := fmt.Sprintf("%s %v", strings.TrimPrefix(p, root), fi.Mode())
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			l += " " + string(b)
		}
		lines = append(lines, l)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

func run(t *testing.T, o Options) (string, error) {
	t.Helper()
	var b bytes.Buffer
	err := Run(o, &b)
	return b.String(), err
}

func wantLines(t *testing.T, out string, lines ...string) {
	t.Helper()
	for _, l := range lines {
		if !strings.Contains(out, l) {
			t.Errorf("output lacks %q:\n%s", l, out)
		}
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	root := tree(t, debian())
	before := snapshot(t, root)
	out, err := run(t, Options{Root: root, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out,
		"dry run: nothing is changed",
		"would write "+root+"/etc/sysctl.d/zz-uffdgate.conf: vm.unprivileged_userfaultfd = 0, applied after every other drop-in",
		"note: "+root+libvirtDropIn+":2 sets vm.unprivileged_userfaultfd = 1: applied before zz-uffdgate.conf, which overrides it",
		"would write "+root+"/etc/udev/rules.d/99-uffdgate-userfaultfd.rules: mode 0600, owner root:root, final",
		"effect: processes without CAP_SYS_PTRACE get EPERM",
		"note: udev is not installed (no udevadm)",
		"Not covered by these knobs",
		"root, and any process with CAP_SYS_PTRACE, still gets contexts that handle kernel faults",
	)
	if strings.Contains(out, "README.sysctl") {
		t.Errorf("a file without .conf was read as a drop-in:\n%s", out)
	}
	if strings.Count(out, libvirtDropIn) != 1 {
		t.Errorf("the drop-in is reported %d times (/lib is /usr/lib here):\n%s", strings.Count(out, libvirtDropIn), out)
	}
	if after := snapshot(t, root); after != before {
		t.Errorf("dry run changed the tree:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

func TestApplyAndUndo(t *testing.T) {
	root := tree(t, debian())
	before := snapshot(t, root)
	out, err := run(t, Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	sysctlFile, udevFile := root+"/etc/sysctl.d/zz-uffdgate.conf", root+"/etc/udev/rules.d/99-uffdgate-userfaultfd.rules"
	wantLines(t, out, "done: write "+sysctlFile, "done: write "+udevFile)
	for f, want := range map[string]string{sysctlFile: SysctlContent, udevFile: UdevContent} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != want || !strings.HasPrefix(string(b), Marker+"\n") {
			t.Errorf("%s:\n%s\nwant:\n%s", f, b, want)
		}
		if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o644 {
			t.Errorf("%s mode %v", f, fi.Mode())
		}
	}
	if leftovers, _ := filepath.Glob(root + "/etc/*/.*tmp*"); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}

	// Again: in place, nothing to change.
	out, err = run(t, Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, sysctlFile+" is in place already", udevFile+" is in place already", "nothing to change")

	out, err = run(t, Options{Root: root, Undo: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, "would remove "+sysctlFile, "would remove "+udevFile)
	if _, err := os.Stat(sysctlFile); err != nil {
		t.Errorf("dry-run undo removed %s", sysctlFile)
	}

	out, err = run(t, Options{Root: root, Undo: true})
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, "done: remove "+sysctlFile, "done: remove "+udevFile)
	// Only harden's files went; the directory it created for the rule stays, empty.
	os.Remove(root + "/etc/udev/rules.d")
	os.Remove(root + "/etc/udev")
	if after := snapshot(t, root); after != before {
		t.Errorf("apply+undo did not restore the tree:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	out, err = run(t, Options{Root: root, Undo: true})
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, sysctlFile+" is not there: nothing to remove", "nothing to change")
}

func TestRewritesItsOwnOutdatedFile(t *testing.T) {
	files := debian()
	files["/etc/sysctl.d/zz-uffdgate.conf"] = Marker + "\nvm.unprivileged_userfaultfd = 0 # an older version\n"
	root := tree(t, files)
	out, err := run(t, Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, "done: rewrite "+root+"/etc/sysctl.d/zz-uffdgate.conf")
	if b, _ := os.ReadFile(root + "/etc/sysctl.d/zz-uffdgate.conf"); string(b) != SysctlContent {
		t.Errorf("not rewritten: %s", b)
	}
}

func TestSettingsThatDoNotConflict(t *testing.T) {
	files := debian()
	files["/etc/sysctl.d/zzz-late.conf"] = "vm.unprivileged_userfaultfd=0\n"                         // later, but agrees
	files["/etc/sysctl.conf"] = "; comment\n# vm.unprivileged_userfaultfd = 1\nvm.swappiness = 10\n" // commented out
	files["/run/sysctl.d/zz-uffdgate.conf"] = "vm.unprivileged_userfaultfd = 1\n"                    // shadowed by ours in /etc
	files["/usr/lib/udev/rules.d/50-kvm.rules"] = "KERNEL==\"userfaultfd\", GROUP=\"kvm\", MODE=\"0660\"\n"
	files["/usr/bin/udevadm"] = "#!/bin/sh\n"
	root := tree(t, files)
	out, err := run(t, Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "udev is not installed") {
		t.Errorf("udevadm is there:\n%s", out)
	}
	wantLines(t, out,
		root+"/run/sysctl.d/zz-uffdgate.conf is shadowed by "+root+"/etc/sysctl.d/zz-uffdgate.conf",
		root+"/usr/lib/udev/rules.d/50-kvm.rules:1 also concerns userfaultfd: KERNEL==\"userfaultfd\", GROUP=\"kvm\", MODE=\"0660\"")
}

func TestConflictsAreRefusedBeforeAnyChange(t *testing.T) {
	for _, c := range []struct {
		name, file, content string
		want                string // File:Line: message
	}{
		{"later drop-in", "/etc/sysctl.d/zzz-late.conf", "vm.unprivileged_userfaultfd = 1\n",
			"/etc/sysctl.d/zzz-late.conf:1: sets vm.unprivileged_userfaultfd = 1 and is applied after zz-uffdgate.conf"},
		{"later drop-in, slash spelling, ignore-errors prefix", "/usr/local/lib/sysctl.d/zzzz.conf", "# x\n-vm/unprivileged_userfaultfd=2\n",
			"/usr/local/lib/sysctl.d/zzzz.conf:2: sets vm.unprivileged_userfaultfd = 2"},
		{"later drop-in, glob", "/run/sysctl.d/zzzz.conf", "vm.unprivileged_*fd = 1\n",
			"/run/sysctl.d/zzzz.conf:1: sets vm.unprivileged_userfaultfd = 1"},
		{"sysctl.conf, applied last by procps", "/etc/sysctl.conf", "vm.unprivileged_userfaultfd = 1\n",
			"/etc/sysctl.conf:1: sets vm.unprivileged_userfaultfd = 1, and `sysctl --system` applies /etc/sysctl.conf after every drop-in"},
		{"someone else's file in our place", "/etc/sysctl.d/zz-uffdgate.conf", "vm.unprivileged_userfaultfd = 0\n",
			"/etc/sysctl.d/zz-uffdgate.conf:1: exists and was not written by uffdgate harden"},
		{"someone else's udev rule in our place", "/etc/udev/rules.d/99-uffdgate-userfaultfd.rules", "# mine\n",
			"/etc/udev/rules.d/99-uffdgate-userfaultfd.rules:1: exists and was not written by uffdgate harden"},
		{"earlier final udev assignment", "/usr/lib/udev/rules.d/60-open.rules", "# open it\nKERNEL==\"userfaultfd\", MODE:=\"0666\"\n",
			"/usr/lib/udev/rules.d/60-open.rules:2: fixes the mode or owner of /dev/userfaultfd with :="},
	} {
		t.Run(c.name, func(t *testing.T) {
			files := debian()
			files[c.file] = c.content
			root := tree(t, files)
			before := snapshot(t, root)
			_, err := run(t, Options{Root: root})
			var cf *Conflict
			if !errors.As(err, &cf) || !strings.Contains(err.Error(), root+c.want) || cf.Fix == "" {
				t.Fatalf("error %v, want a *Conflict with a fix, containing %q", err, root+c.want)
			}
			if after := snapshot(t, root); after != before {
				t.Errorf("a refused run changed the tree:\n%s", after)
			}
		})
	}
}

func TestUndoRefusesFilesWithoutMarker(t *testing.T) {
	files := debian()
	files["/etc/udev/rules.d/99-uffdgate-userfaultfd.rules"] = UdevContent
	files["/etc/sysctl.d/zz-uffdgate.conf"] = "vm.unprivileged_userfaultfd = 0\n"
	root := tree(t, files)
	before := snapshot(t, root)
	_, err := run(t, Options{Root: root, Undo: true})
	var cf *Conflict
	if !errors.As(err, &cf) || !strings.Contains(err.Error(), "was not written by uffdgate harden (no marker line), so --undo will not remove it") {
		t.Fatalf("error %v", err)
	}
	if after := snapshot(t, root); after != before {
		t.Errorf("refused undo removed something:\n%s", after)
	}
}

// TestFileWritesAreAllOrNothing makes the rename of the second file fail and
// checks the first is rolled back, new or rewritten.
func TestFileWritesAreAllOrNothing(t *testing.T) {
	for _, existing := range []bool{false, true} {
		files := debian()
		if existing {
			files["/etc/sysctl.d/zz-uffdgate.conf"] = Marker + "\nan older version\n"
		}
		root := tree(t, files)
		before := snapshot(t, root)
		renames := 0
		rename = func(old, new string) error {
			if renames++; renames == 2 {
				return errors.New("injected failure")
			}
			return os.Rename(old, new)
		}
		_, err := run(t, Options{Root: root})
		rename = os.Rename
		if err == nil || !strings.Contains(err.Error(), "99-uffdgate-userfaultfd.rules: injected failure; nothing was changed") {
			t.Fatalf("error %v", err)
		}
		if after := snapshot(t, root); after != before {
			t.Errorf("existing=%v: failed run left changes:\nbefore:\n%s\nafter:\n%s", existing, before, after)
		}
	}
}

func TestUnwritablePlaceIsReportedBeforeAnyChange(t *testing.T) {
	files := debian()
	files["/etc/udev"] = "a file where a directory should be\n"
	root := tree(t, files)
	before := snapshot(t, root)
	_, err := run(t, Options{Root: root})
	if err == nil || !strings.Contains(err.Error(), "cannot write "+root+"/etc/udev/rules.d/99-uffdgate-userfaultfd.rules: ") {
		t.Fatalf("error %v", err)
	}
	if after := snapshot(t, root); after != before {
		t.Errorf("failed run left changes:\n%s", after)
	}
}

// posixACL encodes a POSIX access ACL (user::rw-, user:UID:rw-, group::---,
// mask::rw-, other::---) as the kernel's system.posix_acl_access xattr.
func posixACL(uid uint32) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint32(2))
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{{1, 6, ^uint32(0)}, {2, 6, uid}, {4, 0, ^uint32(0)}, {0x10, 6, ^uint32(0)}, {0x20, 0, ^uint32(0)}} {
		binary.Write(&b, binary.LittleEndian, e)
	}
	return b.Bytes()
}

// TestLiveSettings runs the live steps on scratch stand-ins: a file for the sysctl
// (the same writes as /proc/sys) and a real character device node (/dev/null's
// numbers, so the test never makes a second door to userfaultfd).
func TestLiveSettings(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root: it makes a device node and chowns it")
	}
	root := tree(t, debian())
	scratch := t.TempDir()
	proc, dev := filepath.Join(scratch, "unprivileged_userfaultfd"), filepath.Join(scratch, "userfaultfd")
	if err := os.WriteFile(proc, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(dev, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dev, 0o666); err != nil { // past the umask
		t.Fatal(err)
	}
	if err := os.Lchown(dev, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(dev, aclAccessKey, posixACL(1000), 0); err != nil {
		t.Fatalf("setting an ACL on the scratch node: %v", err)
	}
	o := Options{Root: root, Live: true, ProcSysctl: proc, Device: dev}

	dry := o
	dry.DryRun = true
	out, err := run(t, dry)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out,
		"would write 0 to "+proc+" (now 1)",
		"would chmod 0600 "+dev+" (now 0660)", // the ACL mask shows as the group bits
		"would chown root:root "+dev+" (now 65534:65534)",
		"would remove the POSIX ACL of "+dev)
	if b, _ := os.ReadFile(proc); string(b) != "1\n" {
		t.Fatalf("dry run wrote %q", b)
	}

	out, err = run(t, o)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, "done: write 0 to "+proc, "done: chmod 0600 "+dev, "done: chown root:root "+dev, "done: remove the POSIX ACL of "+dev)
	if b, _ := os.ReadFile(proc); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("sysctl stand-in holds %q", b)
	}
	var st unix.Stat_t
	if err := unix.Lstat(dev, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o600 || st.Uid != 0 || st.Gid != 0 {
		t.Errorf("node is %o %d:%d", st.Mode&0o7777, st.Uid, st.Gid)
	}
	if _, err := unix.Lgetxattr(dev, aclAccessKey, nil); !errors.Is(err, unix.ENODATA) {
		t.Errorf("ACL still there: %v", err)
	}
	out, err = run(t, o)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, proc+" is 0 already", dev+" is 0600 root:root without an ACL already", "nothing to change")
}

func TestLiveOddities(t *testing.T) {
	root := tree(t, debian())
	scratch := t.TempDir()
	proc := filepath.Join(scratch, "unprivileged_userfaultfd")
	os.WriteFile(proc, []byte("0\n"), 0o644)

	t.Run("no userfaultfd in the kernel", func(t *testing.T) {
		before := snapshot(t, root)
		out, err := run(t, Options{Root: root, Live: true, ProcSysctl: filepath.Join(scratch, "missing"), Device: filepath.Join(scratch, "dev")})
		if err != nil {
			t.Fatal(err)
		}
		wantLines(t, out, "not applicable: "+scratch+"/missing does not exist: this kernel has no userfaultfd")
		if after := snapshot(t, root); after != before {
			t.Error("wrote files although not applicable")
		}
	})
	t.Run("no device node", func(t *testing.T) {
		out, err := run(t, Options{Root: root, Live: true, DryRun: true, ProcSysctl: proc, Device: filepath.Join(scratch, "dev")})
		if err != nil {
			t.Fatal(err)
		}
		wantLines(t, out, scratch+"/dev does not exist (kernel older than 6.1, or no devtmpfs): nothing to restrict now")
	})
	t.Run("device replaced by a regular file", func(t *testing.T) {
		fake := filepath.Join(scratch, "fake")
		os.WriteFile(fake, nil, 0o666)
		_, err := run(t, Options{Root: root, Live: true, DryRun: true, ProcSysctl: proc, Device: fake})
		var cf *Conflict
		if !errors.As(err, &cf) || !strings.Contains(err.Error(), "is not a character device") {
			t.Fatalf("error %v", err)
		}
	})
}

// TestOrderMatchesSystemdAndProcps checks harden's idea of which drop-in wins
// against the real systemd-sysctl and procps sysctl: in a private mount namespace
// the fixture's directories are mounted over the system's, and both tools say, in
// dry-run mode, what they would apply.
func TestOrderMatchesSystemdAndProcps(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root for a mount namespace")
	}
	for _, tool := range []string{"unshare", "mount", "sysctl", "/usr/lib/systemd/systemd-sysctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s: %v (Debian packages util-linux, mount, procps, systemd)", tool, err)
		}
	}
	// final returns the value each tool ends with for the key, given a tree.
	final := func(t *testing.T, root string) (procps, systemd string) {
		t.Helper()
		var mounts []string
		for _, d := range []string{"/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d"} {
			os.MkdirAll(root+d, 0o755)
			mounts = append(mounts, fmt.Sprintf("mkdir -p %s && mount --bind %s %s", d, root+d, d))
		}
		script := "set -e; mount -t tmpfs none /run; mount -t tmpfs none /usr/local/lib; " + strings.Join(mounts, "; ") +
			fmt.Sprintf("; mount --bind %s /etc/sysctl.conf", root+"/etc/sysctl.conf") +
			"; sysctl --system --dry-run 2>&1; echo ==== ; /usr/lib/systemd/systemd-sysctl --cat-config --no-pager"
		out, err := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		p, s, _ := strings.Cut(string(out), "====")
		last := func(text string) string {
			v := "unset"
			for _, l := range strings.Split(text, "\n") {
				k, val, ok := strings.Cut(l, "=")
				if ok && strings.TrimSpace(k) == SysctlKey {
					v = strings.TrimSpace(val)
				}
			}
			return v
		}
		return last(p), last(s)
	}

	t.Run("harden's file wins over libvirt's", func(t *testing.T) {
		files := debian()
		files["/run/sysctl.d/zz-uffdgate.conf"] = "vm.unprivileged_userfaultfd = 1\n"
		files["/usr/lib/sysctl.d/99-zzz.conf"] = "vm.unprivileged_userfaultfd = 1\n"
		root := tree(t, files)
		if p, s := final(t, root); p != "1" || s != "1" {
			t.Fatalf("before harden: procps %s, systemd %s; the fixture should enable it", p, s)
		}
		if _, err := run(t, Options{Root: root}); err != nil {
			t.Fatal(err)
		}
		if p, s := final(t, root); p != "0" || s != "0" {
			t.Errorf("after harden: procps ends with %s, systemd-sysctl with %s; want 0 and 0", p, s)
		}
	})
	t.Run("the conflicts harden refuses are real", func(t *testing.T) {
		for file, content := range map[string]string{
			"/etc/sysctl.d/zzz-late.conf": "vm.unprivileged_userfaultfd = 1\n",
			"/etc/sysctl.conf":            "vm.unprivileged_userfaultfd = 1\n",
		} {
			files := debian()
			files[file] = content
			files["/etc/sysctl.d/zz-uffdgate.conf"] = SysctlContent // as if harden had not looked
			root := tree(t, files)
			if p, _ := final(t, root); p != "1" {
				t.Errorf("%s: procps ends with %s: harden would refuse a setting that does not win", file, p)
			}
		}
	})
}

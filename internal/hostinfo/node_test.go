//go:build linux && amd64

package hostinfo_test

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/hostinfo"
	. "github.com/uffdgate/uffdgate/internal/hostinfo/hostfixture"
	"github.com/uffdgate/uffdgate/internal/testsubject"
)

func TestDecodeACL(t *testing.T) {
	raw := EncodeACL(UserObj(RW), User(1000, RW), User(64055, R), GroupObj(N), Group(108, RW), Mask(R), Other(N))
	a, err := hostinfo.DecodeACL(raw)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.String(), "user::rw-,user:1000:rw-,user:64055:r--,group::---,group:108:rw-,mask::r--,other::---"; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	if !a.Extended() {
		t.Error("named entries not seen as extended")
	}
	for _, c := range []struct {
		name string
		raw  []byte
		want string
	}{
		{"empty", nil, "shorter than its 4-byte header"},
		{"version", append([]byte{1, 0, 0, 0}, raw[4:]...), "version 1, want 2"},
		{"truncated", raw[:len(raw)-3], "not a multiple of 8"},
		{"unknown tag", EncodeACL(UserObj(RW), hostinfo.ACLEntry{Tag: 0x40}, GroupObj(N), Other(N)), "entry 1: unknown tag 0x40"},
		{"perm bits", EncodeACL(UserObj(8), GroupObj(N), Other(N)), "entry 0 (user): permission bits 0x8 beyond rwx"},
		{"out of order", EncodeACL(GroupObj(N), UserObj(RW), Other(N)), "entry 1 (user): entries out of order"},
		{"repeated user", EncodeACL(UserObj(RW), User(5, R), User(5, R), GroupObj(N), Mask(R), Other(N)), "entry 2: user 5 repeated or out of order"},
		{"two owners", EncodeACL(UserObj(RW), UserObj(RW), GroupObj(N), Other(N)), "entry 1: second user entry"},
		{"no other", EncodeACL(UserObj(RW), GroupObj(N)), "no other entry"},
		{"named without mask", EncodeACL(UserObj(RW), User(5, R), GroupObj(N), Other(N)), "named entries without a mask entry"},
	} {
		if _, err := hostinfo.DecodeACL(c.raw); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}
}

// TestAllowsFixture is the permission check against hand-worked cases.
func TestAllowsFixture(t *testing.T) {
	const dacOverride, dacRead = 1 << 1, 1 << 2
	type probe struct {
		cred hostinfo.Cred
		want hostinfo.Perm // what of rw it may open with
	}
	nobody := hostinfo.Cred{UID: 65534, GID: 65534, InitUserNS: true}
	alice := hostinfo.Cred{UID: 1000, GID: 1000, Groups: []uint32{108}, InitUserNS: true}
	root := hostinfo.Cred{UID: 0, GID: 0, CapEff: AllCaps, InitUserNS: true}
	rootNoDAC := hostinfo.Cred{UID: 0, GID: 0, InitUserNS: true}
	ctrRoot := hostinfo.Cred{UID: 100000, GID: 100000, CapEff: AllCaps, InitUserNS: false,
		UIDMap: hostinfo.IDMap{{Inside: 0, Outside: 100000, Count: 65536}}, GIDMap: hostinfo.IDMap{{Inside: 0, Outside: 100000, Count: 65536}}}
	ctrMapsRoot := ctrRoot
	ctrMapsRoot.UIDMap = hostinfo.IDMap{{Inside: 0, Outside: 0, Count: 1}}
	ctrMapsRoot.GIDMap = hostinfo.IDMap{{Inside: 0, Outside: 0, Count: 1}}
	for _, c := range []struct {
		name   string
		perm   fs.FileMode
		uid    uint32
		gid    uint32
		acl    []byte
		probes []probe
	}{
		{"0600 root", 0o600, 0, 0, nil, []probe{{nobody, N}, {alice, N}, {root, RW}, {rootNoDAC, RW},
			{hostinfo.Cred{UID: 1000, GID: 1000, CapEff: dacOverride, InitUserNS: true}, RW},
			{hostinfo.Cred{UID: 1000, GID: 1000, CapEff: dacRead, InitUserNS: true}, R},
			{ctrRoot, N}, {ctrMapsRoot, RW}}},
		{"0660 root:kvm", 0o660, 0, 108, nil, []probe{{nobody, N}, {alice, RW}}},
		{"0604", 0o604, 0, 0, nil, []probe{{nobody, R}, {alice, R}}},
		{"0666", 0o666, 0, 0, nil, []probe{{nobody, RW}}},
		{"owner class first", 0o066, 1000, 108, nil, []probe{{alice, N}, {nobody, RW}}},
		{"ACL named user, masked", 0o660, 0, 0, EncodeACL(UserObj(RW), User(65534, RW), GroupObj(N), Mask(R), Other(N)),
			[]probe{{nobody, R}, {alice, N}}},
		{"ACL named group", 0o660, 0, 0, EncodeACL(UserObj(RW), GroupObj(N), Group(108, RW), Mask(RW), Other(N)),
			[]probe{{alice, RW}, {nobody, N}}},
		{"ACL group class match denies other", 0o600, 0, 108, EncodeACL(UserObj(RW), GroupObj(N), Mask(RW), Other(RW)),
			[]probe{{alice, N}, {nobody, RW}}},
		{"ACL minimal", 0o600, 0, 0, EncodeACL(UserObj(RW), GroupObj(N), Other(R)), []probe{{nobody, R}}},
	} {
		f := New()
		f.Node("dev/userfaultfd", c.perm, c.uid, c.gid, c.acl)
		n, err := f.Host().Node("dev/userfaultfd")
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		for _, p := range c.probes {
			for _, want := range []hostinfo.Perm{R, W, RW} {
				ok, why := n.Allows(p.cred, want)
				if ok != (p.want&want == want) {
					t.Errorf("%s: uid %d caps %#x wants %s: allowed %v (%s), want %v", c.name, p.cred.UID, p.cred.CapEff, want, ok, why, !ok)
				}
			}
			if ok, _ := n.Opens(p.cred); ok != (p.want != N) {
				t.Errorf("%s: uid %d: Opens %v, want %v", c.name, p.cred.UID, ok, !ok)
			}
		}
	}
}

func TestGrants(t *testing.T) {
	f := New()
	f.Node("dev/userfaultfd", 0o660, 0, 108, EncodeACL(UserObj(RW), User(64055, RW), GroupObj(R), Group(1000, W), Mask(R), Other(N)))
	n, _ := f.Host().Node("dev/userfaultfd")
	var got []string
	for _, g := range n.Grants(f.Host().Names()) {
		got = append(got, g.Who()+" "+g.Perm+" "+g.Via)
	}
	want := "its owner, user root (0) rw- acl|user libvirt-qemu (64055) r-- acl|members of its group kvm (108) r-- acl"
	if strings.Join(got, "|") != want {
		t.Errorf("got  %s\nwant %s", strings.Join(got, "|"), want)
	}
	if n.RootOnly(f.Host().Names()) {
		t.Error("an ACL granting uid 64055 taken for root-only")
	}
	f.Node("dev/userfaultfd", 0o600, 0, 0, nil)
	n, _ = f.Host().Node("dev/userfaultfd")
	if !n.RootOnly(f.Host().Names()) || n.ModeString() != "crw-------" {
		t.Errorf("0600 root:root: root-only %v, mode %s", n.RootOnly(f.Host().Names()), n.ModeString())
	}
}

// TestDACAgainstKernel builds real userfaultfd device nodes with modes, owners
// and ACLs (set through setxattr, which validates the encoding), reads them back
// through Host.Node, and has a real process with other credentials open them:
// each open(2) result must be what Node.Allows predicts, and whichever mode
// opens must give a kernel-fault context through USERFAULTFD_IOC_NEW, with no
// capability: read or write access alone is enough.
func TestDACAgainstKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mknod and starting subjects as other uids need root")
	}
	h := hostinfo.Live()
	minor, ok := h.MiscMinor("userfaultfd")
	if !ok {
		t.Fatal("no userfaultfd in /proc/misc")
	}
	// The subjects must reach the nodes: t.TempDir's parent is 0700.
	dir, err := os.MkdirTemp("", "uffdgate-dac-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const group = 4242
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}
	inGroup := &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{group}}
	for i, c := range []struct {
		name    string
		perm    uint32
		uid     uint32
		gid     uint32
		acl     []byte
		cred    *syscall.Credential
		ambient []uintptr
	}{
		{"0600 root", 0o600, 0, 0, nil, nobody, nil},
		{"0604 read only", 0o604, 0, 0, nil, nobody, nil},
		{"0602 write only", 0o602, 0, 0, nil, nobody, nil},
		{"0660 group", 0o660, 0, group, nil, inGroup, nil},
		{"owner with nothing", 0o066, 65534, 0, nil, nobody, nil},
		{"ACL user read", 0o600, 0, 0, EncodeACL(UserObj(RW), User(65534, R), GroupObj(N), Mask(R), Other(N)), nobody, nil},
		{"ACL user masked", 0o600, 0, 0, EncodeACL(UserObj(RW), User(65534, RW), GroupObj(N), Mask(W), Other(N)), nobody, nil},
		{"ACL group", 0o600, 0, 0, EncodeACL(UserObj(RW), GroupObj(N), Group(group, RW), Mask(RW), Other(N)), inGroup, nil},
		{"CAP_DAC_OVERRIDE", 0o600, 0, 0, nil, nobody, []uintptr{unix.CAP_DAC_OVERRIDE}},
		{"CAP_DAC_READ_SEARCH", 0o600, 0, 0, nil, nobody, []uintptr{unix.CAP_DAC_READ_SEARCH}},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, "uffd"+string(rune('a'+i)))
			if err := unix.Mknod(path, unix.S_IFCHR|0o600, int(unix.Mkdev(10, minor))); err != nil {
				t.Fatalf("mknod: %v", err)
			}
			if err := os.Chown(path, int(c.uid), int(c.gid)); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, fs.FileMode(c.perm)); err != nil {
				t.Fatal(err)
			}
			if c.acl != nil {
				if err := unix.Setxattr(path, hostinfo.ACLXattr, c.acl, 0); err != nil {
					t.Fatalf("the kernel refuses the ACL: %v", err)
				}
			}
			n, err := h.Node(strings.TrimPrefix(path, "/"))
			if err != nil {
				t.Fatal(err)
			}
			if c.acl != nil && (n.ACL == nil || string(EncodeACL(n.ACL.Entries...)) != string(c.acl)) {
				t.Fatalf("ACL read back as %v", n.ACL)
			}
			if !n.CharDev || n.Major != 10 || n.Minor != minor || n.UID != c.uid || n.GID != c.gid {
				t.Fatalf("node read back as %+v", n)
			}
			sub := testsubject.Start(t, testsubject.Spec{Cred: c.cred, AmbientCaps: c.ambient, Action: "open", Arg: path})
			var got testsubject.Opens
			if err := json.Unmarshal(sub.Result, &got); err != nil {
				t.Fatal(err)
			}
			var caps uint64
			for _, a := range c.ambient {
				caps |= 1 << a
			}
			cred := hostinfo.Cred{UID: c.cred.Uid, GID: c.cred.Gid, Groups: c.cred.Groups, CapEff: caps, InitUserNS: true}
			anyOpened := false
			for _, m := range []struct {
				perm  hostinfo.Perm
				errno int
			}{{R, got.Read}, {W, got.Write}, {RW, got.ReadWrite}} {
				ok, why := n.Allows(cred, m.perm)
				if ok != (m.errno == 0) {
					t.Errorf("open for %s: errno %d, model says allowed=%v (%s)", m.perm, m.errno, ok, why)
				}
				if m.errno != 0 && m.errno != int(unix.EACCES) {
					t.Errorf("open for %s: errno %d, want 0 or EACCES", m.perm, m.errno)
				}
				anyOpened = anyOpened || m.errno == 0
			}
			if opens, _ := n.Opens(cred); opens != anyOpened {
				t.Errorf("Opens = %v, but some mode opened: %v", opens, anyOpened)
			}
			if anyOpened && got.IoctlNew != 0 {
				t.Errorf("USERFAULTFD_IOC_NEW(0) on the fd that opened: errno %d, want a kernel-fault context", got.IoctlNew)
			}
		})
	}
}

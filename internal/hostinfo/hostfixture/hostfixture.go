// Package hostfixture builds fixture hosts for tests: a testing/fstest.MapFS
// laid out like "/" (proc, sys, etc, dev) and an xattr map, with helpers for
// processes, device nodes and ACLs.
package hostfixture

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"syscall"
	"testing/fstest"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/hostinfo"
)

// InitNS is the initial user namespace's link in fixtures.
const InitNS = "user:[4026531837]"

// SelfMnt is the auditing process's mount namespace in fixtures.
const SelfMnt = "mnt:[4026531841]"

// Host is a fixture host.
type Host struct {
	FS fstest.MapFS
	X  hostinfo.MapXattrs
}

// New is a Debian-like host: userfaultfd compiled in, sysctl 0, /dev/userfaultfd
// 0600 root:root, BTF, LSMs lockdown,capability,landlock,bpf, pid 1 in the
// initial user namespace.
func New() *Host {
	h := &Host{FS: fstest.MapFS{}, X: hostinfo.MapXattrs{}}
	h.File("proc/sys/kernel/osrelease", "6.12.0-fixture\n")
	h.File("proc/sys/vm/unprivileged_userfaultfd", "0\n")
	h.File("proc/cmdline", "BOOT_IMAGE=/vmlinuz root=/dev/vda ro quiet\n")
	h.File("proc/misc", "257 userfaultfd\n183 hw_random\n")
	h.File("proc/self/uid_map", "         0          0 4294967295\n")
	h.Link("proc/self/ns/user", InitNS)
	h.Link("proc/self/ns/mnt", SelfMnt)
	h.File("proc/self/mountinfo", "25 1 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw\n")
	h.Dir("sys/fs/cgroup", 1)
	h.File("sys/kernel/security/lsm", "lockdown,capability,landlock,bpf")
	h.File("sys/kernel/btf/vmlinux", "BTF")
	h.File("etc/passwd", "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\nlibvirt-qemu:x:64055:108::/var/lib/libvirt:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
	h.File("etc/group", "root:x:0:\nkvm:x:108:alice,libvirt-qemu\nalice:x:1000:\nnogroup:x:65534:\n")
	h.Node(hostinfo.DeviceName, 0o600, 0, 0, nil)
	h.AddProc(Proc{PID: 1, Name: "systemd", CapEff: AllCaps, Exe: "/usr/lib/systemd/systemd"})
	return h
}

// Host is the hostinfo view of the fixture.
func (h *Host) Host() hostinfo.Host { return hostinfo.Host{FS: h.FS, Xattr: h.X} }

// File adds a regular file.
func (h *Host) File(name, data string) { h.FS[name] = &fstest.MapFile{Data: []byte(data), Mode: 0o644} }

// Link adds a symlink.
func (h *Host) Link(name, target string) {
	h.FS[name] = &fstest.MapFile{Data: []byte(target), Mode: fs.ModeSymlink | 0o777}
}

// Dir adds a directory with an inode number (cgroup ids).
func (h *Host) Dir(name string, ino uint64) {
	h.FS[name] = &fstest.MapFile{Mode: fs.ModeDir | 0o755, Sys: &syscall.Stat_t{Ino: ino, Mode: syscall.S_IFDIR | 0o755}}
}

// Exe adds an executable file with an identity.
func (h *Host) Exe(name string, dev, ino uint64) {
	h.FS[name] = &fstest.MapFile{Data: []byte("ELF"), Mode: 0o755, Sys: &syscall.Stat_t{Dev: dev, Ino: ino, Mode: syscall.S_IFREG | 0o755}}
}

// Node adds a character device 10:257 with mode, owner and an optional ACL
// xattr (EncodeACL).
func (h *Host) Node(name string, perm fs.FileMode, uid, gid uint32, acl []byte) {
	h.FS[name] = &fstest.MapFile{Mode: fs.ModeDevice | fs.ModeCharDevice | perm,
		Sys: &syscall.Stat_t{Uid: uid, Gid: gid, Mode: syscall.S_IFCHR | uint32(perm), Rdev: unix.Mkdev(10, 257), Ino: 1000 + uint64(len(h.FS))}}
	if acl != nil {
		h.X[name] = map[string][]byte{hostinfo.ACLXattr: acl}
	} else {
		delete(h.X, name)
	}
}

// AllCaps is every capability up to CAP_CHECKPOINT_RESTORE.
const AllCaps = uint64(1)<<41 - 1

// Proc describes a fixture process.
type Proc struct {
	PID        int
	Name       string
	UID, GID   int
	Groups     []int
	CapEff     uint64
	Seccomp    int // 0, 1, 2
	Filters    int
	NoNewPrivs bool
	Exe        string // absolute path; "" for none (kernel thread)
	ExeFile    string // FS name of the executable file the exe link resolves to
	Cgroup     string // "" for "/"
	UserNS     string // "" for InitNS
	UIDMap     string // "" for the identity map
	MntNS      string // "" for SelfMnt
	UffdFDs    []int
	Kthread    bool
	Zombie     bool
	NSpid      []int
	// ThreadCapEff adds a second thread with these effective capabilities.
	ThreadCapEff *uint64
}

// Status renders /proc/PID/status like Linux 6.x.
func (p Proc) Status() string {
	var b strings.Builder
	st := "S (sleeping)"
	if p.Zombie {
		st = "Z (zombie)"
	}
	nspid := strconv.Itoa(p.PID)
	if p.NSpid != nil {
		nspid = strings.Trim(fmt.Sprint(p.NSpid), "[]")
		nspid = strings.ReplaceAll(nspid, " ", "\t")
	}
	groups := strings.Trim(fmt.Sprint(p.Groups), "[]")
	kt := 0
	if p.Kthread {
		kt = 1
	}
	nnp := 0
	if p.NoNewPrivs {
		nnp = 1
	}
	fmt.Fprintf(&b, "Name:\t%s\nUmask:\t0022\nState:\t%s\nTgid:\t%d\nNgid:\t0\nPid:\t%d\nPPid:\t1\nTracerPid:\t0\n", p.Name, st, p.PID, p.PID)
	fmt.Fprintf(&b, "Uid:\t%d\t%d\t%d\t%d\nGid:\t%d\t%d\t%d\t%d\nFDSize:\t64\nGroups:\t%s \n", p.UID, p.UID, p.UID, p.UID, p.GID, p.GID, p.GID, p.GID, groups)
	fmt.Fprintf(&b, "NStgid:\t%s\nNSpid:\t%s\nNSpgid:\t%d\nNSsid:\t%d\nKthread:\t%d\n", nspid, nspid, p.PID, p.PID, kt)
	if !p.Kthread && !p.Zombie {
		b.WriteString("VmPeak:\t   10000 kB\nVmSize:\t   10000 kB\nVmRSS:\t    5000 kB\n")
	}
	fmt.Fprintf(&b, "Threads:\t1\nSigQ:\t0/63530\nCapInh:\t0000000000000000\nCapPrm:\t%016x\nCapEff:\t%016x\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\n", p.CapEff, p.CapEff)
	fmt.Fprintf(&b, "NoNewPrivs:\t%d\nSeccomp:\t%d\nSeccomp_filters:\t%d\nSpeculation_Store_Bypass:\tthread vulnerable\n", nnp, p.Seccomp, p.Filters)
	return b.String()
}

// AddProc adds a process's /proc entries.
func (h *Host) AddProc(p Proc) {
	d := "proc/" + strconv.Itoa(p.PID)
	h.File(d+"/status", p.Status())
	h.File(d+"/task/"+strconv.Itoa(p.PID)+"/status", p.Status())
	if p.ThreadCapEff != nil {
		t := p
		t.CapEff = *p.ThreadCapEff
		h.File(d+"/task/"+strconv.Itoa(p.PID+1)+"/status", t.Status())
	}
	if p.Kthread {
		return
	}
	if p.Exe != "" {
		if p.ExeFile != "" {
			// Relative, so that MapFS follows it as the kernel follows the
			// magic link.
			h.Link(d+"/exe", "../../"+p.ExeFile)
		} else {
			h.Link(d+"/exe", p.Exe)
		}
	}
	cg := p.Cgroup
	if cg == "" {
		cg = "/"
	}
	h.File(d+"/cgroup", "0::"+cg+"\n")
	ns := p.UserNS
	if ns == "" {
		ns = InitNS
	}
	h.Link(d+"/ns/user", ns)
	mnt := p.MntNS
	if mnt == "" {
		mnt = SelfMnt
	}
	h.Link(d+"/ns/mnt", mnt)
	um := p.UIDMap
	if um == "" {
		um = "         0          0 4294967295\n"
	}
	h.File(d+"/uid_map", um)
	h.File(d+"/gid_map", um)
	h.FS[d+"/fd"] = &fstest.MapFile{Mode: fs.ModeDir | 0o500}
	h.Link(d+"/fd/0", "/dev/null")
	for _, fd := range p.UffdFDs {
		h.Link(d+"/fd/"+strconv.Itoa(fd), hostinfo.UffdLink)
	}
}

// ACL entries in fixtures.
func UserObj(p hostinfo.Perm) hostinfo.ACLEntry { return e(hostinfo.TagUserObj, p, 0xffffffff) }

// User is a named user entry.
func User(id uint32, p hostinfo.Perm) hostinfo.ACLEntry { return e(hostinfo.TagUser, p, id) }

// GroupObj is the owning group entry.
func GroupObj(p hostinfo.Perm) hostinfo.ACLEntry { return e(hostinfo.TagGroupObj, p, 0xffffffff) }

// Group is a named group entry.
func Group(id uint32, p hostinfo.Perm) hostinfo.ACLEntry { return e(hostinfo.TagGroup, p, id) }

// Mask is the mask entry.
func Mask(p hostinfo.Perm) hostinfo.ACLEntry { return e(hostinfo.TagMask, p, 0xffffffff) }

// Other is the other entry.
func Other(p hostinfo.Perm) hostinfo.ACLEntry { return e(hostinfo.TagOther, p, 0xffffffff) }

func e(t hostinfo.ACLTag, p hostinfo.Perm, id uint32) hostinfo.ACLEntry {
	return hostinfo.ACLEntry{Tag: t, Perm: p, ID: id}
}

// EncodeACL is the system.posix_acl_access xattr for entries, in the order
// given (the kernel wants them sorted by tag, then id).
func EncodeACL(entries ...hostinfo.ACLEntry) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, x := range entries {
		b = binary.LittleEndian.AppendUint16(b, uint16(x.Tag))
		b = binary.LittleEndian.AppendUint16(b, uint16(x.Perm))
		b = binary.LittleEndian.AppendUint32(b, x.ID)
	}
	return b
}

// RW and friends are permission shorthands.
const (
	R  = hostinfo.PermRead
	W  = hostinfo.PermWrite
	RW = hostinfo.PermRead | hostinfo.PermWrite
	N  = hostinfo.Perm(0)
)

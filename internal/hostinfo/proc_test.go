//go:build linux && amd64

package hostinfo_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/hostinfo"
	"github.com/uffdgate/uffdgate/internal/hostinfo/hostfixture"
	"github.com/uffdgate/uffdgate/internal/testsubject"
	"github.com/uffdgate/uffdgate/internal/uffd"
)

func TestMain(m *testing.M) { os.Exit(testsubject.Run(m)) }

// A /proc/PID/status of Linux 6.18, verbatim but for the name.
const realStatus = `Name:	qemu-system-x86
Umask:	0022
State:	S (sleeping)
Tgid:	4242
Ngid:	0
Pid:	4242
PPid:	1
TracerPid:	0
Uid:	64055	64055	64055	64055
Gid:	108	108	108	109
FDSize:	256
Groups:	108 36 
NStgid:	4242	7
NSpid:	4242	7
NSpgid:	4242	7
NSsid:	4242	7
Kthread:	0
VmPeak:	 4221784 kB
VmSize:	 4221784 kB
Threads:	5
SigQ:	0/63530
SigPnd:	0000000000000000
CapInh:	0000000000000000
CapPrm:	0000000000080000
CapEff:	0000000000080000
CapBnd:	000001ffffffffff
CapAmb:	0000000000000000
NoNewPrivs:	1
Seccomp:	2
Seccomp_filters:	3
Speculation_Store_Bypass:	thread vulnerable
Cpus_allowed_list:	0-1
`

func TestParseStatus(t *testing.T) {
	s, err := hostinfo.ParseStatus("status", []byte(realStatus))
	if err != nil {
		t.Fatal(err)
	}
	want := hostinfo.Status{
		Name: "qemu-system-x86", State: "S", UID: [4]int{64055, 64055, 64055, 64055}, GID: [4]int{108, 108, 108, 109},
		Groups: []int{108, 36}, NSpid: []int{4242, 7}, CapPrm: 1 << 19, CapEff: 1 << 19, NoNewPrivs: true,
		Seccomp: 2, SeccompFilters: 3, HasMM: true,
	}
	if !statusEqual(s, want) {
		t.Errorf("got %+v\nwant %+v", s, want)
	}
}

func statusEqual(a, b hostinfo.Status) bool {
	return a.Name == b.Name && a.State == b.State && a.Kthread == b.Kthread && a.UID == b.UID && a.GID == b.GID &&
		slices.Equal(a.Groups, b.Groups) && slices.Equal(a.NSpid, b.NSpid) && a.CapPrm == b.CapPrm && a.CapEff == b.CapEff &&
		a.NoNewPrivs == b.NoNewPrivs && a.Seccomp == b.Seccomp && a.SeccompFilters == b.SeccompFilters && a.HasMM == b.HasMM
}

// TestParseStatusErrors: malformed input is refused with the line and field.
func TestParseStatusErrors(t *testing.T) {
	for _, c := range []struct{ edit, from, to, want string }{
		{"bad uid count", "Uid:\t64055\t64055\t64055\t64055", "Uid:\t1\t2", "status:9: Uid: bad id list"},
		{"bad uid", "Uid:\t64055\t64055", "Uid:\tx\t64055", "status:9: Uid: bad id list"},
		{"bad cap mask", "CapEff:\t0000000000080000", "CapEff:\tzz", "status:25: CapEff: bad capability mask"},
		{"bad seccomp", "Seccomp:\t2", "Seccomp:\t7", "status:29: Seccomp: bad seccomp mode"},
		{"no CapEff", "CapEff:\t0000000000080000\n", "", "no CapEff line"},
		{"bad groups", "Groups:\t108 36", "Groups:\t108 x", "status:12: Groups: bad group list"},
	} {
		txt := strings.Replace(realStatus, c.from, c.to, 1)
		if txt == realStatus {
			t.Fatalf("%s: edit did not apply", c.edit)
		}
		_, err := hostinfo.ParseStatus("status", []byte(txt))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.edit, err, c.want)
		}
	}
}

func TestParseIDMap(t *testing.T) {
	m, err := hostinfo.ParseIDMap("uid_map", []byte("         0     100000      65536\n     65536     300000         10\n"))
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[uint64]bool{0: false, 99999: false, 100000: true, 165535: true, 165536: false, 300009: true, 300010: false} {
		if m.MapsOutside(id) != want {
			t.Errorf("MapsOutside(%d) = %v, want %v", id, !want, want)
		}
	}
	if m.IsIdentity() {
		t.Error("a container's map taken for the identity map")
	}
	id, _ := hostinfo.ParseIDMap("uid_map", []byte("         0          0 4294967295\n"))
	if !id.IsIdentity() {
		t.Error("the initial namespace's map not recognised")
	}
	for _, bad := range []string{"0 0\n", "0 0 x\n", "0 0 4294967296\n"} {
		if _, err := hostinfo.ParseIDMap("uid_map", []byte(bad)); err == nil || !strings.Contains(err.Error(), "uid_map:1") {
			t.Errorf("%q: error %v, want one naming uid_map:1", bad, err)
		}
	}
}

func TestProcessFixture(t *testing.T) {
	f := hostfixture.New()
	threadCaps := uint64(0)
	f.AddProc(hostfixture.Proc{PID: 100, Name: "qemu", UID: 64055, GID: 108, Groups: []int{108}, CapEff: 0,
		Exe: "/usr/bin/qemu-system-x86_64", Cgroup: "/machine.slice/vm1.scope", UffdFDs: []int{7, 9}, Seccomp: 2, Filters: 1})
	f.AddProc(hostfixture.Proc{PID: 200, Name: "ctr", UID: 0, CapEff: hostfixture.AllCaps, Exe: "/bin/sh",
		UserNS: "user:[4026532999]", UIDMap: "0 100000 65536\n", NSpid: []int{200, 1}, ThreadCapEff: &threadCaps})
	f.AddProc(hostfixture.Proc{PID: 2, Name: "kthreadd", Kthread: true})
	f.AddProc(hostfixture.Proc{PID: 300, Name: "dead", Zombie: true, Exe: "/bin/true"})
	h := f.Host()

	pids, err := h.PIDs()
	if err != nil || !slices.Equal(pids, []int{1, 2, 100, 200, 300}) {
		t.Fatalf("PIDs = %v, %v", pids, err)
	}
	initNS, err := h.InitUserNS()
	if err != nil || initNS != hostfixture.InitNS {
		t.Fatalf("InitUserNS = %q, %v", initNS, err)
	}
	q, err := h.Process(100, initNS)
	if err != nil {
		t.Fatal(err)
	}
	if q.Exe != "/usr/bin/qemu-system-x86_64" || q.Cgroup != "/machine.slice/vm1.scope" || !q.CgroupV2 ||
		!slices.Equal(q.UffdFDs, []int{7, 9}) || !q.InitUserNS || !q.UserNSKnown || !q.IsUserProcess() ||
		q.Status.Seccomp != 2 || q.Status.SeccompFilters != 1 || len(q.DivergentThreads) != 0 {
		t.Errorf("qemu: %+v", q)
	}
	c, err := h.Process(200, initNS)
	if err != nil {
		t.Fatal(err)
	}
	if c.InitUserNS || !c.UserNSKnown || !slices.Equal(c.DivergentThreads, []int{201}) || !c.UIDMap.MapsOutside(100000) {
		t.Errorf("container root: %+v", c)
	}
	if s, _ := h.SubjectOf(c); s.HasCap(19) {
		t.Error("capabilities of a child user namespace counted as the initial namespace's")
	}
	for _, pid := range []int{2, 300} {
		p, err := h.Process(pid, initNS)
		if err != nil || p.IsUserProcess() {
			t.Errorf("pid %d: %v, user process %v: kernel threads and zombies create nothing", pid, err, p.IsUserProcess())
		}
	}
	if _, err := h.Process(4711, initNS); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing pid: %v, want ErrNotExist", err)
	}
}

// TestInitUserNSFallback: with pid 1 out of reach, this process's namespace is
// the initial one if its uid_map is the identity map, and nothing otherwise.
func TestInitUserNSFallback(t *testing.T) {
	f := hostfixture.New()
	delete(f.FS, "proc/1/ns/user")
	if ns, err := f.Host().InitUserNS(); err != nil || ns != hostfixture.InitNS {
		t.Errorf("fallback: %q, %v", ns, err)
	}
	f.File("proc/self/uid_map", "0 1000 1\n")
	if ns, err := f.Host().InitUserNS(); err == nil {
		t.Errorf("inside a user namespace, %q taken for the initial one", ns)
	}
}

// TestProcessLive reads this very process and checks it against the syscalls.
func TestProcessLive(t *testing.T) {
	h := hostinfo.Live()
	fd, err := uffd.Syscall(decision.UserModeOnly | decision.CloseOnExec)
	if err != nil {
		t.Fatal(err)
	}
	initNS, err := h.InitUserNS()
	if err != nil {
		t.Fatal(err)
	}
	p, err := h.Process(os.Getpid(), initNS)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	if !slices.Contains(p.UffdFDs, fd) {
		t.Errorf("context fd %d not among the userfaultfd fds %v", fd, p.UffdFDs)
	}
	if p.Status.UID[1] != os.Geteuid() || p.Status.GID[1] != os.Getegid() {
		t.Errorf("uid/gid %v/%v, want %d/%d", p.Status.UID, p.Status.GID, os.Geteuid(), os.Getegid())
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		t.Fatal(err)
	}
	if want := uint64(data[0].Effective) | uint64(data[1].Effective)<<32; p.Status.CapEff != want {
		t.Errorf("CapEff %#x, capget says %#x", p.Status.CapEff, want)
	}
	self, _ := os.Executable()
	if real, _ := filepath.EvalSymlinks(self); p.Exe != real && p.Exe != self {
		t.Errorf("exe %q, want %q", p.Exe, self)
	}
	uidMap, _ := os.ReadFile("/proc/self/uid_map")
	m, _ := hostinfo.ParseIDMap("uid_map", uidMap)
	if p.InitUserNS != m.IsIdentity() {
		t.Errorf("InitUserNS %v, but the uid_map identity test says %v", p.InitUserNS, m.IsIdentity())
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		t.Fatal(err)
	}
	s, notes := h.SubjectOf(p)
	if !s.HasExe || s.Exe.Ino != st.Ino || s.Exe.Dev != decision.KernelDev(st.Dev) {
		t.Errorf("subject exe %+v (notes %v), want ino %d", s.Exe, notes, st.Ino)
	}
	// The context is gone once closed.
	p, _ = h.Process(os.Getpid(), initNS)
	if slices.Contains(p.UffdFDs, fd) {
		t.Errorf("closed context fd %d still listed", fd)
	}
}

// TestProcessLiveSubject reads a real child with other credentials.
func TestProcessLiveSubject(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("starting a subject as another uid needs root")
	}
	sub := testsubject.Start(t, testsubject.Spec{Cred: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{4242}}, Action: "hold"})
	h := hostinfo.Live()
	initNS, _ := h.InitUserNS()
	p, err := h.Process(sub.PID, initNS)
	if err != nil {
		t.Fatal(err)
	}
	if p.Status.UID != [4]int{65534, 65534, 65534, 65534} || p.Status.CapEff != 0 || !slices.Equal(p.Status.Groups, []int{4242}) || len(p.UffdFDs) != 1 {
		t.Errorf("subject as nobody holding one context: %+v", p)
	}
}

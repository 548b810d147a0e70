//go:build linux

// Package gate loads, configures and attaches the BPF LSM program that decides
// userfaultfd context creation, and reads its events and counters.
package gate

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/uffdgate/uffdgate/internal/decision"
	"github.com/uffdgate/uffdgate/internal/events"
	"github.com/uffdgate/uffdgate/internal/uffd"
)

const configMagic = 0x75666667 // must match CONFIG_MAGIC in gate.bpf.c

// Gate is the loaded BPF side.
type Gate struct {
	backend  Backend
	kill     bool
	burst    uint32
	maps     gateMaps
	prog     *ebpf.Program
	identify *ebpf.Program
	link     link.Link
	events   *ringbuf.Reader
	gen      uint32 // policy generation in force
	tracker  tracker
	closed   bool
}

// tracker is the exec tracker: what executable rules judge a task by (see
// exec_ids in gate.bpf.c). Attached when a policy first has executable rules,
// detached at Close; records that miss an exec meanwhile are invalid anyway.
type tracker struct {
	exec, fork *ebpf.Program
	links      []link.Link
	pinned     string // where the records are pinned; "" when they die with the daemon
	pinNote    string // why they are not pinned
}

// Backend is how the gate sees requests.
type Backend uint8

const (
	// LSM decides in the inode_init_security_anon hook and can refuse.
	LSM Backend = iota
	// Audit sees successful creations at syscall exit (raw tracepoint): it runs
	// where LSM programs cannot, cannot refuse, and taxes every syscall.
	Audit
)

func (b Backend) String() string {
	if b == Audit {
		return "audit"
	}
	return "lsm"
}

// Options are the knobs of Load beyond the policy.
type Options struct {
	Backend Backend
	// Kill makes the audit backend SIGKILL a process whose request the policy
	// would refuse (after the context exists: much weaker than refusing).
	Kill bool
	// EventBurst is how many events per executable and verdict the kernel sends
	// each second before it only counts them (DefaultEventBurst when 0).
	EventBurst uint32
	// PinDir is the bpffs directory where the exec records are pinned, so that
	// they outlive the daemon: without them every process running at a restart
	// would match no executable rule until it execs again. "" keeps them
	// unpinned. DefaultPinDir is the usual place.
	PinDir string
}

// DefaultPinDir is where `uffdgate run` pins the exec records.
const DefaultPinDir = "/sys/fs/bpf/uffdgate"

// DefaultEventBurst bounds what one program's flood of requests can push
// through the ring buffer, so that it cannot crowd out another's.
const DefaultEventBurst = 20

// UserBurstFactor: a user's events per second and verdict, all its executables
// together, are at most this many bursts (a user can copy a program as often as
// it likes; it stays one user).
const UserBurstFactor = 5

// ErrKernelRefused means the kernel would not load or attach the LSM program even
// though the caller is privileged.
var ErrKernelRefused = errors.New("the kernel refused the BPF LSM program")

// Load loads the programs and maps; nothing is attached and no policy is
// written yet (Apply).
func Load(o Options) (*Gate, error) {
	_ = rlimit.RemoveMemlock() // only matters before 5.11; failure shows up at load
	spec, err := loadGate()
	if err != nil {
		return nil, fmt.Errorf("reading the embedded BPF objects: %w", err)
	}
	var maps gateMaps
	var prog, identify *ebpf.Program
	var identifyTgid *ebpf.Variable
	var trk tracker
	opts := &ebpf.CollectionOptions{}
	if o.PinDir != "" {
		if err := preparePinDir(o.PinDir); err != nil {
			trk.pinNote = err.Error()
		} else {
			spec.Maps["exec_ids"].Pinning = ebpf.PinByName
			opts.Maps.PinPath = o.PinDir
			trk.pinned = o.PinDir
		}
	}
	loadAndAssign := func(objs any) error {
		err := spec.LoadAndAssign(objs, opts)
		if errors.Is(err, ebpf.ErrMapIncompatible) && trk.pinned != "" {
			// Left by another version of uffdgate: start afresh (its records are
			// lost, so running processes match no executable rule until they exec).
			os.Remove(filepath.Join(trk.pinned, "exec_ids"))
			trk.pinNote = "the pinned exec records were left by an incompatible uffdgate and were replaced"
			err = spec.LoadAndAssign(objs, opts)
		}
		return err
	}
	// Only the backend's program is loaded (LoadAndAssign loads what it is
	// given), under one name: the other may be refused by this kernel.
	backendProg := "uffdgate_anon_inode"
	if o.Backend == Audit {
		backendProg = "uffdgate_sys_exit"
	}
	spec.Programs["uffdgate_backend"] = spec.Programs[backendProg]
	var objs struct {
		gateMaps
		Prog         *ebpf.Program  `ebpf:"uffdgate_backend"`
		TrackExec    *ebpf.Program  `ebpf:"uffdgate_track_exec"`
		TrackFork    *ebpf.Program  `ebpf:"uffdgate_track_fork"`
		Identify     *ebpf.Program  `ebpf:"uffdgate_identify"`
		IdentifyTgid *ebpf.Variable `ebpf:"identify_tgid"`
	}
	err = loadAndAssign(&objs)
	maps, prog, trk.exec, trk.fork = objs.gateMaps, objs.Prog, objs.TrackExec, objs.TrackFork
	identify, identifyTgid = objs.Identify, objs.IdentifyTgid
	if err != nil {
		return nil, explainLoad(err)
	}
	if err := identifyTgid.Set(uint32(os.Getpid())); err != nil {
		maps.Close()
		return nil, fmt.Errorf("configuring the identity iterator: %w", err)
	}
	return &Gate{backend: o.Backend, kill: o.Kill, burst: cmp.Or(o.EventBurst, DefaultEventBurst), maps: maps, prog: prog,
		identify: identify, tracker: trk}, nil
}

// Identify is the kernel's identity of the file open at fd in this process:
// the device and inode numbers the gate sees (s_dev, which stat's st_dev is not
// on every file system) and the inode's generation, which user space cannot
// read everywhere. Executable rules match on all three.
func (gt *Gate) Identify(fd int) (decision.FileID, error) {
	it, err := link.AttachIter(link.IterOptions{Program: gt.identify})
	if err != nil {
		return decision.FileID{}, fmt.Errorf("identifying a file: attaching the iterator: %w", err)
	}
	defer it.Close()
	rd, err := it.Open()
	if err != nil {
		return decision.FileID{}, fmt.Errorf("identifying a file: %w", err)
	}
	defer rd.Close()
	var rec gateFileIdent
	for {
		if err := binary.Read(rd, binary.LittleEndian, &rec); err != nil {
			if errors.Is(err, io.EOF) {
				return decision.FileID{}, fmt.Errorf("identifying a file: descriptor %d not found among this process's files", fd)
			}
			return decision.FileID{}, fmt.Errorf("identifying a file: %w", err)
		}
		if int(rec.Fd) == fd {
			return decision.FileID{Dev: rec.Dev, Ino: rec.Ino, Gen: rec.Igen}, nil
		}
	}
}

func explainLoad(err error) error {
	var ve *ebpf.VerifierError
	switch {
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		// The errno alone: cilium/ebpf's wrapping suggests MEMLOCK, which is not it.
		errno := unix.EPERM
		if errors.Is(err, unix.EACCES) {
			errno = unix.EACCES
		}
		return fmt.Errorf("%w: loading it failed with %v although uffdgate runs privileged; "+
			"some kernels (lockdown, vendor patches, or a security module restricting bpf()) refuse LSM programs: "+
			"check `cat /sys/kernel/security/lockdown` and dmesg; on such a host use a kernel that allows BPF LSM programs", ErrKernelRefused, errno.Error())
	case errors.As(err, &ve):
		return fmt.Errorf("%w: the verifier rejected the program (kernel too old or built without what uffdgate needs: BPF LSM, BTF, ring buffers): %v", ErrKernelRefused, err)
	}
	return fmt.Errorf("loading the BPF programs: %w", err)
}

// Attach attaches the LSM program: from then on it decides.
func (gt *Gate) Attach() error {
	var l link.Link
	var err error
	if gt.backend == Audit {
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_exit", Program: gt.prog})
	} else {
		l, err = link.AttachLSM(link.LSMOptions{Program: gt.prog})
	}
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return fmt.Errorf("%w: attaching failed: %v", ErrKernelRefused, err)
		}
		return fmt.Errorf("attaching the %s program: %w", gt.backend, err)
	}
	gt.link = l
	rd, err := ringbuf.NewReader(gt.maps.Events)
	if err != nil {
		return fmt.Errorf("opening the event ring buffer: %w", err)
	}
	gt.events = rd
	return nil
}

// SelfTest proves the attached hook runs and decodes requests: this process
// creates user-mode-only contexts through the syscall and, where the node exists,
// the device, and checks the program saw each with the right path and flags.
func (gt *Gate) SelfTest() error {
	if err := gt.maps.Selftest.Put(uint32(0), &gateUffdSelftest{Tgid: uint32(os.Getpid())}); err != nil {
		return fmt.Errorf("self-test: %w", err)
	}
	defer gt.maps.Selftest.Put(uint32(0), &gateUffdSelftest{})
	type probe struct {
		path   decision.Path
		create func(flags uint32) (int, error)
	}
	probes := []probe{{decision.PathSyscall64, uffd.Syscall}}
	if _, err := os.Stat(uffd.DevicePath); err == nil {
		probes = append(probes, probe{decision.PathIoctl64, uffd.Device})
	}
	flags := decision.UserModeOnly | decision.CloseOnExec | decision.NonBlock
	for _, p := range probes {
		var before gateUffdSelftest
		if err := gt.maps.Selftest.Lookup(uint32(0), &before); err != nil {
			return fmt.Errorf("self-test: reading the self-test map: %w", err)
		}
		fd, err := p.create(flags)
		if err != nil {
			return fmt.Errorf("self-test: creating a user-mode-only context through %s failed: %w", p.path, err)
		}
		unix.Close(fd)
		var after gateUffdSelftest
		if err := gt.maps.Selftest.Lookup(uint32(0), &after); err != nil {
			return fmt.Errorf("self-test: reading the self-test map: %w", err)
		}
		if after.Seen == before.Seen {
			c, _ := gt.Counters()
			return fmt.Errorf("self-test: the LSM program is attached but did not run for a userfaultfd created through %s "+
				"(counters %v, selftest %+v): the hook never fires on this kernel, so nothing would be enforced", p.path, c, after)
		}
		if decision.Path(after.Path) != p.path || after.FlagsKnown == 0 || after.Flags != flags {
			return fmt.Errorf("self-test: the LSM program misread a %s request (saw path %s, flags 0x%x, known %v; want %s, 0x%x)",
				p.path, decision.Path(after.Path), after.Flags, after.FlagsKnown != 0, p.path, flags)
		}
	}
	return nil
}

// ReadEvent blocks for the next record; it returns ringbuf.ErrClosed after Close.
func (gt *Gate) ReadEvent() (events.Record, error) {
	rec, err := gt.events.Read()
	if err != nil {
		return events.Record{}, err
	}
	return DecodeRecord(rec.RawSample)
}

// DecodeRecord decodes one ring buffer sample.
func DecodeRecord(b []byte) (events.Record, error) {
	var e gateUffdEvent
	if len(b) < binary.Size(e) {
		return events.Record{}, fmt.Errorf("event record too short: %d bytes, want %d", len(b), binary.Size(e))
	}
	if err := binary.Read(bytes.NewReader(b), binary.LittleEndian, &e); err != nil {
		return events.Record{}, fmt.Errorf("decoding event record: %w", err)
	}
	return events.Record{
		BootTime:         time.Duration(e.BootNs),
		CgroupID:         e.CgroupId,
		CapEffective:     e.CapEffective,
		ExeIno:           e.ExeIno,
		ExeDev:           e.ExeDev,
		PID:              e.Pid,
		TGID:             e.Tgid,
		PPID:             e.Ppid,
		UID:              e.Uid,
		EUID:             e.Euid,
		GID:              e.Gid,
		EGID:             e.Egid,
		Generation:       e.Gen,
		KernelSuppressed: e.SuppressedBefore,
		Matched:          e.Matched,
		Backend:          Backend(e.Backend).String(),
		UsernsLevel:      e.UsernsLevel,
		Request:          decision.Request{Path: decision.Path(e.Path), Flags: e.Flags, FlagsKnown: e.FlagsKnown != 0},
		Verdict:          decision.Verdict(e.Verdict),
		Mode:             decision.Mode(e.Mode),
		Audit:            e.Audit != 0,
		Allowlisted:      e.Allowlisted != 0,
		Comm:             cString(e.Comm[:]),
		ExePath:          exePath(&e),
		ExeReplaced:      e.ExeReplaced != 0,
	}, nil
}

// exePath joins the components the kernel recorded, leaf first; a path the
// kernel could not follow to the root is marked with a leading "…", a name it
// cut short with a trailing one.
func exePath(e *gateUffdEvent) string {
	n := min(int(e.ExeDepth), len(e.ExeComp))
	if n == 0 {
		return ""
	}
	parts := make([]string, n)
	for i := 0; i < n; i++ {
		parts[n-1-i] = cString(e.ExeComp[i][:])
		if e.ExeCut&(1<<uint(i)) != 0 {
			parts[n-1-i] += "…" // the kernel's copy of a long name is cut short
		}
	}
	p := "/" + strings.Join(parts, "/")
	if e.ExeTruncated != 0 {
		p = "…" + p
	}
	return p
}

func cString(b []int8) string {
	var sb strings.Builder
	for _, c := range b {
		if c == 0 {
			break
		}
		sb.WriteByte(byte(c))
	}
	return sb.String()
}

// Counters are the exact per-mode, per-verdict, per-path counts summed over CPUs.
type Counters [decision.NumModes][decision.NumVerdicts][decision.NumPaths]uint64

// Counters reads the kernel's counters.
func (gt *Gate) Counters() (Counters, error) {
	var c Counters
	for m := range int(decision.NumModes) {
		for v := range int(decision.NumVerdicts) {
			for p := range int(decision.NumPaths) {
				var per []uint64
				key := uint32((m*int(decision.NumVerdicts)+v)*int(decision.NumPaths) + p)
				if err := gt.maps.Counters.Lookup(key, &per); err != nil {
					return c, fmt.Errorf("reading counters: %w", err)
				}
				for _, n := range per {
					c[m][v][p] += n
				}
			}
		}
	}
	return c, nil
}

// Lost is how many events did not fit in the ring buffer.
func (gt *Gate) Lost() (uint64, error) {
	var per []uint64
	if err := gt.maps.Lost.Lookup(uint32(0), &per); err != nil {
		return 0, fmt.Errorf("reading the lost-event counter: %w", err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}

// Held is a count of events the kernel's rate limit holds for an executable
// and verdict, not yet carried by an event.
type Held struct {
	Exe     decision.FileID
	EUID    uint32
	Verdict decision.Verdict
	Count   uint64
}

// PendingHeld reads the kernel rate limit's counts not yet carried by an event.
func (gt *Gate) PendingHeld() ([]Held, error) {
	var out []Held
	var k gateRlKey
	var v gateRlVal
	it := gt.maps.Ratelimit.Iterate()
	for it.Next(&k, &v) {
		if v.Suppressed > 0 {
			out = append(out, Held{Exe: decision.FileID{Dev: k.Dev, Ino: k.Ino}, EUID: k.Euid, Verdict: decision.Verdict(k.Verdict), Count: uint64(v.Suppressed)})
		}
	}
	return out, it.Err()
}

// preparePinDir makes dir, on a bpf file system (mounted at its parent if none
// is there yet, as systemd would).
func preparePinDir(dir string) error {
	parent := filepath.Dir(dir)
	var fs unix.Statfs_t
	if err := unix.Statfs(parent, &fs); err != nil {
		return fmt.Errorf("exec records not pinned: %s: %v", parent, err)
	}
	if fs.Type != unix.BPF_FS_MAGIC {
		if err := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("exec records not pinned: no bpf file system at %s, and mounting one failed: %v", parent, err)
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("exec records not pinned: %v", err)
	}
	return checkPinDir(dir)
}

// checkPinDir refuses a pin directory that anyone but root could have put
// there or can change: on a bpffs mounted without mode= (1777) any user can
// make it first, plant a pin that keeps the daemon from loading, or take the
// records away between restarts.
func checkPinDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("exec records not pinned: %v", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || st.Uid != 0 || st.Mode&0o022 != 0 {
		return fmt.Errorf("exec records not pinned: %s is not a directory that only root can change (owner uid %d, mode %o): "+
			"remove it and restart uffdgate, and mount bpffs with mode=0700", dir, st.Uid, st.Mode&0o7777)
	}
	return nil
}

// attachTracker starts the exec tracker if it is not running yet.
func (gt *Gate) attachTracker() error {
	if len(gt.tracker.links) > 0 {
		return nil
	}
	for _, p := range []*ebpf.Program{gt.tracker.exec, gt.tracker.fork} {
		l, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			for _, l := range gt.tracker.links {
				l.Close()
			}
			gt.tracker.links = nil
			return fmt.Errorf("attaching the exec tracker (needed by executable rules): %w", err)
		}
		gt.tracker.links = append(gt.tracker.links, l)
	}
	return nil
}

// ExecTracking reports whether the exec tracker runs.
func (gt *Gate) ExecTracking() bool { return len(gt.tracker.links) > 0 }

// ExecRecordsPinned says where the exec records are pinned, or why they are not.
func (gt *Gate) ExecRecordsPinned() (dir, note string) { return gt.tracker.pinned, gt.tracker.pinNote }

// HasExecRecord reports whether process pid has an exec record: whether
// executable rules can match it at all. (Its validity, which depends on the
// process not having exec'd since, only the kernel side can check.)
func (gt *Gate) HasExecRecord(pid int) (bool, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	var rec gateExecId
	err = gt.maps.ExecIds.Lookup(uint32(fd), &rec)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Close detaches the programs and frees everything; closing again does nothing.
func (gt *Gate) Close() error {
	if gt.closed {
		return nil
	}
	gt.closed = true
	var errs []error
	if gt.events != nil {
		errs = append(errs, gt.events.Close())
	}
	if gt.link != nil {
		errs = append(errs, gt.link.Close())
	}
	for _, l := range gt.tracker.links {
		errs = append(errs, l.Close())
	}
	for _, p := range []*ebpf.Program{gt.prog, gt.identify, gt.tracker.exec, gt.tracker.fork} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	errs = append(errs, gt.maps.Close())
	return errors.Join(errs...)
}

// ProbeLSM loads, without attaching, a two-instruction LSM program on
// uffdgate's hook: whether this kernel accepts LSM programs at all (some refuse
// them with bpf in the active LSM list, lockdown or vendor patches). The error
// wraps ErrKernelRefused when the kernel refuses.
func ProbeLSM() error {
	_ = rlimit.RemoveMemlock()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.LSM, AttachType: ebpf.AttachLSMMac, AttachTo: "inode_init_security_anon", License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return explainLoad(err)
	}
	return p.Close()
}

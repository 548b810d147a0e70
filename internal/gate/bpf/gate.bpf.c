// SPDX-License-Identifier: GPL-2.0
/*
 * uffdgate: decides every userfaultfd context creation.
 *
 * Every creation path (the userfaultfd syscall through each x86 syscall ABI, the
 * USERFAULTFD_IOC_NEW ioctl on /dev/userfaultfd, fork-event duplicates) ends in an
 * anonymous inode named "[userfaultfd]" whose creation runs the LSM hook
 * inode_init_security_anon. That is the one place the gate hooks: nothing else
 * pays for it. The hook does not receive the creation flags, so the gate reads
 * them from the calling task's syscall registers, which are exactly what the
 * kernel used; anything it cannot decode is treated as a kernel-fault request.
 *
 * Keep the decision in step with internal/decision (the reference model).
 */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

#define EPERM 1
#define UFFD_USER_MODE_ONLY 1
#define USERFAULTFD_IOC_NEW 0xAA00
#define TS_COMPAT 0x0002
#define X32_SYSCALL_BIT 0x40000000u

/* Syscall numbers: x86_64 table, x32 (table 64 | X32 bit) and i386. */
#define NR64_ioctl 16
#define NR64_userfaultfd 323
#define NRX32_ioctl 514
#define NR32_ioctl 54
#define NR32_userfaultfd 374

/* Must match internal/decision. */
enum uffd_mode { MODE_ALLOW = 0, MODE_USER_MODE_ONLY = 1, MODE_DENY = 2 };
enum uffd_verdict { V_ALLOW = 0, V_DENY = 1, V_WOULD_DENY = 2, V_NUM = 3 };
enum uffd_path {
	P_UNKNOWN = 0,
	P_SYSCALL64,
	P_SYSCALL_IA32,
	P_SYSCALL_X32,
	P_IOCTL64,
	P_IOCTL_IA32,
	P_IOCTL_X32,
	P_FORK_EVENT,
	P_NUM,
};

#define EXE_MAX_COMPONENTS 16
#define EXE_COMPONENT_LEN 48

#define CONFIG_MAGIC 0x75666667u /* "uffg": the daemon wrote this config */

struct uffd_config {
	u32 magic;
	u32 mode;
	u32 audit;
	u32 self_tgid; /* the daemon's self-test requests are recorded */
	u64 allow_caps;
};

struct uffd_event {
	u64 boot_ns;
	u64 cgroup_id;
	u64 cap_effective;
	u64 exe_ino;
	u32 exe_dev;
	u32 pid;
	u32 tgid;
	u32 ppid;
	u32 uid;
	u32 euid;
	u32 gid;
	u32 flags;
	u32 userns_level;
	u8 flags_known;
	u8 path;
	u8 verdict;
	u8 mode;
	u8 audit;
	u8 allowlisted;
	u8 pad[2];
	char comm[16];
	/* The executable's path components, leaf first; see exe_path(). */
	u32 exe_depth;
	u32 exe_truncated;
	char exe_comp[EXE_MAX_COMPONENTS][EXE_COMPONENT_LEN];
};

struct uffd_selftest {
	u32 seen;
	u32 path;
	u32 flags;
	u32 flags_known;
	u32 verdict;
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct uffd_config);
} config SEC(".maps");

/* Exact per-CPU counters, indexed verdict * P_NUM + path. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, V_NUM * P_NUM);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps");

/* Events that did not fit in the ring buffer. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} lost SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct uffd_selftest);
} selftest SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

/* Keeps struct uffd_event in BTF for bpf2go's Go type. */
const struct uffd_event *unused_event __attribute__((unused));

struct request {
	u32 path;
	u32 flags;
	bool flags_known;
};

/*
 * decode_request reads the syscall the current task is in. The kernel uses the
 * low 32 bits of the syscall number, of the flags (int) and of the ioctl command
 * (unsigned int) and of the ioctl argument (new_userfaultfd takes an int), so the
 * gate looks at exactly those.
 */
static __always_inline void decode_request(struct task_struct *task, struct request *req)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	u32 status = BPF_CORE_READ(task, thread_info.status);
	u32 nr = (u32)BPF_CORE_READ(regs, orig_ax);
	u32 cmd = 0, arg = 0;

	req->path = P_UNKNOWN;
	req->flags = 0;
	req->flags_known = false;

	if (status & TS_COMPAT) {
		/* int $0x80 or sysenter/syscall from 32-bit code: ebx, ecx, edx. */
		if (nr == NR32_userfaultfd) {
			req->path = P_SYSCALL_IA32;
			req->flags = (u32)BPF_CORE_READ(regs, bx);
			req->flags_known = true;
		} else if (nr == NR32_ioctl) {
			req->path = P_IOCTL_IA32;
			cmd = (u32)BPF_CORE_READ(regs, cx);
			arg = (u32)BPF_CORE_READ(regs, dx);
			req->flags_known = cmd == USERFAULTFD_IOC_NEW;
			req->flags = arg;
		}
		return;
	}
	/* 64-bit ABIs: rdi, rsi, rdx. */
	if (nr == NR64_userfaultfd || nr == (NR64_userfaultfd | X32_SYSCALL_BIT)) {
		req->path = nr & X32_SYSCALL_BIT ? P_SYSCALL_X32 : P_SYSCALL64;
		req->flags = (u32)BPF_CORE_READ(regs, di);
		req->flags_known = true;
	} else if (nr == NR64_ioctl || nr == (NRX32_ioctl | X32_SYSCALL_BIT)) {
		req->path = nr & X32_SYSCALL_BIT ? P_IOCTL_X32 : P_IOCTL64;
		cmd = (u32)BPF_CORE_READ(regs, si);
		arg = (u32)BPF_CORE_READ(regs, dx);
		req->flags_known = cmd == USERFAULTFD_IOC_NEW;
		req->flags = arg;
	}
}

/*
 * cap_effective is 8 bytes in every kernel: u32 cap[2] before 6.3, u64 val since.
 * On little-endian x86 both read as the same u64 mask, so the gate reads the field
 * whole at its relocated offset; any other size means an unknown layout, and then
 * no capability is believed (fail closed).
 */
static __always_inline u64 read_cap_effective(const struct cred *cred)
{
	u64 caps = 0;

	if (bpf_core_field_size(cred->cap_effective) != sizeof(u64))
		return 0;
	bpf_core_read(&caps, sizeof(caps), &cred->cap_effective);
	return caps;
}

static __always_inline bool is_userfaultfd(const struct qstr *name)
{
	static const char want[] = "[userfaultfd]";
	char buf[sizeof(want) + 1] = {}; /* one more, so a longer name cannot match */
	const unsigned char *p = BPF_CORE_READ(name, name);

	if (bpf_probe_read_kernel_str(buf, sizeof(buf), p) != sizeof(want))
		return false;
	for (int i = 0; i < sizeof(want); i++)
		if (buf[i] != want[i])
			return false;
	return true;
}

/*
 * exe_path records the executable's path as components, leaf first, crossing
 * mounts, so that the path is known even when the process has exited before user
 * space reads /proc/PID/exe (bpf_d_path is not allowed in this hook).
 */
/* cross_mount steps from the root of a mount to where it is mounted; false at
 * the root of the mount tree. */
static __always_inline bool cross_mount(struct dentry **d, struct mount **m)
{
	struct mount *pm = BPF_CORE_READ(*m, mnt_parent);

	if (pm == *m)
		return false;
	*d = BPF_CORE_READ(*m, mnt_mountpoint);
	*m = pm;
	return true;
}

static __always_inline void exe_path(struct uffd_event *e, struct file *exe)
{
	struct dentry *d = BPF_CORE_READ(exe, f_path.dentry);
	struct vfsmount *vm = BPF_CORE_READ(exe, f_path.mnt);
	struct mount *m = (void *)vm - bpf_core_field_offset(struct mount, mnt);
	u32 n = 0;

	e->exe_depth = 0;
	e->exe_truncated = 1;
	if (!exe)
		return;
	/*
	 * One component per iteration, the loop index being the only counter, so the
	 * verifier sees the same state at every iteration and prunes. Up to two mount
	 * crossings per component (a mount on a mount's root) are followed.
	 */
	for (n = 0; n < EXE_MAX_COMPONENTS; n++) {
		struct dentry *parent;

		if (d == BPF_CORE_READ(m, mnt.mnt_root) && !cross_mount(&d, &m))
			goto complete;
		if (d == BPF_CORE_READ(m, mnt.mnt_root) && !cross_mount(&d, &m))
			goto complete;
		parent = BPF_CORE_READ(d, d_parent);
		if (parent == d)
			goto complete;
		bpf_probe_read_kernel_str(e->exe_comp[n], EXE_COMPONENT_LEN, BPF_CORE_READ(d, d_name.name));
		d = parent;
	}
	e->exe_depth = n;
	return;
complete:
	e->exe_depth = n;
	e->exe_truncated = 0;
}

static __always_inline void count(u32 verdict, u32 path)
{
	u32 key = verdict * P_NUM + path;
	u64 *c = bpf_map_lookup_elem(&counters, &key);

	if (c)
		*c += 1; /* per-CPU slot: no other writer */
}

static __always_inline void emit(struct task_struct *task, const struct cred *cred, u64 caps,
				 const struct request *req, const struct uffd_config *cfg, u32 verdict,
				 bool allowlisted)
{
	struct uffd_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	struct file *exe;

	if (!e) {
		u32 zero = 0;
		u64 *l = bpf_map_lookup_elem(&lost, &zero);

		if (l)
			*l += 1;
		return;
	}
	e->boot_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->cap_effective = caps;
	e->pid = BPF_CORE_READ(task, pid);
	e->tgid = BPF_CORE_READ(task, tgid);
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = BPF_CORE_READ(cred, uid.val);
	e->euid = BPF_CORE_READ(cred, euid.val);
	e->gid = BPF_CORE_READ(cred, gid.val);
	e->userns_level = BPF_CORE_READ(cred, user_ns, level);
	e->flags = req->flags;
	e->flags_known = req->flags_known;
	e->path = req->path;
	e->verdict = verdict;
	e->mode = cfg->mode;
	e->audit = cfg->audit;
	e->allowlisted = allowlisted;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	exe = BPF_CORE_READ(task, mm, exe_file);
	e->exe_ino = BPF_CORE_READ(exe, f_inode, i_ino);
	e->exe_dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
	exe_path(e, exe);
	bpf_ringbuf_submit(e, 0);
}

SEC("lsm/inode_init_security_anon")
int BPF_PROG(uffdgate_anon_inode, struct inode *inode, const struct qstr *name,
	     const struct inode *context_inode, int ret)
{
	struct task_struct *task;
	const struct cred *cred;
	struct uffd_config *cfg;
	struct request req;
	u32 zero = 0, verdict = V_ALLOW;
	bool allowlisted = false, kernel_fault, deny = false;
	u64 caps;

	if (ret)
		return ret; /* an earlier program already refused */
	if (!is_userfaultfd(name))
		return 0;

	task = bpf_get_current_task_btf();
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return -EPERM;

	/*
	 * The verifier types context_inode as a non-NULL kernel pointer and deletes a
	 * plain NULL test, which would take every creation for a fork event. Read the
	 * raw argument as a number instead.
	 */
	u64 context_inode_raw = 0;

	/* A failed read leaves 0: decided as a new context, never waved through. */
	bpf_probe_read_kernel(&context_inode_raw, sizeof(context_inode_raw), (void *)ctx + 2 * sizeof(u64));
	if (context_inode_raw) {
		/* A fork event duplicating a context that passed the gate when it was made. */
		req.path = P_FORK_EVENT;
		req.flags = 0;
		req.flags_known = false;
		count(V_ALLOW, P_FORK_EVENT);
		return 0;
	}
	decode_request(task, &req);

	cred = BPF_CORE_READ(task, cred);
	caps = read_cap_effective(cred);
	/* Only the initial user namespace has level 0: capabilities held in any other
	 * do not make capable() true, and do not allowlist. */
	if (BPF_CORE_READ(cred, user_ns, level) == 0)
		allowlisted = (caps & cfg->allow_caps) != 0;

	kernel_fault = !req.flags_known || !(req.flags & UFFD_USER_MODE_ONLY);
	if (cfg->magic != CONFIG_MAGIC) {
		deny = kernel_fault && !allowlisted; /* unconfigured: user-mode-only */
	} else if (!allowlisted) {
		if (cfg->mode == MODE_ALLOW)
			deny = false;
		else if (cfg->mode == MODE_USER_MODE_ONLY)
			deny = kernel_fault;
		else
			deny = true;
	}
	if (deny)
		verdict = cfg->audit && cfg->magic == CONFIG_MAGIC ? V_WOULD_DENY : V_DENY;

	count(verdict, req.path);
	if (verdict != V_ALLOW || (kernel_fault && !allowlisted))
		emit(task, cred, caps, &req, cfg, verdict, allowlisted);

	if (cfg->self_tgid && cfg->self_tgid == BPF_CORE_READ(task, tgid)) {
		struct uffd_selftest *st = bpf_map_lookup_elem(&selftest, &zero);

		if (st) {
			st->path = req.path;
			st->flags = req.flags;
			st->flags_known = req.flags_known;
			st->verdict = verdict;
			__sync_fetch_and_add(&st->seen, 1);
		}
	}
	return verdict == V_DENY ? -EPERM : 0;
}

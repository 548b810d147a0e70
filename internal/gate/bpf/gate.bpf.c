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
enum uffd_mode { MODE_ALLOW = 0, MODE_USER_MODE_ONLY = 1, MODE_DENY = 2, MODE_NUM = 3 };
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

#define BACKEND_LSM 0
#define BACKEND_AUDIT 1
#define SIGKILL 9

#define CONFIG_MAGIC 0x75666667u /* "uffg": the daemon wrote this config */
#define MAX_CAPS 64
#define CGROUP_MAX_DEPTH 32
#define MAX_GROUPS 16

/*
 * A compiled policy. Rules are bits of a u64: a rule matches when each of its
 * selectors does (AND), a selector matching when any of its values does (OR).
 * Two policies live side by side, in the slots of generation gen & 1; `active`
 * names the one in force, so a reload is one atomic word write and every
 * decision reads one consistent policy.
 */
struct uffd_config {
	u32 magic;
	u32 gen;
	u32 mode;
	u32 audit;
	u32 kill;         /* audit backend only: SIGKILL a process whose request it would deny */
	u32 event_burst;  /* events per executable and verdict per second before counting only */
	u32 user_event_burst; /* events per user and verdict per second, all executables */
	u32 pad_cfg;
	u64 rules;        /* bit per defined rule */
	u64 grant_kernel; /* rules granting kernel-fault contexts */
	u64 grant_umo;    /* rules granting user-mode-only contexts (matters in mode deny) */
	u64 audit_only;   /* rules on trial: reported, never granting */
	u64 no_exe;       /* rules without that selector match any value of it */
	u64 no_cgroup;
	u64 no_uid;
	u64 no_gid;
	u64 no_caps;
	u64 caps_named;          /* capabilities some rule names */
	u64 cap_rules[MAX_CAPS]; /* capability -> rules naming it */
};

struct exe_key {
	u32 gen;
	u32 dev; /* kernel dev_t of the executable's filesystem */
	u64 ino;
	u32 igen; /* the inode's generation: a reused inode number gets another */
	u32 pad;
};

struct id_key {
	u32 gen;
	u32 id; /* uid or gid */
};

struct cgroup_key {
	u64 id; /* cgroup v2 id (its directory's inode number) */
	u32 gen;
	u32 pad;
};

struct cgroup_val {
	u64 exact;   /* rules naming this cgroup */
	u64 subtree; /* rules naming this cgroup with its subtree */
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
	u32 egid;
	u32 flags;
	u32 userns_level;
	u32 gen;      /* policy generation the decision used */
	u32 pad2;
	u64 matched;  /* rules that matched (enforced and audit-only) */
	u32 suppressed_before; /* events of the same executable and verdict the kernel held back */
	u32 pad3;
	u8 flags_known;
	u8 path;
	u8 verdict;
	u8 mode;
	u8 audit;
	u8 allowlisted;
	u8 backend; /* BACKEND_LSM or BACKEND_AUDIT */
	u8 exe_replaced; /* mm->exe_file is not the file the task exec'd (prctl PR_SET_MM) */
	char comm[16];
	/* The executable's path components, leaf first; see exe_path(). */
	u32 exe_depth;
	u32 exe_truncated;
	u32 exe_cut; /* bit n: component n was longer than EXE_COMPONENT_LEN - 1 and is cut */
	u32 pad4;
	char exe_comp[EXE_MAX_COMPONENTS][EXE_COMPONENT_LEN];
};

struct uffd_selftest {
	u32 tgid; /* written by the daemon: whose requests to record */
	u32 seen;
	u32 path;
	u32 flags;
	u32 flags_known;
	u32 verdict;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, struct uffd_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} active SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct exe_key);
	__type(value, u64);
} exe_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct id_key);
	__type(value, u64);
} uid_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct id_key);
	__type(value, u64);
} gid_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct cgroup_key);
	__type(value, struct cgroup_val);
} cgroup_rules SEC(".maps");

/* Exact per-CPU counters, indexed (mode * V_NUM + verdict) * P_NUM + path. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MODE_NUM * V_NUM * P_NUM);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps");

/*
 * Event rate limit per (executable, user, verdict): a burst per window, then
 * only a count, carried by the next event of the key; and per (user, verdict)
 * over all executables (user_budget). A flood from one user then cannot crowd
 * the ring buffer or the log and hide another user's requests.
 */
#define RL_WINDOW_NS 1000000000ULL

struct rl_key {
	u64 ino;
	u32 dev;
	u32 verdict;
	u32 euid; /* per user too: one user running (or posing as) another's
		   * program must not spend that user's budget */
	u32 pad;
};

struct rl_val {
	u64 window_start;
	u32 in_window;
	u32 suppressed; /* since the last event of this key */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct rl_key);
	__type(value, struct rl_val);
} ratelimit SEC(".maps");

/*
 * The executable each task was started from, recorded at exec and inherited at
 * fork. Executable rules match this, not mm->exe_file: prctl(PR_SET_MM_MAP) can
 * point that at any file with only CAP_SYS_ADMIN in the caller's own user
 * namespace, which any user who can create one has. A record is valid only while
 * its exec_id is the task's self_exec_id, so a record that missed an exec (no
 * tracker ran, or it could not update the record) never vouches for the new
 * program. The daemon pins this map, so records outlive a daemon restart.
 */
struct exec_id {
	u64 ino;
	u64 exec_id;
	u32 dev;
	u32 igen; /* device and inode numbers are reused once a file is gone; with
		   * the generation, a record never names a file created later */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct exec_id);
} exec_ids SEC(".maps");

struct rl_user_key {
	u32 euid;
	u32 verdict;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct rl_user_key);
	__type(value, struct rl_val);
} ratelimit_user SEC(".maps");

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
	__uint(max_entries, 256 * 1024); /* bursts; beyond it events are counted in `lost` */
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
 * gate looks at exactly those. task and regs are BTF pointers (the current task
 * and its saved user registers): plain loads, no probe-read helper calls.
 */
static __always_inline void decode_request(struct task_struct *task, struct pt_regs *regs,
					   struct request *req)
{
	u32 status = task->thread_info.status;
	u32 nr = (u32)regs->orig_ax;
	u32 cmd = 0, arg = 0;

	req->path = P_UNKNOWN;
	req->flags = 0;
	req->flags_known = false;

	if (status & TS_COMPAT) {
		/* int $0x80 or sysenter/syscall from 32-bit code: ebx, ecx, edx. */
		if (nr == NR32_userfaultfd) {
			req->path = P_SYSCALL_IA32;
			req->flags = (u32)regs->bx;
			req->flags_known = true;
		} else if (nr == NR32_ioctl) {
			req->path = P_IOCTL_IA32;
			cmd = (u32)regs->cx;
			arg = (u32)regs->dx;
			req->flags_known = cmd == USERFAULTFD_IOC_NEW;
			req->flags = arg;
		}
		return;
	}
	/* 64-bit ABIs: rdi, rsi, rdx. */
	if (nr == NR64_userfaultfd || nr == (NR64_userfaultfd | X32_SYSCALL_BIT)) {
		req->path = nr & X32_SYSCALL_BIT ? P_SYSCALL_X32 : P_SYSCALL64;
		req->flags = (u32)regs->di;
		req->flags_known = true;
	} else if (nr == NR64_ioctl || nr == (NRX32_ioctl | X32_SYSCALL_BIT)) {
		req->path = nr & X32_SYSCALL_BIT ? P_IOCTL_X32 : P_IOCTL64;
		cmd = (u32)regs->si;
		arg = (u32)regs->dx;
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

/*
 * The address of the kernel's "[userfaultfd]" name, once seen: every userfaultfd
 * inode is made with that one literal, so after the first string compare a
 * pointer compare recognizes it. Other names still get the string compare.
 */
u64 uffd_name_addr;

static __always_inline bool is_userfaultfd(const struct qstr *name)
{
	static const char want[] = "[userfaultfd]";
	char buf[sizeof(want) + 1] = {}; /* one more, so a longer name cannot match */
	const unsigned char *p = BPF_CORE_READ(name, name);

	if (uffd_name_addr && (u64)p == uffd_name_addr)
		return true;
	if (bpf_probe_read_kernel_str(buf, sizeof(buf), p) != sizeof(want))
		return false;
	for (int i = 0; i < sizeof(want); i++)
		if (buf[i] != want[i])
			return false;
	uffd_name_addr = (u64)p;
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
	e->exe_cut = 0;
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
		if (BPF_CORE_READ(d, d_name.len) >= EXE_COMPONENT_LEN)
			e->exe_cut |= 1u << n;
		d = parent;
	}
	e->exe_depth = n;
	return;
complete:
	e->exe_depth = n;
	e->exe_truncated = 0;
}

static __always_inline void count(u32 mode, u32 verdict, u32 path)
{
	u32 key;

	if (mode >= MODE_NUM)
		mode = MODE_DENY; /* what an unknown mode is treated as */
	if (verdict >= V_NUM || path >= P_NUM)
		return;
	key = (mode * V_NUM + verdict) * P_NUM + path;
	u64 *c = bpf_map_lookup_elem(&counters, &key);

	if (c)
		*c += 1; /* per-CPU slot: no other writer */
}

static __always_inline void file_id(struct file *f, struct exec_id *id)
{
	id->ino = BPF_CORE_READ(f, f_inode, i_ino);
	id->dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);
	id->igen = BPF_CORE_READ(f, f_inode, i_generation);
}

/*
 * exec_identity is the file executable rules judge the task by: its exec record,
 * if it has a valid one. A task without (it started before the tracker ever ran,
 * in a gap between daemons, or its record could not be allocated) matches no
 * executable rule: the gate cannot tell what it runs.
 */
static __always_inline bool exec_identity(struct task_struct *task, struct exec_id *out)
{
	struct exec_id *rec = bpf_task_storage_get(&exec_ids, task, 0, 0);

	if (!rec)
		return false;
	*out = *rec;
	return rec->exec_id == task->self_exec_id;
}

/*
 * user_budget: events per user and verdict per window, on top of the limit per
 * executable. Copies of one program are as many executables; they are still one
 * user, whose flood then cannot crowd other users' events out of the ring buffer.
 */
static __always_inline bool user_budget(u32 euid, u32 verdict, u64 now, const struct uffd_config *cfg)
{
	struct rl_user_key k = { .euid = euid, .verdict = verdict };
	struct rl_val *v = bpf_map_lookup_elem(&ratelimit_user, &k), fresh = {};

	if (!v) {
		fresh.window_start = now;
		fresh.in_window = 1;
		bpf_map_update_elem(&ratelimit_user, &k, &fresh, 0 /* BPF_ANY */);
		return true;
	}
	if (now - v->window_start > RL_WINDOW_NS) {
		v->window_start = now;
		v->in_window = 1;
		return true;
	}
	return __sync_fetch_and_add(&v->in_window, 1) < cfg->user_event_burst;
}

static __always_inline void emit(struct task_struct *task, const struct cred *cred, u64 caps,
				 const struct request *req, const struct uffd_config *cfg, u32 verdict,
				 bool allowlisted, u64 matched, u32 backend)
{
	struct exec_id id;
	struct uffd_event *e;
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);
	struct rl_key rk = { .verdict = verdict };
	struct rl_val *rv, fresh = {};
	u64 now = bpf_ktime_get_boot_ns();
	u32 carry = 0;

	rk.ino = BPF_CORE_READ(exe, f_inode, i_ino);
	rk.dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
	rk.euid = BPF_CORE_READ(cred, euid.val);
	rv = bpf_map_lookup_elem(&ratelimit, &rk);
	if (!rv) {
		fresh.window_start = now;
		fresh.in_window = 1;
		bpf_map_update_elem(&ratelimit, &rk, &fresh, 0 /* BPF_ANY */);
	} else if (now - rv->window_start > RL_WINDOW_NS) {
		/* Racing CPUs may both open a window; the count itself is exchanged atomically. */
		rv->window_start = now;
		rv->in_window = 1;
		carry = __sync_lock_test_and_set(&rv->suppressed, 0);
	} else if (__sync_fetch_and_add(&rv->in_window, 1) >= cfg->event_burst) {
		__sync_fetch_and_add(&rv->suppressed, 1);
		return;
	}
	if (!user_budget(BPF_CORE_READ(cred, euid.val), verdict, now, cfg)) {
		/* Held back by the user's budget: counted with the executable's, carried
		 * by its next event. */
		rv = bpf_map_lookup_elem(&ratelimit, &rk);
		if (rv)
			__sync_fetch_and_add(&rv->suppressed, 1 + carry);
		return;
	}

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		/* The event is lost, and so is the count it would have carried. */
		u32 zero = 0;
		u64 *l = bpf_map_lookup_elem(&lost, &zero);

		if (l)
			*l += 1 + carry;
		return;
	}
	e->suppressed_before = carry;
	e->boot_ns = now;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->cap_effective = caps;
	e->pid = BPF_CORE_READ(task, pid);
	e->tgid = BPF_CORE_READ(task, tgid);
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = BPF_CORE_READ(cred, uid.val);
	e->euid = BPF_CORE_READ(cred, euid.val);
	e->gid = BPF_CORE_READ(cred, gid.val);
	e->egid = BPF_CORE_READ(cred, egid.val);
	e->gen = cfg->gen;
	e->matched = matched;
	e->userns_level = BPF_CORE_READ(cred, user_ns, level);
	e->flags = req->flags;
	e->flags_known = req->flags_known;
	e->path = req->path;
	e->verdict = verdict;
	e->mode = cfg->mode;
	e->audit = cfg->audit;
	e->allowlisted = allowlisted;
	e->backend = backend;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->exe_ino = BPF_CORE_READ(exe, f_inode, i_ino);
	e->exe_dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
	e->exe_replaced = exec_identity(task, &id) && (id.ino != e->exe_ino || id.dev != e->exe_dev);
	exe_path(e, exe);
	bpf_ringbuf_submit(e, 0);
}

static __always_inline u64 lookup_id(void *map, u32 gen, u32 id)
{
	struct id_key k = { .gen = gen, .id = id };
	u64 *v = bpf_map_lookup_elem(map, &k);

	return v ? *v : 0;
}

/* Rules whose exe selector names the file the task exec'd, by file identity. */
static __always_inline u64 match_exe(struct task_struct *task, u32 gen)
{
	struct exe_key k = { .gen = gen };
	struct exec_id id;
	u64 *v;

	if (!exec_identity(task, &id))
		return 0;
	k.dev = id.dev;
	k.ino = id.ino;
	k.igen = id.igen;
	v = bpf_map_lookup_elem(&exe_rules, &k);
	return v ? *v : 0;
}

/* Rules naming the task's cgroup v2, or one of its ancestors with its subtree. */
static __always_inline u64 match_cgroup(struct task_struct *task, u32 gen)
{
	struct cgroup *cg = BPF_CORE_READ(task, cgroups, dfl_cgrp);
	struct cgroup_key k = { .gen = gen };
	struct cgroup_val *v;
	u64 m = 0;

	for (int i = 0; i < CGROUP_MAX_DEPTH && cg; i++) {
		k.id = BPF_CORE_READ(cg, kn, id);
		v = bpf_map_lookup_elem(&cgroup_rules, &k);
		if (v)
			m |= (i == 0 ? v->exact : 0) | v->subtree;
		cg = BPF_CORE_READ(cg, self.parent, cgroup);
	}
	return m;
}

/* Rules naming the task's effective gid or one of its first MAX_GROUPS groups. */
static __always_inline u64 match_gid(const struct cred *cred, u32 gen)
{
	struct group_info *gi = BPF_CORE_READ(cred, group_info);
	u64 off = bpf_core_field_offset(struct group_info, gid);
	u64 m = lookup_id(&gid_rules, gen, BPF_CORE_READ(cred, egid.val));
	int n = BPF_CORE_READ(gi, ngroups);

	for (int i = 0; i < MAX_GROUPS; i++) {
		u32 g = 0;

		if (i >= n)
			break;
		bpf_probe_read_kernel(&g, sizeof(g), (void *)gi + off + i * sizeof(u32));
		m |= lookup_id(&gid_rules, gen, g);
	}
	return m;
}

/* Rules naming a capability the task holds in the initial user namespace. */
static __always_inline u64 match_caps(const struct uffd_config *cfg, u64 caps, bool init_ns)
{
	u64 m = 0;

	if (!init_ns)
		return 0;
	caps &= cfg->caps_named;
	for (int c = 0; c < MAX_CAPS && caps; c++, caps >>= 1)
		if (caps & 1)
			m |= cfg->cap_rules[c];
	return m;
}

/*
 * decide is the whole decision for the current task's request: match the rules,
 * apply the mode, count, report. The LSM backend refuses what it returns as
 * V_DENY; the audit backend sees the request only after the kernel made the
 * context, so for it every denial is a would-be denial.
 */
static __always_inline u32 decide(struct task_struct *task, const struct request *reqp,
				  struct uffd_config *cfg, u32 gen, u32 backend)
{
	struct request req = *reqp;
	const struct cred *cred;
	u32 zero = 0, verdict = V_ALLOW;
	bool allowlisted, kernel_fault, deny = false, init_ns;
	u64 caps, matched = 0, enforced;

	cred = task->cred;
	caps = read_cap_effective(cred);
	/* Only the initial user namespace has level 0: capabilities held in any other
	 * do not make capable() true, and do not count. */
	init_ns = cred->user_ns->level == 0;
	kernel_fault = !req.flags_known || !(req.flags & UFFD_USER_MODE_ONLY);

	if (cfg->magic == CONFIG_MAGIC && cfg->gen == gen) {
		/* A selector is looked at only while a rule still matching has it,
		 * cheapest first: most requests are decided without a map lookup. */
		matched = cfg->rules;
		if (matched & ~cfg->no_caps)
			matched &= cfg->no_caps | match_caps(cfg, caps, init_ns);
		if (matched & ~cfg->no_uid)
			matched &= cfg->no_uid | lookup_id(&uid_rules, gen, cred->euid.val);
		if (matched & ~cfg->no_exe)
			matched &= cfg->no_exe | match_exe(task, gen);
		if (matched & ~cfg->no_gid)
			matched &= cfg->no_gid | match_gid(cred, gen);
		if (matched & ~cfg->no_cgroup)
			matched &= cfg->no_cgroup | match_cgroup(task, gen);
		enforced = matched & ~cfg->audit_only;
		allowlisted = (enforced & cfg->grant_kernel) != 0;
		if (!allowlisted) {
			if (cfg->mode == MODE_ALLOW)
				deny = false;
			else if (cfg->mode == MODE_USER_MODE_ONLY)
				deny = kernel_fault;
			else /* MODE_DENY, and anything unknown */
				deny = kernel_fault || !(enforced & (cfg->grant_umo | cfg->grant_kernel));
		}
		if (deny)
			verdict = cfg->audit || backend == BACKEND_AUDIT ? V_WOULD_DENY : V_DENY;
	} else {
		/* No consistent policy (never configured, or caught mid-write): behave as
		 * user-mode-only with an empty allowlist. */
		allowlisted = false;
		if (kernel_fault)
			verdict = backend == BACKEND_AUDIT ? V_WOULD_DENY : V_DENY;
	}

	count(cfg->magic == CONFIG_MAGIC && cfg->gen == gen ? cfg->mode : MODE_USER_MODE_ONLY, verdict, req.path);
	if (verdict != V_ALLOW || kernel_fault)
		emit(task, cred, caps, &req, cfg, verdict, allowlisted, matched, backend);

	{
		struct uffd_selftest *st = bpf_map_lookup_elem(&selftest, &zero);

		if (st && st->tgid && st->tgid == BPF_CORE_READ(task, tgid)) {
			st->path = req.path;
			st->flags = req.flags;
			st->flags_known = req.flags_known;
			st->verdict = verdict;
			__sync_fetch_and_add(&st->seen, 1);
		}
	}
	return verdict;
}

static __always_inline struct uffd_config *active_config(u32 *gen)
{
	u32 zero = 0, slot, *genp = bpf_map_lookup_elem(&active, &zero);

	*gen = genp ? *genp : 0;
	slot = *gen & 1;
	return bpf_map_lookup_elem(&config, &slot);
}

SEC("lsm/inode_init_security_anon")
int BPF_PROG(uffdgate_anon_inode, struct inode *inode, const struct qstr *name,
	     const struct inode *context_inode, int ret)
{
	struct task_struct *task;
	struct uffd_config *cfg;
	struct request req;
	u64 context_inode_raw = 0;
	u32 gen;

	if (ret)
		return ret; /* an earlier program already refused */
	if (!is_userfaultfd(name))
		return 0;

	/*
	 * The verifier types context_inode as a non-NULL kernel pointer and deletes a
	 * plain NULL test, which would take every creation for a fork event. Read the
	 * raw argument as a number instead; a failed read leaves 0: decided as a new
	 * context, never waved through.
	 */
	bpf_probe_read_kernel(&context_inode_raw, sizeof(context_inode_raw), (void *)ctx + 2 * sizeof(u64));

	cfg = active_config(&gen);
	if (!cfg)
		return -EPERM;
	if (context_inode_raw) {
		/* A fork event duplicating a context that passed the gate when it was made. */
		count(cfg->mode, V_ALLOW, P_FORK_EVENT);
		return 0;
	}
	task = bpf_get_current_task_btf();
	decode_request(task, (struct pt_regs *)bpf_task_pt_regs(task), &req);
	return decide(task, &req, cfg, gen, BACKEND_LSM) == V_DENY ? -EPERM : 0;
}

/*
 * The audit backend, for kernels that will not run LSM programs: every syscall's
 * exit, filtered to the userfaultfd syscall and USERFAULTFD_IOC_NEW through every
 * ABI, that created a context. It cannot refuse; optionally it kills. Attaching
 * it puts every task on the slow syscall path: a cost on every syscall.
 */
SEC("raw_tracepoint/sys_exit")
int uffdgate_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	long ret = (long)ctx->args[1];
	struct task_struct *task;
	struct uffd_config *cfg;
	struct request req;
	u32 nr, gen;

	if (ret < 0)
		return 0;
	nr = (u32)BPF_CORE_READ(regs, orig_ax);
	/* The cheap test every syscall pays: is the number one of ours in any ABI? */
	if (nr != NR64_userfaultfd && nr != NR64_ioctl && nr != NR32_userfaultfd && nr != NR32_ioctl &&
	    nr != (NR64_userfaultfd | X32_SYSCALL_BIT) && nr != (NRX32_ioctl | X32_SYSCALL_BIT))
		return 0;
	task = bpf_get_current_task_btf();
	decode_request(task, (struct pt_regs *)bpf_task_pt_regs(task), &req);
	if (req.path == P_UNKNOWN || !req.flags_known)
		return 0; /* another syscall with the same number in another ABI, or another ioctl */
	cfg = active_config(&gen);
	if (!cfg)
		return 0;
	if (decide(task, &req, cfg, gen, BACKEND_AUDIT) == V_WOULD_DENY && cfg->kill && !cfg->audit)
		bpf_send_signal(SIGKILL);
	return 0;
}

/*
 * The exec tracker (attached while the policy has executable rules; both
 * backends). It runs at exec and fork only, never on other syscalls. Its records
 * are pinned: they outlive a daemon restart, and a record that missed an exec
 * while no tracker ran is invalid by its exec_id.
 */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(uffdgate_track_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct exec_id *rec = bpf_task_storage_get(&exec_ids, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	/* No record: a stale one cannot exist either, or it would have been returned. */
	if (!rec)
		return 0;
	file_id(BPF_CORE_READ(bprm, file), rec);
	rec->exec_id = BPF_CORE_READ(p, self_exec_id);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(uffdgate_track_fork, struct task_struct *parent, struct task_struct *child)
{
	struct exec_id id, *rec;

	if (!exec_identity(parent, &id))
		return 0; /* the child gets no record: it matches no executable rule */
	rec = bpf_task_storage_get(&exec_ids, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (rec)
		*rec = id; /* the child's self_exec_id is its parent's */
	return 0;
}

/*
 * The kernel's identity (device, inode, generation) of each file the daemon
 * holds open, for executable rules: user space cannot read an inode's
 * generation on every file system, and stat's st_dev is not s_dev on all of
 * them. Run on demand as an iterator; identify_tgid is the daemon's.
 */
u32 identify_tgid;

struct file_ident {
	u32 fd;
	u32 dev;
	u64 ino;
	u32 igen;
	u32 pad;
};

/* Keeps struct file_ident in BTF for bpf2go's Go type. */
const struct file_ident *unused_file_ident __attribute__((unused));

SEC("iter/task_file")
int uffdgate_identify(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct file_ident out = {};
	struct exec_id id;

	if (!task || !file || task->tgid != identify_tgid)
		return 0;
	file_id(file, &id);
	out.fd = ctx->fd;
	out.dev = id.dev;
	out.ino = id.ino;
	out.igen = id.igen;
	bpf_seq_write(ctx->meta->seq, &out, sizeof(out));
	return 0;
}

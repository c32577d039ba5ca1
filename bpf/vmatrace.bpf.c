/* vmatrace.bpf.c - named anonymous memory: names, merges, splits, forks.
 *
 * bcc C.  Which parts are compiled is chosen by the attach plan
 * (vmatrace_bpf/plan.py) through -D macros: one macro per capability variant
 * (PRCTL_TRACEPOINT, MERGE_VMA_MERGE, MERGE_VMG, ...), plus struct offsets
 * taken from BTF: for structs the kernel headers do not have (VMG_*_OFF), and,
 * with VT_BTF_LAYOUT, for every kernel struct member read (plan.LAYOUT).
 *
 * Rare things (a name set, a merge attempt, a split, a fork) become events;
 * per-VMA work in fork (vm_area_dup) is only counted, in a per-thread slot
 * that the fork event carries out.
 */
#define __VMATRACE_BPF__
#include <uapi/linux/ptrace.h>
#include "vmatrace.h"

/* ---- kernel struct layout ----------------------------------------------------
 * Every member of a kernel struct is read at an offset macro, one per member in
 * plan.LAYOUT (vmatrace_bpf/plan.py).  With BTF the plan gives the offsets
 * (VT_BTF_LAYOUT) and the structs stay opaque: no <linux/mm_types.h>, which with
 * what it pulls in was ~80% of the compile time.  Without BTF the headers give them. */
#ifdef VT_BTF_LAYOUT
struct vm_area_struct;
struct mm_struct;
struct anon_vma_name;
struct anon_vma;
struct file;
struct task_struct;
#ifndef PAGE_SHIFT
#ifdef CONFIG_ARM64_PAGE_SHIFT
#define PAGE_SHIFT CONFIG_ARM64_PAGE_SHIFT
#else
#define PAGE_SHIFT 12   /* x86_64 */
#endif
#endif
#else
#include <linux/sched.h>
#include <linux/mm_types.h>
#define VT_MEMBER_SIZE(type, m) sizeof(((type *)0)->m)
#define VMA_VM_START_OFF offsetof(struct vm_area_struct, vm_start)
#define VMA_VM_END_OFF offsetof(struct vm_area_struct, vm_end)
#define VMA_VM_FLAGS_OFF offsetof(struct vm_area_struct, vm_flags)
#define VMA_VM_FILE_OFF offsetof(struct vm_area_struct, vm_file)
#define VMA_ANON_VMA_OFF offsetof(struct vm_area_struct, anon_vma)
#define VMA_VM_PGOFF_OFF offsetof(struct vm_area_struct, vm_pgoff)
#define VMA_ANON_NAME_OFF offsetof(struct vm_area_struct, anon_name)
#ifdef CONFIG_USERFAULTFD
#define VMA_UFFD_OFF offsetof(struct vm_area_struct, vm_userfaultfd_ctx.ctx)
#endif
#define NAME_KREF_OFF offsetof(struct anon_vma_name, kref)
#define NAME_REFS_OFF offsetof(struct anon_vma_name, kref.refcount.refs.counter)
#define NAME_STR_OFF offsetof(struct anon_vma_name, name)
#define MM_MAP_COUNT_OFF offsetof(struct mm_struct, map_count)
#define TASK_MM_OFF offsetof(struct task_struct, mm)
/* the widths read below (plan.LAYOUT's sizes; the BTF path checks them in the plan) */
_Static_assert(VT_MEMBER_SIZE(struct vm_area_struct, vm_flags) == 8, "vm_flags is read as 8 bytes");
_Static_assert(VT_MEMBER_SIZE(struct vm_area_struct, vm_pgoff) == 8, "vm_pgoff is read as 8 bytes");
_Static_assert(VT_MEMBER_SIZE(struct anon_vma_name, kref.refcount.refs.counter) == 4, "refs is read as 4 bytes");
_Static_assert(VT_MEMBER_SIZE(struct mm_struct, map_count) == 4, "map_count is read as 4 bytes");
#endif
/* the address of member M (plan.LAYOUT macro <S>_<M>_OFF) of struct pointer P */
#define VMA(p, M) ((void *)(p) + VMA_##M##_OFF)
#define NAME(p, M) ((void *)(p) + NAME_##M##_OFF)

/* The vm_flags bits of the merge test: VT_VM_SPECIAL and VT_VM_SOFTDIRTY_BIT in vmatrace.h. */
#ifdef CONFIG_MEM_SOFT_DIRTY
#define VT_VM_SOFTDIRTY ((u64)VT_VM_SOFTDIRTY_BIT)
#else
#define VT_VM_SOFTDIRTY 0ULL
#endif

/* ---- output ------------------------------------------------------------- */
#ifdef USE_RINGBUF
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
#else
BPF_PERF_OUTPUT(events);
#endif
/* [0]: records the kernel could not queue (ring buffer full) */
BPF_ARRAY(drops, u64, 1);

static __always_inline void submit(void *ctx, void *rec, u32 size)
{
#ifdef USE_RINGBUF
	if (events.ringbuf_output(rec, size, 0) < 0) {
		int zero = 0;
		u64 *d = drops.lookup(&zero);
		if (d)
			__sync_fetch_and_add(d, 1);
	}
#else
	/* perf buffer: a full buffer is reported to user space as lost samples */
	events.perf_submit(ctx, rec, size);
#endif
}

/* ---- which processes ------------------------------------------------------ */
#ifdef FILTER_PIDS
BPF_HASH(watched, u32, u8, 1024);
#endif

static __always_inline int is_watched(u64 pid_tgid)
{
#ifdef FILTER_TID
	if ((u32)pid_tgid != FILTER_TID)
		return 0;
#endif
#ifdef FILTER_PIDS
	u32 tgid = pid_tgid >> 32;
	return watched.lookup(&tgid) != 0;
#elif defined(VT_SELF_TGID)
	/* tracing everything: but not vmabpf itself */
	return (u32)(pid_tgid >> 32) != VT_SELF_TGID;
#else
	return 1;
#endif
}

static __always_inline void fill_hdr(struct vt_hdr *h, u32 type, u64 pid_tgid)
{
	h->ts = bpf_ktime_get_ns();
	h->type = type;
	h->pid = pid_tgid >> 32;
	h->tid = (u32)pid_tgid;
	h->flags = 0;
	bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

/* ---- small readers ---------------------------------------------------------- */
static __always_inline u64 rd64(const void *p)
{
	u64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), p);
	return v;
}

static __always_inline u32 rd32(const void *p)
{
	u32 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), p);
	return v;
}

/* Function arguments, by the slot the attach plan computed from the function's
 * BTF prototype (or its evidence): -DARG_<bpf function>_<parameter>=slot.  A
 * slot is one 8-byte argument word; the first VT_NREG are in registers, the
 * rest on the stack.  x86_64 (SysV): rdi rsi rdx rcx r8 r9, then stack word n
 * at sp + 8 * (n + 1) on entry (above the return address).  arm64 (AAPCS64):
 * x0-x7, then stack word n at sp + 8 * n.  vmatrace_bpf/plan.py
 * (ARG_REGISTERS) makes the same split. */
#ifdef VT_ARCH_X86_64
#define VT_NREG 6
#define VT_STACK_WORD(ctx, n) rd64((void *)(PT_REGS_SP(ctx) + 8 * ((n) + 1)))
#define VT_REG(ctx, n) ((n) == 0 ? PT_REGS_PARM1(ctx) : (n) == 1 ? PT_REGS_PARM2(ctx) : \
			(n) == 2 ? PT_REGS_PARM3(ctx) : (n) == 3 ? PT_REGS_PARM4(ctx) : \
			(n) == 4 ? PT_REGS_PARM5(ctx) : PT_REGS_PARM6(ctx))
#else
#define VT_NREG 8
#define VT_STACK_WORD(ctx, n) rd64((void *)(PT_REGS_SP(ctx) + 8 * (n)))
#define VT_REG(ctx, n) ((ctx)->regs[(n) & 7])
#endif
/* macros, not helpers: bcc reads ctx directly only inside the probe function itself */
#define ARG_SLOT(ctx, k) ((k) < VT_NREG ? (u64)VT_REG(ctx, (k)) : VT_STACK_WORD(ctx, (k) - VT_NREG))
/* ARG(ctx, fn, param): the argument PARAM of the function probe FN is attached to */
#define ARG(ctx, fn, param) ARG_SLOT(ctx, ARG_##fn##_##param)

/* anon_vma_name(vma): NULL for file VMAs (on 6.1 anon_name shares a union
 * with shared.rb, so a file VMA's "name" there is garbage). */
static __always_inline struct anon_vma_name *vma_anon_name(struct vm_area_struct *vma)
{
	struct anon_vma_name *an = NULL;
	struct file *file = NULL;
	if (!vma)
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), VMA(vma, VM_FILE));
	if (file)
		return NULL;
	bpf_probe_read_kernel(&an, sizeof(an), VMA(vma, ANON_NAME));
	return an;
}

static __always_inline u32 name_refcount(struct anon_vma_name *an)
{
	if (!an)
		return 0;
	return rd32(NAME(an, REFS));
}

/* Copy the name of anon_vma_name AN into BUF (empty when AN is NULL). */
static __always_inline void read_name(char *buf, struct anon_vma_name *an)
{
	if (an)
		bpf_probe_read_kernel_str(buf, VT_NAME_LEN, NAME(an, STR));
	else
		buf[0] = 0;
}

/* anon_vma_name_eq(): the same object, or both named with equal strings. */
static __always_inline int names_equal(struct anon_vma_name *a, struct anon_vma_name *b,
				       char *abuf, char *bbuf)
{
	if (a == b)
		return 1;
	if (!a || !b)
		return 0;
	/* abuf/bbuf already hold the two names (read_name) */
	for (int i = 0; i < VT_NAME_LEN; i++) {
		if (abuf[i] != bbuf[i])
			return 0;
		if (!abuf[i])
			return 1;
	}
	return 1;
}

static __always_inline u64 vma_start(struct vm_area_struct *v) { return v ? rd64(VMA(v, VM_START)) : 0; }
static __always_inline u64 vma_end(struct vm_area_struct *v) { return v ? rd64(VMA(v, VM_END)) : 0; }

/* The proposed VMA a merge would create, as the kernel's merge test sees it. */
struct merge_req {
	u64 start;
	u64 end;
	u64 vm_flags;
	u64 pgoff;
	struct file *file;
	struct anon_vma *anon_vma;
	void *uffd_ctx;
	struct anon_vma_name *name;
};

/* VMA_IGNORE_MERGE_FLAGS; 7.x also ignores VM_MAYBE_GUARD (guard regions), not handled here */
#define VT_IGNORE_MERGE_FLAGS VT_VM_SOFTDIRTY

/* Why neighbour NB cannot absorb the range (0: it can), every failing check
 * a bit.  Mirrors is_mergeable_vma(), is_mergeable_anon_vma() and the pgoff
 * tests of can_vma_merge_before/after (6.1) / can_vma_merge_left/right (6.12+).
 * NB_START/NB_END are its bounds when the attempt began (vma_modify() may
 * have split it since).  NBUF holds the neighbour's name, RBUF the proposed one. */
static __always_inline u32 neighbour_cause(struct vm_area_struct *nb, u64 nb_start, u64 nb_end, int is_prev,
					   struct merge_req *req, char *nbuf, char *rbuf)
{
	u32 cause = 0;
	if (!nb)
		return VT_CAUSE_NO_VMA;
	if (is_prev && nb_start < req->start && nb_end > req->start)
		return VT_CAUSE_INSIDE;
	/* the "next" VMA holds the range's end: 6.4-6.11's vma_merge() passes it when the
	 * range starts inside prev (vma_lookup(mm, end) finds the VMA being changed) */
	if (!is_prev && nb_start < req->end && nb_end > req->end)
		return VT_CAUSE_INSIDE;
	if (is_prev ? nb_end != req->start : nb_start != req->end)
		cause |= VT_CAUSE_NOT_ADJACENT;
	u64 flags = rd64(VMA(nb, VM_FLAGS));
	if ((flags ^ req->vm_flags) & ~VT_IGNORE_MERGE_FLAGS)
		cause |= VT_CAUSE_FLAGS;
	if ((flags | req->vm_flags) & (u64)VT_VM_SPECIAL)
		cause |= VT_CAUSE_SPECIAL;
	struct file *file = (struct file *)rd64(VMA(nb, VM_FILE));
	if (file != req->file)
		cause |= VT_CAUSE_FILE;
#ifdef VMA_UFFD_OFF   /* CONFIG_USERFAULTFD */
	if ((void *)rd64(VMA(nb, UFFD)) != req->uffd_ctx)
		cause |= VT_CAUSE_UFFD;
#endif
	struct anon_vma *av = (struct anon_vma *)rd64(VMA(nb, ANON_VMA));
	if (av && req->anon_vma && av != req->anon_vma)
		cause |= VT_CAUSE_ANON_VMA;
	u64 pgoff = rd64(VMA(nb, VM_PGOFF));
	if (is_prev) {
		if (pgoff + ((nb_end - nb_start) >> PAGE_SHIFT) != req->pgoff)
			cause |= VT_CAUSE_PGOFF;
	} else {
		if (pgoff != req->pgoff + ((req->end - req->start) >> PAGE_SHIFT))
			cause |= VT_CAUSE_PGOFF;
	}
	if (!names_equal(vma_anon_name(nb), req->name, nbuf, rbuf))
		cause |= VT_CAUSE_NAME;
	return cause;
}

/* ======================================================================== */
/* prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, addr, len, name)                 */
/* ======================================================================== */
struct prctl_args {
	u64 addr;
	u64 len;
	u64 name;               /* user pointer */
};
BPF_HASH(prctl_inflight, u32, struct prctl_args, 1024);
BPF_PERCPU_ARRAY(name_set_buf, struct vt_name_set, 1);

static __always_inline int prctl_enter(u64 option, u64 arg2, u64 addr, u64 len, u64 name)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	if (option != VT_PR_SET_VMA || arg2 != VT_PR_SET_VMA_ANON_NAME || !is_watched(pid_tgid))
		return 0;
	u32 tid = (u32)pid_tgid;
	struct prctl_args a = {.addr = addr, .len = len, .name = name};
	prctl_inflight.update(&tid, &a);
	return 0;
}

static __always_inline int prctl_exit(void *ctx, s64 ret)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	struct prctl_args *a = prctl_inflight.lookup(&tid);
	if (!a)
		return 0;
	int zero = 0;
	struct vt_name_set *e = name_set_buf.lookup(&zero);
	if (!e) {
		prctl_inflight.delete(&tid);
		return 0;
	}
	fill_hdr(&e->h, VT_EV_NAME_SET, pid_tgid);
	e->addr = a->addr;
	e->len = a->len;
	e->ret = ret;
	e->name[0] = 0;
	if (!a->name) {
		e->h.flags |= VT_F_NAME_NULL;
	} else {
		int n = bpf_probe_read_user_str(e->name, VT_NAME_LEN, (void *)a->name);
		char more = 0;
		if (n == VT_NAME_LEN) {
			bpf_probe_read_user(&more, 1, (void *)(a->name + VT_NAME_LEN - 1));
			if (more)
				e->h.flags |= VT_F_NAME_TRUNCATED;
		}
	}
	prctl_inflight.delete(&tid);
	submit(ctx, e, sizeof(*e));
	return 0;
}

#ifdef PRCTL_TRACEPOINT
TRACEPOINT_PROBE(syscalls, sys_enter_prctl)
{
	return prctl_enter(args->option, args->arg2, args->arg3, args->arg4, args->arg5);
}

TRACEPOINT_PROBE(syscalls, sys_exit_prctl)
{
	return prctl_exit(args, args->ret);
}
#endif

#ifdef PRCTL_KPROBE
/* The arch's syscall wrapper takes the user pt_regs as its one argument. */
int kp_prctl_enter(struct pt_regs *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ARG(ctx, kp_prctl_enter, regs);
	struct pt_regs r = {};
	bpf_probe_read_kernel(&r, sizeof(r), regs);
#ifdef VT_ARCH_X86_64
	/* syscall ABI: rdi, rsi, rdx, r10, r8 */
	return prctl_enter(r.di, r.si, r.dx, r.r10, r.r8);
#else
	return prctl_enter(r.regs[0], r.regs[1], r.regs[2], r.regs[3], r.regs[4]);
#endif
}

int kr_prctl_exit(struct pt_regs *ctx)
{
	return prctl_exit(ctx, (s64)PT_REGS_RC(ctx));
}
#endif

/* ======================================================================== */
/* merges                                                                   */
/* ======================================================================== */
/* One merge attempt in flight on a thread.  Neighbours are judged when the
 * attempt returns, and only on a side that did not merge (a neighbour that
 * merged may have been freed); their ranges are taken when first seen. */
struct merge_inflight {
	struct merge_req req;
	struct vm_area_struct *prev;
	struct vm_area_struct *next;
	void *vmg;
	u64 prev_start, prev_end;
	u64 next_start, next_end;
	u64 middle_end;         /* existing-range: end of the VMA being changed */
	u32 source;
	u32 next_seen;          /* the kernel looked for a next VMA (next may be NULL) */
};
BPF_HASH(merge_state, u32, struct merge_inflight, 1024);
BPF_PERCPU_ARRAY(merge_buf, struct vt_merge, 1);

static __always_inline void merge_begin(struct merge_inflight *m)
{
	m->prev_start = vma_start(m->prev);
	m->prev_end = vma_end(m->prev);
	m->next_start = vma_start(m->next);
	m->next_end = vma_end(m->next);
	u32 tid = (u32)bpf_get_current_pid_tgid();
	merge_state.update(&tid, m);
}

/* Build and send the merge event.  RES is the VMA the merge produced (NULL:
 * not merged), ERR a failure of the merge itself. */
static __always_inline void merge_done(void *ctx, struct merge_inflight *m, struct vm_area_struct *res, int err)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	int zero = 0;
	struct vt_merge *e = merge_buf.lookup(&zero);
	if (!e)
		return;
	fill_hdr(&e->h, VT_EV_MERGE, pid_tgid);
	e->start = m->req.start;
	e->end = m->req.end;
	e->vm_flags = m->req.vm_flags;
	e->source = m->source;
	e->prev_start = m->prev_start;
	e->prev_end = m->prev_end;
	e->next_start = m->next_start;
	e->next_end = m->next_end;
	e->res_start = 0;
	e->res_end = 0;
	int with_prev = 0, with_next = 0;
	if (err) {
		e->outcome = VT_MERGE_ERROR;
	} else if (!res) {
		e->outcome = VT_MERGE_NONE;
	} else {
		e->res_start = vma_start(res);
		e->res_end = vma_end(res);
		with_prev = e->res_start < m->req.start;
		with_next = e->res_end > m->req.end;
		e->outcome = with_prev && with_next ? VT_MERGE_BOTH : with_prev ? VT_MERGE_PREV : VT_MERGE_NEXT;
		with_next = !with_prev || with_next;    /* merged, not with prev: with next */
	}
	read_name(e->name, m->req.name);
	if (with_prev) {
		e->prev_cause = 0;
		e->prev_name[0] = 0;
	} else {
		read_name(e->prev_name, vma_anon_name(m->prev));
		e->prev_cause = neighbour_cause(m->prev, m->prev_start, m->prev_end, 1, &m->req, e->prev_name, e->name);
	}
	e->next_name[0] = 0;
	if (with_next) {
		e->next_cause = 0;
	} else if (m->middle_end && m->req.end < m->middle_end) {
		e->next_cause = VT_CAUSE_INSIDE;
	} else if (m->next) {
		read_name(e->next_name, vma_anon_name(m->next));
		e->next_cause = neighbour_cause(m->next, m->next_start, m->next_end, 0, &m->req, e->next_name, e->name);
	} else {
		e->next_cause = m->next_seen ? VT_CAUSE_NO_VMA : VT_CAUSE_UNSEEN;
	}
	submit(ctx, e, sizeof(*e));
}

#if defined(MERGE_VMA_MERGE) || defined(MERGE_VMA_MERGE_VMI) || defined(MERGE_VMA_MERGE_SRC)
/* vma_merge(): 5.17-6.2 (mm, prev, addr, end, vm_flags, anon_vma, file, pgoff,
 * policy, vm_userfaultfd_ctx, anon_name); 6.3-6.8 the same with vmi in front;
 * 6.9-6.11 (vmi, prev, src, addr, end, vm_flags, pgoff, policy,
 * vm_userfaultfd_ctx, anon_name), anon_vma and file being src's.
 * Every argument is read at the slot the plan computed for this kernel. */
int kp_vma_merge(struct pt_regs *ctx)
{
	if (!is_watched(bpf_get_current_pid_tgid()))
		return 0;
	struct merge_inflight m = {};
	m.source = VT_SRC_VMA_MERGE;
	m.prev = (struct vm_area_struct *)ARG(ctx, kp_vma_merge, prev);
	m.req.start = ARG(ctx, kp_vma_merge, addr);
	m.req.end = ARG(ctx, kp_vma_merge, end);
	m.req.vm_flags = ARG(ctx, kp_vma_merge, vm_flags);
#ifdef MERGE_VMA_MERGE_SRC
	struct vm_area_struct *src = (struct vm_area_struct *)ARG(ctx, kp_vma_merge, src);
	m.req.anon_vma = (struct anon_vma *)rd64(VMA(src, ANON_VMA));
	m.req.file = (struct file *)rd64(VMA(src, VM_FILE));
#else
	m.req.anon_vma = (struct anon_vma *)ARG(ctx, kp_vma_merge, anon_vma);
	m.req.file = (struct file *)ARG(ctx, kp_vma_merge, file);
#endif
	m.req.pgoff = ARG(ctx, kp_vma_merge, pgoff);
	/* struct vm_userfaultfd_ctx { ctx } by value: one word (the plan checked its size) */
	m.req.uffd_ctx = (void *)ARG(ctx, kp_vma_merge, vm_userfaultfd_ctx);
	m.req.name = (struct anon_vma_name *)ARG(ctx, kp_vma_merge, anon_name);
	merge_begin(&m);
	return 0;
}

/* vma_merge() looks at the following VMA only through
 * can_vma_merge_before(next, ...), called when next is adjacent: that is
 * where we learn which VMA it is. */
int kp_can_merge_before(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct merge_inflight *m = merge_state.lookup(&tid);
	if (m && !m->next_seen) {
		m->next = (struct vm_area_struct *)ARG(ctx, kp_can_merge_before, vma);
		m->next_seen = 1;
		m->next_start = vma_start(m->next);
		m->next_end = vma_end(m->next);
	}
	return 0;
}

int kr_vma_merge(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct merge_inflight *m = merge_state.lookup(&tid);
	if (!m)
		return 0;
	merge_done(ctx, m, (struct vm_area_struct *)PT_REGS_RC(ctx), 0);
	merge_state.delete(&tid);
	return 0;
}
#endif /* MERGE_VMA_MERGE || MERGE_VMA_MERGE_VMI || MERGE_VMA_MERGE_SRC */

#ifdef MERGE_VMG
/* struct vma_merge_struct (mm/vma.h, 6.12+) is not in the kernel headers:
 * member offsets come from BTF as VMG_<MEMBER>_OFF. */
#define VMG(vmg, F) ((void *)(vmg) + VMG_##F##_OFF)
#define VMA_MERGE_ERROR_NOMEM 1
#define VMA_MERGE_SUCCESS 3

static __always_inline void vmg_read_req(struct merge_inflight *m, void *vmg)
{
	m->vmg = vmg;
	m->prev = (struct vm_area_struct *)rd64(VMG(vmg, PREV));
	m->req.start = rd64(VMG(vmg, START));
	m->req.end = rd64(VMG(vmg, END));
	m->req.vm_flags = rd64(VMG(vmg, FLAGS));
	m->req.pgoff = rd64(VMG(vmg, PGOFF));
	m->req.file = (struct file *)rd64(VMG(vmg, FILE));
	m->req.anon_vma = (struct anon_vma *)rd64(VMG(vmg, ANON_VMA));
	m->req.uffd_ctx = (void *)rd64(VMG(vmg, UFFD));
	m->req.name = (struct anon_vma_name *)rd64(VMG(vmg, ANON_NAME));
}

/* vma_merge_new_range(vmg): a new range (mmap, brk, mremap growth); the
 * caller set prev and next. */
int kp_vmg_new(struct pt_regs *ctx)
{
	if (!is_watched(bpf_get_current_pid_tgid()))
		return 0;
	struct merge_inflight m = {};
	m.source = VT_SRC_NEW_RANGE;
	vmg_read_req(&m, (void *)ARG(ctx, kp_vmg_new, vmg));
	m.next = (struct vm_area_struct *)rd64(VMG(m.vmg, NEXT));
	m.next_seen = 1;
	merge_begin(&m);
	return 0;
}

/* vma_merge_existing_range(vmg), or vma_modify(vmg) it is inlined into:
 * change [start, end) of the VMA vmg->middle (6.12: vmg->vma). prev is the
 * VMA before it (or the middle itself when start is inside); next is found
 * inside, only when end == middle's end. */
int kp_vmg_existing(struct pt_regs *ctx)
{
	if (!is_watched(bpf_get_current_pid_tgid()))
		return 0;
	struct merge_inflight m = {};
	m.source = VT_SRC_EXISTING;
	vmg_read_req(&m, (void *)ARG(ctx, kp_vmg_existing, vmg));
	m.middle_end = vma_end((struct vm_area_struct *)rd64(VMG(m.vmg, MIDDLE)));
	merge_begin(&m);
	return 0;
}

static __always_inline int vmg_return(struct pt_regs *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct merge_inflight *m = merge_state.lookup(&tid);
	if (!m)
		return 0;
	/* the vmg lives in the caller's frame: still valid here */
	u32 state = rd32(VMG(m->vmg, STATE));
	if (m->source == VT_SRC_EXISTING && m->req.end == m->middle_end) {
		m->next = (struct vm_area_struct *)rd64(VMG(m->vmg, NEXT));
		m->next_seen = 1;
		m->next_start = vma_start(m->next);
		m->next_end = vma_end(m->next);
	}
	struct vm_area_struct *res = NULL;
	if (state == VMA_MERGE_SUCCESS)
		res = (struct vm_area_struct *)PT_REGS_RC(ctx);
	merge_done(ctx, m, res, state == VMA_MERGE_ERROR_NOMEM);
	merge_state.delete(&tid);
	return 0;
}

/* The return of vma_merge_new_range and of vma_merge_existing_range/vma_modify
 * (the plan's kr_vmg_new and kr_vmg_existing run this one program; m->source
 * tells them apart): merge_done is compiled once, not twice. */
int kr_vmg(struct pt_regs *ctx) { return vmg_return(ctx); }
#endif /* MERGE_VMG */

/* ======================================================================== */
/* splits                                                                   */
/* ======================================================================== */
struct split_inflight {
	struct vm_area_struct *vma;
	u64 start;
	u64 end;
	u64 addr;
	u32 new_below;
};
BPF_HASH(split_state, u32, struct split_inflight, 1024);
BPF_PERCPU_ARRAY(split_buf, struct vt_split, 1);

#ifdef SPLIT_PROBE
/* __split_vma(mm or vmi, vma, addr, new_below) */
int kp_split(struct pt_regs *ctx)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!is_watched(pid_tgid))
		return 0;
	u32 tid = (u32)pid_tgid;
	struct split_inflight s = {};
	s.vma = (struct vm_area_struct *)ARG(ctx, kp_split, vma);
	s.start = vma_start(s.vma);
	s.end = vma_end(s.vma);
	s.addr = ARG(ctx, kp_split, addr);
	s.new_below = (u32)ARG(ctx, kp_split, new_below);
	split_state.update(&tid, &s);
	return 0;
}

int kr_split(struct pt_regs *ctx)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	struct split_inflight *s = split_state.lookup(&tid);
	if (!s)
		return 0;
	int zero = 0;
	struct vt_split *e = split_buf.lookup(&zero);
	if (e) {
		fill_hdr(&e->h, VT_EV_SPLIT, pid_tgid);
		e->vma_start = s->start;
		e->vma_end = s->end;
		e->addr = s->addr;
		e->new_below = s->new_below;
		e->ret = (s64)(int)PT_REGS_RC(ctx);
		struct anon_vma_name *an = vma_anon_name(s->vma);
		read_name(e->name, an);
		e->refcount = name_refcount(an);
		submit(ctx, e, sizeof(*e));
	}
	split_state.delete(&tid);
	return 0;
}
#endif

/* ======================================================================== */
/* fork: dup_mmap latency, VMAs copied, name references taken                */
/* ======================================================================== */
struct fork_counts {
	u32 vmas_copied;
	u32 named_copied;
};
struct fork_inflight {
	u64 ts;
	u64 latency_ns;
	u32 map_count;
	struct fork_counts n;
	u16 done;
	u16 counts;	/* where vm_area_dup counts this fork (VT_COUNTS_*) */
};
#define VT_COUNTS_SLOT 1
#define VT_COUNTS_HASH 2
BPF_HASH(fork_state, u32, struct fork_inflight, 1024);
#if defined(VMA_DUP_KFUNC) || defined(VMA_DUP_PROBE)
#define VMA_DUP_COUNTS 1
/* The program on vm_area_dup runs once per copied VMA (65K times in a fork of
 * 65K VMAs), so it finds the fork's counters without a helper call that does
 * work: a forking thread claims the array slot TID % FORK_SLOTS when dup_mmap
 * starts (an array lookup is inlined by the verifier: no hashing, no call);
 * the claim itself is a BPF_NOEXIST insert into fork_claims, atomic, once per
 * fork.  A thread whose slot another forking thread holds counts in its
 * fork_state entry instead (a hash lookup per VMA), and fork_fallbacks tells
 * vm_area_dup's program to look there.  Either way every count is exact.
 * Measured under TCG (x86_64 6.12, 65,030 named VMAs, benchmarks/fork_floor.py,
 * side by side): an empty fentry 1.15x an untraced fork, full mode with the
 * slot 1.18x, with task-local storage (before) 1.35x. */
#ifndef FORK_SLOTS
#define FORK_SLOTS 1024
#endif
struct fork_slot {
	u32 tid;	/* the owner (0: free) */
	struct fork_counts n;
};
BPF_ARRAY(fork_slots, struct fork_slot, FORK_SLOTS);
BPF_HASH(fork_claims, u32, u32, FORK_SLOTS);
BPF_ARRAY(fork_fallbacks, u32, 1);  /* forks counting in fork_state now */

/* the current thread's counters if it is in a watched fork, else NULL */
static __always_inline struct fork_counts *fork_counts(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u32 idx = tid % FORK_SLOTS;
	struct fork_slot *s = fork_slots.lookup(&idx);
	if (s && s->tid == tid)
		return &s->n;
	u32 zero = 0;
	u32 *fb = fork_fallbacks.lookup(&zero);
	if (!fb || !*fb)
		return 0;  /* not forking (or not watched): the common case off the fork path */
	struct fork_inflight *f = fork_state.lookup(&tid);
	if (!f || f->done || f->counts != VT_COUNTS_HASH)
		return 0;
	return &f->n;
}

static __always_inline void fork_fallbacks_add(int d)
{
	u32 zero = 0;
	u32 *fb = fork_fallbacks.lookup(&zero);
	if (fb)
		__sync_fetch_and_add(fb, d);
}

/* where this fork will count: its slot, or its fork_state entry */
static __always_inline u16 fork_counts_claim(u32 tid)
{
	struct fork_inflight *old = fork_state.lookup(&tid);
	if (old && !old->done && old->counts == VT_COUNTS_HASH)
		fork_fallbacks_add(-1);  /* a fork of this thread whose end was missed */
	u32 idx = tid % FORK_SLOTS;
	struct fork_slot *s = fork_slots.lookup(&idx);
	if (!s)
		return 0;
#ifndef FORK_SLOTS_OFF
	/* our own claim may be left from a fork whose end was missed: take it again */
	if (fork_claims.insert(&idx, &tid) == 0 || s->tid == tid) {
		s->n.vmas_copied = 0;
		s->n.named_copied = 0;
		s->tid = tid;
		return VT_COUNTS_SLOT;
	}
#endif
	fork_fallbacks_add(1);
	return VT_COUNTS_HASH;
}

static __always_inline void fork_counts_release(u32 tid, struct fork_inflight *f)
{
	if (f->counts == VT_COUNTS_SLOT) {
		u32 idx = tid % FORK_SLOTS;
		struct fork_slot *s = fork_slots.lookup(&idx);
		if (s && s->tid == tid) {
			f->n = s->n;
			s->tid = 0;
		}
		fork_claims.delete(&idx);
	} else if (f->counts == VT_COUNTS_HASH) {
		fork_fallbacks_add(-1);
	}
	f->counts = 0;
}
#endif
BPF_PERCPU_ARRAY(fork_buf, struct vt_fork, 1);

static __always_inline int fork_begin(struct mm_struct *oldmm)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!is_watched(pid_tgid))
		return 0;
	u32 tid = (u32)pid_tgid;
	struct fork_inflight f = {};
	f.map_count = rd32((void *)oldmm + MM_MAP_COUNT_OFF);
	f.ts = bpf_ktime_get_ns();
#ifdef VMA_DUP_COUNTS
	f.counts = fork_counts_claim(tid);
#endif
	fork_state.update(&tid, &f);
	return 0;
}

#ifdef FORKLAT
/* `vmabpf forklat`: log2 histograms of dup_mmap latency, aggregated here.
 * FORKLAT_BY: 1 = by log2(map_count), 2 = named/unnamed, 3 = by comm.
 * FORKLAT_DIV: nanoseconds per reported unit. */
struct forklat_key {
	char comm[16];
	u32 section;
	u32 slot;
};
struct forklat_total {
	u64 count;
	u64 sum_ns;
};
BPF_HASH(forklat_hist, struct forklat_key, u64, 4096);
BPF_HASH(forklat_totals, struct forklat_key, struct forklat_total, 1024);

static __always_inline void forklat_account(struct fork_inflight *f)
{
	struct forklat_key key = {};
#if FORKLAT_BY == 1
	key.section = bpf_log2l(f->map_count);
#elif FORKLAT_BY == 2
	key.section = f->n.named_copied ? 1 : 0;
#else
	bpf_get_current_comm(&key.comm, sizeof(key.comm));
#endif
	struct forklat_total zero_total = {};
	struct forklat_total *t = forklat_totals.lookup_or_try_init(&key, &zero_total);
	if (t) {
		__sync_fetch_and_add(&t->count, 1);
		__sync_fetch_and_add(&t->sum_ns, f->latency_ns);
	}
	key.slot = bpf_log2l(f->latency_ns / FORKLAT_DIV);
	u64 zero = 0;
	u64 *n = forklat_hist.lookup_or_try_init(&key, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}
#endif

static __always_inline int fork_end(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct fork_inflight *f = fork_state.lookup(&tid);
	if (f && !f->done) {
		f->latency_ns = bpf_ktime_get_ns() - f->ts;
		f->done = 1;
#ifdef VMA_DUP_COUNTS
		fork_counts_release(tid, f);
#endif
#ifdef FORKLAT
		forklat_account(f);
#endif
#ifdef FORK_NO_EVENTS
		fork_state.delete(&tid);
#endif
	}
	return 0;
}

#ifdef FORK_DUP_MMAP
/* dup_mmap(mm, oldmm) */
int kp_dup_mmap(struct pt_regs *ctx)
{
	return fork_begin((struct mm_struct *)ARG(ctx, kp_dup_mmap, oldmm));
}

int kr_dup_mmap(struct pt_regs *ctx)
{
	return fork_end();
}
#endif

#ifdef FORK_UPROBE_WINDOW
/* dup_mmap() inlined: it starts with uprobe_start_dup_mmap() and ends with
 * uprobe_end_dup_mmap(); the parent's mm is current->mm. */
int kp_dup_mmap_start(struct pt_regs *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	return fork_begin((struct mm_struct *)rd64((void *)task + TASK_MM_OFF));
}

int kp_dup_mmap_end(struct pt_regs *ctx)
{
	return fork_end();
}
#endif

#if (defined(FORK_DUP_MMAP) || defined(FORK_UPROBE_WINDOW)) && !defined(FORK_NO_EVENTS)
/* sched_process_fork: the child exists now; send the fork event. */
TRACEPOINT_PROBE(sched, sched_process_fork)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	struct fork_inflight *f = fork_state.lookup(&tid);
	if (!f)
		return 0;
	if (!f->done) {  /* dup_mmap's end was missed */
#ifdef VMA_DUP_COUNTS
		fork_counts_release(tid, f);
#endif
		fork_state.delete(&tid);
		return 0;
	}
	int zero = 0;
	struct vt_fork *e = fork_buf.lookup(&zero);
	if (e) {
		fill_hdr(&e->h, VT_EV_FORK, pid_tgid);
		e->latency_ns = f->latency_ns;
		e->child_pid = args->child_pid;
		e->map_count = f->map_count;
		e->vmas_copied = f->n.vmas_copied;
		e->named_copied = f->n.named_copied;
#ifdef FORK_DUP_MMAP
		e->probe = VT_PROBE_DUP_MMAP;
#else
		e->probe = VT_PROBE_DUP_MMAP_WINDOW;
#endif
		submit(args, e, sizeof(*e));
	}
#if defined(FILTER_PIDS) && defined(FOLLOW_CHILDREN)
	u32 child = args->child_pid;
	u8 one = 1;
	watched.update(&child, &one);
#endif
	fork_state.delete(&tid);
	return 0;
}
#endif

#ifdef VMA_DUP_PROBE
/* vm_area_dup() returns the copy; a named copy took one name reference. */
int kr_vm_area_dup(struct pt_regs *ctx)
{
	struct vm_area_struct *vma = (struct vm_area_struct *)PT_REGS_RC(ctx);
	if (!vma)
		return 0;
	struct fork_counts *n = fork_counts();
	if (!n)
		return 0;
	n->vmas_copied++;
	if (vma_anon_name(vma))
		n->named_copied++;
	return 0;
}
#endif

#ifdef VMA_DUP_KFUNC
/* fentry: the original is read, not the copy.  vm_area_dup() copies *orig and
 * dup_anon_vma_name() gives the copy orig's name (a reference; a new object
 * only when the refcount would saturate): the copy is named exactly when orig
 * is, and dup_mmap holds oldmm's mmap write lock, so orig cannot change under
 * us.  A call that fails (NULL) is counted too, but then dup_mmap fails, the
 * fork fails and no fork event is sent: every count reported is of a whole
 * copy.  An fentry trampoline returns into the function where fexit calls it
 * and takes its return: cheaper per hit (benchmarks/fork_floor.py: 1.15x
 * against 1.19x empty, x86_64 6.12 under TCG). */
KFUNC_PROBE(vm_area_dup, struct vm_area_struct *orig)
{
	struct fork_counts *n = fork_counts();
	if (!n)
		return 0;
	n->vmas_copied++;
	/* vma_anon_name()'s rule: a file VMA has no anon name (6.1: a union with shared.rb) */
	if (!*(struct file **)VMA(orig, VM_FILE) && *(struct anon_vma_name **)VMA(orig, ANON_NAME))
		n->named_copied++;
	return 0;
}
#endif

/* ======================================================================== */
/* anon_vma_name objects                                                     */
/* ======================================================================== */
BPF_PERCPU_ARRAY(name_obj_buf, struct vt_name_obj, 1);
/* name objects allocated by watched processes and not yet freed -> the
 * allocating TGID: a free is reported to that process even when another
 * one drops the last reference (a child exiting) */
BPF_HASH(live_names, u64, u32, 65536);

/* OWNER: the TGID the event is accounted to (0: the current process) */
static __always_inline int name_obj_event(void *ctx, u32 type, struct anon_vma_name *an, u32 owner)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!an || !(owner || is_watched(pid_tgid)))
		return 0;
	int zero = 0;
	struct vt_name_obj *e = name_obj_buf.lookup(&zero);
	if (!e)
		return 0;
	fill_hdr(&e->h, type, pid_tgid);
	if (owner)
		e->h.pid = owner;
	e->ptr = (u64)an;
	e->refcount = name_refcount(an);
	read_name(e->name, an);
	submit(ctx, e, sizeof(*e));
	return 0;
}

/* the allocating TGID of a name object we saw allocated (and forget it), or 0 */
static __always_inline u32 forget_name(u64 key)
{
	u32 *owner = live_names.lookup(&key);
	if (!owner)
		return 0;
	u32 tgid = *owner;
	live_names.delete(&key);
	return tgid;
}

#ifdef NAME_ALLOC_PROBE
int kr_name_alloc(struct pt_regs *ctx)
{
	struct anon_vma_name *an = (struct anon_vma_name *)PT_REGS_RC(ctx);
	u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!an || !is_watched(pid_tgid))
		return 0;
	u64 key = (u64)an;
	u32 tgid = pid_tgid >> 32;
	live_names.update(&key, &tgid);
	return name_obj_event(ctx, VT_EV_NAME_ALLOC, an, tgid);
}
#endif

#ifdef NAME_FREE_PROBE
/* anon_vma_name_free(struct kref *kref): the object around that kref */
int kp_name_free(struct pt_regs *ctx)
{
	u64 key = ARG(ctx, kp_name_free, kref) - NAME_KREF_OFF;
	return name_obj_event(ctx, VT_EV_NAME_FREE, (struct anon_vma_name *)key, forget_name(key));
}
#endif

#ifdef NAME_FREE_KFREE
/* Where anon_vma_name_free() was inlined, only its kfree() is left to see.
 * Runs for every kfree(): one hash lookup. */
TRACEPOINT_PROBE(kmem, kfree)
{
	u64 key = (u64)args->ptr;
	u32 owner = forget_name(key);
	if (!owner)
		return 0;
	/* the object is being freed but its bytes are still intact here */
	return name_obj_event(args, VT_EV_NAME_FREE, (struct anon_vma_name *)key, owner);
}
#endif

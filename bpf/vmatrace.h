/* vmatrace.h - the event records vmabpf's BPF programs send to user space.
 *
 * THE single definition of the event layout: vmatrace_bpf/events.py reads the
 * structs and constants below from this file (only fixed-size integer fields
 * and char arrays, one per line), and tests/unit/test_layout.py compiles this
 * header with the host C compiler and checks every offset and size against
 * the Python side.  Keep to that subset: `TYPE NAME;` or `char NAME[N];`.
 */
#ifndef VMATRACE_H
#define VMATRACE_H

#ifndef __VMATRACE_BPF__
#include <stdint.h>
typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int32_t s32;
typedef int64_t s64;
#endif

/* Constants shared with Python (events.py reads every VT_ define). */
#define VT_NAME_LEN 80          /* ANON_VMA_NAME_MAX_LEN, terminating NUL included */
#define VT_COMM_LEN 16          /* TASK_COMM_LEN */
#define VT_PR_SET_VMA 0x53564d41
#define VT_PR_SET_VMA_ANON_NAME 0

/* vm_flags bits of the merge test (include/linux/mm.h; these values since 2.6).  <linux/mm.h> does not
 * compile for the BPF target on 7.x, and the tracefs backend computes the merge causes on the host. */
#define VT_VM_SPECIAL 0x10044400        /* VM_IO 0x4000 | VM_DONTEXPAND 0x40000 | VM_PFNMAP 0x400 | VM_MIXEDMAP 0x10000000 */
#define VT_VM_SOFTDIRTY_BIT 0x08000000  /* VM_SOFTDIRTY with CONFIG_MEM_SOFT_DIRTY (ignored by the merge test) */

/* event types */
#define VT_EV_NAME_SET 1
#define VT_EV_MERGE 2
#define VT_EV_SPLIT 3
#define VT_EV_FORK 4
#define VT_EV_NAME_ALLOC 5
#define VT_EV_NAME_FREE 6

/* merge outcome */
#define VT_MERGE_NONE 0         /* not merged */
#define VT_MERGE_PREV 1         /* merged with the VMA before the range */
#define VT_MERGE_NEXT 2         /* merged with the VMA after it */
#define VT_MERGE_BOTH 3         /* prev, range and next became one */
#define VT_MERGE_ERROR 4        /* the merge itself failed (-ENOMEM) */

/* where the merge attempt was seen */
#define VT_SRC_VMA_MERGE 1      /* vma_merge() (<= 6.11) */
#define VT_SRC_NEW_RANGE 2      /* vma_merge_new_range(): mmap, brk, stack */
#define VT_SRC_EXISTING 3       /* vma_merge_existing_range()/vma_modify(): mprotect, madvise, prctl names, mlock... */

/* which probe timed a fork (struct vt_fork.probe) */
#define VT_PROBE_DUP_MMAP 1             /* dup_mmap() entry to return */
#define VT_PROBE_DUP_MMAP_WINDOW 2      /* uprobe_start_dup_mmap() to uprobe_end_dup_mmap() (dup_mmap inlined) */

/* Why a neighbour could not take the range: the checks of the kernel's
 * is_mergeable_vma()/can_vma_merge_*(), each a bit, all computed. */
#define VT_CAUSE_NO_VMA 0x1     /* no neighbour VMA on this side */
#define VT_CAUSE_NOT_ADJACENT 0x2
#define VT_CAUSE_FLAGS 0x4      /* vm_flags differ (VM_SOFTDIRTY ignored) */
#define VT_CAUSE_FILE 0x8
#define VT_CAUSE_ANON_VMA 0x10  /* both have an anon_vma and they differ */
#define VT_CAUSE_PGOFF 0x20     /* page offsets not contiguous */
#define VT_CAUSE_UFFD 0x40      /* userfaultfd contexts differ */
#define VT_CAUSE_NAME 0x80      /* anon_vma_name differs */
#define VT_CAUSE_SPECIAL 0x100  /* VM_SPECIAL (pfnmap, io, mixedmap, dontexpand) */
#define VT_CAUSE_UNSEEN 0x200   /* the kernel did not look at this side (or vmabpf could not see it) */
#define VT_CAUSE_INSIDE 0x400   /* the range starts/ends inside a VMA: nothing to merge with on this side */

/* flags on events */
#define VT_F_NAME_TRUNCATED 0x1 /* name did not fit VT_NAME_LEN (reported as read) */
#define VT_F_NAME_NULL 0x2      /* NULL name (prctl clears the name) */
#define VT_F_FILE_BACKED 0x4

struct vt_hdr {
	u64 ts;                 /* bpf_ktime_get_ns() */
	u32 type;               /* VT_EV_* */
	u32 pid;                /* TGID */
	u32 tid;
	u32 flags;              /* VT_F_* */
	char comm[16];
};

struct vt_name_set {
	struct vt_hdr h;
	u64 addr;
	u64 len;
	s64 ret;                /* 0 or -errno */
	char name[80];
};

struct vt_merge {
	struct vt_hdr h;
	u64 start;
	u64 end;
	u64 vm_flags;
	u64 prev_start;         /* 0/0 when there is no such VMA */
	u64 prev_end;
	u64 next_start;
	u64 next_end;
	u64 res_start;          /* the merged VMA, when merged */
	u64 res_end;
	u32 source;             /* VT_SRC_* */
	u32 outcome;            /* VT_MERGE_* */
	u32 prev_cause;         /* VT_CAUSE_* bits, 0 = mergeable */
	u32 next_cause;
	char name[80];          /* the name proposed for the range */
	char prev_name[80];
	char next_name[80];
};

struct vt_split {
	struct vt_hdr h;
	u64 vma_start;          /* the VMA before the split */
	u64 vma_end;
	u64 addr;               /* split address */
	s64 ret;
	u32 new_below;
	u32 refcount;           /* anon_vma_name kref after the split, 0 if unnamed */
	char name[80];
};

struct vt_fork {
	struct vt_hdr h;
	u64 latency_ns;         /* dup_mmap() */
	u32 child_pid;
	u32 map_count;          /* parent's VMAs */
	u32 vmas_copied;        /* vm_area_dup() calls in this fork */
	u32 named_copied;       /* of those, VMAs with a name: kref increments */
	u32 probe;              /* VT_PROBE_* */
	u32 pad;
};

struct vt_name_obj {
	struct vt_hdr h;
	u64 ptr;                /* struct anon_vma_name * (identity only) */
	u32 refcount;
	u32 pad;
	char name[80];
};

#endif /* VMATRACE_H */

/* pgwarden host probes: the maps and the data path shared by all probe files.
 *
 * Loaded by agent/probes.py with bcc, which appends the files of each concern to this one (bcc
 * generates tracepoint argument structs only for probes in the text it is given, not in
 * #included files):
 *   lifecycle.c   postmasters, accept -> fork = backend start, exits            (tracepoints)
 *   clients.c     which local process connected (TCP and unix sockets)          (tracepoints)
 *   secure_rw.c   primary data hooks: uprobes on postgres secure_read/secure_write
 *   joined.c      with secure_rw.c: the first read of backends that predate the agent
 *   syscall_rw.c  fallback data hooks: recvfrom/sendto tracepoints (instead of both)
 * The kernel only classifies and copies; user space (agent/pgwire) decodes.
 */
#include <uapi/linux/ptrace.h>
#include "events.h"

BPF_HASH(postmasters, u32, u8, 1024);                  /* tgid -> 1: processes whose children we track */
BPF_HASH(backends, u32, struct backend, 65536);        /* backend tgid -> stream state */
BPF_HASH(pg_ports, u16, u8, 64);                       /* TCP ports PostgreSQL listens on (agent fills) */
BPF_TABLE("lru_hash", u32, struct exe_name, exec_names, 32768);  /* tgid -> exec'ed file */

BPF_PERCPU_ARRAY(scratch, struct data_event, 1);       /* too big for the 512-byte stack */
BPF_PERCPU_ARRAY(scratch_busy, u32, 1);                /* guards scratch against nested programs */
BPF_PERCPU_ARRAY(stats, u64, STAT_MAX);

BPF_RINGBUF_OUTPUT(data_events, DATA_RING_PAGES);      /* size set by the agent (-DDATA_RING_PAGES) */
BPF_RINGBUF_OUTPUT(ctl_events, 1024);                  /* separate, so data floods never drop lifecycle */

static __always_inline void count(u32 idx, u64 n)
{
    u64 *v = stats.lookup(&idx);
    if (v)
        *v += n;    /* per-CPU slot: no atomic needed */
}

/* Reserve a zeroed lifecycle event in the ring (no stack copy: ctl_event is large); the caller
 * fills it and calls submit_ctl. Returns NULL (and counts the drop) when the ring is full. */
static __always_inline struct ctl_event *reserve_ctl(u32 kind, u32 tgid)
{
    struct ctl_event *e = ctl_events.ringbuf_reserve(sizeof(struct ctl_event));
    if (!e) {
        count(STAT_DROP_CTL_RINGBUF_FULL, 1);
        return NULL;
    }
    __builtin_memset(e, 0, sizeof(*e));
    e->ts_ns = bpf_ktime_get_ns();
    e->boot_ns = bpf_ktime_get_boot_ns();
    e->kind = kind;
    e->tgid = tgid;
    return e;
}

/* Lifecycle events wake the consumer; data events never do (the agent polls), which keeps the
 * per-call cost of the hot path to the copy itself. */
static __always_inline void submit_ctl(struct ctl_event *e)
{
    ctl_events.ringbuf_submit(e, 0);
    count(STAT_CTL_EVENTS, 1);
}

/* Copy `ret` bytes the backend just moved through `buf`, in chunks, into the data ring.
 * Called at return (uretprobe / sys_exit), so `ret` is what really moved: a partial write is
 * never double-counted. The stream position advances even when the copy is dropped. */
static __always_inline void emit_data(struct backend *b, u32 tgid, u8 dir, u64 buf, s64 ret,
                                      u8 source)
{
    u64 pos;
    if (dir == DIR_FRONTEND) {
        pos = b->rd_pos;
        b->rd_pos += ret;
    } else {
        pos = b->wr_pos;
        b->wr_pos += ret;
    }
    u32 zero = 0;
    u32 *busy = scratch_busy.lookup(&zero);
    if (!busy)
        return;
    if (*busy) {                 /* preempted inside another program on this CPU */
        count(STAT_DROP_BUSY, 1);
        return;
    }
    *busy = 1;
    struct data_event *e = scratch.lookup(&zero);
    if (!e)
        goto out;
    e->ts_ns = bpf_ktime_get_ns();
    e->tgid = tgid;
    e->gen = b->gen;
    e->direction = dir;
    e->source = source;
    e->flags = 0;
    u64 off = 0;
    for (int i = 0; i < CHUNKS_MAX; i++) {
        if (off >= (u64)ret)
            break;
        u64 n = (u64)ret - off;
        if (n > CHUNK_MAX)
            n = CHUNK_MAX;
        asm volatile("" : "+r"(n));   /* keep clang from dropping the bound the verifier needs */
        if (n > CHUNK_MAX)
            n = CHUNK_MAX;
        e->pos = pos + off;
        e->len = n;
        if (bpf_probe_read_user(e->payload, n, (void *)(buf + off)) != 0) {
            count(STAT_DROP_READ_FAIL, 1);
        } else if (data_events.ringbuf_output(e, DATA_HEADER_SIZE + n, BPF_RB_NO_WAKEUP) != 0) {
            count(STAT_DROP_RINGBUF_FULL, 1);
        } else {
            count(STAT_DATA_EVENTS, 1);
            count(STAT_DATA_BYTES, n);
        }
        off += n;
    }
    if (off < (u64)ret)
        count(STAT_DROP_OVERSIZE, (u64)ret - off);
out:
    *busy = 0;
}

/* The return half of a data hook: `buf` was stashed by the entry half in b->rd_buf/wr_buf. */
static __always_inline void finish_rw(u8 dir, s64 ret, u8 source)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct backend *b = backends.lookup(&tgid);
    if (!b)
        return;
    u64 buf = dir == DIR_FRONTEND ? b->rd_buf : b->wr_buf;
    if (dir == DIR_FRONTEND)
        b->rd_buf = 0;
    else
        b->wr_buf = 0;
    if (ret <= 0)
        return;
    if (!buf && source == SOURCE_SYSCALL)
        return;                  /* another socket of the backend (postgres_fdw, dblink) */
    if (!buf) {                  /* attached between entry and return: position still advances */
        if (dir == DIR_FRONTEND)
            b->rd_pos += ret;
        else
            b->wr_pos += ret;
        if (b->flags & BACKEND_JOINED)
            count(STAT_JOINED_SKIPS, 1);
        else
            count(STAT_DROP_NO_ENTRY, 1);
        return;
    }
    emit_data(b, tgid, dir, buf, ret, source);
}

static __always_inline void stash_rw(u8 dir, u64 buf)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct backend *b = backends.lookup(&tgid);
    if (!b)
        return;
    if (dir == DIR_FRONTEND) {
        b->rd_buf = buf;
        b->flags &= ~BACKEND_JOINED;   /* from here on the uprobes see every read */
    } else {
        b->wr_buf = buf;
    }
}

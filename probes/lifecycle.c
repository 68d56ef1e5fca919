/* Lifecycle: which processes are postmasters, which of their children are client backends.
 *
 * PostgreSQL's postmaster accept()s a connection and fork()s the backend at once
 * (ServerLoop -> ConnCreate/StreamConnection -> BackendStartup, src/backend/postmaster/postmaster.c),
 * so "a fork of a postmaster with an accept pending" is a client backend. It is registered in
 * `backends` at fork time, before the child runs: its first bytes are never missed.
 */
#define AF_UNIX_ 1
#define AF_INET_ 2
#define AF_INET6_ 10

struct accept_info {
    u64 sockaddr;     /* user pointer stashed at sys_enter_accept{,4} */
    s32 fd;           /* set at sys_exit */
    u16 family;
    u16 port;         /* peer port, host order */
    u8  addr[16];     /* peer address (4 bytes for AF_INET) */
};

BPF_HASH(accepts, u32, struct accept_info, 1024);      /* postmaster tgid -> pending accept */

static __always_inline int accept_enter(u64 sockaddr)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (!postmasters.lookup(&tgid))
        return 0;
    struct accept_info a = {};
    a.sockaddr = sockaddr;
    a.fd = -1;
    accepts.update(&tgid, &a);
    return 0;
}

static __always_inline int accept_exit(long ret)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct accept_info *a = accepts.lookup(&tgid);
    if (!a)
        return 0;
    if (ret < 0) {
        accepts.delete(&tgid);
        return 0;
    }
    a->fd = ret;
    if (a->sockaddr) {
        u16 family = 0;
        bpf_probe_read_user(&family, sizeof(family), (void *)a->sockaddr);
        a->family = family;
        u16 port_be = 0;
        if (family == AF_INET_ || family == AF_INET6_) {
            bpf_probe_read_user(&port_be, sizeof(port_be), (void *)(a->sockaddr + 2));
            a->port = (port_be >> 8) | (port_be << 8);
        }
        if (family == AF_INET_)          /* struct sockaddr_in: sin_addr at offset 4 */
            bpf_probe_read_user(a->addr, 4, (void *)(a->sockaddr + 4));
        else if (family == AF_INET6_)    /* struct sockaddr_in6: sin6_addr at offset 8 */
            bpf_probe_read_user(a->addr, 16, (void *)(a->sockaddr + 8));
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_accept) { return accept_enter((u64)args->upeer_sockaddr); }
TRACEPOINT_PROBE(syscalls, sys_enter_accept4) { return accept_enter((u64)args->upeer_sockaddr); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept) { return accept_exit(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) { return accept_exit(args->ret); }

TRACEPOINT_PROBE(sched, sched_process_fork)
{
    u32 ptgid = bpf_get_current_pid_tgid() >> 32;
    struct accept_info *a = accepts.lookup(&ptgid);
    if (!a || a->fd < 0)
        return 0;
    u32 child = args->child_pid;
    struct backend b = {};
    u64 now = bpf_ktime_get_ns();
    b.gen = (u32)(now >> 10) | 1;      /* ~microsecond clock: distinct for a reused pid */
    b.fd = a->fd;
    backends.update(&child, &b);

    struct ctl_event *e = reserve_ctl(CTL_BACKEND_START, child);
    if (e) {
        e->ptgid = ptgid;
        e->gen = b.gen;
        e->fd = a->fd;
        e->family = a->family;
        e->lport = a->port;
        __builtin_memcpy(e->laddr, a->addr, 16);
        submit_ctl(e);
    }
    accepts.delete(&ptgid);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct exe_name exe = {};
    TP_DATA_LOC_READ_STR(exe.name, filename, EXE_MAX);
    exec_names.update(&tgid, &exe);

    char comm[16] = {};
    bpf_get_current_comm(&comm, sizeof(comm));
    /* The postmaster keeps comm "postgres" (backends change their title, not their comm). */
    if (comm[0] != 'p' || comm[1] != 'o' || comm[2] != 's' || comm[3] != 't' || comm[4] != 'g' ||
        comm[5] != 'r' || comm[6] != 'e' || comm[7] != 's' || comm[8] != 0)
        return 0;
    u8 one = 1;
    postmasters.update(&tgid, &one);
    struct ctl_event *e = reserve_ctl(CTL_POSTMASTER_EXEC, tgid);
    if (e) {
        __builtin_memcpy(e->comm, comm, 16);
        __builtin_memcpy(e->exe, exe.name, EXE_MAX);
        submit_ctl(e);
    }
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if ((u32)id != tgid)          /* a thread, not the process */
        return 0;
    exec_names.delete(&tgid);
    struct backend *b = backends.lookup(&tgid);
    if (b) {
        struct ctl_event *e = reserve_ctl(CTL_BACKEND_EXIT, tgid);
        if (e) {
            e->gen = b->gen;
            submit_ctl(e);
        }
        backends.delete(&tgid);
    } else if (postmasters.lookup(&tgid)) {
        struct ctl_event *e = reserve_ctl(CTL_POSTMASTER_EXIT, tgid);
        if (e)
            submit_ctl(e);
        postmasters.delete(&tgid);
        accepts.delete(&tgid);
    }
    return 0;
}

/* Client identity: which local process opened a connection to PostgreSQL.
 *
 * TCP: sock:inet_sock_set_state CLOSE -> SYN_SENT runs inside the client's connect(), so the
 * current task is the client; its source port is not chosen yet, so the socket address (an opaque
 * key, never dereferenced) is remembered and the event is emitted at SYN_SENT -> ESTABLISHED with
 * the 4-tuple. The backend's accept() reports the same peer address and port, which joins them.
 * Unix sockets: sys_enter/exit_connect with a path containing ".s.PGSQL." (PostgreSQL's socket
 * file name, src/include/libpq/pqcomm.h UNIXSOCK_PATH); the agent confirms with SO_PEERCRED.
 */
#define TCP_ESTABLISHED_ 1
#define TCP_SYN_SENT_ 2
#define TCP_CLOSE_ 7
#define IPPROTO_TCP_ 6
#define SUN_PATH_MAX 108

struct client {
    u64 ts_ns;
    u64 cgroup_id;
    u32 tgid;
    u32 uid;
    s32 fd;
    u16 port;          /* unix: PostgreSQL port parsed from the socket file name */
    u16 pad;
    char comm[16];
};

struct sun_path { char path[128]; };   /* sun_path (108) rounded up to a power of two */

BPF_TABLE("lru_hash", u64, struct client, tcp_connects, 65536);/* skaddr -> connecting client */
BPF_TABLE("lru_hash", u64, struct client, unix_connects, 4096);/* pid_tgid -> client in connect() */
BPF_PERCPU_ARRAY(sun_scratch, struct sun_path, 1);

static __always_inline void fill_client(struct client *c)
{
    u64 id = bpf_get_current_pid_tgid();
    c->ts_ns = bpf_ktime_get_ns();
    c->cgroup_id = bpf_get_current_cgroup_id();
    c->tgid = id >> 32;
    c->uid = (u32)bpf_get_current_uid_gid();
    bpf_get_current_comm(&c->comm, sizeof(c->comm));
}

/* A *_CONNECT event for client `c`, reserved in the ring; the caller adds addresses and submits. */
static __always_inline struct ctl_event *reserve_client(struct client *c, u32 kind)
{
    struct ctl_event *e = reserve_ctl(kind, c->tgid);
    if (!e)
        return NULL;
    e->uid = c->uid;
    e->cgroup_id = c->cgroup_id;
    e->fd = c->fd;
    __builtin_memcpy(e->comm, c->comm, 16);
    struct exe_name *exe = exec_names.lookup(&c->tgid);
    if (exe)
        __builtin_memcpy(e->exe, exe->name, EXE_MAX);
    return e;
}

TRACEPOINT_PROBE(sock, inet_sock_set_state)
{
    if (args->protocol != IPPROTO_TCP_)
        return 0;
    u64 sk = (u64)args->skaddr;
    if (args->oldstate == TCP_CLOSE_ && args->newstate == TCP_SYN_SENT_) {
        u16 dport = args->dport;
        if (!pg_ports.lookup(&dport))
            return 0;
        struct client c = {};
        fill_client(&c);
        c.fd = -1;
        tcp_connects.update(&sk, &c);
    } else if (args->oldstate == TCP_SYN_SENT_ && args->newstate == TCP_ESTABLISHED_) {
        struct client *c = tcp_connects.lookup(&sk);
        if (!c)
            return 0;
        struct ctl_event *e = reserve_client(c, CTL_TCP_CONNECT);
        if (e) {
            e->family = args->family;
            e->lport = args->sport;
            e->rport = args->dport;
            if (args->family == AF_INET_) {
                __builtin_memcpy(e->laddr, args->saddr, 4);
                __builtin_memcpy(e->raddr, args->daddr, 4);
            } else {
                __builtin_memcpy(e->laddr, args->saddr_v6, 16);
                __builtin_memcpy(e->raddr, args->daddr_v6, 16);
            }
            submit_ctl(e);
        }
        tcp_connects.delete(&sk);
    } else if (args->newstate == TCP_CLOSE_) {
        tcp_connects.delete(&sk);
    }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_connect)
{
    u64 uaddr = (u64)args->uservaddr;
    u16 family = 0;
    if (bpf_probe_read_user(&family, sizeof(family), (void *)uaddr) != 0 || family != AF_UNIX_)
        return 0;
    u32 zero = 0;
    struct sun_path *p = sun_scratch.lookup(&zero);
    if (!p)
        return 0;
    __builtin_memset(p->path, 0, sizeof(p->path));
    if (bpf_probe_read_user(p->path, SUN_PATH_MAX, (void *)(uaddr + 2)) != 0)
        return 0;
    /* find ".s.PGSQL." and the port digits after it */
    int port = -1;
    for (int i = 0; i < SUN_PATH_MAX - 9; i++) {
        if (p->path[i] == 0)
            break;
        if (p->path[i] == '.' && p->path[i + 1] == 's' && p->path[i + 2] == '.' &&
            p->path[i + 3] == 'P' && p->path[i + 4] == 'G' && p->path[i + 5] == 'S' &&
            p->path[i + 6] == 'Q' && p->path[i + 7] == 'L' && p->path[i + 8] == '.') {
            port = 0;
            for (int j = 0; j < 5; j++) {
                char ch = p->path[(i + 9 + j) & 127];
                if (ch < '0' || ch > '9')
                    break;
                port = port * 10 + (ch - '0');
            }
            break;
        }
    }
    if (port < 0)
        return 0;
    struct client c = {};
    fill_client(&c);
    c.fd = args->fd;
    c.port = port;
    u64 id = bpf_get_current_pid_tgid();
    unix_connects.update(&id, &c);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect)
{
    u64 id = bpf_get_current_pid_tgid();
    struct client *c = unix_connects.lookup(&id);
    if (!c)
        return 0;
    if (args->ret == 0) {
        struct ctl_event *e = reserve_client(c, CTL_UNIX_CONNECT);
        if (e) {
            e->family = AF_UNIX_;
            e->rport = c->port;
            submit_ctl(e);
        }
    }
    unix_connects.delete(&id);
    return 0;
}

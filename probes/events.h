/* pgwarden: layouts shared by the kernel programs and agent/events.py, plus the maps every probe
 * file uses. Every struct here is mirrored by a struct.Struct in agent/events.py; the agent checks
 * the sizes at load time (tests/test_probes_layout.py compiles this header and compares).
 *
 * Units are in the names: *_ns are bpf_ktime_get_ns() (CLOCK_MONOTONIC) unless *_boot_ns
 * (CLOCK_BOOTTIME, the clock of /proc/PID/stat start times). Little-endian, natural alignment.
 * No kernel struct is read anywhere: only tracepoint fields (bcc generates them from tracefs
 * format files), registers of uprobes, and user memory.
 */
#ifndef PGWARDEN_EVENTS_H
#define PGWARDEN_EVENTS_H

/* Largest payload copied per data event. PostgreSQL reads at most PQ_RECV_BUFFER_SIZE = 8192
 * bytes per secure_read and flushes PQ_SEND_BUFFER_SIZE = 8192 per secure_write
 * (src/backend/libpq/pqcomm.c), so one chunk holds a whole call in practice. */
#define CHUNK_MAX 8192
/* Larger calls are split into up to CHUNKS_MAX chunks; bytes beyond are a counted gap. */
#define CHUNKS_MAX 4

enum direction { DIR_FRONTEND = 0, DIR_BACKEND = 1 };   /* client->server, server->client */
enum source { SOURCE_SECURE_RW = 1, SOURCE_SYSCALL = 2 };

/* One chunk of one backend's client stream. payload[len] follows the 32-byte header. */
struct data_event {
    u64 ts_ns;
    u64 pos;          /* stream offset of payload[0] in this direction */
    u32 tgid;         /* backend pid */
    u32 gen;          /* backend generation: guards against pid reuse */
    u32 len;          /* payload bytes present */
    u8  direction;    /* enum direction */
    u8  source;       /* enum source */
    u16 flags;        /* reserved */
    u8  payload[CHUNK_MAX];
};
#define DATA_HEADER_SIZE 32

enum ctl_kind {
    CTL_BACKEND_START = 1,   /* postmaster forked a child right after accept(): a client backend */
    CTL_BACKEND_EXIT = 2,
    CTL_POSTMASTER_EXEC = 3, /* a process exec'ed with comm "postgres" (a postmaster candidate) */
    CTL_POSTMASTER_EXIT = 4,
    CTL_TCP_CONNECT = 5,     /* a local process connected over TCP to a PostgreSQL port */
    CTL_UNIX_CONNECT = 6,    /* a local process connected to a .s.PGSQL.* unix socket */
};

#define EXE_MAX 128
struct exe_name { char name[EXE_MAX]; };

/* Lifecycle and client-identity events (fixed size). */
struct ctl_event {
    u64 ts_ns;
    u64 boot_ns;      /* bpf_ktime_get_boot_ns(): backend start on the /proc/PID/stat clock */
    u32 kind;         /* enum ctl_kind */
    u32 tgid;         /* backend, postmaster or client process */
    u32 ptgid;        /* BACKEND_START: postmaster */
    u32 gen;          /* BACKEND_START/EXIT: generation */
    s32 fd;           /* BACKEND_START: client socket fd; *_CONNECT: client fd */
    u32 uid;          /* *_CONNECT: client uid */
    u64 cgroup_id;    /* *_CONNECT: client cgroup v2 id (inode of its cgroup directory) */
    u16 family;       /* AF_INET, AF_INET6, AF_UNIX */
    u16 lport;        /* TCP_CONNECT: client (source) port; BACKEND_START: peer port */
    u16 rport;        /* TCP_CONNECT: server (destination) port */
    u16 pad;
    u8  laddr[16];    /* TCP_CONNECT: client address; BACKEND_START: peer address */
    u8  raddr[16];    /* TCP_CONNECT: server address */
    char comm[16];
    char exe[EXE_MAX];/* *_CONNECT: file the client exec'ed (if seen since the agent started) */
};

/* Per-backend state, keyed by tgid. Positions advance by every byte the backend moved, even
 * when the event carrying them was dropped, so user space sees exact gaps. */
struct backend {
    u64 rd_pos;
    u64 wr_pos;
    u64 rd_buf;       /* user buffer stashed by the entry probe, consumed by the return probe */
    u64 wr_buf;       /* (a backend is single-threaded: one call in flight per direction) */
    u32 gen;
    s32 fd;           /* client socket (syscall fallback filters on it) */
    u32 flags;        /* BACKEND_JOINED: tracked mid-session (the agent started after it) */
    u32 pad;
};
/* A backend that predates the agent: a return without its entry is expected, not a loss, and
 * its first read is caught by joined.c. Cleared at its first secure_read entry. */
#define BACKEND_JOINED 1

/* Counters (BPF_PERCPU_ARRAY stats, summed by the agent). Names in agent/events.py. */
enum stat {
    STAT_DATA_EVENTS = 0,
    STAT_DATA_BYTES,
    STAT_DROP_RINGBUF_FULL,  /* data event lost: ring buffer full */
    STAT_DROP_BUSY,          /* data event lost: per-CPU scratch in use (nested program) */
    STAT_DROP_READ_FAIL,     /* data event lost: user memory could not be read */
    STAT_DROP_OVERSIZE,      /* bytes beyond CHUNKS_MAX * CHUNK_MAX in one call (a counted gap) */
    STAT_DROP_NO_ENTRY,      /* return probe without its entry probe (attached mid-call) */
    STAT_CTL_EVENTS,
    STAT_DROP_CTL_RINGBUF_FULL,
    STAT_JOINED_SKIPS,       /* a mid-session backend's call already in flight at attach (not a loss) */
    STAT_MAX,
};

#endif

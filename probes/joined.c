/* Backends that predate the agent (secure_rw mode only).
 *
 * PostgreSQL waits for client input *inside* secure_read (be-secure.c: WaitEventSetWait, then
 * retry), so an idle backend is always in a secure_read call entered before the agent attached:
 * that call's return is not intercepted (a uretprobe arms at function entry) and the request
 * that wakes it would be lost. For backends flagged BACKEND_JOINED the agent therefore attaches
 * these recvfrom tracepoints, which catch that first read at the syscall below secure_read.
 * The flag is cleared at the backend's next secure_read entry, after which the uprobes see every
 * byte; the agent detaches these tracepoints when no joined backend is left. (Under TLS the
 * bytes read here are ciphertext: the decoder resynchronises on the next plaintext request.)
 */
TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct backend *b = backends.lookup(&tgid);
    if (!b || !(b->flags & BACKEND_JOINED) || args->fd != b->fd || (args->flags & 2 /* MSG_PEEK */))
        return 0;
    b->rd_buf = (u64)args->ubuf;
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct backend *b = backends.lookup(&tgid);
    if (!b || !(b->flags & BACKEND_JOINED) || !b->rd_buf)
        return 0;
    finish_rw(DIR_FRONTEND, args->ret, SOURCE_SYSCALL);
    return 0;
}

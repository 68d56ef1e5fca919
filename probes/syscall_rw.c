/* Fallback data hooks, for a postgres whose secure_read/secure_write cannot be probed (stripped of
 * its dynamic symbols, or inlined by LTO): the recvfrom/sendto syscalls of backend processes on
 * their client socket. PostgreSQL's secure_raw_read/secure_raw_write call recv()/send(), which
 * glibc implements with recvfrom/sendto on x86_64 and arm64. Under TLS these bytes are ciphertext:
 * the decoder then reports the session as encrypted instead of guessing.
 */
#define MSG_PEEK_ 2

TRACEPOINT_PROBE(syscalls, sys_enter_recvfrom)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct backend *b = backends.lookup(&tgid);
    if (!b || args->fd != b->fd || (args->flags & MSG_PEEK_))
        return 0;
    b->rd_buf = (u64)args->ubuf;
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_recvfrom)
{
    finish_rw(DIR_FRONTEND, args->ret, SOURCE_SYSCALL);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_enter_sendto)
{
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct backend *b = backends.lookup(&tgid);
    if (!b || args->fd != b->fd)
        return 0;
    b->wr_buf = (u64)args->buff;
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendto)
{
    finish_rw(DIR_BACKEND, args->ret, SOURCE_SYSCALL);
    return 0;
}

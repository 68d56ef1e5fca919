/* Primary data hooks: uprobe + uretprobe on the postgres binary's exported secure_read and
 * secure_write (src/backend/libpq/be-secure.c):
 *     ssize_t secure_read(Port *port, void *ptr, size_t len);
 *     ssize_t secure_write(Port *port, void *ptr, size_t len);
 * They sit above TLS and GSS encryption and are used only for the client socket (MyProcPort),
 * so they give the plaintext protocol stream of plain TCP, unix-socket and TLS sessions alike.
 * Attached once per binary inode (agent/probes.py): every backend inherits them.
 */
int uprobe_secure_read_enter(struct pt_regs *ctx)
{
    stash_rw(DIR_FRONTEND, PT_REGS_PARM2(ctx));
    return 0;
}

int uretprobe_secure_read_exit(struct pt_regs *ctx)
{
    finish_rw(DIR_FRONTEND, PT_REGS_RC(ctx), SOURCE_SECURE_RW);
    return 0;
}

int uprobe_secure_write_enter(struct pt_regs *ctx)
{
    stash_rw(DIR_BACKEND, PT_REGS_PARM2(ctx));
    return 0;
}

int uretprobe_secure_write_exit(struct pt_regs *ctx)
{
    finish_rw(DIR_BACKEND, PT_REGS_RC(ctx), SOURCE_SECURE_RW);
    return 0;
}

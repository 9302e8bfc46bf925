/**
 * Zero-copy body transfer for big files: Node has no sendfile(2), so a large response body is handed to a small
 * helper process (python3's os.sendfile; stdin = the file, stdout = the client socket) — one copy per byte in
 * the kernel, as nginx does, instead of read() + write() through JS buffers. Used only when python3 exists and
 * IRONBOOT_SENDFILE is not 0; the caller falls back to its own read/write loop otherwise.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Socket } from 'node:net';

const PYTHON = ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => existsSync(p)) ?? null;

// stdin: the file (fd 0), stdout: the socket (fd 1, non-blocking: wait for POLLOUT on EAGAIN)
const SCRIPT = `
import os, sys, select
off, n = int(sys.argv[1]), int(sys.argv[2])
p = select.poll(); p.register(1, select.POLLOUT)
while n > 0:
    try:
        s = os.sendfile(1, 0, off, min(n, 1 << 30))
    except BlockingIOError:
        p.poll(30000) or sys.exit(4)
        continue
    if s == 0:
        sys.exit(3)
    off += s; n -= s
`;

export const sendfileAvailable = (): boolean => PYTHON !== null && process.env.IRONBOOT_SENDFILE !== '0';

/** Sends `length` bytes of file descriptor `fd` from `start` on `socket`; resolves true when all were sent, false otherwise (never rejects). */
export function sendfileToSocket(fd: number, start: number, length: number, socket: Socket): Promise<boolean> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve(false); // the client is gone: nothing to send to
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(PYTHON!, ['-S', '-c', SCRIPT, String(start), String(length)], { stdio: [fd, socket as never, 'ignore'] });
    } catch {
      return resolve(false); // e.g. the socket lost its handle meanwhile
    }
    const onClose = () => { if (child.exitCode === null) child.kill('SIGKILL'); };
    socket.once('close', onClose);
    child.once('error', () => { socket.off('close', onClose); resolve(false); });
    child.once('exit', (code) => { socket.off('close', onClose); resolve(code === 0); });
  });
}

/**
 * Zero-copy response bodies: Node has no sendfile(2), so file bodies go through ironboot's native addon
 * (server/http/native/sendfile_loop.cc: a thread per core, at most 4, each with its own epoll set, sendfile(2)
 * from the page cache to the socket for every response at once), as nginx sends them — instead of read() + write() through JS buffers, which under
 * a rack of machines costs most of the daemon's CPU and its event-loop lag. Plain TCP sockets only (a TLS socket
 * encrypts in user space) and only when the addon is built and IRONBOOT_SENDFILE is not 0; the caller falls
 * back to its own read/write loop otherwise.
 */
import type { Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { loadAddon } from '../native-addon.ts';

interface HttpNative {
  send(socketFd: number, fileFd: number, offset: number, length: number, idleMs: number, done: (error: string | null, sent: number) => void): number;
  cancel(id: number): void;
}

const loaded = loadAddon<HttpNative>(fileURLToPath(new URL('./native', import.meta.url)), 'ironboot_http_native');

/** Why zero-copy bodies are off ('' when on). */
export const sendfileUnavailableReason = (): string =>
  process.env.IRONBOOT_SENDFILE === '0' ? 'IRONBOOT_SENDFILE=0' : loaded.why;

export const sendfileAvailable = (): boolean => sendfileUnavailableReason() === '';

/** The socket's own descriptor, when it is a plain TCP socket the kernel can sendfile(2) into. */
export function socketFd(socket: Socket): number | null {
  if ((socket as { encrypted?: boolean }).encrypted) return null;
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : null;
}

/** A response that reads nothing for this long is ended. */
export const SENDFILE_IDLE_MS = 30_000;

/**
 * Sends `length` bytes of file descriptor `fd` from `start` on `socket`. Resolves with whether all were sent and
 * why not (never rejects). The caller may close `fd` as soon as this returns: the addon holds its own duplicate.
 */
export function sendfileToSocket(fd: number, start: number, length: number, socket: Socket, idleMs = SENDFILE_IDLE_MS): Promise<{ ok: boolean; sent: number; error: string | null }> {
  return new Promise((resolve) => {
    const sfd = socket.destroyed ? null : socketFd(socket);
    if (sfd === null || !loaded.addon) return resolve({ ok: false, sent: 0, error: 'the socket is gone or not plain TCP' });
    let id: number;
    const onClose = () => loaded.addon!.cancel(id);
    try {
      id = loaded.addon.send(sfd, fd, start, length, idleMs, (error, sent) => {
        socket.off('close', onClose);
        resolve({ ok: error === null, sent, error });
      });
    } catch (e) {
      return resolve({ ok: false, sent: 0, error: (e as Error).message });
    }
    socket.once('close', onClose);
  });
}

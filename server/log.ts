import pino, { type Logger } from 'pino';

/** What the log holds in memory, at most, while its reader (journald, a pipe) is behind; past it lines are dropped. */
export const LOG_BUFFER_MAX_BYTES = 64 << 20;

/**
 * pino JSON logs; human-readable when a terminal is attached (pino-pretty).
 * Lines are written asynchronously: a log reader that falls behind (a full pipe to journald or a supervisor) must
 * never stop the event loop that answers DHCP and TFTP, as a synchronous write to a full pipe would. Nor may it
 * take the daemon's memory: up to LOG_BUFFER_MAX_BYTES wait (pino's own default has no bound); lines beyond are
 * dropped and counted, and the count is said on stderr (once per 10 s). What is buffered is flushed at exit.
 */
export function createLogger(level = 'info', opts: { pretty?: boolean; destination?: NodeJS.WritableStream; maxBufferBytes?: number } = {}): Logger {
  const pretty = opts.pretty ?? (process.stdout.isTTY === true && !process.env.CI);
  if (pretty && !opts.destination) {
    return pino({ level, transport: { target: 'pino-pretty', options: { translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  if (opts.destination) return pino({ level, name: 'ironboot' }, opts.destination as pino.DestinationStream);
  const max = opts.maxBufferBytes ?? LOG_BUFFER_MAX_BYTES;
  const dest = pino.destination({ dest: 1, sync: false, maxLength: max });
  let dropped = 0;
  let saidAt = 0;
  dest.on('drop', () => {
    dropped++;
    const t = Date.now();
    if (t - saidAt < 10_000) return;
    saidAt = t;
    process.stderr.write(`ironboot: ${dropped} log line(s) dropped: the log's reader is ${max} bytes behind\n`);
    dropped = 0;
  });
  return pino({ level, name: 'ironboot' }, dest);
}

export type { Logger };

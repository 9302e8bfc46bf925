import pino, { type Logger } from 'pino';

/** pino JSON logs; human-readable when a terminal is attached (pino-pretty). */
export function createLogger(level = 'info', opts: { pretty?: boolean; destination?: NodeJS.WritableStream } = {}): Logger {
  const pretty = opts.pretty ?? (process.stdout.isTTY === true && !process.env.CI);
  if (pretty && !opts.destination) {
    return pino({ level, transport: { target: 'pino-pretty', options: { translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' } } });
  }
  return pino({ level, name: 'ironboot' }, (opts.destination as pino.DestinationStream) ?? pino.destination(1));
}

export type { Logger };

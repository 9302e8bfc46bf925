/**
 * The agent API: what crosses the wire between the init agent on a machine and the server.
 * Defined once, as TypeBox schemas; imported by the server's routes and by the agent (init/agent).
 *
 *   POST /agent/v1/hello   Hello        → WorkflowSpec   (Authorization: Bearer <boot token>, single-use; the spec
 *                                                         carries the session token)
 *   POST /agent/v1/events  EventBatch   → { accepted }    (Authorization: Bearer <session token>)
 *   POST /agent/v1/boot    PersistentBootReport → PersistentBootReply  (Bearer <persistent-boot token from the disk's marker>)
 *   GET  <image.chunksUrl>  ChunkManifest                 (Bearer <session token>, same rules as the file itself)
 *   GET  /agent/v1/peers   PeersQuery   → PeersReply      (Bearer <session token>): per chunk a peer, or the server
 *   POST /agent/v1/chunks  ChunkReport  → ChunkReportReply (Bearer <session token>): chunks held, peers found bad
 *   GET  http://PEER:PORT/p2p/<file sha256>/<n>           (Bearer <manifest.peerToken>): one verified chunk, agent to agent
 */
import { Type, type Static } from '@sinclair/typebox';

export const AGENT_API_PREFIX = '/agent/v1';

/** The server's body limit for POST /agent/v1/events; the agent keeps its batches well below it. */
export const AGENT_EVENTS_BODY_LIMIT = 4 << 20;

export const Inventory = Type.Object({
  cpus: Type.Optional(Type.Object({ count: Type.Integer(), model: Type.Optional(Type.String()) })),
  memoryBytes: Type.Optional(Type.Integer()),
  disks: Type.Optional(Type.Array(Type.Object({
    name: Type.String(), sizeBytes: Type.Integer(), model: Type.Optional(Type.String()),
    serial: Type.Optional(Type.String()), rotational: Type.Optional(Type.Boolean()),
  }))),
  nics: Type.Optional(Type.Array(Type.Object({
    name: Type.String(), mac: Type.String(), driver: Type.Optional(Type.String()),
    carrier: Type.Optional(Type.Boolean()), speedMbps: Type.Optional(Type.Integer()),
  }))),
  dmi: Type.Optional(Type.Object({
    vendor: Type.Optional(Type.String()), product: Type.Optional(Type.String()), serial: Type.Optional(Type.String()),
    uuid: Type.Optional(Type.String()), biosVersion: Type.Optional(Type.String()),
  })),
  firmware: Type.Optional(Type.Union([Type.Literal('bios'), Type.Literal('uefi')])),
  kernel: Type.Optional(Type.String()),
}, { additionalProperties: true });
export type Inventory = Static<typeof Inventory>;

export const Hello = Type.Object({
  workflowId: Type.String({ minLength: 1 }),
  mac: Type.String({ minLength: 1 }),
  ip: Type.Optional(Type.String()),
  inventory: Type.Optional(Inventory),
  agentVersion: Type.Optional(Type.String()),
});
export type Hello = Static<typeof Hello>;

export const AfterAction = Type.Union([Type.Literal('shell'), Type.Literal('reboot'), Type.Literal('poweroff'), Type.Literal('wait')]);

/** A file the agent writes into an installed root (mode install): first-boot data rendered by the server. */
export const InstallFile = Type.Object({
  path: Type.String({ pattern: '^/[A-Za-z0-9._/+-]+$' }),
  content: Type.String(),
  mode: Type.Integer({ minimum: 0, maximum: 0o7777 }),
  /** The directory's mode when the agent creates it (default 0755). */
  dirMode: Type.Optional(Type.Integer({ minimum: 0, maximum: 0o7777 })),
  /** A symlink there (e.g. resolv.conf → systemd-resolved's stub) is replaced by the file. */
  replaceSymlink: Type.Optional(Type.Boolean()),
});
export type InstallFile = Static<typeof InstallFile>;

/** mode install: the disk is a whole bootable disk (GPT), not a filesystem; what the agent does after it verified it. */
export const InstallSpec = Type.Object({
  /** The partition holding the root (1-based) and where it starts, in bytes. */
  rootPartition: Type.Integer({ minimum: 1 }),
  rootOffset: Type.Integer({ minimum: 0 }),
  rootPartUuid: Type.String(),
  kernel: Type.String(),
  instanceId: Type.String(),
  files: Type.Array(InstallFile),
});
export type InstallSpec = Static<typeof InstallSpec>;

/** What the agent must do: returned by hello. */
export const WorkflowSpec = Type.Object({
  workflowId: Type.String(),
  machine: Type.Object({ mac: Type.String(), hostname: Type.Union([Type.String(), Type.Null()]) }),
  image: Type.Object({
    id: Type.String(),
    name: Type.String(),
    format: Type.String(),                 // filesystem of the disk: ext4
    url: Type.String(),                    // zstd-compressed disk
    rawUrl: Type.String(),                 // uncompressed disk
    compressedSize: Type.Integer(),
    compressedSha256: Type.String(),
    rawSize: Type.Integer(),
    rawSha256: Type.String(),              // verified by the agent over the decompressed bytes
    /** Peer-to-peer fetching is on: the chunk manifest of `url` (ChunkManifest); absent: the whole file from `url`. */
    chunksUrl: Type.Optional(Type.String()),
  }),
  target: Type.String(),                   // /dev/sda, /dev/disk/by-id/…, or "ram"
  after: AfterAction,
  /** ephemeral | persistent | install: see migrations/003_workflow_mode.sql */
  mode: Type.Union([Type.Literal('ephemeral'), Type.Literal('persistent'), Type.Literal('install')]),
  entrypoint: Type.Array(Type.String()),   // already merged: workflow override, else image Entrypoint
  cmd: Type.Array(Type.String()),          // workflow args, else image Cmd
  env: Type.Array(Type.String()),          // KEY=VALUE: image Env with workflow env on top
  workingDir: Type.Union([Type.String(), Type.Null()]),
  user: Type.Union([Type.String(), Type.Null()]),
  dns: Type.Array(Type.String()),
  /**
   * The session token hello exchanged the (single-use) boot token for: bound to the agent's address and this
   * workflow; every later call (events, the image download) presents it.
   */
  sessionToken: Type.Optional(Type.String()),
  /** mode persistent, at hello only: the token the agent writes into the disk's marker (init/agent/steps/marker.ts). */
  persistent: Type.Optional(Type.Object({ token: Type.String({ minLength: 16 }) })),
  /** mode install: the image is a bootable disk (format "disk"), and the first-boot data to write into its root. */
  install: Type.Optional(InstallSpec),
  /** The agent may overwrite a target that already holds a partition table or a filesystem (default: refuse). */
  wipe: Type.Optional(Type.Boolean()),
  /** When set, the target disk's serial number must be this (checked before anything is written). */
  targetSerial: Type.Optional(Type.String()),
  /** When set, the target disk must be exactly this many bytes. */
  targetSize: Type.Optional(Type.Integer({ minimum: 1 })),
});
export type WorkflowSpec = Static<typeof WorkflowSpec>;

/** States the agent reports; the server moves the workflow accordingly. */
export const AgentState = Type.Union([
  Type.Literal('streaming'), Type.Literal('verifying'), Type.Literal('mounted'), Type.Literal('running'),
  Type.Literal('succeeded'), Type.Literal('failed'),
]);
export type AgentState = Static<typeof AgentState>;

export const AgentEvent = Type.Object({
  /**
   * The agent's id for this event, unique within its workflow: the server stores an event once per id, so a
   * batch retried after a lost reply is not written twice.
   */
  id: Type.Optional(Type.String({ minLength: 1, maxLength: 80 })),
  /** A state change; omitted for progress and log events. */
  state: Type.Optional(AgentState),
  message: Type.Optional(Type.String()),
  bytesDone: Type.Optional(Type.Integer({ minimum: 0 })),
  bytesTotal: Type.Optional(Type.Integer({ minimum: 0 })),
  /** Entrypoint output lines, in order. */
  log: Type.Optional(Type.Array(Type.Object({
    stream: Type.Union([Type.Literal('stdout'), Type.Literal('stderr')]),
    line: Type.String(),
  }))),
  exitCode: Type.Optional(Type.Integer()),
  payload: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
});
export type AgentEvent = Static<typeof AgentEvent>;

export const EventBatch = Type.Object({
  workflowId: Type.String({ minLength: 1 }),
  events: Type.Array(AgentEvent, { minItems: 1, maxItems: 1000 }),
});
export type EventBatch = Static<typeof EventBatch>;

export const EventBatchReply = Type.Object({
  accepted: Type.Integer(),
  state: Type.String(),
  /** Events of this batch the server already had (by id): acknowledged, not written again. */
  duplicates: Type.Optional(Type.Integer()),
  /** Output events dropped because the workflow reached its cap of events or bytes (a marker event says so). */
  dropped: Type.Optional(Type.Integer()),
});
export type EventBatchReply = Static<typeof EventBatchReply>;

/** What a persistent boot's marker says (the token travels as the bearer, never in the body). */
export const MarkerInfo = Type.Object({
  workflowId: Type.String(), imageId: Type.String(), rawSha256: Type.String(), rawSize: Type.Integer(),
  mac: Type.String(), fsUuid: Type.String(), writtenAt: Type.String(),
});
export type MarkerInfo = Static<typeof MarkerInfo>;

/**
 * A persistent boot checking in (started: the server checks the marker and answers the spec to run), its entrypoint
 * ending (exited), or the agent refusing the disk it found (refused, with the reason).
 */
export const PersistentBootReport = Type.Object({
  workflowId: Type.String({ minLength: 1 }),
  mac: Type.String({ minLength: 1 }),
  ip: Type.Optional(Type.String()),
  phase: Type.Union([Type.Literal('started'), Type.Literal('exited'), Type.Literal('refused')]),
  /** The boot number the server answered at `started` (exited). */
  boot: Type.Optional(Type.Integer({ minimum: 1 })),
  device: Type.Optional(Type.String({ maxLength: 256 })),
  marker: Type.Optional(MarkerInfo),
  exitCode: Type.Optional(Type.Integer()),
  reason: Type.Optional(Type.String({ maxLength: 2000 })),
});
export type PersistentBootReport = Static<typeof PersistentBootReport>;

export const PersistentBootReply = Type.Object({
  /** This boot's number (1 = the first boot after provisioning); 0 for a refusal. */
  boot: Type.Integer(),
  /** Whether the report was authenticated by the marker's token (a refusal may come without one). */
  verified: Type.Boolean(),
  spec: Type.Optional(WorkflowSpec),
});
export type PersistentBootReply = Static<typeof PersistentBootReply>;

const Sha256Hex = Type.String({ pattern: '^[0-9a-f]{64}$' });

/** Most chunks one report or one peers query may name. */
export const P2P_MAX_REPORT = 4096;
export const P2P_MAX_QUERY = 32;

/**
 * Fixed byte ranges of the compressed disk file (chunk n is [n·chunkSize, min(size, (n+1)·chunkSize))), each with its
 * sha256: a chunk from a peer is checked against it before a byte of it is used.
 */
export const ChunkManifest = Type.Object({
  /** sha256 of the whole file (its ETag): names the file between agents. */
  file: Sha256Hex,
  size: Type.Integer({ minimum: 0 }),
  chunkSize: Type.Integer({ minimum: 1 }),
  chunks: Type.Array(Sha256Hex),
  /** What peers ask for before they serve a chunk of this file: only agents the server let fetch it know it. */
  peerToken: Type.String({ minLength: 16 }),
  /** The port agents serve chunks on (GET /p2p/<file>/<n>). */
  port: Type.Integer({ minimum: 1, maximum: 65535 }),
});
export type ChunkManifest = Static<typeof ChunkManifest>;

/** A query string: numbers as decimal strings (the server does not coerce types), bounds checked by the route. */
export const PeersQuery = Type.Object({
  file: Sha256Hex,
  /** The first chunk. */
  from: Type.String({ pattern: '^[0-9]{1,9}$' }),
  /** How many chunks, 1 to P2P_MAX_QUERY. */
  count: Type.String({ pattern: '^[0-9]{1,3}$' }),
  /** The port the asker serves its chunks on; absent: it keeps nothing (too big for its memory) and serves nobody. */
  port: Type.Optional(Type.String({ pattern: '^[0-9]{1,5}$' })),
});
export type PeersQuery = Static<typeof PeersQuery>;

export const PeersReply = Type.Object({
  chunks: Type.Array(Type.Object({
    chunk: Type.Integer({ minimum: 0 }),
    /** ADDRESS:PORT of a peer that holds (or is fetching) the chunk; null: fetch it from the server (a Range request). */
    peer: Type.Union([Type.String(), Type.Null()]),
  })),
});
export type PeersReply = Static<typeof PeersReply>;

export const ChunkReport = Type.Object({
  file: Sha256Hex,
  /** The port the agent serves its chunks on; absent: `have` only releases the peers it fetched from. */
  port: Type.Optional(Type.Integer({ minimum: 1, maximum: 65535 })),
  /** Chunks verified against the manifest since the last report. */
  have: Type.Array(Type.Integer({ minimum: 0 }), { maxItems: P2P_MAX_REPORT }),
  /** Peers that answered a chunk whose sha256 differs, or nothing in time: never handed out for this file again. */
  bad: Type.Optional(Type.Array(Type.Object({
    chunk: Type.Integer({ minimum: 0 }), peer: Type.String({ maxLength: 64 }),
    reason: Type.Union([Type.Literal('hash'), Type.Literal('error'), Type.Literal('slow')]),
  }), { maxItems: 64 })),
});
export type ChunkReport = Static<typeof ChunkReport>;

export const ChunkReportReply = Type.Object({ accepted: Type.Integer(), banned: Type.Integer() });
export type ChunkReportReply = Static<typeof ChunkReportReply>;

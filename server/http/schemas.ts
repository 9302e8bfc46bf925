/** TypeBox schemas of the REST API (/api/v1). The agent API's are in server/agent/api.ts. */
import { Type, type Static } from '@sinclair/typebox';
import { WORKFLOW_STATES, type WorkflowState as State } from '../workflows/states.ts';

export const ErrorReply = Type.Object({
  error: Type.String(), field: Type.Optional(Type.String()), message: Type.String(),
}, { $id: 'ErrorReply' });

const Hostname = Type.String({ pattern: '^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$', description: 'RFC 1123 host name' });
const Ipv4 = Type.String({ format: 'ipv4' });

export const Ipv4Input = Type.Object({
  address: Ipv4,
  prefix: Type.Optional(Type.Integer({ minimum: 1, maximum: 32 })),
  netmask: Type.Optional(Ipv4),
  gateway: Type.Optional(Ipv4),
  dns: Type.Optional(Type.Array(Ipv4, { maxItems: 8 })),
  leaseSeconds: Type.Optional(Type.Integer({ minimum: 60, maximum: 31536000 })),
  domain: Type.Optional(Hostname),
}, { additionalProperties: false });
export type Ipv4Input = Static<typeof Ipv4Input>;

const Arch = Type.Union([Type.Literal('auto'), Type.Literal('bios'), Type.Literal('uefi-x64'), Type.Literal('uefi-arm64')]);
const EfiBinary = Type.Union([Type.Literal('ipxe.efi'), Type.Literal('snponly.efi')]);
const Labels = Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.\\/-]{1,63}$' }), Type.String({ maxLength: 256 }), { additionalProperties: false });

export const BmcInput = Type.Object({
  url: Type.String({ maxLength: 300, description: 'ipmi://HOST[:PORT] (IPMI v2.0 lanplus, UDP 623) or redfish://HOST[:PORT] (HTTPS, 443)' }),
  username: Type.String({ maxLength: 64 }),
  password: Type.Optional(Type.String({ maxLength: 128, description: 'stored for the daemon only: no read returns it; left out on PATCH keeps the stored one' })),
  tlsInsecure: Type.Optional(Type.Boolean({ description: 'Redfish: accept this BMC\'s certificate without verifying it (self-signed); default false' })),
  ca: Type.Optional(Type.Union([Type.String({ maxLength: 65536, description: 'Redfish: PEM CA bundle for this BMC\'s certificate' }), Type.Null()])),
}, { additionalProperties: false });
export type BmcInput = Static<typeof BmcInput>;

export const MachineCreate = Type.Object({
  mac: Type.String({ description: 'any common notation: 52:54:00:12:34:56, 52-54-00-12-34-56, 525400123456' }),
  hostname: Type.Optional(Type.Union([Hostname, Type.Null()])),
  ipv4: Type.Optional(Type.Union([Ipv4Input, Type.Null()])),
  arch: Type.Optional(Arch),
  efiBinary: Type.Optional(EfiBinary),
  allowPxe: Type.Optional(Type.Boolean()),
  labels: Type.Optional(Labels),
  sshKeys: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 16384 }), { maxItems: 64, description: 'OpenSSH authorized_keys lines ([options] type base64 [comment]) for installed disks (mode install)' })),
  bmc: Type.Optional(Type.Union([BmcInput, Type.Null()])),
}, { additionalProperties: false });
export type MachineCreate = Static<typeof MachineCreate>;

export const MachineUpdate = Type.Partial(Type.Omit(MachineCreate, ['mac']), { additionalProperties: false });
export type MachineUpdate = Static<typeof MachineUpdate>;

export const Machine = Type.Object({
  id: Type.Integer(),
  mac: Type.String(),
  hostname: Type.Union([Type.String(), Type.Null()]),
  ipv4: Type.Union([Type.Object({
    address: Type.String(), prefix: Type.Integer(), gateway: Type.Optional(Type.String()), dns: Type.Array(Type.String()),
    leaseSeconds: Type.Optional(Type.Integer()), domain: Type.Optional(Type.String()),
  }), Type.Null()]),
  arch: Type.String(),
  efiBinary: Type.String(),
  allowPxe: Type.Boolean(),
  labels: Type.Record(Type.String(), Type.String()),
  sshKeys: Type.Optional(Type.Array(Type.String())),
  bmc: Type.Optional(Type.Union([Type.Object({
    url: Type.String(), username: Type.String(), tlsInsecure: Type.Boolean(), ca: Type.Union([Type.String(), Type.Null()]),
  }), Type.Null()])),
  power: Type.Optional(Type.Object({
    state: Type.Union([Type.String(), Type.Null()]), checkedAt: Type.Union([Type.String(), Type.Null()]), error: Type.Union([Type.String(), Type.Null()]),
  })),
  createdAt: Type.String(),
  updatedAt: Type.String(),
});

export const PowerActionParams = Type.Object({ mac: Type.String(), action: Type.Union(['on', 'off', 'cycle', 'status', 'pxe'].map((a) => Type.Literal(a))) });

export const MachineEvent = Type.Object({
  id: Type.Integer(), at: Type.String(), kind: Type.String(), action: Type.String(), outcome: Type.String(),
  message: Type.Union([Type.String(), Type.Null()]), workflowId: Type.Union([Type.String(), Type.Null()]),
  payload: Type.Record(Type.String(), Type.Unknown()),
});

export const PowerResult = Type.Object({
  mac: Type.String(), action: Type.String(), outcome: Type.String(), state: Type.Union([Type.String(), Type.Null()]),
  message: Type.String(), attempts: Type.Integer(), event: MachineEvent,
});

export const MacParams = Type.Object({ mac: Type.String() });
export const IdParams = Type.Object({ id: Type.String() });

export const MachineListQuery = Type.Object({
  label: Type.Optional(Type.Union([Type.String(), Type.Array(Type.String())], { description: 'key=value, repeatable' })),
});

export const Image = Type.Object({
  id: Type.String(), name: Type.String(), source: Type.Union([Type.String(), Type.Null()]),
  digest: Type.Union([Type.String(), Type.Null()]), state: Type.String(), error: Type.Union([Type.String(), Type.Null()]),
  format: Type.String(), rawSize: Type.Union([Type.Integer(), Type.Null()]), rawSha256: Type.Union([Type.String(), Type.Null()]),
  compressedSize: Type.Union([Type.Integer(), Type.Null()]), compressedSha256: Type.Union([Type.String(), Type.Null()]),
  config: Type.Object({
    entrypoint: Type.Array(Type.String()), cmd: Type.Array(Type.String()), env: Type.Array(Type.String()),
    workingDir: Type.Union([Type.String(), Type.Null()]), user: Type.Union([Type.String(), Type.Null()]),
  }),
  progress: Type.Record(Type.String(), Type.Unknown()),
  createdAt: Type.String(), updatedAt: Type.String(),
});

export const WorkflowState = Type.Unsafe<State>({ type: 'string', enum: [...WORKFLOW_STATES] });
const After = Type.Union([Type.Literal('shell'), Type.Literal('reboot'), Type.Literal('poweroff'), Type.Literal('wait')]);
const Mode = Type.Union([Type.Literal('ephemeral'), Type.Literal('persistent'), Type.Literal('install')], {
  description: 'ephemeral (default): run the disk from the netbooted initramfs; persistent: also on every later boot, without re-streaming; install: make the disk boot on its own',
});

export const WorkflowCreate = Type.Object({
  machine: Type.String({ description: 'MAC address of the machine' }),
  image: Type.String({ minLength: 1, description: 'image id or name' }),
  target: Type.String({ pattern: '^(ram|/dev/[A-Za-z0-9._:+/-]+)$', description: 'a block device (/dev/sda, /dev/disk/by-id/…) or "ram"' }),
  after: Type.Optional(After),
  mode: Type.Optional(Mode),
  entrypoint: Type.Optional(Type.Array(Type.String(), { minItems: 1 })),
  args: Type.Optional(Type.Array(Type.String())),
  env: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), Type.String(), { additionalProperties: false })),
  kernelArgs: Type.Optional(Type.String({ maxLength: 2048 })),
  timeoutSeconds: Type.Optional(Type.Integer({ minimum: 10, maximum: 604800 })),
  powerCycle: Type.Optional(Type.Boolean({ description: 'set the machine\'s next boot to PXE and power-cycle it through its BMC' })),
  wipe: Type.Optional(Type.Boolean({ description: 'allow overwriting a target that already holds a partition table or filesystem (default false: the agent refuses)' })),
  targetSerial: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: 'the target disk must have this serial number' })),
  targetSize: Type.Optional(Type.Integer({ minimum: 1, description: 'the target disk must be exactly this many bytes' })),
}, { additionalProperties: false });
export type WorkflowCreate = Static<typeof WorkflowCreate>;

export const Workflow = Type.Object({
  id: Type.String(), machine: Type.String(), image: Type.String(), state: WorkflowState,
  target: Type.String(), after: Type.String(), mode: Type.String(),
  entrypoint: Type.Union([Type.Array(Type.String()), Type.Null()]), args: Type.Union([Type.Array(Type.String()), Type.Null()]),
  env: Type.Record(Type.String(), Type.String()), kernelArgs: Type.String(),
  reason: Type.Union([Type.String(), Type.Null()]), exitCode: Type.Union([Type.Integer(), Type.Null()]),
  timeoutSeconds: Type.Integer(), powerCycle: Type.Optional(Type.Boolean()),
  wipe: Type.Optional(Type.Boolean()), targetSerial: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  targetSize: Type.Optional(Type.Union([Type.Integer(), Type.Null()])),
  createdAt: Type.String(), updatedAt: Type.String(),
  startedAt: Type.Union([Type.String(), Type.Null()]), finishedAt: Type.Union([Type.String(), Type.Null()]),
});

export const Event = Type.Object({
  seq: Type.Integer(), workflowId: Type.String(), at: Type.String(), kind: Type.String(),
  state: Type.Union([Type.String(), Type.Null()]), message: Type.Union([Type.String(), Type.Null()]),
  bytesDone: Type.Union([Type.Integer(), Type.Null()]), bytesTotal: Type.Union([Type.Integer(), Type.Null()]),
  payload: Type.Record(Type.String(), Type.Unknown()),
});

export const WorkflowWithEvents = Type.Intersect([Workflow, Type.Object({
  events: Type.Array(Event),
  /** More events follow: pass this as ?eventsAfter= for the next page; null on the last page. */
  eventsNext: Type.Optional(Type.Union([Type.Integer(), Type.Null()])),
})]);

/** GET /workflows/{id}: one page of its events, in order (seq). */
export const WorkflowEventsQuery = Type.Object({
  eventsAfter: Type.Optional(Type.String({ pattern: '^[0-9]{1,12}$', description: 'events with seq above this (default 0)' })),
  eventsLimit: Type.Optional(Type.String({ pattern: '^[0-9]{1,5}$', description: 'events per page, 1…10000 (default 1000)' })),
});
export const EVENTS_PAGE_DEFAULT = 1000;
export const EVENTS_PAGE_MAX = 10_000;

export const WorkflowListQuery = Type.Object({
  machine: Type.Optional(Type.String()),
  state: Type.Optional(WorkflowState),
});

/** First-boot data and EC2 metadata of installed machines (server/workflows/install.ts), pure. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { firstBootFiles, instanceData, metadataListing, metadataTree, networkConfig, networkdUnit, userData } from '../../server/workflows/install.ts';
import type { Machine } from '../../server/store/machines.ts';
import type { Workflow } from '../../server/store/workflows.ts';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example';
const machine = (over: Partial<Machine> = {}) => ({ id: 1, mac: '52:54:00:91:00:05', hostname: 'web-1.rack.example', ipv4: null, arch: 'auto', efiBinary: 'ipxe.efi', allowPxe: true, labels: {}, sshKeys: [KEY], createdAt: '', updatedAt: '', ...over }) as Machine;
const wf = { id: '0c4cdc95-f83b-4f16-aa61-3461a44afe72', kernelArgs: '' } as Workflow;

test('no reservation: networkd and network-config use DHCP; a host name is always given', () => {
  const d = instanceData(machine({ hostname: null }), wf, { name: 'deb' });
  assert.equal(d.hostname, 'ironboot-525400910005');
  assert.match(networkdUnit(d), /\[Match\]\nMACAddress=52:54:00:91:00:05\n\n\[Network\]\nDHCP=ipv4\n/);
  assert.deepEqual(JSON.parse(networkConfig(d)).ethernets.eth0, { match: { macaddress: '52:54:00:91:00:05' }, 'set-name': 'eth0', dhcp4: true });
  assert.equal(firstBootFiles(d, wf).some((f) => f.path === '/etc/resolv.conf'), false, 'no DNS given: the image keeps its resolv.conf');
});

test('a static reservation: address, gateway, DNS and search domain everywhere; FQDN split for /etc/hostname', () => {
  const d = instanceData(machine({ ipv4: { address: '10.91.5.9', prefix: 24, gateway: '10.91.5.1', dns: ['10.91.5.1', '10.91.5.2'], domain: 'rack.example' } }), wf, { name: 'deb' });
  assert.equal(networkdUnit(d).split('\n').slice(5).join('\n'), 'Address=10.91.5.9/24\nGateway=10.91.5.1\nDNS=10.91.5.1\nDNS=10.91.5.2\nDomains=rack.example\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n');
  const files = new Map(firstBootFiles(d, wf).map((f) => [f.path, f]));
  assert.equal(files.get('/etc/hostname')!.content, 'web-1\n');
  assert.match(files.get('/etc/hosts')!.content, /^10\.91\.5\.9\tweb-1\.rack\.example web-1$/m);
  assert.equal(files.get('/etc/resolv.conf')!.content, 'search rack.example\nnameserver 10.91.5.1\nnameserver 10.91.5.2\n');
  const ud = userData(d);
  assert.ok(ud.startsWith('#cloud-config\n'));
  assert.deepEqual(JSON.parse(ud.slice('#cloud-config\n'.length)), { hostname: 'web-1', fqdn: 'web-1.rack.example', ssh_authorized_keys: [KEY], manage_etc_hosts: false });
  assert.equal(JSON.parse(networkConfig(d)).ethernets.eth0.routes[0].via, '10.91.5.1');
});

test('metadata tree: EC2 listings of the root and the public keys', () => {
  const d = instanceData(machine({ ipv4: { address: '10.91.5.9', prefix: 24, dns: [] } }), wf, { name: 'deb' });
  const t = metadataTree(d);
  assert.equal(t.get('instance-id'), 'i-0c4cdc95f83b4f16a');
  assert.deepEqual(metadataListing(t, '')!.split('\n'), ['instance-id', 'hostname', 'local-hostname', 'mac', 'local-ipv4', 'public-keys/']);
  assert.equal(metadataListing(t, 'public-keys/'), '0=ops@example');
  assert.equal(metadataListing(t, 'public-keys/0/'), 'openssh-key');
  assert.equal(t.get('public-keys/0/openssh-key'), KEY);
  assert.equal(metadataListing(t, 'nothing/'), null);
  const none = metadataTree(instanceData(machine({ sshKeys: [] }), wf, { name: 'deb' }));
  assert.equal(none.has('public-keys/'), false);
  assert.equal(none.has('local-ipv4'), false);
});

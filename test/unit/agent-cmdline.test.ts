import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cmdlineMap, parseAgentConfig, parseBootMac, splitWords, tokenizeCmdline } from '../../init/agent/cmdline.ts';

test('the seed keys: root= and entrypoint= select the serverless flow', () => {
  const c = parseAgentConfig('BOOT_IMAGE=/vmlinuz console=ttyS0 root=/dev/sda entrypoint=/usr/sbin/nginx\n');
  assert.equal(c.mode, 'seed');
  assert.equal(c.root, '/dev/sda');
  assert.deepEqual(c.entrypoint, ['/usr/sbin/nginx']);
  assert.equal(c.server, null);
  assert.deepEqual(c.warnings, []);
});

test('namespaced keys select the server flow', () => {
  const c = parseAgentConfig('console=ttyS0 ironboot.server=http://10.0.0.1:8080/ ironboot.workflow=wf-1 ironboot.token=abc initrd=initramfs');
  assert.equal(c.mode, 'server');
  assert.equal(c.server, 'http://10.0.0.1:8080');
  assert.equal(c.workflowId, 'wf-1');
  assert.equal(c.token, 'abc');
});

test('values keep every = after the first (base64 tokens, URLs with queries)', () => {
  const c = parseAgentConfig('ironboot.token=YWJj== ironboot.server=http://s/x?a=b&c=d ironboot.workflow=w');
  assert.equal(c.token, 'YWJj==');
  assert.equal(c.server, 'http://s/x?a=b&c=d');
  assert.equal(cmdlineMap('a==b').get('a'), '=b');
});

test('double quotes group words, around the value or the whole parameter, like the kernel', () => {
  assert.deepEqual(parseAgentConfig('root=/dev/vda entrypoint="/bin/sh -c \'echo hi there\'"').entrypoint, ['/bin/sh', '-c', 'echo hi there']);
  assert.deepEqual(cmdlineMap('"ironboot.x=a b" y').get('ironboot.x'), 'a b');
  assert.deepEqual(tokenizeCmdline('a="1 2" b c=').params, [{ key: 'a', value: '1 2' }, { key: 'b', value: null }, { key: 'c', value: '' }]);
});

test('everything after -- is init argv, not parameters', () => {
  const t = tokenizeCmdline('root=/dev/sda -- entrypoint=/x --flag');
  assert.deepEqual(t.params, [{ key: 'root', value: '/dev/sda' }]);
  assert.deepEqual(t.initArgs, ['entrypoint=/x', '--flag']);
  assert.equal(parseAgentConfig('root=/dev/sda -- entrypoint=/x').mode, 'none');
});

test('the last occurrence of a key wins', () => {
  assert.equal(parseAgentConfig('root=/dev/sda root=/dev/vda entrypoint=/x').root, '/dev/vda');
});

test('BOOTIF (PXELINUX form) and ironboot.mac give the boot interface', () => {
  assert.equal(parseBootMac('01-52-54-00-12-34-56'), '52:54:00:12:34:56');
  assert.equal(parseBootMac('52:54:00:AB:CD:EF'), '52:54:00:ab:cd:ef');
  assert.equal(parseBootMac('nope'), null);
  assert.equal(parseAgentConfig('BOOTIF=01-52-54-00-12-34-56').mac, '52:54:00:12:34:56');
  assert.equal(parseAgentConfig('BOOTIF=01-52-54-00-12-34-56 ironboot.mac=52-54-00-00-00-01').mac, '52:54:00:00:00:01');
  assert.match(parseAgentConfig('ironboot.mac=zz').warnings[0], /not a MAC/);
});

test('VLAN and static addressing', () => {
  const c = parseAgentConfig('ironboot.vlan=120 ironboot.ip=10.1.2.3/23 ironboot.gw=10.1.2.1 ironboot.dns=1.1.1.1,9.9.9.9');
  assert.equal(c.vlan, 120);
  assert.deepEqual(c.staticIp, { address: '10.1.2.3', prefix: 23, gateway: '10.1.2.1', dns: ['1.1.1.1', '9.9.9.9'] });
  const bad = parseAgentConfig('ironboot.vlan=5000 ironboot.ip=10.1.2/99');
  assert.equal(bad.vlan, null);
  assert.equal(bad.staticIp, null);
  assert.equal(bad.warnings.length, 2);
});

test('other agent keys and their defaults', () => {
  const d = parseAgentConfig('');
  assert.equal(d.mode, 'none');
  assert.equal(d.zeroout, true);
  assert.equal(d.net, true);
  assert.equal(d.after, null);
  const c = parseAgentConfig('ironboot.after=poweroff ironboot.modules=virtio_pci,virtio_net ironboot.zeroout=0 ironboot.net=0 rootfstype=xfs');
  assert.equal(c.after, 'poweroff');
  assert.deepEqual(c.modules, ['virtio_pci', 'virtio_net']);
  assert.equal(c.zeroout, false);
  assert.equal(c.net, false);
  assert.equal(c.rootFsType, 'xfs');
  assert.match(parseAgentConfig('ironboot.after=explode').warnings[0], /ironboot.after/);
});

test('an incomplete server flow says what is missing', () => {
  const c = parseAgentConfig('ironboot.server=http://s');
  assert.equal(c.mode, 'none');
  assert.match(c.warnings.join(' '), /ironboot.workflow and ironboot.token/);
});

test('splitWords: quotes and backslashes', () => {
  assert.deepEqual(splitWords(`a 'b c' d\\ e ''`), ['a', 'b c', 'd e', '']);
  assert.throws(() => splitWords(`'open`), /unterminated/);
});

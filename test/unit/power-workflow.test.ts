/** Workflows created with powerCycle: stored, need a BMC, time out even while pending, and are retried the same way. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WorkflowService, WorkflowError } from '../../server/workflows/service.ts';
import { silentLog, readyImage } from '../helpers/daemon.ts';
import { describeStores } from '../helpers/stores.ts';

describeStores('power workflows and BMC settings over the store', (backend) => {
test('powerCycle workflows: a BMC is required; a pending one times out; retry keeps powerCycle', (t) => {
  const store = backend.open(t).store;
  store.images.insert(readyImage({ id: 'img1', name: 'web' }));
  store.machines.create({ mac: '52:54:00:00:33:01' });
  store.machines.create({ mac: '52:54:00:00:33:02', bmc: { url: 'ipmi://10.0.0.2:623', username: 'admin', password: 'pw' } });
  const wfs = new WorkflowService(store, silentLog());

  assert.throws(() => wfs.create({ mac: '52:54:00:00:33:01', image: 'web', target: '/dev/vda', powerCycle: true }),
    (e: WorkflowError) => e.status === 400 && e.field === 'powerCycle' && /no BMC/.test(e.message));
  assert.equal(store.workflows.list().length, 0, 'nothing written');

  const plain = wfs.create({ mac: '52:54:00:00:33:01', image: 'web', target: '/dev/vda', timeoutSeconds: 10 });
  const wf = wfs.create({ mac: '52:54:00:00:33:02', image: 'web', target: '/dev/vda', powerCycle: true, timeoutSeconds: 10 });
  assert.equal(store.workflows.get(wf.id)!.powerCycle, true);
  assert.equal(store.workflows.get(plain.id)!.powerCycle, false);

  // the daemon started this boot itself, so its clock runs while it is still pending; a plain pending one waits
  assert.equal(wfs.expire(Date.now() + 11_000), 1);
  assert.equal(store.workflows.get(wf.id)!.state, 'timed-out');
  assert.equal(store.workflows.get(plain.id)!.state, 'pending');

  const again = wfs.retry(wf.id);
  assert.equal(again.powerCycle, true);
  assert.equal(again.machineMac, '52:54:00:00:33:02');
});

test('machines: the BMC password is kept for the power service only; a PATCH without it keeps it', (t) => {
  const store = backend.open(t).store;
  const m = store.machines.create({ mac: '52:54:00:00:33:03', bmc: { url: 'redfish://10.0.0.3:443', username: 'root', password: 'pw1', tlsInsecure: true } });
  assert.deepEqual(m.bmc, { url: 'redfish://10.0.0.3:443', username: 'root', tlsInsecure: true, ca: null });
  assert.ok(!JSON.stringify(store.machines.list()).includes('pw1'));
  store.machines.update(m.mac, { hostname: 'n3' });
  assert.equal(store.machines.getBmcCredentials(m.id)!.password, 'pw1', 'an unrelated change keeps the BMC');
  store.machines.update(m.mac, { bmc: { url: 'redfish://10.0.0.4:443', username: 'root' } });
  assert.deepEqual(store.machines.getBmcCredentials(m.id), { url: 'redfish://10.0.0.4:443', username: 'root', password: 'pw1', tlsInsecure: false, ca: null });
  store.machines.update(m.mac, { bmc: null });
  assert.equal(store.machines.getBmcCredentials(m.id), undefined);
  assert.equal(store.machines.getByMac(m.mac)!.bmc, null);
  store.machines.setPower(m.id, { state: 'on' });
  assert.equal(store.machines.getByMac(m.mac)!.power!.state, 'on');
  store.machineEvents.append({ machineId: m.id, kind: 'power', action: 'on', outcome: 'ok', message: 'powered on', workflowId: null });
  assert.equal(store.machineEvents.list(m.id).length, 1);
  assert.ok(store.machines.delete(m.id));
  assert.equal((store.db.prepare('SELECT COUNT(*) AS n FROM machine_events').get() as { n: number }).n, 0, 'events go with their machine');
});
});

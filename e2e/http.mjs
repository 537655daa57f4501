// GraphQL over HTTP: the reference audit of the GraphQL-over-HTTP specification (npm
// `graphql-http`, its `serverAudits`) against the real binary, with an API key. Every MUST and
// every SHOULD audit must be `ok`; MAY audits are reported, not required.
//
//   node --test e2e/http.mjs      (or: bash e2e/run.sh)

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serverAudits } from 'graphql-http';
import { Server } from './server.mjs';

const KEY = 'admin-key-audit-0001';
const tmp = mkdtempSync(join(tmpdir(), 'stockroom-audit-'));
const server = new Server(join(tmp, 'audit.db'), `admin:${KEY}`);

before(async () => {
  await server.start();
});

after(async () => {
  await server.stop();
  rmSync(tmp, { recursive: true, force: true });
});

test('graphql-http serverAudits: every MUST and SHOULD is ok', async () => {
  const fetchFn = (input, init = {}) => {
    const headers = new Headers(init.headers || {});
    headers.set('authorization', `Bearer ${KEY}`);
    return fetch(input, { ...init, headers });
  };
  const audits = serverAudits({ url: `${server.url}/graphql`, fetchFn });
  assert.ok(audits.length > 40, `the audit list (${audits.length})`);
  const failed = [];
  for (const audit of audits) {
    const result = await audit.fn();
    const required = audit.name.startsWith('MUST') || audit.name.startsWith('SHOULD');
    if (result.status !== 'ok' && required) failed.push(`${result.status}: ${audit.name}: ${result.reason}`);
    if (result.status !== 'ok' && !required) console.log(`(MAY, not required) ${audit.name}: ${result.reason}`);
  }
  assert.deepEqual(failed, []);
});

// Automatic persisted queries with the real Apollo Client (`@apollo/client` and its
// PersistedQueryLink) against the binary: the first client sends a hash, is told
// PERSISTED_QUERY_NOT_FOUND, and sends the query with it; another client then gets the answer
// by hash alone, over POST and over GET (useGETForHashedQueries).
//
//   node --test e2e/apq.mjs      (or: bash e2e/run.sh)

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { PersistedQueryLink } from '@apollo/client/link/persisted-queries';
import { Server } from './server.mjs';

const KEY = 'read-key-apq-00001';
const tmp = mkdtempSync(join(tmpdir(), 'stockroom-apq-'));
const server = new Server(join(tmp, 'apq.db'), `read:${KEY}`);
const sha256 = (text) => createHash('sha256').update(text).digest('hex');

/** Every request the client sends: method, and whether it carried the query text. */
function client(useGETForHashedQueries, seen) {
  const fetchFn = async (input, init = {}) => {
    const url = new URL(typeof input === 'string' ? input : input.url);
    const body = init.body ? JSON.parse(init.body) : null;
    seen.push({
      method: init.method || 'GET',
      withQuery: Boolean(body ? body.query : url.searchParams.get('query')),
    });
    return fetch(input, init);
  };
  const http = new HttpLink({
    uri: `${server.url}/graphql`,
    headers: { authorization: `Bearer ${KEY}` },
    fetch: fetchFn,
  });
  const link = new PersistedQueryLink({ sha256, useGETForHashedQueries }).concat(http);
  return new ApolloClient({ link, cache: new InMemoryCache() });
}

const QUERY = gql`
  query PersistedHealth {
    health {
      database
    }
  }
`;

before(async () => {
  await server.start();
});

after(async () => {
  await server.stop();
  rmSync(tmp, { recursive: true, force: true });
});

test('Apollo Client persisted queries: registered once, then served by hash over POST and GET', async () => {
  const first = [];
  const registered = await client(false, first).query({ query: QUERY, fetchPolicy: 'no-cache' });
  assert.equal(registered.data.health.database, 'ok');
  assert.deepEqual(
    first.map((r) => r.withQuery),
    [false, true],
    'the hash alone first, then the query with it',
  );

  const byPost = [];
  const again = await client(false, byPost).query({ query: QUERY, fetchPolicy: 'no-cache' });
  assert.equal(again.data.health.database, 'ok');
  assert.deepEqual(byPost, [{ method: 'POST', withQuery: false }], 'the hash alone was enough');

  const byGet = [];
  const viaGet = await client(true, byGet).query({ query: QUERY, fetchPolicy: 'no-cache' });
  assert.equal(viaGet.data.health.database, 'ok');
  assert.deepEqual(byGet, [{ method: 'GET', withQuery: false }]);
});

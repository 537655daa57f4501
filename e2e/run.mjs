// End-to-end tests of the playground and the dashboard in headless Chromium.
//
// Starts the real server binary (STOCKROOM_BIN, default target/debug/stockroom) on a free port with a
// temporary SQLite file and API keys, seeds it over HTTP GraphQL, then drives Debian's chromium
// (/usr/bin/chromium, or CHROMIUM_PATH) through playwright-core. Screenshots go to e2e/artifacts/;
// with UPDATE_DOCS_SCREENSHOTS=1 the playground and dashboard shots are also copied to docs/.
//
//   node --test --test-concurrency=1 e2e/run.mjs      (or: bash e2e/run.sh)

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { once } from 'node:events';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { chromium } from 'playwright-core';
import { BIN, Server } from './server.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..');
const ARTIFACTS = join(HERE, 'artifacts');
const DOCS = join(ROOT, 'docs');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const ADMIN_KEY = 'admin-key-e2e-0001';
const READ_KEY = 'read-key-e2e-00001';
const API_KEYS = `admin:${ADMIN_KEY},read:${READ_KEY}`;
const UPDATE_DOCS = process.env.UPDATE_DOCS_SCREENSHOTS === '1';

mkdirSync(ARTIFACTS, { recursive: true });

// ------------------------------------------------------------------ the server


async function gql(server, query, variables = {}, key = ADMIN_KEY) {
  const response = await fetch(`${server.url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`GraphQL error: ${JSON.stringify(body.errors)}`);
  return body.data;
}

async function seed(server) {
  for (const store of [
    { id: 'store-1', name: 'Downtown' },
    { id: 'store-2', name: 'Harbour' },
  ]) {
    await gql(server, 'mutation($input: CreateStoreInput!) { createStore(input: $input) { id } }', { input: store });
  }
  const catalogue = [
    { sku: 'MUG-001', name: 'Enamel mug', category: 'kitchen', price: '9.50', quantity: 40, reorderPoint: 10 },
    { sku: 'LAMP-002', name: 'Desk lamp', category: 'home', price: '34.00', quantity: 12, reorderPoint: 5 },
    { sku: 'TENT-003', name: 'Two-person tent', category: 'outdoor', price: '129.00', quantity: 4, reorderPoint: 5 },
    { sku: 'SOCK-004', name: 'Wool socks', category: 'apparel', price: '12.00', quantity: 60, reorderPoint: 15 },
    { sku: 'KETTLE-005', name: 'Stovetop kettle', category: 'kitchen', price: '27.00', quantity: 8, reorderPoint: 3 },
  ];
  const products = {};
  for (const item of catalogue) {
    const { createProduct } = await gql(
      server,
      'mutation($input: CreateProductInput!) { createProduct(input: $input) { id sku } }',
      { input: { sku: item.sku, name: item.name, category: item.category, price: item.price } },
    );
    products[item.sku] = createProduct.id;
    for (const storeId of ['store-1', 'store-2']) {
      await gql(server, 'mutation($input: InitializeStockInput!) { initializeStock(input: $input) { version } }', {
        input: { productId: createProduct.id, storeId, quantity: item.quantity, reorderPoint: item.reorderPoint },
      });
    }
  }
  return products;
}

async function reserve(server, productId, storeId, quantity) {
  const { reserveStock } = await gql(
    server,
    `mutation($input: ReserveStockInput!) { reserveStock(input: $input) { id status } }`,
    { input: { productId, storeId, quantity, customerId: 'e2e' } },
  );
  return reserveStock;
}

// ------------------------------------------------------------------ browser helpers

async function launchBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`Chromium not found at ${CHROMIUM}: install Debian's chromium (apt-get install -y chromium) or set CHROMIUM_PATH`);
  }
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 60000 });
}

/** Collects console errors and failed requests so a failing test says why. */
function watchPage(page, name) {
  const problems = [];
  page.on('console', (message) => {
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('requestfailed', (request) => {
    const url = request.url();
    problems.push(`request failed: ${url} ${request.failure()?.errorText ?? ''}`);
  });
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (!['127.0.0.1', 'localhost'].includes(url.hostname) && !['data:', 'blob:'].includes(url.protocol)) {
      problems.push(`off-origin request (no CDN allowed): ${request.url()}`);
    }
  });
  page.problems = problems;
  page.shot = async (file) => {
    const path = join(ARTIFACTS, file);
    await page.screenshot({ path });
    return path;
  };
  page.name = name;
  return page;
}

/** Text of a GraphiQL CodeMirror editor (the DOM only holds the visible lines). */
async function editorText(page, selector) {
  return page.evaluate((sel) => {
    const node = document.querySelector(`${sel} .CodeMirror`);
    return node && node.CodeMirror ? node.CodeMirror.getValue() : '';
  }, selector);
}

async function waitForEditorText(page, selector, predicate, timeout, describeWhat) {
  const deadline = Date.now() + timeout;
  let text = '';
  while (Date.now() < deadline) {
    text = await editorText(page, selector);
    if (predicate(text)) return text;
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${describeWhat}; last ${selector} text:\n${text}`);
}

async function openTab(page, title) {
  const tab = page.locator('.graphiql-tab', { hasText: title }).first();
  await tab.waitFor({ timeout: 15000 });
  await tab.locator('button').first().click();
  await page.waitForFunction(
    (t) => (document.querySelector('.graphiql-tab-active')?.textContent ?? '').includes(t),
    title,
    { timeout: 5000 },
  );
  await waitForEditorText(page, '.graphiql-query-editor', (t) => t.includes(title), 5000, `the ${title} document`);
  // GraphiQL works out the operation name a moment after the editor changes.
  await sleep(500);
}

// ------------------------------------------------------------------ the tests

// Fail loudly (a failed test in the summary, never a skip) when a prerequisite is missing.
test('prerequisites: Chromium and the server binary are installed', () => {
  assert.ok(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM}: apt-get install -y chromium, or set CHROMIUM_PATH`);
  assert.ok(existsSync(BIN), `server binary not found at ${BIN}: run cargo build, or set STOCKROOM_BIN`);
});

describe('playground and dashboard in Chromium', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'stockroom-e2e-'));
  const server = new Server(join(tmp, 'e2e.db'), API_KEYS);
  let browser;
  let context;
  let products;

  before(async () => {
    browser = await launchBrowser();
    await server.start();
    products = await seed(server);
    context = await browser.newContext({ viewport: { width: 1360, height: 820 } });
  });

  after(async () => {
    await context?.close().catch(() => {});
    await browser?.close().catch(() => {});
    await server.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test('GET / and GET /graphql serve the vendored GraphiQL page, assets from this origin', async () => {
    for (const path of ['/', '/graphql']) {
      const response = await fetch(`${server.url}${path}`, { headers: { accept: 'text/html' } });
      assert.equal(response.status, 200);
      assert.match(response.headers.get('content-type'), /^text\/html/);
      const html = await response.text();
      assert.match(html, /Stockroom playground/);
      assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, 'the page must not load anything from a CDN');
    }
    const script = await fetch(`${server.url}/playground/assets/index.js`);
    assert.equal(script.status, 200);
    assert.match(script.headers.get('content-type'), /javascript/);
    const dashboard = await fetch(`${server.url}/dashboard`);
    assert.equal(dashboard.status, 200);
    assert.match(await dashboard.text(), /Stockroom dashboard/);
  });

  test('the playground runs a query with the API key and shows the result', async () => {
    const page = watchPage(await context.newPage(), 'playground');
    await page.goto(`${server.url}/`);
    await page.locator('.graphiql-container').waitFor({ timeout: 30000 });
    // Without a key the schema introspection is refused (401): expected, and not a page problem.
    page.problems.length = 0;
    // The key is entered once, kept in localStorage and sent as Authorization: Bearer.
    await page.fill('#api-key', READ_KEY);
    await page.click('#api-key-save');
    await page.locator('#api-key-state', { hasText: 'saved' }).waitFor();
    assert.equal(await page.evaluate(() => localStorage.getItem('stockroom.apiKey')), READ_KEY);
    await page.locator('.graphiql-container').waitFor({ timeout: 30000 });

    // All the examples are preloaded as tabs.
    for (const title of ['BrowseProducts', 'StockOfAStore', 'LowStock', 'ReserveStock', 'WatchEvents']) {
      await page.locator('.graphiql-tab', { hasText: title }).first().waitFor({ timeout: 15000 });
    }

    await openTab(page, 'BrowseProducts');
    const sentAuth = page.waitForRequest(
      (request) => request.url().endsWith('/graphql') && request.method() === 'POST' &&
        request.postData()?.includes('BrowseProducts'),
    );
    await page.click('.graphiql-execute-button');
    const request = await sentAuth;
    assert.equal(request.headers().authorization, `Bearer ${READ_KEY}`);
    const text = await waitForEditorText(page, '.graphiql-response', (t) => t.includes('MUG-001'), 15000, 'the products');
    for (const sku of ['LAMP-002', 'TENT-003']) assert.ok(text.includes(sku), `result lists ${sku}`);
    assert.ok(!text.includes('UNAUTHENTICATED'));
    await page.shot('playground-query.png');
    assert.deepEqual(page.problems, []);
    await page.close();
  });

  test('a subscription started in the playground shows an event after a mutation', async () => {
    const page = watchPage(await context.newPage(), 'playground-subscription');
    const sockets = [];
    page.on('websocket', (ws) => {
      const frames = [];
      const received = [];
      ws.on('framesent', (frame) => frames.push(String(frame.payload)));
      ws.on('framereceived', (frame) => received.push(String(frame.payload).slice(0, 200)));
      ws.on('close', () => received.push('(closed)'));
      sockets.push({ url: ws.url(), frames, received });
    });
    await page.goto(`${server.url}/graphql`);
    await page.locator('.graphiql-container').waitFor({ timeout: 30000 });
    await openTab(page, 'WatchEvents');

    // Start the subscription (again, if GraphiQL has not sent it yet), then change stock until the
    // event shows up.
    const marker = `e2e-${Date.now()}`;
    const deadline = Date.now() + 30000;
    const subscribed = () => sockets.some((s) => s.frames.some((f) => f.includes('"subscribe"')));
    let text = '';
    while (Date.now() < deadline && !text.includes(marker)) {
      if (!subscribed()) {
        await page.click('.graphiql-execute-button');
        const until = Date.now() + 3000;
        while (!subscribed() && Date.now() < until) await sleep(100);
        continue;
      }
      await gql(server, 'mutation($input: AdjustStockInput!) { adjustStock(input: $input) { version } }', {
        input: { productId: products['MUG-001'], storeId: 'store-1', delta: 5, reason: marker },
      });
      try {
        text = await waitForEditorText(page, '.graphiql-response', (t) => t.includes(marker), 3000, 'the event');
      } catch {
        // the subscription may not have been live on the server yet: mutate again
      }
    }
    if (!text.includes(marker)) await page.shot('playground-subscription-failed.png');
    assert.ok(
      text.includes('stock.updated'),
      `the playground shows the stock.updated event, got:\n${text}\nsockets: ${JSON.stringify(sockets)}\n${page.problems}`,
    );
    assert.ok(text.includes(marker));
    // Same origin WebSocket with the key in connection_init.
    const socket = sockets.find((s) => s.url.endsWith('/graphql/ws'));
    assert.ok(socket, `a WebSocket to /graphql/ws, saw ${sockets.map((s) => s.url)}`);
    assert.equal(new URL(socket.url).host, new URL(server.url).host);
    const init = socket.frames.map((f) => JSON.parse(f)).find((m) => m.type === 'connection_init');
    assert.deepEqual(init.payload, { apiKey: READ_KEY });
    const path = await page.shot('playground-subscription.png');
    if (UPDATE_DOCS) {
      mkdirSync(DOCS, { recursive: true });
      copyFileSync(path, join(DOCS, 'playground.png'));
    }
    assert.deepEqual(page.problems, []);
    await page.close();
  });

  test('the dashboard updates a cell live after a reservation, and recovers after a restart', async () => {
    const page = watchPage(await context.newPage(), 'dashboard');
    await page.goto(`${server.url}/dashboard?store=store-1`);
    // The key saved in the playground is reused (same localStorage key).
    assert.equal(await page.inputValue('#api-key'), READ_KEY);
    await page.locator('#connection[data-state="live"]').waitFor({ timeout: 15000 });
    await page.locator('#stock-table[data-loaded="true"]').waitFor({ timeout: 15000 });

    const tent = products['TENT-003'];
    const lamp = products['LAMP-002'];
    const cell = (productId, field) =>
      page.locator(`td[data-product-id="${productId}"][data-store-id="store-1"][data-field="${field}"]`);
    const row = (productId) => page.locator(`tr[data-product-id="${productId}"][data-store-id="store-1"]`);
    assert.equal(await cell(lamp, 'quantity').textContent(), '12');
    assert.equal(await cell(lamp, 'reserved').textContent(), '0');
    assert.equal(await cell(lamp, 'available').textContent(), '12');
    assert.equal(await cell(lamp, 'reorderPoint').textContent(), '5');
    // Seeded below its reorder point: highlighted from the start.
    assert.equal(await row(tent).getAttribute('data-low'), 'true');
    assert.equal(await row(lamp).getAttribute('data-low'), 'false');
    await page.locator('#broker').filter({ hasText: /memory|ok/ }).waitFor({ timeout: 10000 });

    // A reservation made over HTTP shows up without a reload.
    await reserve(server, lamp, 'store-1', 8);
    await page.locator(`td[data-product-id="${lamp}"][data-store-id="store-1"][data-field="reserved"]`, { hasText: /^8$/ })
      .waitFor({ timeout: 10000 });
    assert.equal(await cell(lamp, 'available').textContent(), '4');
    assert.equal(await cell(lamp, 'quantity').textContent(), '12');
    assert.equal(await row(lamp).getAttribute('data-low'), 'true', 'available 4 <= reorder point 5 is highlighted');
    await page.locator('#event-feed li[data-event-type="reservation.created"]').first().waitFor({ timeout: 10000 });
    await page.locator('#event-feed li[data-event-type="stock.low"]').first().waitFor({ timeout: 10000 });
    await sleep(1600); // let the change highlight fade for the screenshot
    const path = await page.shot('dashboard.png');
    if (UPDATE_DOCS) {
      mkdirSync(DOCS, { recursive: true });
      copyFileSync(path, join(DOCS, 'dashboard.png'));
    }
    // Other stores are not mixed in.
    assert.equal(await page.locator('tr[data-store-id="store-2"]').count(), 0);

    // Restart the server: the page reconnects by itself, refetches, and goes on updating.
    await server.restart();
    await page.locator('#connection[data-state="live"]').waitFor({ timeout: 30000 });
    const mug = products['MUG-001'];
    const before = Number(await cell(mug, 'reserved').textContent());
    await reserve(server, mug, 'store-1', 2);
    await page.locator(`td[data-product-id="${mug}"][data-store-id="store-1"][data-field="reserved"]`, {
      hasText: new RegExp(`^${before + 2}$`),
    }).waitFor({ timeout: 15000 });
    await page.shot('dashboard-after-restart.png');
    // While the server was down the browser logs failed requests; anything else is a bug.
    const unexpected = page.problems.filter(
      (p) => !/ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|WebSocket connection|Failed to load resource/.test(p),
    );
    assert.deepEqual(unexpected, []);
    await page.close();
  });

  test('the browser accepts the protocol close frames (4400, 4409, 4429) with their codes', async () => {
    const page = await context.newPage();
    await page.goto(`${server.url}/dashboard`);
    const codes = await page.evaluate(async (key) => {
      // Opens a graphql-transport-ws connection, waits for the ack, sends `messages`, and
      // resolves with the close code the browser reports (1006 if it rejected the frame).
      const closeAfter = (messages) => new Promise((resolve) => {
        const socket = new WebSocket(`${location.origin.replace('http', 'ws')}/graphql/ws`, 'graphql-transport-ws');
        socket.onopen = () => socket.send(JSON.stringify({ type: 'connection_init', payload: { apiKey: key } }));
        socket.onmessage = (event) => {
          if (JSON.parse(event.data).type === 'connection_ack') messages.forEach((m) => socket.send(m));
        };
        socket.onclose = (event) => resolve(event.code);
        setTimeout(() => resolve('still open'), 5000);
      });
      const subscribe = JSON.stringify({ id: 'x', type: 'subscribe', payload: { query: 'subscription { inventoryEvents { id } }' } });
      return {
        unknown: await closeAfter([JSON.stringify({ type: 'no_such_type', padding: 'y'.repeat(300) })]),
        notJson: await closeAfter(['{']),
        duplicate: await closeAfter([subscribe, subscribe]),
        secondInit: await closeAfter([JSON.stringify({ type: 'connection_init', payload: { apiKey: key } })]),
      };
    }, READ_KEY);
    assert.deepEqual(codes, { unknown: 4400, notJson: 4400, duplicate: 4409, secondInit: 4429 });
    await page.close();
  });

  test('the dashboard reports a refused key', async () => {
    const page = watchPage(await context.newPage(), 'dashboard-bad-key');
    await page.goto(`${server.url}/dashboard`);
    await page.fill('#api-key', 'not-a-key');
    await page.click('#api-key-form button[type="submit"]');
    await page.locator('#message', { hasText: /refused/ }).waitFor({ timeout: 15000 });
    await page.shot('dashboard-bad-key.png');
    // Put the good key back for anything that runs later in this context.
    await page.evaluate((key) => localStorage.setItem('stockroom.apiKey', key), READ_KEY);
    await page.close();
  });
});

// A page on another origin (evil.test, which Chromium resolves to 127.0.0.1) against a server in
// the open first-run mode: no key is needed, so only the server's own checks stand between the
// page and the data.
describe('open mode against a page from another origin', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'stockroom-e2e-open-'));
  const server = new Server(join(tmp, 'open.db'), null);
  let attacker;
  let browser;

  before(async () => {
    await server.start();
    attacker = createServer((request, response) => {
      response.writeHead(200, { 'content-type': 'text/html' });
      response.end('<!doctype html><title>evil</title><p>nothing to see</p>');
    });
    attacker.listen(0, '127.0.0.1');
    await once(attacker, 'listening');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [...CHROMIUM_ARGS, '--host-resolver-rules=MAP evil.test 127.0.0.1'],
      timeout: 60000,
    });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    attacker?.close();
    await server.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  async function storeIds() {
    const response = await fetch(`${server.url}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ stores { id } }' }),
    });
    return (await response.json()).data.stores.map((s) => s.id);
  }

  test('simple cross-origin POSTs and WebSockets are refused', async () => {
    const page = await browser.newPage();
    await page.goto(`http://evil.test:${attacker.address().port}/`);
    const target = server.url;
    const results = await page.evaluate(async (target) => {
      const mutation = (id) => JSON.stringify({ query: `mutation { createStore(input: {id: "${id}", name: "x"}) { id } }` });
      const results = {};
      // "Simple" requests: the browser sends them without asking the server first.
      for (const [name, type, body] of [
        ['text', 'text/plain', mutation('evil-text')],
        ['form', 'application/x-www-form-urlencoded', `query=${encodeURIComponent(mutation('evil-form'))}`],
      ]) {
        try {
          await fetch(`${target}/graphql`, { method: 'POST', mode: 'no-cors', headers: { 'content-type': type }, body });
          results[name] = 'sent';
        } catch (error) {
          results[name] = `not sent: ${error}`;
        }
      }
      results.ws = await new Promise((resolve) => {
        const socket = new WebSocket(`${target.replace('http', 'ws')}/graphql/ws`, 'graphql-transport-ws');
        socket.onopen = () => {
          socket.send(JSON.stringify({ type: 'connection_init', payload: {} }));
          socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: 'mutation { createStore(input: {id: "evil-ws", name: "x"}) { id } }' } }));
          setTimeout(() => resolve('opened'), 1000);
        };
        socket.onerror = () => resolve('refused');
      });
      return results;
    }, target);
    assert.equal(results.ws, 'refused', JSON.stringify(results));
    assert.deepEqual(await storeIds(), [], `a foreign page changed data: ${JSON.stringify(results)}`);
    await page.close();
  });

  test('a rebound host name is refused', async () => {
    const page = await browser.newPage();
    const port = new URL(server.url).port;
    const response = await page.goto(`http://evil.test:${port}/`);
    assert.equal(response.status(), 403);
    const status = await page.evaluate(async () => {
      const response = await fetch('/graphql', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ query: 'mutation { createStore(input: {id: "evil-rebound", name: "x"}) { id } }' }),
      });
      return response.status;
    });
    assert.equal(status, 403);
    assert.deepEqual(await storeIds(), []);
    await page.close();
  });
});

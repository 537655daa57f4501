// Stockroom live dashboard: plain JS, no framework, no CDN.
//
// Data flow: HTTP POST /graphql for the store list, the stock table and the outbox status (polled);
// a hand-written graphql-transport-ws client on /graphql/ws for `stockLevelChanged` and
// `inventoryEvents`. When the socket drops (server restart) it reconnects with backoff, subscribes
// again and refetches the table, so nothing that happened while it was away is missed.
'use strict';

(() => {
  const API_KEY_STORAGE = 'stockroom.apiKey'; // shared with the playground
  const STORE_STORAGE = 'stockroom.dashboard.store';
  const FEED_LIMIT = 100;
  const PAGE_SIZE = 100;
  const MAX_PAGES = 50;
  const OUTBOX_POLL_MS = 3000;
  const PING_MS = 20000;
  /** How long a snapshot waits for the subscriptions to be live before it is read anyway. */
  const BARRIER_TIMEOUT_MS = 3000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 5000;

  const STOCK_FIELDS = 'productId storeId quantity reserved available reorderPoint lowStock version updatedAt product { sku name }';
  const STORES_QUERY = 'query DashboardStores { stores { id name } }';
  const STOCK_QUERY = `query DashboardStock($storeId: ID!, $first: Int!, $after: String) {
    stockLevels(filter: { storeId: $storeId }, first: $first, after: $after) {
      pageInfo { hasNextPage endCursor }
      edges { node { ${STOCK_FIELDS} } }
    }
  }`;
  const OUTBOX_QUERY = 'query DashboardOutbox { outbox { pending dead broker oldestPendingAgeMs lastPublishedAt } }';
  const STOCK_SUBSCRIPTION = `subscription DashboardStockChanged($storeId: ID!) {
    stockLevelChanged(storeId: $storeId) { ${STOCK_FIELDS} }
  }`;
  const EVENTS_SUBSCRIPTION = `subscription DashboardEvents($storeId: ID!) {
    inventoryEvents(filter: { storeId: $storeId }) { id cursor type storeId productId payload occurredAt }
  }`;

  const $ = (id) => document.getElementById(id);

  const state = {
    storeId: '',
    stores: [],
    rows: new Map(), // productId -> { level, tr }
    socket: null,
    handlers: new Map(), // subscription id -> { next, error }
    nextId: 1,
    barriers: new Map(), // ping payload token -> resolve, see subscriptionsLive()
    attempt: 0,
    retryTimer: null,
    pingTimer: null,
    everConnected: false,
    loadGeneration: 0,
  };

  // ---------------------------------------------------------------- API key

  function apiKey() {
    try {
      return localStorage.getItem(API_KEY_STORAGE) || '';
    } catch {
      return '';
    }
  }

  function saveApiKey(key) {
    try {
      if (key) localStorage.setItem(API_KEY_STORAGE, key);
      else localStorage.removeItem(API_KEY_STORAGE);
    } catch {
      // storage disabled
    }
  }

  // ---------------------------------------------------------------- HTTP

  class GraphQLFailure extends Error {
    constructor(message, code) {
      super(message);
      this.code = code;
    }
  }

  async function gql(query, variables) {
    const headers = { 'content-type': 'application/json', accept: 'application/json' };
    const key = apiKey();
    if (key) headers.authorization = `Bearer ${key}`;
    const response = await fetch('/graphql', { method: 'POST', headers, body: JSON.stringify({ query, variables }) });
    let body;
    try {
      body = await response.json();
    } catch {
      throw new GraphQLFailure(`HTTP ${response.status}`, 'HTTP');
    }
    if (body.errors && body.errors.length) {
      const first = body.errors[0];
      throw new GraphQLFailure(first.message, first.extensions && first.extensions.code);
    }
    return body.data;
  }

  // ---------------------------------------------------------------- messages and status

  function showMessage(text) {
    const el = $('message');
    el.textContent = text;
    el.hidden = !text;
  }

  function describeFailure(error) {
    if (error && (error.code === 'UNAUTHENTICATED' || error.code === 'FORBIDDEN')) {
      return `The server refused the API key (${error.code}). Enter a valid key above.`;
    }
    return `Cannot reach the server: ${error && error.message ? error.message : error}. Retrying…`;
  }

  function setConnection(name) {
    const el = $('connection');
    el.dataset.state = name;
    el.textContent = name;
  }

  function formatTime(value) {
    if (!value) return '–';
    const date = new Date(value);
    return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleTimeString();
  }

  function formatAge(ms) {
    if (ms === null || ms === undefined) return '–';
    if (ms < 1000) return `${ms} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.round(ms / 60000)} min`;
  }

  async function refreshOutbox() {
    try {
      const { outbox } = await gql(OUTBOX_QUERY);
      $('broker').textContent = outbox.broker;
      $('broker').classList.toggle('bad', outbox.broker === 'down');
      $('outbox-pending').textContent = String(outbox.pending);
      $('outbox-dead').textContent = String(outbox.dead);
      $('outbox-dead').classList.toggle('bad', outbox.dead > 0);
      $('outbox-age').textContent = formatAge(outbox.oldestPendingAgeMs);
      $('outbox-published').textContent = formatTime(outbox.lastPublishedAt);
    } catch (error) {
      $('broker').textContent = error && error.code === 'UNAUTHENTICATED' ? 'no access' : 'unreachable';
      $('broker').classList.add('bad');
    }
  }

  // ---------------------------------------------------------------- stores

  async function loadStores() {
    const { stores } = await gql(STORES_QUERY);
    state.stores = stores;
    const select = $('store-select');
    select.replaceChildren();
    for (const store of stores) {
      const option = document.createElement('option');
      option.value = store.id;
      option.textContent = `${store.name} (${store.id})`;
      select.append(option);
    }
    if (!stores.length) {
      const option = document.createElement('option');
      option.value = '';
      option.textContent = 'no stores yet';
      select.append(option);
    }
    const wanted = new URLSearchParams(location.search).get('store') || storedStore() || state.storeId;
    const chosen = stores.find((s) => s.id === wanted) || stores[0];
    selectStore(chosen ? chosen.id : '', { resubscribe: false });
  }

  function storedStore() {
    try {
      return localStorage.getItem(STORE_STORAGE) || '';
    } catch {
      return '';
    }
  }

  function selectStore(storeId, { resubscribe }) {
    const changed = storeId !== state.storeId;
    state.storeId = storeId;
    $('store-select').value = storeId;
    const store = state.stores.find((s) => s.id === storeId);
    $('store-name').textContent = store ? store.name : '–';
    try {
      if (storeId) localStorage.setItem(STORE_STORAGE, storeId);
    } catch {
      // storage disabled
    }
    const url = new URL(location.href);
    if (storeId) url.searchParams.set('store', storeId);
    history.replaceState(null, '', url);
    if (changed) {
      state.rows.clear();
      $('stock-body').replaceChildren();
      $('event-feed').replaceChildren();
    }
    if (changed && resubscribe) {
      subscribeAll()
        .then(loadStock)
        .catch((error) => showMessage(describeFailure(error)));
    }
  }

  // ---------------------------------------------------------------- stock table

  const COLUMNS = [
    { field: 'sku', value: (l) => (l.product ? l.product.sku : '') },
    { field: 'name', value: (l) => (l.product ? l.product.name : l.productId) },
    { field: 'quantity', value: (l) => l.quantity, num: true },
    { field: 'reserved', value: (l) => l.reserved, num: true },
    { field: 'available', value: (l) => l.available, num: true },
    { field: 'reorderPoint', value: (l) => l.reorderPoint, num: true },
    { field: 'updatedAt', value: (l) => formatTime(l.updatedAt) },
  ];

  function isLow(level) {
    return typeof level.lowStock === 'boolean' ? level.lowStock : level.available <= level.reorderPoint;
  }

  function createRow(level) {
    const tr = document.createElement('tr');
    tr.dataset.productId = level.productId;
    tr.dataset.storeId = level.storeId;
    for (const column of COLUMNS) {
      const td = document.createElement('td');
      td.dataset.field = column.field;
      td.dataset.productId = level.productId;
      td.dataset.storeId = level.storeId;
      if (column.num) td.className = 'num';
      tr.append(td);
    }
    return tr;
  }

  function sortKey(level) {
    return `${level.product ? level.product.sku : ''}\u0000${level.productId}`;
  }

  function insertSorted(tr, level) {
    const body = $('stock-body');
    const key = sortKey(level);
    for (const existing of body.children) {
      const other = state.rows.get(existing.dataset.productId);
      if (other && sortKey(other.level) > key) {
        body.insertBefore(tr, existing);
        return;
      }
    }
    body.append(tr);
  }

  /** Puts one stock level in the table; older versions than the one shown are ignored. */
  function applyLevel(level, { flash }) {
    if (!level || level.storeId !== state.storeId) return;
    let entry = state.rows.get(level.productId);
    if (entry && typeof entry.level.version === 'number' && level.version < entry.level.version) return;
    if (!level.product && entry) level = { ...level, product: entry.level.product };
    const isNew = !entry;
    if (isNew) {
      entry = { level, tr: createRow(level) };
      state.rows.set(level.productId, entry);
      insertSorted(entry.tr, level);
    }
    entry.level = level;
    for (const [index, column] of COLUMNS.entries()) {
      const td = entry.tr.children[index];
      const text = String(column.value(level));
      if (td.textContent !== text) {
        td.textContent = text;
        if (flash && !isNew && column.field !== 'updatedAt') {
          td.classList.remove('flash');
          void td.offsetWidth; // restart the animation
          td.classList.add('flash');
        }
      }
    }
    const low = isLow(level);
    entry.tr.classList.toggle('low', low);
    entry.tr.dataset.low = String(low);
    entry.tr.dataset.version = String(level.version);
    updateCounts();
  }

  function updateCounts() {
    let low = 0;
    for (const { level } of state.rows.values()) if (isLow(level)) low += 1;
    $('low-count').textContent = String(low);
    $('low-count').classList.toggle('bad', low > 0);
    $('stock-empty').hidden = state.rows.size > 0 || !state.storeId;
  }

  async function loadStock() {
    const storeId = state.storeId;
    const generation = ++state.loadGeneration;
    if (!storeId) {
      updateCounts();
      return;
    }
    const levels = [];
    let after = null;
    for (let page = 0; page < MAX_PAGES; page += 1) {
      const { stockLevels } = await gql(STOCK_QUERY, { storeId, first: PAGE_SIZE, after });
      for (const edge of stockLevels.edges) levels.push(edge.node);
      if (!stockLevels.pageInfo.hasNextPage) break;
      after = stockLevels.pageInfo.endCursor;
    }
    if (generation !== state.loadGeneration || storeId !== state.storeId) return;
    const seen = new Set(levels.map((l) => l.productId));
    for (const [productId, entry] of state.rows) {
      if (!seen.has(productId)) {
        entry.tr.remove();
        state.rows.delete(productId);
      }
    }
    for (const level of levels) applyLevel(level, { flash: false });
    updateCounts();
    $('stock-table').dataset.loaded = 'true';
  }

  // ---------------------------------------------------------------- event feed

  function describeEvent(event) {
    const p = event.payload || {};
    const entry = state.rows.get(event.productId);
    const product = entry && entry.level.product ? entry.level.product.sku : event.productId || '';
    const parts = [product];
    switch (event.type) {
      case 'stock.created':
        parts.push(`quantity ${p.quantity}`);
        break;
      case 'stock.updated':
        parts.push(`${p.previous_quantity} → ${p.new_quantity}`);
        if (p.reason) parts.push(`(${p.reason})`);
        break;
      case 'stock.transferred':
        parts.push(`${p.quantity} from ${p.from_store} to ${p.to_store}`);
        break;
      case 'stock.low':
        parts.push(`available ${p.available} ≤ reorder point ${p.reorder_point}`);
        break;
      case 'stock.depleted':
        parts.push('out of stock');
        break;
      case 'reservation.failed':
        parts.push(`wanted ${p.requested}, available ${p.available}`);
        break;
      default:
        if (event.type.startsWith('reservation.')) {
          parts.push(`quantity ${p.quantity}`);
          if (p.customer_id) parts.push(`for ${p.customer_id}`);
        }
    }
    return parts.filter((x) => x !== undefined && x !== '').join(' ');
  }

  function addEvent(event) {
    const li = document.createElement('li');
    li.dataset.eventType = event.type;
    li.dataset.cursor = event.cursor;
    if (event.productId) li.dataset.productId = event.productId;
    const time = document.createElement('time');
    time.dateTime = event.occurredAt;
    time.textContent = formatTime(event.occurredAt);
    const type = document.createElement('span');
    type.className = 'type';
    if (/low|depleted|failed|expired/.test(event.type)) type.classList.add('warn');
    type.textContent = event.type;
    const detail = document.createElement('span');
    detail.className = 'detail';
    detail.textContent = ` ${describeEvent(event)}`;
    li.append(time, type, detail);
    const feed = $('event-feed');
    feed.prepend(li);
    while (feed.children.length > FEED_LIMIT) feed.lastElementChild.remove();
  }

  // ---------------------------------------------------------------- graphql-transport-ws

  function websocketUrl() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}/graphql/ws`;
  }

  function send(message) {
    const socket = state.socket;
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function subscribe(query, variables, handler) {
    const id = String(state.nextId++);
    state.handlers.set(id, handler);
    send({ id, type: 'subscribe', payload: { query, variables } });
    return id;
  }

  function unsubscribeAll() {
    for (const id of state.handlers.keys()) send({ id, type: 'complete' });
    state.handlers.clear();
  }

  /**
   * Resolves once the server runs every subscription sent so far: it answers a ping only after
   * the operations subscribed before it have started, so a snapshot read after this misses no
   * change. Gives up waiting (and resolves) after a few seconds or when the socket closes.
   */
  function subscriptionsLive() {
    return new Promise((resolve) => {
      const token = `live-${state.nextId++}`;
      const done = () => {
        clearTimeout(timer);
        state.barriers.delete(token);
        resolve();
      };
      const timer = setTimeout(done, BARRIER_TIMEOUT_MS);
      state.barriers.set(token, done);
      send({ type: 'ping', payload: { barrier: token } });
    });
  }

  function releaseBarriers() {
    for (const done of [...state.barriers.values()]) done();
  }

  /** Subscribes to the selected store's changes; resolves once they are live. */
  function subscribeAll() {
    unsubscribeAll();
    if (!state.storeId || !state.socket || state.socket.readyState !== WebSocket.OPEN) return Promise.resolve();
    const storeId = state.storeId;
    const onError = (errors) => showMessage(`Subscription error: ${(errors && errors[0] && errors[0].message) || 'unknown'}`);
    subscribe(STOCK_SUBSCRIPTION, { storeId }, {
      next: (payload) => {
        if (payload.errors) return onError(payload.errors);
        applyLevel(payload.data && payload.data.stockLevelChanged, { flash: true });
      },
      error: onError,
    });
    subscribe(EVENTS_SUBSCRIPTION, { storeId }, {
      next: (payload) => {
        if (payload.errors) return onError(payload.errors);
        const event = payload.data && payload.data.inventoryEvents;
        if (event) addEvent(event);
      },
      error: onError,
    });
    return subscriptionsLive();
  }

  function connect() {
    clearTimeout(state.retryTimer);
    state.retryTimer = null;
    setConnection(state.everConnected ? 'reconnecting' : 'connecting');
    let socket;
    try {
      socket = new WebSocket(websocketUrl(), 'graphql-transport-ws');
    } catch (error) {
      scheduleReconnect();
      return;
    }
    state.socket = socket;
    let acknowledged = false;
    socket.onopen = () => {
      const key = apiKey();
      socket.send(JSON.stringify({ type: 'connection_init', payload: key ? { apiKey: key } : {} }));
    };
    socket.onmessage = (event) => {
      if (state.socket !== socket) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      const handler = message.id ? state.handlers.get(message.id) : undefined;
      switch (message.type) {
        case 'connection_ack':
          acknowledged = true;
          state.attempt = 0;
          state.everConnected = true;
          setConnection('live');
          clearInterval(state.pingTimer);
          state.pingTimer = setInterval(() => send({ type: 'ping' }), PING_MS);
          onConnected();
          break;
        case 'ping':
          send({ type: 'pong' });
          break;
        case 'pong': {
          const done = message.payload && state.barriers.get(message.payload.barrier);
          if (done) done();
          break;
        }
        case 'next':
          if (handler) handler.next(message.payload);
          break;
        case 'error':
          if (handler) handler.error(message.payload);
          state.handlers.delete(message.id);
          break;
        case 'complete':
          state.handlers.delete(message.id);
          break;
        default:
          break;
      }
    };
    socket.onclose = (event) => {
      if (state.socket !== socket) return;
      state.socket = null;
      state.handlers.clear();
      releaseBarriers();
      clearInterval(state.pingTimer);
      if (event.code === 4403 || event.code === 4401 || (!acknowledged && event.reason && /key|auth/i.test(event.reason))) {
        setConnection('unauthorized');
        showMessage(`The server refused the API key on the WebSocket (${event.code} ${event.reason || ''}). Enter a valid key above.`);
      } else {
        setConnection('reconnecting');
      }
      scheduleReconnect();
    };
    socket.onerror = () => {
      // onclose follows and schedules the retry
    };
  }

  function scheduleReconnect() {
    if (state.retryTimer) return;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
    const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
    state.attempt += 1;
    state.retryTimer = setTimeout(() => {
      state.retryTimer = null;
      connect();
    }, delay);
  }

  /** Runs after every connection_ack: subscribe, then refetch what may have changed while away. */
  async function onConnected() {
    try {
      await loadStores();
      await subscribeAll();
      await loadStock();
      showMessage('');
    } catch (error) {
      showMessage(describeFailure(error));
    }
    refreshOutbox();
  }

  function reconnectNow() {
    const socket = state.socket;
    state.socket = null;
    state.handlers.clear();
    releaseBarriers();
    clearInterval(state.pingTimer);
    if (socket) socket.close(1000, 'reconnecting');
    state.attempt = 0;
    connect();
  }

  // ---------------------------------------------------------------- start

  function start() {
    $('api-key').value = apiKey();
    $('api-key-form').addEventListener('submit', (event) => {
      event.preventDefault();
      saveApiKey($('api-key').value.trim());
      showMessage('');
      reconnectNow();
    });
    $('store-select').addEventListener('change', (event) => selectStore(event.target.value, { resubscribe: true }));
    setInterval(refreshOutbox, OUTBOX_POLL_MS);
    refreshOutbox();
    connect();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();

// The Stockroom GraphiQL playground: GraphiQL from npm, bundled by vite, no CDN.
import { StrictMode, useMemo, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { GraphiQL } from 'graphiql';
import { createGraphiQLFetcher } from '@graphiql/toolkit';
import { createClient } from 'graphql-ws';
import 'graphiql/style.css';
import './playground.css';
import { loadApiKey, saveApiKey, websocketUrl } from './apikey.js';

// Example operations, one tab each, from playground/examples/*.graphql (+ optional .json variables).
const documents = import.meta.glob('../examples/*.graphql', { query: '?raw', import: 'default', eager: true });
const variables = import.meta.glob('../examples/*.json', { query: '?raw', import: 'default', eager: true });
const exampleTabs = Object.keys(documents)
  .sort()
  .map((path) => ({
    query: documents[path],
    variables: variables[path.replace(/\.graphql$/, '.json')] ?? undefined,
  }));

function makeFetcher(apiKey) {
  const wsClient = createClient({
    url: websocketUrl('/graphql/ws'),
    connectionParams: () => (apiKey ? { apiKey } : {}),
    lazy: true,
    retryAttempts: Infinity,
    shouldRetry: () => true,
  });
  const fetcher = createGraphiQLFetcher({
    url: '/graphql',
    wsClient,
    headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {},
  });
  return { fetcher, wsClient };
}

function ApiKeyBar({ apiKey, onChange }) {
  const [draft, setDraft] = useState(apiKey);
  const submit = (event) => {
    event.preventDefault();
    onChange(draft.trim());
  };
  return (
    <form className="stockroom-bar" onSubmit={submit}>
      <strong>Stockroom</strong>
      <a href="/dashboard">Dashboard</a>
      <label>
        API key
        <input
          id="api-key"
          type="password"
          autoComplete="off"
          placeholder="not needed on an open loopback server"
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
        />
      </label>
      <button type="submit" id="api-key-save">Save</button>
      <span className="stockroom-key-state" id="api-key-state">
        {apiKey ? 'key saved in this browser' : 'no key'}
      </span>
    </form>
  );
}

function App() {
  const [apiKey, setApiKey] = useState(loadApiKey);
  const { fetcher } = useMemo(() => makeFetcher(apiKey), [apiKey]);
  const changeKey = (key) => {
    saveApiKey(key);
    setApiKey(key);
  };
  return (
    <div className="stockroom-page">
      <ApiKeyBar apiKey={apiKey} onChange={changeKey} />
      <div className="stockroom-graphiql">
        <GraphiQL
          key={apiKey}
          fetcher={fetcher}
          defaultTabs={exampleTabs}
          defaultEditorToolsVisibility="variables"
          shouldPersistHeaders={false}
        />
      </div>
    </div>
  );
}

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <App />
  </StrictMode>,
);

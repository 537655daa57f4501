// The API key shared by the playground and the dashboard (same origin, same localStorage key).
export const API_KEY_STORAGE = 'stockroom.apiKey';

export function loadApiKey() {
  try {
    return localStorage.getItem(API_KEY_STORAGE) || '';
  } catch {
    return '';
  }
}

export function saveApiKey(key) {
  try {
    if (key) localStorage.setItem(API_KEY_STORAGE, key);
    else localStorage.removeItem(API_KEY_STORAGE);
  } catch {
    // storage disabled: the key lives for this page only
  }
}

// ws:// or wss:// on the page's own origin.
export function websocketUrl(path) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

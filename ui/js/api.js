// Every call to the admin API: same-origin cookie, x-csrf-token on changes, the envelope
// {success, data | error:{code, message}} unwrapped. A 401 sends the page back to the login.
import { t } from './i18n.js';

const TOKEN = 'droid2api.csrf';
let onUnauthorized = () => {};

export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export function getToken() {
  try { return sessionStorage.getItem(TOKEN); } catch (_) { return null; }
}

export function setToken(v) {
  try { sessionStorage.setItem(TOKEN, v); } catch (_) { /* storage off */ }
}

export function clearToken() {
  try { sessionStorage.removeItem(TOKEN); } catch (_) { /* storage off */ }
}

export class ApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

/** Calls the API; resolves to the reply's `data`, rejects with an ApiError. */
export async function api(method, path, body, opts = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD') headers['x-csrf-token'] = getToken() || '';
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      signal: opts.signal,
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError('network', t('error.network'), 0);
  }
  let payload = null;
  try { payload = await res.json(); } catch (_) { payload = null; }
  // A request cancelled while its body was read is no answer at all.
  if (opts.signal && opts.signal.aborted) throw new DOMException('aborted', 'AbortError');
  const err = payload && payload.error ? payload.error : null;
  if (res.status === 401 || (res.status === 403 && err && err.code === 'csrf')) {
    const e = new ApiError(err ? err.code : 'unauthorized', err && err.message ? err.message : t('error.session'), res.status);
    onUnauthorized(e);
    throw e;
  }
  if (!res.ok || !payload || payload.success === false) {
    throw new ApiError(err && err.code ? err.code : 'http',
      err && err.message ? err.message : t('error.http', { status: res.status }), res.status);
  }
  return payload.data;
}

/** Builds "path?a=1&b=2" leaving out empty values. */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? path + '?' + s : path;
}

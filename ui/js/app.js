// The console's shell: login, hash routes, navigation, language toggle, logout.
import { h, $, clear } from './dom.js';
import { t, initLang, toggleLang, applyI18n } from './i18n.js';
import { getToken, setToken, clearToken, setUnauthorizedHandler, api } from './api.js';
import { toast, toastError } from './ui.js';
import * as dashboard from './views/dashboard.js';
import * as keys from './views/keys.js';
import * as groups from './views/groups.js';
import * as clients from './views/clients.js';
import * as usage from './views/usage.js';
import * as settings from './views/settings.js';
import * as logs from './views/logs.js';

const VIEWS = { dashboard, keys, groups, clients, usage, settings, logs };
const main = $('#main');
let unmount = null;
let loginError = null; // the login form's error line while the login is shown

/** Parses "#/keys?status=banned&page=3" → {name: 'keys', params}. */
export function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const i = raw.indexOf('?');
  const name = i < 0 ? raw : raw.slice(0, i);
  const params = new URLSearchParams(i < 0 ? '' : raw.slice(i + 1));
  return { name: VIEWS[name] ? name : 'dashboard', params };
}

function leave() {
  if (unmount) {
    try { unmount(); } catch (_) { /* view already gone */ }
    unmount = null;
  }
  clear(main);
}

function showShell(loggedIn) {
  $('#nav').hidden = !loggedIn;
  $('[data-testid="logout"]').hidden = !loggedIn;
}

function showLogin(message) {
  if (loginError && loginError.isConnected) {
    if (message) { loginError.textContent = message; loginError.hidden = false; }
    return;
  }
  leave();
  showShell(false);
  document.title = t('login.title') + ' · droid2api';
  const input = h('input', {
    id: 'login-key', name: 'key', type: 'password', autocomplete: 'current-password',
    required: true, spellcheck: 'false', 'data-testid': 'login-key',
  });
  const error = h('p', { class: 'form-error', role: 'alert', 'data-testid': 'login-error', hidden: !message }, message || '');
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'login-submit' }, t('login.submit'));
  const form = h('form', { method: 'post', class: 'card login', novalidate: true },
    h('h1', null, t('login.title')),
    h('p', { class: 'muted' }, t('login.hint')),
    h('label', { for: 'login-key' }, t('login.key')),
    input,
    error,
    submit);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const key = input.value;
    input.value = '';
    if (!key.trim()) {
      error.textContent = t('login.empty');
      error.hidden = false;
      input.focus();
      return;
    }
    submit.disabled = true;
    error.hidden = true;
    try {
      const res = await fetch('/admin/session', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ key }),
        credentials: 'same-origin',
      });
      let payload = null;
      try { payload = await res.json(); } catch (_) { payload = null; }
      if (res.status === 200 && payload && payload.data && payload.data.csrf_token) {
        setToken(payload.data.csrf_token);
        route();
        return;
      }
      const msg = payload && payload.error && payload.error.message
        ? payload.error.message : t('error.http', { status: res.status });
      error.textContent = msg;
      error.hidden = false;
    } catch (_) {
      error.textContent = t('error.network');
      error.hidden = false;
    } finally {
      submit.disabled = false;
    }
    input.focus();
  });
  loginError = error;
  main.appendChild(h('div', { class: 'login-wrap' }, form));
  input.focus();
}

function route() {
  if (!getToken()) {
    showLogin();
    return;
  }
  if (!/^#\/./.test(location.hash)) history.replaceState(null, '', '#/dashboard');
  const { name, params } = parseHash();
  loginError = null;
  leave();
  showShell(true);
  for (const a of document.querySelectorAll('#nav a')) {
    if (a.dataset.route === name) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = t('nav.' + name) + ' · droid2api';
  const container = h('div', { class: 'view view-' + name });
  main.appendChild(container);
  const ret = VIEWS[name].mount(container, params);
  unmount = typeof ret === 'function' ? ret : null;
}

async function logout() {
  try {
    await api('DELETE', '/admin/session');
  } catch (e) {
    if (e.status !== 401) toastError(e);
  }
  clearToken();
  loginError = null;
  showLogin();
}

function start() {
  initLang();
  applyI18n();
  setUnauthorizedHandler((e) => {
    clearToken();
    showLogin(e && e.message ? e.message : t('error.session'));
  });
  $('[data-testid="lang-toggle"]').addEventListener('click', () => {
    toggleLang();
    applyI18n();
    loginError = null;
    route();
    toast(t('lang.changed'), 'info');
  });
  $('[data-testid="logout"]').addEventListener('click', logout);
  window.addEventListener('hashchange', route);
  route();
}

start();

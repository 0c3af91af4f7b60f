// Clients (contract §13): the client keys that authenticate /v1/* with their own limits. The list
// (GET /admin/clients, with today's counts), create, edit limits (PATCH), rotate, delete, and a
// link to the Usage view filtered by the client. A whole key is only ever in the dialog that shows
// it once (after create or rotate): it is never kept in a variable of the view, in storage or in
// the page once that dialog is closed.
import { h, clear } from '../dom.js';
import { t, fmtInt, fmtDate } from '../i18n.js';
import { api } from '../api.js';
import { toast, toastError, confirmDialog, formDialog } from '../ui.js';

const LIMITS = ['rpm', 'requests_per_day', 'tokens_per_day'];
const FIELDS = ['name', ...LIMITS, 'models', 'expires_at'];

/** The field a server message names: "rpm: …", "models[2]: …", "expires_at: …". */
export function fieldOf(message) {
  const m = /^([a-z_]+)(?:\[\d+\])?\s*:/.exec(message || '');
  return m && FIELDS.includes(m[1]) ? m[1] : null;
}

/** "a, b\nc" → ['a', 'b', 'c'] (empty entries dropped); an empty text → null (every model). */
export function parseModels(text) {
  const list = String(text || '').split(/[,\n]/).map((s) => s.trim()).filter((s) => s !== '');
  return list.length ? list : null;
}

/** An RFC 3339 time → the value of a datetime-local input (the browser's zone), or ''. */
function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const p = (n) => String(n).padStart(2, '0');
  return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + p(d.getHours()) + ':' + p(d.getMinutes());
}

/** "n / limit" with the limit "unlimited" when null. */
function against(n, limit) {
  return fmtInt(n || 0) + ' / ' + (limit === null || limit === undefined ? t('clients.unlimited') : fmtInt(limit));
}

/**
 * The create and edit form: its fields (with an error line each, beside the field), a form-wide
 * error line, values() → the body to send (only the changed fields when `c` is given) or throws
 * {field, message} for an input the browser itself could not read.
 */
function clientForm(c) {
  const controls = {};
  const errors = {};
  const errLine = (name) => {
    errors[name] = h('p', { class: 'field-error', id: 'client-' + name + '-error', role: 'alert',
      'data-testid': 'client-error-' + name, hidden: true });
    return errors[name];
  };
  const field = (name, control, help) => {
    controls[name] = control;
    control.setAttribute('aria-describedby', 'client-' + name + '-error' + (help ? ' client-' + name + '-help' : ''));
    return h('div', { class: 'field' },
      h('label', { for: 'client-' + name }, t('clients.f.' + name)),
      control,
      help ? h('span', { class: 'muted small', id: 'client-' + name + '-help' }, help) : null,
      errLine(name));
  };
  const num = (name) => h('input', { id: 'client-' + name, name, type: 'number', min: 1, step: 1, inputmode: 'numeric',
    autocomplete: 'off', placeholder: t('clients.unlimited'), 'data-testid': 'client-' + name,
    prop: { value: c && c[name] !== null && c[name] !== undefined ? String(c[name]) : '' } });
  const original = {
    name: c ? String(c.name ?? '') : '',
    models: c && Array.isArray(c.models) ? c.models.join('\n') : '',
    expires_at: c ? toLocalInput(c.expires_at) : '',
  };
  const body = [
    field('name', h('input', { id: 'client-name', name: 'name', type: 'text', maxlength: 100, required: true,
      autocomplete: 'off', 'data-testid': 'client-name', prop: { value: original.name } })),
    h('div', { class: 'client-limits' },
      field('rpm', num('rpm'), t('clients.h.rpm')),
      field('requests_per_day', num('requests_per_day'), t('clients.h.requests_per_day')),
      field('tokens_per_day', num('tokens_per_day'), t('clients.h.tokens_per_day'))),
    field('models', h('textarea', { id: 'client-models', name: 'models', rows: 3, spellcheck: 'false',
      autocomplete: 'off', placeholder: t('clients.allModels'), 'data-testid': 'client-models',
      prop: { value: original.models } }), t('clients.h.models')),
    field('expires_at', h('input', { id: 'client-expires_at', name: 'expires_at', type: 'datetime-local',
      'data-testid': 'client-expires_at', prop: { value: original.expires_at } }), t('clients.h.expires_at')),
  ];
  const formError = h('p', { class: 'form-error', role: 'alert', 'data-testid': 'client-form-error', hidden: true });
  body.push(formError);

  function clearErrors() {
    for (const n of Object.keys(errors)) {
      errors[n].textContent = '';
      errors[n].hidden = true;
      controls[n].removeAttribute('aria-invalid');
    }
    formError.textContent = '';
    formError.hidden = true;
  }

  /** Shows a message beside the field it names (else above the buttons) and focuses it. */
  function showError(message, name) {
    const f = name || fieldOf(message);
    if (f && errors[f]) {
      errors[f].textContent = message;
      errors[f].hidden = false;
      controls[f].setAttribute('aria-invalid', 'true');
      controls[f].focus();
    } else {
      formError.textContent = message;
      formError.hidden = false;
    }
  }

  function values() {
    const out = {};
    const name = controls.name.value.trim();
    if (!c || name !== original.name) out.name = name;
    for (const n of LIMITS) {
      const el = controls[n];
      // A number input the browser cannot read has the value '': say so rather than send "unlimited".
      if (el.validity && el.validity.badInput) {
        const e = new Error(t('clients.badNumber', { field: n }));
        e.field = n;
        throw e;
      }
      const raw = el.value.trim();
      // Whole digits go as a number; anything else as typed, for the server to name.
      const v = raw === '' ? null : (/^\d+$/.test(raw) ? Number(raw) : (Number.isFinite(Number(raw)) ? Number(raw) : raw));
      const before = c && c[n] !== undefined ? c[n] : null;
      if (!c ? v !== null : v !== before) out[n] = v;
    }
    const models = controls.models.value;
    if (!c ? parseModels(models) !== null : models.trim() !== original.models.trim()) out.models = parseModels(models);
    const exp = controls.expires_at.value;
    if (!c ? exp !== '' : exp !== original.expires_at) {
      if (exp === '') {
        out.expires_at = null;
      } else {
        const d = new Date(exp);
        if (Number.isNaN(d.getTime())) {
          const e = new Error(t('clients.badTime'));
          e.field = 'expires_at';
          throw e;
        }
        out.expires_at = d.toISOString();
      }
    }
    return out;
  }

  return { body, clearErrors, showError, values, focus: () => controls.name.focus() };
}

export function mount(root) {
  let alive = true;
  let listAbort = null;

  const newButton = h('button', { type: 'button', class: 'btn btn-primary', 'data-testid': 'client-new',
    on: { click: () => create() } }, t('clients.new'));

  // ----- help
  const help = h('section', { class: 'card panel clients-help', 'aria-labelledby': 'clients-help', 'data-testid': 'clients-help' },
    h('h2', { id: 'clients-help' }, t('clients.helpTitle')),
    h('p', null, t('clients.helpWhat')),
    h('ul', { class: 'help-list' },
      h('li', null, h('strong', null, t('clients.f.rpm')), ' — ', t('clients.helpRpm')),
      h('li', null, h('strong', null, t('clients.helpDailyTitle')), ' — ', t('clients.helpDaily')),
      h('li', null, h('strong', null, t('clients.f.models')), ' — ', t('clients.helpModels')),
      h('li', null, h('strong', null, t('clients.f.expires_at')), ' — ', t('clients.helpExpiry'))),
    h('p', { class: 'muted small' }, t('clients.helpStored')));

  // ----- table
  const caption = h('caption');
  const tbody = h('tbody');
  const cols = ['name', 'key', 'limits', 'today', 'expires', 'lastUsed', 'created', 'actions'];
  const table = h('table', { class: 'cards-table clients-table' }, caption,
    h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col' }, t('clients.col.' + c))))),
    tbody);
  const empty = h('div', { class: 'card panel empty', 'data-testid': 'clients-empty', hidden: true },
    h('p', null, t('clients.emptyTitle')),
    h('p', { class: 'muted' }, t('clients.emptyWhat')),
    h('p', { class: 'note' }, t('clients.emptyLock')));

  // The same button in the client's row once the table has been drawn again.
  const rowButton = (id, testid) => () => {
    for (const tr of tbody.querySelectorAll('tr[data-testid="client-row"]')) {
      if (tr.dataset.clientId === String(id)) return tr.querySelector('[data-testid="' + testid + '"]');
    }
    return newButton;
  };
  const clientPath = (c, rest) => '/admin/clients/' + encodeURIComponent(c.id) + (rest || '');

  function row(c) {
    const td = (col, attrs, ...children) => h('td', Object.assign({ 'data-label': t('clients.col.' + col) }, attrs || {}),
      h('div', { class: 'cell' }, ...children));
    // Today's counts as the quotas count them (usage records as a fallback), against the limits.
    const q = c.quota_today || {};
    const u = c.usage_today || {};
    const reqs = q.requests ?? u.requests ?? 0;
    const toks = q.tokens ?? (u.tokens ? u.tokens.total_tokens : 0) ?? 0;
    const models = Array.isArray(c.models) ? c.models : null;
    return h('tr', { 'data-testid': 'client-row', 'data-client-id': String(c.id) },
      td('name', null, h('span', { class: 'notes', 'data-testid': 'client-row-name' }, String(c.name ?? '')),
        h('span', { class: 'reason mono', 'data-testid': 'client-id' }, String(c.id))),
      td('key', null, h('code', { class: 'nowrap', 'data-testid': 'client-masked' }, String(c.key_masked ?? ''))),
      td('limits', { 'data-testid': 'client-limits' }, h('dl', { class: 'limits' },
        h('dt', null, t('clients.s.rpm')), h('dd', { 'data-testid': 'client-limit-rpm' },
          c.rpm === null || c.rpm === undefined ? t('clients.unlimited') : fmtInt(c.rpm)),
        h('dt', null, t('clients.s.requests_per_day')), h('dd', null,
          c.requests_per_day === null || c.requests_per_day === undefined ? t('clients.unlimited') : fmtInt(c.requests_per_day)),
        h('dt', null, t('clients.s.tokens_per_day')), h('dd', null,
          c.tokens_per_day === null || c.tokens_per_day === undefined ? t('clients.unlimited') : fmtInt(c.tokens_per_day)),
        h('dt', null, t('clients.s.models')), h('dd', { class: 'notes', 'data-testid': 'client-limit-models' },
          models ? models.join(', ') : t('clients.allModels')))),
      td('today', { 'data-testid': 'client-today' }, h('dl', { class: 'limits' },
        h('dt', null, t('clients.requests')), h('dd', { 'data-testid': 'client-today-requests' }, against(reqs, c.requests_per_day)),
        h('dt', null, t('clients.tokens')), h('dd', { 'data-testid': 'client-today-tokens' }, against(toks, c.tokens_per_day)))),
      td('expires', { 'data-testid': 'client-expires' },
        c.expires_at ? fmtDate(c.expires_at) : t('clients.neverExpires'),
        c.expired ? [' ', h('span', { class: 'badge badge-expired', 'data-testid': 'client-expired' }, t('clients.expired'))] : null),
      td('lastUsed', { 'data-testid': 'client-last-used' }, fmtDate(c.last_used_at)),
      td('created', null, fmtDate(c.created_at)),
      td('actions', { class: 'actions-cell' }, h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'client-edit', on: { click: () => edit(c) } }, t('clients.edit')),
        h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'client-rotate', on: { click: () => rotate(c) } }, t('clients.rotate')),
        h('a', { class: 'btn btn-sm', 'data-testid': 'client-usage', href: '#/usage?client=' + encodeURIComponent(c.id) }, t('clients.usage')),
        h('button', { type: 'button', class: 'btn btn-sm btn-danger', 'data-testid': 'client-delete', on: { click: () => del(c) } }, t('clients.delete')))));
  }

  /**
   * The show-once dialog. `reply` is the create or rotate answer: its `key` is moved into the
   * dialog's read-only input and deleted from the reply; closing the dialog empties the input and
   * removes the dialog, so nothing in the page holds the key any more.
   */
  function showKey(reply, title, returnFocus) {
    const input = h('input', { id: 'client-key-value', type: 'text', readonly: true, spellcheck: 'false',
      autocomplete: 'off', class: 'mono', 'data-testid': 'client-key-value', 'aria-describedby': 'client-key-warning',
      prop: { value: String(reply.key ?? '') } });
    delete reply.key;
    const copied = h('span', { class: 'small', role: 'status', 'aria-live': 'polite', 'data-testid': 'client-key-copied' });
    const copy = h('button', { type: 'button', class: 'btn', 'data-testid': 'client-key-copy', on: { click: async () => {
      input.focus();
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
        copied.textContent = t('clients.copied');
      } catch (_) {
        // No clipboard access: the key stays selected for Ctrl+C.
        copied.textContent = t('clients.copyManually');
      }
    } } }, t('clients.copy'));
    const dlg = formDialog({
      parent: root,
      testid: 'client-key-dialog',
      title,
      body: [
        h('p', { class: 'note', id: 'client-key-warning', 'data-testid': 'client-key-warning' }, t('clients.onlyOnce')),
        h('div', { class: 'field' }, h('label', { for: 'client-key-value' }, t('clients.theKey')), input),
        h('div', { class: 'row' }, copy, copied),
        h('p', { class: 'muted small' }, t('clients.useIt')),
      ],
      okLabel: t('clients.keySaved'),
      okTestid: 'client-key-close',
      returnFocus,
    });
    dlg.addEventListener('close', () => { input.value = ''; }, { once: true });
    input.focus();
    input.select();
  }

  function create() {
    const f = clientForm(null);
    formDialog({
      parent: root,
      testid: 'client-create-dialog',
      title: t('clients.createTitle'),
      body: f.body,
      okLabel: t('clients.create'),
      okTestid: 'client-create-ok',
      returnFocus: newButton,
      onOk: async () => {
        f.clearErrors();
        let body;
        try { body = f.values(); } catch (e) { f.showError(e.message, e.field); return false; }
        if (!body.name) { f.showError(t('clients.nameEmpty'), 'name'); return false; }
        let created;
        try {
          created = await api('POST', '/admin/clients', body);
        } catch (e) {
          if (e && e.name === 'AbortError') return false;
          f.showError(e.message);
          return false;
        }
        toast(t('clients.created', { name: created.name }), 'ok');
        // After this dialog has closed (returning true closes it), the key's own dialog.
        setTimeout(() => {
          if (alive) showKey(created, t('clients.keyTitleNew', { name: created.name }), rowButton(created.id, 'client-rotate'));
          else delete created.key;
        }, 0);
        load();
        return true;
      },
    });
    f.focus();
  }

  function edit(c) {
    const f = clientForm(c);
    formDialog({
      parent: root,
      testid: 'client-edit-dialog',
      title: t('clients.editTitle', { name: c.name }),
      body: f.body,
      okLabel: t('clients.save'),
      okTestid: 'client-edit-ok',
      returnFocus: rowButton(c.id, 'client-edit'),
      onOk: async () => {
        f.clearErrors();
        let body;
        try { body = f.values(); } catch (e) { f.showError(e.message, e.field); return false; }
        if (!Object.keys(body).length) { toast(t('clients.nothing'), 'info'); return true; }
        try {
          await api('PATCH', clientPath(c), body);
        } catch (e) {
          if (e && e.name === 'AbortError') return false;
          f.showError(e.message);
          return false;
        }
        toast(t('clients.updated', { name: body.name || c.name }), 'ok');
        await load();
        return true;
      },
    });
    f.focus();
  }

  async function rotate(c) {
    if (!(await confirmDialog(t('clients.confirmRotate', { name: c.name, key: c.key_masked }), t('clients.rotate')))) return;
    let r;
    try {
      r = await api('POST', clientPath(c, '/rotate'));
    } catch (e) { toastError(e); load(); return; }
    if (!alive) { delete r.key; return; }
    toast(t('clients.rotated', { name: c.name }), 'ok');
    showKey(r, t('clients.keyTitleRotated', { name: c.name }), rowButton(c.id, 'client-rotate'));
    load();
  }

  async function del(c) {
    if (!(await confirmDialog(t('clients.confirmDelete', { name: c.name, key: c.key_masked }), t('clients.delete')))) return;
    try {
      await api('DELETE', clientPath(c));
      toast(t('clients.deleted', { name: c.name }), 'ok');
    } catch (e) { toastError(e); }
    load();
  }

  async function load() {
    if (!alive) return;
    if (listAbort) listAbort.abort();
    const ctl = new AbortController();
    listAbort = ctl;
    table.setAttribute('aria-busy', 'true');
    try {
      const d = await api('GET', '/admin/clients', undefined, { signal: ctl.signal });
      if (!alive || ctl.signal.aborted) return;
      const list = d && Array.isArray(d.clients) ? d.clients : [];
      clear(tbody);
      for (const c of list) tbody.appendChild(row(c));
      empty.hidden = list.length > 0;
      table.hidden = list.length === 0;
      caption.textContent = t('clients.caption', { n: fmtInt(list.length) });
    } catch (e) {
      if (e && e.name === 'AbortError') return;
      toastError(e);
    } finally {
      if (listAbort === ctl) { listAbort = null; table.removeAttribute('aria-busy'); }
    }
  }

  const refresh = h('button', { type: 'button', class: 'btn', 'data-testid': 'clients-refresh', on: { click: () => load() } },
    t('clients.refresh'));
  table.hidden = true;
  root.append(h('h1', null, t('nav.clients')),
    h('div', { class: 'row panel' }, newButton, refresh),
    h('section', { 'aria-labelledby': 'clients-list' },
      h('h2', { id: 'clients-list' }, t('clients.listTitle')),
      empty,
      h('div', { class: 'table-wrap' }, table)),
    help);

  load();

  return () => {
    alive = false;
    if (listAbort) listAbort.abort();
    // Leaving the view with a key still shown (the browser's back button): empty it too.
    for (const el of root.querySelectorAll('[data-testid="client-key-value"]')) el.value = '';
  };
}

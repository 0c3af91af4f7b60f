// Keys: one server page at a time (GET /admin/keys), add one, batch import, export, test all,
// per row test / enable-disable / reset / move to a group / notes / history / delete, delete all
// disabled or banned.
import { h, replace, clear } from '../dom.js';
import { t, fmtInt, fmtPct, fmtDate } from '../i18n.js';
import { api, withQuery } from '../api.js';
import { toast, toastError, confirmDialog, formDialog } from '../ui.js';

const STATUSES = ['all', 'active', 'disabled', 'banned', 'cooling'];
const LIMITS = [20, 50, 100];
const FORMATS = ['txt', 'json', 'csv'];

function readState(params) {
  const limit = Number(params.get('limit'));
  const page = Number(params.get('page'));
  const status = params.get('status');
  return {
    page: Number.isInteger(page) && page > 0 ? page : 1,
    limit: LIMITS.includes(limit) ? limit : 20,
    status: STATUSES.includes(status) ? status : 'all',
    pool: params.get('pool') || '',
    q: params.get('q') || '',
  };
}

function isCooling(k) {
  return k.status === 'active' && k.cooldown_until && new Date(k.cooldown_until).getTime() > Date.now();
}

function field(id, label, control) {
  return h('div', { class: 'field' }, h('label', { for: id }, label), control);
}

function select(id, values, current, labelOf) {
  return h('select', { id, name: id },
    values.map((v) => h('option', { value: v, selected: String(v) === String(current) }, labelOf(v))));
}

export function mount(root, params) {
  const state = readState(params);
  let alive = true;
  let listAbort = null;
  let searchTimer = 0;
  let pollTimer = 0;

  const saveHash = () => {
    const q = withQuery('', { status: state.status === 'all' ? '' : state.status, pool: state.pool, q: state.q,
      page: state.page > 1 ? state.page : '', limit: state.limit === 20 ? '' : state.limit });
    history.replaceState(null, '', '#/keys' + q);
  };

  // ----- add one key
  const addKey = h('input', { id: 'add-key-input', type: 'text', autocomplete: 'off', spellcheck: 'false',
    autocapitalize: 'off', required: true, 'data-testid': 'add-key-input' });
  const addNotes = h('input', { id: 'add-key-notes', type: 'text', autocomplete: 'off', maxlength: 500,
    'data-testid': 'add-key-notes' });
  const addSubmit = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'add-key-submit' }, t('keys.add'));
  const addForm = h('form', { class: 'card panel', method: 'post', novalidate: true },
    h('h2', null, t('keys.addTitle')),
    h('div', { class: 'row' },
      h('div', { class: 'field grow' }, h('label', { for: 'add-key-input' }, t('keys.key')), addKey),
      h('div', { class: 'field grow' }, h('label', { for: 'add-key-notes' }, t('keys.notes')), addNotes),
      addSubmit));
  addForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const key = addKey.value.trim();
    const notes = addNotes.value.trim();
    addKey.value = '';
    if (!key) { toast(t('keys.keyEmpty'), 'error'); addKey.focus(); return; }
    addSubmit.disabled = true;
    try {
      const body = notes ? { key, notes } : { key };
      const rec = await api('POST', '/admin/keys', body);
      addNotes.value = '';
      toast(t('keys.added', { id: rec && rec.id ? rec.id : '' }), 'ok');
      load();
    } catch (e) { toastError(e); } finally { addSubmit.disabled = false; }
  });

  // ----- batch import
  const batchText = h('textarea', { id: 'batch-import-text', rows: 5, spellcheck: 'false', autocomplete: 'off',
    'data-testid': 'batch-import-text' });
  const batchFile = h('input', { id: 'batch-import-file', type: 'file', accept: '.txt,.csv,text/plain' });
  const batchSubmit = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'batch-import-submit' }, t('keys.import'));
  const batchResult = h('div', { class: 'batch-result', 'data-testid': 'batch-result', 'aria-live': 'polite' });
  batchFile.addEventListener('change', async () => {
    const f = batchFile.files && batchFile.files[0];
    if (!f) return;
    try { batchText.value = await f.text(); } catch (e) { toastError(e); }
    batchFile.value = '';
  });
  const batchForm = h('form', { class: 'card panel', method: 'post', novalidate: true },
    h('h2', null, t('keys.batchTitle')),
    h('div', { class: 'field' }, h('label', { for: 'batch-import-text' }, t('keys.batchText')), batchText),
    h('div', { class: 'row' },
      h('div', { class: 'field grow' }, h('label', { for: 'batch-import-file' }, t('keys.batchFile')), batchFile),
      batchSubmit),
    batchResult);
  batchForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = batchText.value;
    if (!text.trim()) { toast(t('keys.batchEmpty'), 'error'); return; }
    batchSubmit.disabled = true;
    try {
      const r = await api('POST', '/admin/keys/batch', { text });
      batchText.value = '';
      const errors = Array.isArray(r.errors) ? r.errors : [];
      // Counts and line numbers with reasons only: the keys themselves are never echoed.
      replace(batchResult,
        h('p', null, t('keys.batchSummary', { added: fmtInt(r.added), duplicate: fmtInt(r.duplicate), invalid: fmtInt(r.invalid) })),
        errors.length ? h('ul', null, errors.slice(0, 200).map((e) =>
          h('li', null, t('keys.batchLine', { line: e.line, reason: e.reason })))) : null,
        errors.length > 200 ? h('p', { class: 'muted' }, t('keys.batchMore', { n: errors.length - 200 })) : null);
      toast(t('keys.batchDone', { n: fmtInt(r.added) }), 'ok');
      load();
    } catch (e) { toastError(e); } finally { batchSubmit.disabled = false; }
  });

  // ----- tools: export, test all, delete all disabled / banned
  const exportFormat = select('export-format', FORMATS, 'txt', (v) => v);
  const exportLink = h('a', { class: 'btn', 'data-testid': 'export-link', download: 'keys.txt', href: '/admin/keys/export?format=txt' }, t('keys.export'));
  const updateExport = () => {
    const fmt = exportFormat.value;
    exportLink.setAttribute('href', withQuery('/admin/keys/export', { format: fmt, status: state.status, pool: state.pool }));
    exportLink.setAttribute('download', 'keys-' + state.status + '.' + fmt);
  };
  exportFormat.addEventListener('change', updateExport);

  const testAll = h('button', { type: 'button', class: 'btn', 'data-testid': 'test-all' }, t('keys.testAll'));
  const progress = h('progress', { max: 1, value: 0, 'data-testid': 'test-all-progress', hidden: true });
  const progressText = h('span', { class: 'small', 'aria-live': 'polite', role: 'status' });
  const stopPoll = () => { clearTimeout(pollTimer); pollTimer = 0; };
  const poll = async (jobId) => {
    if (!alive) return;
    try {
      const j = await api('GET', '/admin/jobs/' + encodeURIComponent(jobId));
      if (!alive) return;
      progress.max = Math.max(1, j.total || 0);
      progress.value = Math.min(j.done || 0, progress.max);
      progressText.textContent = t('keys.testProgress', {
        state: t('job.' + j.state), done: fmtInt(j.done), total: fmtInt(j.total), success: fmtInt(j.success),
        banned: fmtInt(j.banned), disabled: fmtInt(j.disabled), inconclusive: fmtInt(j.inconclusive) });
      if (j.state === 'done' || j.state === 'failed') {
        testAll.disabled = false;
        toast(progressText.textContent, j.state === 'done' ? 'ok' : 'error');
        load();
        return;
      }
      pollTimer = setTimeout(() => poll(jobId), 1000);
    } catch (e) {
      testAll.disabled = false;
      toastError(e);
    }
  };
  testAll.addEventListener('click', async () => {
    testAll.disabled = true;
    stopPoll();
    try {
      const r = await api('POST', withQuery('/admin/keys/test-all', { pool: state.pool }));
      progress.hidden = false;
      progress.value = 0;
      progressText.textContent = t('job.queued');
      poll(r.job_id);
    } catch (e) { testAll.disabled = false; toastError(e); }
  });

  const deleteAll = (which) => h('button', { type: 'button', class: 'btn btn-danger', 'data-testid': 'delete-' + which,
    on: { click: async () => {
      if (!(await confirmDialog(t('keys.confirmDeleteAll_' + which), t('keys.delete')))) return;
      try {
        const r = await api('DELETE', '/admin/keys/' + which);
        toast(t('keys.deletedN', { n: fmtInt(r && r.count) }), 'ok');
        load();
      } catch (e) { toastError(e); }
    } } }, t('keys.deleteAll_' + which));

  const tools = h('section', { class: 'card panel', 'aria-labelledby': 'keys-tools' },
    h('h2', { id: 'keys-tools' }, t('keys.tools')),
    h('div', { class: 'row' },
      field('export-format', t('keys.exportFormat'), exportFormat), exportLink,
      testAll, deleteAll('disabled'), deleteAll('banned')),
    h('div', { class: 'progress-row' }, progress, progressText));

  // ----- filters and table
  const fStatus = select('f-status', STATUSES, state.status, (v) => t('status.' + (v === 'all' ? 'all' : v)));
  const fPool = h('select', { id: 'f-pool', name: 'pool' }, h('option', { value: '' }, t('keys.allPools')));
  const fSearch = h('input', { id: 'f-q', type: 'search', value: state.q, maxlength: 200, autocomplete: 'off',
    placeholder: t('keys.searchHint') });
  const fLimit = select('f-limit', LIMITS, state.limit, (v) => String(v));
  const filters = h('div', { class: 'row panel', role: 'search' },
    field('f-status', t('keys.status'), fStatus),
    field('f-pool', t('keys.pool'), fPool),
    h('div', { class: 'field grow' }, h('label', { for: 'f-q' }, t('keys.search')), fSearch),
    field('f-limit', t('keys.perPage'), fLimit));

  const caption = h('caption');
  const tbody = h('tbody');
  const cols = ['key', 'status', 'notes', 'requests', 'successRate', 'tokens', 'balance', 'lastUsed', 'actions'];
  const numeric = new Set(['requests', 'successRate', 'tokens', 'balance']);
  const table = h('table', { class: 'cards-table keys-table' }, caption,
    h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col', class: numeric.has(c) ? 'num' : null }, t('keys.col.' + c))))),
    tbody);
  const prev = h('button', { type: 'button', class: 'btn btn-sm' }, t('keys.prev'));
  const next = h('button', { type: 'button', class: 'btn btn-sm' }, t('keys.next'));
  const pageInfo = h('span', { class: 'muted small', 'aria-live': 'polite' });
  const pager = h('div', { class: 'pager' }, prev, pageInfo, next);

  function row(k) {
    const cooling = isCooling(k);
    const statusBits = [h('span', { class: 'badge badge-' + k.status }, t('status.' + k.status))];
    if (cooling) {
      statusBits.push(' ', h('span', { class: 'badge badge-cooling' }, t('status.cooling')));
      statusBits.push(h('span', { class: 'reason' }, t('keys.coolingUntil', { at: fmtDate(k.cooldown_until) })));
    }
    if (k.status === 'disabled' && k.disabled_by) statusBits.push(h('span', { class: 'reason' }, t('keys.disabledBy_' + k.disabled_by)));
    if (k.status_reason) statusBits.push(h('span', { class: 'reason' }, String(k.status_reason)));
    const requests = Number(k.requests) || 0;
    const rate = requests ? (Number(k.successes) || 0) / requests : null;
    const tokens = (Number(k.input_tokens) || 0) + (Number(k.output_tokens) || 0);
    const remaining = k.balance && k.balance.remaining !== undefined ? fmtInt(k.balance.remaining) : t('common.none');
    const enable = k.status === 'disabled';
    const td = (col, attrs, ...children) => h('td', Object.assign({ 'data-label': t('keys.col.' + col) }, attrs || {}),
      h('div', { class: 'cell' }, ...children));
    return h('tr', { 'data-testid': 'key-row', 'data-key-id': String(k.id) },
      td('key', null, h('code', { 'data-testid': 'key-masked' }, String(k.key_masked ?? '')),
        h('span', { class: 'reason mono' }, String(k.id)),
        k.poolGroup ? h('span', { class: 'reason' }, t('keys.inPool', { pool: k.poolGroup })) : null),
      td('status', { 'data-testid': 'key-status', 'data-status': cooling ? 'cooling' : String(k.status) }, statusBits),
      td('notes', { class: 'notes', 'data-testid': 'key-notes' }, String(k.notes ?? '')),
      td('requests', { class: 'num' }, fmtInt(requests)),
      td('successRate', { class: 'num' }, rate === null ? t('common.none') : fmtPct(rate)),
      td('tokens', { class: 'num' }, fmtInt(tokens)),
      td('balance', { class: 'num' }, remaining),
      td('lastUsed', null, fmtDate(k.last_used_at)),
      td('actions', { class: 'actions-cell' }, h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'key-test', on: { click: (ev) => testOne(k, ev.currentTarget) } }, t('keys.test')),
        h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'key-toggle', on: { click: (ev) => toggle(k, enable, ev.currentTarget) } },
          enable ? t('keys.enable') : t('keys.disable')),
        h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'key-reset', on: { click: (ev) => reset(k, ev.currentTarget) } }, t('keys.reset')),
        h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'key-move', on: { click: (ev) => move(k, ev.currentTarget) } }, t('keys.move')),
        h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'key-edit-notes', on: { click: () => editNotes(k) } }, t('keys.editNotes')),
        h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'key-history', on: { click: (ev) => showHistory(k, ev.currentTarget) } }, t('keys.history')),
        h('button', { type: 'button', class: 'btn btn-sm btn-danger', 'data-testid': 'key-delete', on: { click: () => del(k) } }, t('keys.delete')))));
  }

  async function testOne(k, btn) {
    btn.disabled = true;
    try {
      const r = await api('POST', '/admin/keys/' + encodeURIComponent(k.id) + '/test');
      const msg = t('keys.testResult', { id: k.id, result: t('test.' + r.result), status: r.status }) + (r.message ? ' — ' + r.message : '');
      toast(msg, r.ok ? 'ok' : 'error');
      load();
    } catch (e) { toastError(e); } finally { btn.disabled = false; }
  }

  async function toggle(k, enable, btn) {
    btn.disabled = true;
    try {
      await api('PATCH', '/admin/keys/' + encodeURIComponent(k.id) + '/toggle', { status: enable ? 'active' : 'disabled' });
      toast(enable ? t('keys.enabled', { id: k.id }) : t('keys.disabled', { id: k.id }), 'ok');
      load();
    } catch (e) { toastError(e); } finally { btn.disabled = false; }
  }

  // The same button in the key's row once the table has been drawn again.
  const rowButton = (id, testid) => () => {
    for (const tr of tbody.querySelectorAll('tr[data-testid="key-row"]')) {
      if (tr.dataset.keyId === String(id)) return tr.querySelector('[data-testid="' + testid + '"]');
    }
    return null;
  };
  const keyPath = (k, rest) => '/admin/keys/' + encodeURIComponent(k.id) + (rest || '');

  async function reset(k, btn) {
    btn.disabled = true;
    try {
      await api('POST', keyPath(k, '/reset'));
      toast(t('keys.resetDone', { id: k.id }), 'ok');
      await load();
      const again = rowButton(k.id, 'key-reset')();
      if (again) again.focus();
    } catch (e) { toastError(e); } finally { btn.disabled = false; }
  }

  async function move(k, btn) {
    btn.disabled = true;
    let groups;
    try {
      groups = await api('GET', '/admin/pool-groups');
    } catch (e) { toastError(e); return; } finally { btn.disabled = false; }
    if (!alive) return;
    const list = Array.isArray(groups) ? groups : [];
    const current = String(k.poolGroup ?? '');
    const pick = h('select', { id: 'key-move-group', name: 'poolGroup', 'data-testid': 'key-move-group' },
      list.map((g) => h('option', { value: String(g.id), selected: String(g.id) === current },
        g.name && g.name !== g.id ? g.name + ' (' + g.id + ')' : String(g.id))));
    formDialog({
      parent: root,
      testid: 'key-move-dialog',
      title: t('keys.moveTitle', { id: k.id }),
      body: h('div', { class: 'field' }, h('label', { for: 'key-move-group' }, t('keys.pool')), pick),
      okLabel: t('keys.moveOk'),
      okTestid: 'key-move-ok',
      returnFocus: rowButton(k.id, 'key-move'),
      onOk: async () => {
        if (!pick.value) { toast(t('keys.moveNone'), 'error'); return false; }
        await api('PATCH', keyPath(k, '/pool'), { poolGroup: pick.value });
        toast(t('keys.moved', { id: k.id, pool: pick.value }), 'ok');
        await load();
        return true;
      },
    });
  }

  function editNotes(k) {
    const input = h('textarea', { id: 'key-notes-input', name: 'notes', rows: 4, maxlength: 1000,
      spellcheck: 'false', autocomplete: 'off', 'data-testid': 'key-notes-input', prop: { value: String(k.notes ?? '') } });
    formDialog({
      parent: root,
      testid: 'key-notes-dialog',
      title: t('keys.notesTitle', { id: k.id }),
      body: h('div', { class: 'field' }, h('label', { for: 'key-notes-input' }, t('keys.notes')), input),
      okLabel: t('keys.save'),
      okTestid: 'key-notes-ok',
      returnFocus: rowButton(k.id, 'key-edit-notes'),
      onOk: async () => {
        await api('PUT', keyPath(k), { notes: input.value });
        toast(t('keys.notesSaved', { id: k.id }), 'ok');
        await load();
        return true;
      },
    });
    input.focus();
  }

  const statusText = (s) => (s === null || s === undefined ? t('history.created')
    : (['active', 'disabled', 'banned', 'cooling', 'deleted'].includes(s) ? t('status.' + s) : String(s)));
  const sourceText = (s) => (['admin', 'traffic', 'test', 'sync', 'import'].includes(s) ? t('history.source.' + s) : String(s ?? ''));

  async function showHistory(k, btn) {
    btn.disabled = true;
    let items;
    try {
      items = await api('GET', keyPath(k, '/history'));
    } catch (e) { toastError(e); return; } finally { btn.disabled = false; }
    if (!alive) return;
    const list = (Array.isArray(items) ? items.slice() : []).map((e, i) => ({ e, i, ms: new Date(e.at).getTime() || 0 }));
    // Newest first; the server's order breaks ties.
    list.sort((a, b) => b.ms - a.ms || a.i - b.i);
    const ol = h('ol', { class: 'history-list', 'data-testid': 'key-history-list' },
      list.length ? list.map(({ e }) => h('li', { 'data-testid': 'key-history-item' },
        h('time', { datetime: String(e.at ?? '') }, fmtDate(e.at)), ' ',
        h('span', { class: 'history-change' }, t('history.change', { from: statusText(e.from), to: statusText(e.to) })),
        e.reason ? h('span', { class: 'reason' }, String(e.reason)) : null,
        h('span', { class: 'reason' }, t('history.by', { source: sourceText(e.source) }))))
        : h('li', { class: 'muted' }, t('history.none')));
    formDialog({
      parent: root,
      testid: 'key-history-dialog',
      title: t('keys.historyTitle', { id: k.id }),
      body: ol,
      okTestid: 'key-history-close',
      returnFocus: btn,
    });
  }

  async function del(k) {
    if (!(await confirmDialog(t('keys.confirmDelete', { key: k.key_masked, id: k.id }), t('keys.delete')))) return;
    try {
      await api('DELETE', '/admin/keys/' + encodeURIComponent(k.id));
      toast(t('keys.deleted', { id: k.id }), 'ok');
      load();
    } catch (e) { toastError(e); }
  }

  async function load() {
    if (!alive) return;
    saveHash();
    updateExport();
    if (listAbort) listAbort.abort();
    const ctl = new AbortController();
    listAbort = ctl;
    table.setAttribute('aria-busy', 'true');
    try {
      const d = await api('GET', withQuery('/admin/keys', { page: state.page, limit: state.limit,
        status: state.status, pool: state.pool, q: state.q }), undefined, { signal: ctl.signal });
      if (!alive || ctl.signal.aborted) return;
      const p = d.pagination || { page: state.page, total: 0, total_pages: 0 };
      const list = Array.isArray(d.keys) ? d.keys : [];
      if (!list.length && p.page > 1 && p.total_pages >= 1 && p.page > p.total_pages) {
        state.page = p.total_pages;
        load();
        return;
      }
      clear(tbody);
      if (!list.length) {
        tbody.appendChild(h('tr', null, h('td', { colspan: cols.length, class: 'muted' }, t('keys.none'))));
      } else {
        for (const k of list) tbody.appendChild(row(k));
      }
      caption.textContent = t('keys.caption', { total: fmtInt(p.total) });
      pageInfo.textContent = t('keys.page', { page: fmtInt(p.page), pages: fmtInt(Math.max(1, p.total_pages)) });
      prev.disabled = p.page <= 1;
      next.disabled = p.page >= p.total_pages;
    } catch (e) {
      if (e && e.name === 'AbortError') return;
      toastError(e);
    } finally {
      if (listAbort === ctl) { listAbort = null; table.removeAttribute('aria-busy'); }
    }
  }

  fStatus.addEventListener('change', () => { state.status = fStatus.value; state.page = 1; load(); });
  fPool.addEventListener('change', () => { state.pool = fPool.value; state.page = 1; load(); });
  fLimit.addEventListener('change', () => { state.limit = Number(fLimit.value); state.page = 1; load(); });
  fSearch.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => { state.q = fSearch.value.trim(); state.page = 1; load(); }, 250);
  });
  prev.addEventListener('click', () => { if (state.page > 1) { state.page -= 1; load(); } });
  next.addEventListener('click', () => { state.page += 1; load(); });

  root.append(h('h1', null, t('nav.keys')),
    h('div', { class: 'panels' }, addForm, batchForm),
    tools,
    h('section', { 'aria-labelledby': 'keys-list' },
      h('h2', { id: 'keys-list' }, t('keys.listTitle')),
      filters,
      h('div', { class: 'table-wrap' }, table),
      pager));

  api('GET', '/admin/pool-groups').then((groups) => {
    if (!alive || !Array.isArray(groups)) return;
    for (const g of groups) {
      fPool.appendChild(h('option', { value: String(g.id), selected: String(g.id) === state.pool },
        g.name && g.name !== g.id ? g.name + ' (' + g.id + ')' : String(g.id)));
    }
  }).catch(() => { /* the filter stays at "all groups" */ });

  load();

  return () => {
    alive = false;
    clearTimeout(searchTimer);
    stopPoll();
    if (listAbort) listAbort.abort();
  };
}

// Pool groups (tiers): the list with key counts (GET /admin/pool-groups), create one, per row
// edit name and priority, delete (its keys move to `default`, which cannot be deleted).
import { h, clear } from '../dom.js';
import { t, fmtInt } from '../i18n.js';
import { api } from '../api.js';
import { toast, toastError, confirmDialog, formDialog } from '../ui.js';

const DEFAULT_GROUP = 'default';
const COUNTS = ['total', 'active', 'disabled', 'banned', 'cooling'];

/** The number typed into a number input, or undefined when empty (the server then says why). */
function numberOf(input) {
  const v = input.value.trim();
  return v === '' ? undefined : Number(v);
}

export function mount(root) {
  let alive = true;
  let listAbort = null;

  // ----- create one
  const idInput = h('input', { id: 'group-id-input', type: 'text', autocomplete: 'off', spellcheck: 'false',
    autocapitalize: 'off', required: true, pattern: '[a-z0-9_\\-]{1,32}', 'aria-describedby': 'group-id-hint',
    'data-testid': 'group-id-input' });
  const nameInput = h('input', { id: 'group-name-input', type: 'text', autocomplete: 'off', maxlength: 100,
    required: true, 'data-testid': 'group-name-input' });
  const priorityInput = h('input', { id: 'group-priority-input', type: 'number', step: 1, inputmode: 'numeric',
    required: true, 'aria-describedby': 'group-priority-hint', 'data-testid': 'group-priority-input' });
  const descInput = h('input', { id: 'group-description-input', type: 'text', autocomplete: 'off', maxlength: 1000,
    'data-testid': 'group-description-input' });
  const submit = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'group-create-submit' }, t('groups.create'));
  const form = h('form', { class: 'card panel', method: 'post', novalidate: true },
    h('h2', null, t('groups.createTitle')),
    h('div', { class: 'row' },
      h('div', { class: 'field' }, h('label', { for: 'group-id-input' }, t('groups.id')), idInput),
      h('div', { class: 'field grow' }, h('label', { for: 'group-name-input' }, t('groups.name')), nameInput),
      h('div', { class: 'field' }, h('label', { for: 'group-priority-input' }, t('groups.priority')), priorityInput)),
    h('p', { class: 'muted small' },
      h('span', { id: 'group-id-hint' }, t('groups.idHint')), ' ',
      h('span', { id: 'group-priority-hint' }, t('groups.priorityHint'))),
    h('div', { class: 'row' },
      h('div', { class: 'field grow' }, h('label', { for: 'group-description-input' }, t('groups.description')), descInput),
      submit));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    // The server checks every field; its 400 / 409 message is shown as it is.
    const body = { id: idInput.value.trim(), name: nameInput.value.trim(), priority: numberOf(priorityInput),
      description: descInput.value.trim() };
    submit.disabled = true;
    try {
      const g = await api('POST', '/admin/pool-groups', body);
      for (const el of [idInput, nameInput, priorityInput, descInput]) el.value = '';
      toast(t('groups.created', { id: g && g.id ? g.id : body.id }), 'ok');
      await load();
    } catch (e) { toastError(e); } finally { submit.disabled = false; }
  });

  // ----- table
  const caption = h('caption');
  const tbody = h('tbody');
  const cols = ['id', 'name', 'priority', 'description', ...COUNTS, 'actions'];
  const numeric = new Set(['priority', ...COUNTS]);
  const colLabel = (c) => (COUNTS.includes(c) ? t('status.' + c) : t('groups.col.' + c));
  const table = h('table', { class: 'cards-table groups-table' }, caption,
    h('thead', null, h('tr', null, cols.map((c) => h('th', { scope: 'col', class: numeric.has(c) ? 'num' : null }, colLabel(c))))),
    tbody);

  // The same button in the group's row once the table has been drawn again.
  const rowButton = (id, testid) => () => {
    for (const tr of tbody.querySelectorAll('tr[data-testid="group-row"]')) {
      if (tr.dataset.groupId === String(id)) return tr.querySelector('[data-testid="' + testid + '"]');
    }
    return null;
  };
  const groupPath = (g) => '/admin/pool-groups/' + encodeURIComponent(g.id);

  function row(g) {
    const td = (col, attrs, ...children) => h('td', Object.assign({ 'data-label': colLabel(col) }, attrs || {}),
      h('div', { class: 'cell' }, ...children));
    const isDefault = String(g.id) === DEFAULT_GROUP;
    return h('tr', { 'data-testid': 'group-row', 'data-group-id': String(g.id) },
      td('id', null, h('code', { 'data-testid': 'group-id' }, String(g.id))),
      td('name', { 'data-testid': 'group-name' }, String(g.name ?? '')),
      td('priority', { class: 'num', 'data-testid': 'group-priority' }, String(g.priority ?? '')),
      td('description', { class: 'notes', 'data-testid': 'group-description' }, String(g.description ?? '')),
      COUNTS.map((c) => td(c, { class: 'num', 'data-testid': 'group-' + c }, fmtInt(g[c] ?? 0))),
      td('actions', { class: 'actions-cell' }, h('div', { class: 'actions' },
        h('button', { type: 'button', class: 'btn btn-sm', 'data-testid': 'group-edit', on: { click: () => edit(g) } }, t('groups.edit')),
        isDefault ? null : h('button', { type: 'button', class: 'btn btn-sm btn-danger', 'data-testid': 'group-delete',
          on: { click: () => del(g) } }, t('groups.delete')))));
  }

  function edit(g) {
    const name = h('input', { id: 'group-edit-name', type: 'text', autocomplete: 'off', maxlength: 100, required: true,
      'data-testid': 'group-edit-name', prop: { value: String(g.name ?? '') } });
    const priority = h('input', { id: 'group-edit-priority', type: 'number', step: 1, inputmode: 'numeric', required: true,
      'data-testid': 'group-edit-priority', prop: { value: String(g.priority ?? '') } });
    formDialog({
      parent: root,
      testid: 'group-edit-dialog',
      title: t('groups.editTitle', { id: g.id }),
      body: [
        h('div', { class: 'field' }, h('label', { for: 'group-edit-name' }, t('groups.name')), name),
        h('div', { class: 'field' }, h('label', { for: 'group-edit-priority' }, t('groups.priority')), priority,
          h('span', { class: 'muted small' }, t('groups.priorityHint'))),
      ],
      okLabel: t('groups.save'),
      okTestid: 'group-edit-ok',
      returnFocus: rowButton(g.id, 'group-edit'),
      onOk: async () => {
        await api('PATCH', groupPath(g), { name: name.value.trim(), priority: numberOf(priority) });
        toast(t('groups.updated', { id: g.id }), 'ok');
        await load();
        return true;
      },
    });
  }

  async function del(g) {
    const label = g.name && g.name !== g.id ? g.name + ' (' + g.id + ')' : String(g.id);
    if (!(await confirmDialog(t('groups.confirmDelete', { group: label, n: fmtInt(g.total ?? 0) }), t('groups.delete')))) return;
    try {
      const r = await api('DELETE', groupPath(g));
      toast(t('groups.deleted', { id: g.id, n: fmtInt(r && r.moved_keys ? r.moved_keys : 0) }), 'ok');
      await load();
    } catch (e) { toastError(e); }
  }

  async function load() {
    if (!alive) return;
    if (listAbort) listAbort.abort();
    const ctl = new AbortController();
    listAbort = ctl;
    table.setAttribute('aria-busy', 'true');
    try {
      const groups = await api('GET', '/admin/pool-groups', undefined, { signal: ctl.signal });
      if (!alive || ctl.signal.aborted) return;
      const list = Array.isArray(groups) ? groups : [];
      clear(tbody);
      if (!list.length) {
        tbody.appendChild(h('tr', null, h('td', { colspan: cols.length, class: 'muted' }, t('groups.none'))));
      } else {
        for (const g of list) tbody.appendChild(row(g));
      }
      caption.textContent = t('groups.caption', { n: fmtInt(list.length) });
    } catch (e) {
      if (e && e.name === 'AbortError') return;
      toastError(e);
    } finally {
      if (listAbort === ctl) { listAbort = null; table.removeAttribute('aria-busy'); }
    }
  }

  root.append(h('h1', null, t('nav.groups')),
    h('p', { class: 'muted' }, t('groups.hint')),
    form,
    h('section', { 'aria-labelledby': 'groups-list' },
      h('h2', { id: 'groups-list' }, t('groups.listTitle')),
      h('div', { class: 'table-wrap' }, table)));

  load();

  return () => {
    alive = false;
    if (listAbort) listAbort.abort();
  };
}

// Settings: every key_pool field of GET /admin/config; fields pinned by the environment are
// read-only; PUT /admin/config sends only the changed fields; a 400/409 shows at its field.
import { h, replace } from '../dom.js';
import { t } from '../i18n.js';
import { api } from '../api.js';
import { toast, toastError, confirmDialog } from '../ui.js';

const ALGORITHMS = ['round-robin', 'random', 'least-used', 'weighted-score', 'least-token-used', 'max-remaining'];
// name → [min, max] for the integer fields (contract §3 / the server's checks).
const NUMBERS = {
  max_attempts: [1, 20],
  rate_limit_cooldown_s: [1, 2592000],
  rate_limit_cooldown_max_s: [1, 2592000],
  failure_threshold: [1, 10000],
  failure_window_s: [1, 2592000],
  failure_cooldown_s: [1, 2592000],
  unauthorized_threshold: [1, 10000],
  test_concurrency: [1, 100],
  sticky_ttl_s: [1, 604800],
};

/** The field a server message names: "key_pool.max_attempts: …", "algorithm: …". */
function fieldOf(message, names) {
  const m = /^(?:key_pool\.)?([a-z_]+)\s*:/.exec(message || '');
  if (m && names.includes(m[1])) return m[1];
  // Else the longest field name found in the text.
  let best = null;
  for (const n of names) if (message && message.includes(n) && (!best || n.length > best.length)) best = n;
  return best;
}

export function mount(root) {
  let alive = true;
  let current = {};
  let pinned = [];
  const controls = {};
  const errors = {};
  const form = h('form', { class: 'card panel settings', method: 'post', novalidate: true, 'data-testid': 'config-form' });
  const save = h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': 'config-save' }, t('settings.save'));
  const reset = h('button', { type: 'button', class: 'btn btn-danger' }, t('settings.reset'));
  const formError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  // How requests are served, beside the settings that change it (README "Endpoints", "Key pool").
  const about = h('section', { class: 'card panel', 'data-testid': 'settings-about' },
    h('h2', null, t('settings.about')),
    h('p', { class: 'muted' }, t('settings.aboutSticky')),
    h('p', { class: 'muted' }, t('settings.aboutWhole')),
    h('p', { class: 'muted' }, t('settings.aboutReasoning')));
  root.append(h('h1', null, t('nav.settings')), h('p', { class: 'muted' }, t('settings.hint')), form, about);

  function valueOf(name) {
    const c = controls[name];
    if (c.type === 'checkbox') return c.checked;
    if (name === 'algorithm') return c.value;
    const v = c.value.trim();
    return v === '' || !/^\d+$/.test(v) ? v : Number(v);
  }

  function clearErrors() {
    for (const n of Object.keys(errors)) { errors[n].textContent = ''; errors[n].hidden = true; controls[n].removeAttribute('aria-invalid'); }
    formError.hidden = true;
  }

  function render(cfg) {
    current = Object.assign({}, cfg.key_pool || {});
    pinned = Array.isArray(cfg.pinned) ? cfg.pinned : [];
    const names = Object.keys(current);
    const rows = names.map((name) => {
      const id = 'cfg-' + name;
      const isPinned = pinned.includes(name);
      let control;
      if (name === 'algorithm') {
        const opts = ALGORITHMS.includes(current[name]) ? ALGORITHMS : ALGORITHMS.concat([String(current[name])]);
        control = h('select', { id, name }, opts.map((a) => h('option', { value: a, selected: a === current[name] }, a)));
      } else if (typeof current[name] === 'boolean') {
        control = h('input', { id, name, type: 'checkbox', checked: current[name] });
      } else {
        const r = NUMBERS[name] || [0, undefined];
        control = h('input', { id, name, type: 'number', inputmode: 'numeric', step: 1, min: r[0], max: r[1], value: current[name] });
      }
      const errId = id + '-error';
      const noteId = id + '-note';
      const err = h('p', { class: 'field-error', id: errId, role: 'alert', hidden: true });
      control.setAttribute('aria-describedby', errId + (isPinned ? ' ' + noteId : '') + ' ' + id + '-help');
      if (isPinned) control.disabled = true;
      controls[name] = control;
      errors[name] = err;
      const checkbox = control.type === 'checkbox';
      return h('div', { class: checkbox ? 'field field-check' : 'field' },
        checkbox ? h('span', { class: 'row' }, control, h('label', { for: id }, t('settings.f.' + name)))
          : [h('label', { for: id }, t('settings.f.' + name)), control],
        h('span', { class: 'muted small', id: id + '-help' }, t('settings.h.' + name), ' (', h('code', null, name), ')'),
        isPinned ? h('span', { class: 'note', id: noteId }, t('settings.pinned')) : null,
        err);
    });
    replace(form, h('div', { class: 'settings-grid' }, rows), formError, h('div', { class: 'row' }, save, reset));
  }

  async function load() {
    try {
      const cfg = await api('GET', '/admin/config');
      if (alive) render(cfg);
    } catch (e) { toastError(e); }
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clearErrors();
    const changed = {};
    for (const name of Object.keys(controls)) {
      if (pinned.includes(name)) continue;
      const v = valueOf(name);
      if (v !== current[name]) changed[name] = v;
    }
    if (!Object.keys(changed).length) { toast(t('settings.nothing'), 'info'); return; }
    save.disabled = true;
    try {
      const cfg = await api('PUT', '/admin/config', changed);
      if (!alive) return;
      render(cfg);
      toast(t('settings.saved'), 'ok');
    } catch (e) {
      const name = fieldOf(e.message, Object.keys(controls));
      if (name && errors[name]) {
        errors[name].textContent = e.message;
        errors[name].hidden = false;
        controls[name].setAttribute('aria-invalid', 'true');
        controls[name].focus();
      } else if (e.status) {
        formError.textContent = e.message;
        formError.hidden = false;
      }
      toastError(e);
    } finally { save.disabled = false; }
  });

  reset.addEventListener('click', async () => {
    if (!(await confirmDialog(t('settings.confirmReset'), t('settings.reset')))) return;
    try {
      const cfg = await api('POST', '/admin/config/reset');
      if (!alive) return;
      render(cfg);
      toast(t('settings.resetDone'), 'ok');
    } catch (e) { toastError(e); }
  });

  load();
  return () => { alive = false; };
}

// Page-wide pieces: the toast, the confirm dialog, dialogs built on demand.
import { h, $, replace } from './dom.js';
import { t } from './i18n.js';

let toastTimer = 0;

/** Shows msg (text) in the toast; kind: 'ok' | 'error' | 'info'. */
export function toast(msg, kind = 'info') {
  const el = $('[data-testid="toast"]');
  if (!el) return;
  el.textContent = String(msg);
  el.className = 'toast toast-' + kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.hidden = true; el.textContent = ''; }, kind === 'error' ? 8000 : 4000);
}

export function toastError(e) {
  if (e && e.name === 'AbortError') return;
  toast(e && e.message ? e.message : String(e), 'error');
}

/** Asks in the page's <dialog>; resolves true when confirm-ok was pressed. */
export function confirmDialog(message, okLabel) {
  const dlg = $('#confirm');
  replace($('#confirm-text'), message);
  const ok = $('[data-testid="confirm-ok"]');
  ok.textContent = okLabel || t('confirm.ok');
  dlg.returnValue = '';
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.showModal();
  });
}

let dialogSeq = 0;

/**
 * Opens a modal <dialog> built from nodes: a title, the body, Cancel and OK (okTestid). OK runs
 * onOk(); the dialog stays open while it runs and when it resolves to false. Without onOk there
 * is a single Close button. Esc or Cancel close it; then the dialog leaves the page and focus
 * goes back to returnFocus() (an element or a function that finds one, e.g. a re-rendered row's
 * button). parent (default: the body) holds it; a view passes its root, so leaving the view
 * drops an open dialog too.
 */
export function formDialog({ title, body, okLabel, okTestid, onOk, returnFocus, testid, parent }) {
  dialogSeq += 1;
  const titleId = 'dialog-title-' + dialogSeq;
  let dlg = null;
  const actions = onOk
    ? [h('button', { type: 'button', class: 'btn', on: { click: () => dlg.close() } }, t('confirm.cancel')),
      h('button', { type: 'submit', class: 'btn btn-primary', 'data-testid': okTestid }, okLabel || t('confirm.ok'))]
    : [h('button', { type: 'submit', class: 'btn', 'data-testid': okTestid }, okLabel || t('dialog.close'))];
  const form = h('form', { method: 'dialog', novalidate: true },
    h('h2', { id: titleId, class: 'dialog-title' }, title),
    body,
    h('div', { class: 'dialog-actions' }, actions));
  dlg = h('dialog', { class: 'dialog dialog-form', 'aria-labelledby': titleId, 'data-testid': testid }, form);
  let busy = false;
  form.addEventListener('submit', async (ev) => {
    if (!onOk) return; // method="dialog" closes it
    ev.preventDefault();
    if (busy) return;
    busy = true;
    const buttons = form.querySelectorAll('button');
    for (const b of buttons) b.disabled = true;
    let done = false;
    try {
      done = (await onOk()) !== false;
    } catch (e) {
      toastError(e);
    } finally {
      busy = false;
      for (const b of buttons) b.disabled = false;
    }
    if (done && dlg.open) dlg.close();
  });
  // Esc while a change is on its way does not drop the dialog.
  dlg.addEventListener('cancel', (ev) => { if (busy) ev.preventDefault(); });
  dlg.addEventListener('close', () => {
    dlg.remove();
    const el = typeof returnFocus === 'function' ? returnFocus() : returnFocus;
    if (el && el.isConnected && typeof el.focus === 'function') el.focus();
  }, { once: true });
  (parent || document.body).appendChild(dlg);
  dlg.showModal();
  return dlg;
}

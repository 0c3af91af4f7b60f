// Page-wide pieces: the toast, the confirm dialog.
import { $, replace } from './dom.js';
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

// Live logs: one EventSource on /admin/logs/stream while the view is open; lines as text,
// the last 1,000 kept.
import { h } from '../dom.js';
import { t, fmtInt } from '../i18n.js';
import { api } from '../api.js';

const KEEP = 1000;

export function mount(root) {
  let paused = false;
  const box = h('div', { class: 'log', role: 'log', 'aria-live': 'off', tabindex: 0, 'data-testid': 'log-lines',
    'aria-label': t('logs.title') });
  const state = h('span', { class: 'muted small', role: 'status' }, t('logs.connecting'));
  const pause = h('button', { type: 'button', class: 'btn btn-sm', 'aria-pressed': 'false' }, t('logs.pause'));
  const clearBtn = h('button', { type: 'button', class: 'btn btn-sm' }, t('logs.clear'));
  root.append(h('h1', null, t('logs.title')),
    h('div', { class: 'row panel' }, pause, clearBtn, state),
    box);

  function add(text, cls) {
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
    box.appendChild(h('div', { class: cls ? 'log-line ' + cls : 'log-line' }, text));
    while (box.childElementCount > KEEP) box.removeChild(box.firstChild);
    if (atBottom && !paused) box.scrollTop = box.scrollHeight;
  }

  pause.addEventListener('click', () => {
    paused = !paused;
    pause.setAttribute('aria-pressed', String(paused));
    pause.textContent = paused ? t('logs.resume') : t('logs.pause');
    if (!paused) box.scrollTop = box.scrollHeight;
  });
  clearBtn.addEventListener('click', () => { while (box.firstChild) box.removeChild(box.firstChild); });

  const es = new EventSource('/admin/logs/stream');
  es.addEventListener('open', () => { state.textContent = t('logs.live'); });
  es.addEventListener('message', (ev) => add(String(ev.data)));
  es.addEventListener('skipped', (ev) => add(t('logs.skipped', { n: fmtInt(Number(ev.data) || 0) }), 'skipped'));
  es.addEventListener('error', () => {
    if (es.readyState === EventSource.CLOSED) {
      state.textContent = t('logs.closed');
      // A refused stream may mean the session ended: any call answered 401 shows the login.
      api('GET', '/admin/config').catch(() => {});
    } else {
      state.textContent = t('logs.reconnecting');
    }
  });

  return () => es.close();
}

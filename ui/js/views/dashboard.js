// Dashboard: key counts (GET /admin/stats), per pool group cards, usage and fleet balance
// (GET /factory/balance/summary).
import { h, replace } from '../dom.js';
import { t, fmtInt, fmtPct, fmtDate } from '../i18n.js';
import { api } from '../api.js';
import { toastError } from '../ui.js';

const STATS = ['total', 'active', 'disabled', 'banned', 'cooling'];

function statCard(name, value) {
  // The element with the test id holds just the bare integer.
  return h('div', { class: 'card stat stat-' + name },
    h('span', { class: 'stat-label' }, t('status.' + name)),
    h('span', { class: 'stat-value', 'data-testid': 'stat-' + name }, String(value ?? 0)));
}

function metric(label, value, sub) {
  return h('div', { class: 'card metric' },
    h('span', { class: 'stat-label' }, label),
    h('span', { class: 'metric-value' }, value),
    sub ? h('span', { class: 'muted small' }, sub) : null);
}

function poolCard(p) {
  return h('article', { class: 'card pool' },
    h('h3', null, String(p.id)),
    h('dl', { class: 'pool-counts' },
      STATS.map((k) => [h('dt', null, t('status.' + k)), h('dd', null, fmtInt(p[k] ?? 0))])));
}

export function mount(root) {
  let alive = true;
  const statsBox = h('div', { class: 'stats', 'aria-busy': 'true' });
  const usageBox = h('div', { class: 'metrics', 'aria-busy': 'true' });
  const poolBox = h('div', { class: 'pools' });
  root.append(
    h('h1', null, t('nav.dashboard')),
    h('section', { 'aria-labelledby': 'dash-keys' }, h('h2', { id: 'dash-keys' }, t('dash.keys')), statsBox),
    h('section', { 'aria-labelledby': 'dash-usage' }, h('h2', { id: 'dash-usage' }, t('dash.usage')), usageBox),
    h('section', { 'aria-labelledby': 'dash-pools' }, h('h2', { id: 'dash-pools' }, t('dash.pools')), poolBox),
  );

  api('GET', '/admin/stats').then((st) => {
    if (!alive) return;
    statsBox.removeAttribute('aria-busy');
    replace(statsBox, STATS.map((k) => statCard(k, st[k])));
    const pools = Array.isArray(st.by_pool) ? st.by_pool : [];
    replace(poolBox, pools.length ? pools.map(poolCard) : h('p', { class: 'muted' }, t('dash.noPools')));
  }).catch((e) => { if (alive) { statsBox.removeAttribute('aria-busy'); toastError(e); } });

  api('GET', '/factory/balance/summary').then((s) => {
    if (!alive) return;
    usageBox.removeAttribute('aria-busy');
    const tok = (x) => (x && x.total_tokens) || 0;
    const b = s.balance || {};
    replace(usageBox,
      metric(t('dash.requests'), fmtInt(s.requests)),
      metric(t('dash.successRate'), s.requests ? fmtPct(s.success_rate) : t('common.none')),
      metric(t('dash.tokensTotal'), fmtInt(tok(s.tokens))),
      metric(t('dash.tokensToday'), fmtInt(tok(s.today && s.today.tokens)),
        t('dash.requestsToday', { n: fmtInt(s.today ? s.today.requests : 0) })),
      metric(t('dash.balanceUsed'), fmtInt(b.used)),
      metric(t('dash.balanceAllowance'), fmtInt(b.allowance)),
      metric(t('dash.balanceRemaining'), fmtInt(b.remaining)),
      metric(t('dash.lastSync'), fmtDate(b.last_sync),
        t('dash.keysSynced', { n: fmtInt(b.keys_synced ?? 0) })));
  }).catch((e) => { if (alive) { usageBox.removeAttribute('aria-busy'); toastError(e); } });

  return () => { alive = false; };
}

// Usage: hour × weekday heatmap over a chosen range (in the gateway's time zone), daily and
// hourly token charts by model, success-rate ranking of keys (best and worst ten). The charts can
// be narrowed to one client (`#/usage?client=cli_…`, the Clients view's "usage" link).
import { h, replace } from '../dom.js';
import { t, fmtInt, fmtPct } from '../i18n.js';
import { api, withQuery } from '../api.js';
import { toastError } from '../ui.js';
import { heatmap, stackedBars, legend, zoneParts, weekdayNames } from '../charts.js';

const TOP_MODELS = 8;

function isoDate(d) {
  return d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-' + String(d.getDate()).padStart(2, '0');
}

/** "YYYY-MM-DD" + n days (calendar arithmetic in UTC, no zone involved). */
function addDays(date, n) {
  const [y, m, d] = date.split('-').map(Number);
  const x = new Date(Date.UTC(y, m - 1, d + n));
  return x.getUTCFullYear() + '-' + String(x.getUTCMonth() + 1).padStart(2, '0') + '-' + String(x.getUTCDate()).padStart(2, '0');
}

function datesBetween(from, to) {
  const out = [];
  for (let d = from; d <= to && out.length < 1200; d = addDays(d, 1)) out.push(d);
  return out;
}

const tokensOf = (p) => (p && p.tokens && Number(p.tokens.total_tokens)) || 0;

function dataTable(caption, headers, rows) {
  return h('details', null, h('summary', null, t('usage.showTable')),
    h('div', { class: 'table-wrap' }, h('table', null, h('caption', null, caption),
      h('thead', null, h('tr', null, headers.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', null, rows.map((r) => h('tr', null, r.map((c, i) => (i === 0 ? h('th', { scope: 'row' }, c) : h('td', { class: 'num' }, c)))))))));
}

export function mount(root, params) {
  let alive = true;
  let gen = 0;
  const today = isoDate(new Date());
  const fromIn = h('input', { id: 'u-from', type: 'date', value: params.get('from') || addDays(today, -6), required: true });
  const toIn = h('input', { id: 'u-to', type: 'date', value: params.get('to') || today, required: true });
  const apply = h('button', { type: 'submit', class: 'btn btn-primary' }, t('usage.apply'));
  // The client filter: every client, API_ACCESS_KEY, no key, or one client key (GET /admin/clients).
  const wanted = params.get('client') || '';
  const clientIn = h('select', { id: 'u-client', name: 'client', 'data-testid': 'usage-client' },
    h('option', { value: '' }, t('usage.allClients')),
    h('option', { value: 'api_access_key', selected: wanted === 'api_access_key' }, t('usage.clientApiKey')),
    h('option', { value: 'anonymous', selected: wanted === 'anonymous' }, t('usage.clientAnonymous')),
    // A client that is not (or no longer) listed keeps its id until the list has arrived.
    wanted && !['api_access_key', 'anonymous'].includes(wanted)
      ? h('option', { value: wanted, selected: true }, wanted) : null);
  const rangeForm = h('form', { class: 'row panel', method: 'get', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: 'u-from' }, t('usage.from')), fromIn),
    h('div', { class: 'field' }, h('label', { for: 'u-to' }, t('usage.to')), toIn),
    h('div', { class: 'field' }, h('label', { for: 'u-client' }, t('usage.client')), clientIn),
    apply);
  const tzNote = h('p', { class: 'muted small' });
  const clientNote = h('p', { class: 'note', 'data-testid': 'usage-client-note', hidden: true });
  const heat = h('div', { class: 'chart', 'data-testid': 'heatmap', 'aria-busy': 'true' });
  const daily = h('div', { class: 'chart', 'data-testid': 'chart-daily', 'aria-busy': 'true' });
  const hourly = h('div', { class: 'chart', 'data-testid': 'chart-hourly', 'aria-busy': 'true' });
  const hourlyTitle = h('h2', { id: 'u-hourly' }, t('usage.hourly'));
  const ranking = h('div', { class: 'panels', 'data-testid': 'ranking', 'aria-busy': 'true' });
  root.append(h('h1', null, t('nav.usage')), rangeForm, tzNote, clientNote,
    h('section', { class: 'card panel', 'aria-labelledby': 'u-heat' }, h('h2', { id: 'u-heat' }, t('usage.heatmap')), heat),
    h('section', { class: 'card panel', 'aria-labelledby': 'u-daily' }, h('h2', { id: 'u-daily' }, t('usage.daily')), daily),
    h('section', { class: 'card panel', 'aria-labelledby': 'u-hourly' }, hourlyTitle, hourly),
    h('section', { class: 'panel', 'aria-labelledby': 'u-rank' }, h('h2', { id: 'u-rank' }, t('usage.ranking')), ranking));

  const series = (granularity, from, to, model) =>
    api('GET', withQuery('/admin/usage', { granularity, from, to, model, client: clientIn.value }));

  /** Total series plus one per top model; "other" = total − the models shown. */
  async function byModel(granularity, from, to, models) {
    const [total, ...per] = await Promise.all([series(granularity, from, to)]
      .concat(models.map((m) => series(granularity, from, to, m))));
    return { total, per };
  }

  function drawHeatmap(reply, myGen) {
    if (!alive || myGen !== gen) return;
    const parts = zoneParts(reply.tz);
    const req = Array.from({ length: 7 }, () => new Array(24).fill(0));
    const tok = Array.from({ length: 7 }, () => new Array(24).fill(0));
    for (const p of reply.points || []) {
      const z = parts(p.t);
      req[z.weekday][z.hour] += Number(p.requests) || 0;
      tok[z.weekday][z.hour] += tokensOf(p);
    }
    const svg = heatmap(req, {
      label: t('usage.heatmapLabel', { tz: reply.tz }),
      title: (day, hr, v) => t('usage.heatCell', { day, hour: String(hr).padStart(2, '0'), n: fmtInt(v) }),
    });
    // Tokens per cell in each tooltip as well.
    for (const rect of svg.querySelectorAll('rect')) {
      const w = Number(rect.dataset.weekday);
      const hr = Number(rect.dataset.hour);
      rect.firstChild.textContent += ' · ' + t('usage.tokensN', { n: fmtInt(tok[w][hr]) });
    }
    const names = weekdayNames();
    replace(heat, svg, dataTable(t('usage.heatmap'), [t('usage.weekday')].concat(Array.from({ length: 24 }, (_, i) => String(i))),
      req.map((row, w) => [names[w] || String(w)].concat(row.map((v) => fmtInt(v))))));
    heat.removeAttribute('aria-busy');
  }

  function drawBars(box, labels, bucketOf, data, models, caption) {
    const idx = new Map(labels.map((l, i) => [l, i]));
    const fill = (reply) => {
      const v = new Array(labels.length).fill(0);
      for (const p of reply.points || []) {
        const i = idx.get(bucketOf(p.t));
        if (i !== undefined) v[i] += tokensOf(p);
      }
      return v;
    };
    const total = fill(data.total);
    const list = models.map((m, i) => ({ name: m, values: fill(data.per[i]), cls: i }));
    const other = total.map((v, i) => Math.max(0, v - list.reduce((a, se) => a + se.values[i], 0)));
    if (other.some((v) => v > 0) || !list.length) list.push({ name: t('usage.other'), values: other, cls: 8 });
    const svg = stackedBars(labels, list, {
      label: caption,
      title: (lab, name, v) => t('usage.barCell', { label: lab, name, n: fmtInt(v) }),
    });
    replace(box, svg, legend(list), dataTable(caption, [t('usage.bucket')].concat(list.map((se) => se.name), [t('usage.total')]),
      labels.map((lab, i) => [lab].concat(list.map((se) => fmtInt(se.values[i])), [fmtInt(total[i])]))));
    box.removeAttribute('aria-busy');
  }

  function rankList(title, keys) {
    return h('div', { class: 'card' }, h('h3', null, title),
      keys.length ? h('ol', { class: 'ranking-list' }, keys.map((k) => {
        const req = Number(k.requests) || 0;
        return h('li', { 'data-key-id': String(k.id) },
          h('code', null, String(k.key_masked ?? '')), ' ',
          req ? fmtPct((Number(k.successes) || 0) / req) : t('common.none'), ' ',
          h('span', { class: 'muted small' }, t('usage.requestsN', { n: fmtInt(req) })),
          k.notes ? h('span', { class: 'reason' }, String(k.notes)) : null);
      })) : h('p', { class: 'muted' }, t('keys.none')));
  }

  async function load() {
    const myGen = ++gen;
    let from = fromIn.value;
    let to = toIn.value;
    if (!from || !to) return;
    if (from > to) [from, to] = [to, from];
    const client = clientIn.value;
    history.replaceState(null, '', '#/usage' + withQuery('', { from, to, client }));
    const selected = clientIn.options[clientIn.selectedIndex];
    clientNote.textContent = client ? t('usage.clientNote', { client: selected ? selected.textContent : client }) : '';
    clientNote.hidden = !client;
    const end = addDays(to, 1); // the server's `to` is exclusive: include the whole last day
    for (const el of [heat, daily, hourly]) el.setAttribute('aria-busy', 'true');
    hourlyTitle.textContent = t('usage.hourlyOf', { date: to });

    let models = [];
    try {
      const sum = await api('GET', '/factory/balance/summary');
      models = (sum.by_model || []).slice().sort((a, b) => tokensOf(b) - tokensOf(a))
        .slice(0, TOP_MODELS).map((m) => String(m.model));
    } catch (e) { toastError(e); }
    if (!alive || myGen !== gen) return;

    series('hour', from, end).then((r) => {
      tzNote.textContent = t('usage.tz', { tz: r.tz });
      drawHeatmap(r, myGen);
    }).catch(toastError);

    byModel('day', from, end, models).then((d) => {
      if (!alive || myGen !== gen) return;
      const parts = zoneParts(d.total.tz);
      drawBars(daily, datesBetween(from, to), (iso) => parts(iso).date, d, models, t('usage.daily'));
    }).catch(toastError);

    byModel('hour', to, end, models).then((d) => {
      if (!alive || myGen !== gen) return;
      const parts = zoneParts(d.total.tz);
      const labels = Array.from({ length: 24 }, (_, i) => String(i).padStart(2, '0'));
      drawBars(hourly, labels, (iso) => {
        const z = parts(iso);
        return z.date === to ? String(z.hour).padStart(2, '0') : null;
      }, d, models, t('usage.hourlyOf', { date: to }));
    }).catch(toastError);
  }

  function loadRanking() {
    Promise.all(['desc', 'asc'].map((order) =>
      api('GET', withQuery('/admin/keys', { sort: 'success_rate', order, limit: 10 }))))
      .then(([best, worst]) => {
        if (!alive) return;
        replace(ranking, rankList(t('usage.best'), best.keys || []), rankList(t('usage.worst'), worst.keys || []));
        ranking.removeAttribute('aria-busy');
      }).catch(toastError);
  }

  rangeForm.addEventListener('submit', (ev) => { ev.preventDefault(); load(); });
  clientIn.addEventListener('change', () => load());
  api('GET', '/admin/clients').then((d) => {
    if (!alive || !d || !Array.isArray(d.clients)) return;
    for (const c of d.clients) {
      const label = String(c.name ?? c.id) + ' (' + String(c.key_masked ?? c.id) + ')';
      const existing = Array.from(clientIn.options).find((o) => o.value === String(c.id));
      if (existing) existing.textContent = label;
      else clientIn.appendChild(h('option', { value: String(c.id) }, label));
    }
    const selected = clientIn.options[clientIn.selectedIndex];
    if (clientIn.value && selected) clientNote.textContent = t('usage.clientNote', { client: selected.textContent });
  }).catch(() => { /* the filter keeps API_ACCESS_KEY, no key and the id from the address */ });
  load();
  loadRanking();
  return () => { alive = false; };
}

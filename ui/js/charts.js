// Hand-written SVG charts (no library): a 7×24 heatmap and stacked bars. Text only via text
// nodes; colours through classes.
import { h, s } from './dom.js';
import { getLang } from './i18n.js';

const WEEKDAYS = { Mon: 0, Tue: 1, Wed: 2, Thu: 3, Fri: 4, Sat: 5, Sun: 6 };

/** A time zone Intl accepts: the server's one when possible, else UTC. */
export function safeZone(tz) {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz }).format(0);
    return tz;
  } catch (_) {
    return 'UTC';
  }
}

/** Returns iso → {date: 'YYYY-MM-DD', hour: 0–23, weekday: 0 (Monday)–6} in the zone tz. */
export function zoneParts(tz) {
  const f = new Intl.DateTimeFormat('en-US', {
    timeZone: safeZone(tz), year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit',
    hourCycle: 'h23', weekday: 'short',
  });
  return (iso) => {
    const p = {};
    for (const part of f.formatToParts(new Date(iso))) p[part.type] = part.value;
    return { date: p.year + '-' + p.month + '-' + p.day, hour: Number(p.hour) % 24, weekday: WEEKDAYS[p.weekday] ?? 0 };
  };
}

/** Localised short weekday names, Monday first. */
export function weekdayNames() {
  const f = new Intl.DateTimeFormat(getLang(), { weekday: 'short', timeZone: 'UTC' });
  return [0, 1, 2, 3, 4, 5, 6].map((i) => f.format(new Date(Date.UTC(2024, 0, 1 + i))));
}

export function compact(n) {
  return new Intl.NumberFormat(getLang(), { notation: 'compact', maximumFractionDigits: 1 }).format(n);
}

/**
 * cells[weekday][hour] = value; title(w, hr, value) → tooltip text. Returns an <svg>.
 */
export function heatmap(cells, { label, title }) {
  const cell = 20;
  const gap = 2;
  const left = 40;
  const top = 16;
  const width = left + 24 * (cell + gap);
  const height = top + 7 * (cell + gap);
  let max = 0;
  for (const row of cells) for (const v of row) max = Math.max(max, v);
  const days = weekdayNames();
  const svg = s('svg', { viewBox: '0 0 ' + width + ' ' + height, role: 'img', 'aria-label': label, preserveAspectRatio: 'xMinYMin meet' });
  for (let hr = 0; hr < 24; hr += 3) {
    svg.appendChild(s('text', { x: left + hr * (cell + gap) + cell / 2, y: 11, 'text-anchor': 'middle' }, String(hr)));
  }
  for (let w = 0; w < 7; w++) {
    const y = top + w * (cell + gap);
    svg.appendChild(s('text', { x: left - 6, y: y + cell / 2 + 4, 'text-anchor': 'end' }, days[w]));
    for (let hr = 0; hr < 24; hr++) {
      const v = cells[w][hr];
      const level = v <= 0 || max <= 0 ? 0 : Math.min(4, 1 + Math.floor((v / max) * 3.999));
      svg.appendChild(s('rect', {
        x: left + hr * (cell + gap), y, width: cell, height: cell, rx: 3, class: 'hm-' + level,
        'data-weekday': w, 'data-hour': hr, 'data-value': v,
      }, s('title', null, title(days[w], hr, v))));
    }
  }
  return svg;
}

/**
 * Stacked bars. labels: x labels; series: [{name, values: number[]}] (index = colour class sN).
 * title(label, name, value) → tooltip text.
 */
export function stackedBars(labels, series, { label, title }) {
  const width = 640;
  const height = 220;
  const left = 44;
  const bottom = 22;
  const top = 8;
  const plotH = height - bottom - top;
  const n = Math.max(1, labels.length);
  const slot = (width - left - 4) / n;
  const barW = Math.max(1, slot * 0.72);
  const totals = labels.map((_, i) => series.reduce((a, se) => a + (se.values[i] || 0), 0));
  const max = Math.max(1, ...totals);
  const svg = s('svg', { viewBox: '0 0 ' + width + ' ' + height, role: 'img', 'aria-label': label, preserveAspectRatio: 'xMinYMin meet' });
  for (const f of [0, 0.5, 1]) {
    const y = top + plotH - f * plotH;
    svg.appendChild(s('line', { x1: left, x2: width, y1: y, y2: y, class: 'grid' }));
    svg.appendChild(s('text', { x: left - 4, y: y + 3, 'text-anchor': 'end' }, compact(max * f)));
  }
  const every = Math.ceil(n / 12);
  labels.forEach((lab, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    let y = top + plotH;
    series.forEach((se, si) => {
      const v = se.values[i] || 0;
      if (v <= 0) return;
      const bh = (v / max) * plotH;
      y -= bh;
      svg.appendChild(s('rect', { x, y, width: barW, height: Math.max(bh, 0.5), class: 's' + (se.cls ?? si) },
        s('title', null, title(lab, se.name, v))));
    });
    if (i % every === 0) {
      svg.appendChild(s('text', { x: x + barW / 2, y: height - 6, 'text-anchor': 'middle' }, lab));
    }
  });
  return svg;
}

/** Legend list for stacked bars. */
export function legend(series) {
  return h('ul', { class: 'legend' }, series.map((se, si) => h('li', null,
    h('span', { class: 'swatch', 'aria-hidden': 'true' },
      s('svg', { viewBox: '0 0 10 10', focusable: 'false' }, s('rect', { width: 10, height: 10, class: 's' + (se.cls ?? si) }))),
    se.name)));
}

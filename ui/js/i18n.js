// Flat dictionaries with the same keys in every language; t(key, vars) fills {name} as text.
import en from './i18n/en.js';
import zhCN from './i18n/zh-CN.js';

const DICTS = { en, 'zh-CN': zhCN };
const STORE = 'droid2api.lang';
let lang = 'en';

function firstVisit() {
  const list = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'en'];
  return /^zh/i.test(list[0] || '') ? 'zh-CN' : 'en';
}

export function initLang() {
  let saved = null;
  try { saved = localStorage.getItem(STORE); } catch (_) { /* storage off */ }
  lang = saved && DICTS[saved] ? saved : firstVisit();
  document.documentElement.lang = lang;
  return lang;
}

export function getLang() {
  return lang;
}

export function setLang(next) {
  if (!DICTS[next]) return;
  lang = next;
  try { localStorage.setItem(STORE, next); } catch (_) { /* storage off */ }
  document.documentElement.lang = lang;
}

export function toggleLang() {
  setLang(lang === 'en' ? 'zh-CN' : 'en');
  return lang;
}

export function t(key, vars) {
  const d = DICTS[lang];
  let str = Object.prototype.hasOwnProperty.call(d, key) ? d[key] : key;
  if (vars) {
    str = str.replace(/\{(\w+)\}/g, (m, name) => (
      Object.prototype.hasOwnProperty.call(vars, name) ? String(vars[name]) : m));
  }
  return str;
}

/** Fills every [data-i18n] element of root with its text, [data-i18n-label] with aria-label. */
export function applyI18n(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll('[data-i18n-label]')) el.setAttribute('aria-label', t(el.dataset.i18nLabel));
}

// Numbers and dates through Intl, in the chosen language.
export function fmtInt(n) {
  if (n === undefined || n === null || Number.isNaN(Number(n))) return t('common.none');
  return new Intl.NumberFormat(lang).format(Number(n));
}

export function fmtPct(ratio) {
  if (ratio === undefined || ratio === null || Number.isNaN(Number(ratio))) return t('common.none');
  return new Intl.NumberFormat(lang, { style: 'percent', maximumFractionDigits: 1 }).format(Number(ratio));
}

export function fmtDate(iso) {
  if (!iso) return t('common.never');
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'short' }).format(d);
}

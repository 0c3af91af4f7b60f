// Builds DOM nodes without any HTML parsing: text goes through text nodes, attributes through
// an allow-list (no event handler attributes, no style attribute, no script URLs).

const SVG_NS = 'http://www.w3.org/2000/svg';

const ATTRS = new Set([
  'id', 'class', 'type', 'name', 'value', 'placeholder', 'for', 'href', 'download', 'role',
  'tabindex', 'title', 'lang', 'min', 'max', 'step', 'rows', 'cols', 'accept', 'autocomplete',
  'required', 'disabled', 'checked', 'selected', 'hidden', 'multiple', 'maxlength', 'minlength',
  'scope', 'colspan', 'rowspan', 'method', 'open', 'datetime', 'spellcheck', 'inputmode',
  'readonly', 'rel', 'size', 'wrap', 'novalidate', 'autocapitalize', 'pattern',
  // SVG
  'viewBox', 'width', 'height', 'x', 'y', 'rx', 'ry', 'd', 'x1', 'x2', 'y1', 'y2', 'cx', 'cy', 'r',
  'text-anchor', 'dominant-baseline', 'transform', 'preserveAspectRatio', 'focusable',
]);

// Same-origin relative links only: "#…", "?…" or "/…" (never "//host").
function safeHref(v) {
  const s = String(v);
  if (s.startsWith('#') || s.startsWith('?')) return s;
  if (s.startsWith('/') && !s.startsWith('//')) return s;
  return null;
}

function setAttr(el, name, value) {
  if (value === undefined || value === null || value === false) return;
  if (name.startsWith('on') || name === 'style') throw new Error('attribute not allowed: ' + name);
  if (!(ATTRS.has(name) || name.startsWith('aria-') || name.startsWith('data-'))) {
    throw new Error('attribute not allowed: ' + name);
  }
  let v = value === true ? '' : String(value);
  if (name === 'href') {
    v = safeHref(v);
    if (v === null) throw new Error('href not allowed');
  }
  el.setAttribute(name, v);
}

function append(el, child) {
  if (child === undefined || child === null || child === false) return;
  if (Array.isArray(child)) {
    for (const c of child) append(el, c);
  } else if (child instanceof Node) {
    el.appendChild(child);
  } else {
    el.appendChild(document.createTextNode(String(child)));
  }
}

function build(el, attrs, children) {
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'on') {
        for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
      } else if (k === 'text') {
        el.textContent = v === undefined || v === null ? '' : String(v);
      } else if (k === 'prop') {
        // DOM properties (value, checked, …); no property whose name mentions HTML.
        for (const [p, pv] of Object.entries(v)) {
          if (/html/i.test(p)) throw new Error('property not allowed: ' + p);
          el[p] = pv;
        }
      } else {
        setAttr(el, k, v);
      }
    }
  }
  append(el, children);
  return el;
}

/** h('button', {type: 'button', 'data-testid': 'x', on: {click}}, 'label', child, …) */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** SVG element, same rules as h(). */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Removes every child of el. */
export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

/** Replaces el's children with the given ones. */
export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

export function $(sel, root = document) {
  return root.querySelector(sel);
}

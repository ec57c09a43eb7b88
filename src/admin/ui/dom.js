// DOM helpers and formatting. Data always goes into the page as text
// (textContent / attribute values through the DOM API), never as markup.

const SVG_NS = 'http://www.w3.org/2000/svg';

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', Array.isArray(v) ? v.filter(Boolean).join(' ') : v);
    else if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

/** An HTML element: h('a', {href: '#/x', class: 'c'}, 'text', child). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function badge(status) {
  return h('span', { class: `badge badge-${status || 'unknown'}` }, status || 'unknown');
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return '–';
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(2)} s`;
  return `${(ms / 60000).toFixed(1)} min`;
}

export function fmtNum(n) {
  if (n === null || n === undefined) return '–';
  return Number(n).toLocaleString('en-US');
}

export function fmtCompact(n) {
  if (n === null || n === undefined) return '–';
  const a = Math.abs(n);
  if (a >= 1e9) return `${(n / 1e9).toFixed(1)}B`;
  if (a >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (a >= 1e4) return `${(n / 1e3).toFixed(1)}k`;
  return fmtNum(Math.round(n * 100) / 100);
}

/** `$0.0012`; `–` when unknown; a trailing `+` when a lower bound. */
export function fmtCost(usd, incomplete) {
  if (usd === null || usd === undefined) return incomplete ? 'unpriced' : '–';
  let t;
  if (usd === 0) t = '$0';
  else if (usd < 0.01) t = `$${usd.toPrecision(2)}`;
  else t = `$${usd.toFixed(usd < 10 ? 4 : 2)}`;
  return incomplete ? `${t}+` : t;
}

/** Tokens with a `≈` when estimated. */
export function fmtTokens(n, estimated) {
  if (n === null || n === undefined) return '–';
  return estimated ? `≈${fmtNum(n)}` : fmtNum(n);
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** Local `YYYY-MM-DD HH:MM:SS` of microseconds since the epoch. */
export function fmtTime(us) {
  if (us === null || us === undefined) return '–';
  const d = new Date(us / 1000);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** Short relative time ("5 s ago"). */
export function fmtAgo(us, nowUs = Date.now() * 1000) {
  const s = Math.max(0, (nowUs - us) / 1e6);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

/** JSON text pretty-printed, or the text as is when it is not JSON. */
export function pretty(text) {
  if (text === null || text === undefined) return '';
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

export function errorBox(err) {
  const msg = err && err.message ? err.message : String(err);
  return h('div', { class: 'error-box', role: 'alert' }, msg);
}

// The app shell: hash routing (#/traces?…, #/trace/ID, #/span/ID,
// #/dashboard?…), the token form, and the page lifecycle (each page's
// render returns a cleanup that stops its timers and requests).

import { ApiError, setToken, token } from './api.js';
import { errorBox, fill, h } from './dom.js';
import * as traces from './traces.js';
import * as trace from './trace.js';
import * as span from './span.js';
import * as dashboard from './dashboard.js';

const main = document.getElementById('main');
const tokenForm = document.getElementById('token-form');
const tokenInput = document.getElementById('token-input');
const tokenButton = document.getElementById('token-button');

let cleanup = null;
let generation = 0;

/** The route of the current hash: {page, id, params}. */
export function route() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, q = ''] = raw.split(/\?(.*)/s, 2);
  const params = new URLSearchParams(q);
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'trace' && parts[1]) return { page: 'trace', id: parts[1], params };
  if (parts[0] === 'span' && parts[1]) return { page: 'span', id: parts[1], params };
  if (parts[0] === 'dashboard') return { page: 'dashboard', params };
  return { page: 'traces', params };
}

const PAGES = { traces, trace, span, dashboard };
const TITLES = { traces: 'Traces', trace: 'Trace', span: 'Span', dashboard: 'Dashboard' };

function showTokenForm(message) {
  tokenForm.hidden = false;
  tokenButton.setAttribute('aria-expanded', 'true');
  if (message) tokenInput.setAttribute('placeholder', message);
  tokenInput.focus();
}

/** What a page shows when its request failed. */
export function failed(el, err) {
  if (err instanceof ApiError && err.status === 401) {
    fill(
      el,
      h('div', { class: 'error-box', role: 'alert' },
        'This llmtap asks for an admin token. ',
        h('button', { type: 'button', onclick: () => showTokenForm('Paste the admin token') }, 'Enter token')),
    );
    showTokenForm('Paste the admin token');
    return;
  }
  fill(el, errorBox(err));
}

function render() {
  if (cleanup) {
    try {
      cleanup();
    } catch {
      // A page's cleanup must not stop the next page.
    }
    cleanup = null;
  }
  const r = route();
  generation += 1;
  const mine = generation;
  document.title = `${TITLES[r.page]} · llmtap`;
  for (const a of document.querySelectorAll('[data-nav]')) {
    const here = a.dataset.nav === r.page || (a.dataset.nav === 'traces' && r.page !== 'dashboard');
    if (here) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  const view = h('div', { class: `page page-${r.page}` });
  fill(main, view);
  const ctx = { failed, alive: () => mine === generation };
  const result = PAGES[r.page].render(view, r, ctx);
  cleanup = typeof result === 'function' ? result : null;
}

tokenButton.addEventListener('click', () => {
  if (tokenForm.hidden) showTokenForm();
  else {
    tokenForm.hidden = true;
    tokenButton.setAttribute('aria-expanded', 'false');
  }
});
tokenForm.addEventListener('submit', (e) => {
  e.preventDefault();
  setToken(tokenInput.value.trim());
  tokenInput.value = '';
  tokenForm.hidden = true;
  tokenButton.textContent = token() ? 'Admin token ✓' : 'Admin token';
  render();
});
document.getElementById('token-clear').addEventListener('click', () => {
  setToken('');
  tokenInput.value = '';
  tokenButton.textContent = 'Admin token';
  render();
});
tokenButton.textContent = token() ? 'Admin token ✓' : 'Admin token';

window.addEventListener('hashchange', render);
if (!location.hash) history.replaceState(null, '', '#/traces');
render();

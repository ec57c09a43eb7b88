// The query API client: GET /api/... with the admin token (kept in
// sessionStorage, sent as `Authorization: Bearer`), errors as ApiError.

const KEY = 'llmtap.adminToken';

export function token() {
  try {
    return sessionStorage.getItem(KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(t) {
  try {
    if (t) sessionStorage.setItem(KEY, t);
    else sessionStorage.removeItem(KEY);
  } catch {
    // Storage disabled: the token lasts as long as nothing.
  }
}

export class ApiError extends Error {
  constructor(status, message, param) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

function headers() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

async function check(res) {
  if (res.ok) return res;
  let message = `${res.status} ${res.statusText}`;
  let param = null;
  try {
    const body = await res.json();
    if (body && body.error) {
      message = body.error.message || message;
      param = body.error.param || null;
    }
  } catch {
    // Not JSON: keep the status line.
  }
  throw new ApiError(res.status, message, param);
}

/** GET `path` (with its query) and parse the JSON answer. */
export async function get(path, signal) {
  const res = await fetch(path, { headers: headers(), signal, cache: 'no-store' });
  await check(res);
  return res.json();
}

/** Query string of the entries of `params` with a non-empty value. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of params) if (v !== '' && v !== null && v !== undefined) q.append(k, v);
  const t = q.toString();
  return t ? `?${t}` : '';
}

/**
 * Downloads `path` as `filename`. Without a token the browser streams it
 * straight to disk; with one it must be fetched (a link cannot carry the
 * header) and handed over as a blob.
 */
export async function download(path, filename) {
  const a = document.createElement('a');
  a.download = filename;
  a.hidden = true;
  if (!token()) {
    a.href = path;
    document.body.appendChild(a);
    a.click();
    a.remove();
    return;
  }
  const res = await check(await fetch(path, { headers: headers(), cache: 'no-store' }));
  const url = URL.createObjectURL(await res.blob());
  a.href = url;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

// @ts-check
/**
 * What every page shares: the signed-in session, the top bar, messages people can
 * understand, and a tiny DOM builder. The protocols live in the client library
 * (/sdk/streamcore.js); this file only presents.
 */
import { Session, StreamCoreError } from '/sdk/streamcore.js';

/**
 * Builds an element: `h('button', {class: 'x', onclick: f}, 'text', child)`.
 * @param {string} tag
 * @param {Record<string, any>|null} [props]
 * @param {...(Node|string|number|null|undefined|false)} children
 * @returns {HTMLElement}
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'class') {
      el.className = String(v);
    } else if (k === 'text') {
      el.textContent = String(v);
    } else if (k in el && typeof v !== 'string') {
      /** @type {any} */ (el)[k] = v;
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' || typeof c === 'number' ? String(c) : c);
  }
  return el;
}

/**
 * The element with `id`, typed.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new (...a: any[]) => T} [type]
 * @returns {T}
 */
export function $(id, type) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`no #${id} on this page`);
  if (type && !(el instanceof type)) throw new Error(`#${id} is not a ${type.name}`);
  return /** @type {T} */ (el);
}

/** The `localStorage` key of where to go once a sign-up link is opened. */
export const AFTER_SIGN_UP = 'streamcore.afterSignUp';

/** Error codes as a person should read them. */
export const MESSAGES = /** @type {Record<string, string>} */ ({
  invalid_credentials: 'That email and password do not match an account.',
  email_taken: 'An account with this email exists already. Sign in, or reset the password.',
  rate_limited: 'Too many attempts. Wait a minute, then try again.',
  invalid_pairing_code:
    'This pairing code is unknown, used or expired. On your computer, open StreamCore → Devices → Pair a phone for a new code.',
  pairing_code_void:
    'Someone tried many wrong codes, so this one was switched off for safety. Press “Pair a phone” for a new code.',
  invalid_reset_token: 'This reset link has expired or was already used. Ask for a new one.',
  invalid_signup_token: 'This sign-up link is unknown, used or expired. Sign up again for a new one.',
  invalid_refresh_token: 'Your session has ended. Sign in again.',
  refresh_token_reused: 'Your session was ended for safety (it was used twice). Sign in again.',
  token_expired: 'Your session has expired. Sign in again.',
  refresh_token_expired: 'Your session has expired. Sign in again.',
  session_ended: 'Your session has ended. Sign in again.',
  no_session: 'Sign in to continue.',
  device_offline: 'The phone is offline. Open the StreamCore page on the phone and keep it open.',
  node_full: 'The server is full right now. Try again in a moment.',
  draining: 'The server is restarting. Try again in a moment.',
  media_unavailable: 'The media server is unavailable. Try again in a moment.',
  network: 'Cannot reach the server. Check your connection.',
  room_full: 'This room is full.',
  room_exists: 'A room with this name exists already (it may be someone else’s). Pick another name.',
  not_found: 'Not found — it may have been removed.',
  forbidden: 'You are not allowed to do that.',
  too_large: 'The file is too large for this server.',
  unsupported_type: 'This is not an audio file StreamCore can read (FLAC, WAV, MP3, AAC/M4A, Ogg, WebM).',
  not_uploaded: 'The recording is still being stored; wait until it shows “stored”.',
  already_recording: 'This room is being recorded already.',
  not_recording: 'This recording has stopped already.',
  storage_unavailable: 'The storage is unavailable right now. Try again shortly.',
  invalid_verification_token: 'This confirmation link is unknown, used or expired. Ask for a new mail on the devices page.',
  already_verified: 'Your email address is confirmed already.',
  email_unverified: 'Confirm your email address first: open the link in the mail we sent you (or send it again from the devices page).',
  token_revoked: 'Who may join this room changed. Reload the page to join again if you are still invited.',
  too_many_sessions: 'This stream is open in too many places with the same pass. Close one of them, or reload this page.',
  not_shared_by_link: 'Choose “Anyone signed in with the link” first.',
});

/**
 * A sentence for a failure: the server's code, a browser's media error, or else its
 * own message.
 * @param {unknown} e
 * @returns {string}
 */
export function explain(e) {
  if (e instanceof StreamCoreError) {
    if (e.code === 'invalid_field' || e.code === 'invalid_body') return e.message;
    return MESSAGES[e.code] ?? e.message;
  }
  if (e instanceof DOMException || (e instanceof Error && /Error$/.test(e.name))) {
    switch (e.name) {
      case 'NotAllowedError':
        return 'Access to the microphone or camera was denied. Allow it in the browser’s site settings (the icon left of the address), then try again.';
      case 'NotFoundError':
        return 'No microphone or camera was found on this device.';
      case 'NotReadableError':
        return 'The microphone or camera is in use by another app.';
      case 'OverconstrainedError':
        return 'The camera cannot do what was asked; try another one.';
      case 'SecurityError':
        return 'This page needs a secure connection (HTTPS) to use the microphone or camera.';
      case 'TypeError':
        return e.message.includes('fetch') ? MESSAGES.network : e.message;
      default:
        return e.message || String(e);
    }
  }
  return String(e);
}

/**
 * Shows a message in `box` (an element with `role="alert"` or `aria-live`).
 * @param {HTMLElement} box
 * @param {string} text empty hides it
 * @param {'error'|'info'|'ok'} [kind]
 */
export function say(box, text, kind = 'error') {
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

/**
 * The page's controls take input. Every page's `<main>` starts `inert` (no clicks, no
 * focus, no submits) until its script has wired them: a click before that would be
 * lost, and a form submitted before would go the browser's default way, its fields
 * (a password) in the address. Pages call this once wired, on failure too.
 */
export function pageReady() {
  const main = document.getElementById('main');
  main?.removeAttribute('inert');
  main?.removeAttribute('aria-busy');
}

/** The page is being rewired (a phone page after pairing): input waits for {@link pageReady}. */
export function pageLoading() {
  const main = document.getElementById('main');
  main?.setAttribute('inert', '');
  main?.setAttribute('aria-busy', 'true');
}

/**
 * A page whose script failed before it was ready says so, above its (still inert)
 * content: half-wired controls would lose what a person does with them.
 * @param {unknown} e
 */
function loadFailed(e) {
  const main = document.getElementById('main');
  if (!main?.hasAttribute('inert') || document.getElementById('load-failed')) return;
  console.error('the page failed to load', e);
  main.removeAttribute('aria-busy');
  main.before(
    h(
      'div',
      { id: 'load-failed', class: 'message error banner', role: 'alert' },
      `This page could not load: ${explain(e)} `,
      h('a', { href: location.href }, 'Reload'),
    ),
  );
}
// A module's top-level await that rejects is reported as an error; a promise no one
// awaited, as an unhandled rejection.
window.addEventListener('error', (e) => loadFailed(e.error ?? e.message));
window.addEventListener('unhandledrejection', (e) => loadFailed(e.reason));

/**
 * Runs `f` with `button` disabled, showing a failure in `box`.
 * @template T
 * @param {HTMLButtonElement|null} button
 * @param {HTMLElement} box
 * @param {() => Promise<T>} f
 * @returns {Promise<T|undefined>}
 */
export async function busy(button, box, f) {
  if (button) button.disabled = true;
  say(box, '');
  try {
    return await f();
  } catch (e) {
    say(box, explain(e));
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/**
 * The camera and microphone (and screen), or a clear error when the page's address is
 * not secure: browsers hide them from `http://` pages other than `localhost`.
 * @returns {MediaDevices}
 */
export function mediaDevices() {
  if (!window.isSecureContext || !navigator.mediaDevices) {
    throw new StreamCoreError(
      'insecure_origin',
      `The microphone and camera need a secure address, and ${location.origin} is not one. Open this server’s https:// address (start it with --tls self-signed; see its README).`,
    );
  }
  return navigator.mediaDevices;
}

/**
 * Where the page uses a URL a join token handed out (`whip_url`, `whep_url`,
 * `rtc_url`). When the room lives on the server that answered (`grant.local`), on the
 * page's own origin: the page may have been opened under another name of the same
 * node (a LAN address) than the one the node calls itself, and its policy allows
 * connections to its own origin. Else as given: the room lives on another node of
 * the cluster, whose origin the page's policy allows too.
 * @param {{local?: boolean}} grant
 * @param {string} url
 */
export function here(grant, url) {
  if (grant.local === false) return url;
  const u = new URL(url, location.href);
  if (u.protocol === 'ws:' || u.protocol === 'wss:') {
    return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}${u.pathname}${u.search}`;
  }
  return u.pathname + u.search;
}

/**
 * Shows a connection's quality in a badge: level, round trip, loss.
 * @param {HTMLElement} badge
 * @param {import('/sdk/streamcore.js').QualityReport} q
 */
export function showQuality(badge, q) {
  badge.hidden = false;
  badge.textContent = `${q.level}${q.rttMs !== null ? ` · ${q.rttMs} ms` : ''}${q.lossPercent ? ` · ${q.lossPercent}% lost` : ''}`;
  badge.className = `badge ${q.level}`;
  badge.setAttribute('data-level', q.level);
}

/** A transcode job's stage as a person reads it. @param {string|null|undefined} stage */
export function stageText(stage) {
  const words = /** @type {Record<string, string>} */ ({
    fetch: 'fetching',
    decode: 'decoding',
    resample: 'resampling',
    normalise: 'levelling the loudness',
    encode: 'encoding',
    waveform: 'drawing the waveform',
    mix: 'mixing',
    upload: 'storing',
    done: 'finishing',
  });
  return stage ? words[stage] ?? stage : 'working';
}

/** @param {number|null|undefined} ms */
export function clock(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return '0:00';
  const s = Math.floor(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

/**
 * `h:mm:ss` or `m:ss` (minutes may pass 59 without hours) as milliseconds; `null` if it
 * is not such a time.
 * @param {string} text
 * @returns {number|null}
 */
export function parseTime(text) {
  const m = /^\s*(?:(\d+):)?(\d+):(\d\d)\s*$/.exec(text);
  if (!m) return null;
  const hours = Number(m[1] ?? 0);
  const minutes = Number(m[2]);
  const seconds = Number(m[3]);
  if (seconds > 59 || (m[1] !== undefined && minutes > 59)) return null;
  return ((hours * 60 + minutes) * 60 + seconds) * 1000;
}

/** @param {number|null|undefined} ms unix milliseconds */
export function when(ms) {
  if (!ms) return '';
  return new Date(ms).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });
}

/** @param {number} n */
export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** The page's query parameters. */
export function query() {
  return new URLSearchParams(location.search);
}

const NAV = [
  ['/', 'Devices'],
  ['/listen', 'Listen'],
  ['/room', 'Rooms'],
  ['/recordings', 'Recordings'],
  ['/uploads', 'Uploads'],
  ['/history', 'History'],
  ['/podcasts', 'Podcasts'],
];

/**
 * The top bar of a signed-in page.
 * @param {Session} session
 * @param {{email: string, display_name: string, role?: string}} me
 */
export function topBar(session, me) {
  const header = $('top');
  header.className = 'top';
  header.replaceChildren(
    h('a', { class: 'brand', href: '/' }, 'StreamCore'),
    h(
      'nav',
      { 'aria-label': 'Main' },
      ...[...NAV, ...(me.role === 'admin' ? [['/servers', 'Servers']] : [])].map(([href, label]) =>
        h('a', { href, 'aria-current': location.pathname === href ? 'page' : undefined }, label),
      ),
    ),
    h(
      'div',
      { class: 'who' },
      h('span', { text: me.display_name || me.email }),
      h(
        'button',
        {
          type: 'button',
          class: 'secondary',
          onclick: async () => {
            await session.logout().catch(() => {});
            location.href = '/';
          },
        },
        'Sign out',
      ),
    ),
  );
}

/**
 * The signed-in user's session, or a trip to the sign-in page (which comes back here).
 * When the session ends while the page is open, the page says so.
 * @returns {Promise<{session: Session, me: any}>}
 */
export async function signedIn() {
  const back = encodeURIComponent(location.pathname + location.search);
  let session;
  try {
    session = await Session.restore({ kind: 'user' });
  } catch (e) {
    if (!(e instanceof StreamCoreError && e.status === 401)) throw e;
    // The session ended while the person was away: the sign-in page says so.
    location.href = `/?next=${back}&ended=${encodeURIComponent(e.code)}`;
    return new Promise(() => {});
  }
  if (!session) {
    location.href = `/?next=${back}`;
    // Never resolves: the page is being left.
    return new Promise(() => {});
  }
  const me = await session.get('/me');
  topBar(session, me);
  session.on('ended', (e) => {
    const banner = h(
      'div',
      { class: 'message error banner', role: 'alert' },
      MESSAGES[e.code] ?? 'Your session has ended. ',
      ' ',
      h('a', { href: `/?next=${encodeURIComponent(location.pathname + location.search)}` }, 'Sign in again'),
    );
    document.querySelector('main')?.prepend(banner);
  });
  return { session, me };
}

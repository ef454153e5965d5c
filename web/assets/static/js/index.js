// @ts-check
/**
 * `/`: sign in, create an account, ask for a reset link; once signed in, the devices
 * (live online state from the user socket), renaming, removing, and pairing a phone.
 */
import { Session, UserSocket } from '/sdk/streamcore.js';
import { $, AFTER_SIGN_UP, MESSAGES, busy, explain, h, pageReady, query, say, topBar, when } from '/static/js/app.js';

const authBox = $('auth-message');

/** Where to go after signing in: a page of this site only (never another origin). */
function next() {
  const n = query().get('next');
  if (!n) return null;
  try {
    const u = new URL(n, location.origin);
    return u.origin === location.origin ? u.pathname + u.search : null;
  } catch {
    return null;
  }
}

/** @param {string} which */
function showTab(which) {
  for (const id of ['signin', 'signup', 'forgot']) {
    $(`tab-${id}`).setAttribute('aria-selected', String(id === which));
    $(id).hidden = id !== which;
  }
  say(authBox, '');
  $(which).querySelector('input')?.focus();
}

function signedOut() {
  $('welcome').hidden = false;
  const ended = query().get('ended');
  if (ended) say(authBox, MESSAGES[ended] ?? MESSAGES.session_ended);
  else if (next()) say(authBox, 'Sign in to continue.', 'info');
  for (const id of ['signin', 'signup', 'forgot']) {
    $(`tab-${id}`).addEventListener('click', () => showTab(id));
  }
  const signin = $('signin', HTMLFormElement);
  signin.addEventListener('submit', (e) => {
    e.preventDefault();
    const f = new FormData(signin);
    busy(signin.querySelector('button'), authBox, async () => {
      await Session.login({ email: String(f.get('email')), password: String(f.get('password')) });
      location.href = next() ?? '/';
    });
  });
  const signup = $('signup', HTMLFormElement);
  signup.addEventListener('submit', (e) => {
    e.preventDefault();
    const f = new FormData(signup);
    busy(signup.querySelector('button'), authBox, async () => {
      const email = String(f.get('email'));
      await Session.register({ email, displayName: String(f.get('display_name') ?? '') });
      // Where to go once the link is opened (in this browser), e.g. a room's share link.
      const then = next();
      if (then) localStorage.setItem(AFTER_SIGN_UP, then);
      else localStorage.removeItem(AFTER_SIGN_UP);
      signup.reset();
      say(
        authBox,
        `Check your mail: we sent ${email} a link to finish signing up (if the address has an account already, a note saying so). (Without mail set up on this server, the administrator can read it for you.)`,
        'ok',
      );
    });
  });
  const forgot = $('forgot', HTMLFormElement);
  forgot.addEventListener('submit', (e) => {
    e.preventDefault();
    const f = new FormData(forgot);
    busy(forgot.querySelector('button'), authBox, async () => {
      await Session.forgotPassword(String(f.get('email')));
      say(
        authBox,
        'If this address has an account, a reset link is on its way. (Without mail set up on this server, the administrator can read it for you.)',
        'ok',
      );
    });
  });
}

/**
 * @typedef {{id: string, name: string, kind: string, online: boolean, capabilities: {mic?: boolean, camera?: boolean, screen?: boolean}, last_seen: number|null}} Device
 */

/**
 * @param {Session} session
 */
async function devicesPage(session) {
  const me = await session.get('/me');
  topBar(session, me);
  if (!me.email_verified) {
    $('verify-banner').hidden = false;
    const resend = $('resend-verification', HTMLButtonElement);
    resend.addEventListener('click', () =>
      busy(resend, $('verify-sent'), async () => {
        await session.post('/auth/email/resend');
        say($('verify-sent'), `A new mail is on its way to ${me.email}. Open its link to confirm the address.`, 'ok');
      }),
    );
  }
  $('devices-panel').hidden = false;
  const box = $('devices-message');
  const list = $('devices');
  /** @type {Map<string, Device>} */
  const devices = new Map();
  /** A pairing waiting for its phone. @type {{id: string, expires_at: number}|null} */
  let pairing = null;

  const render = () => {
    const items = [...devices.values()].sort((a, b) => a.name.localeCompare(b.name));
    $('no-devices').hidden = items.length > 0;
    list.replaceChildren(...items.map(item));
  };

  /** @param {Device} d */
  const item = (d) => {
    const caps = Object.entries(d.capabilities ?? {})
      .filter(([, v]) => v)
      .map(([k]) => (k === 'mic' ? 'microphone' : k))
      .join(', ');
    const li = h(
      'li',
      { 'data-device': d.id },
      h(
        'div',
        { class: 'grow' },
        h('strong', { class: 'device-name' }, d.name),
        ' ',
        h('span', { class: 'muted small' }, d.kind),
        h('div', { class: 'small muted' }, caps ? `Can use: ${caps}` : 'No microphone or camera reported', d.last_seen ? ` · seen ${when(d.last_seen)}` : ''),
      ),
      h('span', { class: `badge ${d.online ? 'online' : 'offline'}`, 'data-online': String(d.online) }, d.online ? 'online' : 'offline'),
      h('a', { class: 'button secondary', href: `/listen?device=${encodeURIComponent(d.id)}` }, 'Listen'),
      h('button', { type: 'button', class: 'secondary', onclick: () => rename(li, d) }, 'Rename'),
      h('button', { type: 'button', class: 'secondary', onclick: () => confirmRemove(li, d) }, 'Remove'),
    );
    return li;
  };

  /**
   * @param {HTMLElement} li
   * @param {Device} d
   */
  const rename = (li, d) => {
    const input = h('input', { type: 'text', value: d.name, maxlength: 100, 'aria-label': `New name for ${d.name}`, required: true });
    const form = h(
      'form',
      { class: 'row grow' },
      input,
      h('button', { type: 'submit' }, 'Save'),
      h('button', { type: 'button', class: 'secondary', onclick: render }, 'Cancel'),
    );
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      busy(null, box, async () => {
        const v = await session.patch(`/devices/${encodeURIComponent(d.id)}`, {
          name: /** @type {HTMLInputElement} */ (input).value,
        });
        devices.set(d.id, v);
        render();
      });
    });
    li.replaceChildren(form);
    input.focus();
  };

  /**
   * @param {HTMLElement} li
   * @param {Device} d
   */
  const confirmRemove = (li, d) => {
    const yes = h('button', { type: 'button', class: 'danger' }, `Yes, remove ${d.name}`);
    yes.addEventListener('click', () =>
      busy(/** @type {HTMLButtonElement} */ (yes), box, async () => {
        await session.delete(`/devices/${encodeURIComponent(d.id)}`);
        devices.delete(d.id);
        render();
        say(box, `${d.name} was removed. It can no longer sign in; pair it again to use it.`, 'ok');
      }),
    );
    li.replaceChildren(
      h('div', { class: 'grow' }, `Remove ${d.name}? Its library goes too, and it is signed out.`),
      yes,
      h('button', { type: 'button', class: 'secondary', onclick: render }, 'Cancel'),
    );
    yes.focus();
  };

  for (const d of await session.get('/devices')) devices.set(d.id, d);
  render();

  const socket = new UserSocket(session);
  socket.on('snapshot', (s) => {
    devices.clear();
    for (const d of s.devices) devices.set(d.id, d);
    render();
  });
  socket.on('deviceStatus', (e) => {
    const d = e.data;
    const known = devices.get(d.device_id);
    devices.set(d.device_id, {
      id: d.device_id,
      name: d.name,
      kind: d.kind,
      online: d.online,
      capabilities: d.capabilities,
      last_seen: d.last_seen ?? known?.last_seen ?? null,
    });
    render();
    if (pairing) checkPairing();
  });
  socket.open();

  // ---- pairing ----
  /** @type {ReturnType<typeof setInterval>|null} */
  let countdown = null;
  const status = $('pair-status');
  const checkPairing = async () => {
    if (!pairing) return;
    const p = await session.get(`/pairings/${encodeURIComponent(pairing.id)}`).catch(() => null);
    if (p?.status === 'claimed') {
      pairing = null;
      if (countdown) clearInterval(countdown);
      say(status, `Paired: ${p.device?.name ?? 'your phone'}. It shows up in your devices.`, 'ok');
      if (p.device) devices.set(p.device.id, p.device);
      render();
    } else if (p?.status === 'void') {
      pairing = null;
      if (countdown) clearInterval(countdown);
      say(status, MESSAGES.pairing_code_void, 'error');
    }
  };
  $('pair').addEventListener('click', () =>
    busy(/** @type {HTMLButtonElement} */ ($('pair')), box, async () => {
      const p = await session.post('/pairings');
      pairing = { id: p.id, expires_at: p.expires_at };
      $('pairing').hidden = false;
      $('pair-code').textContent = `${p.code.slice(0, 4)} ${p.code.slice(4)}`;
      $('pair-origin').textContent = new URL(p.url).origin;
      /** @type {HTMLAnchorElement} */ ($('pair-link')).href = p.url;
      /** @type {HTMLImageElement} */ ($('pair-qr')).src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(p.qr_svg)}`;
      say(status, 'Waiting for the phone…', 'info');
      const tick = () => {
        const left = Math.max(0, (pairing?.expires_at ?? 0) - Date.now());
        $('pair-left').textContent = `${Math.floor(left / 60000)}:${String(Math.floor((left % 60000) / 1000)).padStart(2, '0')}`;
        if (pairing && left <= 0) {
          pairing = null;
          say(status, 'The code expired. Press “Pair a phone” for a new one.', 'error');
          if (countdown) clearInterval(countdown);
        }
      };
      if (countdown) clearInterval(countdown);
      countdown = setInterval(tick, 1000);
      tick();
      $('pairing').scrollIntoView({ behavior: 'smooth' });
    }),
  );
}

async function main() {
  let session;
  try {
    session = await Session.restore({ kind: 'user' });
  } catch (e) {
    signedOut();
    say(authBox, explain(e));
    return;
  }
  if (!session) {
    signedOut();
    return;
  }
  const n = next();
  if (n) {
    location.href = n;
    return;
  }
  await devicesPage(session).catch((e) => say($('devices-message'), explain(e)));
}

main().finally(pageReady);

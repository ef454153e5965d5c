// @ts-check
/**
 * `/`: sign in (with a password or a sign-in provider), create an account, ask for a
 * reset link; once signed in, the account (its sign-in providers: linked ones to
 * unlink, others to link), the devices (live online state from the user socket),
 * renaming, removing, and pairing a phone.
 */
import { Session, StreamCoreError, UserSocket } from '/sdk/streamcore.js';
import { $, AFTER_SIGN_UP, MESSAGES, busy, explain, h, pageReady, query, say, topBar, when } from '/static/js/app.js';

const authBox = $('auth-message');

/** The `sessionStorage` key of the provider this tab went to sign in with (its name). */
const PROVIDER_TRIED = 'streamcore.providerTried';

/**
 * Remembers (a name) or forgets (null) the provider this tab goes to; a browser that
 * keeps no storage for the page only loses the name in the messages.
 * @param {string|null} name
 */
function rememberProvider(name) {
  try {
    if (name) sessionStorage.setItem(PROVIDER_TRIED, name);
    else sessionStorage.removeItem(PROVIDER_TRIED);
  } catch {
    // Storage refused: the messages say “the sign-in provider”.
  }
}

/** The provider this tab went to, if it remembered one. */
function providerTried() {
  try {
    return sessionStorage.getItem(PROVIDER_TRIED);
  } catch {
    return null;
  }
}

/**
 * What the way back from a sign-in provider (`/?sign_in_error=<code>`) means, given
 * the provider's name when this tab knows it (`p`: “Test IdP”, else null).
 */
const SIGN_IN_ERRORS = /** @type {Record<string, (p: string|null) => string>} */ ({
  invalid_state: () =>
    'That sign-in link was used already or has expired (or it began in another browser). Start again here: choose the provider once more.',
  invalid_token: (p) =>
    `${p ?? 'The sign-in provider'}’s answer could not be verified, so you are not signed in. Try again; if it keeps happening, tell the administrator.`,
  provider_refused: (p) =>
    `${p ?? 'The sign-in provider'} did not sign you in (it was cancelled or refused). Try again, or sign in with your email and password.`,
  provider_unavailable: (p) =>
    `${p ?? 'The sign-in provider'} cannot be reached right now. Try again later, or sign in with your email and password.`,
  email_unverified: (p) =>
    `${p ?? 'The sign-in provider'} has not verified your email address, so it cannot sign you in here. Sign in with your password, or verify the email address at ${p ?? 'the provider'} and try again.`,
  identity_taken: (p) => {
    const account = p ? `${p} account` : 'provider account';
    return `That ${account} is linked to another StreamCore account. Sign in to that account, or use another ${account}.`;
  },
  already_linked: (p) =>
    `Your account has ${p ? `a ${p} account` : 'an account of this provider'} linked already. Unlink it first, then link the other one.`,
  try_again: () => 'That did not go through (an account was being set up at that moment, or many sign-ins began from here at once). Wait a moment and sign in once more.',
  server_error: () => 'Something went wrong on our side while signing you in. Try again in a moment.',
  unknown: () => 'Signing in did not work. Try again, or sign in with your email and password.',
});

/**
 * How a sign-in with a provider ended, read from the address, which then forgets it
 * (a reload must not say it again).
 */
function takeOutcome() {
  const q = query();
  const error = q.get('sign_in_error');
  const linked = q.get('linked') === '1';
  // Good for this one way back only.
  const tried = providerTried();
  rememberProvider(null);
  if (q.has('sign_in_error') || q.has('linked')) {
    q.delete('sign_in_error');
    q.delete('linked');
    const rest = q.toString();
    history.replaceState(null, '', `${location.pathname}${rest ? `?${rest}` : ''}${location.hash}`);
  }
  // (Own keys only: the address is anyone's to write.)
  const words = error !== null && Object.hasOwn(SIGN_IN_ERRORS, error) ? SIGN_IN_ERRORS[error] : SIGN_IN_ERRORS.unknown;
  return { error: error === null ? null : words(tried || null), linked, tried };
}

const outcome = takeOutcome();

/** Whether the node offers sign-in providers (their buttons go with the sign-in tab). */
let haveProviders = false;

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
  $('providers').hidden = !haveProviders || which !== 'signin';
  say(authBox, '');
  $(which).querySelector('input')?.focus();
}

/**
 * "Sign in with <name>" for each provider the node offers, under the sign-in form
 * (nothing when it offers none). Each is a link: the browser goes to the provider and
 * comes back where the person was going.
 */
async function providerButtons() {
  /** @type {{id: string, name: string}[]} */
  let list;
  try {
    list = await Session.signInProviders();
  } catch (e) {
    // The password form still works; the buttons stay away.
    console.warn('the sign-in providers could not be listed', e);
    return;
  }
  const back = next() ?? '/';
  $('provider-buttons').replaceChildren(
    ...list.map((p) =>
      h(
        'a',
        {
          class: 'button secondary',
          href: Session.providerSignInUrl(p.id, { returnTo: back }),
          'data-provider': p.id,
          // Its name, for what the way back may have to say.
          onclick: () => rememberProvider(p.name),
        },
        `Sign in with ${p.name}`,
      ),
    ),
  );
  haveProviders = list.length > 0;
  $('providers').hidden = !haveProviders || $('signin').hidden;
}

async function signedOut() {
  $('welcome').hidden = false;
  const ended = query().get('ended');
  if (outcome.error) say(authBox, outcome.error);
  else if (ended) say(authBox, MESSAGES[ended] ?? MESSAGES.session_ended);
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
  await providerButtons();
}

/**
 * @typedef {{provider: string, name: string, email: string|null, linked_at: number}} LinkedProvider
 * @typedef {{available: {id: string, name: string}[], linked: LinkedProvider[], has_password: boolean}} MyProviders
 */

/**
 * The account section: who is signed in, and the sign-in providers — the linked ones
 * with the email they vouch for and Unlink, a Link button for each other one. Also
 * what a provider's way back said (`?linked=1`, `?sign_in_error=`).
 * @param {Session} session
 * @param {{email: string}} me
 */
async function accountPanel(session, me) {
  $('account-panel').hidden = false;
  $('account-email').textContent = me.email;
  const box = $('account-message');
  const setPassword = $('set-password', HTMLButtonElement);
  setPassword.addEventListener('click', () =>
    busy(setPassword, box, async () => {
      await Session.forgotPassword(me.email);
      say(
        box,
        `A link to set a password is on its way to ${me.email}. (Without mail set up on this server, the administrator can read it for you.)`,
        'ok',
      );
    }),
  );
  /** @type {MyProviders} */
  let mine = { available: [], linked: [], has_password: true };

  const render = () => {
    const linked = new Set(mine.linked.map((l) => l.provider));
    $('sign-in-providers').hidden = mine.available.length === 0 && mine.linked.length === 0;
    $('no-linked').hidden = mine.linked.length > 0;
    $('linked-providers').replaceChildren(...mine.linked.map(linkedItem));
    $('link-buttons').replaceChildren(...mine.available.filter((p) => !linked.has(p.id)).map(linkButton));
    // Without a password, a provider is the only way in: a reset mail sets one.
    setPassword.hidden = mine.has_password;
  };
  const load = async () => {
    mine = await session.get('/me/providers');
    render();
  };

  /** @param {LinkedProvider} l */
  const linkedItem = (l) => {
    const unlink = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'secondary', 'aria-label': `Unlink ${l.name}` }, 'Unlink'));
    unlink.addEventListener('click', () =>
      busy(unlink, box, async () => {
        try {
          await session.delete(`/me/providers/${encodeURIComponent(l.provider)}`);
        } catch (e) {
          if (e instanceof StreamCoreError && e.code === 'last_sign_in') {
            setPassword.hidden = false;
            say(
              box,
              `${l.name} is the only way into your account, so it stays linked. Set a password first (“Mail me a link to set a password” below), then you can unlink it.`,
            );
            return;
          }
          throw e;
        }
        await load();
        say(box, `${l.name} is unlinked: it no longer signs you in to this account.`, 'ok');
      }),
    );
    return h(
      'li',
      { 'data-provider': l.provider },
      h(
        'div',
        { class: 'grow' },
        h('strong', null, l.name),
        h('div', { class: 'small muted' }, l.email ? `as ${l.email}` : 'no email given', l.linked_at ? ` · linked ${when(l.linked_at)}` : ''),
      ),
      unlink,
    );
  };

  /** @param {{id: string, name: string}} p */
  const linkButton = (p) => {
    const b = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'secondary', 'data-provider': p.id }, `Link ${p.name}`));
    b.addEventListener('click', () =>
      busy(b, box, async () => {
        // Signing in there links it; the provider sends the browser back to /?linked=1.
        const { url } = await session.post(`/me/providers/${encodeURIComponent(p.id)}`);
        rememberProvider(p.name);
        location.assign(url);
      }),
    );
    return b;
  };

  await load();
  if (outcome.linked) {
    // The one this tab went to link, else the one linked last.
    const newest = mine.linked.reduce((/** @type {LinkedProvider|null} */ a, l) => (a && a.linked_at >= l.linked_at ? a : l), null);
    say(box, `${outcome.tried || newest?.name || 'The provider'} is linked to your account.`, 'ok');
  }
  if (outcome.error) say(box, outcome.error);
  if (outcome.linked || outcome.error) $('account-panel').scrollIntoView({ block: 'nearest' });
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
  await accountPanel(session, me).catch((e) => say($('account-message'), explain(e)));
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
    await signedOut();
    say(authBox, explain(e));
    return;
  }
  if (!session) {
    await signedOut();
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

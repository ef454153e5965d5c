// @ts-check
/**
 * StreamCore's browser client: one ES module for every protocol a page speaks to a
 * StreamCore node. It knows nothing of the pages built on it.
 *
 * - {@link Session}: the control API (`/api/v1`) with an access token kept in memory
 *   and the refresh token in an HttpOnly cookie, rotated on every refresh; refreshes
 *   are serialised across the origin's tabs (Web Locks), since presenting a rotated
 *   token twice ends the whole login.
 * - {@link WhipPublisher} and {@link WhepPlayer}: one stream each way over WHIP/WHEP
 *   (RFC 9725), with trickle ICE by `PATCH` and teardown by `DELETE`.
 * - {@link Room}: the `/rtc` room protocol — join, one peer connection renegotiated
 *   with one offer in flight, publish (simulcast with rids), subscribe with a layer
 *   cap, mute, data, and resume with an ICE restart after a network change.
 * - {@link DeviceSocket} (a paired phone) and {@link UserSocket} (a user's browser):
 *   remote control and live state.
 * - {@link QualityMonitor}: connection quality from `getStats`.
 *
 * Everything reports through events (`on(type, handler)` returns an unsubscribe
 * function); nothing asks the page to poll. Errors are {@link StreamCoreError}s with
 * the server's `code`.
 *
 * See docs/client.md.
 * @module streamcore
 */

/** The room protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

// ---- errors and events ----------------------------------------------------------

/** An error from the server (its `{"error": {"code", "message"}}`) or from the client. */
export class StreamCoreError extends Error {
  /**
   * @param {string} code stable, machine-readable (`token_expired`, `node_full`, …)
   * @param {string} message for people
   * @param {{status?: number, field?: string, retryAfter?: number}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = 'StreamCoreError';
    /** @type {string} */
    this.code = code;
    /** HTTP status, when the error came from an HTTP answer. */
    this.status = extra.status ?? 0;
    /** The invalid field of a `422 invalid_field`. */
    this.field = extra.field;
    /** Seconds to wait before trying again (a `Retry-After` header). */
    this.retryAfter = extra.retryAfter;
  }
}

/**
 * The error of a failed HTTP answer.
 * @param {Response} res
 * @returns {Promise<StreamCoreError>}
 */
async function errorOf(res) {
  /** @type {any} */
  let body = null;
  try {
    body = await res.json();
  } catch {
    // Not JSON (a proxy's page): the status says what there is to say.
  }
  return errorFrom(res.status, res.statusText, body, res.headers.get('retry-after'));
}

/**
 * The error an HTTP answer carries: `{"error": {"code", "message", "field"?}}`, else
 * its status.
 * @param {number} status
 * @param {string} statusText
 * @param {any} body the parsed JSON body, or null
 * @param {string|null} retryAfter the `Retry-After` header
 */
function errorFrom(status, statusText, body, retryAfter) {
  const e = body?.error;
  const retry = Number(retryAfter);
  return new StreamCoreError(String(e?.code ?? `http_${status}`), String(e?.message ?? (statusText || `HTTP ${status}`)), {
    status,
    field: e?.field,
    retryAfter: Number.isFinite(retry) && retry > 0 ? retry : undefined,
  });
}

/**
 * A small typed event emitter.
 * @template {Record<string, any>} Events
 */
export class Emitter {
  /** @type {Map<keyof Events, Set<(data: any) => void>>} */
  #handlers = new Map();

  /**
   * Calls `handler` for every `type` event; returns a function that stops it.
   * @template {keyof Events} K
   * @param {K} type
   * @param {(data: Events[K]) => void} handler
   * @returns {() => void}
   */
  on(type, handler) {
    let set = this.#handlers.get(type);
    if (!set) {
      set = new Set();
      this.#handlers.set(type, set);
    }
    set.add(handler);
    return () => this.off(type, handler);
  }

  /**
   * @template {keyof Events} K
   * @param {K} type
   * @param {(data: Events[K]) => void} handler
   */
  off(type, handler) {
    this.#handlers.get(type)?.delete(handler);
  }

  /**
   * Resolves with the next `type` event.
   * @template {keyof Events} K
   * @param {K} type
   * @returns {Promise<Events[K]>}
   */
  once(type) {
    return new Promise((resolve) => {
      const off = this.on(type, (d) => {
        off();
        resolve(d);
      });
    });
  }

  /**
   * @protected
   * @template {keyof Events} K
   * @param {K} type
   * @param {Events[K]} data
   */
  emit(type, data) {
    for (const h of [...(this.#handlers.get(type) ?? [])]) {
      try {
        h(data);
      } catch (e) {
        // A page's handler must not break the client's state machine.
        console.error(`streamcore: a '${String(type)}' handler threw`, e);
      }
    }
  }
}

/**
 * Resolves after `ms`.
 * @param {number} ms
 */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * The origin pages talk to: `base`, or the page's own.
 * @param {string|undefined} base
 */
function originOf(base) {
  return (base ?? globalThis.location?.origin ?? '').replace(/\/$/, '');
}

/**
 * A WebSocket URL on the same host as `base`.
 * @param {string|undefined} base http(s) origin; the page's own when undefined
 * @param {string} path
 */
export function socketUrl(base, path) {
  const u = new URL(path, originOf(base) + '/');
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  return u.toString();
}

/**
 * The claims of a JWT, unverified (the server verifies; the client only reads `exp`).
 * @param {string} jwt
 * @returns {Record<string, any>}
 */
function claimsOf(jwt) {
  try {
    const part = jwt.split('.')[1] ?? '';
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
  } catch {
    return {};
  }
}

// ---- the control API --------------------------------------------------------------

/** @typedef {'user'|'device'} SessionKind */

/**
 * @typedef {object} DeviceInfo
 * @property {string} name
 * @property {'phone'|'browser'|'other'} kind
 * @property {{mic?: boolean, camera?: boolean, screen?: boolean}} [capabilities]
 */

/**
 * @typedef {object} SessionEvents
 * @property {{code: string, message: string}} ended the login is over (signed out,
 *   revoked, device removed); the page should ask the person to sign in or pair again
 * @property {{}} refreshed a new access token was obtained
 */

/**
 * A signed-in user or a paired device, for `/api/v1`.
 *
 * The access token lives in memory only; the refresh token is an HttpOnly cookie the
 * page cannot read (`SameSite=Strict`, path `/api/v1/auth`). A page that loads calls
 * {@link Session.restore}; an expired access token is refreshed on the way.
 * @extends {Emitter<SessionEvents>}
 */
export class Session extends Emitter {
  /** @type {string} */
  #access;
  /** When the access token expires, on this browser's clock (from `expires_in`). */
  #expiresAt;
  /** @type {Promise<void>|null} */
  #refreshing = null;
  #ended = false;

  /**
   * @param {{kind: SessionKind, accessToken: string, expiresIn?: number, base?: string}} init
   *   `expiresIn`: seconds the access token lives (default 15 minutes)
   */
  constructor(init) {
    super();
    /** @readonly */
    this.kind = init.kind;
    /** @readonly */
    this.base = originOf(init.base);
    this.#access = init.accessToken;
    this.#expiresAt = Date.now() + (init.expiresIn ?? 900) * 1000;
  }

  /** The user's id. */
  get userId() {
    return String(claimsOf(this.#access).sub ?? '');
  }

  /** The device's id, for a device session. */
  get deviceId() {
    const d = claimsOf(this.#access).device;
    return d ? String(d) : null;
  }

  /** The role (`user`, `admin`). */
  get role() {
    return String(claimsOf(this.#access).role ?? 'user');
  }

  /**
   * A plain JSON call without a session.
   * @param {string} base
   * @param {string} path
   * @param {unknown} body
   */
  static async #anonymous(base, path, body) {
    const res = await fetch(originOf(base) + path, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      credentials: 'same-origin',
    });
    if (!res.ok) throw await errorOf(res);
    return res.status === 204 || res.status === 202 ? null : res.json();
  }

  /**
   * A plain JSON `GET` without a session.
   * @param {string} base
   * @param {string} path
   */
  static async #anonymousGet(base, path) {
    const res = await fetch(originOf(base) + path, { credentials: 'same-origin' });
    if (!res.ok) throw await errorOf(res);
    return res.json();
  }

  /**
   * The sign-in providers (OpenID Connect) the node offers; empty when it has none.
   * @param {{base?: string}} [a]
   * @returns {Promise<{id: string, name: string}[]>}
   */
  static async signInProviders(a = {}) {
    return Session.#anonymousGet(a.base ?? '', '/api/v1/auth/oidc/providers');
  }

  /**
   * Where the browser goes (a navigation, not a fetch) to sign in with a provider. It
   * comes back to `returnTo` (a path of this node) signed in — the refresh cookie is
   * set, so the page there calls {@link Session.restore} — or to
   * `/link-account?token=…&provider=<name>` when the provider's email has an account
   * already (see {@link Session.linkProvider}), or to `/?sign_in_error=<code>`.
   * @param {string} providerId
   * @param {{returnTo?: string, base?: string}} [a]
   */
  static providerSignInUrl(providerId, a = {}) {
    const back = encodeURIComponent(a.returnTo ?? '/');
    return `${originOf(a.base)}/auth/oidc/${encodeURIComponent(providerId)}/start?return_to=${back}`;
  }

  /**
   * What a pending link (the token of `/link-account?token=…`) is about: the email the
   * provider vouched for and the provider's name. A `404` once it has expired.
   * @param {string} token
   * @param {{base?: string}} [a]
   * @returns {Promise<{email: string, provider: string}>}
   */
  static async pendingLink(token, a = {}) {
    return Session.#anonymousGet(a.base ?? '', `/api/v1/auth/oidc/link/${encodeURIComponent(token)}`);
  }

  /**
   * Links a provider's identity to the existing account with its email, proven by that
   * account's password, and signs in (the refresh token in the HttpOnly cookie).
   * `invalid_credentials` (401) for a wrong password, `404` once the link has expired,
   * `already_linked` (409).
   * @param {{token: string, password: string, base?: string}} a
   */
  static async linkProvider(a) {
    const r = await Session.#anonymous(a.base ?? '', '/api/v1/auth/oidc/link', {
      token: a.token,
      password: a.password,
      cookie: true,
    });
    return new Session({ kind: 'user', accessToken: r.access_token, expiresIn: r.expires_in, base: a.base });
  }

  /**
   * Asks for an account: the server mails the address a link to finish signing up
   * ({@link Session.completeSignUp}), or, when it has an account already, a note to its
   * owner. The answer is the same either way, so it says nothing about the address.
   * @param {{email: string, displayName?: string, base?: string}} a
   * @returns {Promise<void>}
   */
  static async register(a) {
    await Session.#anonymous(a.base ?? '', '/api/v1/auth/register', {
      email: a.email,
      display_name: a.displayName || undefined,
    });
  }

  /**
   * Finishes signing up with the token of the sign-up mail's link: makes the account
   * with this password and signs in.
   * @param {{token: string, password: string, base?: string}} a
   */
  static async completeSignUp(a) {
    const r = await Session.#anonymous(a.base ?? '', '/api/v1/auth/register/complete', {
      token: a.token,
      password: a.password,
      cookie: true,
    });
    return new Session({ kind: 'user', accessToken: r.session.access_token, expiresIn: r.session.expires_in, base: a.base });
  }

  /**
   * Signs in with email and password.
   * @param {{email: string, password: string, base?: string}} a
   */
  static async login(a) {
    const r = await Session.#anonymous(a.base ?? '', '/api/v1/auth/login', {
      email: a.email,
      password: a.password,
      cookie: true,
    });
    return new Session({ kind: 'user', accessToken: r.access_token, expiresIn: r.expires_in, base: a.base });
  }

  /**
   * Claims a pairing code: this browser becomes a device of the code's user.
   * @param {{code: string, device: DeviceInfo, base?: string}} a
   * @returns {Promise<{session: Session, device: any}>}
   */
  static async claimPairing(a) {
    const r = await Session.#anonymous(a.base ?? '', '/api/v1/pairings/claim', {
      code: a.code,
      device: a.device,
      cookie: true,
    });
    return {
      session: new Session({ kind: 'device', accessToken: r.session.access_token, expiresIn: r.session.expires_in, base: a.base }),
      device: r.device,
    };
  }

  /**
   * The session this browser already holds (its refresh cookie), or `null` when it
   * holds none. A session that ended (revoked, expired, the device removed) rejects
   * with a {@link StreamCoreError} whose `status` is 401, so a page can say so.
   * @param {{kind?: SessionKind, base?: string}} [a]
   * @returns {Promise<Session|null>}
   */
  static async restore(a = {}) {
    const kind = a.kind ?? 'user';
    try {
      const r = await Session.#refreshWithLock(a.base ?? '', kind);
      return new Session({ kind, accessToken: r.access_token, expiresIn: r.expires_in, base: a.base });
    } catch (e) {
      if (e instanceof StreamCoreError && e.code === 'no_session') return null;
      throw e;
    }
  }

  /**
   * Asks for a password-reset mail (always accepted: it does not tell whether the
   * address has an account).
   * @param {string} email
   * @param {{base?: string}} [a]
   */
  static async forgotPassword(email, a = {}) {
    await Session.#anonymous(a.base ?? '', '/api/v1/auth/password/forgot', { email });
  }

  /**
   * Confirms an account's email address with the token of its verification mail.
   * @param {string} token
   * @param {{base?: string}} [a]
   */
  static async verifyEmail(token, a = {}) {
    await Session.#anonymous(a.base ?? '', '/api/v1/auth/email/verify', { token });
  }

  /**
   * Sets a new password with the token of a reset mail.
   * @param {string} token
   * @param {string} newPassword
   * @param {{base?: string}} [a]
   */
  static async resetPassword(token, newPassword, a = {}) {
    await Session.#anonymous(a.base ?? '', '/api/v1/auth/password/reset', {
      token,
      new_password: newPassword,
    });
  }

  /**
   * One refresh, with the origin's tabs taking turns: the cookie each sends is the one
   * the tab before it received. (Without Web Locks — pages on an insecure origin — tabs
   * may race; the node tolerates a token presented again within seconds.)
   * @param {string} base
   * @param {SessionKind} kind
   * @returns {Promise<{access_token: string, expires_in: number}>}
   */
  static async #refreshWithLock(base, kind) {
    const run = async () => {
      const r = await Session.#anonymous(base, '/api/v1/auth/refresh', { cookie: kind });
      return { access_token: String(r.access_token), expires_in: Number(r.expires_in) };
    };
    const locks = globalThis.navigator?.locks;
    return locks ? locks.request(`streamcore-refresh-${kind}`, run) : run();
  }

  /** Gets a new access token now (the cookie rotates). */
  async refresh() {
    if (this.#ended) throw new StreamCoreError('session_ended', 'the session has ended');
    if (!this.#refreshing) {
      this.#refreshing = (async () => {
        try {
          const r = await Session.#refreshWithLock(this.base, this.kind);
          this.#access = r.access_token;
          this.#expiresAt = Date.now() + r.expires_in * 1000;
          this.emit('refreshed', {});
        } catch (e) {
          if (e instanceof StreamCoreError && e.status === 401) this.#end(e);
          throw e;
        } finally {
          this.#refreshing = null;
        }
      })();
    }
    return this.#refreshing;
  }

  /** @param {StreamCoreError} e */
  #end(e) {
    if (this.#ended) return;
    this.#ended = true;
    this.emit('ended', { code: e.code, message: e.message });
  }

  /** The session ended (and cannot be refreshed). */
  /** When the current access token ends (ms since the epoch). */
  get expiresAt() {
    return this.#expiresAt;
  }

  get ended() {
    return this.#ended;
  }

  /**
   * A valid access token, refreshed first when it expires within 30 s.
   * @returns {Promise<string>}
   */
  async accessToken() {
    if (this.#ended) throw new StreamCoreError('session_ended', 'the session has ended');
    if (this.#expiresAt - Date.now() < 30_000) await this.refresh();
    return this.#access;
  }

  /**
   * Calls `/api/v1`: JSON in, JSON out (or `null` for an empty answer). An expired
   * access token is refreshed and the call made once more.
   * @param {string} method
   * @param {string} path under `/api/v1`, e.g. `/devices`
   * @param {unknown} [body] JSON, or a `Blob`/`File` sent as is
   * @returns {Promise<any>}
   */
  async request(method, path, body) {
    for (let attempt = 0; ; attempt++) {
      const token = await this.accessToken();
      /** @type {Record<string, string>} */
      const headers = { authorization: `Bearer ${token}` };
      /** @type {BodyInit|undefined} */
      let payload;
      if (body instanceof Blob) {
        payload = body;
      } else if (body !== undefined) {
        headers['content-type'] = 'application/json';
        payload = JSON.stringify(body);
      }
      const res = await fetch(`${this.base}/api/v1${path}`, {
        method,
        headers,
        body: payload,
        credentials: 'same-origin',
      });
      if (res.ok) {
        if (res.status === 204) return null;
        const type = res.headers.get('content-type') ?? '';
        return type.includes('json') ? res.json() : res.blob();
      }
      const err = await errorOf(res);
      if (res.status === 401 && attempt === 0 && !this.#ended) {
        // Expired, or signed by a key the node rotated: one refresh, one retry.
        await this.refresh();
        continue;
      }
      if (res.status === 401) this.#end(err);
      throw err;
    }
  }

  /** @param {string} path */
  get(path) {
    return this.request('GET', path);
  }

  /**
   * @param {string} path
   * @param {unknown} [body]
   */
  post(path, body) {
    return this.request('POST', path, body);
  }

  /**
   * @param {string} path
   * @param {any} [body]
   */
  put(path, body) {
    return this.request('PUT', path, body);
  }

  /**
   * @param {string} path
   * @param {unknown} body
   */
  patch(path, body) {
    return this.request('PATCH', path, body);
  }

  /** @param {string} path */
  delete(path) {
    return this.request('DELETE', path);
  }

  /**
   * Sends a file as a request body with upload progress (fetch has none).
   * @param {string} path under `/api/v1`, with its query
   * @param {Blob} file
   * @param {(sent: number, total: number) => void} [onProgress]
   * @returns {Promise<any>} the JSON answer
   */
  async upload(path, file, onProgress) {
    const token = await this.accessToken();
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('POST', `${this.base}/api/v1${path}`);
      xhr.setRequestHeader('authorization', `Bearer ${token}`);
      xhr.setRequestHeader('content-type', file.type || 'application/octet-stream');
      xhr.upload.onprogress = (e) => onProgress?.(e.loaded, e.total);
      xhr.onerror = () => reject(new StreamCoreError('network', 'the upload was interrupted'));
      xhr.onload = () => {
        /** @type {any} */
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          body = null;
        }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else reject(errorFrom(xhr.status, xhr.statusText, body, xhr.getResponseHeader('retry-after')));
      };
      xhr.send(file);
    });
  }

  /** Ends this login on the server and forgets its cookie. */
  async logout() {
    try {
      await Session.#anonymous(this.base, '/api/v1/auth/logout', { cookie: this.kind });
    } finally {
      this.#ended = true;
    }
  }
}

// ---- connection quality -----------------------------------------------------------

/**
 * @typedef {object} TrackStats
 * @property {'in'|'out'} direction
 * @property {'audio'|'video'} kind
 * @property {string|null} mid
 * @property {string|null} rid the simulcast layer (outbound)
 * @property {number} packets
 * @property {number} packetsLost
 * @property {number} kbps over the last interval
 * @property {number} [frameWidth]
 * @property {number} [frameHeight]
 * @property {number} [framesDecoded]
 * @property {number} [framesPerSecond]
 * @property {number} [keyFramesDecoded]
 * @property {number} [audioLevel] 0–1 (inbound audio)
 * @property {number} [totalAudioEnergy]
 * @property {string} [qualityLimitation] why the encoder sends less (outbound video)
 */

/**
 * @typedef {object} QualityReport
 * @property {'excellent'|'good'|'poor'|'lost'} level
 * @property {number|null} rttMs round-trip time to the node
 * @property {number} lossPercent packets lost over the last interval, either way
 * @property {number|null} jitterMs inbound audio jitter
 * @property {number} inboundKbps
 * @property {number} outboundKbps
 * @property {TrackStats[]} tracks
 */

/**
 * Samples a peer connection's `getStats` every `intervalMs` and reports
 * {@link QualityReport}s as `quality` events.
 * @extends {Emitter<{quality: QualityReport}>}
 */
export class QualityMonitor extends Emitter {
  /** @type {RTCPeerConnection} */
  #pc;
  /** @type {Map<string, {bytes: number, packets: number, lost: number, at: number}>} */
  #last = new Map();
  /** @type {ReturnType<typeof setInterval>|null} */
  #timer = null;
  /** @type {QualityReport|null} */
  latest = null;

  /**
   * @param {RTCPeerConnection} pc
   * @param {{intervalMs?: number}} [opts]
   */
  constructor(pc, opts = {}) {
    super();
    this.#pc = pc;
    this.intervalMs = opts.intervalMs ?? 2000;
  }

  start() {
    if (this.#timer) return;
    this.#timer = setInterval(() => {
      this.sample().catch(() => {});
    }, this.intervalMs);
  }

  stop() {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /**
   * Reads the stats now.
   * @returns {Promise<QualityReport>}
   */
  async sample() {
    const report = await this.#pc.getStats();
    const now = performance.now();
    /** @type {TrackStats[]} */
    const tracks = [];
    let rtt = /** @type {number|null} */ (null);
    let jitter = /** @type {number|null} */ (null);
    let inKbps = 0;
    let outKbps = 0;
    let lost = 0;
    let expected = 0;
    let remoteLoss = 0;
    report.forEach((/** @type {any} */ s) => {
      if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        if (typeof s.currentRoundTripTime === 'number') rtt = s.currentRoundTripTime * 1000;
      } else if (s.type === 'inbound-rtp' || s.type === 'outbound-rtp') {
        const inbound = s.type === 'inbound-rtp';
        const bytes = inbound ? s.bytesReceived ?? 0 : s.bytesSent ?? 0;
        const packets = inbound ? s.packetsReceived ?? 0 : s.packetsSent ?? 0;
        const prev = this.#last.get(s.id);
        const secs = prev ? (now - prev.at) / 1000 : 0;
        const kbps = prev && secs > 0 ? ((bytes - prev.bytes) * 8) / 1000 / secs : 0;
        if (inbound) {
          inKbps += kbps;
          if (prev) {
            const dl = (s.packetsLost ?? 0) - prev.lost;
            lost += Math.max(0, dl);
            expected += Math.max(0, packets - prev.packets) + Math.max(0, dl);
          }
          if (s.kind === 'audio' && typeof s.jitter === 'number') {
            jitter = Math.max(jitter ?? 0, s.jitter * 1000);
          }
        } else {
          outKbps += kbps;
        }
        this.#last.set(s.id, { bytes, packets, lost: s.packetsLost ?? 0, at: now });
        tracks.push({
          direction: inbound ? 'in' : 'out',
          kind: s.kind,
          mid: s.mid ?? null,
          rid: s.rid ?? null,
          packets,
          packetsLost: s.packetsLost ?? 0,
          kbps: Math.round(kbps),
          frameWidth: s.frameWidth,
          frameHeight: s.frameHeight,
          framesDecoded: s.framesDecoded,
          framesPerSecond: s.framesPerSecond,
          keyFramesDecoded: s.keyFramesDecoded,
          audioLevel: s.audioLevel,
          totalAudioEnergy: s.totalAudioEnergy,
          qualityLimitation: s.qualityLimitationReason,
        });
      } else if (s.type === 'remote-inbound-rtp') {
        // What the node saw of what we send.
        if (typeof s.fractionLost === 'number') remoteLoss = Math.max(remoteLoss, s.fractionLost);
        if (rtt === null && typeof s.roundTripTime === 'number') rtt = s.roundTripTime * 1000;
      }
    });
    const lossPercent = Math.max(expected > 0 ? (100 * lost) / expected : 0, remoteLoss * 100);
    const state = this.#pc.connectionState;
    /** @type {QualityReport['level']} */
    let level;
    if (state === 'failed' || state === 'disconnected' || state === 'closed') {
      level = 'lost';
    } else if (lossPercent < 2 && (rtt === null || rtt < 150)) {
      level = 'excellent';
    } else if (lossPercent < 8 && (rtt === null || rtt < 400)) {
      level = 'good';
    } else {
      level = 'poor';
    }
    const q = {
      level,
      rttMs: rtt === null ? null : Math.round(rtt),
      lossPercent: Math.round(lossPercent * 10) / 10,
      jitterMs: jitter === null ? null : Math.round(jitter),
      inboundKbps: Math.round(inKbps),
      outboundKbps: Math.round(outKbps),
      tracks,
    };
    this.latest = q;
    this.emit('quality', q);
    return q;
  }
}

// ---- WHIP and WHEP ----------------------------------------------------------------

/**
 * @typedef {object} SessionStreamEvents
 * @property {RTCPeerConnectionState} state the peer connection's state
 * @property {QualityReport} quality
 * @property {MediaStreamTrack} track a received track (WHEP)
 * @property {{}} restarted ICE was restarted on the same session (a network change)
 * @property {{url: string, reason: string}} moving the node drains: the session opens again at `url`
 * @property {{url: string, reason: string}} moved the session runs at `url` now (WHEP: its tracks replaced the old ones in `stream`)
 * @property {StreamCoreError} error a restart that failed (the next one retries), or a move that failed (`move_failed`; the old session runs on)
 */

/**
 * Calls `handler` when the browser says the network changed (`online`, or
 * `navigator.connection`'s `change` where there is one).
 * @param {() => void} handler
 * @returns {() => void} stops listening
 */
function onNetworkChange(handler) {
  globalThis.addEventListener?.('online', handler);
  /** @type {any} */
  const conn = /** @type {any} */ (globalThis.navigator)?.connection;
  conn?.addEventListener?.('change', handler);
  return () => {
    globalThis.removeEventListener?.('online', handler);
    conn?.removeEventListener?.('change', handler);
  };
}

/**
 * An `application/trickle-ice-sdpfrag` body (RFC 8840): this side's credentials from
 * `sdp`, the bundle's first m-line, and `candidates`.
 * @param {string} sdp
 * @param {string} mid
 * @param {string[]} candidates
 */
function iceFragment(sdp, mid, candidates) {
  const ufrag = /a=ice-ufrag:(\S+)/.exec(sdp)?.[1] ?? '';
  const pwd = /a=ice-pwd:(\S+)/.exec(sdp)?.[1] ?? '';
  const lines = [`a=ice-ufrag:${ufrag}`, `a=ice-pwd:${pwd}`, 'm=audio 9 UDP/TLS/RTP/SAVPF 0', `a=mid:${mid}`];
  for (const c of candidates) lines.push(`a=${c}`);
  return lines.join('\r\n') + '\r\n';
}

/**
 * The ICE servers a `Link` header names (RFC 9725 §4.6):
 * `<turn:host:3478?transport=udp>; rel="ice-server"; username="…"; credential="…"`.
 * @param {string|null} header
 * @returns {RTCIceServer[]}
 */
export function iceServersFromLinks(header) {
  if (!header) return [];
  /** @type {RTCIceServer[]} */
  const out = [];
  for (const link of header.split(/,(?=\s*<)/)) {
    const url = /<([^>]*)>/.exec(link)?.[1];
    if (!url || !/;\s*rel="?ice-server"?/.test(link)) continue;
    /** @param {string} key */
    const param = (key) => {
      const m = new RegExp(`;\\s*${key}="((?:[^"\\\\]|\\\\.)*)"`).exec(link);
      return m ? m[1].replace(/\\(.)/g, '$1') : undefined;
    };
    /** @type {RTCIceServer} */
    const server = { urls: url };
    const username = param('username');
    const credential = param('credential');
    if (username !== undefined) server.username = username;
    if (credential !== undefined) server.credential = credential;
    out.push(server);
  }
  return out;
}

/**
 * Resolves when `pc` is connected, or after `ms` (whichever comes first).
 * @param {RTCPeerConnection} pc
 * @param {number} ms
 * @returns {Promise<void>}
 */
function connectedWithin(pc, ms) {
  return new Promise((resolve) => {
    if (pc.connectionState === 'connected') return resolve();
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('connectionstatechange', check);
      resolve();
    };
    const check = () => {
      if (pc.connectionState === 'connected' || pc.connectionState === 'failed' || pc.connectionState === 'closed') done();
    };
    const timer = setTimeout(done, ms);
    pc.addEventListener('connectionstatechange', check);
  });
}

/**
 * The URL of a session's events in a WHIP/WHEP `201`'s `Link` header (the WHEP
 * draft's server-sent events relation), if the node has them.
 * @param {string|null} header
 * @returns {string|null}
 */
export function eventsFromLinks(header) {
  if (!header) return null;
  for (const link of header.split(/,(?=\s*<)/)) {
    const url = /<([^>]*)>/.exec(link)?.[1];
    if (url && /;\s*rel="?urn:ietf:params:whep:ext:core:server-sent-events"?/.test(link)) return url;
  }
  return null;
}

/**
 * The node's answer with the credentials and candidates of an ICE restart's answer
 * `frag`: everything else negotiated still holds (RFC 9725 §4.4).
 * @param {string} answer
 * @param {string} frag
 */
function withIceFragment(answer, frag) {
  const ufrag = /a=ice-ufrag:(\S+)/.exec(frag)?.[1];
  const pwd = /a=ice-pwd:(\S+)/.exec(frag)?.[1];
  if (!ufrag || !pwd) throw new StreamCoreError('bad_answer', 'the media server did not send new ICE credentials');
  const candidates = frag.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:'));
  /** @type {string[]} */
  const out = [];
  let placed = false;
  for (const line of answer.split(/\r?\n/)) {
    if (line === '' || line.startsWith('a=candidate:') || line === 'a=end-of-candidates') continue;
    if (line.startsWith('a=ice-ufrag:')) out.push(`a=ice-ufrag:${ufrag}`);
    else if (line.startsWith('a=ice-pwd:')) out.push(`a=ice-pwd:${pwd}`);
    else out.push(line);
    if (line.startsWith('a=mid:') && !placed) {
      placed = true;
      out.push(...candidates);
    }
  }
  return out.join('\r\n') + '\r\n';
}

/** Simulcast layers a camera is sent as, low to high (the server orders them by bitrate). */
export const SIMULCAST_LAYERS = /** @type {const} */ ([
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
]);

/**
 * What WHIP and WHEP share: the HTTP offer/answer, trickle, ICE restart and teardown.
 *
 * A connection that is lost (or a browser that reports a network change) restarts ICE
 * on the same session by itself (RFC 9725 §4.4): a `PATCH` with `If-Match: *` and new
 * credentials, answered with the node's. The session, its tracks and its players are
 * kept; `restarted` is emitted when media can flow again.
 *
 * A node that drains tells its sessions where their room is served now (a
 * `reconnect` event); the session opens there with the same token and tracks, then
 * ends the old one (`moving`, `moved`).
 * @extends {Emitter<SessionStreamEvents>}
 */
class HttpMediaSession extends Emitter {
  /** @type {RTCPeerConnection|null} */
  pc = null;
  /** @type {string|null} the session's resource URL (`Location`) */
  resource = null;
  /** @type {QualityMonitor|null} */
  quality = null;
  /** @type {string|null} the resource's `ETag`: names its current ICE session */
  etag = null;
  /** @type {string} the node's answer, kept for ICE restarts */
  #answer = '';
  /** @type {string[]} */
  #trickle = [];
  /** @type {ReturnType<typeof setTimeout>|null} */
  #trickleTimer = null;
  /** @type {Promise<void>|null} */
  #restarting = null;
  /** @type {ReturnType<typeof setTimeout>|null} */
  #iceWatch = null;
  /** @type {(() => void)[]} */
  #unlisten = [];
  /** @type {EventSource|null} the session's events (`reconnect`), when the node has them */
  #events = null;
  /** @type {((pc: RTCPeerConnection) => void)|null} adds the session's transceivers to a new connection */
  #setup = null;
  /** @type {Promise<void>|null} */
  #moving = null;
  /** @type {{url: string, reason: string}|null} a move asked for while one runs: made after it */
  #nextMove = null;
  /**
   * The session a move is leaving, until the new one runs (`stop()` ends it too).
   * @type {{pc: RTCPeerConnection, resource: string, events: EventSource|null, quality: QualityMonitor|null, unlisten: (() => void)[]}|null}
   */
  #leaving = null;
  /** Set by `stop()`: a move in progress gives up. */
  #stopped = false;

  /**
   * @param {{url: string, token: string, iceServers?: RTCIceServer[], iceTransportPolicy?: RTCIceTransportPolicy}} opts
   *   `url` is the endpoint (`…/whip/<room>` or `…/whep/<room>`), `token` a join token;
   *   `iceServers` those of the join-token response (`ice_servers`): without them the
   *   session takes the ones its `201` names (`Link: rel="ice-server"`) for its ICE
   *   restarts; `iceTransportPolicy: 'relay'` sends everything through TURN
   */
  constructor(opts) {
    super();
    this.url = new URL(opts.url, globalThis.location?.href).toString();
    this.token = opts.token;
    this.iceServers = opts.iceServers ?? [];
    this.iceTransportPolicy = opts.iceTransportPolicy ?? 'all';
  }

  /**
   * A new connection with the session's transceivers (`setup` adds them); kept, so
   * that the session can open again elsewhere when its node drains.
   * @protected
   * @param {(pc: RTCPeerConnection) => void} setup
   */
  newPeerConnection(setup) {
    this.#setup = setup;
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
      bundlePolicy: 'max-bundle',
    });
    pc.addEventListener('connectionstatechange', () => {
      // A connection left behind by a move says nothing about the session.
      if (pc !== this.pc) return;
      this.emit('state', pc.connectionState);
      this.#onPeerState(pc);
    });
    pc.addEventListener('icecandidate', (e) => {
      if (e.candidate?.candidate) this.#queueCandidate(e.candidate.candidate);
    });
    this.pc = pc;
    this.quality = new QualityMonitor(pc);
    this.quality.on('quality', (q) => this.emit('quality', q));
    this.#watchNetwork();
    setup(pc);
    return pc;
  }

  /** @param {RTCPeerConnection} pc */
  #onPeerState(pc) {
    if (pc !== this.pc) return;
    if (this.#iceWatch) clearTimeout(this.#iceWatch);
    this.#iceWatch = null;
    const s = pc.connectionState;
    if (s === 'failed') {
      this.#restartQuietly();
    } else if (s === 'disconnected') {
      // Often back on its own within a second or two; otherwise restart ICE.
      this.#iceWatch = setTimeout(() => {
        if (this.pc === pc && pc.connectionState === 'disconnected') this.#restartQuietly();
      }, 2000);
    }
  }

  #watchNetwork() {
    // The address may have changed: a new ICE session finds the new path at once
    // instead of waiting for consent to fail.
    this.#unlisten.push(
      onNetworkChange(() => {
        if (this.pc?.connectionState !== 'new') this.#restartQuietly();
      }),
    );
  }

  #restartQuietly() {
    this.restartIce().catch((/** @type {unknown} */ e) =>
      this.emit('error', e instanceof StreamCoreError ? e : new StreamCoreError('ice_restart_failed', String(e))),
    );
  }

  /**
   * Offers, POSTs the offer, applies the answer.
   * @protected
   */
  async exchange() {
    const pc = /** @type {RTCPeerConnection} */ (this.pc);
    await pc.setLocalDescription(await pc.createOffer());
    /** @type {Response} */
    let res;
    try {
      res = await fetch(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/sdp', authorization: `Bearer ${this.token}` },
        body: pc.localDescription?.sdp ?? '',
      });
    } catch {
      this.#close();
      throw new StreamCoreError('network', 'could not reach the media server');
    }
    if (res.status !== 201) {
      const err = await errorOf(res);
      this.#close();
      throw err;
    }
    const location = res.headers.get('location');
    this.resource = location ? new URL(location, this.url).toString() : null;
    this.etag = res.headers.get('etag');
    const linked = iceServersFromLinks(res.headers.get('link'));
    if (this.iceServers.length === 0 && linked.length > 0) {
      // Too late for this offer's gathering, in time for every ICE restart.
      this.iceServers = linked;
      pc.setConfiguration({ ...pc.getConfiguration(), iceServers: linked });
    }
    this.#answer = await res.text();
    await pc.setRemoteDescription({ type: 'answer', sdp: this.#answer });
    this.quality?.start();
    this.#flushCandidates();
    this.#followEvents(res.headers.get('link')).catch(() => {
      // Events are a help: without them the session still works until its node stops.
    });
  }

  /**
   * Asks for the session's events, when its `201` links them (the WHEP draft's
   * server-sent events); a `reconnect` opens the session again where it says.
   * @param {string|null} link
   */
  async #followEvents(link) {
    const href = eventsFromLinks(link);
    const resource = this.resource;
    if (!href || !resource) return;
    const at = new URL(href, this.url).toString();
    const res = await fetch(at, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${this.token}` },
      body: JSON.stringify(['reconnect']),
    });
    const location = res.headers.get('location');
    // The session may have moved or ended while the request was out.
    if (res.status !== 201 || !location || this.resource !== resource) return;
    const events = new EventSource(new URL(location, at).toString());
    // A node gone for good (its session with it) is not asked forever.
    let failures = 0;
    events.addEventListener('open', () => {
      failures = 0;
    });
    events.addEventListener('error', () => {
      failures += 1;
      if (failures >= 5 || this.resource !== resource) events.close();
    });
    events.addEventListener('reconnect', (e) => {
      /** @type {{url?: string, reason?: string}} */
      let data = {};
      try {
        data = JSON.parse(/** @type {MessageEvent} */ (e).data);
      } catch {
        return;
      }
      if (typeof data.url === 'string' && this.resource === resource) this.moveTo(data.url, data.reason ?? 'moved');
    });
    this.#events = events;
  }

  /**
   * Opens the session again at another endpoint (its node drains: a `reconnect`
   * event) and then ends the old one, so the media never stops while it moves. Emits
   * `moving` and then `moved`, or `error` (`move_failed`) after a few tries; the old
   * session is kept until then.
   * @param {string} url the endpoint (`…/whep/<room>`)
   * @param {string} [reason]
   * @returns {Promise<void>}
   */
  moveTo(url, reason = 'moved') {
    const to = new URL(url, this.url).toString();
    if (this.#moving) {
      // Told again while moving (the new node drains too): that move comes next.
      this.#nextMove = { url: to, reason };
      return this.#moving;
    }
    this.#moving = this.#move(to, reason).finally(() => {
      this.#moving = null;
      const next = this.#nextMove;
      this.#nextMove = null;
      if (next && !this.#stopped && next.url !== this.url) this.moveTo(next.url, next.reason);
    });
    return this.#moving;
  }

  /**
   * @param {string} url
   * @param {string} reason
   */
  async #move(url, reason) {
    const setup = this.#setup;
    if (this.#stopped || !setup || !this.pc || !this.resource) return;
    this.emit('moving', { url, reason });
    const old = {
      url: this.url,
      pc: this.pc,
      resource: this.resource,
      etag: this.etag,
      answer: this.#answer,
      quality: this.quality,
      events: this.#events,
      unlisten: this.#unlisten.splice(0),
    };
    // Its quality says nothing about the session any more.
    old.quality?.stop();
    this.#leaving = old;
    this.#events = null;
    /** @type {unknown} */
    let failure = null;
    for (const wait of [0, 500, 1000, 2000]) {
      if (wait) await new Promise((r) => setTimeout(r, wait));
      // stop() ended both sessions.
      if (this.#stopped) return;
      this.url = url;
      this.resource = null;
      const pc = this.newPeerConnection(setup);
      try {
        await this.exchange();
        // The old session stops half a second after the new one connected: the two
        // overlap, so a recording of the room misses nothing in between.
        await connectedWithin(pc, 5000);
        if (this.#stopped) {
          this.#endNew();
          return;
        }
        if (pc.connectionState !== 'connected') {
          throw new StreamCoreError('move_failed', `no connection to ${url} within 5 s`);
        }
        await new Promise((r) => setTimeout(r, 500));
        if (this.#stopped) {
          this.#endNew();
          return;
        }
        failure = null;
        break;
      } catch (e) {
        failure = e;
        // A session opened before the failure is ended; the next try opens another.
        this.#endNew();
      }
    }
    this.#leaving = null;
    if (failure) {
      // Back to the old session: it runs until its node stops.
      Object.assign(this, { url: old.url, pc: old.pc, resource: old.resource, etag: old.etag, quality: old.quality });
      this.#answer = old.answer;
      this.#events = old.events;
      this.#unlisten.push(...old.unlisten);
      old.quality?.start();
      this.emit(
        'error',
        new StreamCoreError('move_failed', `could not move the session to ${url}: ${failure instanceof Error ? failure.message : String(failure)}`),
      );
      return;
    }
    this.retire(old.pc);
    this.#letGo(old);
    this.emit('moved', { url: this.url, reason });
  }

  /** Ends the session a move was opening (it failed, or `stop()` came). */
  #endNew() {
    this.quality?.stop();
    for (const off of this.#unlisten.splice(0)) off();
    this.#events?.close();
    this.#events = null;
    if (this.pc) this.retire(this.pc);
    this.pc?.close();
    const resource = this.resource;
    this.resource = null;
    if (resource) this.#delete(resource);
  }

  /**
   * Ends a session a move left.
   * @param {{pc: RTCPeerConnection, resource: string, events: EventSource|null, quality: QualityMonitor|null, unlisten: (() => void)[]}} old
   */
  #letGo(old) {
    old.quality?.stop();
    old.events?.close();
    for (const off of old.unlisten.splice(0)) off();
    old.pc.close();
    this.#delete(old.resource);
  }

  /** @param {string} resource */
  #delete(resource) {
    return fetch(resource, { method: 'DELETE', headers: { authorization: `Bearer ${this.token}` } }).catch(() => {
      // The node may be gone already; it ends the session itself then.
    });
  }

  /**
   * What a subclass lets go of when the session leaves `pc`: the connection a move
   * left, or the one a failed move had opened.
   * @protected
   * @param {RTCPeerConnection} pc
   */
  retire(pc) {
    void pc;
  }

  /** True while the session moves (`moveTo`): a new connection is being opened. */
  get moving() {
    return this.#moving !== null;
  }

  /**
   * Restarts ICE on this session (RFC 9725 §4.4), as after a network change. Runs by
   * itself when the connection is lost; one restart at a time.
   * @returns {Promise<void>}
   */
  restartIce() {
    if (!this.#restarting) {
      this.#restarting = this.#restart().finally(() => {
        this.#restarting = null;
        this.#flushCandidates();
      });
    }
    return this.#restarting;
  }

  async #restart() {
    const pc = this.pc;
    const resource = this.resource;
    if (!pc || !resource || pc.signalingState === 'closed') return;
    await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
    const sdp = pc.localDescription?.sdp ?? '';
    // Candidates gathered so far belong to the new ICE session too; they go with it.
    const lines = iceFragment(sdp, pc.getTransceivers()[0]?.mid ?? '0', this.#trickle.splice(0));
    /** @type {Response} */
    let res;
    try {
      res = await fetch(resource, {
        method: 'PATCH',
        headers: {
          'content-type': 'application/trickle-ice-sdpfrag',
          authorization: `Bearer ${this.token}`,
          'if-match': '*',
        },
        body: lines,
      });
    } catch {
      // Still offline: the local offer stays pending and the next restart retries.
      throw new StreamCoreError('network', 'could not reach the media server to resume');
    }
    if (res.status !== 200) throw await errorOf(res);
    // The session moved meanwhile: this restart was the old one's.
    if (this.pc !== pc) return;
    this.etag = res.headers.get('etag');
    const answer = withIceFragment(this.#answer, await res.text());
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
    this.#answer = answer;
    this.emit('restarted', {});
  }

  /** @param {string} candidate */
  #queueCandidate(candidate) {
    this.#trickle.push(candidate);
    if (!this.#trickleTimer) {
      // Candidates come in bursts: one PATCH per burst.
      this.#trickleTimer = setTimeout(() => this.#flushCandidates(), 50);
    }
  }

  #flushCandidates() {
    if (this.#trickleTimer) clearTimeout(this.#trickleTimer);
    this.#trickleTimer = null;
    const pc = this.pc;
    // During a restart, candidates wait: they belong to the ICE session it makes.
    if (!this.resource || !pc || this.#restarting || this.#trickle.length === 0) return;
    const body = iceFragment(pc.localDescription?.sdp ?? '', pc.getTransceivers()[0]?.mid ?? '0', this.#trickle.splice(0));
    /** @type {Record<string, string>} */
    const headers = {
      'content-type': 'application/trickle-ice-sdpfrag',
      authorization: `Bearer ${this.token}`,
    };
    if (this.etag) headers['if-match'] = this.etag;
    fetch(this.resource, { method: 'PATCH', headers, body }).catch(() => {
      // Trickle is an optimisation: the node is ICE-lite and learns addresses from STUN.
    });
  }

  #close() {
    if (this.#iceWatch) clearTimeout(this.#iceWatch);
    this.#iceWatch = null;
    this.#events?.close();
    this.#events = null;
    for (const off of this.#unlisten.splice(0)) off();
    this.pc?.close();
  }

  /** Ends the session (`DELETE`) and closes the connection. */
  async stop() {
    this.#stopped = true;
    this.quality?.stop();
    const resource = this.resource;
    this.resource = null;
    this.#close();
    // A move in progress: the session it was leaving ends too.
    const leaving = this.#leaving;
    this.#leaving = null;
    if (leaving) this.#letGo(leaving);
    if (resource) await this.#delete(resource);
  }
}

/**
 * Publishes tracks to a room over WHIP.
 *
 * ```js
 * const pub = new WhipPublisher({url: '/whip/demo', token});
 * await pub.publish(stream.getTracks(), {simulcast: true});
 * ```
 */
export class WhipPublisher extends HttpMediaSession {
  /**
   * @param {MediaStreamTrack[]} tracks at most one audio and one video
   * @param {{simulcast?: boolean}} [opts] send video as three simulcast layers
   */
  async publish(tracks, opts = {}) {
    const stream = new MediaStream(tracks);
    this.newPeerConnection((pc) => {
      for (const track of tracks) {
        /** @type {RTCRtpTransceiverInit} */
        const init = { direction: 'sendonly', streams: [stream] };
        if (track.kind === 'video' && opts.simulcast) {
          init.sendEncodings = SIMULCAST_LAYERS.map((l) => ({ ...l }));
        }
        pc.addTransceiver(track, init);
      }
    });
    await this.exchange();
  }

  /**
   * Sends another track of the same kind without a new session (a different
   * microphone, music instead of the microphone).
   * @param {'audio'|'video'} kind
   * @param {MediaStreamTrack|null} track
   */
  async replaceTrack(kind, track) {
    // By the m-line's kind (a receiver's track always has it), not the sender's track,
    // which is null after a replacement with null.
    const tr = this.pc?.getTransceivers().find((t) => t.receiver.track.kind === kind);
    if (!tr) throw new StreamCoreError('no_such_track', `this session sends no ${kind}`);
    await tr.sender.replaceTrack(track);
  }
}

/**
 * Plays a room over WHEP: the room's published audio and video, in publish order.
 *
 * ```js
 * const player = new WhepPlayer({url: '/whep/demo', token});
 * await player.play();
 * video.srcObject = player.stream;
 * ```
 */
export class WhepPlayer extends HttpMediaSession {
  /** What is received: one audio and (if asked) one video track. */
  stream = new MediaStream();

  /**
   * @param {{audio?: boolean, video?: boolean}} [what] default: both
   */
  async play(what = {}) {
    this.newPeerConnection((pc) => {
      pc.addEventListener('track', (e) => {
        // A move's new tracks stay silent while the old ones play: no double audio in
        // the half second both sessions run.
        if (this.moving) e.track.enabled = false;
        this.stream.addTrack(e.track);
        this.emit('track', e.track);
      });
      if (what.audio !== false) pc.addTransceiver('audio', { direction: 'recvonly' });
      if (what.video !== false) pc.addTransceiver('video', { direction: 'recvonly' });
    });
    await this.exchange();
  }

  /**
   * `pc`'s tracks leave `stream`, and the ones that stay play: after a move the new
   * connection's replace the old one's; after a failed move the old ones stay.
   * @protected
   * @override
   * @param {RTCPeerConnection} pc
   */
  retire(pc) {
    for (const r of pc.getReceivers()) this.stream.removeTrack(r.track);
    for (const t of this.stream.getTracks()) t.enabled = true;
  }
}

// ---- the room protocol ------------------------------------------------------------

/** @typedef {'camera'|'microphone'|'screen'|'screen_audio'|'music'|'unknown'} TrackSource */

/**
 * A track published in a room by someone else.
 */
export class RemoteTrack {
  /** The received media once subscribed, else `null`. @type {MediaStreamTrack|null} */
  mediaStreamTrack = null;
  /** @type {RTCRtpTransceiver|null} */
  transceiver = null;
  /** The layer cap asked for (0 lowest), `null` for none. @type {number|null} */
  maxLayer = null;
  paused = false;

  /**
   * @param {{id: string, participant: string, kind: 'audio'|'video', mid: string, muted: boolean, source?: TrackSource}} t
   */
  constructor(t) {
    /** `<participant sid>/<mid>` */
    this.id = t.id;
    this.participantSid = t.participant;
    this.kind = t.kind;
    this.muted = t.muted;
    /** @type {TrackSource} */
    this.source = t.source ?? 'unknown';
  }

  get subscribed() {
    return this.mediaStreamTrack !== null;
  }
}

/** A participant of the room other than this one. */
export class RemoteParticipant {
  /** @type {Map<string, RemoteTrack>} by track id */
  tracks = new Map();

  /**
   * @param {{sid: string, identity: string, name?: string, kind: string, connected: boolean}} p
   */
  constructor(p) {
    this.sid = p.sid;
    /** Unique in the room (an account's or device's id): a second session with it replaces the first. */
    this.identity = p.identity;
    /** What to show: the person's display name (or the device's name). */
    this.name = p.name ?? p.identity;
    /** `participant` (/rtc), `publisher` (WHIP) or `subscriber` (WHEP) */
    this.kind = p.kind;
    this.connected = p.connected;
  }
}

/** A track this participant publishes. */
export class LocalTrackPublication {
  /** `<sid>/<mid>` once negotiated. @type {string|null} */
  trackId = null;
  muted = false;
  /** The simulcast layers (rids) someone receives; `null` until the node said. @type {string[]|null} */
  layersWanted = null;
  /** The received layers nobody wants (their encodings are off). @type {string[]|null} */
  layersUnwanted = null;
  /** The last change of the encodings, awaited by the next (one at a time). @type {Promise<void>} */
  layersApplied = Promise.resolve();

  /**
   * @param {MediaStreamTrack} track
   * @param {RTCRtpTransceiver} transceiver
   * @param {TrackSource} source
   */
  constructor(track, transceiver, source) {
    this.track = track;
    this.transceiver = transceiver;
    this.source = source;
  }

  get kind() {
    return this.track.kind;
  }
}

/**
 * @typedef {object} RoomEvents
 * @property {{state: Room['state']}} state
 * @property {RemoteParticipant} participantJoined
 * @property {{participant: RemoteParticipant, reason: string}} participantLeft
 * @property {RemoteParticipant} participantConnected
 * @property {RemoteTrack} trackPublished someone published (also for the snapshot on join)
 * @property {RemoteTrack} trackUnpublished
 * @property {RemoteTrack} trackSubscribed its `mediaStreamTrack` is ready to play
 * @property {RemoteTrack} trackUnsubscribed
 * @property {{track: RemoteTrack|null, trackId: string, muted: boolean}} trackMuted
 * @property {LocalTrackPublication} localTrackPublished
 * @property {{participantSid: string, trackId: string}} activeSpeaker
 * @property {{from: string, fromIdentity: string, fromName: string, payload: any}} data
 * @property {QualityReport} quality this connection's quality, every 2 s
 * @property {{reason: string}} reconnecting the network went away; resuming
 * @property {{}} reconnected media flows again; nobody saw this participant leave
 * @property {{reason: string}} disconnected out of the room for good
 * @property {StreamCoreError} error a failure the page should show
 */

/** Room-protocol failures that a fresh join, not a resume, answers. */
const RESUME_FAILED = new Set(['resume_expired', 'forbidden', 'not_joined']);

/**
 * Requests waiting for their replies, by id, each with a deadline.
 */
class Replies {
  /** @type {Map<unknown, {resolve: (m: any) => void, reject: (e: any) => void, timer: ReturnType<typeof setTimeout>}>} */
  #waiting = new Map();

  /**
   * The reply to request `id` (register before sending).
   * @param {unknown} id
   * @param {string} what the request, for the timeout's message
   * @param {number} [ms]
   * @returns {Promise<any>}
   */
  wait(id, what, ms = 10_000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new StreamCoreError('timeout', `no answer to '${what}' in ${ms / 1000} s`));
      }, ms);
      this.#waiting.set(id, { resolve, reject, timer });
    });
  }

  /**
   * Settles request `id` with `reply`, or fails it with `error`. False when no request
   * waits under that id (the message is not a reply).
   * @param {unknown} id
   * @param {any} reply
   * @param {StreamCoreError|null} error
   */
  settle(id, reply, error) {
    const w = this.#waiting.get(id);
    if (!w) return false;
    this.#waiting.delete(id);
    clearTimeout(w.timer);
    if (error) w.reject(error);
    else w.resolve(reply);
    return true;
  }

  /**
   * Fails every waiting request: the connection they went out on is gone.
   * @param {StreamCoreError} error
   */
  failAll(error) {
    for (const w of this.#waiting.values()) {
      clearTimeout(w.timer);
      w.reject(error);
    }
    this.#waiting.clear();
  }
}

/**
 * A multi-party room over `/rtc` (docs/protocol.md): one WebSocket for signalling and
 * one peer connection, renegotiated by this client (it always offers; one offer in
 * flight at a time).
 *
 * ```js
 * const room = new Room({tokenProvider: () => fetchJoinToken('demo')});
 * room.on('trackSubscribed', (t) => attach(t));
 * await room.connect();
 * await room.publish(micTrack, {source: 'microphone'});
 * ```
 *
 * Lifecycle: `idle` → `connecting` → `connected` ⇄ `reconnecting` → `disconnected`
 * (left, replaced, or a reconnect that failed for good); `connect()` may start again
 * from `disconnected`. Every (re)connection has a generation: what an older socket or
 * request says once a newer one exists is ignored, and its requests are failed.
 * @extends {Emitter<RoomEvents>}
 */
export class Room extends Emitter {
  /** @type {'idle'|'connecting'|'connected'|'reconnecting'|'disconnected'} */
  state = 'idle';
  /** @type {{sid: string, identity: string, name: string}} */
  local = { sid: '', identity: '', name: '' };
  /** @type {Map<string, RemoteParticipant>} */
  participants = new Map();
  /** @type {Map<RTCRtpTransceiver, LocalTrackPublication>} */
  publications = new Map();
  /** @type {RTCPeerConnection|null} */
  pc = null;
  /** @type {QualityMonitor|null} */
  quality = null;
  /** @type {string|null} the active speaker's sid */
  activeSpeaker = null;
  /** @type {string} the room joined, as the server names it (for a room of the control API, its id) */
  roomName = '';
  /** @type {Record<string, boolean>} */
  grants = {};

  /** @type {WebSocket|null} */
  #ws = null;
  #nextId = 1;
  #replies = new Replies();
  /** @type {string|null} */
  #token = null;
  /** @type {{sid: string, token: string}|null} */
  #resume = null;
  /** @type {number} seconds a resume stays possible */
  #grace = 20;
  /** Receive transceivers of the current connection that carry nothing now. @type {{audio: RTCRtpTransceiver[], video: RTCRtpTransceiver[]}} */
  #free = { audio: [], video: [] };
  /** Track ids with a subscription under way. @type {Set<string>} */
  #subscribing = new Set();
  /** The negotiation loop running now, and a token naming it. @type {{run: Promise<void>}|null} */
  #negotiating = null;
  #dirty = false;
  #iceRestart = false;
  /** Bumped at every (re)connection and at teardown: stale sockets are ignored. */
  #generation = 0;
  /** @type {ReturnType<typeof setInterval>|null} */
  #pinger = null;
  /** @type {ReturnType<typeof setTimeout>|null} */
  #iceWatch = null;
  /** @type {(() => void)[]} */
  #unlisten = [];
  #leaving = false;
  /** @type {Promise<void>|null} */
  #reconnecting = null;
  #ownIceServers = false;

  /**
   * @param {object} opts
   * @param {() => Promise<string | {token: string, url?: string}>} opts.tokenProvider
   *   gives a join token (called again when a resume or rejoin needs a fresh one, and
   *   when the room's server cannot be reached); with a `url`, the room's `/rtc` as
   *   that token's grant names it (in a cluster, the server the room lives on now)
   * @param {string} [opts.url] the `/rtc` WebSocket URL (default: this origin's)
   * @param {RTCIceServer[]} [opts.iceServers] default: those `joined` hands out (the
   *   node's STUN/TURN, with fresh credentials at every resume)
   * @param {RTCIceTransportPolicy} [opts.iceTransportPolicy] `relay`: only through TURN
   * @param {boolean} [opts.autoSubscribe] subscribe to every track as it appears (default true)
   */
  constructor(opts) {
    super();
    this.tokenProvider = opts.tokenProvider;
    this.url = opts.url ?? socketUrl(undefined, '/rtc');
    this.iceServers = opts.iceServers ?? [];
    this.#ownIceServers = opts.iceServers !== undefined;
    this.iceTransportPolicy = opts.iceTransportPolicy ?? 'all';
    this.autoSubscribe = opts.autoSubscribe ?? true;
  }

  /** @param {Room['state']} s */
  #setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.emit('state', { state: s });
  }

  /** Joins the room. */
  async connect() {
    if (this.state !== 'idle' && this.state !== 'disconnected') {
      throw new StreamCoreError('already_connected', 'this room is already connected');
    }
    this.#leaving = false;
    this.#setState('connecting');
    try {
      await this.#takePass();
      await this.#open(false);
    } catch (e) {
      this.#teardown();
      this.#setState('disconnected');
      throw e;
    }
    this.#watchNetwork();
    this.#setState('connected');
    this.#subscribeAll();
  }

  /** Subscribes to every track not received yet (the snapshot's, after joining). */
  #subscribeAll() {
    if (!this.autoSubscribe || this.grants.subscribe === false) return;
    for (const p of this.participants.values()) {
      for (const t of p.tracks.values()) {
        if (!t.transceiver) this.subscribe(t).catch((e) => this.#fail(e));
      }
    }
  }

  /**
   * Throws when a newer connection or a leave made the work of `generation` pointless.
   * @param {number} generation
   */
  #stillCurrent(generation) {
    if (generation !== this.#generation || this.#leaving) {
      throw new StreamCoreError('cancelled', 'the connection was replaced or the room was left');
    }
  }

  /**
   * Opens a socket and joins (or resumes), then reconciles the snapshot. A room that
   * lives on another server answers `move`: the join goes there, with the same token.
   * @param {boolean} resume
   * @param {number} [moves] how many `move`s this join followed so far
   * @returns {Promise<void>}
   */
  async #open(resume, moves = 0) {
    const generation = ++this.#generation;
    // Requests sent on the previous socket will never be answered.
    this.#replies.failAll(new StreamCoreError('network', 'the connection to the room server was replaced'));
    clearInterval(this.#pinger ?? undefined);
    const ws = await this.#socket(generation);
    this.#stillCurrent(generation);
    /** @type {any} */
    const join = { type: 'join', token: this.#token, version: PROTOCOL_VERSION };
    if (resume && this.#resume) join.resume = this.#resume;
    const joined = await this.#request(join);
    this.#stillCurrent(generation);
    if (joined.type === 'move') {
      const to = new URL(String(joined.url));
      if (moves >= 3 || (to.protocol !== 'ws:' && to.protocol !== 'wss:')) {
        throw new StreamCoreError('moved', 'the room could not be found on any server; try again');
      }
      this.url = to.href;
      return this.#open(resume, moves + 1);
    }
    this.local = {
      sid: joined.participant.sid,
      identity: joined.participant.identity,
      name: joined.participant.name ?? joined.participant.identity,
    };
    this.roomName = joined.room;
    this.grants = joined.grants ?? {};
    this.#resume = { sid: joined.participant.sid, token: joined.resume_token };
    this.#grace = joined.resume_grace_secs ?? 20;
    if (!this.#ownIceServers && Array.isArray(joined.ice_servers)) {
      this.iceServers = joined.ice_servers;
      // A resumed connection restarts ICE next: with the fresh credentials.
      this.pc?.setConfiguration({ ...this.pc.getConfiguration(), iceServers: this.iceServers });
    }
    if (!this.pc) this.#newPeerConnection();
    this.#reconcile(joined.participants ?? []);
    this.#pinger = setInterval(() => this.#ping(ws), 10_000);
  }

  /**
   * A connected socket whose messages feed this room (within 10 s).
   * @param {number} generation
   * @returns {Promise<WebSocket>}
   */
  #socket(generation) {
    return new Promise((resolve, reject) => {
      this.#ws?.close();
      const ws = new WebSocket(this.url);
      this.#ws = ws;
      const timer = setTimeout(() => {
        reject(new StreamCoreError('network', 'the room server did not answer in 10 s'));
        ws.close();
      }, 10_000);
      ws.onopen = () => {
        clearTimeout(timer);
        resolve(ws);
      };
      ws.onerror = () => {
        clearTimeout(timer);
        reject(new StreamCoreError('network', 'could not reach the room server'));
      };
      ws.onmessage = (e) => {
        if (generation !== this.#generation) return;
        /** @type {any} */
        let m;
        try {
          m = JSON.parse(String(e.data));
        } catch {
          return;
        }
        this.#onMessage(m);
      };
      ws.onclose = () => {
        clearTimeout(timer);
        if (generation !== this.#generation) return;
        this.#replies.failAll(new StreamCoreError('network', 'the connection to the room server closed'));
        if (!this.#leaving && this.state === 'connected') this.#reconnect('socket closed');
      };
    });
  }

  /**
   * Sends a request and resolves with its reply (rejects with its `error`).
   * @param {Record<string, any>} msg
   * @returns {Promise<any>}
   */
  #request(msg) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new StreamCoreError('network', 'not connected to the room server'));
    }
    const id = this.#nextId++;
    const reply = this.#replies.wait(id, String(msg.type));
    ws.send(JSON.stringify({ ...msg, id }));
    return reply;
  }

  /** @param {WebSocket} ws */
  #ping(ws) {
    if (ws !== this.#ws || this.state !== 'connected') return;
    // A socket on a network that went away can stay "open" for minutes: no pong in
    // 5 s means it is gone.
    const dead = setTimeout(() => {
      if (ws === this.#ws && this.state === 'connected') this.#reconnect('no answer from the server');
    }, 5000);
    this.#request({ type: 'ping' }).then(
      () => clearTimeout(dead),
      () => {},
    );
  }

  /** @param {any} m */
  #onMessage(m) {
    if (typeof m.id === 'number') {
      const error = m.type === 'error' ? new StreamCoreError(m.code, m.message) : null;
      if (this.#replies.settle(m.id, m, error)) return;
    }
    switch (m.type) {
      case 'move':
        this.#move(String(m.url));
        break;
      case 'participant_joined':
        this.#addParticipant(m.participant);
        break;
      case 'participant_connected': {
        const p = this.participants.get(m.participant);
        if (p) {
          p.connected = true;
          this.emit('participantConnected', p);
        }
        break;
      }
      case 'participant_left':
        this.#removeParticipant(m.participant, m.reason);
        break;
      case 'track_published':
        this.#addTrack(m.track);
        break;
      case 'track_unpublished':
        this.#removeTrack(m.participant, m.track);
        break;
      case 'track_muted': {
        const t = this.participants.get(m.participant)?.tracks.get(m.track) ?? null;
        if (t) t.muted = m.muted;
        this.emit('trackMuted', { track: t, trackId: m.track, muted: m.muted });
        break;
      }
      case 'speaker_changed':
        this.activeSpeaker = m.participant;
        this.emit('activeSpeaker', { participantSid: m.participant, trackId: m.track });
        break;
      case 'layers_wanted':
        this.#applyLayers(m.track, m.unwanted ?? null, m.layers);
        break;
      case 'data':
        this.emit('data', {
          from: m.from,
          fromIdentity: m.from_identity,
          fromName: m.from_name ?? m.from_identity,
          payload: m.payload,
        });
        break;
      case 'left':
        this.#end(m.reason ?? 'left');
        break;
      case 'error':
        if (m.code === 'replaced') {
          // This participant was resumed on another socket (another tab, a reload).
          this.#end('replaced');
        } else if (m.code === 'too_slow' || m.code === 'draining') {
          this.#reconnect(m.code);
        } else {
          this.emit('error', new StreamCoreError(m.code, m.message));
        }
        break;
      default:
        break;
    }
  }

  /**
   * Reports a failure of something the client started on its own (an automatic
   * subscription); once the room has ended, what was in flight failing is no news.
   * @param {unknown} e
   */
  #fail(e) {
    if (this.#leaving || this.state === 'disconnected') return;
    this.emit('error', e instanceof StreamCoreError ? e : new StreamCoreError('failed', String(e)));
  }

  /**
   * Out of the room for good: everything is closed and forgotten, once.
   * @param {string} reason
   */
  #end(reason) {
    if (this.state === 'disconnected') return;
    this.#leaving = true;
    this.#teardown();
    this.#setState('disconnected');
    this.emit('disconnected', { reason });
  }

  /**
   * Brings the participant list in line with a snapshot (the first, or a resume's).
   * @param {any[]} snapshot
   */
  #reconcile(snapshot) {
    const seen = new Set();
    for (const p of snapshot) {
      seen.add(p.sid);
      const known = this.participants.get(p.sid);
      if (!known) {
        this.#addParticipant(p);
        continue;
      }
      known.connected = p.connected;
      const ids = new Set(p.tracks.map((/** @type {any} */ t) => t.id));
      for (const id of [...known.tracks.keys()]) if (!ids.has(id)) this.#removeTrack(p.sid, id);
      for (const t of p.tracks) if (!known.tracks.has(t.id)) this.#addTrack(t);
    }
    for (const sid of [...this.participants.keys()]) {
      if (!seen.has(sid)) this.#removeParticipant(sid, 'left');
    }
  }

  /** @param {any} p */
  #addParticipant(p) {
    if (p.sid === this.local.sid) return;
    const participant = new RemoteParticipant(p);
    this.participants.set(p.sid, participant);
    this.emit('participantJoined', participant);
    for (const t of p.tracks ?? []) this.#addTrack(t);
  }

  /**
   * @param {string} sid
   * @param {string} reason
   */
  #removeParticipant(sid, reason) {
    const p = this.participants.get(sid);
    if (!p) return;
    for (const id of [...p.tracks.keys()]) this.#removeTrack(sid, id);
    this.participants.delete(sid);
    this.emit('participantLeft', { participant: p, reason });
  }

  /** @param {any} t */
  #addTrack(t) {
    if (t.participant === this.local.sid) {
      for (const pub of this.publications.values()) {
        if (pub.transceiver.mid === t.mid) pub.trackId = t.id;
      }
      return;
    }
    const p = this.participants.get(t.participant);
    if (!p || p.tracks.has(t.id)) return;
    const track = new RemoteTrack(t);
    p.tracks.set(t.id, track);
    this.emit('trackPublished', track);
    // While joining, the snapshot's tracks wait for the join to finish.
    const live = this.state === 'connected' || this.state === 'reconnecting';
    if (live && this.autoSubscribe && this.grants.subscribe !== false) {
      this.subscribe(track).catch((e) => this.#fail(e));
    }
  }

  /**
   * @param {string} sid
   * @param {string} id
   */
  #removeTrack(sid, id) {
    const p = this.participants.get(sid);
    const t = p?.tracks.get(id);
    if (!p || !t) return;
    p.tracks.delete(id);
    this.#release(t);
    this.emit('trackUnpublished', t);
  }

  /**
   * Gives a track's receive m-line back to the pool (the node already unbound it).
   * @param {RemoteTrack} t
   */
  #release(t) {
    const tr = t.transceiver;
    if (!tr) return;
    t.transceiver = null;
    t.mediaStreamTrack = null;
    this.#pool(tr, t.kind);
    this.emit('trackUnsubscribed', t);
  }

  /**
   * A receive m-line back in the pool — only one of the current connection.
   * @param {RTCRtpTransceiver} tr
   * @param {'audio'|'video'} kind
   */
  #pool(tr, kind) {
    if (this.pc?.getTransceivers().includes(tr) && !this.#free[kind].includes(tr)) this.#free[kind].push(tr);
  }

  #newPeerConnection() {
    const pc = new RTCPeerConnection({
      iceServers: this.iceServers,
      iceTransportPolicy: this.iceTransportPolicy,
      bundlePolicy: 'max-bundle',
    });
    pc.addEventListener('icecandidate', (e) => {
      if (e.candidate?.candidate) {
        this.#request({ type: 'candidate', candidate: e.candidate.candidate }).catch(() => {});
      }
    });
    pc.addEventListener('connectionstatechange', () => this.#onPeerState(pc));
    this.pc = pc;
    this.quality = new QualityMonitor(pc);
    this.quality.on('quality', (q) => this.emit('quality', q));
    this.quality.start();
  }

  /** @param {RTCPeerConnection} pc */
  #onPeerState(pc) {
    if (pc !== this.pc) return;
    const s = pc.connectionState;
    if (this.#iceWatch) clearTimeout(this.#iceWatch);
    this.#iceWatch = null;
    if (s === 'failed') {
      this.#reconnect('media connection failed');
    } else if (s === 'disconnected') {
      // Often back on its own within a second or two; otherwise restart ICE.
      this.#iceWatch = setTimeout(() => {
        if (this.pc === pc && pc.connectionState === 'disconnected') this.#reconnect('media connection lost');
      }, 2500);
    } else if (s === 'connected' && this.state === 'reconnecting' && !this.#reconnecting) {
      this.#setState('connected');
      this.emit('reconnected', {});
    }
  }

  #watchNetwork() {
    this.#unlisten.push(
      onNetworkChange(() => {
        // The address may have changed: check the socket now; ICE restarts on resume.
        if (this.state === 'connected' && this.#ws) this.#ping(this.#ws);
      }),
    );
  }

  /**
   * Renegotiates until nothing changed during the last round: one offer in flight.
   * A round that fails leaves its change (an ICE restart included) for the next one.
   * @returns {Promise<void>}
   */
  #negotiate() {
    this.#dirty = true;
    if (this.#negotiating) return this.#negotiating.run;
    const mine = { run: Promise.resolve() };
    mine.run = (async () => {
      try {
        while (this.#dirty) {
          this.#dirty = false;
          const restart = this.#iceRestart;
          this.#iceRestart = false;
          try {
            const pc = this.#requirePc();
            await pc.setLocalDescription(await pc.createOffer({ iceRestart: restart }));
            /** @type {Record<string, TrackSource>} */
            const sources = {};
            for (const pub of this.publications.values()) {
              if (pub.transceiver.mid) sources[pub.transceiver.mid] = pub.source;
            }
            const answer = await this.#request({ type: 'offer', sdp: pc.localDescription?.sdp, sources });
            if (pc !== this.pc) return;
            await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
          } catch (e) {
            this.#dirty = true;
            this.#iceRestart ||= restart;
            throw e;
          }
        }
      } finally {
        // A teardown may have started another loop since: only this one lets go.
        if (this.#negotiating === mine) this.#negotiating = null;
      }
    })();
    this.#negotiating = mine;
    return mine.run;
  }

  /**
   * Publishes a track.
   * @param {MediaStreamTrack} track
   * @param {{source?: TrackSource, simulcast?: boolean, stream?: MediaStream}} [opts]
   *   `simulcast` sends video as three layers; `stream` groups tracks for lip sync
   * @returns {Promise<LocalTrackPublication>}
   */
  async publish(track, opts = {}) {
    const pc = this.#requirePc();
    /** @type {RTCRtpTransceiverInit} */
    const init = { direction: 'sendonly', streams: opts.stream ? [opts.stream] : [] };
    if (track.kind === 'video' && opts.simulcast) {
      init.sendEncodings = SIMULCAST_LAYERS.map((l) => ({ ...l }));
    }
    const tr = pc.addTransceiver(track, init);
    const source = opts.source ?? (track.kind === 'audio' ? 'microphone' : 'camera');
    const pub = new LocalTrackPublication(track, tr, source);
    this.publications.set(tr, pub);
    try {
      await this.#negotiate();
    } catch (e) {
      this.publications.delete(tr);
      tr.direction = 'inactive';
      tr.sender.replaceTrack(null).catch(() => {});
      throw e;
    }
    pub.trackId = `${this.local.sid}/${tr.mid}`;
    this.emit('localTrackPublished', pub);
    return pub;
  }

  /**
   * Stops publishing a track (its m-line goes inactive and may be reused later).
   * @param {LocalTrackPublication} pub
   */
  async unpublish(pub) {
    if (!this.publications.delete(pub.transceiver)) return;
    if (pub.transceiver.mid) {
      await this.#request({ type: 'unpublish', mid: pub.transceiver.mid }).catch(() => {});
    }
    await pub.transceiver.sender.replaceTrack(null);
    pub.transceiver.direction = 'inactive';
    await this.#negotiate();
  }

  /**
   * Mutes (or unmutes) a published track: the node stops forwarding it and everyone
   * hears `trackMuted`; the track also stops sending.
   * @param {LocalTrackPublication} pub
   * @param {boolean} muted
   */
  async setMuted(pub, muted) {
    pub.track.enabled = !muted;
    pub.muted = muted;
    if (pub.transceiver.mid) await this.#request({ type: 'mute', mid: pub.transceiver.mid, muted });
  }

  /**
   * Receives a track: a free receive m-line of its kind carries it (one is added and
   * negotiated when none is free).
   * @param {RemoteTrack} track
   * @param {{maxLayer?: number|null}} [opts] cap the simulcast layer (0 is the lowest)
   */
  async subscribe(track, opts = {}) {
    if (track.transceiver || this.#subscribing.has(track.id)) return;
    this.#subscribing.add(track.id);
    try {
      await this.#subscribe(track, opts);
    } finally {
      this.#subscribing.delete(track.id);
    }
  }

  /**
   * @param {RemoteTrack} track
   * @param {{maxLayer?: number|null}} opts
   */
  async #subscribe(track, opts) {
    const pc = this.#requirePc();
    const tr = this.#free[track.kind].pop() ?? pc.addTransceiver(track.kind, { direction: 'recvonly' });
    try {
      // A new m-line (or one whose negotiation failed) is negotiated first.
      if (!tr.mid) await this.#negotiate();
      const mid = tr.mid;
      if (!mid || pc !== this.pc) throw new StreamCoreError('not_negotiated', 'the receive m-line was not negotiated');
      if (opts.maxLayer !== undefined) track.maxLayer = opts.maxLayer;
      /** @type {Record<string, any>} */
      const msg = { type: 'subscribe', track: track.id, mid };
      if (track.maxLayer !== null) msg.max_layer = track.maxLayer;
      await this.#request(msg);
    } catch (e) {
      this.#pool(tr, track.kind);
      if (e instanceof StreamCoreError && e.code === 'unknown_track') return;
      throw e;
    }
    if (!this.participants.get(track.participantSid)?.tracks.has(track.id)) {
      // Unpublished meanwhile (the node unbound it).
      this.#pool(tr, track.kind);
      return;
    }
    track.transceiver = tr;
    track.mediaStreamTrack = tr.receiver.track;
    this.emit('trackSubscribed', track);
  }

  /**
   * Stops receiving a track; its m-line stays negotiated for the next one.
   * @param {RemoteTrack} track
   */
  async unsubscribe(track) {
    const mid = track.transceiver?.mid;
    if (!mid) return;
    await this.#request({ type: 'unsubscribe', mid });
    this.#release(track);
  }

  /**
   * Caps the simulcast layer of a subscribed track (`null` lifts the cap).
   * @param {RemoteTrack} track
   * @param {number|null} maxLayer
   */
  async setMaxLayer(track, maxLayer) {
    track.maxLayer = maxLayer;
    const mid = track.transceiver?.mid;
    if (mid) await this.#request({ type: 'update_subscription', mid, max_layer: maxLayer });
  }

  /**
   * Pauses a subscribed track (nothing is sent) or resumes it (video from a keyframe).
   * @param {RemoteTrack} track
   * @param {boolean} paused
   */
  async setPaused(track, paused) {
    track.paused = paused;
    const mid = track.transceiver?.mid;
    if (mid) await this.#request({ type: 'update_subscription', mid, paused });
  }

  /**
   * Sends a JSON payload to everyone else, or to the named identities.
   * @param {any} payload at most 16 KiB serialized
   * @param {{to?: string[]}} [opts]
   * @returns {Promise<number>} how many received it
   */
  async sendData(payload, opts = {}) {
    /** @type {Record<string, any>} */
    const msg = { type: 'data', payload };
    if (opts.to) msg.to = opts.to;
    const r = await this.#request(msg);
    return r.delivered ?? 0;
  }

  /**
   * Marks a chapter now in the room's running recording (needs the `record` grant):
   * a podcast episode made from the recording starts a chapter there.
   * @param {string} title
   * @returns {Promise<{id: string, at_ms: number, title: string, created_by: string}>}
   */
  async marker(title) {
    const r = await this.#request({ type: 'marker', title });
    return r.marker;
  }

  /**
   * Sets which simulcast layers a published track sends (`layers_wanted`): off the
   * ones the node received and nobody wants, on the rest. A layer the node never
   * received stays on (it may not have been sent yet, for bandwidth), or it could
   * never appear; an older node names only the wanted ones.
   * @param {string} trackId
   * @param {string[]|null} unwanted
   * @param {string[]} layers
   */
  async #applyLayers(trackId, unwanted, layers) {
    for (const pub of this.publications.values()) {
      if (pub.trackId !== trackId && `${this.local.sid}/${pub.transceiver.mid}` !== trackId) continue;
      pub.layersWanted = layers;
      pub.layersUnwanted = unwanted;
      // One change at a time, each with the latest wish: two setParameters calls in
      // flight make the second fail (its parameters are stale), and a layer would stay
      // off that someone wants again.
      pub.layersApplied = pub.layersApplied.then(async () => {
        const [wanted, off] = [pub.layersWanted ?? [], pub.layersUnwanted];
        const sender = pub.transceiver.sender;
        const params = sender.getParameters();
        if (!params.encodings || params.encodings.length < 2) return;
        let changed = false;
        for (const e of params.encodings) {
          const active = !e.rid || (off ? !off.includes(e.rid) : wanted.includes(e.rid));
          if (e.active !== active) {
            e.active = active;
            changed = true;
          }
        }
        if (changed) {
          await sender.setParameters(params).catch((e) => {
            this.emit('error', new StreamCoreError('layers_not_applied', `the simulcast layers could not be changed: ${e}`));
          });
        }
      });
      await pub.layersApplied;
    }
  }

  #requirePc() {
    if (!this.pc || (this.state !== 'connected' && this.state !== 'reconnecting')) {
      throw new StreamCoreError('not_connected', 'join the room first');
    }
    return this.pc;
  }

  /**
   * Resumes after a network change: a new socket takes the participant over within
   * the grace period, then an ICE restart moves media to the new path. Nobody sees
   * this participant leave. Called by the client itself when the socket or ICE is
   * lost; a page may call it when it knows the network changed.
   * @param {string} [reason]
   */
  async reconnect(reason = 'requested') {
    await this.#reconnect(reason);
  }

  /** @param {string} reason */
  #reconnect(reason) {
    if (this.#reconnecting) return this.#reconnecting;
    if (this.#leaving || (this.state !== 'connected' && this.state !== 'reconnecting')) return Promise.resolve();
    this.#setState('reconnecting');
    this.emit('reconnecting', { reason });
    this.#reconnecting = (async () => {
      try {
        const started = Date.now();
        const deadline = started + this.#grace * 1000;
        let delay = 0;
        for (;;) {
          await sleep(delay);
          if (this.#leaving) return;
          try {
            await this.#open(true);
            // The participant is back; now the media path: an ICE restart.
            await this.#negotiating?.run.catch(() => {});
            this.#iceRestart = true;
            await this.#negotiate();
            break;
          } catch (e) {
            if (this.#leaving) return;
            const code = e instanceof StreamCoreError ? e.code : '';
            if (code === 'token_expired' || code === 'token_revoked') {
              // Still within the grace: resume with a fresh token (after a room reset
              // or an access change, one the caller may still get).
              await this.#takePass();
              delay = 0;
              continue;
            }
            if (RESUME_FAILED.has(code) || Date.now() > deadline) {
              await this.#rejoin();
              return;
            }
            // Its server unreachable for a while (a blip is not worth a pass): the
            // room may have been placed on another one.
            if (code === 'network' && Date.now() - started > 1000 && (await this.#roomMoved())) {
              // Its server is gone, and the room was placed on another one.
              await this.#rejoin();
              return;
            }
            delay = Math.min(1000, Math.max(250, delay * 2));
          }
        }
        if (this.pc?.connectionState === 'connected') {
          this.#setState('connected');
          this.emit('reconnected', {});
        }
        // Else `#onPeerState` says so once ICE is up on the new path.
      } catch (e) {
        if (this.#leaving) return;
        if (e instanceof StreamCoreError && (e.status === 403 || e.status === 404)) {
          // The token provider was refused a new pass: this person may no longer
          // join (the owner reset the room, replaced its link, removed them).
          this.#end('revoked');
          return;
        }
        this.emit('error', e instanceof StreamCoreError ? e : new StreamCoreError('reconnect_failed', String(e)));
        this.#end('reconnect_failed');
      } finally {
        this.#reconnecting = null;
      }
    })();
    return this.#reconnecting;
  }

  /**
   * The room moved to another server (this one drains): join there as a new
   * participant with the same tracks.
   * @param {string} url its `/rtc`
   */
  #move(url) {
    let to;
    try {
      to = new URL(url);
    } catch {
      return;
    }
    if (to.protocol !== 'ws:' && to.protocol !== 'wss:') return;
    this.url = to.href;
    // A resume under way goes on at the new URL (and rejoins there).
    if (this.#leaving || this.#reconnecting || this.state !== 'connected') return;
    this.#setState('reconnecting');
    this.emit('reconnecting', { reason: 'moved' });
    this.#reconnecting = (async () => {
      try {
        await this.#rejoin();
      } catch (e) {
        if (this.#leaving) return;
        this.emit('error', e instanceof StreamCoreError ? e : new StreamCoreError('reconnect_failed', String(e)));
        this.#end('reconnect_failed');
      } finally {
        this.#reconnecting = null;
      }
    })();
  }

  /** A fresh join token from the provider, and the room's `/rtc` when it names one. */
  async #takePass() {
    const pass = await this.tokenProvider();
    if (typeof pass === 'string') {
      this.#token = pass;
      return;
    }
    this.#token = pass.token;
    if (pass.url) this.url = pass.url;
  }

  /**
   * Whether a fresh pass names another server for the room (its server died and the
   * room was placed again). False when none can be had right now.
   */
  async #roomMoved() {
    const before = this.url;
    try {
      await this.#takePass();
    } catch {
      return false;
    }
    return this.url !== before;
  }

  /** The resume window passed: a new participant with the same tracks. */
  async #rejoin() {
    const tracks = [...this.publications.values()].map((p) => ({
      track: p.track,
      source: p.source,
      simulcast: (p.transceiver.sender.getParameters().encodings?.length ?? 0) > 1,
      muted: p.muted,
    }));
    this.#reset();
    await this.#takePass();
    await this.#open(false);
    for (const t of tracks) {
      const pub = await this.publish(t.track, { source: t.source, simulcast: t.simulcast });
      if (t.muted) await this.setMuted(pub, true);
    }
    this.#setState('connected');
    this.emit('reconnected', {});
    this.#subscribeAll();
  }

  /**
   * For tests and demos: behaves as if the network did something.
   * - `socket-close`: the signalling socket drops (as on a network change); the client
   *   resumes and restarts ICE.
   * @param {'socket-close'} scenario
   */
  simulate(scenario) {
    if (scenario === 'socket-close') this.#ws?.close();
  }

  /** Leaves the room; others see `participant_left` at once. */
  async leave() {
    if (this.state === 'disconnected' || this.state === 'idle') return;
    this.#leaving = true;
    try {
      await this.#request({ type: 'leave' });
    } catch {
      // Gone already.
    }
    this.#end('left');
  }

  /**
   * Forgets the connection: the peer connection, what it carried, the participants
   * (each leaving), and the negotiation state. The socket is left to the caller.
   */
  #reset() {
    this.#replies.failAll(new StreamCoreError('network', 'the connection was reset'));
    this.quality?.stop();
    this.pc?.close();
    this.pc = null;
    for (const sid of [...this.participants.keys()]) this.#removeParticipant(sid, 'left');
    this.publications.clear();
    this.#free = { audio: [], video: [] };
    this.#subscribing.clear();
    this.#negotiating = null;
    this.#dirty = false;
    this.#iceRestart = false;
    this.#resume = null;
    this.activeSpeaker = null;
  }

  #teardown() {
    clearInterval(this.#pinger ?? undefined);
    if (this.#iceWatch) clearTimeout(this.#iceWatch);
    this.#generation++;
    this.#ws?.close();
    this.#ws = null;
    this.#reset();
    for (const u of this.#unlisten.splice(0)) u();
  }
}

// ---- the device and user sockets --------------------------------------------------

/**
 * @typedef {object} ApiSocketEvents
 * @property {{}} open authenticated
 * @property {{willRetry: boolean}} close
 * @property {StreamCoreError} error
 */

/**
 * A WebSocket of the control API that authenticates with the session's access token
 * (first message) and comes back by itself (backoff 0.5 s doubling to 15 s) until
 * closed or the session ends.
 */
class ApiSocketConnection {
  /** @type {WebSocket|null} */
  ws = null;
  #closed = false;
  #attempt = 0;
  /** @type {ReturnType<typeof setTimeout>|null} */
  #retry = null;
  /** @type {ReturnType<typeof setTimeout>|null} */
  #reauth = null;

  /**
   * @param {Session} session
   * @param {string} path
   * @param {{message: (m: any) => void, close: (willRetry: boolean) => void, error: (e: StreamCoreError) => void}} on
   */
  constructor(session, path, on) {
    this.session = session;
    this.path = path;
    this.on = on;
  }

  open() {
    if (this.ws) return;
    this.#closed = false;
    this.#connect();
  }

  async #connect() {
    this.#retry = null;
    if (this.#closed) return;
    let token;
    try {
      token = await this.session.accessToken();
    } catch (e) {
      // The session ended: no point retrying.
      this.on.error(e instanceof StreamCoreError ? e : new StreamCoreError('network', String(e)));
      return;
    }
    if (this.#closed || this.ws) return;
    const ws = new WebSocket(socketUrl(this.session.base, this.path));
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'auth', token }));
      this.#scheduleReauth(ws);
    };
    ws.onmessage = (e) => {
      /** @type {any} */
      let m;
      try {
        m = JSON.parse(String(e.data));
      } catch {
        return;
      }
      if (m.type === 'error' && m.request_id === undefined) {
        const code = String(m.error?.code ?? 'error');
        if (code === 'token_expired' || code === 'unauthorized' || code === 'session_ended') {
          // Refresh before the reconnect; a refresh that fails ends the session (as
          // it does after the account's sessions were ended).
          this.session.refresh().catch(() => this.close());
        }
      } else {
        this.#attempt = 0;
      }
      this.on.message(m);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.#reauth) clearTimeout(this.#reauth);
      this.#reauth = null;
      const willRetry = !this.#closed && !this.session.ended;
      this.on.close(willRetry);
      if (willRetry) {
        const delay = Math.min(15_000, 500 * 2 ** this.#attempt++);
        this.#retry = setTimeout(() => this.#connect(), delay);
      }
    };
  }

  /**
   * The node closes a socket when the token it was opened with expires: a minute
   * before that, a fresh token is sent in-band (`auth`), and again before that one ends.
   * @param {WebSocket} ws
   */
  #scheduleReauth(ws) {
    if (this.#reauth) clearTimeout(this.#reauth);
    const delay = Math.max(5_000, this.session.expiresAt - Date.now() - 60_000);
    this.#reauth = setTimeout(async () => {
      this.#reauth = null;
      if (this.ws !== ws) return;
      try {
        await this.session.refresh();
        const token = await this.session.accessToken();
        if (this.ws === ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'auth', token }));
      } catch {
        // The session ended: its 'ended' event tells the page; the node closes the socket.
      }
      if (this.ws === ws) this.#scheduleReauth(ws);
    }, delay);
  }

  /** @param {Record<string, any>} message */
  send(message) {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  close() {
    this.#closed = true;
    if (this.#retry) clearTimeout(this.#retry);
    this.#retry = null;
    if (this.#reauth) clearTimeout(this.#reauth);
    this.#reauth = null;
    const ws = this.ws;
    this.ws = null;
    ws?.close();
  }
}

/**
 * The error of a socket's `error` message.
 * @param {any} m
 */
const socketError = (m) => new StreamCoreError(String(m.error?.code ?? 'error'), String(m.error?.message ?? ''));

/**
 * @typedef {object} PlaybackState
 * @property {'playing'|'paused'|'stopped'} status
 * @property {number} [position_ms]
 * @property {number} [volume] 0–100
 * @property {Record<string, any>|null} [track] what is playing (title, artist, album, duration_ms, id)
 * @property {boolean} [live] the device is publishing
 */

/**
 * @typedef {object} DeviceCommand
 * @property {string} command_id
 * @property {'play'|'pause'|'resume'|'seek'|'next'|'previous'|'volume'} action
 * @property {number} [position_ms]
 * @property {number} [volume]
 * @property {string} [track_id]
 */

/**
 * @typedef {object} DeviceSocketEvents
 * @property {{device_id: string, heartbeat_interval_ms: number}} welcome
 * @property {DeviceCommand} command
 * @property {{message: string}} removed the device was removed from the account
 */

/**
 * The socket of a paired device: commands from the user's browsers arrive as
 * `command` events; the device reports its playback state and heartbeats.
 * @extends {Emitter<DeviceSocketEvents & ApiSocketEvents>}
 */
export class DeviceSocket extends Emitter {
  /** @type {ReturnType<typeof setInterval>|null} */
  #heartbeat = null;
  #conn;

  /**
   * @param {Session} session a device session
   * @param {{capabilities?: {mic?: boolean, camera?: boolean, screen?: boolean}}} [opts]
   */
  constructor(session, opts = {}) {
    super();
    this.capabilities = opts.capabilities;
    this.#conn = new ApiSocketConnection(session, '/api/v1/devices/socket', {
      message: (m) => this.#handle(m),
      close: (willRetry) => {
        if (this.#heartbeat) clearInterval(this.#heartbeat);
        this.#heartbeat = null;
        this.emit('close', { willRetry });
      },
      error: (e) => this.emit('error', e),
    });
  }

  /** Connects (and reconnects until {@link DeviceSocket.close}). */
  open() {
    this.#conn.open();
  }

  close() {
    this.#conn.close();
  }

  /** @param {any} m */
  #handle(m) {
    switch (m.type) {
      case 'welcome':
        if (this.#heartbeat) clearInterval(this.#heartbeat);
        this.#heartbeat = setInterval(() => this.heartbeat(), Math.max(1000, m.heartbeat_interval_ms));
        this.heartbeat();
        this.emit('open', {});
        this.emit('welcome', m);
        break;
      case 'command':
        this.emit('command', m);
        break;
      case 'error':
        if (m.error?.code === 'not_found') {
          this.emit('removed', { message: 'this device was removed from the account' });
          this.close();
        } else {
          this.emit('error', socketError(m));
        }
        break;
      default:
        break;
    }
  }

  heartbeat() {
    /** @type {Record<string, any>} */
    const m = { type: 'heartbeat' };
    if (this.capabilities) m.capabilities = this.capabilities;
    this.#conn.send(m);
  }

  /**
   * Reports the player's state (mirrored to every browser of the user).
   * @param {PlaybackState} state
   * @param {string} [commandId] the command it answers
   */
  sendState(state, commandId) {
    /** @type {Record<string, any>} */
    const m = { type: 'state', state };
    if (commandId) m.command_id = commandId;
    return this.#conn.send(m);
  }

  /** @param {Record<string, any>} [track] */
  trackEnded(track) {
    return this.#conn.send({ type: 'track_ended', track: track ?? null });
  }
}

/**
 * @typedef {object} UserSocketEvents
 * @property {{devices: any[], now_playing: {device_id: string, state: PlaybackState, updated_at: number}[]}} snapshot
 * @property {{event: string, event_id: string, time: string, data: any}} nowPlaying
 * @property {{event: string, event_id: string, time: string, data: any}} deviceStatus
 * @property {{event: string, event_id: string, time: string, data: any}} playbackEvent
 * @property {{event: string, event_id: string, time: string, data: any}} transcodeJob
 * @property {{event: string, event_id: string, time: string, data: any}} recording
 */

/**
 * A user's browser socket: a snapshot of the devices and what they play, then every
 * change; commands to a device go up the same socket.
 * @extends {Emitter<UserSocketEvents & ApiSocketEvents>}
 */
export class UserSocket extends Emitter {
  #nextRequest = 1;
  #replies = new Replies();
  #conn;

  /** @param {Session} session a user session */
  constructor(session) {
    super();
    this.#conn = new ApiSocketConnection(session, '/api/v1/events/socket', {
      message: (m) => this.#handle(m),
      close: (willRetry) => {
        this.#replies.failAll(new StreamCoreError('network', 'the connection closed'));
        this.emit('close', { willRetry });
      },
      error: (e) => this.emit('error', e),
    });
  }

  /** Connects (and reconnects, with a fresh snapshot, until {@link UserSocket.close}). */
  open() {
    this.#conn.open();
  }

  close() {
    this.#conn.close();
  }

  /** @param {any} m */
  #handle(m) {
    if (m.request_id !== undefined && this.#replies.settle(m.request_id, m, m.type === 'error' ? socketError(m) : null)) {
      return;
    }
    switch (m.type) {
      case 'snapshot':
        this.emit('open', {});
        this.emit('snapshot', m);
        break;
      case 'now_playing':
        this.emit('nowPlaying', m);
        break;
      case 'device_status':
        this.emit('deviceStatus', m);
        break;
      case 'playback_event':
        this.emit('playbackEvent', m);
        break;
      case 'transcode_job':
        this.emit('transcodeJob', m);
        break;
      case 'recording':
        this.emit('recording', m);
        break;
      case 'error':
        this.emit('error', socketError(m));
        break;
      default:
        break;
    }
  }

  /**
   * Commands a device (play, pause, resume, seek, next, previous, volume). Resolves
   * once the node accepted it; the device's new state arrives as `nowPlaying`.
   * @param {string} deviceId
   * @param {DeviceCommand['action']} action
   * @param {{position_ms?: number, volume?: number, track_id?: string}} [params]
   * @returns {Promise<{command_id: string, event_id: string}>}
   */
  command(deviceId, action, params = {}) {
    const id = this.#nextRequest++;
    const reply = this.#replies.wait(id, 'command');
    if (!this.#conn.send({ type: 'command', request_id: id, device_id: deviceId, action, ...params })) {
      this.#replies.settle(id, null, new StreamCoreError('network', 'not connected to the server'));
    }
    return reply;
  }
}

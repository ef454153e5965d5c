#!/usr/bin/env node
// The OpenID Connect provider the sign-in tests run against: the npm package
// `oidc-provider` (pinned in scripts/oidc/package-lock.json, installed by
// scripts/ensure-oidc-provider.sh, which prints the command that runs this file next to
// its node_modules) with its development interactions: a login form that takes any
// login name and any password, then a consent form.
//
//   provider --port 0 --client-id ID --client-secret SECRET \
//            --redirect-uri http://127.0.0.1:8080/auth/callback [--redirect-uri ...] \
//            [--keys private-jwks.json]
//
// Listens on 127.0.0.1:<port> (0: any free port) with the issuer
// http://127.0.0.1:<port>, and prints one line `READY <issuer>` on stdout once it
// listens; everything else goes to stderr. Discovery is at
// <issuer>/.well-known/openid-configuration; the routes are the package's defaults
// (/auth, /token, /jwks, /me, /interaction/<uid>).
//
// --any-loopback-port: http://127.0.0.1 redirect URIs match whatever their port (RFC 8252
// loopback redirection; the client is registered as application_type `native`), so the
// provider can be started before the relying party knows its port: register
// http://127.0.0.1/auth/callback and send http://127.0.0.1:PORT/auth/callback.
//
// --keys FILE: a private JWKS ({"keys": [...]}) to sign with; when FILE does not exist,
// one RS256 key with a random `kid` is made and written there. Start again with a new
// file to rotate the keys: tokens then carry a `kid` the relying party has not seen.
//
// Accounts: any login name is an account. sub = the login name; email = the login
// when it contains `@`, else `<login>@example.test`; email_verified = false when the
// login starts with `unverified`, else true; name = the part before `@`.
// Scopes openid, email, profile; the ID token carries email, email_verified and name
// (conformIdTokenClaims off) and is signed RS256.
//
// Test hooks on the same port, outside the provider:
//   POST /__test/mode  {"mode": "normal" | "tamper" | "wrong_audience" | "expired" | "wrong_nonce"}
//   GET  /__test/mode  -> {"mode": ...}
// change what POST /token returns from then on: `tamper` changes one character of the
// ID token's `email` claim and keeps the original signature (the payload still decodes
// as JSON; only the signature check fails); `wrong_audience` re-signs it with
// the provider's own key with aud "someone-else"; `expired` re-signs it with iat two
// hours and exp one hour ago; `wrong_nonce` re-signs it with another sign-in's nonce.
//
// Module resolution: `oidc-provider` is imported from the node_modules next to this
// file (the installed copy in the cache), or from the directory named by the env
// OIDC_PROVIDER_MODULES (a node_modules directory) when set: ESM ignores NODE_PATH.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

// stdout carries only the READY line: the package prints its notices with console.info.
console.log = console.info = console.debug = (...args) => console.error(...args);
const log = (...args) => console.error('oidc-provider:', ...args);

const { values: opts } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    'client-id': { type: 'string', default: 'streamcore' },
    'client-secret': { type: 'string', default: 'streamcore-secret' },
    'redirect-uri': { type: 'string', multiple: true, default: [] },
    keys: { type: 'string' },
    'any-loopback-port': { type: 'boolean', default: false },
  },
  strict: true,
});

async function importProvider() {
  const modules = process.env.OIDC_PROVIDER_MODULES;
  if (modules) {
    const require = createRequire(path.join(path.resolve(modules), '..', 'noop.js'));
    return (await import(pathToFileURL(require.resolve('oidc-provider')).href)).default;
  }
  return (await import('oidc-provider')).default;
}

function newRsaJwk() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: crypto.randomBytes(12).toString('base64url'),
    alg: 'RS256',
    use: 'sig',
  };
}

function loadKeys(file) {
  if (!file) return { keys: [newRsaJwk()] };
  if (fs.existsSync(file)) return JSON.parse(fs.readFileSync(file, 'utf8'));
  const jwks = { keys: [newRsaJwk()] };
  fs.writeFileSync(file, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
  log(`wrote a new RS256 key (kid ${jwks.keys[0].kid}) to ${file}`);
  return jwks;
}

const jwks = loadKeys(opts.keys);
const signingJwk = jwks.keys.find((k) => k.kty === 'RSA' && (!k.alg || k.alg === 'RS256'));
if (!signingJwk) throw new Error('the keys file has no RSA key for RS256');
const signingKey = crypto.createPrivateKey({ key: signingJwk, format: 'jwk' });

const redirectUris = opts['redirect-uri'].flatMap((u) => u.split(',')).map((u) => u.trim()).filter(Boolean);
if (redirectUris.length === 0) throw new Error('at least one --redirect-uri is required');

let mode = 'normal';
const MODES = new Set(['normal', 'tamper', 'wrong_audience', 'expired', 'wrong_nonce']);

const b64json = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

function resign(header, payload) {
  const input = `${b64json(header)}.${b64json(payload)}`;
  const sig = crypto.sign('sha256', Buffer.from(input), signingKey).toString('base64url');
  return `${input}.${sig}`;
}

function rewriteIdToken(idToken) {
  const [h, p, s] = idToken.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url').toString());
  const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
  switch (mode) {
    case 'tamper': {
      // One character of the email claim changed, the original signature kept: the
      // payload still decodes, so only a signature check can catch it.
      const email = String(payload.email ?? payload.sub);
      const changed = `${email[0] === 'x' ? 'y' : 'x'}${email.slice(1)}`;
      const tampered = b64json({ ...payload, ...(payload.email ? { email: changed } : { sub: changed }) });
      return `${h}.${tampered}.${s}`;
    }
    case 'wrong_audience':
      return resign(header, { ...payload, aud: 'someone-else' });
    case 'wrong_nonce':
      // A valid token minted for another sign-in (as a replayed or injected one is).
      return resign(header, { ...payload, nonce: 'another-sign-ins-nonce' });
    case 'expired': {
      const now = Math.floor(Date.now() / 1000);
      return resign(header, { ...payload, iat: now - 7200, exp: now - 3600 });
    }
    default:
      return idToken;
  }
}

const Provider = await importProvider();

const server = http.createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(Number(opts.port), '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

function accountOf(login) {
  const email = login.includes('@') ? login : `${login}@example.test`;
  return {
    accountId: login,
    async claims() {
      return {
        sub: login,
        email,
        email_verified: !login.startsWith('unverified'),
        name: email.split('@')[0],
      };
    },
  };
}

const provider = new Provider(issuer, {
  clients: [{
    client_id: opts['client-id'],
    client_secret: opts['client-secret'],
    redirect_uris: redirectUris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'RS256',
    // `native` is what makes the package match loopback redirect URIs port-agnostically.
    ...(opts['any-loopback-port'] ? { application_type: 'native' } : {}),
  }],
  jwks,
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  scopes: ['openid', 'email', 'profile'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
  },
  // Put the scopes' claims in the ID token, not only behind the userinfo endpoint.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  // The package's defaults, set so that it does not log a notice for each.
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 3600,
    Session: 24 * 3600,
    Grant: 24 * 3600,
  },
  features: { devInteractions: { enabled: true } },
  async findAccount(_ctx, id) {
    return accountOf(id);
  },
});

// The token endpoint's answers, changed by the test mode.
provider.use(async (ctx, next) => {
  await next();
  if (mode !== 'normal' && ctx.method === 'POST' && ctx.path === '/token'
      && ctx.status === 200 && ctx.body && typeof ctx.body.id_token === 'string') {
    // Koa serialises the new body and sets its Content-Length.
    ctx.body = { ...ctx.body, id_token: rewriteIdToken(ctx.body.id_token) };
    log(`token response id_token rewritten (${mode})`);
  }
});

for (const event of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error', 'jwks.error', 'discovery.error', 'end_session.error']) {
  provider.on(event, (...args) => log(event, args.at(-1)?.message ?? args.at(-1), args.at(-1)?.error_description ?? ''));
}

const callback = provider.callback();

function testHook(req, res) {
  const reply = (status, body) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  };
  const url = new URL(req.url, issuer);
  if (url.pathname !== '/__test/mode') return reply(404, { error: 'not_found' });
  if (req.method === 'GET') return reply(200, { mode });
  if (req.method !== 'POST') return reply(405, { error: 'method_not_allowed' });
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let next;
    try {
      next = JSON.parse(Buffer.concat(chunks).toString() || '{}').mode;
    } catch {
      return reply(400, { error: 'invalid JSON' });
    }
    if (!MODES.has(next)) return reply(400, { error: `unknown mode ${JSON.stringify(next)}` });
    mode = next;
    log(`test mode: ${mode}`);
    return reply(200, { mode });
  });
  return undefined;
}

server.on('request', (req, res) => {
  res.on('finish', () => log(req.method, req.url, res.statusCode));
  if (req.url.startsWith('/__test/')) return testHook(req, res);
  return callback(req, res);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}

log(`issuer ${issuer}, client ${opts['client-id']}, redirect_uris ${redirectUris.join(' ')}, kid ${signingJwk.kid}`);
process.stdout.write(`READY ${issuer}\n`);

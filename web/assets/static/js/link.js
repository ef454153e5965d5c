// @ts-check
/**
 * `/link-account`: where signing in with a provider lands when the email the provider
 * vouches for has a StreamCore account already. That account's password links the two
 * (never the provider's word alone) and signs in; from then on either signs in. The
 * link (`?token=`) lasts 15 minutes and works once.
 */
import { Session, StreamCoreError } from '/sdk/streamcore.js';
import { $, busy, explain, h, pageReady, query, say } from '/static/js/app.js';

const form = $('link-form', HTMLFormElement);
const password = $('link-password', HTMLInputElement);
const box = $('link-message');
const token = query().get('token');
/** The provider's name as the address gives it, until the node says it. */
let provider = query().get('provider') || 'the provider';
// The token should not linger in the address bar or the history.
history.replaceState(null, '', '/link-account');

/** The way back to signing in, instead of the form. */
function giveUp() {
  form.hidden = true;
  $('link-help').hidden = true;
  $('back').hidden = false;
}

function expired() {
  giveUp();
  say(box, `This link has expired, was used already, or was opened in another browser than the one you signed in with (it lasts 15 minutes there). Sign in with ${provider} again to start over.`);
}

if (!token) {
  giveUp();
  say(box, `This page needs the link that signing in with ${provider} sent you here with. Sign in again.`);
} else {
  try {
    const link = await Session.pendingLink(token);
    provider = link.provider;
    $('link-intro').replaceChildren(
      'Your ',
      h('strong', null, link.provider),
      ' account uses ',
      h('strong', { id: 'link-email' }, link.email),
      ', which already has a StreamCore account. Enter that account’s password to link them; from then on either signs you in.',
    );
    $('link-intro').hidden = false;
    $('link-username', HTMLInputElement).value = link.email;
    form.hidden = false;
    $('link-help').hidden = false;
  } catch (e) {
    if (e instanceof StreamCoreError && e.status === 404) expired();
    else {
      giveUp();
      say(box, explain(e));
    }
  }
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  if (!token) return;
  busy(form.querySelector('button'), box, async () => {
    try {
      await Session.linkProvider({ token, password: password.value });
    } catch (err) {
      if (err instanceof StreamCoreError && err.code === 'invalid_credentials') {
        say(box, 'That is not this account’s password. Try again; if you have forgotten it, use “Forgot password” on the sign-in page.');
        password.value = '';
        password.focus();
        return;
      }
      if (err instanceof StreamCoreError && err.code === 'already_linked') {
        giveUp();
        say(
          box,
          `This ${provider} account, or another ${provider} account, is linked to a StreamCore account already. Sign in with your password, then see “Sign-in providers” under your account.`,
        );
        return;
      }
      if (err instanceof StreamCoreError && err.status === 404) {
        expired();
        return;
      }
      throw err;
    }
    // Linked and signed in (the session's cookie is set): on to the account.
    location.href = '/';
  });
});
pageReady();
if (!form.hidden) password.focus();

// @ts-check
/** `/sign-up`: the link of a sign-up mail; the account is made here, with its password. */
import { Session, StreamCoreError } from '/sdk/streamcore.js';
import { $, AFTER_SIGN_UP, busy, pageReady, query } from '/static/js/app.js';

const form = $('signup-form', HTMLFormElement);
const box = $('signup-message');
const token = query().get('token');
if (token) {
  $('token', HTMLInputElement).value = token;
  // The token should not linger in the address bar or the history.
  history.replaceState(null, '', '/sign-up');
}
form.addEventListener('submit', (e) => {
  e.preventDefault();
  const f = new FormData(form);
  busy(form.querySelector('button'), box, async () => {
    try {
      await Session.completeSignUp({ token: String(f.get('token')).trim(), password: String(f.get('password')) });
    } catch (err) {
      // A spent or old link cannot be mended here: say so, and offer a new start.
      if (err instanceof StreamCoreError && (err.code === 'invalid_signup_token' || err.code === 'email_taken')) {
        $('again').hidden = false;
      }
      throw err;
    }
    // Back to where the person was going when they signed up (a room's link, say).
    const then = localStorage.getItem(AFTER_SIGN_UP);
    localStorage.removeItem(AFTER_SIGN_UP);
    location.href = then && then.startsWith('/') && !then.startsWith('//') ? then : '/';
  });
});
pageReady();

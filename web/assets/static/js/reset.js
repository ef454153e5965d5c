// @ts-check
/** `/reset-password`: the link of a reset mail; sets a new password with its token. */
import { Session } from '/sdk/streamcore.js';
import { $, busy, pageReady, query, say } from '/static/js/app.js';

const form = $('reset-form', HTMLFormElement);
const box = $('reset-message');
const token = query().get('token');
if (token) {
  $('token', HTMLInputElement).value = token;
  // The token should not linger in the address bar or the history.
  history.replaceState(null, '', '/reset-password');
}
form.addEventListener('submit', (e) => {
  e.preventDefault();
  const f = new FormData(form);
  busy(form.querySelector('button'), box, async () => {
    await Session.resetPassword(String(f.get('token')).trim(), String(f.get('password')));
    form.hidden = true;
    $('done').hidden = false;
    say(box, 'Your password is set. Every earlier sign-in was ended; sign in with the new password.', 'ok');
  });
});
pageReady();

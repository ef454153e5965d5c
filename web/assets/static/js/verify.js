// @ts-check
/** `/verify-email`: the link of a verification mail; confirms the account's address. */
import { Session } from '/sdk/streamcore.js';
import { $, explain, pageReady, query, say } from '/static/js/app.js';

const box = $('verify-message');
const token = query().get('token');
// The token should not linger in the address bar or the history.
history.replaceState(null, '', '/verify-email');
if (!token) {
  say(box, 'This link has no code in it. Open the link from the mail exactly as it came, or ask for a new mail from the devices page.');
} else {
  try {
    await Session.verifyEmail(token);
    say(box, 'Your email address is confirmed. You can now invite people to your rooms, and the full limits apply.', 'ok');
  } catch (e) {
    say(box, explain(e));
  }
}
pageReady();

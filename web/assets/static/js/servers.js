// @ts-check
/**
 * `/servers` (administrators): the cluster's media servers as the registry has them —
 * status, region, load, people, relay — refreshed every two seconds; a server drained with a
 * press (its rooms move to the others, then it stops), and one that is down for good
 * removed from the list.
 */
import { $, explain, h, pageReady, say, signedIn } from '/static/js/app.js';

const { session, me } = await signedIn();
const box = $('servers-message');
const list = $('servers');

/** @param {string} s */
const statusText = (s) => ({ active: 'up', draining: 'draining', dead: 'down' })[s] ?? s;

/** @param {number} bps */
const rate = (bps) => (bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`);

/** @param {any} n */
const item = (n) =>
  h(
    'li',
    { 'data-node': n.id, 'data-status': n.status },
    h(
      'div',
      { class: 'grow stack' },
      h(
        'div',
        { class: 'row spread' },
        h('strong', null, n.id),
        h('span', { class: `badge ${n.status === 'active' ? 'online' : n.status === 'draining' ? 'poor' : 'offline'}` }, statusText(n.status)),
      ),
      h(
        'div',
        { class: 'small muted' },
        [n.region && `region ${n.region}`, n.zone && `zone ${n.zone}`, n.public_url].filter(Boolean).join(' · '),
      ),
      h(
        'div',
        { class: 'small', 'data-role': 'load' },
        `${Math.round(n.load * 100)}% loaded · ${n.peers} of ${n.capacity} connections · ${rate(n.forwarded_bps)} out · ${n.workers} worker${n.workers === 1 ? '' : 's'}`,
      ),
      h(
        'div',
        { class: 'small muted', 'data-role': 'relay' },
        n.relay_addr
          ? `relay at ${n.relay_addr}`
          : 'no relay: its listeners of other servers’ rooms are sent there',
      ),
    ),
    n.status === 'active'
      ? h(
          'button',
          {
            type: 'button',
            class: 'secondary',
            'aria-label': `Drain ${n.id}`,
            onclick: async (/** @type {Event} */ e) => {
              if (!confirm(`Drain ${n.id}? Its rooms move to the other servers and it stops once they are gone.`)) return;
              const b = /** @type {HTMLButtonElement} */ (e.currentTarget);
              b.disabled = true;
              try {
                await session.post(`/admin/nodes/${encodeURIComponent(n.id)}/drain`, {});
                say(box, `${n.id} is draining: its rooms are moving to the other servers.`, 'info');
                await refresh();
              } catch (err) {
                b.disabled = false;
                say(box, explain(err));
              }
            },
          },
          'Drain',
        )
      : n.status === 'dead'
        ? h(
            'button',
            {
              type: 'button',
              class: 'secondary',
              'aria-label': `Remove ${n.id}`,
              onclick: async (/** @type {Event} */ e) => {
                if (!confirm(`Remove ${n.id} from the list? Do this for a server that will not come back.`)) return;
                const b = /** @type {HTMLButtonElement} */ (e.currentTarget);
                b.disabled = true;
                try {
                  await session.delete(`/admin/nodes/${encodeURIComponent(n.id)}`);
                  say(box, `${n.id} was removed from the list.`, 'info');
                  await refresh();
                } catch (err) {
                  b.disabled = false;
                  say(box, explain(err));
                }
              },
            },
            'Remove',
          )
        : null,
  );

const refresh = async () => {
  const nodes = await session.get('/admin/nodes');
  $('no-servers').hidden = nodes.length > 0;
  list.replaceChildren(...nodes.map(item));
};

if (me.role !== 'admin') {
  say(box, 'Only an administrator sees the servers.');
} else {
  await refresh().catch((e) => say(box, explain(e)));
  setInterval(() => refresh().catch((e) => say(box, explain(e))), 2000);
}
pageReady();

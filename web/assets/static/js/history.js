// @ts-check
/**
 * `/history`: what the user's phones played. The most played tracks, artists and
 * albums of a period and the plays themselves, newest first; both follow new plays
 * while the page is open (a phone's state changes arrive on the user socket, and the
 * server counts them a moment later).
 */
import { UserSocket } from '/sdk/streamcore.js';
import { $, clock, explain, h, pageReady, say, signedIn, when } from '/static/js/app.js';

const { session } = await signedIn();
const box = $('hist-message');
const period = $('period', HTMLSelectElement);
const PAGE = 50;
/** Device names by id (plays of a removed device say so). @type {Map<string, string>} */
let devices = new Map();
/** The oldest play shown, where "Show older plays" goes on. @type {{started_at: number, id: string}|null} */
let oldest = null;
/** The newest request of each kind: an answer to an older one is dropped. */
const latest = { stats: 0, plays: 0 };

/** @param {number} n */
const plays = (n) => `${n} ${n === 1 ? 'play' : 'plays'}`;

/** @param {number} ms listened */
const listened = (ms) => (ms >= 3_600_000 ? `${(ms / 3_600_000).toFixed(1)} h` : clock(ms));

/**
 * One entry of a top list.
 * @param {any} e
 * @param {string} name
 * @param {string} detail
 */
const ranked = (e, name, detail) =>
  h(
    'li',
    { 'data-plays': e.plays },
    h('div', { class: 'grow stack' }, h('strong', null, name), detail ? h('span', { class: 'small muted' }, detail) : null),
    h('span', { class: 'small', 'data-role': 'count' }, `${plays(e.plays)} · ${listened(e.listened_ms)}`),
  );

/**
 * @param {string} id
 * @param {HTMLElement[]} items
 * @param {string} empty
 */
const fill = (id, items, empty) => {
  $(id).replaceChildren(...(items.length ? items : [h('li', { class: 'muted' }, empty)]));
};

const loadStats = async () => {
  const mine = ++latest.stats;
  const s = await session.get(`/me/stats?period=${encodeURIComponent(period.value)}&limit=10`);
  if (mine !== latest.stats) return;
  $('totals').textContent = s.plays
    ? `${plays(s.plays)}, ${listened(s.listened_ms)} of listening ${s.since ? `since ${when(s.since)}` : 'in all'}.`
    : 'No plays in this period.';
  fill('top-tracks', s.top_tracks.map((/** @type {any} */ t) => ranked(t, t.title, [t.artist, t.album].filter(Boolean).join(' — '))), 'No tracks yet.');
  fill('top-artists', s.top_artists.map((/** @type {any} */ a) => ranked(a, a.artist, '')), 'No artists yet.');
  fill('top-albums', s.top_albums.map((/** @type {any} */ a) => ranked(a, a.album, a.artist)), 'No albums yet.');
};

/** @param {any} p */
const playItem = (p) =>
  h(
    'li',
    { 'data-play': p.id },
    h(
      'div',
      { class: 'grow stack' },
      h('strong', null, p.title),
      h('span', { class: 'small muted' }, [p.artist, p.album].filter(Boolean).join(' — ')),
    ),
    h(
      'span',
      { class: 'small' },
      `${when(p.started_at)} · ${listened(p.listened_ms)} on ${devices.get(p.device_id) ?? 'a removed device'}`,
    ),
  );

/**
 * The newest plays, merged into the list: new ones on top, those shown updated in
 * place (a play in progress listens longer), older pages the person opened kept.
 */
const loadNewest = async () => {
  const mine = ++latest.plays;
  const list = await session.get(`/me/plays?limit=${PAGE}`);
  if (mine !== latest.plays) return;
  const ul = $('plays');
  /** @type {Map<string, Element>} */
  const shown = new Map([...ul.children].map((li) => [li.getAttribute('data-play') ?? '', li]));
  const first = ul.firstElementChild;
  for (const p of list) {
    const li = playItem(p);
    const old = shown.get(p.id);
    if (old) old.replaceWith(li);
    else ul.insertBefore(li, first);
  }
  if (oldest === null && list.length) {
    oldest = list[list.length - 1];
    $('more').hidden = list.length < PAGE;
  }
  $('no-plays').hidden = ul.children.length > 0;
};

/** The page of plays before the oldest shown. */
const loadOlder = async () => {
  if (!oldest) return;
  const from = oldest;
  const list = await session.get(`/me/plays?limit=${PAGE}&before=${from.started_at}&before_id=${encodeURIComponent(from.id)}`);
  if (oldest !== from) return;
  $('plays').append(...list.map(playItem));
  if (list.length) oldest = list[list.length - 1];
  $('more').hidden = list.length < PAGE;
};

const loadDevices = async () => {
  const list = await session.get('/devices');
  devices = new Map(list.map((/** @type {any} */ d) => [d.id, d.name]));
};

/** Everything again, saying what went wrong in the page. */
const refresh = async () => {
  try {
    await Promise.all([loadStats(), loadNewest()]);
    say(box, '');
  } catch (e) {
    say(box, `The history could not be loaded: ${explain(e)}`);
  }
};

period.addEventListener('change', refresh);
$('more').addEventListener('click', () => loadOlder().catch((e) => say(box, explain(e))));

await loadDevices().catch(() => {});
await refresh();

// A phone's new state may end or grow a play: look again once the server counted it.
/** @type {ReturnType<typeof setTimeout>|null} */
let again = null;
const socket = new UserSocket(session);
socket.on('nowPlaying', () => {
  if (again) clearTimeout(again);
  again = setTimeout(refresh, 1500);
});
socket.on('deviceStatus', () => loadDevices().catch(() => {}));
socket.open();
pageReady();

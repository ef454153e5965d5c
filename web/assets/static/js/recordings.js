// @ts-check
/**
 * `/recordings`: start and stop recording a room, the room's recordings with their
 * status (live from the user socket), a player per recorded track, and podcast
 * mixdowns: progress, the episode with its waveform, and every stem to download.
 */
import { StreamCoreError, UserSocket } from '/sdk/streamcore.js';
import { $, busy, clock, explain, h, pageReady, parseTime, query, say, signedIn, stageText, when } from '/static/js/app.js';

const { session } = await signedIn();
const box = $('rec-message');
const select = $('room', HTMLSelectElement);
const list = $('recordings');

const rooms = await session.get('/rooms');
rooms.sort((/** @type {any} */ a, /** @type {any} */ b) => Number(a.name.startsWith('device-')) - Number(b.name.startsWith('device-')) || a.name.localeCompare(b.name));
let room = query().get('room') ?? rooms[0]?.name ?? null;
$('no-rooms').hidden = rooms.length > 0;
select.replaceChildren(
  ...rooms.map((/** @type {any} */ r) =>
    h('option', { value: r.name, selected: r.name === room }, r.name.startsWith('device-') ? `${r.name} (a phone’s live room)` : r.name),
  ),
);
if (room && !rooms.some((/** @type {any} */ r) => r.name === room)) {
  say(box, `You have no room called “${room}”.`);
  room = null;
}

/** @type {Map<string, any>} recordings of the room, by id */
const recordings = new Map();
/** Progress of running mixdowns (from events), by job id. @type {Map<string, {stage: string, percent: number}>} */
const progress = new Map();

/** The chosen room's id: what its recording events name. */
const roomId = () => rooms.find((/** @type {any} */ r) => r.name === room)?.id;

/** @param {string} path */
const api = (path) => `/rooms/${encodeURIComponent(roomId() ?? /** @type {string} */ (room))}/recordings${path}`;

/**
 * @param {{files: {name: string, url: string}[]}} holder
 * @param {string} name
 */
const url = (holder, name) => holder.files?.find((f) => f.name === name)?.url;

/** @param {any} r */
const statusBadge = (r) => {
  const text = { recording: 'recording', stopped: 'stopped — storing…', uploaded: 'stored', failed: `failed${r.failure ? `: ${r.failure}` : ''}` };
  const cls = { recording: 'live', stopped: 'reconnecting', uploaded: 'online', failed: 'offline' };
  return h(
    'span',
    { class: `badge ${/** @type {Record<string, string>} */ (cls)[r.status] ?? ''}`, 'data-status': r.status },
    /** @type {Record<string, string>} */ (text)[r.status] ?? r.status,
  );
};

/**
 * A player for one stored media file.
 * @param {string|undefined} src
 * @param {string} kind `audio` or `video`
 * @param {string} label
 */
const player = (src, kind, label) =>
  src
    ? h(kind === 'video' ? 'video' : 'audio', { controls: true, preload: 'metadata', src, class: kind === 'video' ? 'preview clip' : undefined, 'aria-label': label })
    : h('span', { class: 'small muted' }, 'available once stored');

/**
 * A mixdown job: progress, or its episode and stems.
 * @param {any} r
 * @param {any} j
 */
const mixdownView = (r, j) => {
  if (j.status === 'completed') {
    const res = j.result ?? {};
    const episodeSvg = 'episode.waveform.svg';
    return h(
      'div',
      { class: 'stack', 'data-mixdown': j.id, 'data-status': j.status },
      h('h3', null, 'Podcast episode'),
      player(url(j, 'episode.opus'), 'audio', `Episode of the recording of ${when(r.started_at)}`),
      url(j, episodeSvg) ? h('img', { class: 'waveform', src: url(j, episodeSvg), alt: 'Waveform of the episode' }) : null,
      h(
        'div',
        { class: 'row small' },
        h('a', { class: 'button secondary', href: url(j, 'episode.opus'), download: `${room}-${r.id.slice(0, 8)}.opus` }, 'Download the episode'),
        h('span', { class: 'muted' }, `${clock(res.duration_ms)} at ${res.episode?.loudness?.output_lufs?.toFixed?.(1) ?? '−16'} LUFS`),
      ),
      h('h3', null, 'One stem per speaker'),
      h(
        'ul',
        { class: 'list' },
        ...(res.stems ?? []).map((/** @type {any} */ s) =>
          h(
            'li',
            null,
            h(
              'div',
              { class: 'grow stack' },
              h('strong', null, s.speaker),
              url(j, s.waveform.replace(/\.json$/, '.svg'))
                ? h('img', { class: 'waveform', src: url(j, s.waveform.replace(/\.json$/, '.svg')), alt: `Waveform of ${s.speaker}` })
                : null,
            ),
            h('a', { class: 'button secondary', href: url(j, s.file), download: `${s.speaker}.opus` }, `Download ${s.speaker}`),
          ),
        ),
      ),
    );
  }
  const p = progress.get(j.id);
  const text = j.status === 'failed' ? `failed: ${j.last_error ?? ''}` : p ? `${stageText(p.stage)} ${p.percent}%` : j.status === 'retrying' ? 'retrying…' : 'waiting for a worker…';
  return h('p', { class: j.status === 'failed' ? 'message error' : 'message info', 'data-mixdown': j.id, 'data-status': j.status, role: 'status' }, `Making the episode: ${text}`);
};

/** @param {any} r */
const item = (r) => {
  // Raw tracks deleted past the room's retention: none to list or mix down again.
  const tracks = r.tracks_deleted_at ? [] : (r.manifest?.tracks ?? []);
  const mix = r.mixdowns?.[0];
  const make = h(
    'button',
    {
      type: 'button',
      class: 'secondary',
      hidden: Boolean(r.tracks_deleted_at),
      disabled: r.status !== 'uploaded' || (mix && mix.status !== 'completed' && mix.status !== 'failed'),
    },
    mix ? 'Make the episode again' : 'Make a podcast episode',
  );
  make.addEventListener('click', () =>
    busy(/** @type {HTMLButtonElement} */ (make), box, async () => {
      const j = await session.post(api(`/${encodeURIComponent(r.id)}/mixdown`), {});
      r.mixdowns = [j, ...(r.mixdowns ?? [])];
      show(r);
    }),
  );
  const stop = r.status === 'recording' ? h('button', { type: 'button', class: 'danger' }, 'Stop') : null;
  stop?.addEventListener('click', () => stopRecording(r.id, /** @type {HTMLButtonElement} */ (stop)));
  const remove = r.status === 'uploaded' || r.status === 'failed' ? h('button', { type: 'button', class: 'secondary', 'data-role': 'delete', 'aria-label': `Delete the recording of ${when(r.started_at)}` }, 'Delete') : null;
  remove?.addEventListener('click', () => {
    if (!confirm(`Delete the recording of ${when(r.started_at)} with its tracks and mixdowns? Podcast episodes made from it stay.`)) return;
    busy(/** @type {HTMLButtonElement} */ (remove), box, async () => {
      await session.delete(api(`/${encodeURIComponent(r.id)}`));
      recordings.delete(r.id);
      rows.get(r.id)?.remove();
      rows.delete(r.id);
      controls();
      say(box, 'The recording and its files are deleted.', 'ok');
    });
  });
  const took = r.stopped_at ? clock(r.stopped_at - r.started_at) : '';
  return h(
    'li',
    { 'data-recording': r.id },
    h(
      'div',
      { class: 'grow stack' },
      h('div', { class: 'row spread' }, h('strong', null, when(r.started_at)), h('div', { class: 'row' }, took ? h('span', { class: 'time' }, took) : null, statusBadge(r), stop, remove)),
      tracks.length
        ? h(
            'ul',
            { class: 'list' },
            ...tracks.map((/** @type {any} */ t) =>
              h(
                'li',
                { 'data-file': t.file },
                h(
                  'div',
                  { class: 'grow stack' },
                  h('div', null, h('strong', null, t.participant), ` — ${t.kind}, ${t.codec}, ${clock(t.duration_ms)}`, t.error ? h('span', { class: 'small muted' }, ` (${t.error})`) : null),
                  player(url(r, t.file), t.kind, `${t.kind} of ${t.participant}`),
                ),
                url(r, t.file) ? h('a', { class: 'button secondary', href: url(r, t.file), download: t.file }, 'Download') : null,
              ),
            ),
          )
        : r.tracks_deleted_at
          ? null
          : h('p', { class: 'small muted' }, r.status === 'recording' ? 'Tracks appear here when the recording stops.' : 'No tracks.'),
      r.tracks_deleted_at
        ? h('p', { class: 'small muted', 'data-role': 'tracks-deleted' }, `The raw tracks were deleted on ${when(r.tracks_deleted_at)}, as this room keeps them; the mixdowns stay.`)
        : null,
      r.markers?.length
        ? h(
            'p',
            { class: 'small', 'data-role': 'markers' },
            'Chapters: ',
            r.markers.map((/** @type {any} */ m) => `${clock(m.at_ms - r.started_at)} ${m.title}`).join(' · '),
          )
        : null,
      r.status !== 'recording' && r.stopped_at && r.status !== 'failed' ? laterMarker(r) : null,
      h('div', { class: 'row' }, make),
      mix ? mixdownView(r, mix) : null,
    ),
  );
};

/**
 * A chapter added to a stopped recording at a time inside it (the host forgot to mark it).
 * @param {any} r
 */
const laterMarker = (r) => {
  const at = h('input', { name: 'at', required: true, placeholder: 'm:ss', size: 7, 'aria-label': 'Chapter starts at (m:ss)' });
  const title = h('input', { name: 'title', required: true, maxlength: 200, placeholder: 'e.g. Outro', 'aria-label': 'New chapter title' });
  const add = h('button', { type: 'submit', class: 'secondary' }, 'Add chapter');
  const said = h('span', { class: 'small', 'aria-live': 'polite', 'data-role': 'later-marker-said' });
  const form = h('form', { class: 'row', 'data-role': 'later-marker' }, h('span', { class: 'small muted' }, 'Add a chapter at'), at, title, add, said);
  const length = r.stopped_at - r.started_at;
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const offset = parseTime(/** @type {HTMLInputElement} */ (at).value);
    if (offset === null) {
      said.textContent = 'Write the time as minutes:seconds, for example 1:30.';
      return;
    }
    if (offset > length) {
      said.textContent = `The recording is ${clock(length)} long: pick a time inside it.`;
      return;
    }
    busy(/** @type {HTMLButtonElement} */ (add), box, async () => {
      const m = await session.post(api(`/${encodeURIComponent(r.id)}/markers`), { title: /** @type {HTMLInputElement} */ (title).value, at_ms: r.started_at + offset });
      r.markers = [...(r.markers ?? []), m].sort((x, y) => x.at_ms - y.at_ms);
      show(r);
    });
  });
  return form;
};

/** Rows by recording id: one changes without touching the others (whose players may be playing). */
/** @type {Map<string, HTMLElement>} */
const rows = new Map();

/**
 * Shows one recording: its row is rebuilt, the others stay as they are.
 * @param {any} r
 */
const show = (r) => {
  recordings.set(r.id, r);
  const li = item(r);
  const old = rows.get(r.id);
  if (old) old.replaceWith(li);
  else list.prepend(li);
  rows.set(r.id, li);
  controls();
};

/** The start/stop controls and the empty note, from what is recording. */
const controls = () => {
  const items = [...recordings.values()];
  $('none').hidden = items.length > 0;
  const active = items.find((r) => r.status === 'recording');
  $('start').hidden = Boolean(active);
  $('stop').hidden = !active;
  $('marker-form').hidden = !active;
  const st = $('rec-state');
  st.textContent = active ? 'recording' : 'not recording';
  st.className = `badge ${active ? 'live' : 'offline'}`;
  $('start', HTMLButtonElement).disabled = !room;
};

const load = async () => {
  recordings.clear();
  rows.clear();
  list.replaceChildren();
  // The retention is in its select before the list shows, so that what a person
  // (or a test) reads beside the list is never the page's default; either request
  // failing still leaves the other's part on the page, and its error is said.
  const [listed, retention] = await Promise.allSettled([room ? session.get(api('')) : [], loadRetention()]);
  if (listed.status === 'fulfilled') {
    const all = listed.value;
    // Oldest first, each on top: newest first on the page.
    all.sort((/** @type {any} */ a, /** @type {any} */ b) => a.started_at - b.started_at);
    for (const r of all) show(r);
  }
  controls();
  if (listed.status === 'rejected') throw listed.reason;
  if (retention.status === 'rejected') throw retention.reason;
};

/** @param {string} id */
const refresh = async (id) => {
  const r = await session.get(api(`/${encodeURIComponent(id)}`)).catch(() => null);
  if (r) show(r);
};

/**
 * @param {string} id
 * @param {HTMLButtonElement} button
 */
const stopRecording = (id, button) =>
  busy(button, box, async () => {
    const r = await session.post(api(`/${encodeURIComponent(id)}/stop`)).catch((e) => {
      if (e instanceof StreamCoreError && e.code === 'not_recording') return null;
      throw e;
    });
    if (r) show(r);
  });

$('start').addEventListener('click', () =>
  busy($('start', HTMLButtonElement), box, async () => {
    const r = await session.post(api(''));
    show(r);
  }),
);
/** The room's retention of raw tracks, in the select (a value the list lacks is added). */
const loadRetention = async () => {
  const form = $('retention-form');
  form.hidden = !room;
  if (!room) return;
  const r = await session.get(`/rooms/${encodeURIComponent(room)}/retention`);
  const sel = $('retention', HTMLSelectElement);
  const value = r.tracks_days === null ? '' : String(r.tracks_days);
  if (![...sel.options].some((o) => o.value === value)) {
    sel.append(h('option', { value }, `are deleted ${value} days after a mixdown`));
  }
  sel.value = value;
  $('retention-said').textContent = '';
};
$('retention-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const v = $('retention', HTMLSelectElement).value;
  busy($('save-retention', HTMLButtonElement), box, async () => {
    await session.put(`/rooms/${encodeURIComponent(room)}/retention`, { tracks_days: v === '' ? null : Number(v) });
    $('retention-said').textContent = v === '' ? 'Saved: raw tracks are kept.' : 'Saved: raw tracks go that long after a mixdown; episodes and stems stay.';
  });
});
$('marker-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const active = [...recordings.values()].find((r) => r.status === 'recording');
  const input = $('marker-title', HTMLInputElement);
  if (!active || !input.value.trim()) return;
  busy($('mark', HTMLButtonElement), box, async () => {
    const m = await session.post(api(`/${encodeURIComponent(active.id)}/markers`), { title: input.value });
    active.markers = [...(active.markers ?? []), m];
    show(active);
    $('marker-said').textContent = `Marked “${m.title}” at ${clock(m.at_ms - active.started_at)}.`;
    input.value = '';
  });
});
$('stop').addEventListener('click', () => {
  const active = [...recordings.values()].find((r) => r.status === 'recording');
  if (active) stopRecording(active.id, $('stop', HTMLButtonElement));
});
select.addEventListener('change', () => {
  room = select.value;
  history.replaceState(null, '', `/recordings?room=${encodeURIComponent(room)}`);
  load().catch((e) => say(box, explain(e)));
});

const socket = new UserSocket(session);
socket.on('recording', (e) => {
  // Recordings made before rooms were known by id name the room by its name.
  if (room && (e.data.room === roomId() || e.data.room === room)) refresh(e.data.recording_id);
});
socket.on('transcodeJob', (e) => {
  const d = e.data;
  if (d.kind !== 'mixdown') return;
  const owner = [...recordings.values()].find((r) => r.mixdowns?.some((/** @type {any} */ j) => j.id === d.job_id));
  if (e.event === 'transcode.progress') {
    progress.set(d.job_id, { stage: d.stage, percent: d.percent });
    // Only the progress line changes.
    const line = list.querySelector(`[data-mixdown="${CSS.escape(d.job_id)}"]`);
    const job = owner?.mixdowns.find((/** @type {any} */ j) => j.id === d.job_id);
    if (line && owner && job) line.replaceWith(mixdownView(owner, job));
  } else if (owner) {
    progress.delete(d.job_id);
    refresh(owner.id);
  }
});
socket.open();
pageReady();

await load().catch((e) => say(box, explain(e)));

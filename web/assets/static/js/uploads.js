// @ts-check
/**
 * `/uploads`: drop an audio file; it uploads (with progress), becomes a transcode job
 * whose progress arrives live on the user socket, and the result plays here with its
 * waveform.
 */
import { StreamCoreError, UserSocket } from '/sdk/streamcore.js';
import { $, bytes, clock, explain, h, pageReady, say, signedIn, stageText, when } from '/static/js/app.js';

const { session } = await signedIn();
const box = $('up-message');
const list = $('jobs');
/** @type {Map<string, any>} */
const jobs = new Map();
/** Upload progress of files still sending, by a local key. @type {Map<string, {name: string, sent: number, total: number}>} */
const sending = new Map();

/** @param {any} j */
const statusText = (j) =>
  ({
    queued: 'waiting',
    running: `${stageText(j.stage)} ${j.percent ?? 0}%`,
    retrying: `retrying (${j.last_error ?? ''})`,
    completed: 'done',
    failed: `failed: ${j.last_error ?? ''}`,
  })[/** @type {string} */ (j.status)] ?? j.status;

/**
 * @param {any} j
 * @param {string} name
 */
const fileUrl = (j, name) => j.files?.find((/** @type {any} */ f) => f.name === name)?.url;

/** @param {number|null|undefined} x */
const lufs = (x) => (typeof x === 'number' ? x.toFixed(1) : '—');

/**
 * Deletes a finished upload and its files, after asking.
 * @param {any} j
 */
const remove = async (j) => {
  const name = j.spec?.source?.name ?? 'this upload';
  if (!confirm(`Delete “${name}” and its files? This cannot be undone.`)) return;
  const button = /** @type {HTMLButtonElement|null} */ (rows.get(j.id)?.li.querySelector('[data-role=delete]') ?? null);
  if (button) button.disabled = true;
  try {
    await session.delete(`/uploads/${encodeURIComponent(j.id)}`).catch((e) => {
      // Deleted already (another tab, or a click whose answer was lost): as asked.
      if (!(e instanceof StreamCoreError && e.status === 404)) throw e;
    });
    rows.get(j.id)?.li.remove();
    rows.delete(j.id);
    jobs.delete(j.id);
    $('none').hidden = rows.size > 0 || sending.size > 0;
    say(box, `“${name}” was deleted.`, 'info');
  } catch (e) {
    if (button) button.disabled = false;
    say(box, `“${name}” was not deleted: ${explain(e)}`);
  }
};

/** @param {any} j */
const item = (j) => {
  const src = j.spec?.source ?? {};
  const loud = j.result?.loudness;
  return h(
    'li',
    { 'data-job': j.id, 'data-status': j.status },
    h(
      'div',
      { class: 'grow stack' },
      h(
        'div',
        { class: 'row spread' },
        h('strong', null, src.name ?? j.id),
        h(
          'span',
          { class: 'row' },
          h('span', { class: 'small muted' }, when(j.created_at)),
          h(
            'button',
            { type: 'button', class: 'secondary', 'data-role': 'delete', 'aria-label': `Delete ${src.name ?? 'the upload'}`, onclick: () => remove(jobs.get(j.id) ?? j) },
            'Delete',
          ),
        ),
      ),
      h('div', { class: 'progress', role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100, 'aria-label': `Progress of ${src.name ?? 'the upload'}` }, h('div')),
      h('div', { class: 'small', 'data-role': 'status' }, statusText(j)),
      j.status === 'completed'
        ? h(
            'div',
            { class: 'stack' },
            h('audio', { controls: true, preload: 'metadata', src: fileUrl(j, 'audio.opus') }),
            fileUrl(j, 'waveform.svg') ? h('img', { class: 'waveform', src: fileUrl(j, 'waveform.svg'), alt: `Waveform of ${src.name ?? 'the result'}` }) : null,
            h(
              'div',
              { class: 'small muted' },
              `${clock(j.result?.duration_ms)} · ${loud ? `${lufs(loud.input_lufs)} → ${lufs(loud.output_lufs)} LUFS` : ''}`,
              ' · ',
              h('a', { href: fileUrl(j, 'audio.opus'), download: `${(src.name ?? 'audio').replace(/\.[^.]+$/, '')}.opus` }, 'Download'),
            ),
          )
        : null,
    ),
  );
};

/**
 * Shows a job's progress in its row, in place.
 * @param {HTMLElement} li
 * @param {any} j
 */
const update = (li, j) => {
  li.setAttribute('data-status', j.status);
  // Only a finished upload can go: a running one is still writing its files.
  /** @type {HTMLElement} */ (li.querySelector('[data-role=delete]')).hidden = !['completed', 'failed'].includes(j.status);
  const status = /** @type {HTMLElement} */ (li.querySelector('[data-role=status]'));
  status.textContent = statusText(j);
  const percent = j.status === 'completed' ? 100 : j.percent ?? 0;
  const bar = /** @type {HTMLElement} */ (li.querySelector('.progress'));
  bar.setAttribute('aria-valuenow', String(percent));
  // Widths through the DOM, not inline styles (the page's policy refuses those).
  /** @type {HTMLElement} */ (bar.firstElementChild).style.width = `${percent}%`;
};

/** Rows by job id; a row is rebuilt only when its job completes (its player appears). */
/** @type {Map<string, {li: HTMLElement, completed: boolean}>} */
const rows = new Map();

/**
 * Shows a job: updates its row in place (a playing result keeps playing).
 * @param {any} j
 * @param {'top'|'bottom'} [where] where a new row goes
 */
const show = (j, where = 'top') => {
  jobs.set(j.id, j);
  const row = rows.get(j.id);
  const completed = j.status === 'completed';
  if (row && row.completed === completed) {
    update(row.li, j);
    return;
  }
  const li = item(j);
  if (row) row.li.replaceWith(li);
  else if (where === 'top') list.prepend(li);
  else list.append(li);
  rows.set(j.id, { li, completed });
  update(li, j);
  $('none').hidden = true;
};

const renderSending = () => {
  $('sending').replaceChildren(
    ...[...sending.entries()].map(([key, s]) =>
      h(
        'li',
        { 'data-sending': key },
        h(
          'div',
          { class: 'grow stack' },
          h('strong', null, s.name),
          h('progress', { max: s.total || 1, value: s.sent, 'aria-label': `Uploading ${s.name}` }),
          h('div', { class: 'small' }, `uploading ${bytes(s.sent)} of ${bytes(s.total)}`),
        ),
      ),
    ),
  );
  $('none').hidden = rows.size > 0 || sending.size > 0;
};

const existing = await session.get('/uploads');
existing.sort((/** @type {any} */ a, /** @type {any} */ b) => b.created_at - a.created_at);
for (const j of existing) show(j, 'bottom');
$('none').hidden = rows.size > 0;

const socket = new UserSocket(session);
socket.on('transcodeJob', async (e) => {
  const id = e.data.job_id;
  if (!jobs.has(id) && e.data.kind !== 'transcode') return;
  if (e.event === 'transcode.progress' && jobs.has(id)) {
    show({ ...jobs.get(id), status: 'running', stage: e.data.stage, percent: e.data.percent });
    return;
  }
  // Completion and failures: the job's view carries the results and links.
  const j = await session.get(`/uploads/${encodeURIComponent(id)}`).catch(() => null);
  if (j) show(j);
});
socket.open();

/** @param {File} file */
const upload = async (file) => {
  const key = `${file.name}-${Date.now()}`;
  sending.set(key, { name: file.name, sent: 0, total: file.size });
  renderSending();
  say(box, '');
  try {
    const target = $('target', HTMLSelectElement).value;
    const j = await session.upload(`/uploads?name=${encodeURIComponent(file.name)}&target_lufs=${target}`, file, (sent, total) => {
      sending.set(key, { name: file.name, sent, total });
      renderSending();
    });
    // Events may have shown it already; the answer is older than they are.
    if (!rows.has(j.id)) show(j);
  } catch (e) {
    say(box, `${file.name}: ${explain(e)}`);
  } finally {
    sending.delete(key);
    renderSending();
  }
};

const drop = $('drop');
const input = $('file', HTMLInputElement);
input.addEventListener('change', () => {
  for (const f of input.files ?? []) upload(f);
  input.value = '';
});
drop.addEventListener('dragover', (e) => {
  e.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  for (const f of e.dataTransfer?.files ?? []) upload(f);
});
pageReady();

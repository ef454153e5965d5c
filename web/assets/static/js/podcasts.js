// @ts-check
/**
 * `/podcasts`: the person's podcast shows. A show has its details, artwork and a
 * public RSS feed; its episodes are made from a finished upload or a recording's
 * mixdown, with chapters, and are drafts until published now or at a time chosen.
 * `/podcasts?show=<id>` opens one show (the page switches without reloading, and the
 * browser's Back goes back).
 */
import { StreamCoreError } from '/sdk/streamcore.js';
import { $, bytes, clock, explain, h, pageReady, parseTime, query, say, signedIn, when } from '/static/js/app.js';

/**
 * @typedef {{start_ms: number, title: string}} Chapter
 * @typedef {{id: string, title: string, description: string, author: string, language: string,
 *   category: string, explicit: boolean, artwork_url: string|null, feed_url: string, episodes: number,
 *   created_at: number, updated_at: number}} Show
 * @typedef {{id: string, show_id: string, guid: string, title: string, description: string,
 *   status: 'draft'|'scheduled'|'published', publish_at: number|null, season: number|null,
 *   episode: number|null, duration_ms: number, audio_url: string, audio_bytes: number, audio_type: string,
 *   chapters: Chapter[], source_job: string, created_at: number, updated_at: number}} Episode
 * @typedef {{job_id: string, kind: 'upload'|'mixdown', title: string, duration_ms: number,
 *   created_at: number, chapters: Chapter[]}} Source
 * @typedef {{error: HTMLElement, status: HTMLElement|null}} Area where a part of the page
 *   says what went wrong (`role=alert`) and what went well (`aria-live`)
 */

const { session } = await signedIn();

/** A check of the page's own that failed: its message, and the control to fix. */
class Invalid extends Error {
  /**
   * @param {string} message
   * @param {HTMLElement} [input]
   */
  constructor(message, input) {
    super(message);
    this.name = 'Invalid';
    this.input = input;
  }
}

/** @param {string} key the ids `<key>-message` and `<key>-status` */
const area = (key) => ({ error: $(`${key}-message`), status: document.getElementById(`${key}-status`) });

/**
 * Says what went well in `where`, and clears what went wrong there.
 * @param {Area} where
 * @param {string} text
 */
const done = (where, text) => {
  say(where.error, '');
  if (where.status) say(where.status, text, 'ok');
  else say(where.error, text, 'ok');
};

/** @param {Area} where */
const quiet = (where) => {
  say(where.error, '');
  if (where.status) say(where.status, '', 'ok');
};

/** @param {HTMLElement} el */
const mark = (el) => {
  el.setAttribute('aria-invalid', 'true');
  el.focus();
};

/**
 * Runs `f` with `button` disabled; a failure is said in `where` in words, and the
 * field it is about (a check of the page's, or the server's `error.field` in `form`)
 * marked invalid and focused.
 * @template T
 * @param {HTMLButtonElement|HTMLInputElement|null} button
 * @param {Area} where
 * @param {() => Promise<T>} f
 * @param {{form?: HTMLFormElement|null, words?: (e: unknown) => string}} [opts]
 * @returns {Promise<T|undefined>}
 */
async function act(button, where, f, opts = {}) {
  if (button) button.disabled = true;
  quiet(where);
  for (const el of opts.form?.querySelectorAll('[aria-invalid]') ?? []) el.removeAttribute('aria-invalid');
  try {
    return await f();
  } catch (e) {
    if (e instanceof Invalid) {
      say(where.error, e.message);
      if (e.input) mark(e.input);
      return undefined;
    }
    say(where.error, (opts.words ?? explain)(e));
    const field = e instanceof StreamCoreError && e.field && opts.form ? opts.form.elements.namedItem(e.field) : null;
    if (field instanceof HTMLElement) mark(field);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/** @param {string} s */
const enc = (s) => encodeURIComponent(s);

/**
 * A public URL of the node's (`/feeds/…`: artwork, audio) as this page loads it: on the
 * page's own origin, which the page's policy allows and which may be another name of
 * the node than its public URL.
 * @param {string} url
 */
const local = (url) => {
  const u = new URL(url, location.href);
  return u.pathname.startsWith('/feeds/') ? u.pathname + u.search : url;
};

/**
 * The show's artwork as the page shows it: a new picture under the same address is
 * fetched again.
 * @param {Show} s
 */
const artworkSrc = (s) => {
  if (!s.artwork_url) return '';
  const u = new URL(local(s.artwork_url), location.href);
  u.searchParams.set('v', String(s.updated_at));
  return u.origin === location.origin ? u.pathname + u.search : u.href;
};

/** @param {number} n */
const episodesText = (n) => `${n} ${n === 1 ? 'episode' : 'episodes'}`;

/**
 * A time as a `datetime-local` input holds it (the browser's time zone).
 * @param {number} ms
 */
const localInput = (ms) => {
  const d = new Date(ms);
  const p = (/** @type {number} */ n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
};

/**
 * A form's control by name.
 * @param {HTMLFormElement} form
 * @param {string} name
 */
const field = (form, name) => {
  const el = form.elements.namedItem(name);
  if (!(el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement || el instanceof HTMLSelectElement)) {
    throw new Error(`no field ${name} in #${form.id}`);
  }
  return el;
};

/**
 * A whole number of a number input, or null when it is empty.
 * @param {HTMLInputElement} input
 * @param {string} what
 */
const whole = (input, what) => {
  if (input.value.trim() === '' && !input.validity.badInput) return null;
  const n = Number(input.value);
  if (!Number.isInteger(n) || n < 1) throw new Invalid(`The ${what} number is a whole number from 1, or empty.`, input);
  return n;
};

// ---- chapters --------------------------------------------------------------------

/**
 * An editable list of chapters: a row each of a start time and a title, rows added
 * and removed.
 * @param {Chapter[]} initial
 */
function chapterEditor(initial) {
  const list = h('ol', { class: 'chapter-rows', 'data-role': 'chapters' });
  const none = h('p', { class: 'small muted', 'data-role': 'no-chapters' }, 'No chapters.');
  const renumber = () => {
    [...list.children].forEach((li, i) => {
      li.querySelector('[data-role=start]')?.setAttribute('aria-label', `Start of chapter ${i + 1}`);
      li.querySelector('[data-role=chapter-title]')?.setAttribute('aria-label', `Title of chapter ${i + 1}`);
      li.querySelector('[data-role=remove-chapter]')?.setAttribute('aria-label', `Remove chapter ${i + 1}`);
    });
    none.hidden = list.children.length > 0;
  };
  /** @param {Chapter|null} c */
  const row = (c) => {
    const li = h(
      'li',
      { 'data-chapter': '' },
      h('input', {
        type: 'text',
        'data-role': 'start',
        // What it was, to the millisecond, while the text still says it (a marker's time).
        'data-ms': c ? String(c.start_ms) : undefined,
        value: c ? clock(c.start_ms) : '',
        placeholder: 'm:ss',
        autocomplete: 'off',
        spellcheck: 'false',
      }),
      h('input', { type: 'text', 'data-role': 'chapter-title', value: c?.title ?? '', maxlength: '200', autocomplete: 'off' }),
      h(
        'button',
        {
          type: 'button',
          class: 'secondary',
          'data-role': 'remove-chapter',
          onclick: () => {
            const next = li.nextElementSibling ?? li.previousElementSibling;
            li.remove();
            renumber();
            /** @type {HTMLElement|null} */ ((next ?? el).querySelector('input, button'))?.focus();
          },
        },
        'Remove',
      ),
    );
    return li;
  };
  const add = h(
    'button',
    {
      type: 'button',
      class: 'secondary',
      'data-role': 'add-chapter',
      onclick: () => {
        const li = row(null);
        list.append(li);
        renumber();
        /** @type {HTMLElement|null} */ (li.querySelector('input'))?.focus();
      },
    },
    'Add a chapter',
  );
  const el = h(
    'fieldset',
    { class: 'chapters' },
    h('legend', null, 'Chapters'),
    h('p', { class: 'small muted' }, 'Where each part begins (m:ss or h:mm:ss, such as 4:05 or 1:02:30) and its title. Podcast apps list them and skip to them.'),
    none,
    list,
    h('div', { class: 'row' }, add),
  );
  /** @param {Chapter[]} chapters */
  const set = (chapters) => {
    list.replaceChildren(...chapters.map(row));
    renumber();
  };
  /**
   * The chapters as written, in time order; throws {@link Invalid} naming the row.
   * @param {number|null} durationMs the episode's length, when known
   * @returns {Chapter[]}
   */
  const read = (durationMs) => {
    /** @type {{start_ms: number, title: string, input: HTMLInputElement}[]} */
    const out = [];
    [...list.children].forEach((li, i) => {
      const start = /** @type {HTMLInputElement} */ (li.querySelector('[data-role=start]'));
      const title = /** @type {HTMLInputElement} */ (li.querySelector('[data-role=chapter-title]'));
      const t = start.value.trim();
      const name = title.value.trim();
      if (!t && !name) return;
      const n = i + 1;
      if (!t) throw new Invalid(`Chapter ${n} needs a start time, such as 4:05 (m:ss) or 1:02:30 (h:mm:ss).`, start);
      let ms = parseTime(t);
      if (ms === null) {
        throw new Invalid(`Chapter ${n}: “${t}” is not a time. Write it as m:ss or h:mm:ss, such as 4:05 or 1:02:30.`, start);
      }
      const was = start.getAttribute('data-ms');
      if (was !== null && clock(Number(was)) === t) ms = Number(was);
      if (durationMs && ms >= durationMs) {
        throw new Invalid(`Chapter ${n} starts at ${t}, after the episode ends (${clock(durationMs)}).`, start);
      }
      if (!name) throw new Invalid(`Chapter ${n} needs a title.`, title);
      out.push({ start_ms: ms, title: name, input: start });
    });
    out.sort((a, b) => a.start_ms - b.start_ms);
    for (let i = 1; i < out.length; i++) {
      if (out[i].start_ms === out[i - 1].start_ms) {
        throw new Invalid(`Two chapters start at ${clock(out[i].start_ms)}: give each its own time.`, out[i].input);
      }
    }
    return out.map(({ start_ms, title }) => ({ start_ms, title }));
  };
  set(initial);
  return { el, set, read };
}

// ---- state -----------------------------------------------------------------------

/** Apple's categories, for the selects. @type {string[]} */
const categories = await session.get('/podcasts/categories');
/** The show open, if one is. @type {Show|null} */
let current = null;
/** The open show's episodes by id. @type {Map<string, Episode>} */
const episodes = new Map();
/** What episodes can be made from, by job id. @type {Map<string, Source>} */
const sources = new Map();
/** A look again once a scheduled episode's time came. @type {ReturnType<typeof setTimeout>|null} */
let againAt = null;
/** Changes made here to the open show's episodes, counted: a list asked for before one is out of date. */
let edits = 0;

const page = area('pod');
const showArea = area('show');
const artworkArea = area('artwork');
const episodesArea = area('episodes');
const newShowArea = area('new-show');
const newEpisodeArea = area('new-episode');

const newShow = $('new-show', HTMLFormElement);
const showForm = $('show-form', HTMLFormElement);
const newEpisode = $('new-episode', HTMLFormElement);
const sourceSelect = $('ep-source', HTMLSelectElement);
const artworkInput = $('artwork', HTMLInputElement);
const newChapters = chapterEditor([]);
$('new-chapters').replaceWith(newChapters.el);
newChapters.el.id = 'new-chapters';

/**
 * @param {HTMLSelectElement} select
 * @param {string} chosen
 */
const fillCategories = (select, chosen) => {
  const names = chosen && !categories.includes(chosen) ? [...categories, chosen] : categories;
  select.replaceChildren(h('option', { value: '' }, 'Choose a category'), ...names.map((c) => h('option', { value: c }, c)));
  select.value = chosen;
};
fillCategories(/** @type {HTMLSelectElement} */ (field(newShow, 'category')), '');

/**
 * The show's fields as a form holds them.
 * @param {HTMLFormElement} form
 */
const readShow = (form) => ({
  title: field(form, 'title').value.trim(),
  description: field(form, 'description').value.trim(),
  author: field(form, 'author').value.trim(),
  language: field(form, 'language').value.trim(),
  category: field(form, 'category').value,
  explicit: /** @type {HTMLInputElement} */ (field(form, 'explicit')).checked,
});

// ---- the list of shows -------------------------------------------------------------

/** @param {Show} s */
const showItem = (s) =>
  h(
    'li',
    { 'data-show': s.id },
    s.artwork_url ? h('img', { class: 'artwork thumb', src: artworkSrc(s), alt: '' }) : null,
    h(
      'div',
      { class: 'grow stack' },
      h(
        'a',
        {
          href: `/podcasts?show=${enc(s.id)}`,
          'data-role': 'open',
          onclick: (/** @type {MouseEvent} */ e) => {
            if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
            e.preventDefault();
            go(s.id);
          },
        },
        h('strong', null, s.title),
      ),
      h('span', { class: 'small muted' }, `${episodesText(s.episodes)} · ${s.category}${s.explicit ? ' · explicit' : ''} · since ${when(s.created_at)}`),
    ),
  );

/** @param {() => boolean} [stale] true once another route has begun (its answer is not shown) */
const listShows = async (stale = () => false) => {
  current = null;
  if (againAt) clearTimeout(againAt);
  againAt = null;
  document.title = 'Podcasts — StreamCore';
  const shows = /** @type {Show[]} */ (await session.get('/podcasts/shows'));
  if (stale()) return;
  $('show-view').hidden = true;
  $('list-view').hidden = false;
  $('shows').replaceChildren(...shows.map(showItem));
  $('no-shows').hidden = shows.length > 0;
};

newShow.addEventListener('submit', (e) => {
  e.preventDefault();
  act(
    newShow.querySelector('button[type=submit]'),
    newShowArea,
    async () => {
      const s = /** @type {Show} */ (await session.post('/podcasts/shows', readShow(newShow)));
      newShow.reset();
      await go(s.id);
      done(showArea, `“${s.title}” is created. Add its artwork and episodes, then give podcast apps its feed URL.`);
    },
    { form: newShow },
  );
});

// ---- one show ----------------------------------------------------------------------

/** @param {Show} s */
const renderShow = (s) => {
  current = s;
  document.title = `${s.title} — Podcasts — StreamCore`;
  $('show-title').textContent = s.title;
  field(showForm, 'title').value = s.title;
  field(showForm, 'description').value = s.description;
  field(showForm, 'author').value = s.author;
  field(showForm, 'language').value = s.language;
  fillCategories(/** @type {HTMLSelectElement} */ (field(showForm, 'category')), s.category);
  /** @type {HTMLInputElement} */ (field(showForm, 'explicit')).checked = s.explicit;
  renderArtwork(s);
  $('feed-url', HTMLInputElement).value = s.feed_url;
  $('feed-link', HTMLAnchorElement).href = s.feed_url;
};

/** @param {Show} s */
const renderArtwork = (s) => {
  const img = $('artwork-preview', HTMLImageElement);
  img.hidden = !s.artwork_url;
  if (s.artwork_url) img.src = artworkSrc(s);
  else img.removeAttribute('src');
  $('no-artwork').hidden = !!s.artwork_url;
};

/**
 * @param {string} id
 * @param {() => boolean} stale true once another route has begun (its answer is not shown)
 */
const openShow = async (id, stale) => {
  /** @type {Show} */
  let s;
  try {
    s = await session.get(`/podcasts/shows/${enc(id)}`);
  } catch (e) {
    if (stale() || !(e instanceof StreamCoreError && e.status === 404)) throw e;
    history.replaceState(null, '', '/podcasts');
    await listShows(stale);
    if (!stale()) say(page.error, 'This show no longer exists: it may have been deleted.');
    return;
  }
  if (stale()) return;
  for (const a of [showArea, artworkArea, episodesArea, newEpisodeArea]) quiet(a);
  if (current?.id !== id) {
    newEpisode.reset();
    newChapters.set([]);
    $('episodes').replaceChildren();
    episodes.clear();
  }
  renderShow(s);
  $('list-view').hidden = true;
  $('show-view').hidden = false;
  await Promise.all([loadEpisodes(), loadSources()]);
};

/** Routes begun, counted: only the newest shows its answer. */
let routes = 0;

/**
 * Shows what the address names: a show, or the list. A route overtaken by another
 * (Back pressed, or another show opened, while this one loads) leaves the page to the
 * newer one, whichever answer comes first: else the page could show one show while
 * its address names another, or the list. Resolves false when it was overtaken.
 * @returns {Promise<boolean>}
 */
const route = async () => {
  const n = ++routes;
  const stale = () => n !== routes;
  quiet(page);
  const id = query().get('show');
  try {
    if (id) await openShow(id, stale);
    else await listShows(stale);
  } catch (e) {
    if (!stale()) throw e;
  }
  return !stale();
};

/**
 * Goes to a show (or the list, `null`) as a link would, without reloading.
 * @param {string|null} id
 */
const go = async (id) => {
  const url = id ? `/podcasts?show=${enc(id)}` : '/podcasts';
  if (location.pathname + location.search !== url) history.pushState(null, '', url);
  try {
    if (await route()) window.scrollTo(0, 0);
  } catch (e) {
    say(page.error, explain(e));
  }
};
window.addEventListener('popstate', () => go(query().get('show')));
$('all-shows').addEventListener('click', (e) => {
  if (e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
  e.preventDefault();
  go(null);
});

showForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const s = current;
  if (!s) return;
  act(
    showForm.querySelector('button[type=submit]'),
    showArea,
    async () => {
      const v = /** @type {Show} */ (await session.patch(`/podcasts/shows/${enc(s.id)}`, readShow(showForm)));
      // (another show, or the list, opened meanwhile: the page shows that)
      if (current?.id !== v.id) return;
      renderShow(v);
      done(showArea, 'The details are saved. Podcast apps see them the next time they look at the feed.');
    },
    { form: showForm },
  );
});

artworkInput.addEventListener('change', () => {
  const file = artworkInput.files?.[0];
  const s = current;
  if (!file || !s) return;
  act(
    artworkInput,
    artworkArea,
    async () => {
      if (artworkArea.status) say(artworkArea.status, `Sending ${file.name}…`, 'info');
      // The file is the body, its type the Content-Type.
      const v = /** @type {Show} */ (await session.request('PUT', `/podcasts/shows/${enc(s.id)}/artwork`, file));
      if (current?.id !== v.id) return;
      current = v;
      renderArtwork(v);
      done(artworkArea, `The artwork is saved (${file.name}).`);
    },
    {
      // (the general words for these codes are about audio files)
      words: (e) =>
        e instanceof StreamCoreError && e.code === 'unsupported_type'
          ? `${file.name} is not a JPEG or PNG picture: podcast apps take only those.`
          : e instanceof StreamCoreError && e.code === 'too_large'
            ? e.message
            : explain(e),
    },
  ).finally(() => {
    // The same file chosen again (fixed meanwhile) is a change again.
    artworkInput.value = '';
  });
});

const copy = $('copy-feed', HTMLButtonElement);
copy.addEventListener('click', async () => {
  const input = $('feed-url', HTMLInputElement);
  try {
    await navigator.clipboard.writeText(input.value);
    done(showArea, 'The feed URL is copied.');
  } catch {
    // No clipboard for this page (an insecure address): the text is selected instead.
    input.focus();
    input.select();
    done(showArea, 'The feed URL is selected: copy it with Ctrl+C (⌘C on a Mac).');
  }
});

const deleteShow = $('delete-show', HTMLButtonElement);
deleteShow.addEventListener('click', () => {
  const s = current;
  if (!s) return;
  const n = episodes.size;
  if (!confirm(`Delete “${s.title}”${n ? `, its ${episodesText(n)} and their audio` : ''}? Its feed stops working for podcast apps. This cannot be undone.`)) return;
  act(deleteShow, showArea, async () => {
    await session.delete(`/podcasts/shows/${enc(s.id)}`).catch((e) => {
      // Deleted already (another tab): as asked.
      if (!(e instanceof StreamCoreError && e.status === 404)) throw e;
    });
    await go(null);
    done(page, `“${s.title}” was deleted.`);
  });
});

// ---- episodes ----------------------------------------------------------------------

/** @param {Episode} ep */
const statusText = (ep) =>
  ep.status === 'published'
    ? `Published ${when(ep.publish_at)}`.trim()
    : ep.status === 'scheduled'
      ? `Scheduled for ${when(ep.publish_at)}`
      : 'Draft';

/** @param {Episode} ep */
const details = (ep) =>
  [
    ep.season !== null ? `Season ${ep.season}` : '',
    ep.episode !== null ? `Episode ${ep.episode}` : '',
    clock(ep.duration_ms),
    ep.chapters.length ? `${ep.chapters.length} ${ep.chapters.length === 1 ? 'chapter' : 'chapters'}` : '',
    ep.audio_bytes ? bytes(ep.audio_bytes) : '',
  ]
    .filter(Boolean)
    .join(' · ');

/**
 * Acts on an episode from its row: the answer (the episode now) replaces it.
 * @param {HTMLButtonElement|null} button
 * @param {() => Promise<Episode|null>} f
 * @param {(ep: Episode) => string} [words] what went well
 */
const onEpisode = (button, f, words) =>
  act(button, episodesArea, async () => {
    const ep = await f();
    if (!ep) return;
    put(ep);
    if (words) done(episodesArea, words(ep));
  });

/** @param {Episode} ep */
const episodeItem = (ep) => {
  const name = ep.title || 'this episode';
  const path = `/podcasts/shows/${enc(ep.show_id)}/episodes/${enc(ep.id)}`;
  const at = /** @type {HTMLInputElement} */ (
    h('input', {
      type: 'datetime-local',
      'data-role': 'publish-at',
      min: localInput(Date.now()),
      value: ep.status === 'scheduled' && ep.publish_at ? localInput(ep.publish_at) : '',
    })
  );
  /**
   * A button of the row.
   * @param {string} role
   * @param {string} text
   * @param {string} label
   * @param {(b: HTMLButtonElement) => void} onclick
   * @param {string} [cls]
   */
  const button = (role, text, label, onclick, cls = 'secondary') => {
    const b = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: cls, 'data-role': role, 'aria-label': label }, text));
    b.addEventListener('click', () => onclick(b));
    return b;
  };
  const publishNow = button(
    'publish',
    'Publish now',
    `Publish now: ${name}`,
    (b) => onEpisode(b, () => session.post(`${path}/publish`, {}), (v) => `“${v.title}” is published: podcast apps see it the next time they look at the feed.`),
    '',
  );
  const schedule = button('schedule', 'Schedule', `Schedule ${name}`, (b) =>
    onEpisode(b, async () => {
      const ms = at.value ? new Date(at.value).getTime() : NaN;
      if (!Number.isFinite(ms)) throw new Invalid('Choose the day and time to publish it first.', at);
      if (ms <= Date.now()) throw new Invalid('That time has passed: choose one in the future, or press “Publish now”.', at);
      return session.post(`${path}/publish`, { publish_at: ms });
    }, (v) => `“${v.title}” will be published ${when(v.publish_at)}.`),
  );
  const unpublish = button('unpublish', 'Unpublish', `Unpublish ${name}`, (b) =>
    onEpisode(b, () => session.post(`${path}/unpublish`), (v) => `“${v.title}” is a draft again: it is not in the feed.`),
  );
  const edit = button('edit', 'Edit', `Edit ${name}`, () => {
    const open = li.querySelector('[data-role=editor]');
    if (open) {
      open.remove();
      edit.setAttribute('aria-expanded', 'false');
      return;
    }
    const form = editor(ep);
    li.append(form);
    edit.setAttribute('aria-expanded', 'true');
    /** @type {HTMLElement|null} */ (form.querySelector('input'))?.focus();
  });
  edit.setAttribute('aria-expanded', 'false');
  const remove = button('delete', 'Delete', `Delete ${name}`, (b) => {
    if (!confirm(`Delete the episode “${name}”? It leaves the feed, and its audio is deleted. This cannot be undone.`)) return;
    act(b, episodesArea, async () => {
      await session.delete(path).catch((e) => {
        if (!(e instanceof StreamCoreError && e.status === 404)) throw e;
      });
      li.remove();
      episodes.delete(ep.id);
      edits++;
      $('no-episodes').hidden = episodes.size > 0;
      done(episodesArea, `“${name}” was deleted.`);
    });
  });
  const li = h(
    'li',
    { 'data-episode': ep.id, 'data-status': ep.status },
    h(
      'div',
      { class: 'grow stack' },
      h(
        'div',
        { class: 'row spread' },
        h('strong', { 'data-role': 'title' }, ep.title),
        h('span', { class: `badge ${ep.status}`, 'data-role': 'status' }, statusText(ep)),
      ),
      h('div', { class: 'small muted', 'data-role': 'details' }, details(ep)),
      ep.description ? h('p', { class: 'small' }, ep.description) : null,
      h('audio', { controls: true, preload: 'none', src: local(ep.audio_url), 'aria-label': `Listen to ${name}` }),
      ep.chapters.length
        ? h(
            'ol',
            { class: 'small chapter-list', 'aria-label': `Chapters of ${name}` },
            ...ep.chapters.map((c) => h('li', { 'data-start-ms': c.start_ms }, h('span', { class: 'time' }, clock(c.start_ms)), ' ', c.title)),
          )
        : null,
      h(
        'div',
        { class: 'row' },
        ep.status !== 'published' ? publishNow : null,
        ep.status !== 'published' ? h('label', { class: 'inline' }, 'Publish at', at) : null,
        ep.status !== 'published' ? schedule : null,
        ep.status !== 'draft' ? unpublish : null,
        edit,
        remove,
      ),
    ),
  );
  return li;
};

/**
 * The form that edits an episode, in its row.
 * @param {Episode} ep
 */
const editor = (ep) => {
  const chapters = chapterEditor(ep.chapters);
  const box = h('div', { role: 'alert', hidden: true, 'data-role': 'editor-message' });
  const form = /** @type {HTMLFormElement} */ (
    h(
      'form',
      { 'data-role': 'editor', 'aria-label': `Edit ${ep.title}` },
      box,
      h('label', null, 'Title ', h('input', { name: 'title', type: 'text', required: true, maxlength: '200', value: ep.title, autocomplete: 'off' })),
      h('label', null, 'Description ', h('textarea', { name: 'description', rows: '3', maxlength: '4000' }, ep.description)),
      h(
        'div',
        { class: 'row' },
        h('label', null, 'Season ', h('input', { name: 'season', type: 'number', min: '1', step: '1', value: ep.season === null ? '' : String(ep.season) })),
        h('label', null, 'Episode ', h('input', { name: 'episode', type: 'number', min: '1', step: '1', value: ep.episode === null ? '' : String(ep.episode) })),
      ),
      chapters.el,
      h(
        'div',
        { class: 'row' },
        h('button', { type: 'submit' }, 'Save the episode'),
        h(
          'button',
          {
            type: 'button',
            class: 'secondary',
            onclick: () => {
              const row = form.closest('li');
              form.remove();
              row?.querySelector('[data-role=edit]')?.setAttribute('aria-expanded', 'false');
            },
          },
          'Cancel',
        ),
      ),
    )
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    act(
      form.querySelector('button[type=submit]'),
      { error: box, status: null },
      async () => {
        const body = {
          title: field(form, 'title').value.trim(),
          description: field(form, 'description').value.trim(),
          season: whole(/** @type {HTMLInputElement} */ (field(form, 'season')), 'season'),
          episode: whole(/** @type {HTMLInputElement} */ (field(form, 'episode')), 'episode'),
          chapters: chapters.read(ep.duration_ms),
        };
        const v = await session.patch(`/podcasts/shows/${enc(ep.show_id)}/episodes/${enc(ep.id)}`, body);
        put(v);
        done(episodesArea, `“${v.title}” is saved.`);
      },
      { form },
    );
  });
  return form;
};

/**
 * Shows an episode: its row replaced in place (a player playing keeps playing), or a
 * new one on top.
 * @param {Episode} ep
 */
const put = (ep) => {
  if (current?.id !== ep.show_id) return;
  edits++;
  episodes.set(ep.id, ep);
  const ul = $('episodes');
  const old = ul.querySelector(`[data-episode="${CSS.escape(ep.id)}"]`);
  const li = episodeItem(ep);
  if (old) {
    const player = old.querySelector('audio');
    const fresh = li.querySelector('audio');
    if (player && fresh && player.getAttribute('src') === fresh.getAttribute('src') && !player.paused) fresh.replaceWith(player);
    old.replaceWith(li);
  } else {
    ul.prepend(li);
  }
  $('no-episodes').hidden = true;
  planLook();
};

const loadEpisodes = async () => {
  const s = current;
  if (!s) return;
  /** @type {Episode[]} */
  let list;
  for (;;) {
    const before = edits;
    list = await session.get(`/podcasts/shows/${enc(s.id)}/episodes`);
    if (current?.id !== s.id) return;
    // An episode made, changed or deleted here while the list was on its way (the
    // timer's look again beside a click): that list is older than the page, so again.
    if (edits === before) break;
  }
  episodes.clear();
  for (const ep of list) episodes.set(ep.id, ep);
  $('episodes').replaceChildren(...list.map(episodeItem));
  $('no-episodes').hidden = list.length > 0;
  planLook();
};

/** A scheduled episode whose time comes while the page is open shows as published then. */
const planLook = () => {
  if (againAt) clearTimeout(againAt);
  againAt = null;
  const next = Math.min(...[...episodes.values()].filter((e) => e.status === 'scheduled' && e.publish_at).map((e) => Number(e.publish_at)));
  if (!Number.isFinite(next)) return;
  // (at most a day ahead: timers of longer go off at once)
  const wait = Math.min(Math.max(next - Date.now(), 0) + 1500, 86_400_000);
  againAt = setTimeout(() => loadEpisodes().catch((e) => say(episodesArea.error, explain(e))), wait);
};

// ---- a new episode -------------------------------------------------------------------

/** @param {Source} s */
const sourceLabel = (s) => `${s.title} — ${s.kind === 'mixdown' ? 'recording' : 'upload'}, ${clock(s.duration_ms)}`;

const loadSources = async () => {
  const list = /** @type {Source[]} */ (await session.get('/podcasts/sources'));
  list.sort((a, b) => b.created_at - a.created_at);
  const chosen = sourceSelect.value;
  sources.clear();
  for (const s of list) sources.set(s.job_id, s);
  sourceSelect.replaceChildren(
    h('option', { value: '' }, 'Choose an upload or a recording'),
    ...list.map((s) => h('option', { value: s.job_id }, sourceLabel(s))),
  );
  sourceSelect.value = sources.has(chosen) ? chosen : '';
  $('no-sources').hidden = list.length > 0;
  newEpisode.hidden = list.length === 0;
};

/** The title the page filled in from the source (replaced when another is chosen). */
let filledTitle = '';
sourceSelect.addEventListener('change', () => {
  const s = sources.get(sourceSelect.value);
  const title = /** @type {HTMLInputElement} */ (field(newEpisode, 'title'));
  if (s && (title.value.trim() === '' || title.value === filledTitle)) {
    title.value = s.title;
    filledTitle = s.title;
  }
  newChapters.set(s?.chapters ?? []);
});

newEpisode.addEventListener('submit', (e) => {
  e.preventDefault();
  const show = current;
  if (!show) return;
  act(
    newEpisode.querySelector('button[type=submit]'),
    newEpisodeArea,
    async () => {
      const source = sources.get(sourceSelect.value);
      if (!source) throw new Invalid('Choose what the episode is made from.', sourceSelect);
      /** @type {Record<string, unknown>} */
      const body = {
        source_job: source.job_id,
        title: field(newEpisode, 'title').value.trim(),
        description: field(newEpisode, 'description').value.trim(),
        chapters: newChapters.read(source.duration_ms),
      };
      const season = whole(/** @type {HTMLInputElement} */ (field(newEpisode, 'season')), 'season');
      const number = whole(/** @type {HTMLInputElement} */ (field(newEpisode, 'episode')), 'episode');
      if (season !== null) body.season = season;
      if (number !== null) body.episode = number;
      const ep = /** @type {Episode} */ (await session.post(`/podcasts/shows/${enc(show.id)}/episodes`, body));
      newEpisode.reset();
      filledTitle = '';
      newChapters.set([]);
      put(ep);
      done(episodesArea, `“${ep.title}” is a draft: listen to it, then publish it now or schedule it.`);
      episodeRow(ep.id)?.scrollIntoView({ block: 'nearest' });
    },
    { form: newEpisode },
  );
});

/** @param {string} id */
const episodeRow = (id) => $('episodes').querySelector(`[data-episode="${CSS.escape(id)}"]`);

try {
  await route();
} catch (e) {
  $('list-view').hidden = false;
  say(page.error, `Your podcasts could not be loaded: ${explain(e)}`);
}
pageReady();

// @ts-check
/**
 * `/phone`: what the pairing QR code opens. It claims the code (this browser becomes
 * a device of the user), then:
 * - goes live over WHIP with the music player (its audio graph, through WebAudio),
 *   the microphone, or the camera;
 * - reads music files or a folder into the library (tags where the browser can read
 *   them) and syncs the metadata to the account;
 * - obeys remote commands on its own player and reports what it plays, so every
 *   browser of the user mirrors it.
 */
import { DeviceSocket, Session, StreamCoreError, WhipPublisher } from '/sdk/streamcore.js';
import { $, busy, clock, explain, h, here, mediaDevices, pageLoading, pageReady, query, say, showQuality } from '/static/js/app.js';
import { readDuration, readTags } from '/static/js/tags.js';

const message = $('phone-message');

/** A name for this phone from what the browser says about itself. */
function guessName() {
  const ua = navigator.userAgent;
  if (/iPhone/.test(ua)) return 'iPhone';
  if (/iPad/.test(ua)) return 'iPad';
  if (/Android/.test(ua)) return 'Android phone';
  return 'Phone';
}

/** What this browser can send, as far as it tells before any permission. */
async function capabilities() {
  try {
    const kinds = new Set((await mediaDevices().enumerateDevices()).map((d) => d.kind));
    return { mic: kinds.has('audioinput'), camera: kinds.has('videoinput'), screen: false };
  } catch {
    return { mic: false, camera: false, screen: false };
  }
}

/**
 * The pairing form; resolves with a session once a code was claimed.
 * @param {string} [error] why the last attempt failed
 * @returns {Promise<Session>}
 */
function pairForm(error) {
  $('loading').hidden = true;
  $('phone').hidden = true;
  $('pair-panel').hidden = false;
  const box = $('pair-message');
  say(box, error ?? '');
  const form = $('pair-form', HTMLFormElement);
  const name = $('name', HTMLInputElement);
  if (!name.value) name.value = guessName();
  return new Promise((resolve) => {
    form.onsubmit = (e) => {
      e.preventDefault();
      busy(form.querySelector('button'), box, async () => {
        const r = await Session.claimPairing({
          code: $('code', HTMLInputElement).value,
          device: { name: name.value, kind: 'phone', capabilities: await capabilities() },
        });
        resolve(r.session);
      });
    };
    pageReady();
  });
}

/** Claims the code in the URL (from the QR code), or asks for one. */
async function pair() {
  const code = query().get('code');
  if (code) {
    // The code works once: a reload must not claim it again.
    history.replaceState(null, '', '/phone');
    try {
      const r = await Session.claimPairing({
        code,
        device: { name: guessName(), kind: 'phone', capabilities: await capabilities() },
      });
      return r.session;
    } catch (e) {
      return pairForm(explain(e));
    }
  }
  try {
    return (await Session.restore({ kind: 'device' })) ?? (await pairForm());
  } catch (e) {
    if (e instanceof StreamCoreError && e.status === 401) return pairForm(NO_LONGER_PAIRED);
    throw e;
  }
}

const NO_LONGER_PAIRED =
  'This phone is no longer paired: it was removed from the account, or its session ended. Pair it again with a new code.';

/**
 * @typedef {object} LibraryTrack
 * @property {string} id the client id (stable for the same file)
 * @property {string} title
 * @property {string} artist
 * @property {string} album
 * @property {number} duration_ms
 * @property {File|null} file the file, while this page has it
 */

/** A stable id for a file: a hash of its path, size and date. @param {File} f */
function clientId(f) {
  const s = `${f.webkitRelativePath || f.name}\u0000${f.size}\u0000${f.lastModified}`;
  // cyrb53: 53 bits, enough to tell a library's files apart.
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return `f${(4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36)}`;
}

/** @param {Session} session */
async function phone(session) {
  const deviceId = /** @type {string} */ (session.deviceId);
  $('loading').hidden = true;
  $('pair-panel').hidden = true;
  $('phone').hidden = false;
  // Its controls take input once wired, at the end.
  pageLoading();

  const gone = () => {
    $('phone').hidden = true;
    pairForm(NO_LONGER_PAIRED).then(() => location.reload());
  };
  session.on('ended', gone);

  const device = await session.get(`/devices/${encodeURIComponent(deviceId)}`).catch((e) => {
    if (e instanceof StreamCoreError && (e.status === 401 || e.status === 404)) gone();
    throw e;
  });
  $('device-name').textContent = device.name;

  // ---- the player and its audio graph ----
  const audio = $('audio', HTMLAudioElement);
  /** @type {LibraryTrack[]} */
  let library = [];
  /** @type {LibraryTrack|null} */
  let current = null;
  let volume = Number($('volume', HTMLInputElement).value);
  /** @type {{ctx: AudioContext, gain: GainNode, out: MediaStreamAudioDestinationNode}|null} */
  let graph = null;
  /** The live stream, while the phone is live. @type {WhipPublisher|null} */
  let publisher = null;
  // Made before anything can report to it; opened once the page is set up.
  const socket = new DeviceSocket(session, { capabilities: await capabilities() });

  // The player plays through WebAudio: the phone hears it, and the same sound is
  // what goes live.
  const ensureGraph = () => {
    if (!graph) {
      const ctx = new AudioContext();
      const src = ctx.createMediaElementSource(audio);
      const gain = ctx.createGain();
      gain.gain.value = volume / 100;
      const out = ctx.createMediaStreamDestination();
      src.connect(gain);
      gain.connect(ctx.destination);
      gain.connect(out);
      graph = { ctx, gain, out };
    }
    if (graph.ctx.state === 'suspended') {
      graph.ctx.resume().catch(() => {});
      $('sound-hint').hidden = graph.ctx.state !== 'suspended';
    }
    return graph;
  };
  document.addEventListener('pointerdown', () => {
    if (graph?.ctx.state === 'suspended') graph.ctx.resume().then(() => ($('sound-hint').hidden = true));
  });

  const status = () => (current === null ? 'stopped' : audio.paused ? 'paused' : 'playing');

  /** @type {ReturnType<typeof setTimeout>|null} */
  let reportTimer = null;
  /**
   * Tells every browser of the user what plays now.
   * @param {string} [commandId] the command this state answers
   */
  const report = (commandId) => {
    if (reportTimer) clearTimeout(reportTimer);
    reportTimer = null;
    socket.sendState(
      {
        status: status(),
        position_ms: Math.round(audio.currentTime * 1000),
        volume,
        live: publisher !== null,
        track: current && {
          id: current.id,
          title: current.title,
          artist: current.artist,
          album: current.album,
          duration_ms: current.duration_ms,
        },
      },
      commandId,
    );
  };
  // Local changes come in bursts (play, then playing, then timeupdate…): one report.
  const reportSoon = () => {
    if (!reportTimer) reportTimer = setTimeout(() => report(), 60);
  };

  const renderPlayer = () => {
    $('np-title').textContent = current ? current.title : 'Nothing playing';
    $('np-artist').textContent = current ? [current.artist, current.album].filter(Boolean).join(' — ') : '';
    const pp = $('playpause');
    pp.textContent = audio.paused ? 'Play' : 'Pause';
    pp.setAttribute('aria-label', audio.paused ? 'Play' : 'Pause');
    const dur = Number.isFinite(audio.duration) ? audio.duration : (current?.duration_ms ?? 0) / 1000;
    const seek = $('seek', HTMLInputElement);
    seek.max = String(Math.round(dur));
    seek.value = String(Math.round(audio.currentTime));
    $('pos').textContent = clock(audio.currentTime * 1000);
    $('dur').textContent = clock(dur * 1000);
    for (const li of $('library').children) {
      li.setAttribute('aria-current', String(li.getAttribute('data-id') === current?.id));
    }
  };

  /**
   * Plays a track of the library from `positionMs`.
   * @param {LibraryTrack} t
   * @param {number} [positionMs]
   */
  const playTrack = async (t, positionMs = 0) => {
    if (!t.file) {
      say(message, `“${t.title}” is in the library, but its file is not loaded on this page. Add the music again (files are not kept after the page closes).`);
      return;
    }
    ensureGraph();
    if (current?.id !== t.id) {
      if (audio.src) URL.revokeObjectURL(audio.src);
      audio.src = URL.createObjectURL(t.file);
      current = t;
    }
    audio.currentTime = positionMs / 1000;
    await audio.play().catch((e) => say(message, explain(e)));
    renderPlayer();
  };

  const playable = () => library.filter((t) => t.file);

  /** @param {number} step */
  const skip = async (step) => {
    const list = playable();
    if (list.length === 0) return;
    if (step < 0 && audio.currentTime > 3) {
      audio.currentTime = 0;
      return;
    }
    const i = current ? list.findIndex((t) => t.id === current?.id) : -1;
    const next = list[(i + step + list.length) % list.length];
    await playTrack(next);
  };

  const resume = async () => {
    if (!current) {
      const first = playable()[0];
      if (first) await playTrack(first);
      return;
    }
    ensureGraph();
    await audio.play().catch((e) => say(message, explain(e)));
  };

  /** @param {number} v 0–100 */
  const setVolume = (v) => {
    volume = Math.max(0, Math.min(100, Math.round(v)));
    $('volume', HTMLInputElement).value = String(volume);
    if (graph) graph.gain.gain.value = volume / 100;
  };

  for (const ev of ['play', 'pause', 'seeked', 'loadedmetadata']) {
    audio.addEventListener(ev, () => {
      renderPlayer();
      reportSoon();
    });
  }
  audio.addEventListener('timeupdate', renderPlayer);
  audio.addEventListener('ended', () => {
    if (current) socket.trackEnded({ id: current.id, title: current.title });
    skip(1);
  });
  $('playpause').addEventListener('click', () => (audio.paused ? resume() : audio.pause()));
  $('prev').addEventListener('click', () => skip(-1));
  $('next').addEventListener('click', () => skip(1));
  $('seek').addEventListener('change', () => {
    audio.currentTime = Number($('seek', HTMLInputElement).value);
  });
  $('volume').addEventListener('input', () => {
    setVolume(Number($('volume', HTMLInputElement).value));
    reportSoon();
  });

  // ---- the library ----
  const renderLibrary = () => {
    const q = $('filter', HTMLInputElement).value.trim().toLowerCase();
    const shown = library.filter((t) => !q || `${t.title} ${t.artist} ${t.album}`.toLowerCase().includes(q));
    $('library').replaceChildren(
      ...shown.map((t) =>
        h(
          'li',
          {
            'data-id': t.id,
            tabindex: 0,
            role: 'button',
            'aria-current': String(t.id === current?.id),
            onclick: () => playTrack(t),
            onkeydown: (/** @type {KeyboardEvent} */ e) => {
              if (e.key === 'Enter' || e.key === ' ') {
                e.preventDefault();
                playTrack(t);
              }
            },
          },
          h('div', { class: 'grow' }, h('strong', null, t.title), h('div', { class: 'small muted' }, [t.artist, t.album].filter(Boolean).join(' — ') || ' ')),
          h('span', { class: 'time' }, clock(t.duration_ms)),
          t.file ? null : h('span', { class: 'small muted' }, 'file not loaded'),
        ),
      ),
    );
    const loaded = library.filter((t) => t.file).length;
    $('lib-status').textContent = `${library.length} tracks${loaded < library.length ? `, ${loaded} loaded on this page` : ''}`;
  };
  $('filter').addEventListener('input', renderLibrary);

  const sortLibrary = () =>
    library.sort((a, b) => a.artist.localeCompare(b.artist) || a.album.localeCompare(b.album) || a.title.localeCompare(b.title));

  /** What the account knows of this phone's library (files come back when added again). */
  const known = await session.get(`/library/tracks?device_id=${encodeURIComponent(deviceId)}&limit=1000`).catch(() => null);
  for (const t of known ?? []) {
    library.push({ id: t.client_id, title: t.title, artist: t.artist, album: t.album, duration_ms: t.duration_ms, file: null });
  }
  sortLibrary();
  renderLibrary();

  /** @param {FileList|null} files */
  const addFiles = async (files) => {
    const audioFiles = [...(files ?? [])].filter((f) => f.type.startsWith('audio/') || /\.(mp3|m4a|aac|flac|ogg|opus|oga|wav|webm)$/i.test(f.name));
    if (audioFiles.length === 0) {
      say(message, 'No music files were chosen.', 'info');
      return;
    }
    say(message, `Reading ${audioFiles.length} files…`, 'info');
    /** @type {LibraryTrack[]} */
    const added = [];
    for (const f of audioFiles) {
      const [tags, duration] = await Promise.all([readTags(f), readDuration(f)]);
      const t = { id: clientId(f), ...tags, duration_ms: duration, file: f };
      const i = library.findIndex((x) => x.id === t.id);
      if (i >= 0) library[i] = t;
      else library.push(t);
      added.push(t);
    }
    sortLibrary();
    renderLibrary();
    // The metadata goes to the account, so the user's browsers can browse it.
    for (let i = 0; i < added.length; i += 1000) {
      await session.post('/library/sync', {
        upsert: added.slice(i, i + 1000).map((t) => ({
          client_id: t.id,
          title: t.title,
          artist: t.artist,
          album: t.album,
          duration_ms: t.duration_ms,
          codec: t.file?.type ?? '',
          size_bytes: t.file?.size ?? 0,
        })),
      });
    }
    say(message, `${added.length} tracks added and synced.`, 'ok');
  };
  for (const id of ['files', 'folder']) {
    const input = $(id, HTMLInputElement);
    input.addEventListener('change', () => {
      addFiles(input.files).catch((e) => say(message, explain(e)));
      input.value = '';
    });
  }

  // ---- going live ----
  /** @type {MediaStream|null} */
  let captured = null;
  const liveButton = $('live', HTMLButtonElement);
  const renderLive = () => {
    const badge = $('live-badge');
    badge.textContent = publisher ? 'live' : 'not live';
    badge.className = `badge ${publisher ? 'live' : 'offline'}`;
    liveButton.textContent = publisher ? 'Stop' : 'Go live';
    for (const r of document.querySelectorAll('#sources input')) /** @type {HTMLInputElement} */ (r).disabled = publisher !== null;
    if (!publisher) $('quality').hidden = true;
  };
  const stopLive = async () => {
    const p = publisher;
    publisher = null;
    await p?.stop();
    for (const t of captured?.getTracks() ?? []) t.stop();
    captured = null;
    const preview = $('preview', HTMLVideoElement);
    preview.srcObject = null;
    preview.hidden = true;
    renderLive();
    report();
  };
  const goLive = async () => {
    const source = /** @type {HTMLInputElement} */ (document.querySelector('#sources input:checked')).value;
    /** @type {MediaStreamTrack[]} */
    let tracks;
    if (source === 'music') {
      tracks = ensureGraph().out.stream.getAudioTracks();
    } else {
      captured = await mediaDevices().getUserMedia(
        source === 'camera'
          ? { audio: true, video: { width: { ideal: 1280 }, height: { ideal: 720 }, facingMode: 'environment' } }
          : { audio: true },
      );
      tracks = captured.getTracks();
      if (source === 'camera') {
        const preview = $('preview', HTMLVideoElement);
        preview.srcObject = captured;
        preview.hidden = false;
        preview.play().catch(() => {});
      }
    }
    const grant = await session.post(`/devices/${encodeURIComponent(deviceId)}/stream`, { role: 'publish' }).catch((e) => {
      for (const t of captured?.getTracks() ?? []) t.stop();
      captured = null;
      // The device was removed while this page was open.
      if (e instanceof StreamCoreError && e.status === 404) gone();
      throw e;
    });
    const p = new WhipPublisher({ url: here(grant, grant.whip_url), token: grant.token, iceServers: grant.ice_servers });
    p.on('quality', (q) => showQuality($('quality'), q));
    p.on('state', (s) => {
      if (s === 'failed' && publisher === p) {
        say(message, 'The live stream was lost. Press “Go live” to start again.');
        stopLive();
      }
    });
    // The server is taken down for maintenance: the stream moves to another one.
    p.on('moving', () => {
      if (publisher === p) say(message, 'The server is going down for maintenance: moving the live stream to another one…', 'info');
    });
    p.on('moved', () => {
      if (publisher === p) say(message, '');
    });
    p.on('error', (e) => {
      if (e.code === 'move_failed' && publisher === p) {
        say(message, 'The live stream could not move to another server; it stops when this one does. Press “Go live” again then.');
      }
    });
    try {
      await p.publish(tracks);
    } catch (e) {
      for (const t of captured?.getTracks() ?? []) t.stop();
      captured = null;
      throw e;
    }
    publisher = p;
    renderLive();
    report();
  };
  liveButton.addEventListener('click', () =>
    busy(liveButton, message, async () => {
      if (publisher) await stopLive();
      else await goLive();
    }),
  );
  renderLive();

  // ---- the device socket: commands in, state out ----
  const conn = $('connection');
  socket.on('welcome', () => {
    conn.textContent = 'online';
    conn.className = 'badge online';
    report();
  });
  socket.on('close', ({ willRetry }) => {
    conn.textContent = willRetry ? 'reconnecting' : 'offline';
    conn.className = `badge ${willRetry ? 'reconnecting' : 'offline'}`;
  });
  socket.on('removed', gone);
  socket.on('error', (e) => {
    if (['session_ended', 'invalid_refresh_token', 'refresh_token_expired'].includes(e.code)) gone();
  });
  socket.on('command', async (c) => {
    try {
      switch (c.action) {
        case 'play': {
          const t = c.track_id ? library.find((x) => x.id === c.track_id) : null;
          if (t) await playTrack(t, c.position_ms ?? 0);
          else if (c.track_id) say(message, 'A track was asked for that this phone does not have.');
          else await resume();
          break;
        }
        case 'pause':
          audio.pause();
          break;
        case 'resume':
          await resume();
          break;
        case 'seek':
          audio.currentTime = (c.position_ms ?? 0) / 1000;
          break;
        case 'next':
          await skip(1);
          break;
        case 'previous':
          await skip(-1);
          break;
        case 'volume':
          setVolume(c.volume ?? volume);
          break;
        default:
          break;
      }
    } finally {
      // At once, so the user's browsers mirror it within a fraction of a second.
      renderPlayer();
      report(c.command_id);
    }
  });
  socket.open();
  // A drifting position is corrected every 15 s while playing.
  setInterval(() => {
    if (!audio.paused) report();
  }, 15_000);

  $('unpair').addEventListener('click', async () => {
    await stopLive().catch(() => {});
    socket.close();
    await session.logout().catch(() => {});
    location.href = '/phone';
  });

  pageReady();
  // For the page's own tests and for people who script it.
  Object.assign(window, { streamcorePhone: { audio, library: () => library, live: () => publisher !== null, publisher: () => publisher } });
}

pair()
  .then(phone)
  .catch((e) => {
    $('loading').hidden = true;
    say(message, explain(e));
    $('phone').hidden = false;
    pageReady();
  });

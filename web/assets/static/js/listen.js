// @ts-check
/**
 * `/listen`: pick one of your devices, hear it live (WHEP), see what it plays
 * (mirrored from its reports through the user socket), command its player, and browse
 * its library.
 */
import { UserSocket, WhepPlayer } from '/sdk/streamcore.js';
import { $, busy, clock, explain, h, here, pageReady, query, say, showQuality, signedIn } from '/static/js/app.js';

const { session } = await signedIn();
const message = $('listen-message');
const remoteBox = $('remote-message');
const select = $('device', HTMLSelectElement);

/** @typedef {{id: string, name: string, kind: string, online: boolean}} Device */
/** @type {Map<string, Device>} */
const devices = new Map();
/**
 * The last state each device reported, and when it arrived here.
 * @type {Map<string, {state: any, at: number}>}
 */
const playing = new Map();

for (const d of await session.get('/devices')) devices.set(d.id, d);
let deviceId = query().get('device') ?? [...devices.values()].find((d) => d.kind === 'phone')?.id ?? [...devices.keys()][0] ?? null;

const renderDevices = () => {
  select.replaceChildren(
    ...[...devices.values()].map((d) =>
      h('option', { value: d.id, selected: d.id === deviceId }, `${d.name} (${d.online ? 'online' : 'offline'})`),
    ),
  );
  const d = deviceId ? devices.get(deviceId) : null;
  $('device-state').textContent = d
    ? d.online
      ? `${d.name} is online.`
      : `${d.name} is offline: open StreamCore on it (${location.origin}/phone).`
    : 'No devices yet: pair your phone on the Devices page.';
};

// ---- now playing ----
const renderNowPlaying = () => {
  const np = deviceId ? playing.get(deviceId) : undefined;
  const s = np?.state;
  const track = s?.track;
  $('np-title').textContent = track?.title ?? 'Nothing playing';
  $('np-artist').textContent = track ? [track.artist, track.album].filter(Boolean).join(' — ') : '';
  const label = { playing: 'Playing', paused: 'Paused', stopped: 'Stopped' };
  $('np-status').textContent = s ? /** @type {Record<string, string>} */ (label)[s.status] ?? s.status : '';
  $('np-status').setAttribute('data-status', s?.status ?? 'none');
  const pp = $('playpause');
  const isPlaying = s?.status === 'playing';
  pp.textContent = isPlaying ? 'Pause' : 'Play';
  pp.setAttribute('aria-label', isPlaying ? 'Pause' : 'Play');
  if (typeof s?.volume === 'number' && document.activeElement !== $('volume')) {
    $('volume', HTMLInputElement).value = String(s.volume);
  }
  const live = $('live-state');
  if (player) {
    live.textContent = s?.live ? 'live' : 'waiting for the phone to go live';
    live.className = `badge ${s?.live ? 'live' : 'reconnecting'}`;
  } else {
    live.textContent = s?.live ? 'live (not listening)' : 'not listening';
    live.className = 'badge offline';
  }
  tick();
};

/** Moves the position on while the phone plays (its reports come on changes). */
const tick = () => {
  const np = deviceId ? playing.get(deviceId) : undefined;
  const s = np?.state;
  const dur = s?.track?.duration_ms ?? 0;
  let pos = s?.position_ms ?? 0;
  if (s?.status === 'playing' && np) pos += Date.now() - np.at;
  if (dur) pos = Math.min(pos, dur);
  const seek = $('seek', HTMLInputElement);
  if (document.activeElement !== seek) {
    seek.max = String(Math.round(dur / 1000));
    seek.value = String(Math.round(pos / 1000));
  }
  $('pos').textContent = clock(pos);
  $('dur').textContent = clock(dur);
};
setInterval(tick, 500);

// ---- the user socket ----
const socket = new UserSocket(session);
socket.on('snapshot', (s) => {
  for (const d of s.devices) devices.set(d.id, d);
  for (const np of s.now_playing) playing.set(np.device_id, { state: np.state, at: Date.now() - Math.max(0, Date.now() - np.updated_at) });
  renderDevices();
  renderNowPlaying();
});
socket.on('nowPlaying', (e) => {
  playing.set(e.data.device_id, { state: e.data.state, at: Date.now() });
  if (e.data.device_id === deviceId) renderNowPlaying();
});
socket.on('deviceStatus', (e) => {
  const d = e.data;
  devices.set(d.device_id, { id: d.device_id, name: d.name, kind: d.kind, online: d.online });
  renderDevices();
});
socket.on('close', ({ willRetry }) => {
  if (willRetry) say(remoteBox, 'Reconnecting to the server…', 'info');
});
socket.on('open', () => say(remoteBox, ''));
socket.open();

/**
 * Sends a command to the device.
 * @param {import('/sdk/streamcore.js').DeviceCommand['action']} action
 * @param {{position_ms?: number, volume?: number, track_id?: string}} [params]
 */
const command = (action, params) => {
  if (!deviceId) return;
  const id = deviceId;
  say(remoteBox, '');
  socket.command(id, action, params).catch((e) => say(remoteBox, explain(e)));
};
$('playpause').addEventListener('click', () => {
  const s = deviceId ? playing.get(deviceId)?.state : null;
  if (s?.status === 'playing') command('pause');
  else if (s?.status === 'paused') command('resume');
  else command('play');
});
$('prev').addEventListener('click', () => command('previous'));
$('next').addEventListener('click', () => command('next'));
$('seek').addEventListener('change', () => command('seek', { position_ms: Number($('seek', HTMLInputElement).value) * 1000 }));
$('volume').addEventListener('change', () => command('volume', { volume: Number($('volume', HTMLInputElement).value) }));

// ---- listening live ----
/** @type {WhepPlayer|null} */
let player = null;
const audio = $('audio', HTMLAudioElement);
const video = $('video', HTMLVideoElement);
const listenButton = $('listen', HTMLButtonElement);

const stopListening = async () => {
  const p = player;
  player = null;
  await p?.stop();
  audio.srcObject = null;
  video.srcObject = null;
  audio.hidden = true;
  video.hidden = true;
  $('quality').hidden = true;
  listenButton.textContent = 'Listen live';
  renderNowPlaying();
};

const startListening = async () => {
  if (!deviceId) throw new Error('Pick a device first.');
  const grant = await session.post(`/devices/${encodeURIComponent(deviceId)}/stream`, { role: 'listen' });
  const p = new WhepPlayer({ url: here(grant, grant.whep_url), token: grant.token, iceServers: grant.ice_servers });
  p.on('quality', (q) => showQuality($('quality'), q));
  p.on('state', (s) => {
    if (s === 'failed' && player === p) {
      say(message, 'The connection to the server was lost. Press “Listen live” again.');
      stopListening();
    }
  });
  // The server is taken down for maintenance: the player moves to another one.
  p.on('moving', () => {
    if (player === p) say(message, 'This server is going down for maintenance: moving you to another one…', 'info');
  });
  p.on('moved', () => {
    if (player !== p) return;
    say(message, '');
    // The stream's tracks are the new server's now: play them.
    audio.srcObject = p.stream;
    video.srcObject = p.stream;
    audio.play().catch(() => say(message, 'Press play on the audio player to hear it.', 'info'));
    video.play().catch(() => {});
  });
  p.on('error', (e) => {
    if (e.code === 'move_failed' && player === p) {
      say(message, 'Could not move to another server; you hear this one until it stops, then press “Listen live” again.');
    }
  });
  await p.play();
  player = p;
  audio.srcObject = p.stream;
  audio.hidden = false;
  await audio.play().catch(() => say(message, 'Press play on the audio player to hear it.', 'info'));
  // Video shows once the phone sends pictures.
  video.srcObject = p.stream;
  video.muted = true;
  video.onresize = () => {
    video.hidden = video.videoWidth === 0;
  };
  video.play().catch(() => {});
  listenButton.textContent = 'Stop listening';
  renderNowPlaying();
};

listenButton.addEventListener('click', () => busy(listenButton, message, () => (player ? stopListening() : startListening())));

// ---- the library ----
/** @type {ReturnType<typeof setTimeout>|null} */
let searchTimer = null;
const loadLibrary = async () => {
  if (!deviceId) {
    $('library').replaceChildren();
    return;
  }
  const q = $('search', HTMLInputElement).value.trim();
  const tracks = await session.get(
    `/library/tracks?device_id=${encodeURIComponent(deviceId)}&limit=200${q ? `&q=${encodeURIComponent(q)}` : ''}`,
  );
  $('lib-count').textContent = `${tracks.length}${tracks.length === 200 ? '+' : ''} tracks`;
  $('library').replaceChildren(
    ...tracks.map((/** @type {any} */ t) =>
      h(
        'li',
        {
          tabindex: 0,
          role: 'button',
          'aria-label': `Play ${t.title} on the phone`,
          onclick: () => command('play', { track_id: t.client_id }),
          onkeydown: (/** @type {KeyboardEvent} */ e) => {
            if (e.key === 'Enter' || e.key === ' ') {
              e.preventDefault();
              command('play', { track_id: t.client_id });
            }
          },
        },
        h('div', { class: 'grow' }, h('strong', null, t.title), h('div', { class: 'small muted' }, [t.artist, t.album].filter(Boolean).join(' — ') || ' ')),
        h('span', { class: 'time' }, clock(t.duration_ms)),
      ),
    ),
  );
};
$('search').addEventListener('input', () => {
  if (searchTimer) clearTimeout(searchTimer);
  searchTimer = setTimeout(() => loadLibrary().catch((e) => say(message, explain(e))), 250);
});

select.addEventListener('change', async () => {
  deviceId = select.value;
  history.replaceState(null, '', `/listen?device=${encodeURIComponent(deviceId)}`);
  if (player) await stopListening();
  renderDevices();
  renderNowPlaying();
  loadLibrary().catch((e) => say(message, explain(e)));
});

renderDevices();
renderNowPlaying();
pageReady();
loadLibrary().catch((e) => say(message, explain(e)));

// For the page's own tests and for people who script it.
Object.assign(window, { streamcoreListen: { player: () => player, socket } });

// @ts-check
/**
 * `/room`: the lobby (your rooms, invitations, open a link, create) and, with
 * `?id=` (or, for your own rooms, `?name=`; a share link adds `&key=`), the call: camera, microphone and screen share,
 * a tile per participant with the active speaker highlighted and a quality choice per
 * tile, chat over the room's data messages, a connection-quality badge, a reconnect
 * that needs nobody, and for the room's owner who may join (invitations, share link).
 */
import { Room, StreamCoreError } from '/sdk/streamcore.js';
import { $, busy, explain, h, here, mediaDevices, pageReady, query, say, showQuality, signedIn } from '/static/js/app.js';

const { session } = await signedIn();
/** The room: its id, or the name of one of your rooms (the server tells them apart). */
const target = query().get('id') ?? query().get('name');
/** A share link's key (rooms open to anyone with the link). */
const shareKey = query().get('key');

/** How each `access` reads. */
const ACCESS = /** @type {Record<string, string>} */ ({
  private: 'only you and your devices',
  members: 'people you invite',
  link: 'anyone with the link',
});

if (!target) {
  lobby();
} else {
  call(target)
    .catch((e) => say($('call-message'), explain(e)))
    .finally(pageReady);
}

/** @param {string} id a room's id */
const roomUrl = (id) => `/room?id=${encodeURIComponent(id)}`;

/**
 * Where a pasted room link, room id or name of one's own room leads.
 * @param {string} text
 * @returns {string}
 */
function destination(text) {
  const at = text.indexOf('/room?');
  if (at >= 0) return text.slice(at);
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(text) ? roomUrl(text) : `/room?name=${encodeURIComponent(text)}`;
}

async function lobby() {
  $('lobby').hidden = false;
  const box = $('lobby-message');
  const join = $('join-form', HTMLFormElement);
  join.addEventListener('submit', (e) => {
    e.preventDefault();
    location.href = destination($('join-name', HTMLInputElement).value.trim());
  });
  const create = $('create-form', HTMLFormElement);
  create.addEventListener('submit', (e) => {
    e.preventDefault();
    const f = new FormData(create);
    busy(create.querySelector('button'), box, async () => {
      const r = await session.post('/rooms', {
        name: String(f.get('name')).trim(),
        max_participants: Number(f.get('max_participants')),
        publish_policy: f.get('anyone') ? 'anyone' : 'owner',
        access: String(f.get('access')),
        auto_record: f.get('auto_record') === 'on',
      });
      location.href = roomUrl(r.id);
    });
  });
  pageReady();

  const rooms = await session.get('/rooms').catch((e) => {
    say(box, explain(e));
    return [];
  });
  $('no-rooms').hidden = rooms.length > 0;
  $('rooms').replaceChildren(
    ...rooms
      .filter((/** @type {any} */ r) => !r.name.startsWith('device-'))
      .map((/** @type {any} */ r) =>
        h(
          'li',
          null,
          h('div', { class: 'grow' }, h('strong', null, r.name), h('div', { class: 'small muted' }, `${ACCESS[r.access] ?? r.access}, up to ${r.max_participants} people${r.publish_policy === 'anyone' ? '' : ', only you publish'}${r.auto_record ? ', recorded automatically' : ''}`)),
          h('a', { class: 'button', href: roomUrl(r.id) }, 'Join'),
          h('a', { class: 'button secondary', href: `/recordings?room=${encodeURIComponent(r.name)}` }, 'Recordings'),
        ),
      ),
  );
  await invitations(box);
}

/**
 * The rooms others invited you to: accept or decline; join or leave the accepted.
 * @param {HTMLElement} box
 */
async function invitations(box) {
  const list = await session.get('/invitations').catch((e) => {
    say(box, explain(e));
    return [];
  });
  const shown = list.filter((/** @type {any} */ i) => i.status !== 'declined');
  $('no-invitations').hidden = shown.length > 0;
  /**
   * @param {any} i
   * @param {'accept'|'decline'} answer
   * @param {HTMLButtonElement} button
   */
  const respond = (i, answer, button) =>
    busy(button, box, async () => {
      await session.post(`/invitations/${encodeURIComponent(i.id)}/${answer}`);
      if (answer === 'accept') location.href = roomUrl(i.room_id);
      else await invitations(box);
    });
  $('invitations').replaceChildren(
    ...shown.map((/** @type {any} */ i) => {
      const from = h('div', { class: 'small muted' }, i.status === 'accepted' ? `you are a member; ${i.owner_name}’s room` : `${i.owner_name} invited you`);
      const item = h('li', { 'data-room': i.room_name }, h('div', { class: 'grow' }, h('strong', null, i.room_name), from));
      if (i.status === 'accepted') {
        const leave = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'secondary' }, 'Leave'));
        leave.addEventListener('click', () => respond(i, 'decline', leave));
        item.append(h('a', { class: 'button', href: roomUrl(i.room_id) }, 'Join'), leave);
      } else {
        const accept = /** @type {HTMLButtonElement} */ (h('button', { type: 'button' }, 'Accept'));
        const decline = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'secondary' }, 'Decline'));
        accept.addEventListener('click', () => respond(i, 'accept', accept));
        decline.addEventListener('click', () => respond(i, 'decline', decline));
        item.append(accept, decline);
      }
      return item;
    }),
  );
}

/**
 * The owner's controls of who may join: access, the share link, invitations.
 * @param {any} info the room as `GET /rooms/{room}` returns it to its owner
 */
async function sharing(info) {
  const box = $('sharing-message');
  const recordings = /** @type {HTMLAnchorElement} */ ($('recordings-link'));
  recordings.href = `/recordings?room=${encodeURIComponent(info.name)}`;
  recordings.hidden = false;
  const path = `/rooms/${encodeURIComponent(info.id)}`;
  const access = $('access', HTMLSelectElement);
  /** @param {any} r */
  const showRoom = (r) => {
    access.value = r.access;
    $('link-box').hidden = r.access !== 'link';
    $('members-box').hidden = r.access !== 'members';
    $('share-url', HTMLInputElement).value = r.share_url ?? '';
  };
  const members = async () => {
    const list = await session.get(`${path}/members`);
    $('no-members').hidden = list.length > 0;
    const status = { invited: 'invited, not answered yet', accepted: 'member', declined: 'declined' };
    $('members').replaceChildren(
      ...list.map((/** @type {any} */ m) => {
        const remove = /** @type {HTMLButtonElement} */ (h('button', { type: 'button', class: 'secondary', 'aria-label': `Remove ${m.email}` }, 'Remove'));
        remove.addEventListener('click', () =>
          busy(remove, box, async () => {
            await session.delete(`${path}/members/${encodeURIComponent(m.email)}`);
            await members();
          }),
        );
        return h('li', { 'data-email': m.email }, h('div', { class: 'grow' }, h('strong', null, m.email), h('div', { class: 'small muted member-status' }, /** @type {Record<string, string>} */ (status)[m.status] ?? m.status)), remove);
      }),
    );
  };
  showRoom(info);
  access.addEventListener('change', () =>
    busy(null, box, async () => {
      showRoom(await session.patch(path, { access: access.value }));
      if (access.value === 'members') await members();
      say(box, `Now ${ACCESS[access.value]} may join.`, 'ok');
    }),
  );
  const copy = $('copy-link', HTMLButtonElement);
  copy.addEventListener('click', () =>
    busy(copy, box, async () => {
      await navigator.clipboard.writeText($('share-url', HTMLInputElement).value);
      say(box, 'The link is copied.', 'ok');
    }),
  );
  const renew = $('new-link', HTMLButtonElement);
  renew.addEventListener('click', () =>
    busy(renew, box, async () => {
      showRoom(await session.post(`${path}/share-link`));
      say(box, 'A new link is made; the old one no longer lets anyone in.', 'ok');
    }),
  );
  const revoke = $('revoke-passes', HTMLButtonElement);
  revoke.addEventListener('click', () =>
    busy(revoke, box, async () => {
      await session.post(`${path}/reset`);
      say(box, 'Every earlier pass to this room is cancelled: everyone but you left the room, and whoever may still join can come back.', 'ok');
    }),
  );
  const invite = $('invite-form', HTMLFormElement);
  invite.addEventListener('submit', (e) => {
    e.preventDefault();
    const email = $('invite-email', HTMLInputElement);
    busy(invite.querySelector('button'), box, async () => {
      const m = await session.post(`${path}/members`, { email: email.value.trim() });
      email.value = '';
      await members();
      say(box, `${m.email} is invited: they get a mail, and see the invitation under Rooms.`, 'ok');
    });
  });
  $('sharing').hidden = false;
  if (info.access === 'members') await members();
  // Invitees answer from their own pages: the list follows without a reload.
  setInterval(() => {
    if (!$('members-box').hidden && document.visibilityState === 'visible') members().catch(() => {});
  }, 4000);
}

/**
 * A join token: publishing too when the room allows it.
 * @param {string} room
 * @returns {Promise<any>}
 */
async function joinToken(room) {
  // Who one is in a room (identity and shown name) is the server's to say.
  const key = shareKey ?? undefined;
  const publisher = { publish: true, subscribe: true, publish_data: true, key };
  try {
    // The owner may also record (and so mark chapters); anyone else is told no.
    return await session
      .post(`/rooms/${encodeURIComponent(room)}/token`, { ...publisher, record: true })
      .catch((e) => {
        if (e instanceof StreamCoreError && e.code === 'forbidden') {
          return session.post(`/rooms/${encodeURIComponent(room)}/token`, publisher);
        }
        throw e;
      });
  } catch (e) {
    if (e instanceof StreamCoreError && e.code === 'forbidden') {
      // Only the owner publishes here: listen and chat.
      return session.post(`/rooms/${encodeURIComponent(room)}/token`, { subscribe: true, publish_data: true, key });
    }
    throw e;
  }
}

/** @param {string} wanted the room's id, or the name of one of your rooms */
async function call(wanted) {
  $('call').hidden = false;
  // Only the owner has the room's recordings (see `sharing`).
  $('recordings-link').hidden = true;
  const box = $('call-message');
  const tiles = $('tiles');

  let grant;
  try {
    grant = await joinToken(wanted);
  } catch (e) {
    if (e instanceof StreamCoreError && e.status === 404) {
      say(
        box,
        shareKey && !query().get('id')
          ? 'This room link is from an older version of StreamCore and no longer opens the room. Ask its owner for the current link.'
          : shareKey
          ? 'This room link no longer works: its owner closed the room or made a new link. Ask them for the current one.'
          : query().get('id')
            ? 'There is no room here that you may join. If someone invited you, accept the invitation under Rooms; if they shared a link, open that link.'
            : `You have no room called “${wanted}”. If someone invited you, accept the invitation under Rooms; if they shared a link, open that link.`,
      );
      $('call').append(h('p', null, h('a', { class: 'button', href: '/room' }, 'Back to the rooms')));
      return;
    }
    throw e;
  }
  // Join by id from here on: a name means something only to its owner.
  const roomId = grant.room;
  $('call-title').textContent = grant.room_name;
  document.title = `${grant.room_name} — StreamCore`;
  if (!grant.publish) say(box, 'Only the room’s owner publishes here: you can watch, listen and chat.', 'info');
  // The owner (only they can read the room's settings) decides who may join.
  session
    .get(`/rooms/${encodeURIComponent(roomId)}`)
    .then(sharing, () => {})
    .catch((e) => say($('sharing-message'), explain(e)));

  // The room socket of the node the room lives on (see `here`); a fresh pass names
  // the node it lives on then (another, once its node died).
  const room = new Room({
    url: here(grant, grant.rtc_url),
    tokenProvider: async () => {
      const g = await joinToken(roomId);
      return { token: g.token, url: here(g, g.rtc_url) };
    },
  });
  Object.assign(window, { streamcoreRoom: room });

  // Whoever may record marks chapters in the running recording (a podcast episode made
  // from it starts a chapter there).
  const chapterForm = /** @type {HTMLFormElement} */ ($('chapter-form'));
  chapterForm.hidden = !grant.record;
  chapterForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('chapter-title', HTMLInputElement);
    const said = $('chapter-said');
    const button = $('chapter', HTMLButtonElement);
    button.disabled = true;
    try {
      const m = await room.marker(input.value);
      said.textContent = `Marked “${m.title}”.`;
      input.value = '';
    } catch (err) {
      said.textContent =
        err instanceof StreamCoreError && err.code === 'not_recording'
          ? 'The room is not being recorded: start recording (Recordings) first.'
          : explain(err);
    } finally {
      button.disabled = false;
    }
  });

  // ---- tiles ----
  /** @type {Map<string, {tile: HTMLElement, video: HTMLVideoElement, stream: MediaStream, quality: HTMLSelectElement|null}>} */
  const people = new Map();
  /** @type {Map<string, HTMLElement>} screen shares by track id */
  const screens = new Map();

  /**
   * @param {string} sid
   * @param {string} label
   * @param {boolean} local
   */
  const personTile = (sid, label, local) => {
    let p = people.get(sid);
    if (p) return p;
    const stream = new MediaStream();
    const video = /** @type {HTMLVideoElement} */ (h('video', { autoplay: true, playsinline: true, muted: local }));
    video.muted = local;
    video.srcObject = stream;
    const quality = local
      ? null
      : /** @type {HTMLSelectElement} */ (
          h(
            'select',
            { 'aria-label': `Video quality of ${label}` },
            h('option', { value: '' }, 'Auto'),
            h('option', { value: '2' }, 'High'),
            h('option', { value: '1' }, 'Medium'),
            h('option', { value: '0' }, 'Low'),
          )
        );
    quality?.addEventListener('change', () => {
      const participant = room.participants.get(sid);
      const layer = quality.value === '' ? null : Number(quality.value);
      for (const t of participant?.tracks.values() ?? []) {
        if (t.kind === 'video' && t.source !== 'screen') room.setMaxLayer(t, layer).catch((e) => say(box, explain(e)));
      }
    });
    const tile = h(
      'figure',
      { class: 'tile', 'data-sid': sid, 'aria-label': label },
      h('div', { class: 'avatar', 'aria-hidden': 'true' }, label.slice(0, 1).toUpperCase()),
      video,
      h('figcaption', { class: 'name' }, local ? `${label} (you)` : label),
      h('div', { class: 'tools' }, h('span', { class: 'muted-flag', hidden: true }, 'muted'), quality),
    );
    tiles.append(tile);
    p = { tile, video, stream, quality };
    people.set(sid, p);
    return p;
  };

  /**
   * Puts a track in a participant's tile (one audio and one video at a time).
   * @param {{tile: HTMLElement, video: HTMLVideoElement, stream: MediaStream}} p
   * @param {MediaStreamTrack} track
   */
  const show = (p, track) => {
    for (const t of p.stream.getTracks()) if (t.kind === track.kind) p.stream.removeTrack(t);
    p.stream.addTrack(track);
    p.tile.classList.toggle('has-video', p.stream.getVideoTracks().length > 0);
    /** @type {HTMLElement} */ (p.tile.querySelector('.avatar')).hidden = p.stream.getVideoTracks().length > 0;
    p.video.play().catch(() => {});
  };

  /**
   * @param {{tile: HTMLElement, stream: MediaStream}} p
   * @param {MediaStreamTrack} track
   */
  const hide = (p, track) => {
    p.stream.removeTrack(track);
    /** @type {HTMLElement} */ (p.tile.querySelector('.avatar')).hidden = p.stream.getVideoTracks().length > 0;
  };

  const count = () => {
    $('count').textContent = `${room.participants.size + 1} in the room`;
  };

  room.on('participantJoined', (p) => {
    personTile(p.sid, p.name, false);
    count();
  });
  room.on('participantLeft', ({ participant }) => {
    people.get(participant.sid)?.tile.remove();
    people.delete(participant.sid);
    count();
  });
  room.on('trackSubscribed', (t) => {
    const track = /** @type {MediaStreamTrack} */ (t.mediaStreamTrack);
    const owner = room.participants.get(t.participantSid);
    if (t.source === 'screen') {
      const video = /** @type {HTMLVideoElement} */ (h('video', { autoplay: true, playsinline: true }));
      video.muted = true;
      video.srcObject = new MediaStream([track]);
      const tile = h(
        'figure',
        { class: 'tile screen', 'data-track': t.id, 'aria-label': `Screen of ${owner?.name ?? ''}` },
        video,
        h('figcaption', { class: 'name' }, `${owner?.name ?? ''}’s screen`),
      );
      screens.get(t.id)?.remove();
      screens.set(t.id, tile);
      tiles.prepend(tile);
      return;
    }
    show(personTile(t.participantSid, owner?.name ?? t.participantSid, false), track);
  });
  /** @param {import('/sdk/streamcore.js').RemoteTrack} t */
  const drop = (t) => {
    screens.get(t.id)?.remove();
    screens.delete(t.id);
    const p = people.get(t.participantSid);
    if (p) for (const m of p.stream.getTracks()) if (m.kind === t.kind && t.source !== 'screen') hide(p, m);
  };
  room.on('trackUnsubscribed', drop);
  room.on('trackMuted', ({ track, muted }) => {
    if (!track || track.kind !== 'audio') return;
    const flag = people.get(track.participantSid)?.tile.querySelector('.muted-flag');
    if (flag) /** @type {HTMLElement} */ (flag).hidden = !muted;
  });
  room.on('activeSpeaker', ({ participantSid }) => {
    for (const [sid, p] of people) p.tile.classList.toggle('speaking', sid === participantSid);
  });
  room.on('quality', (q) => showQuality($('quality'), q));
  const state = $('room-state');
  room.on('state', ({ state: s }) => {
    const text = { connecting: 'connecting', connected: 'connected', reconnecting: 'reconnecting…', disconnected: 'left', idle: 'not connected' };
    state.textContent = text[s];
    state.className = `badge ${s === 'connected' ? 'online' : s === 'reconnecting' ? 'reconnecting' : 'offline'}`;
  });
  room.on('reconnecting', () => say(box, 'The connection dropped; reconnecting…', 'info'));
  room.on('reconnected', () => say(box, ''));
  room.on('disconnected', ({ reason }) => {
    const why = {
      replaced: 'You joined this room again from another tab or device, so this one left the room.',
      revoked: 'The room’s owner cancelled your pass to this room (or changed who may join). Reload the page to try again.',
      reconnect_failed: 'The connection could not be brought back. Reload the page to join again.',
    };
    say(box, /** @type {Record<string, string>} */ (why)[reason] ?? 'You left the room.', reason === 'left' ? 'info' : 'error');
  });
  // Once out of the room, the reason stays on screen (what was in flight may fail after).
  room.on('error', (e) => {
    if (room.state !== 'disconnected') say(box, explain(e));
  });

  // ---- chat ----
  const chat = $('chat');
  /**
   * @param {string} who
   * @param {string} text
   */
  const addChat = (who, text) => {
    chat.append(h('li', null, h('b', null, who), text));
    chat.scrollTop = chat.scrollHeight;
  };
  room.on('data', (d) => {
    if (typeof d.payload?.chat === 'string') addChat(d.fromName, d.payload.chat);
  });
  const chatForm = $('chat-form', HTMLFormElement);
  chatForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('chat-text', HTMLInputElement);
    const text = input.value.trim();
    if (!text) return;
    busy(chatForm.querySelector('button'), box, async () => {
      await room.sendData({ chat: text });
      addChat('You', text);
      input.value = '';
    });
  });

  await room.connect();
  /** Whether the room has ended for this page (left, replaced, revoked). */
  const outOfRoom = () => room.state === 'disconnected';
  count();
  const local = personTile(room.local.sid, room.local.name, true);

  // ---- publishing ----
  /** @type {import('/sdk/streamcore.js').LocalTrackPublication|null} */
  let micPub = null;
  /** @type {import('/sdk/streamcore.js').LocalTrackPublication|null} */
  let camPub = null;
  /** @type {import('/sdk/streamcore.js').LocalTrackPublication|null} */
  let screenPub = null;
  const camStream = new MediaStream();

  /**
   * @param {string} id
   * @param {boolean} on
   */
  const pressed = (id, on) => $(id).setAttribute('aria-pressed', String(on));

  const startMic = async () => {
    if (micPub) return room.setMuted(micPub, false);
    const s = await mediaDevices().getUserMedia({ audio: true });
    const track = s.getAudioTracks()[0];
    camStream.addTrack(track);
    micPub = await room.publish(track, { source: 'microphone', stream: camStream });
  };
  const startCamera = async () => {
    if (camPub) {
      camPub.track.enabled = true;
      await room.setMuted(camPub, false);
    } else {
      const s = await mediaDevices().getUserMedia({ video: { width: { ideal: 1280 }, height: { ideal: 720 } } });
      const track = s.getVideoTracks()[0];
      camStream.addTrack(track);
      camPub = await room.publish(track, { source: 'camera', simulcast: true, stream: camStream });
    }
    show(local, camPub.track);
  };
  const toggle = /** @type {(id: string, on: () => Promise<any>, off: () => Promise<any>) => void} */ (id, on, off) => {
    const button = $(id, HTMLButtonElement);
    button.addEventListener('click', () =>
      busy(button, box, async () => {
        const now = button.getAttribute('aria-pressed') === 'true';
        await (now ? off() : on());
        pressed(id, !now);
      }),
    );
  };
  toggle('mic', startMic, async () => micPub && room.setMuted(micPub, true));
  toggle(
    'camera',
    startCamera,
    async () => {
      if (!camPub) return;
      await room.setMuted(camPub, true);
      hide(local, camPub.track);
    },
  );
  const stopScreen = async () => {
    const p = screenPub;
    screenPub = null;
    pressed('screen', false);
    screens.get('local')?.remove();
    screens.delete('local');
    if (!p) return;
    p.track.stop();
    await room.unpublish(p);
  };
  toggle(
    'screen',
    async () => {
      const s = await mediaDevices().getDisplayMedia({ video: true, audio: false });
      const track = s.getVideoTracks()[0];
      track.addEventListener('ended', () => stopScreen().catch(() => {}));
      screenPub = await room.publish(track, { source: 'screen' });
      // What the others see, here too.
      const video = /** @type {HTMLVideoElement} */ (h('video', { autoplay: true, playsinline: true }));
      video.muted = true;
      video.srcObject = new MediaStream([track]);
      const tile = h('figure', { class: 'tile screen local', 'aria-label': 'Your screen' }, video, h('figcaption', { class: 'name' }, 'Your screen (shared)'));
      screens.set('local', tile);
      tiles.prepend(tile);
    },
    stopScreen,
  );
  $('leave').addEventListener('click', async () => {
    await room.leave();
    location.href = '/room';
  });
  pageReady();

  if (grant.publish) {
    // Join with the microphone and camera on; a denied permission leaves the rest working.
    for (const [id, start] of /** @type {const} */ ([['mic', startMic], ['camera', startCamera]])) {
      if (outOfRoom()) break;
      try {
        await start();
        pressed(id, true);
      } catch (e) {
        // Out of the room meanwhile: the reason it left stays on screen.
        if (outOfRoom()) break;
        say(box, explain(e));
      }
    }
  } else {
    for (const id of ['mic', 'camera', 'screen']) $(id, HTMLButtonElement).disabled = true;
  }
}

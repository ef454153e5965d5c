// @ts-check
/**
 * Title, artist and album of an audio file, read in the browser from the tags the
 * common formats carry: ID3v2 (MP3), Vorbis comments (FLAC, Ogg Vorbis, Ogg Opus) and
 * iTunes metadata (MP4/M4A). Anything else (or a file without tags) gets its name as
 * the title. The duration comes from the browser's own decoder.
 */

/**
 * @typedef {object} Tags
 * @property {string} title
 * @property {string} artist
 * @property {string} album
 */

/** How much of a file's start is read for its tags (cover art can be large). */
const HEAD_BYTES = 4 * 1024 * 1024;

/**
 * @param {File} file
 * @returns {Promise<Tags>}
 */
export async function readTags(file) {
  const fallback = { title: titleFromName(file.name), artist: '', album: '' };
  let found = null;
  try {
    const head = new Uint8Array(await file.slice(0, HEAD_BYTES).arrayBuffer());
    found = id3(head) ?? flac(head) ?? ogg(head) ?? mp4(head);
  } catch {
    found = null;
  }
  return {
    title: found?.title || fallback.title,
    artist: found?.artist || '',
    album: found?.album || '',
  };
}

/**
 * The duration of an audio file in milliseconds (0 when the browser cannot tell).
 * @param {File} file
 * @returns {Promise<number>}
 */
export function readDuration(file) {
  return new Promise((resolve) => {
    const url = URL.createObjectURL(file);
    const audio = new Audio();
    const done = (/** @type {number} */ ms) => {
      URL.revokeObjectURL(url);
      audio.removeAttribute('src');
      resolve(ms);
    };
    const timer = setTimeout(() => done(0), 10_000);
    audio.preload = 'metadata';
    audio.onloadedmetadata = () => {
      clearTimeout(timer);
      done(Number.isFinite(audio.duration) ? Math.round(audio.duration * 1000) : 0);
    };
    audio.onerror = () => {
      clearTimeout(timer);
      done(0);
    };
    audio.src = url;
  });
}

/** `01 - Some Song.mp3` → `Some Song`. @param {string} name */
export function titleFromName(name) {
  return (
    name
      .replace(/\.[A-Za-z0-9]{1,5}$/, '')
      .replace(/^\d{1,3}\s*[-._]\s*/, '')
      .replace(/_/g, ' ')
      .trim() || name
  );
}

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8');

/**
 * @param {Uint8Array} b
 * @param {number} at
 */
const be32 = (b, at) => ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;
/**
 * @param {Uint8Array} b
 * @param {number} at
 */
const le32 = (b, at) => (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;
/**
 * @param {Uint8Array} b
 * @param {number} at
 */
const syncsafe = (b, at) => ((b[at] & 0x7f) << 21) | ((b[at + 1] & 0x7f) << 14) | ((b[at + 2] & 0x7f) << 7) | (b[at + 3] & 0x7f);
/**
 * @param {Uint8Array} b
 * @param {number} at
 * @param {string} s
 */
const startsWith = (b, at, s) => [...s].every((c, i) => b[at + i] === c.charCodeAt(0));

/**
 * An ID3v2 text frame's value.
 * @param {Uint8Array} data
 */
function id3Text(data) {
  if (data.length === 0) return '';
  const enc = data[0];
  const body = data.subarray(1);
  let s;
  if (enc === 0) s = latin1.decode(body);
  else if (enc === 3) s = utf8.decode(body);
  else if (enc === 1) {
    const le = body[0] === 0xff && body[1] === 0xfe;
    s = new TextDecoder(le ? 'utf-16le' : 'utf-16be').decode(body.subarray(2));
  } else s = new TextDecoder('utf-16be').decode(body);
  // A frame may hold several values separated by NULs: the first one.
  return s.split('\u0000')[0].trim();
}

/**
 * ID3v2.2/2.3/2.4 at the start of a file.
 * @param {Uint8Array} b
 * @returns {Tags|null}
 */
function id3(b) {
  if (!startsWith(b, 0, 'ID3') || b.length < 10) return null;
  const version = b[3];
  const flags = b[5];
  const size = syncsafe(b, 6);
  let at = 10;
  if (flags & 0x40 && version >= 3) {
    // Extended header.
    at += version === 4 ? syncsafe(b, 10) : be32(b, 10) + 4;
  }
  const end = Math.min(b.length, 10 + size);
  const out = { title: '', artist: '', album: '' };
  /** @type {Record<string, 'title'|'artist'|'album'>} */
  const names = version === 2 ? { TT2: 'title', TP1: 'artist', TAL: 'album' } : { TIT2: 'title', TPE1: 'artist', TALB: 'album' };
  const idLen = version === 2 ? 3 : 4;
  const headLen = version === 2 ? 6 : 10;
  while (at + headLen <= end) {
    const id = latin1.decode(b.subarray(at, at + idLen));
    if (!/^[A-Z0-9]+$/.test(id)) break; // padding
    const len =
      version === 2
        ? (b[at + 3] << 16) | (b[at + 4] << 8) | b[at + 5]
        : version === 4
          ? syncsafe(b, at + 4)
          : be32(b, at + 4);
    const data = b.subarray(at + headLen, Math.min(end, at + headLen + len));
    const key = names[id];
    if (key && !out[key]) out[key] = id3Text(data);
    at += headLen + len;
  }
  return out.title || out.artist || out.album ? out : null;
}

/**
 * Vorbis comments (`TITLE=…`): FLAC's, Ogg Vorbis' and Ogg Opus' tag format.
 * @param {Uint8Array} c the comment block, starting at the vendor length
 * @returns {Tags|null}
 */
function vorbisComments(c) {
  let at = 0;
  const vendor = le32(c, at);
  at += 4 + vendor;
  const n = le32(c, at);
  at += 4;
  const out = { title: '', artist: '', album: '' };
  for (let i = 0; i < n && at + 4 <= c.length; i++) {
    const len = le32(c, at);
    at += 4;
    const kv = utf8.decode(c.subarray(at, at + len));
    at += len;
    const eq = kv.indexOf('=');
    const k = kv.slice(0, eq).toUpperCase();
    const v = kv.slice(eq + 1).trim();
    if (k === 'TITLE' && !out.title) out.title = v;
    else if (k === 'ARTIST' && !out.artist) out.artist = v;
    else if (k === 'ALBUM' && !out.album) out.album = v;
  }
  return out.title || out.artist || out.album ? out : null;
}

/**
 * FLAC's VORBIS_COMMENT metadata block.
 * @param {Uint8Array} b
 * @returns {Tags|null}
 */
function flac(b) {
  if (!startsWith(b, 0, 'fLaC')) return null;
  let at = 4;
  while (at + 4 <= b.length) {
    const last = (b[at] & 0x80) !== 0;
    const type = b[at] & 0x7f;
    const len = (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3];
    if (type === 4) return vorbisComments(b.subarray(at + 4, at + 4 + len));
    if (last) break;
    at += 4 + len;
  }
  return null;
}

/**
 * The comment header of an Ogg Vorbis or Opus file (its second packet).
 * @param {Uint8Array} b
 * @returns {Tags|null}
 */
function ogg(b) {
  if (!startsWith(b, 0, 'OggS')) return null;
  /** @type {number[]} */
  const packet = [];
  let packets = 0;
  let at = 0;
  while (at + 27 <= b.length && startsWith(b, at, 'OggS')) {
    const segments = b[at + 26];
    let data = at + 27 + segments;
    for (let i = 0; i < segments; i++) {
      const lace = b[at + 27 + i];
      if (packets === 1) for (let j = 0; j < lace; j++) packet.push(b[data + j]);
      data += lace;
      if (lace < 255) {
        packets++;
        if (packets === 2) {
          const p = Uint8Array.from(packet);
          if (startsWith(p, 0, 'OpusTags')) return vorbisComments(p.subarray(8));
          if (p[0] === 3 && startsWith(p, 1, 'vorbis')) return vorbisComments(p.subarray(7));
          return null;
        }
      }
    }
    at = data;
  }
  return null;
}

/**
 * iTunes-style metadata of an MP4/M4A file: moov/udta/meta/ilst.
 * @param {Uint8Array} b
 * @returns {Tags|null}
 */
function mp4(b) {
  if (!startsWith(b, 4, 'ftyp')) return null;
  /**
   * The child boxes of `b[start..end]`.
   * @param {number} start
   * @param {number} end
   * @returns {{type: string, start: number, end: number}[]}
   */
  const boxes = (start, end) => {
    const out = [];
    let at = start;
    while (at + 8 <= end) {
      let size = be32(b, at);
      const type = latin1.decode(b.subarray(at + 4, at + 8));
      let head = 8;
      if (size === 1) {
        size = be32(b, at + 12); // 64-bit size; files here stay under 4 GiB in their boxes
        head = 16;
      }
      if (size === 0) size = end - at;
      if (size < head) break;
      out.push({ type, start: at + head, end: Math.min(end, at + size) });
      at += size;
    }
    return out;
  };
  /**
   * @param {{type: string, start: number, end: number}[]} list
   * @param {string} type
   */
  const find = (list, type) => list.find((x) => x.type === type);
  const moov = find(boxes(0, b.length), 'moov');
  if (!moov) return null;
  const udta = find(boxes(moov.start, moov.end), 'udta');
  if (!udta) return null;
  const meta = find(boxes(udta.start, udta.end), 'meta');
  if (!meta) return null;
  // `meta` is a full box: 4 bytes of version and flags first.
  const ilst = find(boxes(meta.start + 4, meta.end), 'ilst');
  if (!ilst) return null;
  const out = { title: '', artist: '', album: '' };
  const keys = /** @type {Record<string, 'title'|'artist'|'album'>} */ ({ '\u00a9nam': 'title', '\u00a9ART': 'artist', '\u00a9alb': 'album' });
  for (const item of boxes(ilst.start, ilst.end)) {
    const key = keys[item.type];
    if (!key) continue;
    const data = find(boxes(item.start, item.end), 'data');
    // 4 bytes type, 4 bytes locale, then the text.
    if (data) out[key] = utf8.decode(b.subarray(data.start + 8, data.end)).trim();
  }
  return out.title || out.artist || out.album ? out : null;
}

//! A SPDY/3.1 frame codec: the subset `kubectl port-forward` speaks (draft-mbelshe-httpbis-spdy-00 §2;
//! the Go implementation kubectl uses is moby/spdystream `spdy/{types,read,write}.go`).
//!
//! Wire shapes, all integers big-endian:
//! - control frame: `1 | version (15 bits) | type (16) | flags (8) | length (24)`, then `length` bytes;
//! - data frame: `0 | stream id (31 bits) | flags (8) | length (24)`, then `length` bytes of payload.
//!
//! Header blocks (in SYN_STREAM, SYN_REPLY and HEADERS) are a pair count (u32), then for each pair the
//! name and the value, each as a u32 length and bytes, zlib-compressed with the SPDY/3 [`dictionary`]. Each
//! direction of a connection has one zlib stream for all its header blocks, sync-flushed after each block:
//! [`HeaderCompressor`] and [`HeaderDecompressor`] keep that state.
//!
//! Decoding never panics: malformed input is an [`Error`], after which the connection must be closed (a
//! header decompression failure desynchronises the shared zlib stream for good).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::sync::OnceLock;

/// The protocol version this codec speaks and accepts.
pub const VERSION: u16 = 3;
/// The FLAG_FIN flag of data, SYN_STREAM, SYN_REPLY and HEADERS frames: the sender's half of the stream
/// is closed after this frame.
pub const FLAG_FIN: u8 = 0x01;
/// The FLAG_UNIDIRECTIONAL flag of SYN_STREAM: the recipient must not send on the stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// The largest payload a frame can carry (its length field has 24 bits).
pub const MAX_LENGTH: usize = 0x00FF_FFFF;
/// The largest decompressed header block [`HeaderDecompressor`] accepts, in bytes (a guard against
/// decompression bombs; port-forward header blocks are well under 1 KiB).
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Control frame types (SPDY/3 §2.6).
pub mod kind {
    /// SYN_STREAM: opens a stream.
    pub const SYN_STREAM: u16 = 1;
    /// SYN_REPLY: accepts a stream.
    pub const SYN_REPLY: u16 = 2;
    /// RST_STREAM: aborts a stream.
    pub const RST_STREAM: u16 = 3;
    /// SETTINGS.
    pub const SETTINGS: u16 = 4;
    /// PING: echoed by the side that did not send it.
    pub const PING: u16 = 6;
    /// GOAWAY: the sender opens no more streams.
    pub const GOAWAY: u16 = 7;
    /// HEADERS: more headers for a stream.
    pub const HEADERS: u16 = 8;
    /// WINDOW_UPDATE: flow control.
    pub const WINDOW_UPDATE: u16 = 9;
}

/// RST_STREAM status codes (SPDY/3 §2.4.2) that port forwarding uses.
pub mod status {
    /// A protocol error on the stream.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// The stream was refused before any processing (after GOAWAY).
    pub const REFUSED_STREAM: u32 = 3;
    /// The stream is no longer needed (what spdystream's `Stream.Reset` sends).
    pub const CANCEL: u32 = 5;
}

/// A header block, decompressed: (name, value) pairs in wire order. SPDY/3 names are lowercase; a value
/// holding several values separates them with NUL bytes.
pub type Headers = Vec<(String, String)>;

/// The first value of header `name` (compared case-insensitively), if present.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

/// One SPDY/3 frame. Header blocks are carried compressed, as on the wire (see [`HeaderCompressor`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A data frame: `data` for stream `stream_id` (31 bits, non-zero).
    Data {
        /// The stream.
        stream_id: u32,
        /// [`FLAG_FIN`] or 0.
        flags: u8,
        /// The payload, at most [`MAX_LENGTH`] bytes.
        data: Vec<u8>,
    },
    /// SYN_STREAM (type 1).
    SynStream {
        /// The new stream (odd when the client opens it).
        stream_id: u32,
        /// The stream it is associated with, or 0.
        associated_id: u32,
        /// Priority 0 (highest) to 7.
        priority: u8,
        /// Credential slot (unused here, 0).
        slot: u8,
        /// [`FLAG_FIN`], [`FLAG_UNIDIRECTIONAL`].
        flags: u8,
        /// The compressed header block.
        header_block: Vec<u8>,
    },
    /// SYN_REPLY (type 2).
    SynReply {
        /// The stream accepted.
        stream_id: u32,
        /// [`FLAG_FIN`] or 0.
        flags: u8,
        /// The compressed header block.
        header_block: Vec<u8>,
    },
    /// RST_STREAM (type 3).
    RstStream {
        /// The stream aborted.
        stream_id: u32,
        /// Why (see [`status`]).
        status: u32,
    },
    /// SETTINGS (type 4): (flags, id, value) entries.
    Settings {
        /// Frame flags (0x01 clears persisted settings).
        flags: u8,
        /// The entries: flags (8 bits), id (24 bits), value.
        entries: Vec<(u8, u32, u32)>,
    },
    /// PING (type 6).
    Ping {
        /// Odd from the client, even from the server.
        id: u32,
    },
    /// GOAWAY (type 7).
    GoAway {
        /// The last stream the sender processed.
        last_good_stream_id: u32,
        /// 0 OK, 1 protocol error, 2 internal error.
        status: u32,
    },
    /// HEADERS (type 8).
    Headers {
        /// The stream.
        stream_id: u32,
        /// [`FLAG_FIN`] or 0.
        flags: u8,
        /// The compressed header block.
        header_block: Vec<u8>,
    },
    /// WINDOW_UPDATE (type 9).
    WindowUpdate {
        /// The stream.
        stream_id: u32,
        /// Bytes added to the send window (31 bits).
        delta: u32,
    },
    /// A control frame of a type this codec does not know; SPDY/3 says to ignore it.
    Unknown {
        /// The frame type.
        kind: u16,
        /// Its flags.
        flags: u8,
        /// Its payload.
        payload: Vec<u8>,
    },
}

/// Why a byte stream is not valid SPDY/3 (the connection must then be closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    /// A frame whose fields do not fit its type.
    #[error("malformed SPDY frame (type {kind}): {why}")]
    Malformed {
        /// The control frame type, 0 for data frames.
        kind: u16,
        /// What is wrong.
        why: &'static str,
    },
    /// A frame to encode that does not fit the wire format.
    #[error("cannot encode SPDY frame: {0}")]
    Encode(&'static str),
    /// A header block that does not decompress or parse.
    #[error("bad SPDY header block: {0}")]
    HeaderBlock(String),
}

fn malformed(kind: u16, why: &'static str) -> Error {
    Error::Malformed { kind, why }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn stream_id(kind: u16, raw: u32) -> Result<u32, Error> {
    match raw & 0x7FFF_FFFF {
        0 => Err(malformed(kind, "stream id 0")),
        id => Ok(id),
    }
}

impl Frame {
    /// Append the wire form of this frame to `out`.
    ///
    /// # Errors
    /// [`Error::Encode`] when a payload is longer than [`MAX_LENGTH`] or a stream id does not fit 31 bits
    /// (`out` is then left unchanged).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let check_id = |id: u32| {
            if id == 0 || id > 0x7FFF_FFFF {
                Err(Error::Encode("stream id must be 1..=2^31-1"))
            } else {
                Ok(id)
            }
        };
        let (kind, flags, payload): (u16, u8, Vec<u8>) = match self {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                let id = check_id(*stream_id)?;
                if data.len() > MAX_LENGTH {
                    return Err(Error::Encode("data longer than 2^24-1 bytes"));
                }
                out.extend_from_slice(&id.to_be_bytes());
                out.push(*flags);
                out.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                out.extend_from_slice(data);
                return Ok(());
            }
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                slot,
                flags,
                header_block,
            } => {
                let mut p = Vec::with_capacity(10 + header_block.len());
                p.extend_from_slice(&check_id(*stream_id)?.to_be_bytes());
                p.extend_from_slice(&(associated_id & 0x7FFF_FFFF).to_be_bytes());
                p.push((priority & 0x07) << 5);
                p.push(*slot);
                p.extend_from_slice(header_block);
                (kind::SYN_STREAM, *flags, p)
            }
            Frame::SynReply {
                stream_id,
                flags,
                header_block,
            } => (
                kind::SYN_REPLY,
                *flags,
                with_id(check_id(*stream_id)?, header_block),
            ),
            Frame::Headers {
                stream_id,
                flags,
                header_block,
            } => (
                kind::HEADERS,
                *flags,
                with_id(check_id(*stream_id)?, header_block),
            ),
            Frame::RstStream { stream_id, status } => {
                (kind::RST_STREAM, 0, two_words(check_id(*stream_id)?, *status))
            }
            Frame::Settings { flags, entries } => {
                let mut p = Vec::with_capacity(4 + entries.len() * 8);
                p.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for (f, id, value) in entries {
                    p.extend_from_slice(&((u32::from(*f) << 24) | (id & 0x00FF_FFFF)).to_be_bytes());
                    p.extend_from_slice(&value.to_be_bytes());
                }
                (kind::SETTINGS, *flags, p)
            }
            Frame::Ping { id } => (kind::PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => (
                kind::GOAWAY,
                0,
                two_words(last_good_stream_id & 0x7FFF_FFFF, *status),
            ),
            Frame::WindowUpdate { stream_id, delta } => (
                kind::WINDOW_UPDATE,
                0,
                two_words(check_id(*stream_id)?, delta & 0x7FFF_FFFF),
            ),
            Frame::Unknown { kind, flags, payload } => (*kind, *flags, payload.clone()),
        };
        if payload.len() > MAX_LENGTH {
            return Err(Error::Encode("control frame longer than 2^24-1 bytes"));
        }
        out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.push(flags);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&payload);
        Ok(())
    }

    /// Decode the frame at the start of `buf`: `Ok(None)` when `buf` does not hold a whole frame yet,
    /// else the frame and the number of bytes it took.
    ///
    /// # Errors
    /// [`Error::Version`] for a control frame of another version, [`Error::Malformed`] for fields that do
    /// not fit the frame type (short payloads, stream id 0 where one is required).
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, Error> {
        let Some(head) = buf.get(..8) else {
            return Ok(None);
        };
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let flags = head[4];
        let Some(payload) = buf.get(8..8 + length) else {
            return Ok(None);
        };
        let used = 8 + length;
        if head[0] & 0x80 == 0 {
            let raw = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            let frame = Frame::Data {
                stream_id: stream_id(0, raw)?,
                flags,
                data: payload.to_vec(),
            };
            return Ok(Some((frame, used)));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7FFF;
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let word = |at: usize| u32_at(payload, at).ok_or_else(|| malformed(kind, "payload too short"));
        let frame = match kind {
            kind::SYN_STREAM => {
                if payload.len() < 10 {
                    return Err(malformed(kind, "payload too short"));
                }
                Frame::SynStream {
                    stream_id: stream_id(kind, word(0)?)?,
                    associated_id: word(4)? & 0x7FFF_FFFF,
                    priority: payload[8] >> 5,
                    slot: payload[9],
                    flags,
                    header_block: payload[10..].to_vec(),
                }
            }
            kind::SYN_REPLY => Frame::SynReply {
                stream_id: stream_id(kind, word(0)?)?,
                flags,
                header_block: payload[4..].to_vec(),
            },
            kind::HEADERS => Frame::Headers {
                stream_id: stream_id(kind, word(0)?)?,
                flags,
                header_block: payload[4..].to_vec(),
            },
            kind::RST_STREAM => {
                if payload.len() != 8 {
                    return Err(malformed(kind, "length must be 8"));
                }
                Frame::RstStream {
                    stream_id: stream_id(kind, word(0)?)?,
                    status: word(4)?,
                }
            }
            kind::SETTINGS => {
                let count = word(0)? as usize;
                if payload.len() != 4 + count.saturating_mul(8) {
                    return Err(malformed(kind, "length does not match the entry count"));
                }
                let mut entries = Vec::with_capacity(count);
                for i in 0..count {
                    let at = 4 + i * 8;
                    let fid = word(at)?;
                    entries.push(((fid >> 24) as u8, fid & 0x00FF_FFFF, word(at + 4)?));
                }
                Frame::Settings { flags, entries }
            }
            kind::PING => {
                if payload.len() != 4 {
                    return Err(malformed(kind, "length must be 4"));
                }
                Frame::Ping { id: word(0)? }
            }
            kind::GOAWAY => {
                if payload.len() != 8 {
                    return Err(malformed(kind, "length must be 8"));
                }
                Frame::GoAway {
                    last_good_stream_id: word(0)? & 0x7FFF_FFFF,
                    status: word(4)?,
                }
            }
            kind::WINDOW_UPDATE => {
                if payload.len() != 8 {
                    return Err(malformed(kind, "length must be 8"));
                }
                Frame::WindowUpdate {
                    stream_id: stream_id(kind, word(0)?)?,
                    delta: word(4)? & 0x7FFF_FFFF,
                }
            }
            _ => Frame::Unknown {
                kind,
                flags,
                payload: payload.to_vec(),
            },
        };
        Ok(Some((frame, used)))
    }
}

fn with_id(id: u32, block: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(4 + block.len());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(block);
    p
}

fn two_words(a: u32, b: u32) -> Vec<u8> {
    let mut p = a.to_be_bytes().to_vec();
    p.extend_from_slice(&b.to_be_bytes());
    p
}

/// Reassembles frames from a byte stream delivered in arbitrary pieces (kubectl splits the SPDY stream
/// across WebSocket messages of any size, even 0 or 1 byte).
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, or `Ok(None)` until more bytes arrive.
    ///
    /// # Errors
    /// As [`Frame::decode`]; the reader is then unusable (the stream has lost its framing).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        match Frame::decode(&self.buf)? {
            Some((frame, used)) => {
                self.buf.drain(..used);
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// How many received bytes do not form a whole frame yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// The SPDY/3 header compression dictionary (1423 bytes, Adler-32 `0xe3c6a7c2`), built from its
/// definition in the SPDY/3 draft §2.6.10.1: 65 header names and values, each preceded by its length as
/// a big-endian u32, then a run of common status codes, reason phrases, dates and content types.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        const WORDS: [&str; 65] = [
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &str = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
            "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
            "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
            "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
            "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
            "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        );
        let mut d = Vec::with_capacity(1423);
        for w in WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(TAIL.as_bytes());
        d
    })
}

/// Serialise a header block, uncompressed: pair count, then length-prefixed names and values (u32,
/// big-endian). Names are written lowercase, as SPDY/3 requires.
pub fn encode_header_block(headers: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// Parse an uncompressed header block (see [`encode_header_block`]). Invalid UTF-8 is replaced.
///
/// # Errors
/// [`Error::HeaderBlock`] when a length runs past the end or bytes are left over.
pub fn decode_header_block(raw: &[u8]) -> Result<Headers, Error> {
    let bad = |why: &str| Error::HeaderBlock(why.to_string());
    let count = u32_at(raw, 0).ok_or_else(|| bad("no pair count"))? as usize;
    let mut at = 4;
    let take = |at: &mut usize| -> Result<String, Error> {
        let len = u32_at(raw, *at).ok_or_else(|| bad("truncated length"))? as usize;
        let start = *at + 4;
        let bytes = start
            .checked_add(len)
            .and_then(|end| raw.get(start..end))
            .ok_or_else(|| bad("truncated name or value"))?;
        *at = start + len;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    };
    // Each pair takes at least 8 bytes: a count larger than that cannot be honest.
    if count > raw.len() / 8 {
        return Err(bad("pair count larger than the block"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = take(&mut at)?;
        let value = take(&mut at)?;
        headers.push((name, value));
    }
    if at != raw.len() {
        return Err(bad("bytes after the last pair"));
    }
    Ok(headers)
}

/// The compressing side of one direction of a connection: one zlib stream (with the SPDY/3
/// [`dictionary`]) for every header block this side sends, each block sync-flushed so the peer can
/// decode it on its own.
pub struct HeaderCompressor {
    z: Compress,
}

impl std::fmt::Debug for HeaderCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCompressor")
            .field("total_in", &self.z.total_in())
            .finish()
    }
}

impl HeaderCompressor {
    /// A fresh zlib stream primed with the dictionary.
    ///
    /// # Errors
    /// [`Error::HeaderBlock`] if the zlib backend refuses the dictionary.
    pub fn new() -> Result<Self, Error> {
        let mut z = Compress::new(Compression::default(), true);
        z.set_dictionary(dictionary())
            .map_err(|e| Error::HeaderBlock(format!("dictionary: {e}")))?;
        Ok(Self { z })
    }

    /// Compress `headers` into the next block of this stream.
    ///
    /// # Errors
    /// [`Error::HeaderBlock`] when zlib fails (it does not on valid state).
    pub fn compress(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, Error> {
        let input = encode_header_block(headers);
        let mut out = Vec::with_capacity(input.len() + 64);
        let start = self.z.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            let consumed = (self.z.total_in() - start) as usize;
            let rest = input.get(consumed..).unwrap_or_default();
            self.z
                .compress_vec(rest, &mut out, FlushCompress::Sync)
                .map_err(|e| Error::HeaderBlock(e.to_string()))?;
            let consumed = (self.z.total_in() - start) as usize;
            // The flush is complete once all input is in and zlib left output space unused.
            if consumed >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The decompressing side of one direction of a connection (see [`HeaderCompressor`]).
pub struct HeaderDecompressor {
    z: Decompress,
}

impl std::fmt::Debug for HeaderDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderDecompressor")
            .field("total_in", &self.z.total_in())
            .finish()
    }
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    /// A fresh zlib stream; the dictionary is supplied when the stream's header asks for it.
    pub fn new() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }

    /// Decompress and parse the next header block of this stream.
    ///
    /// # Errors
    /// [`Error::HeaderBlock`] when the bytes are not the next part of the zlib stream, ask for another
    /// dictionary, inflate past [`MAX_HEADER_BLOCK`] or do not parse.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, Error> {
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4 + 64);
        let start = self.z.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let consumed = (self.z.total_in() - start) as usize;
            let rest = block.get(consumed..).unwrap_or_default();
            match self.z.decompress_vec(rest, &mut out, FlushDecompress::Sync) {
                Ok(Status::StreamEnd) => return Err(Error::HeaderBlock("zlib stream ended".into())),
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(id) => {
                        let ours = self
                            .z
                            .set_dictionary(dictionary())
                            .map_err(|e| Error::HeaderBlock(format!("dictionary: {e}")))?;
                        if ours != id {
                            return Err(Error::HeaderBlock(format!("unknown dictionary {id:#010x}")));
                        }
                        continue;
                    }
                    None => return Err(Error::HeaderBlock(e.to_string())),
                },
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(Error::HeaderBlock("header block too large".into()));
            }
            let consumed = (self.z.total_in() - start) as usize;
            if consumed >= block.len() && out.len() < out.capacity() {
                return decode_header_block(&out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn round_trip(frame: Frame) {
        let mut wire = Vec::new();
        frame.encode(&mut wire).expect("encode");
        let (back, used) = Frame::decode(&wire).expect("decode").expect("whole frame");
        assert_eq!(used, wire.len());
        assert_eq!(back, frame);
        // Every strict prefix is "not yet".
        for cut in 0..wire.len() {
            assert_eq!(Frame::decode(&wire[..cut]), Ok(None), "prefix {cut}");
        }
    }

    #[test]
    fn every_frame_type_round_trips() {
        round_trip(Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: b"hello".to_vec(),
        });
        round_trip(Frame::Data {
            stream_id: 0x7FFF_FFFF,
            flags: 0,
            data: Vec::new(),
        });
        round_trip(Frame::SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 7,
            slot: 0,
            flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
            header_block: vec![1, 2, 3],
        });
        round_trip(Frame::SynReply {
            stream_id: 1,
            flags: 0,
            header_block: vec![9; 20],
        });
        round_trip(Frame::Headers {
            stream_id: 5,
            flags: FLAG_FIN,
            header_block: vec![],
        });
        round_trip(Frame::RstStream {
            stream_id: 7,
            status: status::CANCEL,
        });
        round_trip(Frame::Settings {
            flags: 1,
            entries: vec![(1, 7, 65536), (0, 4, 100)],
        });
        round_trip(Frame::Ping { id: 1 });
        round_trip(Frame::GoAway {
            last_good_stream_id: 9,
            status: 0,
        });
        round_trip(Frame::WindowUpdate {
            stream_id: 3,
            delta: 1 << 20,
        });
        round_trip(Frame::Unknown {
            kind: 42,
            flags: 3,
            payload: vec![0xAB; 3],
        });
    }

    #[test]
    fn wire_layout_matches_the_spec() {
        let mut w = Vec::new();
        Frame::Ping { id: 0x0102_0304 }.encode(&mut w).expect("ping");
        assert_eq!(w, [0x80, 3, 0, 6, 0, 0, 0, 4, 1, 2, 3, 4]);
        w.clear();
        Frame::Data {
            stream_id: 5,
            flags: FLAG_FIN,
            data: b"ab".to_vec(),
        }
        .encode(&mut w)
        .expect("data");
        assert_eq!(w, [0, 0, 0, 5, 1, 0, 0, 2, b'a', b'b']);
        w.clear();
        Frame::SynReply {
            stream_id: 1,
            flags: 0,
            header_block: vec![0xEE],
        }
        .encode(&mut w)
        .expect("reply");
        assert_eq!(w, [0x80, 3, 0, 2, 0, 0, 0, 5, 0, 0, 0, 1, 0xEE]);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        // SPDY/2 control frame.
        assert_eq!(
            Frame::decode(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]),
            Err(Error::Version(2))
        );
        // PING with a 3-byte payload, RST_STREAM with 4, SYN_STREAM shorter than its fixed part.
        assert!(Frame::decode(&[0x80, 3, 0, 6, 0, 0, 0, 3, 0, 0, 1]).is_err());
        assert!(Frame::decode(&[0x80, 3, 0, 3, 0, 0, 0, 4, 0, 0, 0, 1]).is_err());
        assert!(Frame::decode(&[0x80, 3, 0, 1, 0, 0, 0, 2, 0, 1]).is_err());
        assert!(Frame::decode(&[0x80, 3, 0, 2, 0, 0, 0, 2, 0, 1]).is_err());
        // Data frame for stream 0; SETTINGS whose count disagrees with its length.
        assert!(Frame::decode(&[0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(Frame::decode(&[0x80, 3, 0, 4, 0, 0, 0, 4, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        // Header blocks: truncated, absurd counts, trailing bytes.
        assert!(decode_header_block(&[]).is_err());
        assert!(decode_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
        assert!(decode_header_block(&[0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        assert!(decode_header_block(&[0, 0, 0, 0, 7]).is_err());
        assert!(decode_header_block(&[0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
        // Garbage where a compressed block belongs.
        let mut d = HeaderDecompressor::new();
        assert!(d.decompress(b"this is not zlib").is_err());
        // Encoding refuses what the wire cannot carry.
        let mut w = Vec::new();
        assert!(
            Frame::Data {
                stream_id: 0,
                flags: 0,
                data: vec![]
            }
            .encode(&mut w)
            .is_err()
        );
        assert!(
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: vec![0; MAX_LENGTH + 1]
            }
            .encode(&mut w)
            .is_err()
        );
        assert!(w.is_empty());
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
        // zlib reports the dictionary's Adler-32, which is also the id in every SPDY/3 zlib header.
        let mut z = Compress::new(Compression::default(), true);
        assert_eq!(z.set_dictionary(d).expect("set"), 0xe3c6_a7c2);
    }

    #[test]
    fn header_blocks_share_one_zlib_stream_per_direction() {
        let mut c = HeaderCompressor::new().expect("compressor");
        let mut d = HeaderDecompressor::new();
        let blocks = [
            h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            h(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            h(&[]),
            h(&[("Multi", "a\0b")]),
        ];
        let mut first = None;
        for block in &blocks {
            let z = c.compress(block).expect("compress");
            first.get_or_insert_with(|| z.clone());
            let back = d.decompress(&z).expect("decompress");
            let lower: Headers = block
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect();
            assert_eq!(back, lower);
        }
        // The first block carries the zlib header announcing the preset dictionary (FDICT) by its id.
        let first = first.expect("first");
        assert_eq!(first[0] & 0x0F, 8, "deflate");
        assert_eq!(first[1] & 0x20, 0x20, "FDICT");
        assert_eq!(&first[2..6], &0xe3c6_a7c2u32.to_be_bytes());
        assert_eq!(header(&blocks[3], "multi"), Some("a"));
        // The dictionary makes these names cheap, and later blocks cheaper still.
        let again = c.compress(&blocks[0]).expect("again");
        assert!(again.len() < 20, "{}", again.len());
        assert_eq!(d.decompress(&again).expect("again"), blocks[0]);
    }

    #[test]
    fn a_decompressor_without_the_shared_history_fails_cleanly() {
        let mut c = HeaderCompressor::new().expect("compressor");
        let _ = c.compress(&h(&[("a", "b")])).expect("first");
        let second = c.compress(&h(&[("a", "b")])).expect("second");
        // A fresh stream sees no zlib header: an error, not a panic or a wrong answer.
        assert!(HeaderDecompressor::new().decompress(&second).is_err());
    }

    #[test]
    fn reassembles_frames_split_into_single_bytes() {
        let mut c = HeaderCompressor::new().expect("compressor");
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                header_block: c
                    .compress(&h(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]))
                    .expect("z"),
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: vec![],
            },
            Frame::Ping { id: 1 },
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
            },
        ];
        let mut wire = Vec::new();
        for f in &frames {
            f.encode(&mut wire).expect("encode");
        }
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for b in &wire {
            r.push(&[]);
            r.push(std::slice::from_ref(b));
            while let Some(f) = r.next_frame().expect("frame") {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
        assert_eq!(r.pending(), 0);
        let Frame::SynStream { header_block, .. } = &got[0] else {
            panic!("not a SYN_STREAM: {:?}", got[0]);
        };
        let hs = HeaderDecompressor::new()
            .decompress(header_block)
            .expect("headers");
        assert_eq!(header(&hs, "streamtype"), Some("error"));
        assert_eq!(header(&hs, "PORT"), Some("80"));
    }
}

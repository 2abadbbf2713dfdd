//! Byte layout of the `kv` and `log` tables: little-endian integers and length-prefixed bytes.

use crate::{Error, Event, EventKind, KeyValue, Memo, Result};

fn corrupt(what: &str) -> Error {
    Error::Backend(format!("corrupt {what} record"))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self
            .take(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))?;
        self.take(n as usize)
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// `kv` value: create_revision, mod_revision, value.
pub(crate) fn encode_kv(kv: &KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + kv.value.len());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    out.extend_from_slice(&kv.value);
    out
}

pub(crate) fn decode_kv(key: &str, bytes: &[u8]) -> Result<KeyValue> {
    let mut r = Reader(bytes);
    let create_revision = r.i64().ok_or_else(|| corrupt("kv"))?;
    let mod_revision = r.i64().ok_or_else(|| corrupt("kv"))?;
    Ok(KeyValue {
        key: key.to_string(),
        value: r.0.to_vec(),
        create_revision,
        mod_revision,
    })
}

fn put_kv(out: &mut Vec<u8>, kv: &KeyValue) {
    put_bytes(out, kv.key.as_bytes());
    out.extend_from_slice(&kv.create_revision.to_le_bytes());
    out.extend_from_slice(&kv.mod_revision.to_le_bytes());
    put_bytes(out, &kv.value);
}

fn read_kv(r: &mut Reader<'_>) -> Option<KeyValue> {
    let key = String::from_utf8(r.bytes()?.to_vec()).ok()?;
    let create_revision = r.i64()?;
    let mod_revision = r.i64()?;
    let value = r.bytes()?.to_vec();
    Some(KeyValue {
        key,
        value,
        create_revision,
        mod_revision,
    })
}

/// `log` value: kind, kv, optional prev.
pub(crate) fn encode_event(ev: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + ev.kv.value.len() * 2);
    out.push(match ev.kind {
        EventKind::Put => 0,
        EventKind::Delete => 1,
    });
    put_kv(&mut out, &ev.kv);
    match &ev.prev {
        Some(p) => {
            out.push(1);
            put_kv(&mut out, p);
        }
        None => out.push(0),
    }
    out
}

pub(crate) fn decode_event(bytes: &[u8]) -> Result<Event> {
    let mut r = Reader(bytes);
    let parse = |r: &mut Reader<'_>| -> Option<Event> {
        let kind = match r.u8()? {
            0 => EventKind::Put,
            1 => EventKind::Delete,
            _ => return None,
        };
        let kv = read_kv(r)?;
        let prev = match r.u8()? {
            1 => Some(read_kv(r)?),
            _ => None,
        };
        Some(Event {
            kind,
            kv,
            prev,
            memo: Memo::default(),
        })
    };
    parse(&mut r).ok_or_else(|| corrupt("log"))
}

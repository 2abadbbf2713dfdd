//! TEMPORARY SHIM (replaced by the redb store being written): in-memory, same API.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
pub type Revision = i64;
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev: Option<KeyValue>,
}
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("already exists: {key}")]
    AlreadyExists { key: String },
    #[error("not found: {key}")]
    NotFound { key: String },
    #[error("conflict: {key} at {current}")]
    Conflict { key: String, current: Revision },
    #[error("compacted: {requested} < {compacted}")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("backend: {0}")]
    Backend(String),
    #[error("closed")]
    Closed,
}
pub type Result<T, E = Error> = std::result::Result<T, E>;
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub history: u64,
}
pub struct ListResult {
    pub kvs: Vec<KeyValue>,
    pub revision: Revision,
    pub more: bool,
}
#[derive(Default)]
struct Inner {
    kv: BTreeMap<String, KeyValue>,
    log: Vec<Event>,
    rev: Revision,
}
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    tx: tokio::sync::broadcast::Sender<Event>,
}
pub type Watch = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Event>> + Send>>;
impl Store {
    pub fn open_embedded(_path: &Path, _opts: Options) -> Result<Store> {
        Ok(Store {
            inner: Default::default(),
            tx: tokio::sync::broadcast::channel(100_000).0,
        })
    }
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.inner.lock().unwrap().kv.get(key).cloned())
    }
    pub async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListResult> {
        let g = self.inner.lock().unwrap();
        let mut kvs: Vec<KeyValue> =
            g.kv.range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .filter(|(k, _)| start_after.is_none_or(|s| k.as_str() > s))
                .map(|(_, v)| v.clone())
                .collect();
        let more = limit != 0 && kvs.len() > limit;
        if more {
            kvs.truncate(limit);
        }
        Ok(ListResult {
            kvs,
            revision: g.rev,
            more,
        })
    }
    fn write(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
        check: impl FnOnce(Option<&KeyValue>) -> Result<()>,
    ) -> Result<KeyValue> {
        let mut g = self.inner.lock().unwrap();
        let prev = g.kv.get(key).cloned();
        check(prev.as_ref())?;
        g.rev += 1;
        let rev = g.rev;
        let ev = match value {
            Some(v) => {
                let kv = KeyValue {
                    key: key.into(),
                    value: v,
                    create_revision: prev.as_ref().map(|p| p.create_revision).unwrap_or(rev),
                    mod_revision: rev,
                };
                g.kv.insert(key.into(), kv.clone());
                Event {
                    kind: EventKind::Put,
                    kv,
                    prev,
                }
            }
            None => {
                let p = prev.clone().ok_or(Error::NotFound { key: key.into() })?;
                g.kv.remove(key);
                Event {
                    kind: EventKind::Delete,
                    kv: KeyValue {
                        mod_revision: rev,
                        ..p.clone()
                    },
                    prev: Some(p),
                }
            }
        };
        g.log.push(ev.clone());
        let _ = self.tx.send(ev.clone());
        Ok(ev.kv)
    }
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue> {
        self.write(key, Some(value), |p| {
            if p.is_some() {
                Err(Error::AlreadyExists { key: key.into() })
            } else {
                Ok(())
            }
        })
    }
    pub async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue> {
        self.write(key, Some(value), |p| match p {
            None => Err(Error::NotFound { key: key.into() }),
            Some(p) if p.mod_revision != expected => Err(Error::Conflict {
                key: key.into(),
                current: p.mod_revision,
            }),
            _ => Ok(()),
        })
    }
    pub async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        self.write(key, None, |p| match p {
            None => Err(Error::NotFound { key: key.into() }),
            Some(p) if expected.is_some_and(|e| e != p.mod_revision) => Err(Error::Conflict {
                key: key.into(),
                current: p.mod_revision,
            }),
            _ => Ok(()),
        })
    }
    pub fn watch(&self, prefix: &str, after: Revision) -> Result<Watch> {
        let rx = self.tx.subscribe();
        let g = self.inner.lock().unwrap();
        let prefix = prefix.to_string();
        let hist: Vec<Event> = g
            .log
            .iter()
            .filter(|e| e.kv.mod_revision > after && e.kv.key.starts_with(&prefix))
            .cloned()
            .collect();
        let last = g.rev;
        let live = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return None,
                }
            }
        });
        use futures::StreamExt;
        let p2 = prefix.clone();
        let s = futures::stream::iter(hist)
            .chain(live.filter(move |e| {
                let ok = e.kv.mod_revision > last.max(after) && e.kv.key.starts_with(&p2);
                async move { ok }
            }))
            .map(Ok);
        Ok(Box::pin(s))
    }
    pub fn revision(&self) -> Revision {
        self.inner.lock().unwrap().rev
    }
}

//! Declared watches: one kube-rs reflector per watched kind, merged into one stream of [`Signal`]s.

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;

/// What a watched kind's reflector reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An object changed in the cache.
    Changed,
    /// A (re)list started: the cache may be incomplete until [`Signal::Synced`] (kube watcher's
    /// `Event::Init`, which follows a lost watch (410 Gone) as well as the first start).
    Relisting,
    /// The list completed: the cache holds every object (kube watcher's `Event::InitDone`).
    Synced,
    /// A watch or list request failed; the watcher retries with back-off, from the same
    /// resourceVersion where it can (no event is lost), by relisting otherwise.
    Failed,
}

/// The kinds a loop watches, each kept in a reflector cache.
pub struct Informers {
    pub(crate) streams: Vec<BoxStream<'static, (usize, Signal)>>,
    pub(crate) kinds: Vec<String>,
}

impl Default for Informers {
    fn default() -> Self {
        Self::new()
    }
}

impl Informers {
    /// No watches yet.
    #[must_use]
    pub fn new() -> Self {
        Informers {
            streams: Vec::new(),
            kinds: Vec::new(),
        }
    }

    /// Watch a statically typed kind through `api` with `config`; returns its cache.
    pub fn watch<K>(&mut self, api: Api<K>, config: watcher::Config) -> reflector::Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Default + Eq + Hash + Clone + Send + Sync + Unpin,
    {
        self.watch_with(api, config, K::DynamicType::default())
    }

    /// Watch a kind described at run time (`DynamicObject`, `PartialObjectMeta<DynamicObject>`).
    pub fn watch_with<K>(
        &mut self,
        api: Api<K>,
        config: watcher::Config,
        dt: K::DynamicType,
    ) -> reflector::Store<K>
    where
        K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync + Unpin,
    {
        let kind = K::kind(&dt).to_string();
        let writer = reflector::store::Writer::<K>::new(dt);
        let reader = writer.as_reader();
        let stream = reflector(writer, watcher(api, config)).default_backoff();
        self.add(kind, stream);
        reader
    }

    /// Wake the loop on each item of `events`, a source of changes that is not an API watch (the agent's
    /// container lifecycle events, a finished image pull). It holds no cache, so it never keeps the
    /// loop from planning; `name` is used in logs.
    pub fn wake_on<S>(&mut self, name: &str, events: S)
    where
        S: Stream<Item = ()> + Send + 'static,
    {
        let i = self.streams.len();
        self.kinds.push(name.to_string());
        self.streams.push(
            futures::stream::once(std::future::ready((i, Signal::Synced)))
                .chain(events.map(move |()| (i, Signal::Changed)))
                .boxed(),
        );
    }

    fn add<S, K>(&mut self, kind: String, stream: S)
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let i = self.streams.len();
        let name = kind.clone();
        self.kinds.push(kind);
        self.streams
            .push(stream.map(move |ev| (i, signal_of(&name, &ev))).boxed());
    }
}

/// The [`Signal`] of one reflector event; a failure is logged at warn with the kind.
pub(crate) fn signal_of<K>(kind: &str, ev: &Result<watcher::Event<K>, watcher::Error>) -> Signal {
    match ev {
        Ok(watcher::Event::Init) => Signal::Relisting,
        Ok(watcher::Event::InitDone) => Signal::Synced,
        Ok(_) => Signal::Changed,
        Err(e) => {
            tracing::warn!(kind, error = %e, "watch failed; retrying");
            Signal::Failed
        }
    }
}

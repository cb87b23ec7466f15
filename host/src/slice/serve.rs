//! Serving one request from the blocks of a sliced object.
//!
//! The client's bytes are produced block by block. A block in the store
//! (or being written to it by another request) is streamed from there. A
//! missing block is claimed together with the missing blocks after it, up
//! to `read_ahead` blocks past the last one the request needs, and the
//! whole run is asked of the origin in one `Range` request floored to the
//! first block's start. The client gets its bytes as they pass; each block
//! is stored as soon as it is complete, and a block cut short is never
//! stored. Once the client has its last byte, the rest of the run (the
//! read-ahead) is read in the background, bounded by the run.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header;
use pingora_cache::key::CacheHashKey;
use pingora_cache::{CacheKey, CacheMeta, HitHandler, MissHandler, RespCacheable};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use tokio::sync::watch;

use super::flights::{Claim, Flight};
use super::identity::{self, Identity};
use super::origin::{Ask, Carries, Fetch, Upstream};
use super::range::{self, Requested, Span, Spec};
use super::tee::{Keeper, Tee};
use super::{Engine, Judge, ObjectKey, Settings};
use crate::cache::freshness;
use crate::cache::key;
use crate::cache::outcome::Block;
use crate::cache::status::{CacheStatus, Detail, Fwd, SliceBlocks};
use crate::hop_by_hop;

/// How long a block's entry counts as fresh to the store. Blocks are
/// checked against their object's identity instead, whose record carries
/// the HTTP freshness.
const BLOCK_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long a request waits for another request's claim on a block to
/// settle before fetching it itself.
const CLAIM_WAIT: Duration = Duration::from_secs(10);

/// The request a slice engine serves.
#[derive(Clone)]
pub struct Target {
    /// The object's keys.
    pub object: ObjectKey,
    /// Where the origin is and what to ask it.
    pub upstream: Arc<Upstream>,
    /// The request carried `Authorization` (RFC 9111 §3.5).
    pub authorization: bool,
    /// Block size and read-ahead for this request.
    pub settings: Settings,
}

/// What the engine knows of the object it serves.
#[derive(Clone)]
struct Object {
    /// Its version, when it can be sliced; `None`: served from the origin
    /// without storing.
    identity: Option<Identity>,
    /// Its complete length.
    length: u64,
    /// Its block size: its identity's, or the request's when it has none.
    block: u64,
    /// Its record (and so its header and freshness), when blocks of it may
    /// be stored: stored, or being written (see `recorded`).
    meta: Option<Arc<CacheMeta>>,
    /// The record's write, when this request began one: its blocks and
    /// its client's last byte wait for it.
    recorded: Option<Recorded>,
    /// The header the client's response is built from (status 200, the
    /// complete length).
    header: ResponseHeader,
}

impl Object {
    /// The identity blocks are stored and read under, when they are.
    fn storing(&self) -> Option<&Identity> {
        self.meta.as_ref().and(self.identity.as_ref())
    }
}

/// An object's record being written off the path of the first bytes to the
/// client. Everything that lets another request find the object waits for
/// it: a block's write begins (and its claim settles) only once the record
/// is stored, and the client's response does not end before.
#[derive(Clone)]
struct Recorded(watch::Receiver<Option<bool>>);

impl Recorded {
    /// Write `meta` as `keys`' record, in the background.
    fn write(engine: &'static Engine, keys: &ObjectKey, meta: Arc<CacheMeta>) -> Recorded {
        let (done, recorded) = watch::channel(None);
        let key = keys.record();
        tokio::spawn(async move {
            let stored = match engine.store.begin_write(&key, &meta).await {
                Some(write) => engine.store.commit(&key, write, meta.fresh_until()).await,
                None => false,
            };
            done.send_replace(Some(stored));
        });
        Recorded(recorded)
    }

    /// Whether the record was stored, once its write is over.
    async fn stored(&mut self) -> bool {
        match self.0.wait_for(Option::is_some).await {
            Ok(stored) => *stored == Some(true),
            Err(_) => false,
        }
    }
}

/// What serving found out on the way, for `Cache-Status`.
#[derive(Default)]
struct Tally {
    /// The status of the first origin response, when one was asked for.
    fwd_status: Option<u16>,
    /// The record was stale and its validator was checked.
    revalidated: bool,
    /// That check failed and the stale record served (RFC 5861 §4).
    stale_if_error: bool,
}

/// The client's side: the bytes it is owed and how far it has got.
struct Client<'s> {
    session: &'s mut Session,
    /// The next byte to send.
    next: u64,
    /// The last byte to send.
    end: u64,
    done: bool,
    /// The object's record being written: the last byte waits for it, so
    /// the client's next request finds the object.
    recorded: Option<Recorded>,
}

impl Client<'_> {
    /// Send the part of `chunk` (the object's bytes from `at`) the client
    /// is owed next, ending the response with its last byte.
    async fn send(&mut self, at: u64, chunk: &Bytes) -> Result<()> {
        let chunk_end = at + chunk.len() as u64;
        if self.done || chunk_end <= self.next || at > self.next {
            return Ok(());
        }
        let from = (self.next - at) as usize;
        let to = (chunk_end.min(self.end + 1) - at) as usize;
        self.next += (to - from) as u64;
        self.done = self.next > self.end;
        if self.done {
            if let Some(mut recorded) = self.recorded.take() {
                recorded.stored().await;
            }
        }
        self.session
            .write_response_body(Some(chunk.slice(from..to)), self.done)
            .await
    }
}

/// An origin response being read for a run of blocks, storing each
/// complete block it passes.
struct Pump {
    fetch: Fetch,
    upstream: Arc<Upstream>,
    /// The object's offset of the next body byte.
    at: u64,
    /// Reading stops here (exclusive): the end of the run.
    stop: u64,
    /// Stores the blocks, when they are stored.
    keeper: Option<Keeper>,
}

/// The blocks a pump (or a [`super::tee::Tee`]) stores.
pub(super) struct Storing {
    identity: Identity,
    object: ObjectKey,
    /// The stored header each block carries (tags and identity).
    header: ResponseHeader,
    /// Claimed blocks not yet begun, by index.
    claims: Vec<(u64, Flight)>,
    /// The block being written.
    writing: Option<(u64, CacheKey, MissHandler)>,
    /// Blocks past this one are read ahead of the request.
    needed: u64,
    /// The object's record being written: no block is begun before it is
    /// stored, and none at all if it is not.
    recorded: Option<Recorded>,
}

impl Pump {
    /// The next body bytes and their offset; `None` once the run is read.
    /// Every chunk read must be handed to [`Pump::keep`] next, in order.
    async fn next(&mut self) -> Result<Option<(u64, Bytes)>> {
        if self.at >= self.stop {
            return Ok(None);
        }
        let Some(mut chunk) = self.fetch.next().await? else {
            return Error::e_explain(
                ErrorType::ConnectionClosed,
                "the origin ended the body before the range did",
            );
        };
        chunk.truncate((self.stop - self.at).min(chunk.len() as u64) as usize);
        let at = self.at;
        self.at += chunk.len() as u64;
        Ok(Some((at, chunk)))
    }

    /// Store `chunk`, read by [`Pump::next`] at `at`, into its blocks.
    async fn keep(&mut self, at: u64, chunk: Bytes) {
        if let Some(keeper) = &mut self.keeper {
            keeper.keep(at, chunk).await;
        }
    }

    /// The client has bytes from this run: store its blocks from now on
    /// (a pump started for a client holds them until then).
    fn store_now(&mut self) {
        if let Some(keeper) = &mut self.keeper {
            keeper.release();
        }
    }

    /// Read the rest of the run in the background, then release the
    /// connection: read-ahead outlives the request, bounded by the run. A
    /// run that stores nothing is not read on: its connection closes.
    fn drain(mut self, engine: &'static Engine) {
        self.store_now();
        if self.keeper.is_none() {
            self.stop = self.at;
        }
        tokio::spawn(async move {
            while let Ok(Some((at, chunk))) = self.next().await {
                self.keep(at, chunk).await;
            }
            self.fetch.release(&engine.connector, &self.upstream).await;
        });
    }
}

impl Storing {
    /// Storing for `object`'s claimed blocks, if blocks of it are stored.
    fn of(
        object: &Object,
        keys: &ObjectKey,
        claims: Vec<(u64, Flight)>,
        needed: u64,
    ) -> Option<Storing> {
        let identity = object.storing()?;
        let mut header = object.header.clone();
        let _ = header.insert_header(identity::FIELD, identity.token());
        Some(Storing {
            identity: identity.clone(),
            object: keys.clone(),
            header,
            claims,
            writing: None,
            needed,
            recorded: object.recorded.clone(),
        })
    }

    /// Store `chunk`, the object's bytes from `at`, into its blocks.
    pub(super) async fn store(&mut self, engine: &'static Engine, at: u64, mut chunk: Bytes) {
        if let Some(mut recorded) = self.recorded.take() {
            if !recorded.stored().await {
                // No record, no blocks: release the claims.
                self.claims.clear();
            }
        }
        let mut off = at;
        while !chunk.is_empty() {
            let index = off / self.identity.block;
            let span = self.identity.block_span(index);
            let piece = chunk.split_to(((span.end + 1 - off) as usize).min(chunk.len()));
            if off == span.start {
                self.begin(engine, index, span).await;
            }
            off += piece.len() as u64;
            let Some((writing, _, write)) = &mut self.writing else {
                continue;
            };
            if *writing != index {
                continue;
            }
            if write.write_body(piece, false).await.is_err() {
                self.writing = None;
                engine.metrics.slice_block(Block::Unstored);
                continue;
            }
            if off == span.end + 1 {
                let Some((_, key, write)) = self.writing.take() else {
                    continue;
                };
                let until = SystemTime::now() + BLOCK_LIFETIME;
                let stored = engine.store.commit(&key, write, until).await;
                engine
                    .metrics
                    .slice_block(match (stored, index > self.needed) {
                        (false, _) => Block::Unstored,
                        (true, false) => Block::Fetched,
                        (true, true) => Block::ReadAhead,
                    });
            }
        }
    }

    /// Begin writing block `index` if this run claimed it; its claim
    /// settles either way, so waiters look it up.
    async fn begin(&mut self, engine: &'static Engine, index: u64, span: Span) {
        let Some(at) = self.claims.iter().position(|(i, _)| *i == index) else {
            return;
        };
        let (_, flight) = self.claims.swap_remove(at);
        let key = self.object.block(index);
        let mut header = self.header.clone();
        let _ = header.insert_header(header::CONTENT_LENGTH, span.size());
        let now = SystemTime::now();
        let meta = CacheMeta::new(now + BLOCK_LIFETIME, now, 0, 0, header);
        let writing = engine.store.begin_write(&key, &meta).await;
        if writing.is_some() && index > self.needed {
            engine.unread.stored(hash(&key));
        }
        self.writing = writing.map(|write| (index, key, write));
        if self.writing.is_none() {
            engine.metrics.slice_block(Block::Unstored);
        }
        flight.settle();
    }
}

/// Where a block stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Whereabouts {
    /// Committed to the store.
    Stored,
    /// Being written: a lookup follows the write.
    Writing,
    /// Claimed by a request that has not begun writing it.
    Claimed,
    /// None of these: a request may fetch it.
    Missing,
}

/// The start of a request's response.
enum Start {
    /// The object is known: send the response for it, reading the first
    /// run from this pump if there is one.
    Object(Box<Object>, Option<Box<Pump>>),
    /// Answer with what the origin said, unchanged (an error status).
    Forward(Box<Fetch>),
}

impl Engine {
    /// Serve `session`'s request for the sliced object `target`: its
    /// range, the whole object, a `HEAD` or a conditional request. Returns
    /// what `Cache-Status` said.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the blocks being written (none is stored
    /// half-written) and releases their claims.
    pub async fn serve(
        &'static self,
        session: &mut Session,
        target: &Target,
        mut policy: Option<&mut (dyn Judge + 'static)>,
    ) -> Result<CacheStatus> {
        let mut tally = Tally::default();
        let requested = requested(session);
        let (object, first) = loop {
            match self
                .start(target, requested, &mut tally, policy.as_deref_mut())
                .await?
            {
                Some(Start::Object(object, first)) => break (*object, first.map(|p| *p)),
                Some(Start::Forward(fetch)) => return self.forward(session, *fetch, target).await,
                // Another request is fetching the start: look again.
                None => continue,
            }
        };
        let req = session.req_header();
        let head = req.method == http::Method::HEAD;
        let (status, span) = match respond_with(req, &object, requested) {
            Respond::NotModified => (304, None),
            Respond::Unsatisfiable => (416, None),
            Respond::Whole => (200, Span::whole(object.length)),
            Respond::Part(span) => (206, Some(span)),
        };
        let blocks = match (&object.identity, span) {
            (Some(identity), Some(span)) => Some(self.present(target, identity, span)),
            _ => None,
        };
        let cache_status = self.cache_status(&object, &tally, blocks, first.is_some());
        let header = self.client_header(&object, status, span, &cache_status);
        let body = !head && span.is_some();
        if !body {
            if let Some(mut recorded) = object.recorded.clone() {
                recorded.stored().await;
            }
        }
        session
            .write_response_header(Box::new(header), !body)
            .await?;
        let Some(span) = span.filter(|_| body) else {
            if let Some(pump) = first {
                pump.drain(self);
            }
            return Ok(cache_status);
        };
        let mut client = Client {
            session,
            next: span.start,
            end: span.end,
            done: false,
            recorded: object.recorded.clone(),
        };
        self.deliver(&mut client, target, &object, first).await?;
        Ok(cache_status)
    }

    /// Find out what the object is: its fresh record, a stale record
    /// revalidated, or (with no record) the origin's answer to the first
    /// fetch. `None` when another request is fetching its first block:
    /// wait for that and look again.
    async fn start(
        &'static self,
        target: &Target,
        requested: Requested,
        tally: &mut Tally,
        policy: Option<&mut (dyn Judge + 'static)>,
    ) -> Result<Option<Start>> {
        let now = SystemTime::now();
        if let Some(record) = self.record(&target.object).await {
            if record.meta.as_ref().is_some_and(|m| m.is_fresh(now)) {
                return Ok(Some(Start::Object(Box::new(record), None)));
            }
            return self
                .revalidate(record, target, tally, policy)
                .await
                .map(Some);
        }
        // No record: the first fetch learns the object. A range with a
        // first byte starts there (so the fetch also serves it); a suffix
        // or the whole object needs the length first.
        let first_block = match requested {
            Requested::One(Spec::From { first, last }) => Some((
                first / target.settings.block,
                last.map_or(first, |l| l.max(first)) / target.settings.block,
            )),
            _ => None,
        };
        let Some((first, needed)) = first_block else {
            let probe = Span { start: 0, end: 0 };
            let (fetch, learned) = self.first_fetch(target, probe, tally, policy).await?;
            return Ok(Some(match learned {
                Some(object) => Start::Object(Box::new(object), None),
                None => Start::Forward(Box::new(fetch)),
            }));
        };
        let Some(claims) = self.claim_run(
            &target.object,
            first,
            needed,
            None,
            target.settings.read_ahead,
        ) else {
            let key = target.object.block(first);
            self.flights.settled(hash(&key), CLAIM_WAIT).await;
            return Ok(None);
        };
        let ask = Self::run_span(first, claims.len() as u64, target.settings.block, None);
        let (fetch, learned) = self.first_fetch(target, ask, tally, policy).await?;
        let Some(object) = learned else {
            return Ok(Some(Start::Forward(Box::new(fetch))));
        };
        let unsatisfiable = matches!(fetch.carries(), Carries::Unsatisfiable(_));
        let pump = self.pump(fetch, target, &object, ask, needed, claims);
        if pump.is_none() && !unsatisfiable {
            // A 206 for other bytes than asked, or a length the record
            // does not have: nothing has gone to the client yet.
            return Err(mismatched());
        }
        Ok(Some(Start::Object(Box::new(object), pump.map(Box::new))))
    }

    /// Ask the origin for `ask` of an object with no record, and learn
    /// from its answer what the object is.
    async fn first_fetch(
        &'static self,
        target: &Target,
        ask: Span,
        tally: &mut Tally,
        policy: Option<&mut (dyn Judge + 'static)>,
    ) -> Result<(Fetch, Option<Object>)> {
        let fetch = Fetch::start(&self.connector, &target.upstream, Ask::Span(ask)).await?;
        tally.fwd_status = Some(fetch.header.status.as_u16());
        let learned = self
            .learn(
                &fetch.header,
                &target.object,
                target.authorization,
                target.settings,
                None,
                policy,
            )
            .await?;
        Ok((fetch, learned))
    }

    /// A stale record: ask the origin for its first byte and compare
    /// versions. The same version refreshes the record and keeps its
    /// blocks; another replaces it and removes every block of the old.
    async fn revalidate(
        &'static self,
        stale: Object,
        target: &Target,
        tally: &mut Tally,
        policy: Option<&mut (dyn Judge + 'static)>,
    ) -> Result<Start> {
        tally.revalidated = true;
        let probe = Span { start: 0, end: 0 };
        let failed = match Fetch::start(&self.connector, &target.upstream, Ask::Span(probe)).await {
            Ok(fetch) if fetch.header.status.is_server_error() => {
                let status = fetch.header.status.as_u16();
                tally.fwd_status = Some(status);
                fetch.release(&self.connector, &target.upstream).await;
                Error::explain(
                    ErrorType::HTTPStatus(status),
                    "revalidating a sliced object",
                )
            }
            Ok(fetch) => {
                tally.fwd_status = Some(fetch.header.status.as_u16());
                let known = stale.identity.as_ref();
                let learned = self.learn(
                    &fetch.header,
                    &target.object,
                    target.authorization,
                    target.settings,
                    known,
                    policy,
                );
                return Ok(match learned.await? {
                    Some(object) => {
                        drain_small(fetch, self, &target.upstream).await;
                        Start::Object(Box::new(object), None)
                    }
                    None => Start::Forward(Box::new(fetch)),
                });
            }
            Err(e) => e,
        };
        // RFC 5861 §4: the stale record serves if its window allows.
        let now = SystemTime::now();
        if stale
            .meta
            .as_ref()
            .is_some_and(|m| m.serve_stale_if_error(now))
        {
            tally.stale_if_error = true;
            Ok(Start::Object(Box::new(stale), None))
        } else {
            Err(failed)
        }
    }

    /// What an origin response says the object is. A sliceable, storable
    /// one gets its record written (replacing, with all its blocks, a
    /// record of another version than `known`). `None` when the response
    /// is not part of the object (an error status): forward it.
    async fn learn(
        &'static self,
        response: &ResponseHeader,
        keys: &ObjectKey,
        authorization: bool,
        settings: Settings,
        known: Option<&Identity>,
        mut policy: Option<&mut (dyn Judge + 'static)>,
    ) -> Result<Option<Object>> {
        let length = match Carries::of(response) {
            Carries::Part { length, .. }
            | Carries::Whole(length)
            | Carries::Unsatisfiable(length) => length,
            Carries::Other => return Ok(None),
        };
        let mut header = response.clone();
        hop_by_hop::strip(&mut header);
        freshness::stamp_date(&mut header, SystemTime::now());
        header.set_status(200)?;
        header.remove_header(&header::CONTENT_RANGE);
        header.insert_header(header::CONTENT_LENGTH, length)?;
        let identity = Identity::of(&header, length, settings.block);
        if known.is_some() && identity.as_ref() != known {
            self.remove(keys).await;
        }
        if let Some(policy) = policy.as_deref_mut() {
            policy.consult(&mut header).await?;
        }
        let Some(identity) = identity else {
            return Ok(Some(Object {
                identity: None,
                length,
                block: settings.block,
                meta: None,
                recorded: None,
                header,
            }));
        };
        let _ = header.insert_header(identity::FIELD, identity.token());
        let now = SystemTime::now();
        let decision = policy
            .and_then(|p| p.verdict(&header, now))
            .unwrap_or_else(|| {
                freshness::decide(&header, authorization, Duration::ZERO, &self.rules, now)
            });
        let (meta, recorded) = match decision {
            RespCacheable::Cacheable(meta) => {
                let meta = Arc::new(meta);
                let recorded = Recorded::write(self, keys, meta.clone());
                (Some(meta), Some(recorded))
            }
            _ => (None, None),
        };
        header.remove_header(identity::FIELD);
        Ok(Some(Object {
            block: identity.block,
            identity: Some(identity),
            length,
            meta,
            recorded,
            header,
        }))
    }

    /// Make `response`, a whole `200` too large to store whole, a sliced
    /// object: its record is written, so later requests for it are served
    /// from blocks, and the returned tee stores its blocks as the body
    /// passes to the client. `None` when it cannot be sliced (no
    /// validator, may not be stored).
    pub async fn adopt(
        &'static self,
        keys: &ObjectKey,
        response: &ResponseHeader,
        authorization: bool,
        settings: Settings,
        policy: Option<&mut (dyn Judge + 'static)>,
    ) -> Result<Option<Tee>> {
        let Some(mut object) = self
            .learn(response, keys, authorization, settings, None, policy)
            .await?
        else {
            return Ok(None);
        };
        // The response passes on pingora's path, which does not wait: the
        // record is stored before its first byte.
        if let Some(mut recorded) = object.recorded.take() {
            if !recorded.stored().await {
                object.meta = None;
            }
        }
        Ok(self.tee(&object, keys))
    }

    fn tee(&'static self, object: &Object, keys: &ObjectKey) -> Option<Tee> {
        let blocks = object.storing()?.blocks();
        let claims = self.claim_run(keys, 0, blocks - 1, Some(blocks), 0);
        let storing = Storing::of(object, keys, claims.unwrap_or_default(), blocks - 1)?;
        Some(Tee::new(Keeper::start(self, storing, false)))
    }

    /// The object's stored record, if there is one of a usable form.
    async fn record(&'static self, object: &ObjectKey) -> Option<Object> {
        let (meta, _) = self.store.lookup(&object.record()).await?;
        let identity = Identity::recorded(meta.response_header())?;
        let mut header = meta.response_header().clone();
        header.remove_header(identity::FIELD);
        Some(Object {
            length: identity.length,
            block: identity.block,
            identity: Some(identity),
            meta: Some(Arc::new(meta)),
            recorded: None,
            header,
        })
    }

    /// Remove the object's record and every block.
    async fn remove(&'static self, object: &ObjectKey) {
        let prefix = key::slice_prefix(&object.primary);
        match self
            .store
            .select(edge_cdn_store::Selector::Prefix(&prefix))
            .await
        {
            Ok(objects) => {
                self.store
                    .purge(objects, crate::cache::store::PurgeMode::Hard)
                    .await;
            }
            Err(error) => {
                tracing::warn!(%error, "sliced object's blocks not removed: the store's catalog did not read");
            }
        }
    }

    /// Claim the missing blocks from `first` on, through `needed` and
    /// `read_ahead` more (within `blocks`, when the count is known),
    /// stopping at the first block that is stored, being written or
    /// claimed by another request. `None` when `first` itself is.
    fn claim_run(
        &'static self,
        keys: &ObjectKey,
        first: u64,
        needed: u64,
        blocks: Option<u64>,
        read_ahead: u32,
    ) -> Option<Vec<(u64, Flight)>> {
        let last = (needed + u64::from(read_ahead)).min(blocks.map_or(u64::MAX, |b| b - 1));
        // A write registers with the store before its claim is released,
        // so checking again after claiming closes the gap between a lookup
        // and a claim.
        let mut claims = Vec::new();
        for index in first..=last {
            let key = keys.block(index);
            if self.whereabouts(&key) != Whereabouts::Missing {
                break;
            }
            match self.flights.claim(hash(&key)) {
                Claim::Mine(_)
                    if matches!(
                        self.whereabouts(&key),
                        Whereabouts::Stored | Whereabouts::Writing
                    ) =>
                {
                    break
                }
                Claim::Mine(flight) => claims.push((index, flight)),
                Claim::Theirs => break,
            }
        }
        (!claims.is_empty()).then_some(claims)
    }

    /// The bytes of `count` blocks of `block` bytes from `first`, within
    /// `length` if known.
    fn run_span(first: u64, count: u64, block: u64, length: Option<u64>) -> Span {
        let start = first * block;
        let end = start + count * block - 1;
        Span {
            start,
            end: length.map_or(end, |l| end.min(l - 1)),
        }
    }

    /// A pump over `fetch`, which was asked for `ask`; `None` when the
    /// response does not carry those bytes of this object.
    fn pump(
        &'static self,
        fetch: Fetch,
        target: &Target,
        object: &Object,
        ask: Span,
        needed: u64,
        claims: Vec<(u64, Flight)>,
    ) -> Option<Pump> {
        let at = match fetch.carries() {
            Carries::Part { span, length }
                if span.start == ask.start && length == object.length =>
            {
                span.start
            }
            Carries::Whole(length) if length == object.length => 0,
            _ => return None,
        };
        let stop = (ask.end + 1).min(object.length);
        // Held until the client has bytes from it (or it is drained).
        let keeper = Storing::of(object, &target.object, claims, needed)
            .map(|storing| Keeper::start(self, storing, true));
        Some(Pump {
            fetch,
            upstream: target.upstream.clone(),
            at,
            stop,
            keeper,
        })
    }

    /// Stream the client's bytes: from the first pump, then block by
    /// block, from the store or from runs fetched from the origin.
    async fn deliver(
        &'static self,
        client: &mut Client<'_>,
        target: &Target,
        object: &Object,
        mut pending: Option<Pump>,
    ) -> Result<()> {
        let needed = client.end / object.block;
        let mut stalls = 0;
        while !client.done {
            let before = client.next;
            let mut pump = match pending.take() {
                Some(pump) => pump,
                None => match self.next_source(client, target, object, needed).await? {
                    Some(pump) => pump,
                    None => continue,
                },
            };
            loop {
                match pump.next().await {
                    Ok(Some((at, chunk))) => {
                        let was = client.next;
                        let sent = client.send(at, &chunk).await;
                        if client.next != was {
                            pump.store_now();
                        }
                        pump.keep(at, chunk).await;
                        if let Err(e) = sent {
                            pump.drain(self);
                            return Err(e);
                        }
                        if client.done {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(e),
                }
            }
            pump.drain(self);
            stalls = if client.next == before { stalls + 1 } else { 0 };
            if stalls > 1 {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    "the origin does not answer the ranges asked of it",
                );
            }
        }
        Ok(())
    }

    /// Serve the client's next block from the store if it is there
    /// (returning `None`), or start a run from the origin for it.
    async fn next_source(
        &'static self,
        client: &mut Client<'_>,
        target: &Target,
        object: &Object,
        needed: u64,
    ) -> Result<Option<Pump>> {
        let index = client.next / object.block;
        let Some(identity) = object.storing() else {
            // Not stored: ask for exactly what the client still needs.
            let ask = Span {
                start: client.next,
                end: client.end,
            };
            let fetch = Fetch::start(&self.connector, &target.upstream, Ask::Span(ask)).await?;
            let pump = self.pump(fetch, target, object, ask, needed, Vec::new());
            return pump.map(Some).ok_or_else(mismatched);
        };
        let key = target.object.block(index);
        if let Some((meta, hit)) = self.store.lookup(&key).await {
            if Identity::recorded(meta.response_header()).as_ref() == Some(identity) {
                let span = identity.block_span(index);
                self.store
                    .touch(&key, span.size() as usize, meta.fresh_until());
                stream_block(client, hit, span).await?;
                self.metrics.slice_block(Block::Hit);
                if self.unread.read(hash(&key)) {
                    self.metrics.slice_block(Block::ReadAheadRead);
                    self.read_on(target, object, identity, index);
                }
                return Ok(None);
            }
        }
        let Some(claims) = self.claim_run(
            &target.object,
            index,
            needed,
            Some(identity.blocks()),
            target.settings.read_ahead,
        ) else {
            self.flights.settled(hash(&key), CLAIM_WAIT).await;
            return Ok(None);
        };
        let ask = Self::run_span(
            index,
            claims.len() as u64,
            object.block,
            Some(object.length),
        );
        let fetch = Fetch::start(&self.connector, &target.upstream, Ask::Span(ask)).await?;
        let same = Identity::of(&fetch.header, object.length, object.block);
        if same.as_ref() != Some(identity) {
            // The origin has another version now: the client's response,
            // begun with the old one, cannot be finished.
            fetch.release(&self.connector, &target.upstream).await;
            self.remove(&target.object).await;
            return Err(changed());
        }
        let pump = self.pump(fetch, target, object, ask, needed, claims);
        pump.map(Some).ok_or_else(mismatched)
    }

    /// A client is reading read-ahead block `index`: it reads on, so keep
    /// the window `read_ahead` blocks ahead of it (as a player buffers).
    /// Nothing is fetched while the window's second half is there; once it
    /// is not, the missing blocks up to `index + read_ahead` are fetched in
    /// one run, in the background. A reader that stops stops it.
    fn read_on(&'static self, target: &Target, object: &Object, identity: &Identity, index: u64) {
        let ahead = u64::from(target.settings.read_ahead);
        let last = (index + ahead).min(identity.blocks() - 1);
        let there = |i: u64| self.whereabouts(&target.object.block(i)) != Whereabouts::Missing;
        if there((index + ahead.div_ceil(2)).min(last)) {
            return;
        }
        let Some(first) = (index + 1..=last).find(|&i| !there(i)) else {
            return;
        };
        let blocks = Some(identity.blocks());
        let Some(claims) = self.claim_run(
            &target.object,
            first,
            index,
            blocks,
            target.settings.read_ahead,
        ) else {
            return;
        };
        let ask = Self::run_span(
            first,
            claims.len() as u64,
            object.block,
            Some(object.length),
        );
        let (target, object, identity) = (target.clone(), object.clone(), identity.clone());
        tokio::spawn(async move {
            let Ok(fetch) = Fetch::start(&self.connector, &target.upstream, Ask::Span(ask)).await
            else {
                return;
            };
            let same = Identity::of(&fetch.header, object.length, object.block);
            if same.as_ref() != Some(&identity) {
                fetch.release(&self.connector, &target.upstream).await;
                return;
            }
            if let Some(pump) = self.pump(fetch, &target, &object, ask, index, claims) {
                pump.drain(self);
            }
        });
    }

    /// Where block `key` stands: index and map probes, no I/O.
    fn whereabouts(&self, key: &CacheKey) -> Whereabouts {
        if self.store.holds(key) {
            Whereabouts::Stored
        } else if self.store.writing(key) {
            Whereabouts::Writing
        } else if self.flights.claimed(hash(key)) {
            Whereabouts::Claimed
        } else {
            Whereabouts::Missing
        }
    }

    /// How many of `span`'s blocks are stored now, how many are being
    /// fetched by other requests, of how many.
    fn present(&self, target: &Target, identity: &Identity, span: Span) -> SliceBlocks {
        let blocks = identity.covering(span);
        let total = blocks.end() - blocks.start() + 1;
        let (mut hit, mut in_flight) = (0, 0);
        for i in blocks {
            match self.whereabouts(&target.object.block(i)) {
                Whereabouts::Stored => hit += 1,
                Whereabouts::Writing | Whereabouts::Claimed => in_flight += 1,
                Whereabouts::Missing => {}
            }
        }
        SliceBlocks {
            hit,
            in_flight,
            total,
        }
    }

    fn cache_status(
        &self,
        object: &Object,
        tally: &Tally,
        blocks: Option<SliceBlocks>,
        fetching: bool,
    ) -> CacheStatus {
        let all_hit = blocks.is_none_or(|b| b.hit == b.total) && !fetching;
        let hit = all_hit && tally.fwd_status.is_none();
        let some_stored = blocks.is_some_and(|b| b.hit > 0);
        // Every block stored or on its way: this response waits for other
        // requests' fetches, and asks the origin for nothing itself.
        let collapsed = !hit
            && !fetching
            && tally.fwd_status.is_none()
            && blocks.is_some_and(|b| b.in_flight > 0 && b.hit + b.in_flight == b.total);
        let fwd = match (hit, tally.revalidated) {
            (true, _) => None,
            (false, true) => Some(Fwd::Stale),
            (false, false) if collapsed => Some(Fwd::Miss),
            (false, false) if some_stored => Some(Fwd::Partial),
            (false, false) if object.meta.is_some() && tally.fwd_status.is_none() => {
                Some(Fwd::Miss)
            }
            (false, false) => Some(Fwd::UriMiss),
        };
        CacheStatus {
            hit,
            fwd,
            fwd_status: tally.fwd_status,
            ttl: object
                .meta
                .as_ref()
                .map(|m| freshness::remaining_ttl(m, SystemTime::now())),
            stored: !hit && !collapsed && object.storing().is_some(),
            slice: blocks,
            collapsed,
            detail: tally.stale_if_error.then_some(Detail::StaleIfError),
        }
    }

    /// The client's response header: `status` for `span` of the object.
    fn client_header(
        &self,
        object: &Object,
        status: u16,
        span: Option<Span>,
        cache_status: &CacheStatus,
    ) -> ResponseHeader {
        let mut resp = object.header.clone();
        self.store.strip_tags(&mut resp);
        let _ = resp.set_status(status);
        let age = object.meta.as_ref().map_or(0, |m| m.age().as_secs());
        let _ = resp.insert_header(header::AGE, age);
        let _ = resp.insert_header(header::ACCEPT_RANGES, "bytes");
        match (status, span) {
            (206, Some(span)) => {
                let _ = resp.insert_header(
                    header::CONTENT_RANGE,
                    range::content_range_value(span, object.length),
                );
                let _ = resp.insert_header(header::CONTENT_LENGTH, span.size());
            }
            (416, _) => {
                let _ = resp.insert_header(
                    header::CONTENT_RANGE,
                    range::unsatisfied_value(object.length),
                );
                let _ = resp.insert_header(header::CONTENT_LENGTH, 0);
            }
            (304, _) => {
                resp.remove_header(&header::CONTENT_LENGTH);
            }
            _ => {}
        }
        let _ = resp.insert_header("cache-status", cache_status.render(&self.cache_name));
        resp
    }

    /// Send the origin's response as it is, storing nothing: an error
    /// status is the answer whatever was asked; a success that is no usable
    /// part of the object (no complete length) is asked again as the
    /// client asked it.
    async fn forward(
        &'static self,
        session: &mut Session,
        fetch: Fetch,
        target: &Target,
    ) -> Result<CacheStatus> {
        let mut fetch = if fetch.header.status.is_success() {
            fetch.release(&self.connector, &target.upstream).await;
            Fetch::start(&self.connector, &target.upstream, Ask::AsClient).await?
        } else {
            fetch
        };
        let mut header = fetch.header.clone();
        hop_by_hop::strip(&mut header);
        let status = CacheStatus {
            fwd: Some(Fwd::UriMiss),
            fwd_status: Some(header.status.as_u16()),
            ..CacheStatus::default()
        };
        let _ = header.insert_header("cache-status", status.render(&self.cache_name));
        let head = session.req_header().method == http::Method::HEAD;
        session
            .write_response_header(Box::new(header), head)
            .await?;
        if !head {
            while let Some(chunk) = fetch.next().await? {
                session.write_response_body(Some(chunk), false).await?;
            }
            session.write_response_body(None, true).await?;
        }
        fetch.release(&self.connector, &target.upstream).await;
        Ok(status)
    }
}

/// The error for an origin that answers a range with other bytes.
fn mismatched() -> Box<Error> {
    Error::explain(
        ErrorType::InvalidHTTPHeader,
        "the origin answered a range with other bytes than asked",
    )
    .into_up()
}

/// The error that ends a response whose object changed under it.
fn changed() -> Box<Error> {
    Error::explain(
        ErrorType::InvalidHTTPHeader,
        "the origin's object changed (validator or length) mid-response",
    )
    .into_up()
}

/// Stream the client's part of block `span` from the store.
async fn stream_block(client: &mut Client<'_>, mut hit: HitHandler, span: Span) -> Result<()> {
    let mut at = span.start;
    if hit.can_seek() && client.next > at {
        hit.seek((client.next - at) as usize, None)?;
        at = client.next;
    }
    while let Some(chunk) = hit.read_body().await? {
        client.send(at, &chunk).await?;
        at += chunk.len() as u64;
        if client.done {
            return Ok(());
        }
    }
    if at <= span.end {
        return Error::e_explain(ErrorType::InternalError, "a stored block ended early");
    }
    Ok(())
}

/// Read a probe's one-byte body so its connection can be reused.
async fn drain_small(mut fetch: Fetch, engine: &Engine, upstream: &Upstream) {
    let mut left = 64 * 1024;
    while let Ok(Some(chunk)) = fetch.next().await {
        left -= chunk.len().min(left);
        if left == 0 {
            break;
        }
    }
    fetch.release(&engine.connector, upstream).await;
}

/// A block key's hash, which names its claim.
fn hash(key: &CacheKey) -> u128 {
    u128::from_be_bytes(key.primary_bin())
}

/// What the client's request asks of the object: a `Range` only on `GET`
/// (RFC 9110 §14.2).
fn requested(session: &Session) -> Requested {
    let req = session.req_header();
    match (
        req.method == http::Method::GET,
        req.headers.get(header::RANGE),
    ) {
        (true, Some(value)) => range::requested(value.as_bytes()),
        _ => Requested::Whole,
    }
}

/// What the response to a request is, before its body.
enum Respond {
    /// 304 (RFC 9110 §13.1.1, §13.1.3).
    NotModified,
    /// 416 (RFC 9110 §15.5.17).
    Unsatisfiable,
    /// 200 with the whole object.
    Whole,
    /// 206 with one range.
    Part(Span),
}

/// Evaluate the request's conditions and range against the object
/// (RFC 9110 §13.2.2's order: If-None-Match, else If-Modified-Since; then
/// If-Range decides whether the range applies).
fn respond_with(
    req: &pingora_http::RequestHeader,
    object: &Object,
    requested: Requested,
) -> Respond {
    let field = |name: header::HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok());
    let ours = |name: header::HeaderName| {
        object
            .header
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
    };
    if let Some(tags) = field(header::IF_NONE_MATCH) {
        if let Some(etag) = ours(header::ETAG) {
            let opaque = |t: &str| t.trim().trim_start_matches("W/").to_owned();
            if tags.trim() == "*" || tags.split(',').any(|t| opaque(t) == opaque(etag)) {
                return Respond::NotModified;
            }
        }
    } else if let (Some(since), Some(modified)) = (
        field(header::IF_MODIFIED_SINCE),
        ours(header::LAST_MODIFIED),
    ) {
        if let (Ok(since), Ok(modified)) = (
            httpdate::parse_http_date(since),
            httpdate::parse_http_date(modified),
        ) {
            if modified <= since {
                return Respond::NotModified;
            }
        }
    }
    let requested = match field(header::IF_RANGE) {
        // RFC 9110 §13.1.5: an entity tag matches strongly; a date only
        // when it is exactly the Last-Modified.
        Some(condition) if condition.trim().starts_with("W/") => Requested::Whole,
        Some(condition) if condition.trim().starts_with('"') => {
            if ours(header::ETAG)
                .is_some_and(|e| e.trim() == condition.trim() && !e.starts_with("W/"))
            {
                requested
            } else {
                Requested::Whole
            }
        }
        Some(date) if ours(header::LAST_MODIFIED).is_some_and(|m| m.trim() == date.trim()) => {
            requested
        }
        Some(_) => Requested::Whole,
        None => requested,
    };
    match requested {
        Requested::Whole => Respond::Whole,
        Requested::One(spec) => match spec.resolve(object.length) {
            Some(span) => Respond::Part(span),
            None => Respond::Unsatisfiable,
        },
    }
}

//! Client-side caching (CLIENT TRACKING), with Redis 7 semantics.
//!
//! Default mode remembers, per key, the clients that read it; the first change
//! of the key sends each of them one invalidation and forgets the key. BCAST
//! mode notifies every client whose registered prefix matches a changed key.
//! The store calls [`Tracking::key_changed`] / [`Tracking::flushed`] wherever a
//! key is written or removed, so commands, region links, replication, expiry,
//! eviction and migration are all covered. While no client has tracking on the
//! hooks cost one relaxed atomic load.
//!
//! Lock order: a shard lock may be held while the tracking table is locked,
//! never the other way round (the table never calls into the store).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use indexmap::IndexMap;
use parking_lot::Mutex;

use crate::client::{ClientEvent, ClientHandle, TrackingPush};
use crate::commands::id::Cmd;
use crate::protocol::Out;

/// Redis's `tracking-table-max-keys` default.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;
/// Pub/sub channel RESP2 redirect targets receive invalidations on.
pub const INVALIDATE_CHANNEL: &[u8] = b"__redis__:invalidate";

/// Where the pushes of one table change go: the running client's own pushes are
/// kept in the table until its connection writes them right after the reply of the
/// command that caused them (like Redis), every other push is queued to its
/// connection at once.
struct Routing<'t> {
    /// The client whose command causes the change, if any.
    running: Option<u64>,
    own_pushes: &'t mut HashMap<u64, Vec<TrackingPush>>,
    own_queued: &'t AtomicUsize,
}

impl Routing<'_> {
    fn route(&mut self, target: &ClientHandle, push: TrackingPush) {
        if Some(target.id) == self.running {
            self.own_pushes.entry(target.id).or_default().push(push);
            self.own_queued.fetch_add(1, Ordering::Relaxed);
        } else {
            target.deliver(ClientEvent::Tracking(push));
        }
    }
}

/// Encodes a push in the receiving connection's protocol: a RESP3 push, or a
/// `__redis__:invalidate` pub/sub message for RESP2 redirect targets.
pub fn encode(out: &mut Out, push: &TrackingPush) {
    match push {
        TrackingPush::Invalidate(keys) => {
            if out.is_resp3() {
                out.push(2);
                out.bulk(b"invalidate");
            } else {
                out.push(3);
                out.bulk(b"message");
                out.bulk(INVALIDATE_CHANNEL);
            }
            match keys {
                Some(keys) => {
                    out.array(keys.len());
                    for key in keys {
                        out.bulk(key);
                    }
                }
                None => out.null(),
            }
        }
        TrackingPush::RedirectBroken(id) => {
            out.push(2);
            out.bulk(b"tracking-redir-broken");
            out.integer(i64::try_from(*id).unwrap_or(i64::MAX));
        }
    }
}

/// CLIENT TRACKING ON options, already parsed.
#[derive(Debug, Default, Clone)]
pub struct TrackingOptions {
    /// REDIRECT target: its id and its connection.
    pub redirect: Option<(u64, Weak<ClientHandle>)>,
    pub bcast: bool,
    pub optin: bool,
    pub optout: bool,
    pub noloop: bool,
    pub prefixes: Vec<Vec<u8>>,
}

/// Why CLIENT TRACKING ON was refused (texts are Redis's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackingRefusal {
    PrefixWithoutBcast,
    BcastSwitch,
    OptWithBcast,
    OptinAndOptout,
    OptSwitch,
    PrefixOverlap {
        prefix: Vec<u8>,
        other: Vec<u8>,
        existing: bool,
    },
}

impl std::fmt::Display for TrackingRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrackingRefusal::PrefixWithoutBcast => {
                f.write_str("ERR PREFIX option requires BCAST mode to be enabled")
            }
            TrackingRefusal::BcastSwitch => f.write_str(
                "ERR You can't switch BCAST mode on/off before disabling tracking for this client, and then re-enabling it with a different mode.",
            ),
            TrackingRefusal::OptWithBcast => {
                f.write_str("ERR OPTIN and OPTOUT are not compatible with BCAST")
            }
            TrackingRefusal::OptinAndOptout => f.write_str("ERR You can't use both OPTIN and OPTOUT"),
            TrackingRefusal::OptSwitch => f.write_str(
                "ERR You can't switch OPTIN/OPTOUT mode before disabling tracking for this client, and then re-enabling it with a different mode.",
            ),
            TrackingRefusal::PrefixOverlap {
                prefix,
                other,
                existing,
            } => write!(
                f,
                "ERR Prefix '{}' overlaps with {} prefix '{}'. Prefixes for a single client must not overlap.",
                String::from_utf8_lossy(prefix),
                if *existing {
                    "an existing"
                } else {
                    "another provided"
                },
                String::from_utf8_lossy(other)
            ),
        }
    }
}

/// Tracking table sizes for INFO.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TrackingStats {
    pub clients: usize,
    pub keys: usize,
    pub items: usize,
    pub prefixes: usize,
}

/// What CLIENT TRACKINGINFO reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingInfo {
    pub flags: Vec<&'static str>,
    /// -1 tracking off, 0 no redirect, otherwise the target's id.
    pub redirect: i64,
    pub prefixes: Vec<Vec<u8>>,
}

/// One client with tracking on.
struct Tracked {
    handle: Arc<ClientHandle>,
    redirect: Option<(u64, Weak<ClientHandle>)>,
    bcast: bool,
    optin: bool,
    optout: bool,
    noloop: bool,
    /// CLIENT CACHING YES (OPTIN) / NO (OPTOUT) given for the next command.
    caching: bool,
    broken_redirect: bool,
    prefixes: BTreeSet<Vec<u8>>,
}

impl Tracked {
    /// Queues a push for this client's receiver: itself (RESP3) or its REDIRECT
    /// target (RESP3 push, or a pub/sub message when subscribed in RESP2).
    fn send(&mut self, keys: Option<Vec<Bytes>>, routing: &mut Routing<'_>) {
        let target = match &self.redirect {
            None => self.handle.clone(),
            Some((id, target)) => {
                match target.upgrade().filter(|target| !target.events.is_closed()) {
                    Some(target) => target,
                    None => {
                        self.broken_redirect = true;
                        if self.handle.resp3.load(Ordering::Relaxed) {
                            routing.route(&self.handle, TrackingPush::RedirectBroken(*id));
                        }
                        return;
                    }
                }
            }
        };
        let resp3 = target.resp3.load(Ordering::Relaxed);
        let subscribed = target.subscriptions.load(Ordering::Relaxed)
            + target.pattern_subscriptions.load(Ordering::Relaxed)
            > 0;
        // RESP2 has no pushes: only a subscribed redirect target can receive them
        if resp3 || (self.redirect.is_some() && subscribed) {
            routing.route(&target, TrackingPush::Invalidate(keys));
        }
    }
}

/// BCAST prefixes → ids of the clients registered for them.
type Prefixes = BTreeMap<Vec<u8>, BTreeSet<u64>>;

#[derive(Default)]
struct Table {
    clients: HashMap<u64, Tracked>,
    /// Default mode: key → ids of the clients that read it.
    keys: IndexMap<Box<[u8]>, Vec<u64>, foldhash::fast::RandomState>,
    /// BCAST mode: prefix → ids of the clients registered for it.
    prefixes: Prefixes,
    /// (key, client) pairs in `keys` (INFO tracking_total_items).
    items: usize,
    rng: u64,
    /// Pushes a client caused for itself, until its connection writes them.
    own_pushes: HashMap<u64, Vec<TrackingPush>>,
}

impl Table {
    fn next_random(&mut self) -> u64 {
        // xorshift: good enough to pick tracking entries to evict
        let mut x = self.rng | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// The clients, the BCAST prefixes and the routing of pushes, borrowed apart:
    /// `running` is the client whose command causes the pushes, if any.
    fn split<'t>(
        &'t mut self,
        running: Option<u64>,
        own_queued: &'t AtomicUsize,
    ) -> (&'t mut HashMap<u64, Tracked>, &'t Prefixes, Routing<'t>) {
        let routing = Routing {
            running,
            own_pushes: &mut self.own_pushes,
            own_queued,
        };
        (&mut self.clients, &self.prefixes, routing)
    }

    /// Sends one key's invalidation to the default-mode clients that read it;
    /// `skip` (a NOLOOP writer) is left out.
    fn invalidate_tracked(
        &mut self,
        key: &[u8],
        skip: Option<u64>,
        running: Option<u64>,
        own_queued: &AtomicUsize,
    ) {
        let Some(ids) = self.keys.swap_remove(key) else {
            return;
        };
        self.items = self.items.saturating_sub(ids.len());
        let payload = Bytes::copy_from_slice(key);
        let (clients, _, mut routing) = self.split(running, own_queued);
        for id in ids {
            // clients that switched off or to BCAST since they read the key
            let Some(client) = clients.get_mut(&id).filter(|client| !client.bcast) else {
                continue;
            };
            if client.noloop && Some(id) == skip {
                continue;
            }
            client.send(Some(vec![payload.clone()]), &mut routing);
        }
    }

    /// Drops random keys (sending their invalidations) until under `max_keys`;
    /// `running` is the client whose command made the table grow, if any.
    fn enforce_limit(&mut self, max_keys: usize, running: Option<u64>, own_queued: &AtomicUsize) {
        if max_keys == 0 {
            return;
        }
        while self.keys.len() > max_keys {
            let position = (self.next_random() % self.keys.len() as u64) as usize;
            let Some(key) = self.keys.get_index(position).map(|(key, _)| key.clone()) else {
                break;
            };
            self.invalidate_tracked(&key, None, running, own_queued);
        }
    }

    fn remove_client_prefixes(&mut self, id: u64, prefixes: &BTreeSet<Vec<u8>>) {
        for prefix in prefixes {
            if let Some(ids) = self.prefixes.get_mut(prefix) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.prefixes.remove(prefix);
                }
            }
        }
    }
}

/// The node's tracking table, shared by every shard and connection. Aligned
/// to its own cache lines: `enabled` is read by every read and write, and must
/// not share a line with the store's hot memory counters.
#[repr(align(128))]
pub struct Tracking {
    /// Clients with tracking on: the store's hooks return at once while zero.
    enabled: AtomicUsize,
    /// Clients with an armed CLIENT CACHING flag (skip the per-command reset otherwise).
    caching_armed: AtomicUsize,
    max_keys: AtomicUsize,
    /// Pushes waiting in the table's `own_pushes` (writing them needs no lock while 0).
    own_queued: AtomicUsize,
    table: Mutex<Table>,
}

impl Default for Tracking {
    fn default() -> Self {
        Tracking {
            enabled: AtomicUsize::new(0),
            caching_armed: AtomicUsize::new(0),
            max_keys: AtomicUsize::new(DEFAULT_MAX_KEYS),
            own_queued: AtomicUsize::new(0),
            table: Mutex::new(Table {
                rng: 0x2545_F491_4F6C_DD1D,
                ..Table::default()
            }),
        }
    }
}

impl std::fmt::Debug for Tracking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracking")
            .field("clients", &self.enabled.load(Ordering::Relaxed))
            .finish()
    }
}

impl Tracking {
    /// True while at least one client has tracking on.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.enabled.load(Ordering::Relaxed) != 0
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys.load(Ordering::Relaxed)
    }

    /// CONFIG SET tracking-table-max-keys (0: unlimited).
    pub fn set_max_keys(&self, max_keys: usize) {
        self.max_keys.store(max_keys, Ordering::Relaxed);
        if self.is_active() {
            self.table
                .lock()
                .enforce_limit(max_keys, None, &self.own_queued);
        }
    }

    /// INFO: tracking_clients, tracking_total_keys, tracking_total_items,
    /// tracking_total_prefixes.
    pub fn stats(&self) -> TrackingStats {
        if !self.is_active() {
            return TrackingStats::default();
        }
        let table = self.table.lock();
        TrackingStats {
            clients: table.clients.len(),
            keys: table.keys.len(),
            items: table.items,
            prefixes: table.prefixes.len(),
        }
    }

    /// CLIENT TRACKING ON: validates `options` against the client's current
    /// mode like Redis, then enables (or updates) tracking.
    pub fn enable(
        &self,
        handle: &Arc<ClientHandle>,
        options: TrackingOptions,
    ) -> Result<(), TrackingRefusal> {
        if !options.bcast && !options.prefixes.is_empty() {
            return Err(TrackingRefusal::PrefixWithoutBcast);
        }
        let mut table = self.table.lock();
        let id = handle.id;
        if let Some(existing) = table.clients.get(&id)
            && existing.bcast != options.bcast
        {
            return Err(TrackingRefusal::BcastSwitch);
        }
        if options.bcast && (options.optin || options.optout) {
            return Err(TrackingRefusal::OptWithBcast);
        }
        if options.optin && options.optout {
            return Err(TrackingRefusal::OptinAndOptout);
        }
        if let Some(existing) = table.clients.get(&id)
            && ((options.optin && existing.optout) || (options.optout && existing.optin))
        {
            return Err(TrackingRefusal::OptSwitch);
        }
        if options.bcast {
            let existing = table.clients.get(&id).map(|client| &client.prefixes);
            for (position, prefix) in options.prefixes.iter().enumerate() {
                if let Some(other) = existing
                    .into_iter()
                    .flatten()
                    .find(|other| overlaps(prefix, other))
                {
                    return Err(TrackingRefusal::PrefixOverlap {
                        prefix: prefix.clone(),
                        other: other.clone(),
                        existing: true,
                    });
                }
                if let Some(other) = options.prefixes[position + 1..]
                    .iter()
                    .find(|other| overlaps(prefix, other))
                {
                    return Err(TrackingRefusal::PrefixOverlap {
                        prefix: prefix.clone(),
                        other: other.clone(),
                        existing: false,
                    });
                }
            }
        }
        let mut prefixes = table
            .clients
            .remove(&id)
            .map(|client| {
                if client.caching {
                    self.caching_armed.fetch_sub(1, Ordering::Relaxed);
                }
                client.prefixes
            })
            .unwrap_or_else(|| {
                self.enabled.fetch_add(1, Ordering::Relaxed);
                BTreeSet::new()
            });
        if options.bcast {
            // no PREFIX means every key (the empty prefix)
            let added = if options.prefixes.is_empty() {
                vec![Vec::new()]
            } else {
                options.prefixes
            };
            for prefix in added {
                table.prefixes.entry(prefix.clone()).or_default().insert(id);
                prefixes.insert(prefix);
            }
        }
        table.clients.insert(
            id,
            Tracked {
                handle: handle.clone(),
                redirect: options.redirect,
                bcast: options.bcast,
                optin: options.optin,
                optout: options.optout,
                noloop: options.noloop,
                caching: false,
                broken_redirect: false,
                prefixes,
            },
        );
        Ok(())
    }

    /// CLIENT TRACKING OFF, RESET and disconnects. Keys this client read stay
    /// in the table until they change (like Redis) and are skipped then.
    pub fn disable(&self, id: u64) {
        if !self.is_active() && self.own_queued.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut table = self.table.lock();
        if let Some(pushes) = table.own_pushes.remove(&id) {
            self.own_queued.fetch_sub(pushes.len(), Ordering::Relaxed);
        }
        if let Some(client) = table.clients.remove(&id) {
            self.enabled.fetch_sub(1, Ordering::Relaxed);
            if client.caching {
                self.caching_armed.fetch_sub(1, Ordering::Relaxed);
            }
            table.remove_client_prefixes(id, &client.prefixes);
        }
    }

    /// CLIENT CACHING YES|NO. `yes` is valid in OPTIN mode, `no` in OPTOUT mode.
    pub fn set_caching(&self, id: u64, yes: bool) -> Result<(), &'static str> {
        let mut table = self.table.lock();
        let Some(client) = table.clients.get_mut(&id) else {
            return Err(
                "ERR CLIENT CACHING can be called only when the client is in tracking mode with OPTIN or OPTOUT mode enabled",
            );
        };
        if yes && !client.optin {
            return Err(
                "ERR CLIENT CACHING YES is only valid when tracking is enabled in OPTIN mode.",
            );
        }
        if !yes && !client.optout {
            return Err(
                "ERR CLIENT CACHING NO is only valid when tracking is enabled in OPTOUT mode.",
            );
        }
        if !client.caching {
            client.caching = true;
            self.caching_armed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// After a top-level command: CLIENT CACHING covers only the next command
    /// (or the whole MULTI/EXEC), like Redis's resetClient.
    pub fn after_command(&self, id: u64, command: Option<Cmd>, in_multi: bool) {
        if self.caching_armed.load(Ordering::Relaxed) == 0
            || in_multi
            || command == Some(Cmd::Client)
        {
            return;
        }
        if let Some(client) = self.table.lock().clients.get_mut(&id)
            && client.caching
        {
            client.caching = false;
            self.caching_armed.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Remembers keys a read-only command of client `id` is about to read
    /// (default mode; OPTIN needs CACHING YES, OPTOUT skips on CACHING NO).
    /// `running` is the client whose command runs, if any: entries dropped to stay
    /// under the table limit invalidate its keys right after its reply.
    pub fn remember<'k>(
        &self,
        id: u64,
        keys: impl IntoIterator<Item = &'k [u8]>,
        running: Option<u64>,
    ) {
        if !self.is_active() {
            return;
        }
        let mut table = self.table.lock();
        let Some(client) = table.clients.get(&id) else {
            return;
        };
        if client.bcast || (client.optin && !client.caching) || (client.optout && client.caching) {
            return;
        }
        for key in keys {
            match table.keys.get_mut(key) {
                Some(ids) => {
                    if ids.contains(&id) {
                        continue;
                    }
                    ids.push(id);
                }
                None => {
                    table.keys.insert(key.into(), vec![id]);
                }
            }
            table.items += 1;
        }
        table.enforce_limit(self.max_keys(), running, &self.own_queued);
    }

    /// The store changed or removed `key` (any path: commands, region links,
    /// replication, expiry, eviction, migration); `writer` is the client whose
    /// command changed it, if any.
    pub fn key_changed(&self, key: &[u8], writer: Option<u64>) {
        let mut table = self.table.lock();
        table.invalidate_tracked(key, writer, writer, &self.own_queued);
        if table.prefixes.is_empty() {
            return;
        }
        let (clients, prefixes, mut routing) = table.split(writer, &self.own_queued);
        let payload = Bytes::copy_from_slice(key);
        // a key matches the prefixes that are its own prefixes: walk candidates
        for (prefix, ids) in
            prefixes.range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(key)))
        {
            if !key.starts_with(prefix) {
                continue;
            }
            for id in ids {
                let Some(client) = clients.get_mut(id) else {
                    continue;
                };
                if client.noloop && Some(*id) == writer {
                    continue;
                }
                client.send(Some(vec![payload.clone()]), &mut routing);
            }
        }
    }

    /// FLUSHDB / FLUSHALL: every tracking client gets a null invalidation and
    /// the default-mode table is emptied; `writer` is the client that flushed, if any.
    pub fn flushed(&self, writer: Option<u64>) {
        let mut table = self.table.lock();
        table.keys = IndexMap::default();
        table.items = 0;
        let (clients, _, mut routing) = table.split(writer, &self.own_queued);
        for client in clients.values_mut() {
            client.send(None, &mut routing);
        }
    }

    /// Writes the pushes client `id` caused for itself into its output (right
    /// after the reply of the command that caused them).
    pub fn flush_own_pushes(&self, id: u64, out: &mut Out) {
        if self.own_queued.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Some(pushes) = self.table.lock().own_pushes.remove(&id) else {
            return;
        };
        self.own_queued.fetch_sub(pushes.len(), Ordering::Relaxed);
        for push in &pushes {
            encode(out, push);
        }
    }

    /// CLIENT TRACKINGINFO.
    pub fn info(&self, id: u64) -> TrackingInfo {
        if !self.is_active() {
            return TrackingInfo {
                flags: vec!["off"],
                redirect: -1,
                prefixes: Vec::new(),
            };
        }
        let table = self.table.lock();
        let Some(client) = table.clients.get(&id) else {
            return TrackingInfo {
                flags: vec!["off"],
                redirect: -1,
                prefixes: Vec::new(),
            };
        };
        let mut flags = vec!["on"];
        if client.bcast {
            flags.push("bcast");
        }
        if client.optin {
            flags.push("optin");
            if client.caching {
                flags.push("caching-yes");
            }
        }
        if client.optout {
            flags.push("optout");
            if client.caching {
                flags.push("caching-no");
            }
        }
        if client.noloop {
            flags.push("noloop");
        }
        if client.broken_redirect {
            flags.push("broken_redirect");
        }
        TrackingInfo {
            flags,
            redirect: client
                .redirect
                .as_ref()
                .map_or(0, |(id, _)| i64::try_from(*id).unwrap_or(i64::MAX)),
            prefixes: client.prefixes.iter().cloned().collect(),
        }
    }

    /// CLIENT LIST flags for a client: `t` tracking, `R` broken redirect,
    /// `B` broadcast; and its redirect (-1 when tracking is off).
    pub fn list_flags(&self, id: u64) -> (String, i64) {
        if !self.is_active() {
            return (String::new(), -1);
        }
        let info = self.info(id);
        let mut flags = String::new();
        if info.redirect >= 0 {
            flags.push('t');
        }
        if info.flags.contains(&"broken_redirect") {
            flags.push('R');
        }
        if info.flags.contains(&"bcast") {
            flags.push('B');
        }
        (flags, info.redirect)
    }
}

/// Two BCAST prefixes overlap when one starts with the other.
fn overlaps(first: &[u8], second: &[u8]) -> bool {
    first.starts_with(second) || second.starts_with(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;

    fn client(id: u64, resp3: bool) -> (Arc<ClientHandle>, mpsc::UnboundedReceiver<ClientEvent>) {
        let (events, inbox) = mpsc::unbounded_channel();
        let handle = Arc::new(ClientHandle::new(id, String::new(), String::new(), events));
        handle
            .resp3
            .store(resp3, std::sync::atomic::Ordering::Relaxed);
        (handle, inbox)
    }

    fn invalidated(inbox: &mut mpsc::UnboundedReceiver<ClientEvent>) -> Vec<Option<Vec<Bytes>>> {
        let mut seen = Vec::new();
        while let Ok(event) = inbox.try_recv() {
            if let ClientEvent::Tracking(TrackingPush::Invalidate(keys)) = event {
                seen.push(keys);
            }
        }
        seen
    }

    #[test]
    fn default_mode_invalidates_once_and_forgets() {
        let tracking = Tracking::default();
        let (handle, mut inbox) = client(1, true);
        tracking
            .enable(&handle, TrackingOptions::default())
            .expect("enable");
        tracking.remember(1, [&b"k"[..]], None);
        tracking.key_changed(b"other", None);
        tracking.key_changed(b"k", None);
        tracking.key_changed(b"k", None);
        assert_eq!(
            invalidated(&mut inbox),
            vec![Some(vec![Bytes::from_static(b"k")])]
        );
    }

    #[test]
    fn noloop_skips_own_writes_and_bcast_matches_prefixes() {
        let tracking = Tracking::default();
        let (handle, mut inbox) = client(7, true);
        let options = TrackingOptions {
            bcast: true,
            noloop: true,
            prefixes: vec![b"user:".to_vec(), b"page:".to_vec()],
            ..TrackingOptions::default()
        };
        tracking.enable(&handle, options).expect("enable");
        tracking.key_changed(b"user:1", Some(7));
        tracking.key_changed(b"user:2", None);
        tracking.key_changed(b"users", None);
        tracking.key_changed(b"page:x", None);
        assert_eq!(
            invalidated(&mut inbox),
            vec![
                Some(vec![Bytes::from_static(b"user:2")]),
                Some(vec![Bytes::from_static(b"page:x")])
            ]
        );
    }

    #[test]
    fn refusals_match_redis() {
        let tracking = Tracking::default();
        let (handle, _inbox) = client(3, true);
        let refused = |options: TrackingOptions| tracking.enable(&handle, options).err();
        assert_eq!(
            refused(TrackingOptions {
                prefixes: vec![b"a".to_vec()],
                ..Default::default()
            }),
            Some(TrackingRefusal::PrefixWithoutBcast)
        );
        assert_eq!(
            refused(TrackingOptions {
                optin: true,
                optout: true,
                ..Default::default()
            }),
            Some(TrackingRefusal::OptinAndOptout)
        );
        assert!(matches!(
            refused(TrackingOptions {
                bcast: true,
                prefixes: vec![b"ab".to_vec(), b"a".to_vec()],
                ..Default::default()
            }),
            Some(TrackingRefusal::PrefixOverlap {
                existing: false,
                ..
            })
        ));
        assert!(!tracking.is_active());
    }

    #[test]
    fn table_limit_evicts_with_invalidations() {
        let tracking = Tracking::default();
        tracking.set_max_keys(10);
        let (handle, mut inbox) = client(1, true);
        tracking
            .enable(&handle, TrackingOptions::default())
            .expect("enable");
        for index in 0..25 {
            let key = format!("k{index}");
            tracking.remember(1, [key.as_bytes()], None);
        }
        assert_eq!(tracking.stats().keys, 10);
        assert_eq!(tracking.stats().items, 10);
        assert_eq!(invalidated(&mut inbox).len(), 15);
    }
}

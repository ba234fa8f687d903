//! Fuzz targets for every decoder that reads network input, one function per target.
//!
//! Each takes arbitrary bytes and panics only on a bug: beyond "no panic" it checks
//! cheap invariants (a decoded frame re-encodes to an equivalent frame, a decoder
//! never consumes more than it was given, a server's replies are well formed). The
//! binaries in `fuzz_targets/` hand libFuzzer's inputs to these functions; the
//! corpus replay test runs the checked-in inputs through them under `cargo test`.
//!
//! No target reaches the network: the node state is built without listeners, origin
//! or peers, and topology maps that would make it replicate from an address in the
//! input are checked without applying them (see [`topology`]).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::OnceLock;

use bytes::BytesMut;
use meridian_node::commands::admin;
use meridian_node::fuzzing::{self, LinkReply, NODE_ID};
use meridian_node::http::local::{self, Reply};
use meridian_node::http::metrics::API_METRICS;
use meridian_node::protocol::frame::{Limits, Parsed, parse_command, unescape_inline};
use meridian_node::replication::backlog::{DEFAULT_BACKLOG, ReplLog};
use meridian_node::replication::snapshot;
use meridian_node::store::{Db, Policy};
use meridian_topology::{NodeRole, Route, SLOT_COUNT, TopologyMap};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Names of the targets, as the binaries and the corpus directories are called.
pub const TARGETS: &[&str] = &[
    "resp",
    "resp_reply",
    "link_requests",
    "link_replies",
    "snapshot",
    "topology",
    "http",
];

/// Runs the target called `name` on one input; false if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "resp" => resp(data),
        "resp_reply" => resp_reply(data),
        "link_requests" => link_requests(data),
        "link_replies" => link_replies(data),
        "snapshot" => snapshot(data),
        "topology" => topology(data),
        "http" => http(data),
        _ => return false,
    }
    true
}

/// One runtime for every input: building one per input would dominate the run time.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Sends `input` to a server over an in-memory pipe and returns everything the
/// server wrote until it closed. The sending side is closed once the server has
/// answered what it could (no output for a while): a server may stop at the end of
/// its input before answering requests still in flight, as hyper does.
fn converse<S, F>(input: &[u8], serve: S) -> Vec<u8>
where
    S: FnOnce(tokio::io::DuplexStream) -> F,
    F: std::future::Future<Output = ()>,
{
    /// Polls without new output after which the server is taken to be waiting for input.
    const IDLE_POLLS: u32 = 32;
    runtime().block_on(async {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let received = std::cell::Cell::new(0usize);
        let send = async {
            // the server may close first (a refused handshake, a protocol error)
            let _ = to_server.write_all(input).await;
            let mut seen = received.get();
            let mut idle = 0;
            while idle < IDLE_POLLS {
                tokio::task::yield_now().await;
                if received.get() == seen {
                    idle += 1;
                } else {
                    seen = received.get();
                    idle = 0;
                }
            }
            let _ = to_server.shutdown().await;
            drop(to_server);
        };
        let receive = async {
            let mut output = Vec::new();
            let mut chunk = [0u8; 16 * 1024];
            while let Ok(read @ 1..) = from_server.read(&mut chunk).await {
                output.extend_from_slice(&chunk[..read]);
                received.set(output.len());
            }
            output
        };
        let ((), (), output) = tokio::join!(serve(server), send, receive);
        output
    })
}

// ---------------------------------------------------------------------------
// RESP request frames

fn encode_multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The arguments a connection hands to the dispatcher (inline ones unescaped).
fn arguments(buf: &[u8], args: &[Range<usize>], inline: bool) -> Vec<Vec<u8>> {
    args.iter()
        .map(|range| {
            let raw = &buf[range.clone()];
            if inline {
                unescape_inline(raw).unwrap_or_else(|| raw.to_vec())
            } else {
                raw.to_vec()
            }
        })
        .collect()
}

/// RESP requests (`crates/meridian-node/src/protocol/frame.rs`), as a client
/// connection, a replica link and a region link parse them: pipelined commands
/// under the default, small and unauthenticated limits.
pub fn resp(data: &[u8]) {
    let small = Limits {
        max_bulk_len: 64,
        max_multibulk_len: 8,
        max_query_buffer: 4096,
        unauthenticated: false,
    };
    let unauthenticated = Limits {
        unauthenticated: true,
        ..Limits::default()
    };
    for limits in [Limits::default(), small, unauthenticated] {
        resp_with(data, &limits);
    }
}

fn resp_with(data: &[u8], limits: &Limits) {
    let mut rest = data;
    let mut first = true;
    while !rest.is_empty() {
        match parse_command(rest, limits) {
            Ok(Parsed::Command {
                args,
                consumed,
                inline,
            }) => {
                assert!(consumed > 0, "a command consumed nothing");
                assert!(consumed <= rest.len(), "consumed past the input");
                let mut previous_end = 0;
                for range in &args {
                    assert!(range.start >= previous_end && range.start <= range.end);
                    assert!(range.end <= consumed, "argument past the command");
                    previous_end = range.end;
                    if !inline {
                        assert!(range.len() <= limits.max_bulk_len, "bulk over the limit");
                    } else {
                        assert!(!range.is_empty(), "empty inline argument range");
                    }
                }
                if !inline {
                    assert!(args.len() <= limits.max_multibulk_len);
                }
                // the command alone parses to the same command: nothing past it was read
                assert_eq!(
                    parse_command(&rest[..consumed], limits),
                    Ok(Parsed::Command {
                        args: args.clone(),
                        consumed,
                        inline
                    })
                );
                let argv = arguments(rest, &args, inline);
                // what the dispatcher sees re-encodes to a frame that parses to the same arguments
                let refs: Vec<&[u8]> = argv.iter().map(Vec::as_slice).collect();
                let encoded = encode_multibulk(&refs);
                match parse_command(&encoded, &Limits::default()) {
                    Ok(Parsed::Command {
                        args: again,
                        consumed,
                        inline: false,
                    }) => {
                        assert_eq!(consumed, encoded.len());
                        assert_eq!(arguments(&encoded, &again, false), argv);
                    }
                    other => panic!("re-encoded command {encoded:?} parsed as {other:?}"),
                }
                if first {
                    check_prefixes(rest, consumed, limits);
                    first = false;
                }
                rest = &rest[consumed..];
            }
            Ok(Parsed::Incomplete { min_len }) => {
                assert!(min_len > rest.len(), "incomplete, yet long enough");
                return;
            }
            Err(error) => {
                // the reply is one line (Out::error replaces CR/LF), the text names the error
                assert!(!error.to_string().is_empty());
                return;
            }
        }
    }
}

/// Every strict prefix of a complete command waits for more input, and never asks
/// for more than the whole command.
fn check_prefixes(buf: &[u8], consumed: usize, limits: &Limits) {
    let step = (consumed / 64).max(1);
    for cut in (0..consumed).step_by(step).chain([consumed - 1]) {
        match parse_command(&buf[..cut], limits) {
            Ok(Parsed::Incomplete { min_len }) => {
                assert!(
                    min_len > cut && min_len <= consumed,
                    "min_len {min_len} at cut {cut} of {consumed}"
                );
            }
            other => panic!("prefix of {cut} of a {consumed}-byte command parsed as {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Region links

/// Decodes every reply in `output` as the link client does; panics on a reply the
/// client cannot read.
fn decode_all_replies(output: &[u8]) -> Vec<LinkReply> {
    let mut buffer = BytesMut::from(output);
    let mut replies = Vec::new();
    loop {
        match fuzzing::link_decode_reply(&mut buffer) {
            Ok(Some(reply)) => replies.push(reply),
            Ok(None) => break,
            Err(error) => panic!(
                "the link server sent a reply its client cannot decode ({error}): {:?}",
                String::from_utf8_lossy(&buffer)
            ),
        }
    }
    assert!(
        buffer.is_empty(),
        "the link server left a partial reply: {:?}",
        String::from_utf8_lossy(&buffer)
    );
    replies
}

/// The region-link server (`serve_link` in `src/region/link.rs`) reading a peer's
/// requests: handshake, LINK.EVENT, LINK.TOPOLOGY. Its replies must decode with the
/// link client's own decoder.
pub fn link_requests(data: &[u8]) {
    let shared = fuzzing::node();
    let output = converse(data, |server| async move {
        // an I/O error is the pipe closing, which the input may well cause
        let _ = fuzzing::link_serve(shared, server).await;
    });
    decode_all_replies(&output);
}

fn encode_reply(reply: &LinkReply) -> Vec<u8> {
    match reply {
        LinkReply::Ok => b"+OK\r\n".to_vec(),
        LinkReply::Error(text) => format!("-{text}\r\n").into_bytes(),
        LinkReply::Bulk(None) => b"$-1\r\n".to_vec(),
        LinkReply::Bulk(Some(data)) => {
            let mut out = format!("${}\r\n", data.len()).into_bytes();
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
            out
        }
    }
}

/// The region-link client's reply decoder (`decode_reply` in `src/region/link.rs`)
/// reading what a peer sends back.
pub fn link_replies(data: &[u8]) {
    let mut buffer = BytesMut::from(data);
    loop {
        let before = buffer.clone();
        match fuzzing::link_decode_reply(&mut buffer) {
            Ok(Some(reply)) => {
                let consumed = before.len() - buffer.len();
                assert!(consumed > 0, "a reply consumed nothing");
                assert_eq!(&before[consumed..], &buffer[..]);
                // the reply re-encodes to bytes that decode to the same reply
                let encoded = encode_reply(&reply);
                let mut again = BytesMut::from(&encoded[..]);
                assert_eq!(
                    fuzzing::link_decode_reply(&mut again).ok(),
                    Some(Some(reply))
                );
                assert!(again.is_empty());
                // a reply cut short is waited for, not misread
                for cut in [0, consumed / 2, consumed - 1] {
                    let mut prefix = BytesMut::from(&before[..cut]);
                    assert!(
                        matches!(fuzzing::link_decode_reply(&mut prefix), Ok(None)),
                        "a {cut}-byte prefix of a {consumed}-byte reply was not incomplete"
                    );
                    assert_eq!(prefix.len(), cut, "an incomplete reply consumed input");
                }
            }
            Ok(None) => {
                assert_eq!(buffer, before, "an incomplete reply consumed input");
                return;
            }
            Err(_) => return,
        }
    }
}

// ---------------------------------------------------------------------------
// Replication snapshot

#[derive(Debug, PartialEq, Eq)]
enum ModelValue {
    Str(Vec<u8>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    List(Vec<Vec<u8>>),
    /// Members in any order (each server keeps its own).
    Set(BTreeSet<Vec<u8>>),
    /// Member -> score bits (-0 kept as 0, as the node keeps it).
    ZSet(BTreeMap<Vec<u8>, u64>),
}

/// Keyspace of a snapshot: key -> (expire_at, value).
type Model = BTreeMap<Vec<u8>, (u64, ModelValue)>;

/// An independent reading of the snapshot format (see `src/replication/snapshot.rs`):
/// the record count and the keyspace it leaves (later records replace earlier ones),
/// or None when the stream is corrupt.
fn snapshot_model(payload: &[u8]) -> Option<(usize, Model)> {
    struct Cursor<'a>(&'a [u8]);
    impl<'a> Cursor<'a> {
        fn take(&mut self, len: usize) -> Option<&'a [u8]> {
            let head = self.0.get(..len)?;
            self.0 = &self.0[len..];
            Some(head)
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }
        fn u64(&mut self) -> Option<u64> {
            Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
        }
        fn bytes(&mut self) -> Option<Vec<u8>> {
            let len = self.u32()? as usize;
            Some(self.take(len)?.to_vec())
        }
    }
    let mut cursor = Cursor(payload);
    if cursor.take(8)? != b"MRDSNAP1" {
        return None;
    }
    let mut model = Model::new();
    let mut records = 0;
    loop {
        let kind = cursor.take(1)?[0];
        if kind == 0xFF {
            // The end marker ends the declared payload: bytes after it are corruption.
            return cursor.0.is_empty().then_some((records, model));
        }
        let key = cursor.bytes()?;
        let expire_at = cursor.u64()?;
        // a write-behind entry (its version where a key has its expiry): `D`, or `P` and
        // the value; it changes no key and is not a key record
        if kind == 0x10 {
            match cursor.bytes()?.as_slice() {
                [b'D'] | [b'P', ..] => continue,
                _ => return None,
            }
        }
        let value = match kind {
            0 => ModelValue::Str(cursor.bytes()?),
            1 => {
                let count = cursor.u32()?;
                // a key holds a hash only while it has fields: an empty one is corruption
                if count == 0 {
                    return None;
                }
                let mut hash = BTreeMap::new();
                for _ in 0..count {
                    let field = cursor.bytes()?;
                    hash.insert(field, cursor.bytes()?);
                }
                ModelValue::Hash(hash)
            }
            // a list or a set: count then elements; never empty, a set's members distinct
            2 | 3 => {
                let count = cursor.u32()?;
                if count == 0 {
                    return None;
                }
                let mut elements = Vec::new();
                for _ in 0..count {
                    elements.push(cursor.bytes()?);
                }
                if kind == 2 {
                    ModelValue::List(elements)
                } else {
                    let members: BTreeSet<Vec<u8>> = elements.iter().cloned().collect();
                    if members.len() != elements.len() {
                        return None;
                    }
                    ModelValue::Set(members)
                }
            }
            // a sorted set: count then elements of `score:f64 member`; never empty,
            // members distinct, no NaN score
            4 => {
                let count = cursor.u32()?;
                if count == 0 {
                    return None;
                }
                let mut zset = BTreeMap::new();
                for _ in 0..count {
                    let element = cursor.bytes()?;
                    let (score, member) = element.split_first_chunk::<8>()?;
                    let score = f64::from_le_bytes(*score);
                    if score.is_nan() {
                        return None;
                    }
                    let score = if score == 0.0 { 0.0 } else { score };
                    if zset.insert(member.to_vec(), score.to_bits()).is_some() {
                        return None;
                    }
                }
                ModelValue::ZSet(zset)
            }
            _ => return None,
        };
        model.insert(key, (expire_at, value));
        records += 1;
    }
}

/// A replica loading the full-sync snapshot a primary streams
/// (`snapshot::load`): it accepts exactly the well-formed streams, and the data
/// it loaded snapshots again to the same keyspace.
pub fn snapshot(data: &[u8]) {
    let db = Db::new(4, 0, Policy::Sieve);
    // No value bound: a fuzz input is far below any limit a replica sets.
    let loaded = snapshot::load(&db, data, usize::MAX);
    let model = snapshot_model(data);
    match (loaded, model) {
        (Err(_), None) => {}
        (Ok(records), Some((expected_records, expected))) => {
            assert_eq!(records, expected_records, "record count");
            assert_eq!(db.len(), expected.len(), "keys loaded");
            // a log of its own: the offset a snapshot is taken at is not checked here
            let log = ReplLog::new(DEFAULT_BACKLOG);
            let (_, payload) = snapshot::take(&db, &log, None);
            let (_, again) = snapshot_model(&payload).expect("a snapshot the node took is corrupt");
            assert_eq!(again, expected, "the loaded keyspace snapshots differently");
            // and a replica with another shard layout loads that snapshot to the same keys
            let other = Db::new(1, 0, Policy::Sieve);
            assert_eq!(
                snapshot::load(&other, &payload, usize::MAX).ok(),
                Some(expected.len())
            );
        }
        (loaded, model) => panic!(
            "load said {loaded:?}, the format says {}",
            if model.is_some() {
                "well formed"
            } else {
                "corrupt"
            }
        ),
    }
}

// ---------------------------------------------------------------------------
// Topology maps

fn map_checks(map: &TopologyMap) {
    let json = serde_json::to_vec(map).expect("a map serializes");
    let back: TopologyMap = serde_json::from_slice(&json).expect("a serialized map parses");
    assert_eq!(&back, map, "the map changed through JSON");
    let structure = map.validate_structure();
    if map.validate().is_ok() {
        assert!(structure.is_ok());
        assert_eq!(map.assigned_slots(), usize::from(SLOT_COUNT));
    }
    if structure.is_err() {
        return;
    }
    // routing agrees with the ranges at every range boundary
    let mut slots: Vec<u16> = vec![0, SLOT_COUNT - 1];
    for shard in map.shards.iter().take(64) {
        for range in shard.slots.iter().take(64) {
            slots.extend([range.start, range.end]);
            slots.extend(range.start.checked_sub(1));
            slots.extend(range.end.checked_add(1).filter(|slot| *slot < SLOT_COUNT));
        }
    }
    for slot in slots {
        let owner = map.owner_of_slot(slot);
        match owner {
            Some(shard) => {
                assert!(shard.owns_slot(slot));
                assert_eq!(map.route(slot, &shard.primary.id, false), Route::Local);
                for replica in &shard.replicas {
                    assert_eq!(map.route(slot, &replica.id, true), Route::Local);
                    assert_eq!(
                        map.route(slot, &replica.id, false),
                        Route::Moved(&shard.primary)
                    );
                }
            }
            None => assert_eq!(map.route(slot, NODE_ID, false), Route::Unserved),
        }
    }
}

/// Whether `map` stays within the sizes a node accepts (`commands/admin.rs`): an epoch
/// JSON tools hold exactly, no more shards than slots, a bounded node count, and names
/// and addresses no longer than a DNS name.
fn within_node_bounds(map: &TopologyMap) -> bool {
    map.epoch <= admin::MAX_EPOCH
        && map.shards.len() <= admin::MAX_SHARDS
        && map.nodes().count() <= admin::MAX_NODES
        && [&map.cluster, &map.region]
            .into_iter()
            .chain(map.nodes().flat_map(|node| [&node.id, &node.ip]))
            .all(|name| name.len() <= admin::MAX_NAME_LEN)
}

/// `MERIDIAN.TOPOLOGY SET <json> PARTIAL` (`src/commands/admin.rs`), the map the
/// operator pushes: the input is a stream of JSON maps, each checked on its own
/// (JSON round trip, validation, routing) and then pushed to one node in order, so
/// epochs and map changes meet the node's rules for accepting a map.
pub fn topology(data: &[u8]) {
    let _runtime = runtime().enter();
    let shared = fuzzing::node();
    let mut current: Option<TopologyMap> = None;
    let mut stream = serde_json::Deserializer::from_slice(data).into_iter::<TopologyMap>();
    let mut start = 0;
    while let Some(Ok(map)) = stream.next() {
        let end = stream.byte_offset();
        let raw = &data[start..end];
        start = end;
        map_checks(&map);
        // a node the map names as a replica connects to its primary: an address
        // from the input, which a fuzzer must not reach
        if map.role_of(NODE_ID) == Some(NodeRole::Replica) {
            return;
        }
        let accept = map.validate_structure().is_ok()
            && within_node_bounds(&map)
            && current.as_ref().is_none_or(|held| {
                map.epoch > held.epoch || (map.epoch == held.epoch && &map == held)
            });
        let (reply, _) = local::run(
            &shared,
            &[b"MERIDIAN.TOPOLOGY", b"SET", raw, b"PARTIAL"],
            false,
        );
        match (&reply, accept) {
            (Some(Reply::Simple(ok)), true) => assert_eq!(ok, "OK"),
            (Some(Reply::Error(_)), false) => {}
            _ => panic!(
                "pushed epoch {}: expected accept={accept}, got {reply:?}",
                map.epoch
            ),
        }
        if accept {
            current = Some(map);
            // the node describes the map it took to cluster clients
            for args in [
                &[&b"CLUSTER"[..], b"SLOTS"][..],
                &[b"CLUSTER", b"SHARDS"],
                &[b"CLUSTER", b"NODES"],
                &[b"CLUSTER", b"INFO"],
            ] {
                let (reply, _) = local::run(&shared, args, false);
                assert!(
                    !matches!(reply, None | Some(Reply::Error(_))),
                    "{args:?} answered {reply:?}"
                );
            }
        }
        let (reply, _) = local::run(&shared, &[b"MERIDIAN.TOPOLOGY", b"GET"], false);
        match (&reply, &current) {
            (Some(Reply::Bulk(json)), Some(held)) => {
                let shown: TopologyMap =
                    serde_json::from_slice(json).expect("MERIDIAN.TOPOLOGY GET is a map");
                assert_eq!(&shown, held);
            }
            (Some(Reply::Nil), None) => {}
            _ => panic!("MERIDIAN.TOPOLOGY GET answered {reply:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP API

/// How many requests got a 5xx answer so far.
fn server_errors() -> u64 {
    let mut total = 0;
    for method in ["GET", "PUT", "DELETE", "POST", "HEAD", "OTHER"] {
        // the standard 5xx codes (hyper answers none of its own through the handler)
        for code in 500..=511 {
            let labels = vec![("method", method.to_string()), ("code", code.to_string())];
            if let Some(counter) = API_METRICS.http_requests.get(&labels) {
                total += counter.get();
            }
        }
    }
    total
}

/// The HTTP API (`src/http/mod.rs`) reading one connection: request paths (keys,
/// percent-decoding, `?ttl=`), headers and bodies (`POST /invalidate` JSON). The
/// node is standalone with no origin and no peers, so no request may end in a
/// server error (5xx): every bad input is the client's (4xx).
pub fn http(data: &[u8]) {
    let shared = fuzzing::node();
    let before = server_errors();
    let output = converse(data, |server| async move {
        let _ = fuzzing::http_serve(shared, server).await;
    });
    let after = server_errors();
    assert_eq!(
        after,
        before,
        "a request got a server error: {:?}",
        String::from_utf8_lossy(&output)
    );
}

/// The one RESP reply decoder (`protocol::parse_reply`: what MIGRATE targets, replication
/// primaries and region-link peers send): never reads past the input, keeps to its limits,
/// and every prefix of a whole reply is incomplete, never another reply.
pub fn resp_reply(data: &[u8]) {
    use meridian_node::protocol::{Decoded, ReplyLimits, parse_reply};
    const LIMITS: ReplyLimits = ReplyLimits {
        max_len: 64 * 1024,
        max_bulk_len: 4096,
        max_elements: 1024,
        max_depth: 8,
    };
    let mut rest = data;
    while !rest.is_empty() {
        match parse_reply(rest, &LIMITS) {
            Ok(Decoded::Reply { consumed, .. }) => {
                assert!(consumed > 0 && consumed <= rest.len());
                for cut in [0, consumed / 2, consumed - 1] {
                    assert!(matches!(
                        parse_reply(&rest[..cut], &LIMITS),
                        Ok(Decoded::Incomplete { min_len }) if min_len > cut
                    ));
                }
                rest = &rest[consumed..];
            }
            Ok(Decoded::Incomplete { min_len }) => {
                assert!(min_len > rest.len() && min_len <= LIMITS.max_len);
                break;
            }
            Err(_) => break,
        }
    }
}

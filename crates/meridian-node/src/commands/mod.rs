//! Command table and dispatch: arity, authentication, subscribed-context and
//! MULTI queueing rules, OOM refusal, then the family handlers.

pub mod acl;
pub mod admin;
pub mod bitmaps;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod hashes;
pub mod hyperloglog;
pub mod id;
pub mod introspection;
pub mod keys;
pub mod lcs;
pub mod lists;
pub mod migrate;
pub mod pubsub;
pub mod replication;
pub mod scripting;
pub mod server;
pub mod sets;
pub mod strings;
pub mod transactions;
pub mod zsets;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

pub use self::id::Cmd;
use crate::acl::{Catalog, Denied, KeyAccess, Login, Unit, User};
use crate::client::ClientHandle;
use crate::error::{CmdResult, CommandError};
use crate::exec::{Caller, ExecContext};
use crate::protocol::Out;
use crate::protocol::frame::parse_i64;
use crate::state::{PauseMode, Shared};
use crate::store::{Access, Db, Held, KeyCollection, Shard, WatchFlag};

pub const WRITE: u32 = 1;
pub const DENYOOM: u32 = 1 << 1;
pub const READONLY: u32 = 1 << 2;
/// Allowed before AUTH.
pub const NOAUTH: u32 = 1 << 3;
/// Allowed in RESP2 subscribed context.
pub const PUBSUB: u32 = 1 << 4;
/// Executed immediately even inside MULTI.
pub const NOQUEUE: u32 = 1 << 5;
/// Touches every shard (no key arguments but reads/writes the keyspace).
pub const ALLSHARDS: u32 = 1 << 6;
pub const ADMIN: u32 = 1 << 7;
pub const FAST: u32 = 1 << 8;

pub type Handler = fn(&mut Ctx<'_, '_>) -> CmdResult;

/// The keys of a command whose key positions depend on its arguments (LMPOP's
/// `numkeys`): Redis's "movablekeys".
pub type KeyFinder = for<'x> fn(&[&'x [u8]]) -> Vec<&'x [u8]>;

pub struct Spec {
    /// Which command this is, for the dispatcher's decisions (never the name).
    pub id: Cmd,
    pub name: &'static str,
    pub arity: i32,
    pub flags: u32,
    /// Key positions like Redis's legacy key spec (first, last, step); last < 0 counts from the end.
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    pub handler: Handler,
    /// Set for commands whose keys [`Spec::keys`] finds through it instead of the
    /// positions (which are then 0, as Redis reports them).
    pub movable_keys: Option<KeyFinder>,
}

impl Spec {
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// The same command, its keys found by `finder`.
    const fn with_movable_keys(self, finder: KeyFinder) -> Spec {
        Spec {
            movable_keys: Some(finder),
            ..self
        }
    }

    /// Whether the command has key arguments at all.
    pub fn takes_keys(&self) -> bool {
        self.first_key > 0 || self.movable_keys.is_some()
    }

    /// Key arguments of a concrete invocation.
    pub fn keys<'x>(&self, args: &[&'x [u8]]) -> Vec<&'x [u8]> {
        if let Some(finder) = self.movable_keys {
            return finder(args);
        }
        if self.first_key <= 0 {
            return Vec::new();
        }
        let last = if self.last_key < 0 {
            args.len() as i32 + self.last_key
        } else {
            self.last_key
        };
        let mut keys = Vec::new();
        let mut index = self.first_key;
        while index <= last && (index as usize) < args.len() {
            keys.push(args[index as usize]);
            index += self.step.max(1);
        }
        keys
    }

    /// The key of a command whose only key sits at one fixed position (GET, SET, INCR):
    /// the common case, found without a key vector.
    pub fn only_key<'x>(&self, args: &[&'x [u8]]) -> Option<&'x [u8]> {
        (self.first_key > 0 && self.first_key == self.last_key && self.movable_keys.is_none())
            .then(|| args.get(self.first_key as usize).copied())
            .flatten()
    }

    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for (flag, name) in [
            (WRITE, "write"),
            (READONLY, "readonly"),
            (DENYOOM, "denyoom"),
            (ADMIN, "admin"),
            (PUBSUB, "pubsub"),
            (NOAUTH, "no_auth"),
            (FAST, "fast"),
        ] {
            if self.has(flag) {
                names.push(name);
            }
        }
        if self.movable_keys.is_some() {
            names.push("movablekeys");
        }
        names
    }
}

macro_rules! spec {
    ($id:expr, $name:literal, $arity:expr, $flags:expr, $first:expr, $last:expr, $step:expr, $handler:path) => {
        Spec {
            id: $id,
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $first,
            last_key: $last,
            step: $step,
            handler: $handler,
            movable_keys: None,
        }
    };
}

const W: u32 = WRITE | DENYOOM;
const R: u32 = READONLY;

pub static COMMANDS: &[Spec] = &[
    // connection
    // like Redis, PING needs a login (NOAUTH otherwise): only AUTH, HELLO, QUIT and
    // RESET may come first
    spec!(
        Cmd::Ping,
        "ping",
        -1,
        PUBSUB | FAST,
        0,
        0,
        0,
        connection::ping
    ),
    spec!(Cmd::Echo, "echo", 2, FAST, 0, 0, 0, connection::echo),
    spec!(
        Cmd::Hello,
        "hello",
        -1,
        NOAUTH | NOQUEUE | FAST,
        0,
        0,
        0,
        connection::hello
    ),
    spec!(
        Cmd::Auth,
        "auth",
        -2,
        NOAUTH | NOQUEUE | FAST,
        0,
        0,
        0,
        connection::auth
    ),
    spec!(Cmd::Select, "select", 2, FAST, 0, 0, 0, connection::select),
    spec!(
        Cmd::Quit,
        "quit",
        -1,
        NOAUTH | PUBSUB | NOQUEUE,
        0,
        0,
        0,
        connection::quit
    ),
    spec!(
        Cmd::Reset,
        "reset",
        1,
        NOAUTH | PUBSUB | NOQUEUE,
        0,
        0,
        0,
        connection::reset
    ),
    spec!(Cmd::Client, "client", -2, 0, 0, 0, 0, connection::client),
    // server
    spec!(Cmd::Command, "command", -1, 0, 0, 0, 0, server::command),
    spec!(Cmd::Info, "info", -1, ALLSHARDS, 0, 0, 0, server::info),
    spec!(Cmd::Config, "config", -2, ADMIN, 0, 0, 0, config::config),
    spec!(
        Cmd::Dbsize,
        "dbsize",
        1,
        R | ALLSHARDS | FAST,
        0,
        0,
        0,
        server::dbsize
    ),
    spec!(
        Cmd::Flushdb,
        "flushdb",
        -1,
        WRITE | ALLSHARDS,
        0,
        0,
        0,
        server::flushdb
    ),
    spec!(
        Cmd::Flushall,
        "flushall",
        -1,
        WRITE | ALLSHARDS,
        0,
        0,
        0,
        server::flushdb
    ),
    spec!(Cmd::Time, "time", 1, FAST, 0, 0, 0, server::time),
    spec!(
        Cmd::Lastsave,
        "lastsave",
        1,
        FAST,
        0,
        0,
        0,
        server::lastsave
    ),
    // strings
    spec!(Cmd::Get, "get", 2, R | FAST, 1, 1, 1, strings::get),
    spec!(Cmd::Set, "set", -3, W, 1, 1, 1, strings::set),
    spec!(Cmd::Setnx, "setnx", 3, W | FAST, 1, 1, 1, strings::setnx),
    spec!(Cmd::Setex, "setex", 4, W, 1, 1, 1, strings::setex),
    spec!(Cmd::Psetex, "psetex", 4, W, 1, 1, 1, strings::psetex),
    spec!(Cmd::Getset, "getset", 3, W | FAST, 1, 1, 1, strings::getset),
    spec!(
        Cmd::Getdel,
        "getdel",
        2,
        WRITE | FAST,
        1,
        1,
        1,
        strings::getdel
    ),
    spec!(
        Cmd::Getex,
        "getex",
        -2,
        WRITE | FAST,
        1,
        1,
        1,
        strings::getex
    ),
    spec!(Cmd::Mget, "mget", -2, R | FAST, 1, -1, 1, strings::mget),
    spec!(Cmd::Mset, "mset", -3, W, 1, -1, 2, strings::mset),
    spec!(Cmd::Msetnx, "msetnx", -3, W, 1, -1, 2, strings::msetnx),
    spec!(Cmd::Append, "append", 3, W | FAST, 1, 1, 1, strings::append),
    spec!(Cmd::Strlen, "strlen", 2, R | FAST, 1, 1, 1, strings::strlen),
    spec!(Cmd::Getrange, "getrange", 4, R, 1, 1, 1, strings::getrange),
    spec!(Cmd::Substr, "substr", 4, R, 1, 1, 1, strings::getrange),
    spec!(Cmd::Setrange, "setrange", 4, W, 1, 1, 1, strings::setrange),
    spec!(Cmd::Setbit, "setbit", 4, W, 1, 1, 1, bitmaps::setbit),
    spec!(Cmd::Getbit, "getbit", 3, R | FAST, 1, 1, 1, bitmaps::getbit),
    spec!(Cmd::Bitcount, "bitcount", -2, R, 1, 1, 1, bitmaps::bitcount),
    spec!(Cmd::Bitpos, "bitpos", -3, R, 1, 1, 1, bitmaps::bitpos),
    spec!(Cmd::Bitop, "bitop", -4, W, 2, -1, 1, bitmaps::bitop),
    spec!(Cmd::Bitfield, "bitfield", -2, W, 1, 1, 1, bitmaps::bitfield),
    spec!(
        Cmd::BitfieldRo,
        "bitfield_ro",
        -2,
        R | FAST,
        1,
        1,
        1,
        bitmaps::bitfield_ro
    ),
    spec!(
        Cmd::Pfadd,
        "pfadd",
        -2,
        W | FAST,
        1,
        1,
        1,
        hyperloglog::pfadd
    ),
    spec!(
        Cmd::Pfcount,
        "pfcount",
        -2,
        R,
        1,
        -1,
        1,
        hyperloglog::pfcount
    ),
    spec!(
        Cmd::Pfmerge,
        "pfmerge",
        -2,
        W,
        1,
        -1,
        1,
        hyperloglog::pfmerge
    ),
    spec!(Cmd::Lcs, "lcs", -3, R, 1, 2, 1, lcs::lcs_command),
    spec!(Cmd::Object, "object", -2, R, 2, 2, 1, introspection::object),
    spec!(Cmd::Memory, "memory", -2, R, 2, 2, 1, introspection::memory),
    spec!(Cmd::Incr, "incr", 2, W | FAST, 1, 1, 1, strings::incr),
    spec!(Cmd::Decr, "decr", 2, W | FAST, 1, 1, 1, strings::decr),
    spec!(Cmd::Incrby, "incrby", 3, W | FAST, 1, 1, 1, strings::incrby),
    spec!(Cmd::Decrby, "decrby", 3, W | FAST, 1, 1, 1, strings::decrby),
    spec!(
        Cmd::Incrbyfloat,
        "incrbyfloat",
        3,
        W | FAST,
        1,
        1,
        1,
        strings::incrbyfloat
    ),
    // keys
    spec!(Cmd::Del, "del", -2, WRITE, 1, -1, 1, keys::del),
    spec!(Cmd::Unlink, "unlink", -2, WRITE | FAST, 1, -1, 1, keys::del),
    spec!(Cmd::Exists, "exists", -2, R | FAST, 1, -1, 1, keys::exists),
    spec!(Cmd::Type, "type", 2, R | FAST, 1, 1, 1, keys::type_of),
    spec!(
        Cmd::Expire,
        "expire",
        -3,
        WRITE | FAST,
        1,
        1,
        1,
        keys::expire
    ),
    spec!(
        Cmd::Pexpire,
        "pexpire",
        -3,
        WRITE | FAST,
        1,
        1,
        1,
        keys::pexpire
    ),
    spec!(
        Cmd::Expireat,
        "expireat",
        -3,
        WRITE | FAST,
        1,
        1,
        1,
        keys::expireat
    ),
    spec!(
        Cmd::Pexpireat,
        "pexpireat",
        -3,
        WRITE | FAST,
        1,
        1,
        1,
        keys::pexpireat
    ),
    spec!(Cmd::Ttl, "ttl", 2, R | FAST, 1, 1, 1, keys::ttl),
    spec!(Cmd::Pttl, "pttl", 2, R | FAST, 1, 1, 1, keys::pttl),
    spec!(
        Cmd::Expiretime,
        "expiretime",
        2,
        R | FAST,
        1,
        1,
        1,
        keys::expiretime
    ),
    spec!(
        Cmd::Pexpiretime,
        "pexpiretime",
        2,
        R | FAST,
        1,
        1,
        1,
        keys::pexpiretime
    ),
    spec!(
        Cmd::Persist,
        "persist",
        2,
        WRITE | FAST,
        1,
        1,
        1,
        keys::persist
    ),
    spec!(Cmd::Keys, "keys", 2, R | ALLSHARDS, 0, 0, 0, keys::keys),
    spec!(Cmd::Scan, "scan", -2, R | ALLSHARDS, 0, 0, 0, keys::scan),
    spec!(
        Cmd::Randomkey,
        "randomkey",
        1,
        R | ALLSHARDS,
        0,
        0,
        0,
        keys::randomkey
    ),
    spec!(Cmd::Rename, "rename", 3, WRITE, 1, 2, 1, keys::rename),
    spec!(
        Cmd::Renamenx,
        "renamenx",
        3,
        WRITE | FAST,
        1,
        2,
        1,
        keys::renamenx
    ),
    spec!(Cmd::Copy, "copy", -3, W, 1, 2, 1, keys::copy),
    spec!(Cmd::Touch, "touch", -2, R | FAST, 1, -1, 1, keys::touch),
    spec!(Cmd::Dump, "dump", 2, R, 1, 1, 1, migrate::dump),
    spec!(Cmd::Restore, "restore", -4, W, 1, 1, 1, migrate::restore),
    spec!(
        Cmd::RestoreAsking,
        "restore-asking",
        -4,
        W,
        1,
        1,
        1,
        migrate::restore
    ),
    // MIGRATE locks and propagates itself: not flagged WRITE for the dispatcher
    spec!(Cmd::Migrate, "migrate", -6, 0, 0, 0, 0, migrate::migrate),
    // hashes
    spec!(Cmd::Hset, "hset", -4, W | FAST, 1, 1, 1, hashes::hset),
    spec!(Cmd::Hmset, "hmset", -4, W | FAST, 1, 1, 1, hashes::hmset),
    spec!(Cmd::Hsetnx, "hsetnx", 4, W | FAST, 1, 1, 1, hashes::hsetnx),
    spec!(Cmd::Hget, "hget", 3, R | FAST, 1, 1, 1, hashes::hget),
    spec!(Cmd::Hmget, "hmget", -3, R | FAST, 1, 1, 1, hashes::hmget),
    spec!(Cmd::Hdel, "hdel", -3, WRITE | FAST, 1, 1, 1, hashes::hdel),
    spec!(
        Cmd::Hexists,
        "hexists",
        3,
        R | FAST,
        1,
        1,
        1,
        hashes::hexists
    ),
    spec!(Cmd::Hlen, "hlen", 2, R | FAST, 1, 1, 1, hashes::hlen),
    spec!(Cmd::Hkeys, "hkeys", 2, R, 1, 1, 1, hashes::hkeys),
    spec!(Cmd::Hvals, "hvals", 2, R, 1, 1, 1, hashes::hvals),
    spec!(Cmd::Hgetall, "hgetall", 2, R, 1, 1, 1, hashes::hgetall),
    spec!(
        Cmd::Hincrby,
        "hincrby",
        4,
        W | FAST,
        1,
        1,
        1,
        hashes::hincrby
    ),
    spec!(
        Cmd::Hincrbyfloat,
        "hincrbyfloat",
        4,
        W | FAST,
        1,
        1,
        1,
        hashes::hincrbyfloat
    ),
    spec!(
        Cmd::Hstrlen,
        "hstrlen",
        3,
        R | FAST,
        1,
        1,
        1,
        hashes::hstrlen
    ),
    spec!(Cmd::Hscan, "hscan", -3, R, 1, 1, 1, hashes::hscan),
    spec!(
        Cmd::Hrandfield,
        "hrandfield",
        -2,
        R,
        1,
        1,
        1,
        hashes::hrandfield
    ),
    // lists
    spec!(Cmd::Lpush, "lpush", -3, W | FAST, 1, 1, 1, lists::lpush),
    spec!(Cmd::Rpush, "rpush", -3, W | FAST, 1, 1, 1, lists::rpush),
    spec!(Cmd::Lpushx, "lpushx", -3, W | FAST, 1, 1, 1, lists::lpushx),
    spec!(Cmd::Rpushx, "rpushx", -3, W | FAST, 1, 1, 1, lists::rpushx),
    spec!(Cmd::Lpop, "lpop", -2, WRITE | FAST, 1, 1, 1, lists::lpop),
    spec!(Cmd::Rpop, "rpop", -2, WRITE | FAST, 1, 1, 1, lists::rpop),
    spec!(Cmd::Llen, "llen", 2, R | FAST, 1, 1, 1, lists::llen),
    spec!(Cmd::Lindex, "lindex", 3, R, 1, 1, 1, lists::lindex),
    spec!(Cmd::Lset, "lset", 4, W, 1, 1, 1, lists::lset),
    spec!(Cmd::Lrange, "lrange", 4, R, 1, 1, 1, lists::lrange),
    spec!(Cmd::Ltrim, "ltrim", 4, WRITE, 1, 1, 1, lists::ltrim),
    spec!(Cmd::Lrem, "lrem", 4, WRITE, 1, 1, 1, lists::lrem),
    spec!(Cmd::Linsert, "linsert", 5, W, 1, 1, 1, lists::linsert),
    spec!(Cmd::Lpos, "lpos", -3, R, 1, 1, 1, lists::lpos),
    spec!(Cmd::Lmove, "lmove", 5, W, 1, 2, 1, lists::lmove),
    spec!(Cmd::Rpoplpush, "rpoplpush", 3, W, 1, 2, 1, lists::rpoplpush),
    spec!(Cmd::Lmpop, "lmpop", -4, WRITE, 0, 0, 0, lists::lmpop)
        .with_movable_keys(lists::lmpop_keys),
    spec!(Cmd::Blpop, "blpop", -3, WRITE, 1, -2, 1, lists::blpop),
    spec!(Cmd::Brpop, "brpop", -3, WRITE, 1, -2, 1, lists::brpop),
    spec!(Cmd::Blmove, "blmove", 6, W, 1, 2, 1, lists::blmove),
    spec!(
        Cmd::Brpoplpush,
        "brpoplpush",
        4,
        W,
        1,
        2,
        1,
        lists::brpoplpush
    ),
    spec!(Cmd::Blmpop, "blmpop", -5, WRITE, 0, 0, 0, lists::blmpop)
        .with_movable_keys(lists::blmpop_keys),
    // sets
    spec!(Cmd::Sadd, "sadd", -3, W | FAST, 1, 1, 1, sets::sadd),
    spec!(Cmd::Srem, "srem", -3, WRITE | FAST, 1, 1, 1, sets::srem),
    spec!(Cmd::Scard, "scard", 2, R | FAST, 1, 1, 1, sets::scard),
    spec!(
        Cmd::Sismember,
        "sismember",
        3,
        R | FAST,
        1,
        1,
        1,
        sets::sismember
    ),
    spec!(
        Cmd::Smismember,
        "smismember",
        -3,
        R | FAST,
        1,
        1,
        1,
        sets::smismember
    ),
    spec!(Cmd::Smembers, "smembers", 2, R, 1, 1, 1, sets::smembers),
    spec!(Cmd::Spop, "spop", -2, WRITE | FAST, 1, 1, 1, sets::spop),
    spec!(
        Cmd::Srandmember,
        "srandmember",
        -2,
        R,
        1,
        1,
        1,
        sets::srandmember
    ),
    spec!(Cmd::Smove, "smove", 4, W | FAST, 1, 2, 1, sets::smove),
    spec!(Cmd::Sinter, "sinter", -2, R, 1, -1, 1, sets::sinter),
    spec!(Cmd::Sunion, "sunion", -2, R, 1, -1, 1, sets::sunion),
    spec!(Cmd::Sdiff, "sdiff", -2, R, 1, -1, 1, sets::sdiff),
    spec!(
        Cmd::Sinterstore,
        "sinterstore",
        -3,
        W,
        1,
        -1,
        1,
        sets::sinterstore
    ),
    spec!(
        Cmd::Sunionstore,
        "sunionstore",
        -3,
        W,
        1,
        -1,
        1,
        sets::sunionstore
    ),
    spec!(
        Cmd::Sdiffstore,
        "sdiffstore",
        -3,
        W,
        1,
        -1,
        1,
        sets::sdiffstore
    ),
    spec!(
        Cmd::Sintercard,
        "sintercard",
        -3,
        R,
        0,
        0,
        0,
        sets::sintercard
    )
    .with_movable_keys(sets::sintercard_keys),
    spec!(Cmd::Sscan, "sscan", -3, R, 1, 1, 1, sets::sscan),
    // sorted sets
    spec!(Cmd::Zadd, "zadd", -4, W | FAST, 1, 1, 1, zsets::zadd),
    spec!(
        Cmd::Zincrby,
        "zincrby",
        4,
        W | FAST,
        1,
        1,
        1,
        zsets::zincrby
    ),
    spec!(Cmd::Zrem, "zrem", -3, WRITE | FAST, 1, 1, 1, zsets::zrem),
    spec!(Cmd::Zcard, "zcard", 2, R | FAST, 1, 1, 1, zsets::zcard),
    spec!(Cmd::Zscore, "zscore", 3, R | FAST, 1, 1, 1, zsets::zscore),
    spec!(
        Cmd::Zmscore,
        "zmscore",
        -3,
        R | FAST,
        1,
        1,
        1,
        zsets::zmscore
    ),
    spec!(Cmd::Zrank, "zrank", 3, R | FAST, 1, 1, 1, zsets::zrank),
    spec!(
        Cmd::Zrevrank,
        "zrevrank",
        3,
        R | FAST,
        1,
        1,
        1,
        zsets::zrevrank
    ),
    spec!(Cmd::Zcount, "zcount", 4, R | FAST, 1, 1, 1, zsets::zcount),
    spec!(
        Cmd::Zlexcount,
        "zlexcount",
        4,
        R | FAST,
        1,
        1,
        1,
        zsets::zlexcount
    ),
    spec!(Cmd::Zrange, "zrange", -4, R, 1, 1, 1, zsets::zrange),
    spec!(
        Cmd::Zrevrange,
        "zrevrange",
        -4,
        R,
        1,
        1,
        1,
        zsets::zrevrange
    ),
    spec!(
        Cmd::Zrangebyscore,
        "zrangebyscore",
        -4,
        R,
        1,
        1,
        1,
        zsets::zrangebyscore
    ),
    spec!(
        Cmd::Zrevrangebyscore,
        "zrevrangebyscore",
        -4,
        R,
        1,
        1,
        1,
        zsets::zrevrangebyscore
    ),
    spec!(
        Cmd::Zrangebylex,
        "zrangebylex",
        -4,
        R,
        1,
        1,
        1,
        zsets::zrangebylex
    ),
    spec!(
        Cmd::Zrevrangebylex,
        "zrevrangebylex",
        -4,
        R,
        1,
        1,
        1,
        zsets::zrevrangebylex
    ),
    spec!(
        Cmd::Zrangestore,
        "zrangestore",
        -5,
        W,
        1,
        2,
        1,
        zsets::zrangestore
    ),
    spec!(
        Cmd::Zremrangebyrank,
        "zremrangebyrank",
        4,
        WRITE,
        1,
        1,
        1,
        zsets::zremrangebyrank
    ),
    spec!(
        Cmd::Zremrangebyscore,
        "zremrangebyscore",
        4,
        WRITE,
        1,
        1,
        1,
        zsets::zremrangebyscore
    ),
    spec!(
        Cmd::Zremrangebylex,
        "zremrangebylex",
        4,
        WRITE,
        1,
        1,
        1,
        zsets::zremrangebylex
    ),
    spec!(
        Cmd::Zpopmin,
        "zpopmin",
        -2,
        WRITE | FAST,
        1,
        1,
        1,
        zsets::zpopmin
    ),
    spec!(
        Cmd::Zpopmax,
        "zpopmax",
        -2,
        WRITE | FAST,
        1,
        1,
        1,
        zsets::zpopmax
    ),
    spec!(
        Cmd::Bzpopmin,
        "bzpopmin",
        -3,
        WRITE | FAST,
        1,
        -2,
        1,
        zsets::bzpopmin
    ),
    spec!(
        Cmd::Bzpopmax,
        "bzpopmax",
        -3,
        WRITE | FAST,
        1,
        -2,
        1,
        zsets::bzpopmax
    ),
    spec!(Cmd::Zmpop, "zmpop", -4, WRITE, 0, 0, 0, zsets::zmpop)
        .with_movable_keys(zsets::zmpop_keys),
    spec!(Cmd::Bzmpop, "bzmpop", -5, WRITE, 0, 0, 0, zsets::bzmpop)
        .with_movable_keys(zsets::bzmpop_keys),
    spec!(
        Cmd::Zrandmember,
        "zrandmember",
        -2,
        R,
        1,
        1,
        1,
        zsets::zrandmember
    ),
    spec!(Cmd::Zunion, "zunion", -3, R, 0, 0, 0, zsets::zunion)
        .with_movable_keys(zsets::combine_command_keys),
    spec!(Cmd::Zinter, "zinter", -3, R, 0, 0, 0, zsets::zinter)
        .with_movable_keys(zsets::combine_command_keys),
    spec!(Cmd::Zdiff, "zdiff", -3, R, 0, 0, 0, zsets::zdiff)
        .with_movable_keys(zsets::combine_command_keys),
    spec!(
        Cmd::Zunionstore,
        "zunionstore",
        -4,
        W,
        0,
        0,
        0,
        zsets::zunionstore
    )
    .with_movable_keys(zsets::combine_store_keys),
    spec!(
        Cmd::Zinterstore,
        "zinterstore",
        -4,
        W,
        0,
        0,
        0,
        zsets::zinterstore
    )
    .with_movable_keys(zsets::combine_store_keys),
    spec!(
        Cmd::Zdiffstore,
        "zdiffstore",
        -4,
        W,
        0,
        0,
        0,
        zsets::zdiffstore
    )
    .with_movable_keys(zsets::combine_store_keys),
    spec!(
        Cmd::Zintercard,
        "zintercard",
        -3,
        R,
        0,
        0,
        0,
        zsets::zintercard
    )
    .with_movable_keys(zsets::combine_command_keys),
    spec!(Cmd::Zscan, "zscan", -3, R, 1, 1, 1, zsets::zscan),
    // scripting: a script locks what it needs and replicates its effects itself
    spec!(Cmd::Eval, "eval", -3, 0, 0, 0, 0, scripting::eval)
        .with_movable_keys(scripting::eval_keys),
    spec!(Cmd::Evalsha, "evalsha", -3, 0, 0, 0, 0, scripting::evalsha)
        .with_movable_keys(scripting::eval_keys),
    spec!(Cmd::EvalRo, "eval_ro", -3, R, 0, 0, 0, scripting::eval_ro)
        .with_movable_keys(scripting::eval_keys),
    spec!(
        Cmd::EvalshaRo,
        "evalsha_ro",
        -3,
        R,
        0,
        0,
        0,
        scripting::evalsha_ro
    )
    .with_movable_keys(scripting::eval_keys),
    spec!(Cmd::Script, "script", -2, 0, 0, 0, 0, scripting::script),
    spec!(Cmd::Fcall, "fcall", -3, 0, 0, 0, 0, scripting::fcall)
        .with_movable_keys(scripting::eval_keys),
    spec!(
        Cmd::FcallRo,
        "fcall_ro",
        -3,
        R,
        0,
        0,
        0,
        scripting::fcall_ro
    )
    .with_movable_keys(scripting::eval_keys),
    spec!(
        Cmd::Function,
        "function",
        -2,
        0,
        0,
        0,
        0,
        scripting::function
    ),
    // transactions
    spec!(
        Cmd::Multi,
        "multi",
        1,
        NOQUEUE | FAST,
        0,
        0,
        0,
        transactions::multi
    ),
    spec!(Cmd::Exec, "exec", 1, NOQUEUE, 0, 0, 0, transactions::exec),
    spec!(
        Cmd::Discard,
        "discard",
        1,
        NOQUEUE | FAST,
        0,
        0,
        0,
        transactions::discard
    ),
    spec!(
        Cmd::Watch,
        "watch",
        -2,
        NOQUEUE | FAST,
        1,
        -1,
        1,
        transactions::watch
    ),
    spec!(
        Cmd::Unwatch,
        "unwatch",
        1,
        NOQUEUE | FAST,
        0,
        0,
        0,
        transactions::unwatch
    ),
    // pub/sub
    spec!(
        Cmd::Subscribe,
        "subscribe",
        -2,
        PUBSUB,
        0,
        0,
        0,
        pubsub::subscribe
    ),
    spec!(
        Cmd::Unsubscribe,
        "unsubscribe",
        -1,
        PUBSUB,
        0,
        0,
        0,
        pubsub::unsubscribe
    ),
    spec!(
        Cmd::Psubscribe,
        "psubscribe",
        -2,
        PUBSUB,
        0,
        0,
        0,
        pubsub::psubscribe
    ),
    spec!(
        Cmd::Punsubscribe,
        "punsubscribe",
        -1,
        PUBSUB,
        0,
        0,
        0,
        pubsub::punsubscribe
    ),
    spec!(Cmd::Publish, "publish", 3, FAST, 0, 0, 0, pubsub::publish),
    spec!(Cmd::Pubsub, "pubsub", -2, 0, 0, 0, 0, pubsub::pubsub),
    // admin / cluster
    spec!(
        Cmd::MeridianTopology,
        "meridian.topology",
        -2,
        ADMIN,
        0,
        0,
        0,
        admin::topology
    ),
    spec!(
        Cmd::MeridianPeers,
        "meridian.peers",
        -2,
        ADMIN,
        0,
        0,
        0,
        admin::peers
    ),
    spec!(
        Cmd::Invalidate,
        "invalidate",
        -2,
        0,
        0,
        0,
        0,
        admin::invalidate
    ),
    spec!(
        Cmd::MeridianMigrate,
        "meridian.migrate",
        -5,
        ADMIN,
        0,
        0,
        0,
        migrate::meridian_migrate
    ),
    spec!(
        Cmd::MeridianWriteBehind,
        "meridian.writebehind",
        -4,
        ADMIN,
        0,
        0,
        0,
        admin::write_behind
    ),
    spec!(
        Cmd::Cluster,
        "cluster",
        -2,
        ALLSHARDS,
        0,
        0,
        0,
        cluster::cluster
    ),
    spec!(
        Cmd::Readonly,
        "readonly",
        1,
        FAST,
        0,
        0,
        0,
        cluster::readonly
    ),
    spec!(
        Cmd::Readwrite,
        "readwrite",
        1,
        FAST,
        0,
        0,
        0,
        cluster::readwrite
    ),
    spec!(Cmd::Asking, "asking", 1, FAST, 0, 0, 0, cluster::asking),
    // replication
    spec!(
        Cmd::Replicaof,
        "replicaof",
        3,
        ADMIN | NOQUEUE,
        0,
        0,
        0,
        replication::replicaof
    ),
    spec!(
        Cmd::Slaveof,
        "slaveof",
        3,
        ADMIN | NOQUEUE,
        0,
        0,
        0,
        replication::replicaof
    ),
    spec!(
        Cmd::Role,
        "role",
        1,
        NOQUEUE | FAST,
        0,
        0,
        0,
        replication::role
    ),
    spec!(Cmd::Wait, "wait", 3, 0, 0, 0, 0, replication::wait),
    spec!(
        Cmd::Replconf,
        "replconf",
        -1,
        ADMIN | NOQUEUE,
        0,
        0,
        0,
        replication::replconf
    ),
    spec!(
        Cmd::Psync,
        "psync",
        -3,
        ADMIN | NOQUEUE,
        0,
        0,
        0,
        replication::psync
    ),
    spec!(
        Cmd::Sync,
        "sync",
        1,
        ADMIN | NOQUEUE,
        0,
        0,
        0,
        replication::sync
    ),
    // ACL LOAD waits for the file outside the dispatcher: not queued inside MULTI
    spec!(Cmd::Acl, "acl", -2, 0, 0, 0, 0, acl::acl),
    spec!(Cmd::Debug, "debug", -2, ADMIN, 0, 0, 0, server::debug),
];

/// The ACL's view of the command table: every command (unit = table position)
/// and the subcommands of [`id::SUBCOMMANDS`], with their categories.
pub fn acl_catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let commands: Vec<(&str, crate::acl::Categories)> = COMMANDS
            .iter()
            .map(|spec| (spec.name, spec.id.categories()))
            .collect();
        let subcommands: Vec<(usize, &str, crate::acl::Categories)> = id::SUBCOMMANDS
            .iter()
            .filter_map(|sub| {
                let parent = COMMANDS.iter().position(|spec| spec.id == sub.parent)?;
                Some((parent, sub.name, sub.categories))
            })
            .collect();
        Catalog::new(&commands, &subcommands)
    })
}

/// The ACL unit a call of command `position` runs as (`client|kill` for CLIENT KILL).
pub fn acl_unit(catalog: &Catalog, position: usize, args: &[&[u8]]) -> Option<Unit> {
    let command = catalog.command(position)?;
    Some(catalog.resolve(command, args.get(1).copied()))
}

/// What a command does with its keys, for `%R~` / `%W~` patterns: writes read
/// and write (most return or depend on the old value), DEL / UNLINK only write.
fn key_access(spec: &Spec) -> KeyAccess {
    KeyAccess {
        read: !matches!(spec.id, Cmd::Del | Cmd::Unlink),
        write: spec.has(WRITE),
    }
}

/// Commands whose keys the key spec does not name (a pattern, MIGRATE's KEYS):
/// only users with every key may run them.
fn needs_all_keys(id: Cmd) -> bool {
    matches!(id, Cmd::Invalidate | Cmd::Migrate | Cmd::MeridianMigrate)
}

/// Redis's ACLCheckAllUserCommandPerm: the command (or subcommand), its keys
/// (positions of the cluster router's key spec) and its channels.
pub fn acl_check(
    catalog: &Catalog,
    user: &User,
    position: usize,
    spec: &Spec,
    args: &[&[u8]],
) -> Result<(), Denied> {
    if user.unrestricted() {
        return Ok(());
    }
    // like Redis, the commands a client may send before AUTH are never refused
    if !spec.has(NOAUTH)
        && let Some(unit) = acl_unit(catalog, position, args)
        && !user.may_run(unit)
    {
        return Err(Denied::Command);
    }
    if !user.all_keys() {
        if needs_all_keys(spec.id) {
            return Err(Denied::Key(0));
        }
        if spec.takes_keys()
            && let Some(index) = user.denied_key(spec.keys(args), key_access(spec))
        {
            return Err(Denied::Key(index));
        }
    }
    let channels = match spec.id {
        Cmd::Publish => Some((&args[1..2.min(args.len())], false)),
        Cmd::Subscribe => Some((args.get(1..).unwrap_or_default(), false)),
        Cmd::Psubscribe => Some((args.get(1..).unwrap_or_default(), true)),
        _ => None,
    };
    if let Some((channels, patterns)) = channels
        && let Some(index) = user.denied_channel(channels.iter().copied(), patterns)
    {
        return Err(Denied::Channel(index));
    }
    Ok(())
}

/// The dispatcher's ACL check of a client command; the connection's user is
/// looked up again first when the users changed.
fn check_client_acl(
    shared: &Shared,
    client: &mut ClientState,
    position: usize,
    spec: &Spec,
    args: &[&[u8]],
) -> Result<(), CommandError> {
    if !shared.acl.refresh(&mut client.login) {
        // the user was deleted (ACL DELUSER / LOAD closes its connections too)
        client.close_after_reply = true;
        return Err(CommandError::NoAuth);
    }
    let catalog = shared.acl.catalog();
    acl_check(catalog, &client.login.user, position, spec, args).map_err(|denied| match denied {
        Denied::Command => CommandError::NoPermCommand(
            acl_unit(catalog, position, args)
                .map_or(spec.name, |unit| catalog.name(unit))
                .to_string(),
        ),
        Denied::Key(_) => CommandError::NoPermKey,
        Denied::Channel(_) => CommandError::NoPermChannel,
    })
}

fn index() -> &'static HashMap<&'static [u8], usize, foldhash::fast::RandomState> {
    static INDEX: OnceLock<HashMap<&'static [u8], usize, foldhash::fast::RandomState>> =
        OnceLock::new();
    INDEX.get_or_init(|| {
        COMMANDS
            .iter()
            .enumerate()
            .map(|(position, spec)| (spec.name.as_bytes(), position))
            .collect()
    })
}

/// The typed id of a command name, if the table has it.
pub fn command_id(name: &[u8]) -> Option<Cmd> {
    lookup(name).map(|position| COMMANDS[position].id)
}

/// Where the keys of the command at `position` in [`COMMANDS`], sent with `argc`
/// arguments (`arg(index)`), are, for commands whose keys sit at fixed positions, and
/// for scripts (EVAL, EVALSHA, FCALL: `numkeys` of them after the script): what the
/// prefetch of a pipeline or of a multi-key command (MGET, MSET, DEL) loads.
/// `(first, last, step)`, `last` included and below `argc`.
pub fn key_positions<'a>(
    position: usize,
    argc: usize,
    arg: impl Fn(usize) -> &'a [u8],
) -> Option<(usize, usize, usize)> {
    let spec = COMMANDS.get(position)?;
    if runs_script(spec.id) && argc > 3 {
        let keys = numkeys_range(arg(2), 2, 0, argc)?;
        return Some((keys.start, keys.end - 1, 1));
    }
    let first = usize::try_from(spec.first_key).ok()?;
    if spec.movable_keys.is_some() || first == 0 || first >= argc {
        return None;
    }
    let last = if spec.last_key < 0 {
        argc.checked_sub(spec.last_key.unsigned_abs() as usize)?
    } else {
        usize::try_from(spec.last_key).ok()?.min(argc - 1)
    };
    Some((first, last, usize::try_from(spec.step).unwrap_or(1).max(1)))
}

/// A connection's last command name as it sent it and its position in [`COMMANDS`]:
/// a pipeline repeats its command (a client its few), and comparing the bytes costs
/// less than lowercasing, hashing and probing the table for each one.
#[derive(Debug, Default)]
pub struct LastCommand {
    name: [u8; 24],
    /// 0: none yet (or a name too long to keep).
    len: usize,
    position: usize,
}

impl LastCommand {
    /// [`lookup`], answered from the memo when `name` is the last one, byte for byte.
    pub fn lookup(&mut self, name: &[u8]) -> Option<usize> {
        if self.len != 0 && self.name.get(..self.len) == Some(name) {
            return Some(self.position);
        }
        let position = lookup(name)?;
        if let Some(kept) = self.name.get_mut(..name.len()) {
            kept.copy_from_slice(name);
            self.len = name.len();
            self.position = position;
        }
        Some(position)
    }
}

/// Finds a command by (case-insensitive) name.
pub fn lookup(name: &[u8]) -> Option<usize> {
    let mut lower = [0u8; 32];
    if name.len() > lower.len() {
        return None;
    }
    for (target, byte) in lower.iter_mut().zip(name) {
        *target = byte.to_ascii_lowercase();
    }
    index().get(&lower[..name.len()]).copied()
}

/// Per-connection state the commands read and change.
pub struct ClientState {
    pub handle: Arc<ClientHandle>,
    /// The command name this client sent last and where the table has it.
    pub last_command: LastCommand,
    /// The ACL user and whether it is logged in.
    pub login: Login,
    /// The client presented a TLS client certificate that ca.crt verified (a node of
    /// the cluster, when the node requires peer certificates for replication).
    pub peer_certified: bool,
    pub multi: Option<Vec<Vec<Vec<u8>>>>,
    pub multi_failed: bool,
    pub watch_flag: WatchFlag,
    pub watched: Vec<Vec<u8>>,
    pub channels: BTreeSet<Vec<u8>>,
    pub patterns: BTreeSet<Vec<u8>>,
    pub close_after_reply: bool,
    /// READONLY was sent: a replica serves this connection's reads itself.
    pub readonly: bool,
    /// This is a replica's link applying its primary's stream.
    pub primary_link: bool,
    /// Effects of the running EXEC, propagated as one MULTI/EXEC block.
    pub txn_repl: Option<Vec<u8>>,
    /// EXEC is running the queued commands (a blocking command then may not block).
    pub running_exec: bool,
    /// The command replicas run instead of the one just executed, when that one chose
    /// something they must not choose again (SPOP's random members: SREM of them).
    pub effects: Option<Vec<Vec<u8>>>,
    /// Work the connection must finish outside the synchronous dispatcher.
    pub pending: Option<Pending>,
    /// REPLCONF listening-port of a replica connecting here.
    pub listening_port: u16,
    /// ASKING was sent: the next command may reach a slot being imported.
    pub asking: bool,
    /// The script running now was sent after ASKING (see `scripting::script_call`).
    pub script_asking: bool,
}

/// Something a command asked the connection to do asynchronously.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    /// WAIT: reply with the number of replicas that acked `offset`.
    Wait {
        replicas: usize,
        offset: u64,
        timeout_ms: u64,
    },
    /// PSYNC/SYNC: this connection becomes a replica's stream.
    Replica { replid: String, offset: Option<u64> },
    /// Origin read-through / write-through (see `crate::origin`).
    Origin(crate::origin::OriginOp),
    /// Strong consistency: the reply is sent once the peer regions acknowledged.
    Regions(crate::region::RegionWait),
    /// MIGRATE / MERIDIAN.MIGRATE SLOT: the transfer to the destination.
    Migrate(migrate::MigrateJob),
    /// ACL LOAD: the ACL file is read off the dispatcher, then the reply is sent.
    AclLoad,
    /// A blocking list command found nothing to take: the connection waits.
    Block(Block),
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A blocked client's wait (see `crate::blocking`): until a write to one of `keys`
/// lets `args` run again and take something, or until `timeout` (None: forever).
pub struct Block {
    pub args: Vec<Vec<u8>>,
    pub keys: Vec<Vec<u8>>,
    /// The answer then is a null array, whatever the command (as Redis 7.0 answers).
    pub timeout: Option<std::time::Duration>,
}

impl ClientState {
    pub fn new(handle: Arc<ClientHandle>, login: Login) -> Self {
        ClientState {
            handle,
            last_command: LastCommand::default(),
            login,
            peer_certified: false,
            multi: None,
            multi_failed: false,
            watch_flag: Arc::new(AtomicBool::new(false)),
            watched: Vec::new(),
            channels: BTreeSet::new(),
            patterns: BTreeSet::new(),
            close_after_reply: false,
            readonly: false,
            primary_link: false,
            txn_repl: None,
            running_exec: false,
            effects: None,
            pending: None,
            listening_port: 0,
            asking: false,
            script_asking: false,
        }
    }

    pub fn subscription_count(&self) -> usize {
        self.channels.len() + self.patterns.len()
    }
}

/// Everything a command handler works with.
pub struct Ctx<'a, 'h> {
    pub args: &'h [&'h [u8]],
    pub out: &'h mut Out,
    pub keys: Access<'a, 'h>,
    pub shared: &'a Shared,
    /// Who runs the command.
    pub exec: ExecContext,
    pub client: &'h mut ClientState,
    pub now: u64,
    /// Set by GET when the key is absent: read-through acts on this typed result,
    /// never on the reply's bytes.
    pub missed: bool,
}

impl Ctx<'_, '_> {
    pub fn arg(&self, index: usize) -> &[u8] {
        self.args.get(index).copied().unwrap_or_default()
    }

    pub fn int_arg(&self, index: usize) -> Result<i64, CommandError> {
        parse_int(self.arg(index))
    }

    pub fn wrong_arity(&self) -> CommandError {
        CommandError::WrongArity(String::from_utf8_lossy(self.arg(0)).to_ascii_lowercase())
    }
}

impl Ctx<'_, '_> {
    /// Publishes keyspace event `event` of `class` about `key` (Redis's
    /// notifyKeyspaceEvent), e.g. `ctx.notify(NotifyClass::Zset, "zadd", key)`.
    /// Call it after the change, in Redis's order; off, it costs one relaxed load.
    #[inline]
    pub fn notify(&self, class: crate::notify::NotifyClass, event: &'static str, key: &[u8]) {
        self.shared.keyspace_events.notify(class, event, key);
    }
}

/// A HELP subcommand's reply: its lines as simple strings, like Redis.
pub fn help(out: &mut Out, lines: &[&str]) {
    out.array(lines.len());
    for line in lines {
        out.simple(line);
    }
}

/// Picks indexes below a bound, for the commands that choose at random (HRANDFIELD,
/// SPOP, SRANDMEMBER): xorshift seeded per call; not for anything secret.
pub fn random_picker(ctx: &Ctx<'_, '_>) -> impl FnMut(usize) -> usize + use<> {
    let mut seed = ctx.now ^ (ctx.client.handle.id << 32) ^ u64::from(std::process::id()) | 1;
    move |bound: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % bound.max(1) as u64) as usize
    }
}

/// Reads the collection of type `T` at `key`: Ok(None) when missing, WRONGTYPE when
/// the key holds another type.
pub fn read_collection<'s, T: KeyCollection>(
    shard: &'s mut Shard,
    key: &[u8],
    now: u64,
) -> Result<Option<&'s T>, CommandError> {
    match shard.read(key, now) {
        None => Ok(None),
        Some(index) => T::of(shard.entry(index).value())
            .map(Some)
            .ok_or(CommandError::WrongType),
    }
}

/// Runs `change` on the collection of type `T` at `key`, creating it when missing (with
/// `create`); deletes the key when the collection ends up empty. Ok(None): no such key.
pub fn write_collection<T: KeyCollection, R>(
    shard: &mut Shard,
    key: &[u8],
    slot: u16,
    now: u64,
    create: bool,
    change: impl FnOnce(&mut T) -> Result<R, CommandError>,
) -> Result<Option<R>, CommandError> {
    let index = match shard.find(key, now) {
        Some(index) => {
            if T::of(shard.entry(index).value()).is_none() {
                return Err(CommandError::WrongType);
            }
            index
        }
        None if create => shard.insert(key, slot, T::default().into_value(), 0),
        None => return Ok(None),
    };
    let result = shard.modify(index, |value| match T::of_mut(value) {
        Some(collection) => change(collection),
        None => Err(CommandError::WrongType),
    });
    if T::of(shard.entry(index).value()).is_some_and(KeyCollection::is_empty) {
        shard.remove(index);
    }
    result.map(Some)
}

/// Runs `f` on the collection of type `T` at the command's key (`None`: missing).
pub fn query_collection<T: KeyCollection, R>(
    ctx: &mut Ctx<'_, '_>,
    f: impl FnOnce(Option<&T>, &mut Out) -> R,
) -> Result<R, CommandError> {
    let (key, now, out) = (ctx.args[1], ctx.now, &mut *ctx.out);
    ctx.keys.with_key(key, |shard, _| {
        Ok(f(read_collection(shard, key, now)?, out))
    })
}

/// A count that must not be negative, refused with `message` when it is or when it is
/// not a number (as Redis words both: "value is out of range, must be positive", "COUNT
/// can't be negative", ...).
pub fn positive_count(text: &[u8], message: &'static str) -> Result<usize, CommandError> {
    match parse_int(text) {
        Ok(count) if count >= 0 => Ok(count as usize),
        _ => Err(CommandError::other(message)),
    }
}

/// The keys of a command that names how many follow (`numkeys` at `numkeys_at`, the
/// keys right after it), with `after` arguments required behind them (LMPOP's
/// LEFT|RIGHT); none when the count is not a number that fits.
pub fn keys_after_numkeys<'x>(args: &[&'x [u8]], numkeys_at: usize, after: usize) -> Vec<&'x [u8]> {
    args.get(numkeys_at)
        .and_then(|numkeys| numkeys_range(numkeys, numkeys_at, after, args.len()))
        .map_or_else(Vec::new, |keys| args[keys].to_vec())
}

/// The argument positions of the keys that `numkeys` (the argument at `numkeys_at`)
/// announces, when it is a positive number and they, and `after` more arguments,
/// fit in `argc`.
fn numkeys_range(
    numkeys: &[u8],
    numkeys_at: usize,
    after: usize,
    argc: usize,
) -> Option<std::ops::Range<usize>> {
    let count = usize::try_from(parse_int(numkeys).ok()?).ok()?;
    let first = numkeys_at + 1;
    let end = first.saturating_add(count);
    (count > 0 && end.saturating_add(after) <= argc).then_some(first..end)
}

/// Most members a negative count (repeats allowed) of HRANDFIELD or SRANDMEMBER may ask
/// for: the reply is built whole before it is sent, and Redis's own bound (half of
/// i64) would let one request exhaust the node's memory.
pub const MAX_REPEATED_PICKS: u64 = 1 << 24;

/// The indexes of a random pick of `count` among `len` (negative: that many with
/// repeats, at most [`MAX_REPEATED_PICKS`], checked by the caller; else distinct, at most
/// `len`), and how many there are.
pub fn random_picks<'r>(
    count: i64,
    len: usize,
    mut random: impl FnMut(usize) -> usize + 'r,
) -> (usize, Box<dyn Iterator<Item = usize> + 'r>) {
    if count < 0 {
        let total = count.unsigned_abs().min(MAX_REPEATED_PICKS) as usize;
        return (total, Box::new((0..total).map(move |_| random(len))));
    }
    let wanted = usize::try_from(count).unwrap_or(usize::MAX).min(len);
    // partial Fisher-Yates over the index range
    let mut indexes: Vec<usize> = (0..len).collect();
    for position in 0..wanted {
        let other = position + random(len - position);
        indexes.swap(position, other);
    }
    indexes.truncate(wanted);
    (wanted, Box::new(indexes.into_iter()))
}

pub fn parse_int(text: &[u8]) -> Result<i64, CommandError> {
    parse_i64(text).ok_or(CommandError::NotInteger)
}

/// Parses a float like Redis's strtold-based parsing: rejects NaN, spaces and empty.
pub fn parse_float(text: &[u8]) -> Result<f64, CommandError> {
    let text = std::str::from_utf8(text).map_err(|_| CommandError::NotFloat)?;
    if text.is_empty()
        || text.starts_with(char::is_whitespace)
        || text.ends_with(char::is_whitespace)
    {
        return Err(CommandError::NotFloat);
    }
    let lower = text.to_ascii_lowercase();
    let value = match lower.as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => text.parse::<f64>().map_err(|_| CommandError::NotFloat)?,
    };
    if value.is_nan() {
        return Err(CommandError::NotFloat);
    }
    Ok(value)
}

fn unknown_command(args: &[&[u8]]) -> CommandError {
    let name = String::from_utf8_lossy(args.first().copied().unwrap_or_default()).into_owned();
    let mut text = format!(
        "ERR unknown command '{}', with args beginning with: ",
        truncate(&name, 128)
    );
    for arg in args.iter().skip(1) {
        text.push_str(&format!(
            "'{}' ",
            truncate(&String::from_utf8_lossy(arg), 128)
        ));
        if text.len() > 512 {
            break;
        }
    }
    CommandError::Other(text)
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// Commands that run a script or function, whose calls ASKING covers too.
pub(crate) fn runs_script(id: Cmd) -> bool {
    matches!(
        id,
        Cmd::Eval | Cmd::Evalsha | Cmd::EvalRo | Cmd::EvalshaRo | Cmd::Fcall | Cmd::FcallRo
    )
}

/// Commands that change the dataset or feed the replication stream without
/// the WRITE flag (Redis's may-replicate commands).
fn may_replicate_unflagged(id: Cmd) -> bool {
    matches!(
        id,
        Cmd::Publish
            | Cmd::Migrate
            | Cmd::MeridianMigrate
            | Cmd::Invalidate
            | Cmd::Eval
            | Cmd::Evalsha
            | Cmd::Fcall
            | Cmd::Function
    )
}

/// True when the command may change the dataset or replicate: WRITE, the
/// may-replicate commands, and EXEC of a transaction that queued one.
pub fn may_replicate(client: &ClientState, args: &[&[u8]]) -> bool {
    let Some(spec) = args
        .first()
        .and_then(|name| lookup(name))
        .map(|at| &COMMANDS[at])
    else {
        return false;
    };
    if spec.has(WRITE) || may_replicate_unflagged(spec.id) {
        return true;
    }
    spec.id == Cmd::Exec
        && client.multi.as_ref().is_some_and(|queued| {
            queued.iter().any(|command| {
                let args: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
                may_replicate(client, &args)
            })
        })
}

/// Whether CLIENT PAUSE in `mode` holds this command back (Redis's
/// processCommand check; the caller waits before routing and dispatch, so a
/// released command is routed against the topology of that moment).
/// Under ALL, commands that end or extend the pause and the control plane's
/// admin commands (replication handshake, topology pushes) still run.
pub fn paused_by(mode: PauseMode, client: &ClientState, args: &[&[u8]]) -> bool {
    if client.primary_link {
        return false;
    }
    let Some(spec) = args
        .first()
        .and_then(|name| lookup(name))
        .map(|at| &COMMANDS[at])
    else {
        // unknown commands are refused without touching anything
        return false;
    };
    let writes = may_replicate(client, args);
    match mode {
        PauseMode::Write => writes,
        PauseMode::All => {
            let pause_control = spec.id == Cmd::Client
                && args.get(1).is_some_and(|sub| {
                    sub.eq_ignore_ascii_case(b"pause") || sub.eq_ignore_ascii_case(b"unpause")
                });
            !(pause_control || (spec.has(ADMIN) && !writes))
        }
    }
}

/// Runs one command for `exec`'s caller, writing its reply (or error) to `out`.
pub fn dispatch<'a, 'h>(
    shared: &'a Shared,
    exec: ExecContext,
    client: &'h mut ClientState,
    out: &'h mut Out,
    args: &'h [&'h [u8]],
    keys: Access<'a, 'h>,
) {
    let Some(&name) = args.first() else { return };
    let Some(position) = lookup(name) else {
        if client.multi.is_some() {
            client.multi_failed = true;
        }
        out.error(&unknown_command(args).to_string());
        return;
    };
    dispatch_at(shared, exec, client, out, args, keys, position);
}

/// [`dispatch`] of a command its caller looked up already: `position` in [`COMMANDS`]
/// (a script's `redis.call`, checked against the table before it runs).
pub fn dispatch_at<'a, 'h>(
    shared: &'a Shared,
    exec: ExecContext,
    client: &'h mut ClientState,
    out: &'h mut Out,
    args: &'h [&'h [u8]],
    keys: Access<'a, 'h>,
    position: usize,
) {
    let keys = keys.held_by(exec.holder());
    let spec = &COMMANDS[position];
    // ASKING covers exactly one following command, or (like Redis) a whole
    // MULTI ... EXEC/DISCARD block when MULTI follows it
    let asking = spec.id != Cmd::Asking && client.asking;
    // (EXEC reads and clears it itself: its routing check runs in the handler)
    let in_block = (client.multi.is_some() || spec.id == Cmd::Multi) && spec.id != Cmd::Discard;
    if spec.id != Cmd::Asking && !in_block {
        client.asking = false;
    }
    // a script's calls are covered by the ASKING before it
    client.script_asking = asking && runs_script(spec.id);
    if (spec.arity > 0 && args.len() as i32 != spec.arity)
        || (spec.arity < 0 && (args.len() as i32) < -spec.arity)
    {
        if client.multi.is_some() {
            client.multi_failed = true;
        }
        out.error(&CommandError::WrongArity(spec.name.to_string()).to_string());
        return;
    }
    let is_client = matches!(exec.caller, Caller::Client { .. });
    if is_client && !client.login.authenticated && !spec.has(NOAUTH) {
        // Redis's authRequired: a default user without password logs everyone in
        let default = shared.acl.login_default();
        if !default.authenticated {
            if client.multi.is_some() {
                client.multi_failed = true;
            }
            out.error(&CommandError::NoAuth.to_string());
            return;
        }
        client.login = default;
    }
    // internal callers (replication stream, HTTP, region events) are not clients;
    // an unrestricted user (the default one) costs a generation load and a flag test
    if is_client
        && client.login.authenticated
        && let Err(error) = check_client_acl(shared, client, position, spec, args)
    {
        if client.multi.is_some() {
            client.multi_failed = true;
        }
        out.error(&error.to_string());
        return;
    }
    if !out.is_resp3() && client.subscription_count() > 0 && !spec.has(PUBSUB) {
        out.error(&format!(
            "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context",
            spec.name
        ));
        return;
    }
    let primary_link = client.primary_link;
    // Inside EXEC (held locks) the whole transaction was routed already.
    let direct = keys.is_direct();
    let mut in_transit = None;
    if direct && !primary_link {
        let asking = asking || spec.id == Cmd::RestoreAsking;
        match cluster::check_command(shared, client.readonly, asking, spec, args) {
            Ok(transit) => in_transit = transit,
            Err(error) => {
                if client.multi.is_some() {
                    client.multi_failed = true;
                }
                out.error(&error.to_string());
                return;
            }
        }
    }
    // like Redis: cluster redirects first, then the replica / min-replicas refusals
    if spec.has(WRITE)
        && !primary_link
        && let Err(error) = replication::check_write(shared)
    {
        if client.multi.is_some() {
            client.multi_failed = true;
        }
        out.error(&error.to_string());
        return;
    }
    if client.multi.is_some() && !spec.has(NOQUEUE) {
        // A slot in transit is decided at EXEC for the whole transaction
        // (-ASK / -TRYAGAIN as the EXEC reply): cluster clients such as the
        // redis crate retry a transaction on those, but not on EXECABORT.
        if spec.has(DENYOOM) && !primary_link && shared.db.make_room().is_err() {
            client.multi_failed = true;
            out.error(&CommandError::OutOfMemory.to_string());
            return;
        }
        if let Some(queue) = client.multi.as_mut() {
            queue.push(args.iter().map(|arg| arg.to_vec()).collect());
        }
        out.simple("QUEUED");
        return;
    }
    // Inside EXEC the shard locks are held and eviction (which locks shards)
    // already ran before they were taken.
    if direct && !primary_link && spec.has(DENYOOM) && shared.db.make_room().is_err() {
        out.error(&CommandError::OutOfMemory.to_string());
        return;
    }
    // write-through: the origin is written first, then the command runs
    if direct
        && !primary_link
        && shared.origin.is_some()
        && spec.has(WRITE)
        && let Some(op) =
            crate::origin::intercept_write(shared.origin.as_deref(), exec, spec.id, args)
    {
        client.pending = Some(Pending::Origin(op));
        return;
    }
    shared.command_calls.add(client.handle.id, position);
    client
        .handle
        .last_command
        .store(position, Ordering::Relaxed);
    let now = crate::store::now_ms();
    // CLIENT TRACKING: remember the keys before reading them, so a concurrent
    // write can only cause a spurious invalidation, never a missed one
    if spec.has(READONLY) && shared.tracking.is_active() {
        shared
            .tracking
            .remember(client.handle.id, spec.keys(args), exec.writing_client());
    }
    let mut ctx = Ctx {
        args,
        out,
        keys,
        shared,
        exec,
        client,
        now,
        missed: false,
    };
    if let Some(transit) = in_transit {
        run_in_transit(spec, &transit, ctx);
        return;
    }
    if !spec.has(WRITE) || primary_link {
        let reply_start = ctx.out.mark();
        if let Err(error) = (spec.handler)(&mut ctx) {
            ctx.out.error(&error.to_string());
        } else if direct && !primary_link && (spec.id == Cmd::Exec || runs_script(spec.id)) {
            // a transaction's or a script's writes: see evict_overshoot
            evict_overshoot(&shared.db);
        } else if direct
            && !primary_link
            && ctx.missed
            && let Some(op) =
                crate::origin::intercept_miss(shared.origin.as_deref(), exec, spec.id, args)
        {
            // read-through: the nil is taken back, the miss is answered once the origin replied
            ctx.out.truncate(reply_start);
            ctx.client.pending = Some(Pending::Origin(op));
        }
        return;
    }
    if !direct {
        // inside EXEC: the transaction's locks are held, effects go to its block
        run_write(spec, ctx);
        return;
    }
    let Ctx { out, client, .. } = ctx;
    // A write keeps the shard locks it needs until its effects are in the
    // replication log, so the stream has the execution order of every key.
    let db = &shared.db;
    let shard_of = |key: &[u8]| db.shard_of_slot(meridian_topology::key_slot(key));
    // the common single-key write needs no key vector
    let only_key = spec.only_key(args);
    let keys_of = match only_key {
        Some(_) => Vec::new(),
        None => spec.keys(args),
    };
    let single = match only_key {
        Some(key) => Some(shard_of(key)),
        None => keys_of.first().map(|&key| shard_of(key)).filter(|&first| {
            !spec.has(ALLSHARDS) && keys_of.iter().all(|&key| shard_of(key) == first)
        }),
    };
    // under the shard locks: MIGRATE marks a key in flight under them too
    let write_keys: &[&[u8]] = match &only_key {
        Some(key) => std::slice::from_ref(key),
        None => &keys_of,
    };
    let refused = || cluster::in_flight_refusal(shared, true, false, write_keys);
    match single {
        Some(index) => {
            let mut guard = db.lock(index);
            if let Some(refusal) = refused() {
                out.error(&refusal.to_string());
                return;
            }
            run_write(
                spec,
                Ctx {
                    args,
                    out,
                    keys: Access::one(db, index, &mut guard, exec.holder()),
                    shared,
                    exec,
                    client,
                    now,
                    missed: false,
                },
            );
        }
        None => {
            let mut held = if keys_of.is_empty() {
                db.lock_all()
            } else {
                let mut wanted = vec![false; db.shard_count()];
                for &key in &keys_of {
                    wanted[shard_of(key)] = true;
                }
                db.lock_many(&wanted)
            };
            if let Some(refusal) = refused() {
                drop(held);
                out.error(&refusal.to_string());
                return;
            }
            run_write(
                spec,
                Ctx {
                    args,
                    out,
                    keys: Access::held(db, &mut held, exec.holder()),
                    shared,
                    exec,
                    client,
                    now,
                    missed: false,
                },
            );
        }
    }
    if spec.has(DENYOOM) {
        evict_overshoot(db);
    }
}

/// Eviction runs before each write (as in Redis), so one write that grows memory by
/// much more than an entry (a large value, a sorted set whose tables double) left
/// used_memory over maxmemory until the next write came; evicting once more after it,
/// before its reply, keeps the limit between commands. Takes no shard lock: the
/// write's locks are released.
fn evict_overshoot(db: &Db) {
    if db.over_limit() {
        // noeviction (or nothing evictable) refuses the next write instead
        let _ = db.make_room();
    }
}

/// How many of the distinct `keys` exist and how many do not, looked up
/// under `held` (which must hold their shards).
pub fn key_presence(db: &Db, held: &mut Held<'_>, keys: &[&[u8]], now: u64) -> (usize, usize) {
    let (mut present, mut missing) = (0, 0);
    // Redis counts "multiple keys" only when they differ
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    for &key in keys {
        if !seen.insert(key) {
            continue;
        }
        let index = db.shard_of_slot(meridian_topology::key_slot(key));
        let found = held
            .shard(index)
            .is_some_and(|shard| shard.find(key, now).is_some());
        if found {
            present += 1;
        } else {
            missing += 1;
        }
    }
    (present, missing)
}

/// Runs a command whose slot is migrating or importing: key presence is
/// checked and the command executed under the same shard locks (`ctx`'s own
/// per-access locking is replaced by them).
fn run_in_transit(spec: &Spec, transit: &cluster::InTransit, ctx: Ctx<'_, '_>) {
    let Ctx {
        args,
        out,
        shared,
        exec,
        client,
        now,
        ..
    } = ctx;
    let db = &shared.db;
    let keys_of = spec.keys(args);
    let mut wanted = vec![false; db.shard_count()];
    for &key in &keys_of {
        wanted[db.shard_of_slot(meridian_topology::key_slot(key))] = true;
    }
    // a script may reach keys it did not declare
    let mut held = if runs_script(spec.id) {
        db.lock_growing(&wanted)
    } else {
        db.lock_many(&wanted)
    };
    let (present, missing) = key_presence(db, &mut held, &keys_of, now);
    if let Some(refusal) = cluster::in_flight_refusal(
        shared,
        spec.has(WRITE) && !client.primary_link,
        transit.redirects(missing),
        &keys_of,
    )
    .or_else(|| transit.refusal(present, missing))
    {
        out.error(&refusal.to_string());
        return;
    }
    let mut ctx = Ctx {
        args,
        out,
        keys: Access::held(db, &mut held, exec.holder()),
        shared,
        exec,
        client,
        now,
        missed: false,
    };
    if spec.has(WRITE) {
        run_write(spec, ctx);
    } else if let Err(error) = (spec.handler)(&mut ctx) {
        ctx.out.error(&error.to_string());
    }
}

/// Runs a write and appends its effects to the replication log (or to the
/// running transaction's block) before the caller releases the shard locks.
fn run_write(spec: &Spec, mut ctx: Ctx<'_, '_>) {
    let reply_start = ctx.out.mark();
    // origin fills and remote region events older than a known version are refused
    let regions = &ctx.shared.regions;
    if let Err(refusal) = regions.admit(ctx.exec, || spec.keys(ctx.args)) {
        ctx.out.error(refusal);
        return;
    }
    // write-behind: refused before the cache changes when the queue is full (inside
    // MULTI/EXEC and scripts, like write-through, writes are not sent to the origin)
    let behind =
        crate::origin::write_behind_key(ctx.shared.origin.as_deref(), ctx.exec, spec.id, ctx.args)
            .filter(|_| !ctx.client.running_exec);
    if let Some((queue, key)) = behind
        && let Err(full) = queue.admit(key)
    {
        ctx.out.error(&full.to_string());
        return;
    }
    if crate::origin::fill_is_stale(ctx.shared.origin.as_deref(), ctx.exec, ctx.args) {
        ctx.out.error(&CommandError::StaleOriginFill.to_string());
        return;
    }
    // a handler reports failure by its result (handlers never write error replies
    // themselves): a failed write has no effects to propagate
    if let Err(error) = (spec.handler)(&mut ctx) {
        ctx.out.error(&error.to_string());
        return;
    }
    // a blocking command that found nothing changed nothing (yet)
    if matches!(ctx.client.pending, Some(Pending::Block(_))) {
        return;
    }
    // queued under the write's shard lock, so the queue, the store and the
    // replication stream agree on the order of a key's writes
    let queued = behind.map(|(queue, key)| {
        let op = pending_op(&mut ctx.keys, key, ctx.now);
        let version = queue.enqueue(key, op.clone(), std::time::Instant::now());
        crate::origin::write_behind::PendingWrite {
            key: key.to_vec(),
            version,
            op,
        }
    });
    let blocking = &ctx.shared.blocking;
    if blocking.is_active() {
        blocking.touched(&spec.keys(ctx.args));
    }
    let log = &ctx.shared.repl.log;
    let chosen = ctx.client.effects.take();
    if log.is_active() {
        let mut effects = Vec::new();
        match chosen {
            Some(command) => {
                let command: Vec<&[u8]> = command.iter().map(Vec::as_slice).collect();
                replication::encode_command(&mut effects, &command);
            }
            None => replication::encode_effects(spec, ctx.args, &mut ctx.keys, &mut effects),
        }
        // replicas queue it too (after its effects), so a promoted one flushes it
        if let Some(write) = &queued {
            crate::origin::encode_queued(&mut effects, write);
        }
        transactions::propagate(ctx.client, log, &effects);
    }
    // still under the write's locks: the event version orders it like the store did
    // slot migration (RESTORE-ASKING) moves existing data inside the region:
    // nothing new to tell; a client's RESTORE is a new value like a SET
    let migrated = spec.id == Cmd::RestoreAsking;
    if spec.has(WRITE)
        && !migrated
        && regions.is_active()
        && let Some(ack) = regions.originate(
            ctx.exec,
            &spec.keys(ctx.args),
            spec.has(ALLSHARDS),
            &mut ctx.keys,
        )
        && ctx.client.txn_repl.is_none()
        && ctx.client.pending.is_none()
        // a command inside EXEC or a script answers inside that reply: it cannot wait
        && !ctx.client.running_exec
    {
        // strong consistency: the reply waits for the peer regions
        let reply = ctx.out.take_since(reply_start);
        ctx.client.pending = Some(Pending::Regions(crate::region::RegionWait::peers(
            ack, reply,
        )));
    }
}

/// What the origin must be told after a write-behind write: the key's state once
/// the write ran (SET NX that did not set queues the value the key has).
fn pending_op(
    keys: &mut Access<'_, '_>,
    key: &[u8],
    now: u64,
) -> crate::origin::write_behind::PendingOp {
    use crate::origin::write_behind::PendingOp;
    keys.with_key(key, |shard, _| match shard.find(key, now) {
        Some(index) => match shard.entry(index).value() {
            crate::store::ValueRef::Str(bytes) => {
                PendingOp::Put(bytes::Bytes::copy_from_slice(bytes))
            }
            _ => PendingOp::Delete,
        },
        None => PendingOp::Delete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memo answers what the table answers, for any case and for names it cannot
    /// keep, and a name sent in another case is looked up again, not mistaken.
    #[test]
    fn the_last_command_memo_answers_as_the_table_does() {
        let mut last = LastCommand::default();
        let long = "x".repeat(40);
        for name in [
            "GET", "GET", "get", "set", "SET", "nosuch", "GET", "zpopmin", "ZPOPMIN", &long, "get",
            "", "Get",
        ] {
            let found = last.lookup(name.as_bytes());
            assert_eq!(found, lookup(name.as_bytes()), "{name}");
            if let Some(position) = found {
                assert!(COMMANDS[position].name.eq_ignore_ascii_case(name));
            }
        }
    }

    #[test]
    fn key_positions_follow_the_key_specs() {
        let keys = |args: &[&str]| {
            let position = args.first().and_then(|name| lookup(name.as_bytes()))?;
            super::key_positions(position, args.len(), |index| args[index].as_bytes())
                .map(|(first, last, step)| (first..=last).step_by(step).collect::<Vec<_>>())
        };
        // GET k; SET k v EX 10: one key
        assert_eq!(keys(&["get", "k"]), Some(vec![1]));
        assert_eq!(keys(&["SET", "k", "v", "EX", "10"]), Some(vec![1]));
        // MSET k1 v1 k2 v2: every other argument; MGET and DEL: all of them
        assert_eq!(keys(&["mset", "a", "1", "b", "2"]), Some(vec![1, 3]));
        assert_eq!(keys(&["MGET", "a", "b", "c"]), Some(vec![1, 2, 3]));
        assert_eq!(keys(&["del", "a", "b"]), Some(vec![1, 2]));
        // too few arguments to hold a key: nothing (arity is checked later)
        assert_eq!(keys(&["get"]), None);
        assert_eq!(keys(&["mset"]), None);
        assert_eq!(keys(&[]), None);
        // a script's numkeys keys, none when numkeys is not a count its arguments hold
        assert_eq!(keys(&["evalsha", "sha", "1", "k", "arg"]), Some(vec![3]));
        assert_eq!(
            keys(&["EVAL", "src", "2", "a", "b", "arg"]),
            Some(vec![3, 4])
        );
        assert_eq!(keys(&["fcall_ro", "f", "2", "a", "b"]), Some(vec![3, 4]));
        assert_eq!(keys(&["eval", "src", "0", "arg"]), None);
        assert_eq!(keys(&["eval", "src", "3", "a", "b"]), None);
        assert_eq!(keys(&["eval", "src", "-1", "a"]), None);
        assert_eq!(keys(&["eval", "src", "x", "a"]), None);
        assert_eq!(keys(&["eval", "src", "1"]), None);
        // keys found by parsing other commands, no keys, unknown commands
        assert_eq!(keys(&["zunion", "2", "a", "b"]), None);
        assert_eq!(keys(&["ping"]), None);
        assert_eq!(keys(&["nosuchcommand", "a", "b"]), None);
    }

    #[test]
    fn table_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for spec in COMMANDS {
            assert!(names.insert(spec.name), "duplicate {}", spec.name);
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            assert!(spec.name.len() <= 32);
            assert!(lookup(spec.name.as_bytes()).is_some());
            assert_eq!(
                lookup(spec.name.to_ascii_uppercase().as_bytes()),
                lookup(spec.name.as_bytes())
            );
        }
        assert_eq!(
            lookup(b"GeT").map(|position| COMMANDS[position].name),
            Some("get")
        );
        assert_eq!(lookup(b"nope"), None);
    }

    #[test]
    fn every_command_has_its_own_id() {
        let ids: std::collections::HashSet<Cmd> = COMMANDS.iter().map(|spec| spec.id).collect();
        assert_eq!(ids.len(), COMMANDS.len());
        let get = &COMMANDS[lookup(b"GET").unwrap_or_default()];
        assert_eq!(get.id, Cmd::Get);
    }

    #[test]
    fn movable_keys_come_from_the_finder() {
        let lmpop = &COMMANDS[lookup(b"lmpop").unwrap_or_default()];
        let args: Vec<&[u8]> = vec![b"lmpop", b"2", b"a", b"b", b"LEFT", b"COUNT", b"3"];
        assert_eq!(lmpop.keys(&args), vec![&b"a"[..], b"b"]);
        assert!(lmpop.takes_keys() && lmpop.flag_names().contains(&"movablekeys"));
    }

    #[test]
    fn key_positions() {
        let mset = &COMMANDS[lookup(b"mset").unwrap_or_default()];
        let args: Vec<&[u8]> = vec![b"mset", b"a", b"1", b"b", b"2"];
        assert_eq!(mset.keys(&args), vec![&b"a"[..], b"b"]);
        let del = &COMMANDS[lookup(b"del").unwrap_or_default()];
        let args: Vec<&[u8]> = vec![b"del", b"a", b"b", b"c"];
        assert_eq!(del.keys(&args).len(), 3);
    }

    #[test]
    fn pause_holds_writes_or_everything_but_its_controls() {
        let (events, _) = tokio::sync::mpsc::unbounded_channel();
        let handle = Arc::new(ClientHandle::new(1, String::new(), String::new(), events));
        let mut client = ClientState::new(handle, Login::internal());
        let held = |client: &ClientState, mode, args: &[&[u8]]| paused_by(mode, client, args);
        use PauseMode::{All, Write};
        assert!(held(&client, Write, &[b"SET", b"k", b"v"]));
        assert!(held(&client, Write, &[b"publish", b"c", b"m"]));
        assert!(held(
            &client,
            Write,
            &[b"MIGRATE", b"h", b"1", b"k", b"0", b"1"]
        ));
        assert!(!held(&client, Write, &[b"GET", b"k"]));
        assert!(!held(&client, Write, &[b"EXEC"]));
        assert!(held(&client, All, &[b"GET", b"k"]));
        assert!(held(&client, All, &[b"PING"]));
        assert!(!held(&client, All, &[b"CLIENT", b"UNPAUSE"]));
        assert!(!held(&client, All, &[b"client", b"pause", b"10"]));
        assert!(!held(&client, All, &[b"MERIDIAN.TOPOLOGY", b"SET", b"{}"]));
        assert!(held(
            &client,
            All,
            &[b"MERIDIAN.MIGRATE", b"SLOT", b"1", b"h", b"1"]
        ));
        assert!(!held(&client, All, &[b"nosuchcommand"]));
        // EXEC holds as a whole when its transaction writes
        client.multi = Some(vec![vec![b"GET".to_vec(), b"k".to_vec()]]);
        assert!(!held(&client, Write, &[b"EXEC"]));
        if let Some(queue) = client.multi.as_mut() {
            queue.push(vec![b"INCR".to_vec(), b"n".to_vec()]);
        }
        assert!(held(&client, Write, &[b"exec"]));
        client.primary_link = true;
        assert!(!held(&client, All, &[b"SET", b"k", b"v"]));
    }

    #[test]
    fn floats_parse_like_redis() {
        assert_eq!(parse_float(b"1.5"), Ok(1.5));
        assert_eq!(parse_float(b"-inf"), Ok(f64::NEG_INFINITY));
        assert!(parse_float(b"nan").is_err());
        assert!(parse_float(b" 1").is_err());
        assert!(parse_float(b"").is_err());
        assert!(parse_float(b"abc").is_err());
    }
}

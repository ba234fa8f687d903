//! Command identity: one [`Cmd`] per entry of the command table, so the
//! dispatcher, replication and the origin decide by a typed value resolved once at
//! lookup, never by comparing names. Next to it, each command's ACL categories
//! and the subcommands ACL rules can name (`client|kill`), as Redis 7.0 has them
//! (plus Meridian's own admin commands in `@admin @dangerous`).

use crate::acl::category::{Categories, Category};

/// A command of the table (`commands::COMMANDS`), in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmd {
    Ping,
    Echo,
    Hello,
    Auth,
    Select,
    Quit,
    Reset,
    Client,
    Command,
    Info,
    Config,
    Dbsize,
    Flushdb,
    Flushall,
    Time,
    Lastsave,
    Get,
    Set,
    Setnx,
    Setex,
    Psetex,
    Getset,
    Getdel,
    Getex,
    Mget,
    Mset,
    Msetnx,
    Append,
    Strlen,
    Getrange,
    Substr,
    Setrange,
    Setbit,
    Getbit,
    Bitcount,
    Bitpos,
    Bitop,
    Bitfield,
    BitfieldRo,
    Pfadd,
    Pfcount,
    Pfmerge,
    Lcs,
    Object,
    Memory,
    Incr,
    Decr,
    Incrby,
    Decrby,
    Incrbyfloat,
    Del,
    Unlink,
    Exists,
    Type,
    Expire,
    Pexpire,
    Expireat,
    Pexpireat,
    Ttl,
    Pttl,
    Expiretime,
    Pexpiretime,
    Persist,
    Keys,
    Scan,
    Randomkey,
    Rename,
    Renamenx,
    Copy,
    Touch,
    Dump,
    Restore,
    RestoreAsking,
    Migrate,
    Hset,
    Hmset,
    Hsetnx,
    Hget,
    Hmget,
    Hdel,
    Hexists,
    Hlen,
    Hkeys,
    Hvals,
    Hgetall,
    Hincrby,
    Hincrbyfloat,
    Hstrlen,
    Hscan,
    Hrandfield,
    Lpush,
    Rpush,
    Lpushx,
    Rpushx,
    Lpop,
    Rpop,
    Llen,
    Lindex,
    Lset,
    Lrange,
    Ltrim,
    Lrem,
    Linsert,
    Lpos,
    Lmove,
    Rpoplpush,
    Lmpop,
    Blpop,
    Brpop,
    Blmove,
    Brpoplpush,
    Blmpop,
    Sadd,
    Srem,
    Scard,
    Sismember,
    Smismember,
    Smembers,
    Spop,
    Srandmember,
    Smove,
    Sinter,
    Sunion,
    Sdiff,
    Sinterstore,
    Sunionstore,
    Sdiffstore,
    Sintercard,
    Sscan,
    Zadd,
    Zincrby,
    Zrem,
    Zcard,
    Zscore,
    Zmscore,
    Zrank,
    Zrevrank,
    Zcount,
    Zlexcount,
    Zrange,
    Zrevrange,
    Zrangebyscore,
    Zrevrangebyscore,
    Zrangebylex,
    Zrevrangebylex,
    Zrangestore,
    Zremrangebyrank,
    Zremrangebyscore,
    Zremrangebylex,
    Zpopmin,
    Zpopmax,
    Bzpopmin,
    Bzpopmax,
    Zmpop,
    Bzmpop,
    Zrandmember,
    Zunion,
    Zinter,
    Zdiff,
    Zunionstore,
    Zinterstore,
    Zdiffstore,
    Zintercard,
    Zscan,
    Eval,
    Evalsha,
    EvalRo,
    EvalshaRo,
    Script,
    Fcall,
    FcallRo,
    Function,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    Subscribe,
    Unsubscribe,
    Psubscribe,
    Punsubscribe,
    Publish,
    Pubsub,
    MeridianTopology,
    MeridianPeers,
    Invalidate,
    MeridianMigrate,
    MeridianWriteBehind,
    Cluster,
    Readonly,
    Readwrite,
    Asking,
    Replicaof,
    Slaveof,
    Role,
    Wait,
    Replconf,
    Psync,
    Sync,
    Acl,
    Debug,
}

use Category::{
    Admin, Bitmap, Blocking, Connection, Dangerous, Fast, Hash, Hyperloglog, Keyspace, List,
    Pubsub, Read, Scripting, Set, Slow, Sortedset, String, Transaction, Write,
};

const fn of(list: &[Category]) -> Categories {
    Categories::of(list)
}

/// Meridian's own admin commands and Redis's: `-@admin -@dangerous` removes them all.
const ADMIN: Categories = of(&[Admin, Slow, Dangerous]);

impl Cmd {
    /// The ACL categories of the command (of a container command like CLIENT: its
    /// own, its subcommands have theirs in [`SUBCOMMANDS`]).
    pub const fn categories(self) -> Categories {
        match self {
            Cmd::Ping
            | Cmd::Echo
            | Cmd::Hello
            | Cmd::Auth
            | Cmd::Select
            | Cmd::Quit
            | Cmd::Reset
            | Cmd::Readonly
            | Cmd::Readwrite
            | Cmd::Asking => of(&[Fast, Connection]),
            Cmd::Client | Cmd::Config | Cmd::Pubsub | Cmd::Cluster | Cmd::Acl => of(&[Slow]),
            Cmd::Command | Cmd::Wait => of(&[Slow, Connection]),
            Cmd::Info => of(&[Slow, Dangerous]),
            Cmd::Dbsize => of(&[Keyspace, Read, Fast]),
            Cmd::Flushdb | Cmd::Flushall => of(&[Keyspace, Write, Slow, Dangerous]),
            Cmd::Time => of(&[Fast]),
            Cmd::Lastsave | Cmd::Role => of(&[Admin, Fast, Dangerous]),
            Cmd::Get | Cmd::Mget | Cmd::Strlen => of(&[Read, String, Fast]),
            Cmd::Getrange | Cmd::Substr => of(&[Read, String, Slow]),
            Cmd::Setbit | Cmd::Bitop | Cmd::Bitfield => of(&[Write, Bitmap, Slow]),
            Cmd::Getbit | Cmd::BitfieldRo => of(&[Read, Bitmap, Fast]),
            Cmd::Bitcount | Cmd::Bitpos => of(&[Read, Bitmap, Slow]),
            Cmd::Pfadd => of(&[Write, Hyperloglog, Fast]),
            Cmd::Pfcount => of(&[Read, Hyperloglog, Slow]),
            Cmd::Pfmerge => of(&[Write, Hyperloglog, Slow]),
            Cmd::Lcs => of(&[Read, String, Slow]),
            Cmd::Object | Cmd::Memory => of(&[Slow]),
            Cmd::Set | Cmd::Setex | Cmd::Psetex | Cmd::Mset | Cmd::Msetnx | Cmd::Setrange => {
                of(&[Write, String, Slow])
            }
            Cmd::Setnx
            | Cmd::Getset
            | Cmd::Getdel
            | Cmd::Getex
            | Cmd::Append
            | Cmd::Incr
            | Cmd::Decr
            | Cmd::Incrby
            | Cmd::Decrby
            | Cmd::Incrbyfloat => of(&[Write, String, Fast]),
            Cmd::Del | Cmd::Rename | Cmd::Copy => of(&[Keyspace, Write, Slow]),
            Cmd::Unlink
            | Cmd::Expire
            | Cmd::Pexpire
            | Cmd::Expireat
            | Cmd::Pexpireat
            | Cmd::Persist
            | Cmd::Renamenx => of(&[Keyspace, Write, Fast]),
            Cmd::Exists
            | Cmd::Type
            | Cmd::Ttl
            | Cmd::Pttl
            | Cmd::Expiretime
            | Cmd::Pexpiretime
            | Cmd::Touch => of(&[Keyspace, Read, Fast]),
            Cmd::Keys => of(&[Keyspace, Read, Slow, Dangerous]),
            Cmd::Scan | Cmd::Randomkey | Cmd::Dump => of(&[Keyspace, Read, Slow]),
            Cmd::Restore | Cmd::RestoreAsking | Cmd::Migrate => {
                of(&[Keyspace, Write, Slow, Dangerous])
            }
            Cmd::Hset | Cmd::Hmset | Cmd::Hsetnx | Cmd::Hdel | Cmd::Hincrby | Cmd::Hincrbyfloat => {
                of(&[Write, Hash, Fast])
            }
            Cmd::Hget | Cmd::Hmget | Cmd::Hexists | Cmd::Hlen | Cmd::Hstrlen => {
                of(&[Read, Hash, Fast])
            }
            Cmd::Hkeys | Cmd::Hvals | Cmd::Hgetall | Cmd::Hscan | Cmd::Hrandfield => {
                of(&[Read, Hash, Slow])
            }
            Cmd::Lpush | Cmd::Rpush | Cmd::Lpushx | Cmd::Rpushx | Cmd::Lpop | Cmd::Rpop => {
                of(&[Write, List, Fast])
            }
            Cmd::Llen => of(&[Read, List, Fast]),
            Cmd::Lindex | Cmd::Lrange | Cmd::Lpos => of(&[Read, List, Slow]),
            Cmd::Lset
            | Cmd::Ltrim
            | Cmd::Lrem
            | Cmd::Linsert
            | Cmd::Lmove
            | Cmd::Rpoplpush
            | Cmd::Lmpop => of(&[Write, List, Slow]),
            Cmd::Blpop | Cmd::Brpop | Cmd::Blmove | Cmd::Brpoplpush | Cmd::Blmpop => {
                of(&[Write, List, Slow, Blocking])
            }
            Cmd::Sadd | Cmd::Srem | Cmd::Spop | Cmd::Smove => of(&[Write, Set, Fast]),
            Cmd::Scard | Cmd::Sismember | Cmd::Smismember => of(&[Read, Set, Fast]),
            Cmd::Smembers
            | Cmd::Srandmember
            | Cmd::Sinter
            | Cmd::Sunion
            | Cmd::Sdiff
            | Cmd::Sintercard
            | Cmd::Sscan => of(&[Read, Set, Slow]),
            Cmd::Sinterstore | Cmd::Sunionstore | Cmd::Sdiffstore => of(&[Write, Set, Slow]),
            Cmd::Zadd | Cmd::Zincrby | Cmd::Zrem | Cmd::Zpopmin | Cmd::Zpopmax => {
                of(&[Write, Sortedset, Fast])
            }
            Cmd::Zcard
            | Cmd::Zscore
            | Cmd::Zmscore
            | Cmd::Zrank
            | Cmd::Zrevrank
            | Cmd::Zcount
            | Cmd::Zlexcount => of(&[Read, Sortedset, Fast]),
            Cmd::Zrange
            | Cmd::Zrevrange
            | Cmd::Zrangebyscore
            | Cmd::Zrevrangebyscore
            | Cmd::Zrangebylex
            | Cmd::Zrevrangebylex
            | Cmd::Zrandmember
            | Cmd::Zunion
            | Cmd::Zinter
            | Cmd::Zdiff
            | Cmd::Zintercard
            | Cmd::Zscan => of(&[Read, Sortedset, Slow]),
            Cmd::Zrangestore
            | Cmd::Zremrangebyrank
            | Cmd::Zremrangebyscore
            | Cmd::Zremrangebylex
            | Cmd::Zunionstore
            | Cmd::Zinterstore
            | Cmd::Zdiffstore
            | Cmd::Zmpop => of(&[Write, Sortedset, Slow]),
            Cmd::Bzpopmin | Cmd::Bzpopmax => of(&[Write, Sortedset, Fast, Blocking]),
            Cmd::Bzmpop => of(&[Write, Sortedset, Slow, Blocking]),
            Cmd::Eval
            | Cmd::Evalsha
            | Cmd::EvalRo
            | Cmd::EvalshaRo
            | Cmd::Script
            | Cmd::Fcall
            | Cmd::FcallRo
            | Cmd::Function => of(&[Slow, Scripting]),
            Cmd::Multi | Cmd::Discard | Cmd::Watch | Cmd::Unwatch => of(&[Fast, Transaction]),
            Cmd::Exec => of(&[Slow, Transaction]),
            Cmd::Subscribe | Cmd::Unsubscribe | Cmd::Psubscribe | Cmd::Punsubscribe => {
                of(&[Pubsub, Slow])
            }
            Cmd::Publish => of(&[Pubsub, Fast]),
            // deletes every key of a pattern, on this node and (fanned out) its region
            Cmd::Invalidate => of(&[Keyspace, Write, Slow, Dangerous]),
            Cmd::MeridianTopology
            | Cmd::MeridianPeers
            | Cmd::MeridianMigrate
            | Cmd::MeridianWriteBehind
            | Cmd::Replicaof
            | Cmd::Slaveof
            | Cmd::Replconf
            | Cmd::Psync
            | Cmd::Sync
            | Cmd::Debug => ADMIN,
        }
    }
}

/// A subcommand ACL rules can name, `<parent>|<name>`.
pub struct Subcommand {
    pub parent: Cmd,
    pub name: &'static str,
    pub categories: Categories,
}

const fn sub(parent: Cmd, name: &'static str, categories: Categories) -> Subcommand {
    Subcommand {
        parent,
        name,
        categories,
    }
}

const CONNECTION: Categories = of(&[Slow, Connection]);
const ADMIN_CONNECTION: Categories = of(&[Admin, Slow, Dangerous, Connection]);
const SLOW: Categories = of(&[Slow]);
const PUBSUB: Categories = of(&[Pubsub, Slow]);
const KEYSPACE_READ: Categories = of(&[Keyspace, Read, Slow]);

/// The subcommands of the container commands. Those that change the topology,
/// the configuration, other clients or the users are `@admin @dangerous`.
pub static SUBCOMMANDS: &[Subcommand] = &[
    sub(Cmd::Client, "id", CONNECTION),
    sub(Cmd::Client, "setname", CONNECTION),
    sub(Cmd::Client, "getname", CONNECTION),
    sub(Cmd::Client, "info", CONNECTION),
    sub(Cmd::Client, "list", ADMIN_CONNECTION),
    sub(Cmd::Client, "kill", ADMIN_CONNECTION),
    sub(Cmd::Client, "unblock", ADMIN_CONNECTION),
    sub(Cmd::Client, "tracking", CONNECTION),
    sub(Cmd::Client, "caching", CONNECTION),
    sub(Cmd::Client, "trackinginfo", CONNECTION),
    sub(Cmd::Client, "getredir", CONNECTION),
    sub(Cmd::Client, "setinfo", CONNECTION),
    sub(Cmd::Client, "pause", ADMIN_CONNECTION),
    sub(Cmd::Client, "unpause", ADMIN_CONNECTION),
    sub(Cmd::Client, "no-evict", ADMIN_CONNECTION),
    sub(Cmd::Client, "no-touch", CONNECTION),
    sub(Cmd::Client, "help", CONNECTION),
    sub(Cmd::Command, "count", CONNECTION),
    sub(Cmd::Command, "info", CONNECTION),
    sub(Cmd::Command, "docs", CONNECTION),
    sub(Cmd::Command, "list", CONNECTION),
    sub(Cmd::Command, "getkeys", CONNECTION),
    sub(Cmd::Command, "help", CONNECTION),
    sub(Cmd::Object, "encoding", KEYSPACE_READ),
    sub(Cmd::Object, "freq", KEYSPACE_READ),
    sub(Cmd::Object, "idletime", KEYSPACE_READ),
    sub(Cmd::Object, "refcount", KEYSPACE_READ),
    sub(Cmd::Object, "help", of(&[Keyspace, Slow])),
    sub(Cmd::Memory, "usage", of(&[Read, Slow])),
    sub(Cmd::Memory, "help", SLOW),
    sub(Cmd::Config, "get", ADMIN),
    sub(Cmd::Config, "set", ADMIN),
    sub(Cmd::Config, "resetstat", ADMIN),
    sub(Cmd::Config, "rewrite", ADMIN),
    sub(Cmd::Config, "help", SLOW),
    sub(Cmd::Pubsub, "channels", PUBSUB),
    sub(Cmd::Pubsub, "numsub", PUBSUB),
    sub(Cmd::Pubsub, "numpat", PUBSUB),
    sub(Cmd::Pubsub, "help", SLOW),
    sub(Cmd::Cluster, "info", SLOW),
    sub(Cmd::Cluster, "myid", SLOW),
    sub(Cmd::Cluster, "myshardid", SLOW),
    sub(Cmd::Cluster, "nodes", SLOW),
    sub(Cmd::Cluster, "slots", SLOW),
    sub(Cmd::Cluster, "shards", SLOW),
    sub(Cmd::Cluster, "keyslot", SLOW),
    sub(Cmd::Cluster, "countkeysinslot", SLOW),
    sub(Cmd::Cluster, "getkeysinslot", SLOW),
    sub(Cmd::Cluster, "help", SLOW),
    sub(Cmd::Cluster, "setslot", ADMIN),
    sub(Cmd::Cluster, "addslots", ADMIN),
    sub(Cmd::Cluster, "addslotsrange", ADMIN),
    sub(Cmd::Cluster, "delslots", ADMIN),
    sub(Cmd::Cluster, "delslotsrange", ADMIN),
    sub(Cmd::Cluster, "flushslots", ADMIN),
    sub(Cmd::Cluster, "forget", ADMIN),
    sub(Cmd::Cluster, "meet", ADMIN),
    sub(Cmd::Cluster, "replicate", ADMIN),
    sub(Cmd::Cluster, "reset", ADMIN),
    sub(Cmd::Cluster, "failover", ADMIN),
    sub(Cmd::Cluster, "saveconfig", ADMIN),
    sub(Cmd::Cluster, "bumpepoch", ADMIN),
    sub(Cmd::Cluster, "set-config-epoch", ADMIN),
    sub(Cmd::Cluster, "replicas", ADMIN),
    sub(Cmd::Cluster, "slaves", ADMIN),
    sub(Cmd::Cluster, "count-failure-reports", ADMIN),
    sub(Cmd::Acl, "cat", SLOW),
    sub(Cmd::Acl, "whoami", SLOW),
    sub(Cmd::Acl, "help", SLOW),
    sub(Cmd::Acl, "genpass", SLOW),
    sub(Cmd::Acl, "deluser", ADMIN),
    sub(Cmd::Acl, "dryrun", ADMIN),
    sub(Cmd::Acl, "getuser", ADMIN),
    sub(Cmd::Acl, "list", ADMIN),
    sub(Cmd::Acl, "load", ADMIN),
    sub(Cmd::Acl, "log", ADMIN),
    sub(Cmd::Acl, "save", ADMIN),
    sub(Cmd::Acl, "setuser", ADMIN),
    sub(Cmd::Acl, "users", ADMIN),
];

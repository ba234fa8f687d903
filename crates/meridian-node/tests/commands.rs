//! Command behaviour through the `redis` crate (a real client library).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Node, Reply};
use redis::{Commands, Value};

#[test]
fn strings_and_keys() {
    let node = Node::start();
    let mut con = node.redis();
    let _: () = con.set("greeting", "hello").unwrap();
    assert_eq!(con.get::<_, String>("greeting").unwrap(), "hello");
    assert_eq!(con.append::<_, _, i64>("greeting", " world").unwrap(), 11);
    assert_eq!(con.strlen::<_, i64>("greeting").unwrap(), 11);
    assert_eq!(
        redis::cmd("GETRANGE")
            .arg("greeting")
            .arg(0)
            .arg(4)
            .query::<String>(&mut con)
            .unwrap(),
        "hello"
    );
    assert_eq!(
        redis::cmd("GETRANGE")
            .arg("greeting")
            .arg(-5)
            .arg(-1)
            .query::<String>(&mut con)
            .unwrap(),
        "world"
    );
    assert_eq!(
        redis::cmd("SETRANGE")
            .arg("greeting")
            .arg(6)
            .arg("redis")
            .query::<i64>(&mut con)
            .unwrap(),
        11
    );
    assert_eq!(con.get::<_, String>("greeting").unwrap(), "hello redis");
    assert_eq!(con.incr::<_, _, i64>("n", 5).unwrap(), 5);
    assert_eq!(con.decr::<_, _, i64>("n", 2).unwrap(), 3);
    assert_eq!(
        redis::cmd("INCRBYFLOAT")
            .arg("f")
            .arg("10.5")
            .query::<String>(&mut con)
            .unwrap(),
        "10.5"
    );
    assert_eq!(
        redis::cmd("INCRBYFLOAT")
            .arg("f")
            .arg("0.1")
            .query::<String>(&mut con)
            .unwrap(),
        "10.6"
    );
    assert_eq!(
        redis::cmd("SETNX")
            .arg("n")
            .arg("x")
            .query::<i64>(&mut con)
            .unwrap(),
        0
    );
    assert_eq!(
        redis::cmd("GETSET")
            .arg("n")
            .arg("9")
            .query::<String>(&mut con)
            .unwrap(),
        "3"
    );
    assert_eq!(
        redis::cmd("GETDEL")
            .arg("n")
            .query::<String>(&mut con)
            .unwrap(),
        "9"
    );
    assert_eq!(con.exists::<_, i64>("n").unwrap(), 0);
    let _: () = redis::cmd("MSET")
        .arg("a")
        .arg("1")
        .arg("b")
        .arg("2")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        con.mget::<_, Vec<Option<String>>>(&["a", "b", "zz"])
            .unwrap(),
        vec![Some("1".into()), Some("2".into()), None]
    );
    assert_eq!(
        redis::cmd("MSETNX")
            .arg("a")
            .arg("x")
            .arg("c")
            .arg("3")
            .query::<i64>(&mut con)
            .unwrap(),
        0
    );
    assert_eq!(
        redis::cmd("SET")
            .arg("a")
            .arg("new")
            .arg("GET")
            .query::<String>(&mut con)
            .unwrap(),
        "1"
    );
    assert_eq!(
        redis::cmd("SET")
            .arg("a")
            .arg("v")
            .arg("NX")
            .query::<Option<String>>(&mut con)
            .unwrap(),
        None
    );
    assert_eq!(
        redis::cmd("TYPE")
            .arg("a")
            .query::<String>(&mut con)
            .unwrap(),
        "string"
    );
    assert_eq!(
        redis::cmd("RENAME")
            .arg("a")
            .arg("{a}renamed")
            .query::<String>(&mut con)
            .unwrap(),
        "OK"
    );
    assert_eq!(
        redis::cmd("COPY")
            .arg("{a}renamed")
            .arg("copy")
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("RENAMENX")
            .arg("copy")
            .arg("b")
            .query::<i64>(&mut con)
            .unwrap(),
        0
    );
    assert_eq!(con.del::<_, i64>(&["copy", "b", "nothing"]).unwrap(), 2);
    let mut keys: Vec<String> = con.keys("*").unwrap();
    keys.sort();
    assert_eq!(keys, vec!["f", "greeting", "{a}renamed"]);
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut con).unwrap(), 3);
    assert!(
        redis::cmd("RANDOMKEY")
            .query::<Option<String>>(&mut con)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        redis::cmd("TOUCH")
            .arg("f")
            .arg("nope")
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    assert_eq!(redis::cmd("DBSIZE").query::<i64>(&mut con).unwrap(), 0);
}

#[test]
fn scan_visits_every_key_once_without_changes() {
    let node = Node::start();
    let mut con = node.redis();
    for index in 0..500 {
        let _: () = con.set(format!("user:{index}"), index).unwrap();
    }
    let _: () = con.hset("profile", "a", "b").unwrap();
    let mut cursor = 0u64;
    let mut seen = std::collections::HashSet::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg("user:*")
            .arg("COUNT")
            .arg(50)
            .arg("TYPE")
            .arg("string")
            .query(&mut con)
            .unwrap();
        seen.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 500);
}

#[test]
fn hashes() {
    let node = Node::start();
    let mut con = node.redis();
    assert_eq!(
        redis::cmd("HSET")
            .arg("h")
            .arg("a")
            .arg("1")
            .arg("b")
            .arg("2")
            .query::<i64>(&mut con)
            .unwrap(),
        2
    );
    assert_eq!(con.hget::<_, _, String>("h", "a").unwrap(), "1");
    assert_eq!(
        redis::cmd("HSETNX")
            .arg("h")
            .arg("a")
            .arg("9")
            .query::<i64>(&mut con)
            .unwrap(),
        0
    );
    assert_eq!(con.hincr::<_, _, _, i64>("h", "a", 10).unwrap(), 11);
    assert_eq!(
        redis::cmd("HINCRBYFLOAT")
            .arg("h")
            .arg("b")
            .arg("0.5")
            .query::<String>(&mut con)
            .unwrap(),
        "2.5"
    );
    assert_eq!(
        redis::cmd("HSTRLEN")
            .arg("h")
            .arg("b")
            .query::<i64>(&mut con)
            .unwrap(),
        3
    );
    assert_eq!(
        con.hgetall::<_, HashMap<String, String>>("h").unwrap(),
        HashMap::from([
            ("a".to_string(), "11".to_string()),
            ("b".to_string(), "2.5".to_string())
        ])
    );
    assert_eq!(con.hkeys::<_, Vec<String>>("h").unwrap(), vec!["a", "b"]);
    assert_eq!(con.hvals::<_, Vec<String>>("h").unwrap(), vec!["11", "2.5"]);
    assert_eq!(
        redis::cmd("HMGET")
            .arg("h")
            .arg("a")
            .arg("x")
            .query::<Vec<Option<String>>>(&mut con)
            .unwrap(),
        vec![Some("11".to_string()), None]
    );
    assert_eq!(con.hexists::<_, _, i64>("h", "b").unwrap(), 1);
    assert_eq!(con.hlen::<_, i64>("h").unwrap(), 2);
    let field: String = redis::cmd("HRANDFIELD").arg("h").query(&mut con).unwrap();
    assert!(field == "a" || field == "b");
    let fields: Vec<String> = redis::cmd("HRANDFIELD")
        .arg("h")
        .arg(5)
        .query(&mut con)
        .unwrap();
    assert_eq!(fields.len(), 2);
    let repeated: Vec<String> = redis::cmd("HRANDFIELD")
        .arg("h")
        .arg(-5)
        .arg("WITHVALUES")
        .query(&mut con)
        .unwrap();
    assert_eq!(repeated.len(), 10);
    let (cursor, items): (u64, Vec<String>) =
        redis::cmd("HSCAN").arg("h").arg(0).query(&mut con).unwrap();
    assert_eq!((cursor, items.len()), (0, 4));
    assert_eq!(
        redis::cmd("HDEL")
            .arg("h")
            .arg("a")
            .arg("b")
            .arg("c")
            .query::<i64>(&mut con)
            .unwrap(),
        2
    );
    assert_eq!(
        con.exists::<_, i64>("h").unwrap(),
        0,
        "empty hash is deleted"
    );
    let error = con
        .hincr::<_, _, _, i64>("h2", "f", 1)
        .and_then(|_| con.set::<_, _, ()>("s", "x"))
        .and_then(|_| con.hget::<_, _, String>("s", "f"));
    assert!(error.unwrap_err().to_string().contains("WRONGTYPE"));
}

#[test]
fn ttl_and_expiry() {
    let node = Node::start();
    let mut con = node.redis();
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("v")
        .arg("PX")
        .arg(700)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("long")
        .arg("v")
        .arg("EX")
        .arg(100)
        .query(&mut con)
        .unwrap();
    let _: () = con.set("plain", "v").unwrap();
    assert_eq!(con.ttl::<_, i64>("long").unwrap(), 100);
    assert!(con.pttl::<_, i64>("short").unwrap() > 0);
    assert_eq!(con.ttl::<_, i64>("plain").unwrap(), -1);
    assert_eq!(con.ttl::<_, i64>("missing").unwrap(), -2);
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("long")
            .arg(50)
            .arg("GT")
            .query::<i64>(&mut con)
            .unwrap(),
        0
    );
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("long")
            .arg(50)
            .arg("LT")
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("plain")
            .arg(50)
            .arg("XX")
            .query::<i64>(&mut con)
            .unwrap(),
        0
    );
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("plain")
            .arg(50)
            .arg("NX")
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    assert_eq!(
        redis::cmd("PERSIST")
            .arg("plain")
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    let at: i64 = redis::cmd("EXPIRETIME")
        .arg("long")
        .query(&mut con)
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((at - now - 50).abs() <= 1);
    let _: () = redis::cmd("SET")
        .arg("kept")
        .arg("v")
        .arg("EX")
        .arg(100)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("kept")
        .arg("w")
        .arg("KEEPTTL")
        .query(&mut con)
        .unwrap();
    assert!(con.ttl::<_, i64>("kept").unwrap() > 90);
    let value: String = redis::cmd("GETEX")
        .arg("kept")
        .arg("PERSIST")
        .query(&mut con)
        .unwrap();
    assert_eq!(value, "w");
    assert_eq!(con.ttl::<_, i64>("kept").unwrap(), -1);
    assert_eq!(
        redis::cmd("EXPIRE")
            .arg("kept")
            .arg(-1)
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    assert_eq!(
        con.exists::<_, i64>("kept").unwrap(),
        0,
        "past expiry deletes"
    );
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(
        con.get::<_, Option<String>>("short").unwrap(),
        None,
        "lazy expiry on access"
    );
    // active expiry removes keys nobody touches
    for index in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("tmp:{index}"))
            .arg("v")
            .arg("PX")
            .arg(50)
            .query(&mut con)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    let size: i64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert!(
        size < 50,
        "active expiry should have removed most keys, {size} left"
    );
}

#[test]
fn multi_exec_and_watch() {
    let node = Node::start();
    let mut con = node.redis();
    let mut other = node.redis();
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("x", 1)
        .incr("{x}y", 2)
        .query(&mut con)
        .unwrap();
    assert_eq!((a, b), (1, 2));
    let mut raw = node.raw();
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(raw.cmd(&["SET", "t", "1"]), Reply::Simple("QUEUED".into()));
    assert_eq!(raw.cmd(&["INCR", "t"]), Reply::Simple("QUEUED".into()));
    assert_eq!(
        raw.cmd(&["HSET", "t", "f", "v"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(
        raw.cmd(&["EXEC"]),
        Reply::Array(vec![
            Reply::ok(),
            Reply::Int(2),
            Reply::err("WRONGTYPE Operation against a key holding the wrong kind of value")
        ])
    );
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        raw.cmd(&["MULTI"]),
        Reply::err("ERR MULTI calls can not be nested")
    );
    assert_eq!(
        raw.cmd(&["GET"]),
        Reply::err("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        raw.cmd(&["EXEC"]),
        Reply::err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(raw.cmd(&["EXEC"]), Reply::err("ERR EXEC without MULTI"));
    assert_eq!(
        raw.cmd(&["DISCARD"]),
        Reply::err("ERR DISCARD without MULTI")
    );
    // WATCH abort
    assert_eq!(raw.cmd(&["WATCH", "balance"]), Reply::ok());
    let _: () = other.set("balance", 100).unwrap();
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    raw.cmd(&["SET", "balance", "0"]);
    assert_eq!(raw.cmd(&["EXEC"]), Reply::Nil);
    assert_eq!(other.get::<_, i64>("balance").unwrap(), 100);
    // WATCH without interference succeeds
    assert_eq!(raw.cmd(&["WATCH", "balance"]), Reply::ok());
    raw.cmd(&["MULTI"]);
    raw.cmd(&["INCRBY", "balance", "5"]);
    assert_eq!(raw.cmd(&["EXEC"]), Reply::Array(vec![Reply::Int(105)]));
}

#[test]
fn pubsub_between_two_connections() {
    let node = Node::start();
    let mut subscriber = node.raw();
    assert_eq!(
        subscriber.cmd(&["SUBSCRIBE", "news"]),
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("news"),
            Reply::Int(1)
        ])
    );
    subscriber.send(&common::encode(&[b"PSUBSCRIBE", b"sport.*"]));
    assert_eq!(
        subscriber.read(),
        Reply::Array(vec![
            Reply::bulk("psubscribe"),
            Reply::bulk("sport.*"),
            Reply::Int(2)
        ])
    );
    assert_eq!(
        subscriber.cmd(&["GET", "x"]),
        Reply::err(
            "ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context"
        )
    );
    let mut publisher = node.redis();
    assert_eq!(
        redis::cmd("PUBLISH")
            .arg("news")
            .arg("hello")
            .query::<i64>(&mut publisher)
            .unwrap(),
        1
    );
    assert_eq!(
        subscriber.read(),
        Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("news"),
            Reply::bulk("hello")
        ])
    );
    assert_eq!(
        redis::cmd("PUBLISH")
            .arg("sport.tennis")
            .arg("ace")
            .query::<i64>(&mut publisher)
            .unwrap(),
        1
    );
    assert_eq!(
        subscriber.read(),
        Reply::Array(vec![
            Reply::bulk("pmessage"),
            Reply::bulk("sport.*"),
            Reply::bulk("sport.tennis"),
            Reply::bulk("ace")
        ])
    );
    assert_eq!(
        redis::cmd("PUBSUB")
            .arg("NUMPAT")
            .query::<i64>(&mut publisher)
            .unwrap(),
        1
    );
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(channels, vec!["news"]);
    let counts: Vec<Value> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("news")
        .arg("none")
        .query(&mut publisher)
        .unwrap();
    assert_eq!(counts.len(), 4);
    assert_eq!(
        subscriber.cmd(&["UNSUBSCRIBE"]),
        Reply::Array(vec![
            Reply::bulk("unsubscribe"),
            Reply::bulk("news"),
            Reply::Int(1)
        ])
    );
    assert_eq!(
        redis::cmd("PUBLISH")
            .arg("news")
            .arg("again")
            .query::<i64>(&mut publisher)
            .unwrap(),
        0
    );
}

#[test]
fn resp3_pubsub_uses_push_frames() {
    let node = Node::start();
    let mut subscriber = node.raw();
    subscriber.cmd(&["HELLO", "3"]);
    assert_eq!(
        subscriber.cmd(&["SUBSCRIBE", "ch"]),
        Reply::Push(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("ch"),
            Reply::Int(1)
        ])
    );
    // RESP3 clients may run normal commands while subscribed
    assert_eq!(subscriber.cmd(&["SET", "k", "v"]), Reply::ok());
    let mut publisher = node.raw();
    assert_eq!(publisher.cmd(&["PUBLISH", "ch", "payload"]), Reply::Int(1));
    assert_eq!(
        subscriber.read(),
        Reply::Push(vec![
            Reply::bulk("message"),
            Reply::bulk("ch"),
            Reply::bulk("payload")
        ])
    );
}

#[test]
fn auth_is_required_when_configured() {
    let node = Node::start_with(&["--requirepass", "s3cret"]);
    let mut raw = node.raw();
    assert_eq!(
        raw.cmd(&["GET", "k"]),
        Reply::err("NOAUTH Authentication required.")
    );
    assert_eq!(
        raw.cmd(&["MERIDIAN.TOPOLOGY", "GET"]),
        Reply::err("NOAUTH Authentication required.")
    );
    assert_eq!(
        raw.cmd(&["AUTH", "wrong"]),
        Reply::err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(raw.cmd(&["AUTH", "s3cret"]), Reply::ok());
    assert_eq!(raw.cmd(&["GET", "k"]), Reply::Nil);
    // before AUTH only tiny requests are parsed, like Redis 7
    let mut greedy = node.raw();
    greedy.send(b"*1\r\n$100000\r\n");
    assert_eq!(
        greedy.read(),
        Reply::err("ERR Protocol error: unauthenticated bulk length")
    );
    assert!(greedy.closed());
    // AUTH followed by a large value in the same pipelined batch is fine
    let mut batch = common::encode(&[b"AUTH", b"s3cret"]);
    batch.extend(common::encode(&[b"SET", b"big", &vec![b'x'; 100_000]]));
    let mut pipelined = node.raw();
    pipelined.send(&batch);
    assert_eq!(pipelined.read(), Reply::ok());
    assert_eq!(pipelined.read(), Reply::ok());
    let mut hello = node.raw();
    let Reply::Map(_) = hello.cmd(&["HELLO", "3", "AUTH", "default", "s3cret"]) else {
        panic!("HELLO AUTH")
    };
    assert_eq!(hello.cmd(&["PING"]), Reply::Simple("PONG".into()));
    let client = redis::Client::open(format!("redis://:s3cret@127.0.0.1:{}/", node.port)).unwrap();
    let mut con = client.get_connection().unwrap();
    let _: () = con.set("k", "v").unwrap();
    let unauthenticated = redis::Client::open(node.url())
        .unwrap()
        .get_connection()
        .and_then(|mut con| con.get::<_, String>("k"));
    assert!(unauthenticated.unwrap_err().to_string().contains("NOAUTH"));
}

#[test]
fn server_commands() {
    let node = Node::start();
    let mut con = node.redis();
    let info: String = redis::cmd("INFO").query(&mut con).unwrap();
    for needle in [
        "# Server",
        "redis_version:",
        "# Clients",
        "# Memory",
        "used_memory:",
        "# Stats",
        "# Replication",
        "role:master",
        "# Keyspace",
    ] {
        assert!(info.contains(needle), "INFO lacks {needle}");
    }
    let _: () = con.set("k", "v").unwrap();
    let keyspace: String = redis::cmd("INFO").arg("keyspace").query(&mut con).unwrap();
    assert!(keyspace.contains("db0:keys=1,expires=0"), "{keyspace}");
    let config: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory*")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        config.get("maxmemory-policy").map(String::as_str),
        Some("sieve")
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("100mb")
        .query(&mut con)
        .unwrap();
    let config: HashMap<String, String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut con)
        .unwrap();
    assert_eq!(config["maxmemory"], (100 * 1024 * 1024).to_string());
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("save")
        .arg("")
        .arg("appendonly")
        .arg("no")
        .query(&mut con)
        .unwrap();
    let error = redis::cmd("CONFIG")
        .arg("SET")
        .arg("bogus")
        .arg("1")
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(error.to_string().contains("Unknown option"), "{error}");
    // keyspace notifications: Redis's letters, read back in its canonical order
    // (tests/keyspace_events.rs compares the events with redis-server's)
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Egx")
        .query(&mut con)
        .unwrap();
    let flags: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut con)
        .unwrap();
    assert_eq!(flags, ["notify-keyspace-events", "gxE"]);
    let error = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Egw")
        .query::<()>(&mut con)
        .unwrap_err();
    assert!(
        error.to_string().contains("Invalid event class character"),
        "{error}"
    );
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("")
        .query(&mut con)
        .unwrap();
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut con).unwrap();
    assert!(count > 80, "{count} commands");
    let _: Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("get")
        .query(&mut con)
        .unwrap();
    let _: Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("get")
        .query(&mut con)
        .unwrap();
    let time: Vec<String> = redis::cmd("TIME").query(&mut con).unwrap();
    assert_eq!(time.len(), 2);
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("worker-1")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        redis::cmd("CLIENT")
            .arg("GETNAME")
            .query::<String>(&mut con)
            .unwrap(),
        "worker-1"
    );
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
    assert!(
        list.contains(&format!("id={id} ")) && list.contains("name=worker-1"),
        "{list}"
    );
    let me: String = redis::cmd("CLIENT").arg("INFO").query(&mut con).unwrap();
    assert!(me.starts_with(&format!("id={id} ")));
    let mut victim = node.raw();
    victim.cmd(&["CLIENT", "SETNAME", "victim"]);
    let Reply::Int(victim_id) = victim.cmd(&["CLIENT", "ID"]) else {
        panic!("client id")
    };
    assert_eq!(
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(victim_id)
            .query::<i64>(&mut con)
            .unwrap(),
        1
    );
    assert!(victim.closed());
    assert_eq!(
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query::<String>(&mut con)
            .unwrap(),
        "test-node-0"
    );
    assert_eq!(
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg("foo")
            .query::<i64>(&mut con)
            .unwrap(),
        12182
    );
    let _: () = con.set("{foo}a", 1).unwrap();
    let _: () = con.set("{foo}b", 1).unwrap();
    assert_eq!(
        redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(12182)
            .query::<i64>(&mut con)
            .unwrap(),
        2
    );
    let mut keys: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(12182)
        .arg(10)
        .query(&mut con)
        .unwrap();
    keys.sort();
    assert_eq!(keys, vec!["{foo}a", "{foo}b"]);
}

#[test]
fn concurrent_clients_see_atomic_commands() {
    let node = Node::start();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let url = node.url();
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                for _ in 0..500 {
                    let _: i64 = con.incr("shared-counter", 1).unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let mut con = node.redis();
    assert_eq!(con.get::<_, i64>("shared-counter").unwrap(), 4000);

    // MSET across shards is atomic: a reader never sees the two keys disagree
    let writer_url = node.url();
    let writer = std::thread::spawn(move || {
        let mut con = redis::Client::open(writer_url)
            .unwrap()
            .get_connection()
            .unwrap();
        for value in 0..2000 {
            let _: () = redis::cmd("MSET")
                .arg("left")
                .arg(value)
                .arg("right")
                .arg(value)
                .query(&mut con)
                .unwrap();
        }
    });
    while !writer.is_finished() {
        let pair: Vec<Option<i64>> = redis::cmd("MGET")
            .arg("left")
            .arg("right")
            .query(&mut con)
            .unwrap();
        if let [Some(left), Some(right)] = pair.as_slice() {
            assert_eq!(left, right, "MGET must see MSET atomically");
        }
    }
    writer.join().unwrap();
}

//! Cross-region region links between real nodes on distinct loopback IPs:
//! invalidation, strong consistency, replicate LWW, pattern invalidation,
//! stale origin fills, partitions and queue overflow, refused handshakes, and
//! a region whose clock really is skewed (libfaketime), under and beyond
//! --max-clock-drift-ms.

#[path = "common/node_process.rs"]
mod node_process;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use meridian_topology::{NodeAddr, ShardTopology, TopologyMap, split_evenly};
use node_process::{NodeProcess, free_port, wait_until};

const LINK_PORT: u16 = 16379;

struct RegionNode {
    process: NodeProcess,
    ip: String,
    port: u16,
    id: String,
}

impl RegionNode {
    fn start(ip: &str, id: &str, region: &str, extra: &[&str]) -> RegionNode {
        RegionNode::start_with_env(ip, id, region, extra, &[])
    }

    /// A node whose wall clock runs `offset_s` seconds off (libfaketime at
    /// `library`); its monotonic clock stays real, so timeouts behave.
    fn start_skewed(
        ip: &str,
        id: &str,
        region: &str,
        extra: &[&str],
        library: &Path,
        offset_s: i64,
    ) -> RegionNode {
        let env = [
            ("LD_PRELOAD", library.display().to_string()),
            ("FAKETIME", format!("{offset_s:+}")),
            ("DONT_FAKE_MONOTONIC", "1".to_string()),
        ];
        RegionNode::start_with_env(ip, id, region, extra, &env)
    }

    fn start_with_env(
        ip: &str,
        id: &str,
        region: &str,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> RegionNode {
        let port = LINK_PORT.to_string();
        let mut args = vec!["--region", region, "--region-port", &port];
        args.extend_from_slice(extra);
        let process = NodeProcess::start(ip, id, &args, env);
        RegionNode {
            ip: ip.to_string(),
            port: process.port,
            id: id.to_string(),
            process,
        }
    }

    fn redis(&self) -> redis::Connection {
        let url = format!("redis://{}:{}/", self.ip, self.port);
        redis::Client::open(url)
            .expect("client")
            .get_connection()
            .expect("connection")
    }

    fn seed(&self) -> String {
        format!("{}:{LINK_PORT}", self.ip)
    }

    fn signal(&self, signal: &str) {
        let pid = self.process.child.id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        if signal == "-STOP" {
            // kill returns once the signal is queued: until every thread was
            // scheduled and stopped, the node may still answer a request
            wait_until("node stopped", Duration::from_secs(5), || {
                all_threads_stopped(pid)
            });
        }
    }
}

/// Every thread of process `pid` is stopped (state `T` in /proc).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
        })
    })
}

/// Pushes a topology splitting the slots evenly over `primaries`.
fn push_topology(region: &str, primaries: &[&RegionNode]) {
    let ranges = split_evenly(primaries.len() as u16);
    let map = TopologyMap {
        epoch: 1,
        cluster: "meridian".into(),
        region: region.into(),
        shards: primaries
            .iter()
            .zip(ranges)
            .enumerate()
            .map(|(index, (node, range))| ShardTopology {
                index: index as u32,
                slots: vec![range],
                primary: NodeAddr {
                    id: node.id.clone(),
                    ip: node.ip.clone(),
                    port: node.port,
                },
                replicas: Vec::new(),
            })
            .collect(),
    };
    let json = serde_json::to_string(&map).expect("json");
    for node in primaries {
        let reply: String = redis::cmd("MERIDIAN.TOPOLOGY")
            .arg("SET")
            .arg(&json)
            .query(&mut node.redis())
            .expect("topology");
        assert_eq!(reply, "OK");
    }
}

/// Nodes `a-0` (region-a) and `b-0` (region-b) on `ips`, each its region's only
/// primary, linked both ways.
fn linked_pair(ips: [&str; 2], extra: &[&str]) -> (RegionNode, RegionNode) {
    let a0 = RegionNode::start(ips[0], "a-0", "region-a", extra);
    let b0 = RegionNode::start(ips[1], "b-0", "region-b", extra);
    push_topology("region-a", &[&a0]);
    push_topology("region-b", &[&b0]);
    push_peers(&[&a0], &[("region-b", &[&b0])]);
    push_peers(&[&b0], &[("region-a", &[&a0])]);
    wait_links_up(&[&a0, &b0]);
    (a0, b0)
}

/// Tells every node of `nodes` about the peer regions.
fn push_peers(nodes: &[&RegionNode], peers: &[(&str, &[&RegionNode])]) {
    let json = serde_json::to_string(
        &peers
            .iter()
            .map(|(region, members)| {
                serde_json::json!({
                    "region": region,
                    "seeds": members.iter().map(|node| node.seed()).collect::<Vec<_>>(),
                })
            })
            .collect::<Vec<_>>(),
    )
    .expect("json");
    for node in nodes {
        let reply: String = redis::cmd("MERIDIAN.PEERS")
            .arg("SET")
            .arg(&json)
            .query(&mut node.redis())
            .expect("peers");
        assert_eq!(reply, "OK");
    }
}

fn peers_status(node: &RegionNode) -> serde_json::Value {
    let text: String = redis::cmd("MERIDIAN.PEERS")
        .arg("GET")
        .query(&mut node.redis())
        .expect("peers get");
    serde_json::from_str(&text).expect("status json")
}

fn wait_links_up(nodes: &[&RegionNode]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in nodes {
        loop {
            let status = peers_status(node);
            let all_up = status["peers"]
                .as_array()
                .is_some_and(|peers| peers.iter().all(|peer| peer["up"] == true));
            if all_up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "links of {} not up: {status}",
                node.id
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The node of `nodes` owning `key`'s slot.
fn owner<'a>(nodes: &[&'a RegionNode], key: &str) -> &'a RegionNode {
    let slot = meridian_topology::key_slot(key.as_bytes());
    let ranges = split_evenly(nodes.len() as u16);
    let index = ranges
        .iter()
        .position(|range| range.contains(slot))
        .expect("slot owner");
    nodes[index]
}

fn get(node: &RegionNode, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut node.redis())
        .expect("get")
}

fn set(node: &RegionNode, key: &str, value: &str) -> redis::RedisResult<String> {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut node.redis())
}

fn exists(node: &RegionNode, key: &str) -> bool {
    let count: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query(&mut node.redis())
        .expect("exists");
    count == 1
}

#[test]
fn eventual_invalidation_and_patterns_across_three_regions() {
    let a0 = RegionNode::start("127.0.61.1", "a-0", "region-a", &[]);
    let a1 = RegionNode::start("127.0.61.2", "a-1", "region-a", &[]);
    let b0 = RegionNode::start("127.0.61.3", "b-0", "region-b", &[]);
    let b1 = RegionNode::start("127.0.61.4", "b-1", "region-b", &[]);
    let c0 = RegionNode::start("127.0.61.5", "c-0", "region-c", &[]);
    let (a, b, c) = (vec![&a0, &a1], vec![&b0, &b1], vec![&c0]);
    push_topology("region-a", &a);
    push_topology("region-b", &b);
    push_topology("region-c", &c);
    push_peers(&a, &[("region-b", &b), ("region-c", &c)]);
    push_peers(&b, &[("region-a", &a), ("region-c", &c)]);
    push_peers(&c, &[("region-a", &a), ("region-b", &b)]);
    wait_links_up(&[&a0, &a1, &b0, &b1, &c0]);

    for index in 0..20 {
        let key = format!("user:{index}");
        set(owner(&b, &key), &key, "old").expect("set in b");
        set(owner(&c, &key), &key, "old").expect("set in c");
    }
    for index in 0..20 {
        let key = format!("user:{index}");
        set(owner(&a, &key), &key, "new").expect("set in a");
    }
    for index in 0..20 {
        let key = format!("user:{index}");
        wait_until(
            &format!("{key} invalidated"),
            Duration::from_secs(5),
            || get(owner(&b, &key), &key).is_none() && get(owner(&c, &key), &key).is_none(),
        );
        assert_eq!(get(owner(&a, &key), &key).as_deref(), Some("new"));
    }

    // pattern invalidation from region c reaches every primary of a and b
    // each region caches its own keys (a write in one region invalidates the others')
    for index in 0..10 {
        let key = format!("page:a{index}");
        set(owner(&a, &key), &key, "x").expect("set a");
        let key = format!("page:b{index}");
        set(owner(&b, &key), &key, "x").expect("set b");
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!((0..10).all(|index| {
        let key = format!("page:a{index}");
        exists(owner(&a, &key), &key)
    }));
    set(owner(&a, "keep"), "keep", "x").expect("set keep");
    let _: i64 = redis::cmd("INVALIDATE")
        .arg("page:*")
        .query(&mut c0.redis())
        .expect("invalidate");
    wait_until("pattern invalidated", Duration::from_secs(5), || {
        (0..10).all(|index| {
            let (in_a, in_b) = (format!("page:a{index}"), format!("page:b{index}"));
            !exists(owner(&a, &in_a), &in_a) && !exists(owner(&b, &in_b), &in_b)
        })
    });
    assert!(exists(owner(&a, "keep"), "keep"));
    // events received by b from a are counted per peer
    let metrics_text = peers_status(&a0).to_string();
    assert!(metrics_text.contains("region-b"));
}

#[test]
fn strong_consistency_waits_for_peers_and_names_unreachable_ones() {
    let strong = ["--consistency", "strong", "--strong-timeout-ms", "400"];
    let (a0, b0) = linked_pair(["127.0.62.1", "127.0.62.2"], &strong);

    for round in 0..20 {
        let key = format!("k{round}");
        set(&b0, &key, "old").expect("set in b");
        assert_eq!(set(&a0, &key, "new").expect("strong set").as_str(), "OK");
        // acknowledged in a: b never serves the old value afterwards
        assert_eq!(get(&b0, &key), None, "stale copy of {key} in region-b");
    }

    // a transaction's and a script's writes answer inside their one reply (they held
    // a write's reply back as if it were alone, and sent it after the whole reply)
    let mut con = a0.redis();
    let (first, second): (String, i64) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("txn")
        .arg("1")
        .cmd("INCR")
        .arg("txn")
        .query(&mut con)
        .expect("EXEC");
    assert_eq!((first.as_str(), second), ("OK", 2));
    let scripted: i64 = redis::cmd("EVAL")
        .arg("redis.call('SET', KEYS[1], '5') return redis.call('INCR', KEYS[1])")
        .arg(1)
        .arg("scripted")
        .query(&mut con)
        .expect("EVAL");
    assert_eq!(scripted, 6);
    let pong: String = redis::cmd("PING").query(&mut con).expect("PING");
    assert_eq!(pong, "PONG", "one reply per command");

    // partition: region b frozen
    set(&b0, "frozen", "old").expect("set");
    b0.signal("-STOP");
    let started = Instant::now();
    let error = set(&a0, "frozen", "new").expect_err("strong write must time out");
    let text = error.to_string();
    assert!(text.contains("TIMEOUT"), "{text}");
    assert!(text.contains("region-b"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // applied locally all the same
    assert_eq!(get(&a0, "frozen").as_deref(), Some("new"));
    // heal: the queued invalidation arrives
    b0.signal("-CONT");
    wait_until("invalidation after heal", Duration::from_secs(10), || {
        get(&b0, "frozen").is_none()
    });
}

#[test]
fn replicate_mode_converges_last_writer_wins() {
    let mode = ["--cross-region-mode", "replicate"];
    let (a0, b0) = linked_pair(["127.0.63.1", "127.0.63.2"], &mode);

    redis::cmd("SET")
        .arg("ttl-key")
        .arg("v")
        .arg("EX")
        .arg(100)
        .query::<()>(&mut a0.redis())
        .expect("set ex");
    wait_until("replicated value", Duration::from_secs(5), || {
        get(&b0, "ttl-key").as_deref() == Some("v")
    });
    let ttl: i64 = redis::cmd("TTL")
        .arg("ttl-key")
        .query(&mut b0.redis())
        .expect("ttl");
    assert!((90..=100).contains(&ttl), "ttl {ttl}");

    write_at_once(&[(&a0, "a"), (&b0, "b")], 200, |con, name, round| {
        redis::cmd("SET")
            .arg(format!("hot{}", round % 5))
            .arg(format!("{name}-{round}"))
            .query::<()>(con)
            .expect("set");
    });
    for index in 0..5 {
        let key = format!("hot{index}");
        wait_until(&format!("{key} converged"), Duration::from_secs(5), || {
            let (left, right) = (get(&a0, &key), get(&b0, &key));
            left.is_some() && left == right
        });
    }
}

/// Runs `rounds` of `write` on each node (named) at the same time, one thread each.
fn write_at_once(
    nodes: &[(&RegionNode, &'static str)],
    rounds: usize,
    write: fn(&mut redis::Connection, &str, usize),
) {
    let writers: Vec<_> = nodes
        .iter()
        .map(|(node, name)| {
            let (url, name) = (format!("redis://{}:{}/", node.ip, node.port), *name);
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url)
                    .and_then(|client| client.get_connection())
                    .expect("connection");
                for round in 0..rounds {
                    write(&mut con, name, round);
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().expect("writer");
    }
}

fn query<T: redis::FromRedisValue>(node: &RegionNode, args: &[&str]) -> T {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command
        .query(&mut node.redis())
        .unwrap_or_else(|error| panic!("{args:?} on {}: {error}", node.id))
}

/// Every type's value as reads see it (a list in order, a hash, set and sorted
/// set sorted), so two regions' copies compare whatever their insertion order.
fn contents(node: &RegionNode, key: &str) -> Option<Vec<String>> {
    let kind: String = query(node, &["TYPE", key]);
    let mut items: Vec<String> = match kind.as_str() {
        "none" => return None,
        "string" => vec![query(node, &["GET", key])],
        "list" => return Some(query(node, &["LRANGE", key, "0", "-1"])),
        "hash" => query(node, &["HGETALL", key]),
        "set" => query(node, &["SMEMBERS", key]),
        "zset" => return Some(query(node, &["ZRANGE", key, "0", "-1", "WITHSCORES"])),
        other => panic!("unexpected type {other}"),
    };
    if kind == "hash" {
        let mut pairs: Vec<String> = items
            .chunks(2)
            .map(|pair| format!("{}={}", pair[0], pair[1]))
            .collect();
        pairs.sort();
        items = pairs;
    } else {
        items.sort();
    }
    items.insert(0, kind);
    Some(items)
}

#[test]
fn replicate_mode_ships_every_type_and_converges_last_writer_wins() {
    let mode = [
        "--cross-region-mode",
        "replicate",
        "--region-replicate-max-bytes",
        "4096",
    ];
    let (a0, b0) = linked_pair(["127.0.70.1", "127.0.70.2"], &mode);

    // every type arrives whole, with its TTL
    let _: i64 = query(&a0, &["RPUSH", "queue", "j1", "j2", "j3"]);
    let _: i64 = query(&a0, &["HSET", "user", "name", "ada", "visits", "3"]);
    let _: i64 = query(&a0, &["SADD", "tags", "red", "blue"]);
    let _: i64 = query(&a0, &["ZADD", "board", "10", "ann", "7.5", "bob"]);
    let _: i64 = query(&a0, &["SETBIT", "seen", "12", "1"]);
    let _: i64 = query(&a0, &["EXPIRE", "board", "100"]);
    for key in ["queue", "user", "tags", "board", "seen"] {
        wait_until(&format!("{key} replicated"), Duration::from_secs(5), || {
            contents(&b0, key).is_some() && contents(&b0, key) == contents(&a0, key)
        });
    }
    let ttl: i64 = query(&b0, &["TTL", "board"]);
    assert!((90..=100).contains(&ttl), "ttl {ttl}");
    // later writes replace the peer's copy: the last write wins per key
    let _: Option<String> = query(&a0, &["LPOP", "queue"]);
    let _: f64 = query(&a0, &["ZINCRBY", "board", "5", "bob"]);
    let _: i64 = query(&a0, &["SREM", "tags", "red"]);
    for key in ["queue", "board", "tags"] {
        wait_until(&format!("{key} updated"), Duration::from_secs(5), || {
            contents(&b0, key) == contents(&a0, key)
        });
    }
    // emptying a collection deletes the key there too
    let _: i64 = query(&a0, &["DEL", "user"]);
    wait_until("deleted hash", Duration::from_secs(5), || {
        contents(&b0, "user").is_none()
    });
    // a client's RESTORE is a write like any other
    let payload: Vec<u8> = redis::cmd("DUMP")
        .arg("tags")
        .query(&mut a0.redis())
        .expect("dump");
    let _: () = redis::cmd("RESTORE")
        .arg("restored")
        .arg(0)
        .arg(payload)
        .query(&mut a0.redis())
        .expect("restore");
    wait_until("restored key replicated", Duration::from_secs(5), || {
        contents(&b0, "restored") == contents(&a0, "tags")
    });

    // a value past --region-replicate-max-bytes is invalidated, not shipped
    let _: i64 = query(&b0, &["RPUSH", "big", "stale"]);
    wait_until("small list replicated", Duration::from_secs(5), || {
        contents(&a0, "big").is_some()
    });
    let item = "x".repeat(100);
    let items: Vec<&str> = std::iter::repeat_n(item.as_str(), 100).collect();
    let mut push = vec!["RPUSH", "big"];
    push.extend(items);
    let _: i64 = query(&a0, &push);
    wait_until("big list invalidated", Duration::from_secs(5), || {
        contents(&b0, "big").is_none()
    });
    assert_eq!(query::<i64>(&a0, &["LLEN", "big"]), 101);

    // both regions write the same collections at once: they converge on one value
    write_at_once(&[(&a0, "a"), (&b0, "b")], 150, |con, name, round| {
        let member = format!("{name}-{round}");
        redis::pipe()
            .cmd("LPUSH")
            .arg(format!("hot-list{}", round % 3))
            .arg(&member)
            .ignore()
            .cmd("ZINCRBY")
            .arg("hot-board")
            .arg(1)
            .arg(name)
            .ignore()
            .cmd("HSET")
            .arg("hot-hash")
            .arg(name)
            .arg(round)
            .ignore()
            .query::<()>(con)
            .expect("writes");
    });
    for key in [
        "hot-list0",
        "hot-list1",
        "hot-list2",
        "hot-board",
        "hot-hash",
    ] {
        wait_until(&format!("{key} converged"), Duration::from_secs(5), || {
            let (left, right) = (contents(&a0, key), contents(&b0, key));
            left.is_some() && left == right
        });
    }
}

/// A region-b primary of an older release: its link server knows no
/// LINK.FEATURES (answers it with an error) and records the kinds of the events
/// it is sent.
fn old_release_peer(ip: &str) -> Arc<Mutex<Vec<(String, String)>>> {
    let listener = TcpListener::bind((ip, LINK_PORT)).expect("listen");
    let events = Arc::new(Mutex::new(Vec::new()));
    let recorded = events.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let recorded = recorded.clone();
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                while let Some(argv) = read_request(&mut reader) {
                    let reply: &[u8] = match argv[0].as_str() {
                        "LINK.HELLO" => b"+OK\r\n",
                        "LINK.TOPOLOGY" => b"$-1\r\n",
                        "LINK.EVENT" => {
                            recorded
                                .lock()
                                .unwrap()
                                .push((argv[1].clone(), argv[2].clone()));
                            b"+OK\r\n"
                        }
                        _ => b"-ERR unknown link request\r\n",
                    };
                    if writer.write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    events
}

/// One RESP request (an array of bulk strings), None once the link closed.
fn read_request(reader: &mut impl BufRead) -> Option<Vec<String>> {
    let mut line = String::new();
    reader.read_line(&mut line).ok().filter(|read| *read > 0)?;
    let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut argv = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut data = vec![0; len + 2];
        reader.read_exact(&mut data).ok()?;
        data.truncate(len);
        argv.push(String::from_utf8_lossy(&data).into_owned());
    }
    Some(argv)
}

#[test]
fn a_peer_of_an_older_release_is_sent_invalidations_for_values_it_cannot_store() {
    let events = old_release_peer("127.0.70.4");
    let mode = ["--cross-region-mode", "replicate"];
    let a0 = RegionNode::start("127.0.70.3", "a-0", "region-a", &mode);
    push_topology("region-a", &[&a0]);
    let json = r#"[{"region":"region-b","seeds":["127.0.70.4:16379"]}]"#;
    let _: String = query(&a0, &["MERIDIAN.PEERS", "SET", json]);
    wait_links_up(&[&a0]);
    let _: i64 = query(&a0, &["RPUSH", "queue", "j1"]);
    let _: () = query(&a0, &["SET", "plain", "v"]);
    wait_until("events delivered", Duration::from_secs(5), || {
        events.lock().unwrap().len() == 2
    });
    assert_eq!(
        *events.lock().unwrap(),
        vec![
            ("key".to_string(), "queue".to_string()),
            ("set".to_string(), "plain".to_string())
        ]
    );
}

/// A one-request-at-a-time HTTP origin whose answers wait for the test.
struct BlockingOrigin {
    port: u16,
    release: mpsc::Sender<()>,
    requests: Arc<Mutex<usize>>,
}

impl BlockingOrigin {
    fn start(ip: &str, body: &'static str) -> BlockingOrigin {
        let listener = TcpListener::bind((ip, 0)).expect("origin listener");
        let port = listener.local_addr().expect("addr").port();
        let (release, released) = mpsc::channel::<()>();
        let requests = Arc::new(Mutex::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|read| read > 2) {
                    line.clear();
                }
                *counter.lock().expect("lock") += 1;
                if released.recv().is_err() {
                    return;
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes());
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest);
            }
        });
        BlockingOrigin {
            port,
            release,
            requests,
        }
    }
}

#[test]
fn stale_origin_fill_does_not_undo_a_remote_invalidation() {
    let origin = BlockingOrigin::start("127.0.64.9", "old-from-origin");
    let url = format!("http://127.0.64.9:{}", origin.port);
    let a0 = RegionNode::start("127.0.64.1", "a-0", "region-a", &[]);
    let b0 = RegionNode::start(
        "127.0.64.2",
        "b-0",
        "region-b",
        &[
            "--origin-url",
            &url,
            "--origin-read-through",
            "--origin-timeout-ms",
            "10000",
        ],
    );
    push_topology("region-a", &[&a0]);
    push_topology("region-b", &[&b0]);
    push_peers(&[&a0], &[("region-b", &[&b0])]);
    push_peers(&[&b0], &[("region-a", &[&a0])]);
    wait_links_up(&[&a0, &b0]);

    // 1. a miss in b starts a fill (version v1) that blocks in the origin
    let (ip, port) = (b0.ip.clone(), b0.port);
    let reader = std::thread::spawn(move || {
        let mut con = redis::Client::open(format!("redis://{ip}:{port}/"))
            .and_then(|client| client.get_connection())
            .expect("connection");
        redis::cmd("GET")
            .arg("item")
            .query::<Option<String>>(&mut con)
            .expect("get")
    });
    wait_until("origin request started", Duration::from_secs(5), || {
        *origin.requests.lock().expect("lock") == 1
    });
    std::thread::sleep(Duration::from_millis(20));
    // 2. a write in a invalidates b (version v2 > v1) while the fill is in flight
    set(&a0, "item", "new").expect("set in a");
    wait_until("invalidation received by b", Duration::from_secs(5), || {
        let status = peers_status(&a0);
        status["peers"][0]["queued"] == 0
    });
    // 3. the fill completes with the old value: served once, never cached
    origin.release.send(()).expect("release");
    assert_eq!(
        reader.join().expect("reader").as_deref(),
        Some("old-from-origin")
    );
    assert!(
        !exists(&b0, "item"),
        "stale fill was cached after the invalidation"
    );
}

#[test]
fn partition_overflow_marks_slots_dirty_and_invalidates_them_on_heal() {
    let a0 = RegionNode::start(
        "127.0.65.1",
        "a-0",
        "region-a",
        &["--region-queue-limit", "3"],
    );
    let b0 = RegionNode::start("127.0.65.2", "b-0", "region-b", &[]);
    push_topology("region-a", &[&a0]);
    push_topology("region-b", &[&b0]);
    push_peers(&[&a0], &[("region-b", &[&b0])]);
    wait_links_up(&[&a0]);
    for index in 0..30 {
        set(&b0, &format!("o{index}"), "old").expect("set b");
    }
    b0.signal("-STOP");
    for index in 0..30 {
        set(&a0, &format!("o{index}"), "new").expect("eventual write keeps serving");
    }
    let status = peers_status(&a0);
    assert!(
        status["peers"][0]["dirty_slots"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    b0.signal("-CONT");
    wait_until("dirty slots invalidated", Duration::from_secs(15), || {
        (0..30).all(|index| !exists(&b0, &format!("o{index}")))
    });
    wait_until("dirty set drained", Duration::from_secs(5), || {
        peers_status(&a0)["peers"][0]["dirty_slots"] == 0
    });
}

#[test]
fn links_from_another_cluster_or_with_a_wrong_password_are_refused() {
    let a0 = RegionNode::start(
        "127.0.66.1",
        "a-0",
        "region-a",
        &["--requirepass", "secret"],
    );
    let other = RegionNode::start(
        "127.0.66.2",
        "x-0",
        "region-x",
        &["--cluster", "other", "--requirepass", "secret"],
    );
    let wrong = RegionNode::start("127.0.66.3", "w-0", "region-w", &["--requirepass", "nope"]);
    for node in [&other, &wrong] {
        let mut con = redis::Client::open(format!(
            "redis://:{}@{}:{}/",
            if node.id == "w-0" { "nope" } else { "secret" },
            node.ip,
            node.port
        ))
        .and_then(|client| client.get_connection())
        .expect("connection");
        let json = format!(r#"[{{"region":"region-a","seeds":["{}"]}}]"#, a0.seed());
        let reply: String = redis::cmd("MERIDIAN.PEERS")
            .arg("SET")
            .arg(json)
            .query(&mut con)
            .expect("peers");
        assert_eq!(reply, "OK");
    }
    for (node, password) in [(&other, "secret"), (&wrong, "nope")] {
        let mut con =
            redis::Client::open(format!("redis://:{password}@{}:{}/", node.ip, node.port))
                .and_then(|client| client.get_connection())
                .expect("connection");
        wait_until("refusal recorded", Duration::from_secs(5), || {
            let text: String = redis::cmd("MERIDIAN.PEERS")
                .arg("GET")
                .query(&mut con)
                .expect("get");
            let status: serde_json::Value = serde_json::from_str(&text).expect("json");
            status["peers"][0]["up"] == false
                && status["peers"][0]["last_error"]
                    .as_str()
                    .is_some_and(|error| error.contains("DENIED"))
        });
    }
}

/// `--region-link-user`: the hello names the ACL user, which the peer checks.
#[test]
fn region_links_log_in_as_their_acl_user() {
    let file = std::env::temp_dir().join(format!("meridian-regions-{}.acl", std::process::id()));
    std::fs::write(&file, "user link on nopass ~* -@all +invalidate\n").expect("ACL file");
    let a0 = RegionNode::start(
        "127.0.69.1",
        "a-0",
        "region-a",
        &["--acl-file", file.to_str().expect("path")],
    );
    let b0 = RegionNode::start(
        "127.0.69.2",
        "b-0",
        "region-b",
        &["--region-link-user", "link"],
    );
    let c0 = RegionNode::start(
        "127.0.69.3",
        "c-0",
        "region-c",
        &["--region-link-user", "nobody"],
    );
    push_topology("region-a", &[&a0]);
    push_topology("region-b", &[&b0]);
    push_topology("region-c", &[&c0]);
    push_peers(&[&b0, &c0], &[("region-a", &[&a0])]);
    wait_links_up(&[&b0]);
    // b's writes reach a over the link its user opened
    set(&a0, "k", "cached").expect("set in a");
    set(&b0, "k", "new").expect("set in b");
    wait_until("k invalidated in a", Duration::from_secs(5), || {
        get(&a0, "k").is_none()
    });
    // an unknown user is refused like a wrong password
    wait_until("c refused", Duration::from_secs(5), || {
        let status = peers_status(&c0);
        status["peers"][0]["up"] == false
            && status["peers"][0]["last_error"]
                .as_str()
                .is_some_and(|error| error.contains("DENIED wrong password"))
    });
    let _ = std::fs::remove_file(file);
}

/// Sends `POST /invalidate` to a node's HTTP API; returns the status line and body.
fn http_invalidate(ip: &str, port: u16, pattern: &str) -> (String, String) {
    let body = serde_json::json!({ "pattern": pattern }).to_string();
    let mut stream = TcpStream::connect((ip, port)).expect("http connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST /invalidate HTTP/1.1\r\nHost: {ip}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("http write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("http read");
    let status = response.lines().next().unwrap_or_default().to_string();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

#[test]
fn pattern_invalidation_reaches_every_primary_of_the_own_region_before_the_reply() {
    let http_port = free_port("127.0.66.1");
    let a0 = RegionNode::start(
        "127.0.66.1",
        "a-0",
        "region-a",
        &["--http-port", &http_port.to_string()],
    );
    let a1 = RegionNode::start("127.0.66.2", "a-1", "region-a", &[]);
    let a2 = RegionNode::start("127.0.66.3", "a-2", "region-a", &[]);
    let b0 = RegionNode::start("127.0.66.4", "b-0", "region-b", &[]);
    let b1 = RegionNode::start("127.0.66.5", "b-1", "region-b", &[]);
    let (a, b) = (vec![&a0, &a1, &a2], vec![&b0, &b1]);
    push_topology("region-a", &a);
    push_topology("region-b", &b);
    push_peers(&a, &[("region-b", &b)]);
    push_peers(&b, &[("region-a", &a)]);
    wait_links_up(&[&a0, &a1, &a2, &b0, &b1]);

    // A write in one region invalidates the other's copy, so each region caches its own
    // keys under the prefix: `<prefix>:<index>` in region-a, `<prefix>:b<index>` in region-b.
    let fill = |prefix: &str| {
        for key in keys_of(prefix) {
            set(owner(&a, &key), &key, "x").expect("set a");
        }
        for key in keys_of_b(prefix) {
            set(owner(&b, &key), &key, "x").expect("set b");
        }
        set(owner(&a, "keep"), "keep", "x").expect("set keep");
        std::thread::sleep(Duration::from_millis(100));
        assert!(keys_of(prefix).all(|key| exists(owner(&a, &key), &key)));
    };
    fn keys_of(prefix: &str) -> impl Iterator<Item = String> + '_ {
        (0..30).map(move |index| format!("{prefix}:{index}"))
    }
    fn keys_of_b(prefix: &str) -> impl Iterator<Item = String> + '_ {
        (0..30).map(move |index| format!("{prefix}:b{index}"))
    }
    // the keys really are spread over all three primaries
    let owners: std::collections::BTreeSet<String> = keys_of("session")
        .map(|key| owner(&a, &key).id.clone())
        .collect();
    assert_eq!(owners.len(), 3);

    // RESP: when INVALIDATE returns, no primary of region-a holds a match
    fill("session");
    let deleted: i64 = redis::cmd("INVALIDATE")
        .arg("session:*")
        .query(&mut a0.redis())
        .expect("invalidate");
    assert!(deleted > 0 && deleted < 30, "a0's own count: {deleted}");
    for key in keys_of("session") {
        assert!(!exists(owner(&a, &key), &key), "{key} survived in region-a");
    }
    wait_until("region-b dropped session:*", Duration::from_secs(5), || {
        keys_of_b("session").all(|key| !exists(owner(&b, &key), &key))
    });
    assert!(exists(owner(&a, "keep"), "keep"));

    // HTTP: same through POST /invalidate on a0
    fill("page");
    let (status, body) = http_invalidate("127.0.66.1", http_port, "page:*");
    assert!(status.contains("200"), "{status}: {body}");
    for key in keys_of("page") {
        assert!(!exists(owner(&a, &key), &key), "{key} survived in region-a");
    }
    wait_until("region-b dropped page:*", Duration::from_secs(5), || {
        keys_of_b("page").all(|key| !exists(owner(&b, &key), &key))
    });

    // a primary that cannot be reached is named in the error, the others still drop
    fill("cart");
    a2.signal("-STOP");
    let refused: redis::RedisResult<i64> = redis::cmd("INVALIDATE")
        .arg("cart:*")
        .query(&mut a0.redis());
    a2.signal("-CONT");
    let error = refused.expect_err("a stopped primary cannot confirm");
    assert!(
        error.to_string().contains("127.0.66.3"),
        "error names the unreachable primary: {error}"
    );
    for key in keys_of("cart").filter(|key| owner(&a, key).id == "a-1") {
        assert!(!exists(&a1, &key), "{key} survived on a-1");
    }

    // LOCAL only touches the node it is sent to; arity is checked
    fill("solo");
    let _: i64 = redis::cmd("INVALIDATE")
        .arg("solo:*")
        .arg("LOCAL")
        .query(&mut a1.redis())
        .expect("local invalidate");
    assert!(
        keys_of("solo")
            .filter(|key| owner(&a, key).id == "a-0")
            .all(|key| exists(&a0, &key))
    );
    let bad: redis::RedisResult<i64> = redis::cmd("INVALIDATE")
        .arg("solo:*")
        .arg("EVERYWHERE")
        .query(&mut a1.redis());
    assert!(bad.is_err());
}

#[test]
fn events_follow_a_slot_owner_change_in_the_peer_region() {
    let a0 = RegionNode::start("127.0.67.1", "a-0", "region-a", &[]);
    let b0 = RegionNode::start("127.0.67.2", "b-0", "region-b", &[]);
    let b1 = RegionNode::start("127.0.67.3", "b-1", "region-b", &[]);
    let b = [&b0, &b1];
    push_topology("region-a", &[&a0]);
    push_topology("region-b", &b);
    push_peers(&[&a0], &[("region-b", &b)]);
    wait_links_up(&[&a0]);
    let keys: Vec<String> = (0..200)
        .map(|index| format!("moved:{index}"))
        .filter(|key| owner(&b, key).id == "b-1")
        .take(20)
        .collect();
    assert_eq!(keys.len(), 20);

    // b-1 hands every slot to b-0 (epoch 2, data not moved); region-a still
    // routes by epoch 1 until it relearns: b-1 answers MOVED and the events
    // must be routed again to b-0
    let node = |node: &RegionNode| NodeAddr {
        id: node.id.clone(),
        ip: node.ip.clone(),
        port: node.port,
    };
    let map = TopologyMap {
        epoch: 2,
        cluster: "meridian".into(),
        region: "region-b".into(),
        shards: vec![
            ShardTopology {
                index: 0,
                slots: split_evenly(1),
                primary: node(&b0),
                replicas: Vec::new(),
            },
            ShardTopology {
                index: 1,
                slots: Vec::new(),
                primary: node(&b1),
                replicas: Vec::new(),
            },
        ],
    };
    let json = serde_json::to_string(&map).expect("json");
    for member in b {
        let reply: String = redis::cmd("MERIDIAN.TOPOLOGY")
            .arg("SET")
            .arg(&json)
            .query(&mut member.redis())
            .expect("topology");
        assert_eq!(reply, "OK");
    }
    for key in &keys {
        set(&b0, key, "old").expect("cache in b-0, the new owner");
    }
    for key in &keys {
        set(&a0, key, "new").expect("write in region-a");
    }
    wait_until(
        "invalidations delivered to the new owner",
        Duration::from_secs(10),
        || keys.iter().all(|key| !exists(&b0, key)),
    );
    wait_until("queue drained at epoch 2", Duration::from_secs(5), || {
        let status = peers_status(&a0);
        status["peers"][0]["queued"] == 0 && status["peers"][0]["epoch"] == 2
    });
}

fn master_repl_offset(node: &RegionNode) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut node.redis())
        .expect("info");
    info.lines()
        .find_map(|line| line.strip_prefix("master_repl_offset:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("master_repl_offset")
}

#[test]
fn link_events_wait_for_a_client_pause_on_the_receiving_primary() {
    let a0 = RegionNode::start("127.0.69.1", "a-0", "region-a", &[]);
    let b0 = RegionNode::start("127.0.69.2", "b-0", "region-b", &[]);
    push_topology("region-a", &[&a0]);
    push_topology("region-b", &[&b0]);
    push_peers(&[&a0], &[("region-b", &[&b0])]);
    push_peers(&[&b0], &[("region-a", &[&a0])]);
    wait_links_up(&[&a0, &b0]);

    set(&b0, "held", "old").expect("set in b");
    let mut admin = b0.redis();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10_000)
        .arg("WRITE")
        .query(&mut admin)
        .expect("pause");
    let offset = master_repl_offset(&b0);
    set(&a0, "held", "new").expect("set in a");
    // The invalidation reaches b but is not applied while b is paused: a handover
    // relies on a paused primary's data and offset standing still.
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(get(&b0, "held").as_deref(), Some("old"));
    assert_eq!(
        master_repl_offset(&b0),
        offset,
        "offset moved during the pause"
    );
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut admin)
        .expect("unpause");
    wait_until(
        "invalidation after UNPAUSE",
        Duration::from_secs(10),
        || get(&b0, "held").is_none(),
    );
}

/// libfaketime's preload library for multi-threaded programs (Debian package
/// `faketime`), wherever the architecture puts it.
fn libfaketime() -> Option<PathBuf> {
    let multiarch = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("faketime/libfaketimeMT.so.1"));
    multiarch
        .chain([PathBuf::from("/usr/lib/faketime/libfaketimeMT.so.1")])
        .find(|path| path.is_file())
}

/// The node's wall clock (`TIME`) in Unix milliseconds.
fn clock_ms(node: &RegionNode) -> i64 {
    let (seconds, micros): (i64, i64) = redis::cmd("TIME").query(&mut node.redis()).expect("time");
    seconds * 1000 + micros / 1000
}

fn regions_info(node: &RegionNode, field: &str) -> String {
    let info: String = redis::cmd("INFO")
        .arg("regions")
        .query(&mut node.redis())
        .expect("info");
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_default()
        .to_string()
}

/// Region a on the real clock, region b `offset_s` seconds ahead, linked both
/// ways in replicate mode with a 5 s drift bound; None (after printing why)
/// when libfaketime is missing.
fn skewed_regions(ips: [&str; 2], offset_s: i64) -> Option<(RegionNode, RegionNode)> {
    let Some(library) = libfaketime() else {
        eprintln!(
            "SKIP: libfaketime not installed (Debian package faketime; cargo xtask installs it)"
        );
        return None;
    };
    let args = [
        "--cross-region-mode",
        "replicate",
        "--max-clock-drift-ms",
        "5000",
    ];
    let a0 = RegionNode::start(ips[0], "a-0", "region-a", &args);
    let b0 = RegionNode::start_skewed(ips[1], "b-0", "region-b", &args, &library, offset_s);
    // the skew is real, not a preload that silently did nothing
    let skew = clock_ms(&b0) - clock_ms(&a0);
    let wanted = offset_s * 1000;
    assert!(
        (wanted - 1000..wanted + 1000).contains(&skew),
        "region-b's clock is {skew} ms off, not {wanted}"
    );
    push_topology("region-a", &[&a0]);
    push_topology("region-b", &[&b0]);
    push_peers(&[&a0], &[("region-b", &[&b0])]);
    push_peers(&[&b0], &[("region-a", &[&a0])]);
    wait_links_up(&[&a0, &b0]);
    Some((a0, b0))
}

#[test]
fn a_clock_skew_under_the_bound_keeps_last_writer_wins_in_write_order() {
    let Some((a0, b0)) = skewed_regions(["127.0.74.1", "127.0.74.2"], 3) else {
        return;
    };
    // Writes alternate between the regions, each after the previous one
    // arrived everywhere. Region b stamps 3 s ahead; without the HLC receive
    // rule, region a's next write would carry an older version than b's and
    // be refused in b as stale, and the regions would diverge.
    for round in 0..6 {
        let (writer, reader) = if round % 2 == 0 {
            (&a0, &b0)
        } else {
            (&b0, &a0)
        };
        let value = format!("{}-{round}", writer.id);
        set(writer, "skewed", &value).expect("set");
        wait_until(
            &format!("{value} replicated to {}", reader.id),
            Duration::from_secs(5),
            || get(reader, "skewed").as_deref() == Some(value.as_str()),
        );
        assert_eq!(get(writer, "skewed").as_deref(), Some(value.as_str()));
    }
    for node in [&a0, &b0] {
        assert_eq!(regions_info(node, "region_clock_drift_refusals"), "0");
    }
}

#[test]
fn a_clock_skew_beyond_the_bound_is_refused_and_applies_nothing() {
    let Some((a0, b0)) = skewed_regions(["127.0.75.1", "127.0.75.2"], 60) else {
        return;
    };
    set(&a0, "k", "from-a").expect("set in a");
    wait_until("a's write in b", Duration::from_secs(5), || {
        get(&b0, "k").as_deref() == Some("from-a")
    });

    // b stamps its write 60 s ahead of a's clock: a refuses the link (until
    // its own clock comes within the bound of that stamp, 55 s later)
    set(&b0, "k", "from-b").expect("set in b");
    wait_until("refusal counted in a", Duration::from_secs(10), || {
        regions_info(&a0, "region_clock_drift_refusals") != "0"
    });
    let refusal = regions_info(&a0, "region_last_link_refusal");
    assert!(
        refusal.starts_with("CLOCKDRIFT event from region 'region-b' is ")
            && refusal.contains(" ms ahead of this node's clock (limit 5000 ms"),
        "{refusal}"
    );
    // b's side of the link shows why it is down, and keeps the event
    wait_until(
        "b's link down with the reason",
        Duration::from_secs(10),
        || {
            let status = peers_status(&b0);
            let peer = &status["peers"][0];
            peer["up"] == false
                && peer["last_error"]
                    .as_str()
                    .is_some_and(|error| error.contains("CLOCKDRIFT"))
        },
    );
    assert!(peers_status(&b0)["peers"][0]["queued"].as_u64() >= Some(1));
    // The refusal lasts until the clocks are fixed: b's link stays down (reconnecting
    // is no sign of health) and retries with a growing backoff (up to 2 s), not in a
    // loop that hammers a with the refused event.
    let counted = |node: &RegionNode| -> u64 {
        regions_info(node, "region_clock_drift_refusals")
            .parse()
            .expect("a count")
    };
    let before = counted(&a0);
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(4) {
        let status = peers_status(&b0);
        assert_eq!(
            status["peers"][0]["up"], false,
            "b's link reported up while a refuses its clock: {status}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let retries = counted(&a0) - before;
    assert!(
        retries <= 8,
        "{retries} refused retries in 4 s: the lane must back off"
    );
    // nothing from the future was applied in a
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(get(&a0, "k").as_deref(), Some("from-a"));
    // the other direction still works: a's clock is behind b's, not ahead
    set(&a0, "k2", "from-a").expect("set k2 in a");
    wait_until("a's next write in b", Duration::from_secs(5), || {
        get(&b0, "k2").as_deref() == Some("from-a")
    });
    assert_eq!(regions_info(&a0, "region_max_clock_drift_ms"), "5000");
}

/// A write in region-b to a key whose slot region-a is migrating between its
/// primaries: the source answers the invalidation TRYAGAIN (the key already left for
/// the destination), region-b's link offers it again until region-a's map moved the
/// slot, then follows the MOVED to the destination, which drops its stale copy. The
/// link stays up throughout. Before, the source acknowledged the event without
/// applying it anywhere and the destination served the old value for good.
#[test]
fn an_invalidation_for_a_migrating_slot_reaches_the_key_on_the_destination() {
    let a0 = RegionNode::start("127.0.68.1", "a-0", "region-a", &[]);
    let a1 = RegionNode::start("127.0.68.2", "a-1", "region-a", &[]);
    let b0 = RegionNode::start("127.0.68.3", "b-0", "region-b", &[]);
    push_topology("region-a", &[&a0, &a1]);
    push_topology("region-b", &[&b0]);
    push_peers(&[&a0, &a1], &[("region-b", &[&b0])]);
    push_peers(&[&b0], &[("region-a", &[&a0, &a1])]);
    wait_links_up(&[&a0, &a1, &b0]);

    let key = (0..)
        .map(|n| format!("moving:{n}"))
        .find(|key| owner(&[&a0, &a1], key).id == "a-0")
        .expect("a key of a-0");
    let slot = meridian_topology::key_slot(key.as_bytes());
    set(&a0, &key, "old").expect("set");
    // region-a moves the key's slot from a-0 to a-1, and this key with it
    let (id_a0, id_a1) = (
        meridian_topology::cluster_node_id("a-0"),
        meridian_topology::cluster_node_id("a-1"),
    );
    let slot_text = slot.to_string();
    let ok = |node: &RegionNode, args: &[&str]| {
        let reply: String = redis::cmd(args[0])
            .arg(&args[1..])
            .query(&mut node.redis())
            .expect("command");
        assert_eq!(reply, "OK", "{args:?}");
    };
    ok(
        &a1,
        &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &id_a0],
    );
    ok(
        &a0,
        &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &id_a1],
    );
    ok(
        &a0,
        &["MIGRATE", &a1.ip, &a1.port.to_string(), &key, "0", "5000"],
    );

    // region-b writes the key: its invalidation must find the copy on a-1
    set(&b0, &key, "new").expect("set in region-b");
    std::thread::sleep(Duration::from_millis(500));
    let asking_get = |node: &RegionNode| -> Option<String> {
        let mut connection = node.redis();
        redis::cmd("ASKING").exec(&mut connection).expect("asking");
        redis::cmd("GET")
            .arg(&key)
            .query(&mut connection)
            .expect("get")
    };
    assert_eq!(
        asking_get(&a1).as_deref(),
        Some("old"),
        "nothing settles the event while the slot is migrating"
    );

    // region-a's map moves the slot to a-1
    let node_addr = |node: &RegionNode| NodeAddr {
        id: node.id.clone(),
        ip: node.ip.clone(),
        port: node.port,
    };
    let halves = split_evenly(2);
    let range = |start: u16, end: u16| meridian_topology::SlotRange { start, end };
    // a-0 keeps its half without the slot; a-1 gains the slot
    let a0_ranges: Vec<_> = [
        (slot > halves[0].start).then(|| range(halves[0].start, slot - 1)),
        (slot < halves[0].end).then(|| range(slot + 1, halves[0].end)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let a1_ranges = vec![range(slot, slot), halves[1]];
    let map = TopologyMap {
        epoch: 2,
        cluster: "meridian".into(),
        region: "region-a".into(),
        shards: vec![
            ShardTopology {
                index: 0,
                slots: a0_ranges,
                primary: node_addr(&a0),
                replicas: Vec::new(),
            },
            ShardTopology {
                index: 1,
                slots: a1_ranges,
                primary: node_addr(&a1),
                replicas: Vec::new(),
            },
        ],
    };
    let json = serde_json::to_string(&map).expect("json");
    for node in [&a0, &a1] {
        ok(node, &["MERIDIAN.TOPOLOGY", "SET", &json]);
    }
    wait_until(
        "the invalidation reaches a-1",
        Duration::from_secs(10),
        || get(&a1, &key).is_none(),
    );
    assert_eq!(get(&b0, &key).as_deref(), Some("new"));
    let status = peers_status(&b0);
    assert!(
        status["peers"][0]["up"] == true,
        "the link never went down over TRYAGAIN: {status}"
    );
}

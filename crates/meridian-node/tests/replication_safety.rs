//! Replication against peers that misbehave (issue 14): a fake primary sending broken
//! snapshots and streams, a fake replica sending inflated and garbage ACKs, and a real
//! replica stopped (SIGSTOP) while its primary takes hundreds of megabytes of writes.
//! The node under test stays up, keeps its data, bounds its memory and reports why.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::node_process::wait_until;
use common::{Node, Reply, accept_replica, encode, info_field};

const KEYS: i64 = 1000;
/// `+FULLRESYNC` id of the fake primary.
const REPLID: &str = "fa4e000000000000000000000000000000000001";

fn start(node_id: &str, extra: &[&str]) -> Node {
    Node::start_named(node_id, 8, extra)
}

fn dbsize(node: &Node) -> i64 {
    match node.raw().cmd(&["DBSIZE"]) {
        Reply::Int(count) => count,
        other => panic!("DBSIZE: {other:?}"),
    }
}

fn load_keys(node: &Node, prefix: &str, count: i64, value: &[u8]) {
    let mut con = node.redis();
    let keys: Vec<i64> = (0..count).collect();
    for batch in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for index in batch {
            pipe.cmd("SET")
                .arg(format!("{prefix}:{index}"))
                .arg(value)
                .ignore();
        }
        pipe.query::<()>(&mut con).expect("load");
    }
}

/// A `/proc/<pid>/status` field in kB (VmRSS, VmHWM).
fn proc_kb(node: &Node, field: &str) -> u64 {
    node.status_kb(field)
}

/// The value of a metric line `name` (with its labels) on `/metrics`.
fn metric(node: &Node, name: &str) -> Option<f64> {
    let (_, body) = node.http_get("/metrics");
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

fn snapshot_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut record = vec![0u8];
    record.extend_from_slice(&(key.len() as u32).to_le_bytes());
    record.extend_from_slice(key);
    record.extend_from_slice(&0u64.to_le_bytes());
    record.extend_from_slice(&(value.len() as u32).to_le_bytes());
    record.extend_from_slice(value);
    record
}

/// `$<len>` and the payload of a valid snapshot holding `records`.
fn valid_snapshot(records: &[Vec<u8>]) -> Vec<u8> {
    let mut payload = b"MRDSNAP1".to_vec();
    for record in records {
        payload.extend_from_slice(record);
    }
    payload.push(0xff);
    let mut body = format!("${}\r\n", payload.len()).into_bytes();
    body.extend_from_slice(&payload);
    body
}

/// What one full-sync attempt of the fake primary sends after `+FULLRESYNC`, and the
/// failure reason the replica must report for it.
struct Offer {
    name: &'static str,
    body: Vec<u8>,
    /// Close the connection after the body (else keep it open, sending nothing).
    close: bool,
    reason: &'static str,
}

fn offers() -> Vec<Offer> {
    let mut huge_key = b"$100\r\nMRDSNAP1\x00".to_vec();
    huge_key.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut huge_count = b"$100\r\nMRDSNAP1\x01\x01\x00\x00\x00h".to_vec();
    huge_count.extend_from_slice(&0u64.to_le_bytes());
    huge_count.extend_from_slice(&50_000_000u32.to_le_bytes());
    let mut truncated = b"$1000\r\nMRDSNAP1".to_vec();
    truncated.extend_from_slice(&snapshot_record(b"k", b"v"));
    vec![
        Offer {
            name: "garbage type byte behind a 50 MB header",
            body: b"$50000000\r\nMRDSNAP1\x07garbage".to_vec(),
            close: false,
            reason: "corrupt",
        },
        Offer {
            name: "key length of 4 GiB",
            body: huge_key,
            close: false,
            reason: "corrupt",
        },
        Offer {
            name: "hash of 50 million fields in 100 bytes",
            body: huge_count,
            close: false,
            reason: "corrupt",
        },
        Offer {
            name: "no magic",
            body: b"$16\r\nRDB0011\xfa\x00\x00\x00\x00\x00\x00\x00\x00".to_vec(),
            close: false,
            reason: "corrupt",
        },
        Offer {
            name: "connection closed after 30 of 1000 bytes",
            body: truncated,
            close: true,
            reason: "truncated",
        },
        Offer {
            name: "negative length",
            body: b"$-1\r\n".to_vec(),
            close: false,
            reason: "bad_header",
        },
        Offer {
            name: "EOF-marker header (diskless RDB)",
            body: format!("$EOF:{}\r\n", "x".repeat(40)).into_bytes(),
            close: false,
            reason: "bad_header",
        },
        Offer {
            name: "a 16 GB snapshot declared",
            body: b"$17179869184\r\nMRDSNAP1".to_vec(),
            close: false,
            reason: "too_large",
        },
        Offer {
            name: "a 50 MB snapshot that stops after its magic",
            body: b"$50000000\r\nMRDSNAP1".to_vec(),
            close: false,
            reason: "timeout",
        },
    ]
}

fn sync_failures(replica: &Node) -> u64 {
    info_field(replica, "replication", "master_sync_failures")
        .parse()
        .expect("master_sync_failures")
}

/// Waits for the replica to count one more failed sync than `before`, and checks the
/// reason it reports, that it answers, and that it still holds `keys` keys.
fn assert_failed_and_kept(replica: &Node, before: u64, reason: &str, keys: i64, what: &str) {
    wait_until(what, Duration::from_secs(20), || {
        sync_failures(replica) > before
    });
    let error = info_field(replica, "replication", "master_last_sync_error");
    assert!(error.starts_with(&format!("{reason}: ")), "{what}: {error}");
    assert_eq!(replica.raw().cmd(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(dbsize(replica), keys, "{what}: the replica lost its data");
}

/// A fake primary offers broken snapshots of every kind: each sync fails with its
/// reason in INFO and the metrics, the replica keeps answering and keeps its keys,
/// and retries. Then a valid sync, and broken streams after it.
#[test]
fn a_hostile_primary_cannot_break_or_empty_a_replica() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("fake primary");
    let port = listener.local_addr().expect("addr").port();
    let replica = start(
        "replica",
        &[
            "--maxmemory",
            "100mb",
            "--repl-timeout",
            "2",
            "--client-query-buffer-limit",
            "1mb",
        ],
    );
    load_keys(&replica, "own", KEYS, b"value");
    let rss_before = proc_kb(&replica, "VmRSS");
    let reply = replica
        .raw()
        .cmd(&["REPLICAOF", "127.0.0.1", &port.to_string()]);
    assert_eq!(reply, Reply::ok());
    let mut expected: Vec<(&str, u64)> = Vec::new();
    for offer in offers() {
        let before = sync_failures(&replica);
        let (reader, mut writer, psync) = accept_replica(&listener);
        assert_eq!(
            psync[1..],
            ["?".to_string(), "-1".to_string()],
            "{}",
            offer.name
        );
        writer
            .write_all(format!("+FULLRESYNC {REPLID} 100\r\n").as_bytes())
            .expect("write");
        writer.write_all(&offer.body).expect("write");
        if offer.close {
            drop((reader, writer));
            assert_failed_and_kept(&replica, before, offer.reason, KEYS, offer.name);
        } else {
            // the replica gives up on its own (without waiting for the declared bytes,
            // but for the timeout case); the connection stays open until then
            assert_failed_and_kept(&replica, before, offer.reason, KEYS, offer.name);
            drop((reader, writer));
        }
        match expected
            .iter_mut()
            .find(|(reason, _)| *reason == offer.reason)
        {
            Some((_, count)) => *count += 1,
            None => expected.push((offer.reason, 1)),
        }
    }
    assert_eq!(
        info_field(&replica, "replication", "master_link_status"),
        "down"
    );
    for (reason, count) in &expected {
        let name = format!("meridian_repl_sync_failures_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&replica, &name), Some(*count as f64), "{name}");
    }
    assert_eq!(
        info_field(&replica, "stats", "sync_failures"),
        offers().len().to_string()
    );
    // a declared 50 MB or 16 GB was never reserved
    let rss_after = proc_kb(&replica, "VmRSS");
    assert!(
        rss_after < rss_before + 20 * 1024,
        "replica RSS grew from {rss_before} kB to {rss_after} kB"
    );

    // A valid full sync replaces the data (the link was made by REPLICAOF), then the
    // stream breaks its limits: each failure keeps the synced data and resumes.
    let (_reader, mut writer, _) = accept_replica(&listener);
    writer
        .write_all(format!("+FULLRESYNC {REPLID} 100\r\n").as_bytes())
        .expect("write");
    writer
        .write_all(&valid_snapshot(&[snapshot_record(b"from-primary", b"1")]))
        .expect("write");
    wait_until("valid full sync", Duration::from_secs(10), || {
        info_field(&replica, "replication", "master_link_status") == "up"
    });
    assert_eq!(dbsize(&replica), 1);
    let broken_streams: [(&str, Vec<u8>); 3] = [
        (
            "bulk over proto-max-bulk-len",
            b"*1\r\n$99999999999\r\n".to_vec(),
        ),
        (
            "command over the query buffer limit",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000000\r\nxx".to_vec(),
        ),
        ("transaction over the query buffer limit", {
            let mut stream = encode(&[b"MULTI"]);
            let value = vec![b'x'; 100_000];
            for index in 0..12 {
                stream.extend(encode(&[b"SET", format!("t{index}").as_bytes(), &value]));
            }
            stream
        }),
    ];
    let mut writer = Some(writer);
    for (what, bytes) in broken_streams {
        let before = sync_failures(&replica);
        let mut current = match writer.take() {
            Some(current) => current,
            None => {
                let (_reader, mut resumed, psync) = accept_replica(&listener);
                assert_eq!(psync[1], REPLID, "{what}: resumes the same history");
                resumed
                    .write_all(format!("+CONTINUE {REPLID}\r\n").as_bytes())
                    .expect("write");
                resumed
            }
        };
        // the replica may already have closed (it reads while we write)
        let _ = current.write_all(&bytes);
        assert_failed_and_kept(&replica, before, "bad_stream", 1, what);
    }
    assert_eq!(
        metric(
            &replica,
            "meridian_repl_sync_failures_total{reason=\"bad_stream\"}"
        ),
        Some(3.0)
    );
    let value: Option<String> = redis::cmd("GET")
        .arg("from-primary")
        .query(&mut replica.redis())
        .expect("GET");
    assert_eq!(value.as_deref(), Some("1"));
}

/// Reads the primary's `+FULLRESYNC` and snapshot on a fake replica connection.
fn read_full_sync(reader: &mut BufReader<TcpStream>) {
    let mut line = String::new();
    reader.read_line(&mut line).expect("FULLRESYNC");
    assert!(line.starts_with("+FULLRESYNC "), "{line}");
    line.clear();
    reader.read_line(&mut line).expect("snapshot header");
    let len: usize = line.trim_end()[1..].parse().expect("snapshot length");
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).expect("snapshot");
}

fn wait_count(primary: &Node, replicas: &str, timeout_ms: &str) -> Reply {
    primary.raw().cmd(&["WAIT", replicas, timeout_ms])
}

/// A fake replica acknowledges far more than it was sent, then garbage: WAIT does not
/// count it, the primary clamps and counts, and stays up with its data. A legitimate
/// ACK still counts; an oversized frame gets the fake replica disconnected.
#[test]
fn a_hostile_replica_cannot_satisfy_wait() {
    let primary = start("primary", &[]);
    load_keys(&primary, "key", 100, b"value");
    let stream = TcpStream::connect(("127.0.0.1", primary.port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut fake = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    fake.write_all(&encode(&[b"REPLCONF", b"listening-port", b"4242"]))
        .expect("write");
    let mut line = String::new();
    reader.read_line(&mut line).expect("REPLCONF reply");
    assert_eq!(line, "+OK\r\n");
    fake.write_all(&encode(&[b"PSYNC", b"?", b"-1"]))
        .expect("write");
    read_full_sync(&mut reader);
    wait_until("fake replica online", Duration::from_secs(10), || {
        info_field(&primary, "replication", "slave0").contains("state=online")
    });
    // online but silent: it may still be loading the snapshot, so it counts for no
    // offset, not even the 0 the primary is at
    assert_eq!(
        info_field(&primary, "replication", "master_repl_offset"),
        "0"
    );
    assert_eq!(wait_count(&primary, "1", "100"), Reply::Int(0));

    fake.write_all(&encode(&[b"REPLCONF", b"ACK", b"999999999999"]))
        .expect("write");
    wait_until("clamped ACK", Duration::from_secs(10), || {
        info_field(&primary, "stats", "repl_acks_clamped") == "1"
    });
    // acknowledged: at most what the primary has (it sent nothing since the snapshot)
    let slave0 = info_field(&primary, "replication", "slave0");
    let acked: u64 = slave0
        .split(',')
        .find_map(|pair| pair.strip_prefix("offset="))
        .and_then(|offset| offset.parse().ok())
        .expect("offset in slave0");
    let offset: u64 = info_field(&primary, "replication", "master_repl_offset")
        .parse()
        .expect("master_repl_offset");
    assert!(acked <= offset, "{slave0} with master_repl_offset {offset}");
    assert_eq!(primary.raw().cmd(&["SET", "after-ack", "1"]), Reply::ok());
    assert_eq!(wait_count(&primary, "1", "100"), Reply::Int(0));

    for garbage in [&b"-5"[..], b"abc", b"1.5"] {
        fake.write_all(&encode(&[b"REPLCONF", b"ACK", garbage]))
            .expect("write");
    }
    wait_until("invalid ACKs counted", Duration::from_secs(10), || {
        info_field(&primary, "stats", "repl_acks_invalid") == "3"
    });
    assert_eq!(wait_count(&primary, "1", "100"), Reply::Int(0));
    assert_eq!(
        metric(&primary, "meridian_repl_acks_clamped_total"),
        Some(1.0)
    );
    assert_eq!(
        metric(&primary, "meridian_repl_acks_invalid_total"),
        Some(3.0)
    );
    let lag = metric(
        &primary,
        "meridian_replica_lag_bytes{replica=\"127.0.0.1:4242\"}",
    )
    .expect("per-replica lag");
    assert!(lag > 0.0, "{lag}");

    // an honest ACK of what was sent counts
    wait_until("honest ACK counts", Duration::from_secs(10), || {
        let offset = info_field(&primary, "replication", "master_repl_offset");
        fake.write_all(&encode(&[b"REPLCONF", b"ACK", offset.as_bytes()]))
            .expect("write");
        wait_count(&primary, "1", "100") == Reply::Int(1)
    });

    // a frame far over what a replica link needs: disconnected, nothing buffered
    fake.write_all(b"*3\r\n$8\r\nREPLCONF\r\n$3\r\nACK\r\n$999999\r\n")
        .expect("write");
    wait_until("fake replica dropped", Duration::from_secs(10), || {
        info_field(&primary, "replication", "connected_slaves") == "0"
    });
    assert_eq!(primary.raw().cmd(&["PING"]), Reply::Simple("PONG".into()));
    assert_eq!(dbsize(&primary), 101);
}

/// Bytes of one value in the slow-replica test.
const VALUE_LEN: usize = 64 * 1024;
/// Keys overwritten again and again: the data set stays at 6.4 MB.
const HOT_KEYS: usize = 100;
/// 4000 SETs of 64 KiB: 250 MiB through the replication stream (after 8 MiB).
const WRITES: usize = 4000;
const BACKLOG_MB: u64 = 16;

/// A replica stopped with SIGSTOP while its primary takes 256 MiB of writes: the
/// primary's memory stays within its backlog plus a fixed margin (the stream is not
/// queued for the replica), lag shows in INFO and the metrics, and after SIGCONT the
/// replica resyncs and holds the primary's data.
#[test]
fn a_stopped_replica_costs_its_primary_no_more_than_the_backlog() {
    let primary = start("primary", &["--repl-backlog-size", "16mb"]);
    let replica = start("replica", &[]);
    let value = |round: usize| {
        let mut value = vec![b'a' + (round % 26) as u8; VALUE_LEN];
        value[..8].copy_from_slice(&(round as u64).to_le_bytes());
        value
    };
    load_keys(&primary, "hot", HOT_KEYS as i64, &value(0));
    assert_eq!(
        replica
            .raw()
            .cmd(&["REPLICAOF", "127.0.0.1", &primary.port.to_string()]),
        Reply::ok()
    );
    wait_until("replica synced", Duration::from_secs(20), || {
        wait_count(&primary, "1", "1000") == Reply::Int(1)
    });
    let baseline = proc_kb(&primary, "VmRSS");

    replica.signal("STOP");
    let mut con = primary.redis();
    let mut written = 0;
    let mut write = |count: usize, peak: &mut u64| {
        for _ in 0..count / 16 {
            let mut pipe = redis::pipe();
            for _ in 0..16 {
                pipe.cmd("SET")
                    .arg(format!("hot:{}", written % HOT_KEYS))
                    .arg(value(written))
                    .ignore();
                written += 1;
            }
            pipe.query::<()>(&mut con).expect("write");
            *peak = (*peak).max(proc_kb(&primary, "VmRSS"));
        }
    };
    // Lag while stopped, with less than the backlog written (the replica stays
    // attached): seconds since its last ACK, bytes behind.
    let mut peak = baseline;
    write(128, &mut peak);
    wait_until("lag in seconds", Duration::from_secs(10), || {
        info_field(&primary, "replication", "slave0")
            .split(',')
            .find_map(|pair| pair.strip_prefix("lag="))
            .and_then(|lag| lag.parse::<u64>().ok())
            .is_some_and(|lag| lag >= 2)
    });
    let name = format!("127.0.0.1:{}", replica.port);
    let lag_bytes = metric(
        &primary,
        &format!("meridian_replica_lag_bytes{{replica=\"{name}\"}}"),
    )
    .expect("per-replica lag bytes");
    assert!(lag_bytes >= (128 * VALUE_LEN) as f64, "{lag_bytes}");
    // the largest lag: this replica's, or more if a keep-alive PING came in between
    assert!(metric(&primary, "meridian_repl_lag_bytes").unwrap_or(0.0) >= lag_bytes);
    let lag_seconds = metric(
        &primary,
        &format!("meridian_replica_lag_seconds{{replica=\"{name}\"}}"),
    )
    .expect("per-replica lag seconds");
    assert!(lag_seconds >= 2.0, "{lag_seconds}");

    // Then far more than the backlog. The primary either stops writing to the full
    // socket or drops the replica once it fell out of the backlog: nothing queues up.
    let started = Instant::now();
    write(WRITES, &mut peak);
    let elapsed = started.elapsed();
    let high_water = proc_kb(&primary, "VmHWM");
    let streamed = (WRITES + 128) * VALUE_LEN;
    eprintln!(
        "slow replica: {} MiB written in {elapsed:?}; primary RSS baseline {} MiB, \
         peak sampled {} MiB, VmHWM {} MiB",
        streamed >> 20,
        baseline / 1024,
        peak / 1024,
        high_water / 1024
    );
    // the backlog, one stream chunk per replica, the clients' buffers: a fixed margin
    let bound = baseline + (BACKLOG_MB + 48) * 1024;
    assert!(
        peak < bound && high_water < bound,
        "primary RSS {peak} kB (high water {high_water} kB) over {bound} kB"
    );

    replica.signal("CONT");
    wait_until("replica caught up", Duration::from_secs(60), || {
        wait_count(&primary, "1", "1000") == Reply::Int(1)
    });
    eprintln!(
        "slow replica resumed: sync_full {}, sync_partial_ok {}",
        info_field(&primary, "stats", "sync_full"),
        info_field(&primary, "stats", "sync_partial_ok")
    );
    assert_eq!(dbsize(&replica), HOT_KEYS as i64);
    let mut primary_con = primary.redis();
    let mut replica_con = replica.redis();
    for index in 0..HOT_KEYS {
        let key = format!("hot:{index}");
        let on_primary: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query(&mut primary_con)
            .expect("GET");
        let on_replica: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query(&mut replica_con)
            .expect("GET");
        assert!(on_primary == on_replica, "{key} differs");
    }
}

/// A primary drops a replica whose socket stopped draining for `--repl-timeout`
/// seconds (instead of holding its feed forever); the replica resyncs once it runs.
#[test]
fn a_primary_drops_a_replica_that_stopped_reading() {
    // a backlog larger than what is written: the replica cannot fall out of it
    let primary = start(
        "primary",
        &["--repl-timeout", "2", "--repl-backlog-size", "128mb"],
    );
    let replica = start("replica", &[]);
    load_keys(&primary, "hot", HOT_KEYS as i64, &vec![b'x'; VALUE_LEN]);
    assert_eq!(
        replica
            .raw()
            .cmd(&["REPLICAOF", "127.0.0.1", &primary.port.to_string()]),
        Reply::ok()
    );
    wait_until("replica synced", Duration::from_secs(20), || {
        wait_count(&primary, "1", "1000") == Reply::Int(1)
    });
    replica.signal("STOP");
    // far more than the kernel buffers of one loopback connection
    for _ in 0..6 {
        load_keys(&primary, "hot", HOT_KEYS as i64, &vec![b'y'; VALUE_LEN]);
    }
    wait_until("stalled replica dropped", Duration::from_secs(20), || {
        info_field(&primary, "stats", "repl_replicas_timed_out") == "1"
    });
    assert_eq!(info_field(&primary, "replication", "connected_slaves"), "0");
    assert_eq!(
        metric(&primary, "meridian_repl_replicas_timed_out_total"),
        Some(1.0)
    );
    replica.signal("CONT");
    wait_until("replica back", Duration::from_secs(30), || {
        wait_count(&primary, "1", "1000") == Reply::Int(1)
    });
    assert_eq!(dbsize(&replica), HOT_KEYS as i64);
}

/// A primary SIGKILLed in the middle of a script that already wrote: its replica
/// holds none of the script's effects (they replicate as one block once it ends),
/// and, promoted, serves the data as it was before the script.
#[test]
fn a_primary_killed_mid_script_leaves_its_replica_with_none_of_its_writes() {
    let primary = start("script-primary", &[]);
    let replica = start("script-replica", &[]);
    assert_eq!(
        replica
            .raw()
            .cmd(&["REPLICAOF", "127.0.0.1", &primary.port.to_string()]),
        Reply::ok()
    );
    let mut raw = primary.raw();
    assert_eq!(raw.cmd(&["SET", "before", "kept"]), Reply::ok());
    assert_eq!(raw.cmd(&["SET", "counter", "10"]), Reply::ok());
    assert_eq!(raw.cmd(&["WAIT", "1", "5000"]), Reply::Int(1));

    // writes, then spins for 1.5 s (well inside the 5 s time limit), then writes again
    let script = "redis.call('SET', KEYS[1], 'partial') \
        redis.call('INCR', KEYS[2]) \
        local function now() local t = redis.call('TIME') return t[1] * 1000000 + t[2] end \
        local start = now() \
        repeat until now() - start > 1500000 \
        redis.call('SET', KEYS[3], 'end') \
        return 1";
    let mut scripted = primary.raw();
    scripted.send(&encode(&[
        b"EVAL",
        script.as_bytes(),
        b"3",
        b"first",
        b"counter",
        b"last",
    ]));
    // the script is running (its first writes done) when the primary dies
    std::thread::sleep(Duration::from_millis(500));
    primary.signal("KILL");

    wait_until(
        "replica saw its primary go",
        Duration::from_secs(10),
        || info_field(&replica, "replication", "master_link_status") == "down",
    );
    let mut on_replica = replica.raw();
    assert_eq!(on_replica.cmd(&["EXISTS", "first", "last"]), Reply::Int(0));
    assert_eq!(on_replica.cmd(&["GET", "counter"]), Reply::bulk("10"));
    assert_eq!(on_replica.cmd(&["REPLICAOF", "NO", "ONE"]), Reply::ok());
    assert_eq!(on_replica.cmd(&["GET", "before"]), Reply::bulk("kept"));
    assert_eq!(on_replica.cmd(&["INCR", "counter"]), Reply::Int(11));
    assert_eq!(on_replica.cmd(&["EXISTS", "first", "last"]), Reply::Int(0));
}

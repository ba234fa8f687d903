//! ACL users with real processes: an application user refused the admin surface
//! and kept to its keys, NOAUTH / WRONGPASS, the ACL file (start, reload, ACL
//! LOAD), ACL DELUSER closing connections, a replica logging in as a replication
//! user, and the replies compared with a real redis-server.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::node_process::wait_until;
use common::redis_server::RedisServer;
use common::{Node, Raw, Reply, free_port, info_field, redis_cli};

const APP: &str = "user app on >secret ~session:* +@all -@admin -@dangerous";

/// A file of its own for each test (several run at once).
fn acl_file(text: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "meridian-acl-{}-{}.acl",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).expect("write ACL file");
    path
}

fn start(file: &Path, extra: &[&str]) -> Node {
    let mut args = vec!["--acl-file", file.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    Node::start_with(&args)
}

fn error_of(reply: Reply) -> String {
    match reply {
        Reply::Error(text) => text,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn logged_in(node: &Node, user: &str, password: &str) -> Raw {
    let mut raw = node.raw();
    assert_eq!(raw.cmd(&["AUTH", user, password]), Reply::ok());
    raw
}

#[test]
fn an_application_user_is_refused_the_admin_surface_and_kept_to_its_keys() {
    let file = acl_file(&format!("{APP}\n"));
    let node = start(&file, &["--requirepass", "adminpw"]);

    // not logged in: NOAUTH; wrong passwords: WRONGPASS
    let mut raw = node.raw();
    assert_eq!(
        raw.cmd(&["GET", "session:1"]),
        Reply::err("NOAUTH Authentication required.")
    );
    let wrongpass = Reply::err("WRONGPASS invalid username-password pair or user is disabled.");
    assert_eq!(raw.cmd(&["AUTH", "app", "wrong"]), wrongpass);
    assert_eq!(raw.cmd(&["AUTH", "nosuch", "secret"]), wrongpass);
    assert_eq!(raw.cmd(&["AUTH", "wrong"]), wrongpass);
    assert_eq!(raw.cmd(&["AUTH", "app", "secret"]), Reply::ok());
    assert_eq!(raw.cmd(&["ACL", "WHOAMI"]), Reply::bulk("app"));

    let admin: &[&[&str]] = &[
        &["MERIDIAN.TOPOLOGY", "SET", "{}"],
        &["MERIDIAN.PEERS", "SET", "[]"],
        &["CLUSTER", "SETSLOT", "1", "STABLE"],
        &["REPLICAOF", "127.0.0.1", "1"],
        &["FLUSHALL"],
        &["CONFIG", "SET", "maxmemory", "1"],
        &["CLIENT", "PAUSE", "1000"],
        &["CLIENT", "KILL", "ID", "1"],
        &["PSYNC", "?", "-1"],
        &["MIGRATE", "127.0.0.1", "1", "session:1", "0", "1000"],
        &["ACL", "SETUSER", "intruder", "on", "nopass", "+@all"],
        &["DEBUG", "OBJECT", "session:1"],
    ];
    for args in admin {
        let error = error_of(raw.cmd(args));
        assert!(error.starts_with("NOPERM "), "{args:?}: {error}");
    }
    assert_eq!(
        raw.cmd(&["FLUSHALL"]),
        Reply::err("NOPERM this user has no permissions to run the 'flushall' command")
    );
    assert_eq!(
        raw.cmd(&["CLIENT", "KILL", "ID", "1"]),
        Reply::err("NOPERM this user has no permissions to run the 'client|kill' command")
    );
    assert_eq!(
        raw.cmd(&["GET", "other"]),
        Reply::err(
            "NOPERM this user has no permissions to access one of the keys used as arguments"
        )
    );
    assert_eq!(
        error_of(raw.cmd(&["HSET", "other", "f", "v"])),
        "NOPERM this user has no permissions to access one of the keys used as arguments"
    );
    // a refused command inside MULTI fails the transaction
    assert_eq!(raw.cmd(&["MULTI"]), Reply::ok());
    assert!(error_of(raw.cmd(&["FLUSHALL"])).starts_with("NOPERM"));
    assert!(error_of(raw.cmd(&["EXEC"])).starts_with("EXECABORT"));

    // its own keys work as usual, through a Redis client
    let client = redis::Client::open(format!("redis://app:secret@127.0.0.1:{}/", node.port))
        .expect("client");
    let mut con = client.get_connection().expect("connection");
    let _: () = redis::cmd("SET")
        .arg("session:1")
        .arg("v")
        .query(&mut con)
        .expect("SET");
    let value: String = redis::cmd("GET")
        .arg("session:1")
        .query(&mut con)
        .expect("GET");
    assert_eq!(value, "v");
    let added: i64 = redis::cmd("HSET")
        .arg("session:h")
        .arg("f")
        .arg("v")
        .query(&mut con)
        .expect("HSET");
    assert_eq!(added, 1);
    let set: i64 = redis::cmd("EXPIRE")
        .arg("session:1")
        .arg(100)
        .query(&mut con)
        .expect("EXPIRE");
    assert_eq!(set, 1);
    let deleted: i64 = redis::cmd("DEL")
        .arg("session:1")
        .arg("session:h")
        .query(&mut con)
        .expect("DEL");
    assert_eq!(deleted, 2);
    let refused = redis::cmd("GET")
        .arg("other")
        .query::<Option<String>>(&mut con)
        .expect_err("other keys are refused");
    // the redis crate names the error kind "NoPerm"
    assert!(
        refused.to_string().to_ascii_uppercase().contains("NOPERM"),
        "{refused}"
    );

    // redis-cli logs in the same way and shows the same refusal
    let output = Command::new(redis_cli())
        .args([
            "-p",
            &node.port.to_string(),
            "--user",
            "app",
            "--pass",
            "secret",
        ])
        .args(["--no-auth-warning", "FLUSHALL"])
        .output()
        .expect("redis-cli");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("NOPERM this user has no permissions to run the 'flushall' command"),
        "{text}"
    );

    // HELLO 3 AUTH logs in too; CLIENT LIST names the users
    let mut hello = node.raw();
    assert!(matches!(
        hello.cmd(&["HELLO", "3", "AUTH", "app", "secret"]),
        Reply::Map(_)
    ));
    let mut admin = logged_in(&node, "default", "adminpw");
    let Reply::Bulk(list) = admin.cmd(&["CLIENT", "LIST"]) else {
        panic!("CLIENT LIST is a bulk string in RESP2");
    };
    let list = String::from_utf8_lossy(&list);
    assert!(list.contains(" user=app "), "{list}");
    assert!(list.contains(" user=default "), "{list}");
    // the default user keeps every command
    assert_eq!(admin.cmd(&["FLUSHALL"]), Reply::ok());
    let _ = std::fs::remove_file(file);
}

#[test]
fn without_acl_file_requirepass_guards_everything_as_before() {
    let node = Node::start_with(&["--requirepass", "pw"]);
    let mut raw = node.raw();
    // PING too, as redis-server answers it
    for command in [&["SET", "k", "v"][..], &["PING"]] {
        assert_eq!(
            raw.cmd(command),
            Reply::err("NOAUTH Authentication required.")
        );
    }
    assert_eq!(raw.cmd(&["AUTH", "pw"]), Reply::ok());
    assert_eq!(raw.cmd(&["SET", "k", "v"]), Reply::ok());
    assert_eq!(raw.cmd(&["ACL", "WHOAMI"]), Reply::bulk("default"));
    // CONFIG SET requirepass changes the default user's password
    assert_eq!(
        raw.cmd(&["CONFIG", "SET", "requirepass", "new"]),
        Reply::ok()
    );
    let mut other = node.raw();
    assert_eq!(
        other.cmd(&["AUTH", "default", "pw"]),
        Reply::err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    assert_eq!(other.cmd(&["AUTH", "default", "new"]), Reply::ok());
    assert_eq!(raw.cmd(&["CONFIG", "SET", "requirepass", ""]), Reply::ok());
    let mut open = node.raw();
    assert_eq!(open.cmd(&["GET", "k"]), Reply::bulk("v"));
    assert_eq!(
        raw.cmd(&["ACL", "LOAD"]),
        Reply::err(
            "ERR This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration."
        )
    );
}

#[test]
fn the_acl_file_is_reloaded_when_it_changes_and_by_acl_load() {
    let file = acl_file(&format!("{APP}\n"));
    let node = start(&file, &[]);
    let mut admin = node.raw();
    assert_eq!(
        admin.cmd(&["ACL", "USERS"]),
        Reply::Array(vec![Reply::bulk("app"), Reply::bulk("default")])
    );

    // a new user appears within one poll (5 s)
    std::fs::write(&file, format!("{APP}\nuser late on >pw ~* +@all\n")).expect("rewrite");
    let began = Instant::now();
    wait_until("the new user", Duration::from_secs(8), || {
        node.raw().cmd(&["AUTH", "late", "pw"]) == Reply::ok()
    });
    assert!(
        began.elapsed() < Duration::from_millis(6500),
        "{:?}",
        began.elapsed()
    );

    // a broken version keeps the users in force
    std::fs::write(&file, "user late on +nosuchcommand\n").expect("rewrite");
    std::thread::sleep(Duration::from_millis(5600));
    assert_eq!(node.raw().cmd(&["AUTH", "late", "pw"]), Reply::ok());
    let error = error_of(admin.cmd(&["ACL", "LOAD"]));
    assert_eq!(
        error,
        format!(
            "ERR {}:1: Error in applying operation '+nosuchcommand': Unknown command or category name in ACL. WARNING: ACL errors detected, no change to the previously active ACL rules was performed",
            file.display()
        )
    );

    // ACL LOAD reads the file at once; the users it drops are disconnected
    let mut late = logged_in(&node, "late", "pw");
    std::fs::write(&file, format!("{APP}\n")).expect("rewrite");
    assert_eq!(admin.cmd(&["ACL", "LOAD"]), Reply::ok());
    assert!(late.closed(), "the dropped user's connection is closed");
    assert_eq!(
        node.raw().cmd(&["AUTH", "late", "pw"]),
        Reply::err("WRONGPASS invalid username-password pair or user is disabled.")
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_bad_acl_file_stops_the_node_naming_file_and_line() {
    let file = acl_file("user ok on nopass\nuser bad on ~a allkeys ~b\n");
    let output = Command::new(env!("CARGO_BIN_EXE_meridian-node"))
        .args(["--bind", "127.0.0.1", "--port", &free_port().to_string()])
        .args(["--metrics-port", &free_port().to_string()])
        .args(["--acl-file", file.to_str().expect("utf-8 path")])
        .env("MERIDIAN_HTTP_PORT", "0")
        .env("MERIDIAN_LINK_PORT", "0")
        .output()
        .expect("run meridian-node");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:2: Error in applying operation '~b'",
            file.display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn acl_deluser_disconnects_the_users_connections() {
    let file = acl_file(&format!("{APP}\n"));
    let node = start(&file, &[]);
    let mut app = logged_in(&node, "app", "secret");
    let mut admin = node.raw();
    assert_eq!(
        admin.cmd(&["ACL", "SETUSER", "app", "-get"]),
        Reply::ok(),
        "a changed user applies to its connections at once"
    );
    assert_eq!(
        app.cmd(&["GET", "session:1"]),
        Reply::err("NOPERM this user has no permissions to run the 'get' command")
    );
    assert_eq!(
        admin.cmd(&["ACL", "DELUSER", "default"]),
        Reply::err("ERR The 'default' user cannot be removed")
    );
    assert_eq!(
        admin.cmd(&["ACL", "DELUSER", "app", "nosuch"]),
        Reply::Int(1)
    );
    assert!(app.closed());
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_replica_syncs_as_a_replication_user() {
    // the primary's replication user may run the replication commands only
    let file = acl_file(&format!(
        "{APP}\nuser repl on >replpw -@all +psync +replconf +ping\n"
    ));
    let primary = Node::start_named(
        "primary",
        8,
        &[
            "--acl-file",
            file.to_str().expect("path"),
            "--requirepass",
            "adminpw",
        ],
    );
    let replica = Node::start_named(
        "replica",
        8,
        &["--primary-user", "repl", "--primary-auth", "replpw"],
    );
    let mut writer = logged_in(&primary, "default", "adminpw");
    assert_eq!(writer.cmd(&["SET", "k", "v"]), Reply::ok());
    let mut raw = replica.raw();
    assert_eq!(
        raw.cmd(&["REPLICAOF", "127.0.0.1", &primary.port.to_string()]),
        Reply::ok()
    );
    wait_until("the link up", Duration::from_secs(20), || {
        info_field(&replica, "replication", "master_link_status") == "up"
    });
    assert_eq!(writer.cmd(&["SET", "k2", "v2"]), Reply::ok());
    wait_until("the write replicated", Duration::from_secs(10), || {
        replica.raw().cmd(&["GET", "k2"]) == Reply::bulk("v2")
    });
    assert_eq!(replica.raw().cmd(&["GET", "k"]), Reply::bulk("v"));
    // the replication user cannot do anything else
    let mut repl = logged_in(&primary, "repl", "replpw");
    assert_eq!(
        repl.cmd(&["GET", "k"]),
        Reply::err("NOPERM this user has no permissions to run the 'get' command")
    );
    let _ = std::fs::remove_file(file);
}

/// The ACL replies and error texts of the node and of redis-server 7.0, compared.
#[test]
fn acl_replies_match_redis_server() {
    let redis = RedisServer::start();
    let node = Node::start();
    let mut theirs = Raw::connect(redis.port);
    let mut ours = node.raw();
    let mut same = |args: &[&str]| {
        let expected = theirs.cmd(args);
        assert_eq!(ours.cmd(args), expected, "{args:?}");
    };
    same(&["ACL", "WHOAMI"]);
    same(&["ACL", "CAT"]);
    same(&["ACL", "CAT", "nosuch"]);
    same(&["ACL", "CAT", "a", "b"]);
    same(&["ACL", "GETUSER", "default"]);
    same(&["ACL", "GETUSER", "nosuch"]);
    same(&["ACL", "GETUSER"]);
    same(&["ACL", "NOSUCH"]);
    same(&[
        "ACL",
        "SETUSER",
        "app",
        "on",
        ">secret",
        "~session:*",
        "+@all",
        "-@admin",
        "-@dangerous",
    ]);
    same(&["ACL", "GETUSER", "app"]);
    same(&[
        "ACL",
        "SETUSER",
        "ro",
        "on",
        "nopass",
        "%R~cache:*",
        "&news:*",
        "+@all",
        "-@dangerous",
    ]);
    same(&["ACL", "GETUSER", "ro"]);
    same(&["ACL", "SETUSER", "off"]);
    same(&["ACL", "GETUSER", "off"]);
    same(&["ACL", "LIST"]);
    same(&["ACL", "USERS"]);
    for rule in [
        "foo",
        "+nosuch",
        "+@nosuch",
        "<nopw",
        "!abc",
        "#abc",
        "%X~a",
        "%~a",
        "-client|nosuch",
    ] {
        same(&["ACL", "SETUSER", "t", rule]);
    }
    same(&["ACL", "SETUSER", "t", "allkeys", "~a"]);
    same(&["ACL", "SETUSER", "t", "allchannels", "&a"]);
    same(&["ACL", "SETUSER", "a b"]);
    same(&["ACL", "DELUSER", "default"]);
    same(&["ACL", "DELUSER", "t", "nosuch"]);
    same(&["ACL", "LOAD"]);
    same(&["ACL", "DRYRUN", "app", "flushall"]);
    same(&["ACL", "DRYRUN", "app", "get", "foo"]);
    same(&["ACL", "DRYRUN", "app", "get", "session:1"]);
    same(&["ACL", "DRYRUN", "nosuch", "get", "x"]);
    same(&["ACL", "DRYRUN", "app", "nocommand"]);
    same(&["AUTH", "pw"]);
    same(&["AUTH", "app", "wrong"]);
    same(&["AUTH", "nosuch", "secret"]);
    same(&["HELLO", "2", "AUTH", "app", "wrong"]);
    same(&["AUTH", "app", "secret"]);
    same(&["ACL", "WHOAMI"]);
    same(&["FLUSHALL"]);
    same(&["CLIENT", "KILL", "ID", "12345"]);
    same(&["CONFIG", "GET", "maxmemory"]);
    same(&["CLUSTER", "SETSLOT", "1", "STABLE"]);
    same(&["ACL", "SETUSER", "x"]);
    same(&["GET", "other"]);
    same(&["MGET", "session:1", "other"]);
    same(&["PUBLISH", "news", "m"]);
    same(&["SET", "session:1", "v"]);
    same(&["GET", "session:1"]);
    // a single-command user: Redis names its commands in hash order, so as a set
    let mut admin_theirs = Raw::connect(redis.port);
    let mut admin_ours = node.raw();
    let rules = [
        "ACL",
        "SETUSER",
        "repl",
        "on",
        ">rp",
        "-@all",
        "+psync",
        "+replconf",
        "+ping",
    ];
    assert_eq!(admin_ours.cmd(&rules), admin_theirs.cmd(&rules));
    let commands = |raw: &mut Raw| -> Vec<String> {
        let Reply::Array(fields) = raw.cmd(&["ACL", "GETUSER", "repl"]) else {
            panic!("GETUSER is an array in RESP2");
        };
        let Some(Reply::Bulk(text)) = fields.get(5) else {
            panic!("commands field");
        };
        let mut words: Vec<String> = String::from_utf8_lossy(text)
            .split(' ')
            .map(str::to_string)
            .collect();
        words.sort();
        words
    };
    assert_eq!(commands(&mut admin_ours), commands(&mut admin_theirs));
    // a default user with a password: new connections need AUTH
    let password = ["ACL", "SETUSER", "default", "resetpass", ">pw"];
    assert_eq!(admin_ours.cmd(&password), admin_theirs.cmd(&password));
    let expected = Raw::connect(redis.port).cmd(&["GET", "k"]);
    assert_eq!(node.raw().cmd(&["GET", "k"]), expected);
    // (HELLO's NOAUTH text is Redis 7.2's, like the version the node reports)
}

/// An IPv4 address of this machine that is not loopback, if it has one.
fn non_loopback_ip() -> Option<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    // no packet is sent: connecting a UDP socket only picks the outgoing address
    socket.connect("192.0.2.254:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

/// First line a client gets on connecting to `ip:port` and sending `GET k`.
fn first_line(ip: &str, port: u16) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect((ip, port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = stream.write_all(b"GET k\r\n");
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    line
}

/// Redis's protected mode: while `default` has no password, a client from another
/// address than loopback is told why and closed (RESP and HTTP); a password or
/// `--protected-mode no` serves it.
#[test]
fn protected_mode_serves_only_loopback_clients_while_default_has_no_password() {
    let Some(ip) = non_loopback_ip() else {
        println!("skipping: this machine has no IPv4 address besides loopback");
        return;
    };
    let http_port = common::node_process::free_port(&ip).to_string();
    let open = common::node_process::NodeProcess::start(
        &ip,
        "p-0",
        &["--http-port", &http_port, "--region-port", "0"],
        &[],
    );
    let line = first_line(&ip, open.port);
    assert!(
        line.starts_with("-DENIED Redis is running in protected mode because protected mode is enabled and no password is set for the default user."),
        "{line}"
    );
    let http = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg(format!("http://{ip}:{http_port}/cache/k"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&http.stdout), "403");

    let unprotected = common::node_process::NodeProcess::start(
        &ip,
        "p-1",
        &["--protected-mode", "no", "--region-port", "0"],
        &[],
    );
    assert_eq!(first_line(&ip, unprotected.port), "$-1\r\n");
    let with_password = common::node_process::NodeProcess::start(
        &ip,
        "p-2",
        &["--requirepass", "pw", "--region-port", "0"],
        &[],
    );
    assert!(
        first_line(&ip, with_password.port).starts_with("-NOAUTH"),
        "a password lifts protected mode (the client must AUTH)"
    );
}

/// Beyond `maxclients`, clients are refused, but the operator and replicas are not
/// locked out: a connection whose first command logs in (with a password) as a user
/// allowed PSYNC is served; one logging in as an application user, sending anything
/// else, or nothing within the grace, gets Redis's error and is closed.
#[test]
fn beyond_maxclients_only_the_operator_and_replicas_are_let_in() {
    let file = acl_file(
        "user default on >app-pw ~* &* +@all -@admin\n\
         user meridian-operator on >op-pw ~* &* +@all\n\
         user meridian-replication on >repl-pw -@all +psync +replconf +ping\n",
    );
    let node = start(&file, &["--maxclients", "2"]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut client = node.raw();
        assert_eq!(client.cmd(&["AUTH", "app-pw"]), Reply::ok());
        if held.is_empty() {
            // the node counts the start-up probe's connection until it has read its
            // close: on a busy machine that can come after this client's AUTH
            wait_until(
                "the probe's connection gone",
                Duration::from_secs(5),
                || {
                    matches!(client.cmd(&["INFO", "clients"]),
                    Reply::Bulk(info) if String::from_utf8_lossy(&info).contains("connected_clients:1\r\n"))
                },
            );
        }
        held.push(client);
    }
    let refused = Reply::Error("ERR max number of clients reached".into());
    // an application: its AUTH (or any command) is answered with the refusal
    let mut app = node.raw();
    assert_eq!(app.cmd(&["AUTH", "app-pw"]), refused);
    assert!(app.closed());
    let mut anonymous = node.raw();
    assert_eq!(anonymous.cmd(&["GET", "k"]), refused);
    assert!(anonymous.closed());
    // silent: refused after the grace
    let mut silent = node.raw();
    let started = Instant::now();
    assert_eq!(silent.read(), refused);
    assert!(started.elapsed() < Duration::from_secs(5));
    // the operator and a replica's user are served
    let mut operator = node.raw();
    assert_eq!(
        operator.cmd(&["AUTH", "meridian-operator", "op-pw"]),
        Reply::ok()
    );
    assert_eq!(operator.cmd(&["MERIDIAN.TOPOLOGY", "EPOCH"]), Reply::Int(0));
    let mut replica = node.raw();
    assert_eq!(
        replica.cmd(&["AUTH", "meridian-replication", "repl-pw"]),
        Reply::ok()
    );
    assert_eq!(replica.cmd(&["PING"]), Reply::Simple("PONG".into()));
    // a wrong password proves nothing
    let mut guess = node.raw();
    assert_eq!(guess.cmd(&["AUTH", "meridian-operator", "guess"]), refused);
}

/// 20,000 idle sockets beyond maxclients (each refused within the grace) do not lock
/// the operator out.
#[test]
fn a_flood_of_idle_sockets_does_not_lock_the_operator_out() {
    // Half the flood is held by this process and half by a helper process: one process
    // may not hold 20,000 sockets where the open-file limit is 20,000 and cannot be raised.
    const HALF: usize = 10_000;
    let (open_files, wanted) = meridian_node::net::raise_open_files_limit(HALF as u64, 0);
    assert!(
        open_files >= wanted,
        "this test needs {wanted} open files (ulimit -n is {open_files})"
    );
    let file = acl_file(
        "user default on >app-pw ~* &* +@all -@admin\nuser meridian-operator on >op-pw ~* &* +@all\n",
    );
    let node = start(&file, &["--maxclients", "100"]);
    // a short accept queue drops a burst's handshakes (each costs its client a one-second
    // SYN retransmission): the RESP port listens with Redis's tcp-backlog or more
    let listening = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", node.port)])
        .output()
        .expect("run ss");
    let listening = String::from_utf8_lossy(&listening.stdout);
    let backlog: u32 = listening
        .split_whitespace()
        .nth(2)
        .and_then(|field| field.parse().ok())
        .unwrap_or_else(|| panic!("ss printed {listening:?}"));
    assert!(backlog >= 511, "listen backlog {backlog}");
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import socket, sys, time\n\
             held = [socket.create_connection(('127.0.0.1', int(sys.argv[1]))) for _ in range(int(sys.argv[2]))]\n\
             print(len(held), flush=True)\n\
             sys.stdin.read()\n",
            &node.port.to_string(),
            &HALF.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut flood = Vec::new();
    for opened in 0..HALF {
        match std::net::TcpStream::connect(("127.0.0.1", node.port)) {
            Ok(stream) => flood.push(stream),
            Err(error) => panic!("socket {opened} of the flood: {error}"),
        }
    }
    let mut held = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("piped")),
        &mut held,
    )
    .expect("read the helper's count");
    assert_eq!(
        held.trim(),
        HALF.to_string(),
        "the helper's half of the flood"
    );
    let mut operator = node.raw();
    assert_eq!(
        operator.cmd(&["AUTH", "meridian-operator", "op-pw"]),
        Reply::ok()
    );
    assert_eq!(operator.cmd(&["PING"]), Reply::Simple("PONG".into()));
    drop(holder.stdin.take());
    holder
        .wait()
        .expect("the helper exits when its input closes");
}

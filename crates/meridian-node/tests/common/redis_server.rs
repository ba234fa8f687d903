//! A real redis-server (Debian package) for differential tests: the same commands
//! sent to it and to the node, their replies compared.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::node_process::wait_until;
use super::{Node, Raw, Reply, free_port};

/// A redis-server on a free loopback port, stopped on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) must be installed");
        wait_until("redis-server", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        RedisServer { child, port }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node and a redis-server, a connection to each, speaking RESP `protocol`.
pub struct Pair {
    _redis: RedisServer,
    _node: Node,
    theirs: Raw,
    ours: Raw,
}

impl Pair {
    pub fn start(protocol: u8) -> Pair {
        let redis = RedisServer::start();
        let node = Node::start();
        let mut theirs = Raw::connect(redis.port);
        let mut ours = node.raw();
        let hello = ["HELLO", &protocol.to_string()];
        theirs.cmd(&hello);
        ours.cmd(&hello);
        Pair {
            _redis: redis,
            _node: node,
            theirs,
            ours,
        }
    }

    /// Both replies to `args`: (redis-server's, the node's), every byte kept (bytes
    /// that are not printable ASCII escaped, so binary values compare exactly).
    pub fn both(&mut self, args: &[&str]) -> (String, String) {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        self.both_bytes(&args)
    }

    /// [`Pair::both`] for arguments that are not UTF-8.
    pub fn both_bytes(&mut self, args: &[&[u8]]) -> (String, String) {
        let theirs = self.theirs.cmd_bytes(args);
        let ours = self.ours.cmd_bytes(args);
        (
            theirs.escape_ascii().to_string(),
            ours.escape_ascii().to_string(),
        )
    }

    /// Both replies to a request each server refuses part way with a protocol error
    /// (and closes the connection): (redis-server's, the node's).
    pub fn both_refused(&mut self, args: &[&str]) -> (String, String) {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        let request = super::encode(&args);
        let reply = |raw: &mut Raw| {
            raw.send_refused(&request);
            let mut bytes = Vec::new();
            raw.read_bytes(&mut bytes);
            bytes.escape_ascii().to_string()
        };
        (reply(&mut self.theirs), reply(&mut self.ours))
    }

    /// The node's reply alone (where redis-server 7.0 deliberately differs).
    pub fn ours(&mut self, args: &[&str]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        String::from_utf8_lossy(&self.ours.cmd_bytes(&args)).into_owned()
    }

    /// Both servers' replies to `commands` sent as one pipeline (a single write each),
    /// one string per reply: (redis-server's, the node's).
    pub fn both_pipelined(&mut self, commands: &[Vec<String>]) -> (Vec<String>, Vec<String>) {
        let mut request = Vec::new();
        for args in commands {
            let args: Vec<&[u8]> = args.iter().map(String::as_bytes).collect();
            request.extend_from_slice(&super::encode(&args));
        }
        let replies = |raw: &mut Raw| {
            raw.send(&request);
            (0..commands.len())
                .map(|_| {
                    let mut bytes = Vec::new();
                    raw.read_bytes(&mut bytes);
                    bytes.escape_ascii().to_string()
                })
                .collect::<Vec<_>>()
        };
        (replies(&mut self.theirs), replies(&mut self.ours))
    }

    pub fn same(&mut self, args: &[&str]) {
        let (theirs, ours) = self.both(args);
        assert_eq!(ours, theirs, "{args:?}");
    }
}

impl Pair {
    /// Both replies to `args`, parsed, in the order each server sent them:
    /// (redis-server's, the node's).
    pub fn both_parsed(&mut self, args: &[&str]) -> (Reply, Reply) {
        (self.theirs.cmd(args), self.ours.cmd(args))
    }

    /// Both replies to `args`, parsed, with the members of every array or set sorted:
    /// for commands whose order is the server's own (SMEMBERS, SINTER, ...).
    pub fn both_unordered(&mut self, args: &[&str]) -> (Reply, Reply) {
        (sorted(self.theirs.cmd(args)), sorted(self.ours.cmd(args)))
    }

    pub fn same_unordered(&mut self, args: &[&str]) {
        let (theirs, ours) = self.both_unordered(args);
        assert_eq!(ours, theirs, "{args:?}");
    }
}

fn sorted(reply: Reply) -> Reply {
    let sort = |items: Vec<Reply>| {
        let mut items: Vec<Reply> = items.into_iter().map(sorted).collect();
        items.sort_by_key(|item| format!("{item:?}"));
        items
    };
    match reply {
        Reply::Array(items) => Reply::Array(sort(items)),
        Reply::Set(items) => Reply::Set(sort(items)),
        other => other,
    }
}

/// A command's arguments as owned strings, for the random sequences' strategies.
pub fn owned(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|part| part.to_string()).collect()
}

/// Runs random command sequences from `sequences` on a node and a redis-server (RESP
/// `protocol`, both flushed before each sequence), comparing every reply (members of
/// arrays and sets sorted when `unordered`). A difference fails with the shortest
/// sequence proptest shrinks it to and the seed; `MERIDIAN_DIFF_SEED` replays a seed.
pub fn compare_random_sequences(
    sequences: impl proptest::strategy::Strategy<Value = Vec<Vec<String>>>,
    protocol: u8,
    unordered: bool,
) {
    run_random_sequences(sequences, protocol, |pair, commands| {
        for args in commands {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (theirs, ours) = if unordered {
                let (theirs, ours) = pair.both_unordered(&args);
                (format!("{theirs:?}"), format!("{ours:?}"))
            } else {
                pair.both(&args)
            };
            if ours != theirs {
                return Err(format!("{args:?}: redis-server {theirs:?}, node {ours:?}"));
            }
        }
        Ok(())
    });
}

/// Like [`compare_random_sequences`], each sequence sent as one pipeline and the
/// replies compared byte for byte.
pub fn compare_random_pipelines(
    sequences: impl proptest::strategy::Strategy<Value = Vec<Vec<String>>>,
    protocol: u8,
) {
    run_random_sequences(sequences, protocol, |pair, commands| {
        let (theirs, ours) = pair.both_pipelined(commands);
        for ((args, theirs), ours) in commands.iter().zip(&theirs).zip(&ours) {
            if ours != theirs {
                return Err(format!("{args:?}: redis-server {theirs:?}, node {ours:?}"));
            }
        }
        Ok(())
    });
}

/// The runner behind both: 64 sequences from a printed seed, shrunk on failure.
fn run_random_sequences(
    sequences: impl proptest::strategy::Strategy<Value = Vec<Vec<String>>>,
    protocol: u8,
    compare: impl Fn(&mut Pair, &[Vec<String>]) -> Result<(), String>,
) {
    use proptest::test_runner::TestCaseError;
    let (mut runner, seed) = seeded_runner(64);
    let pair = std::cell::RefCell::new(Pair::start(protocol));
    let result = runner.run(&sequences, |commands| {
        let mut pair = pair.borrow_mut();
        pair.both(&["FLUSHALL"]);
        compare(&mut pair, &commands).map_err(TestCaseError::fail)
    });
    if let Err(failure) = result {
        panic!("seed {seed}: {failure}");
    }
}

/// A proptest runner of `cases` cases from a printed seed (`MERIDIAN_DIFF_SEED`
/// replays one), without failure files; returns it and the seed.
pub fn seeded_runner(cases: u32) -> (proptest::test_runner::TestRunner, u64) {
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let seed: u64 = std::env::var("MERIDIAN_DIFF_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |elapsed| elapsed.as_nanos() as u64)
        });
    eprintln!("MERIDIAN_DIFF_SEED={seed}");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    );
    (runner, seed)
}

//! Compatibility with the stock `redis-cli` (Debian package redis-tools).

mod common;

use std::process::Command;

use common::{Node, redis_cli};

fn cli(node: &Node, args: &[&str]) -> String {
    let output = Command::new(redis_cli())
        .args(["-h", "127.0.0.1", "-p", &node.port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    assert!(
        output.status.success(),
        "redis-cli {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string()
}

#[test]
fn redis_cli_round_trip() {
    let node = Node::start();
    assert_eq!(cli(&node, &["PING"]), "PONG");
    assert_eq!(cli(&node, &["SET", "name", "meridian"]), "OK");
    assert_eq!(cli(&node, &["GET", "name"]), "meridian");
    assert_eq!(cli(&node, &["--no-raw", "INCR", "hits"]), "(integer) 1");
    assert_eq!(cli(&node, &["--no-raw", "GET", "missing"]), "(nil)");
    assert_eq!(cli(&node, &["HSET", "h", "f", "v"]), "1");
    assert_eq!(
        cli(&node, &["-3", "--no-raw", "HGETALL", "h"]),
        "1# \"f\" => \"v\""
    );
    assert_eq!(
        cli(&node, &["GET", "h"]),
        "WRONGTYPE Operation against a key holding the wrong kind of value"
    );
    assert!(cli(&node, &["INFO", "server"]).contains("redis_version:"));
    assert_eq!(cli(&node, &["CLUSTER", "MYID"]), "test-node-0");
    assert_eq!(cli(&node, &["DBSIZE"]), "3");
}

#[test]
fn redis_cli_pipe_mode_and_scan() {
    let node = Node::start();
    let mut input = String::new();
    for index in 0..2000 {
        input.push_str(&format!("SET key:{index} {index}\r\n"));
    }
    let mut child = Command::new(redis_cli())
        .args(["-h", "127.0.0.1", "-p", &node.port.to_string(), "--pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("redis-cli --pipe");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("errors: 0, replies: 2000"), "{text}");
    let scanned = cli(&node, &["--scan", "--pattern", "key:1*"]);
    assert_eq!(scanned.lines().count(), 1111);
}

#[test]
fn redis_benchmark_smoke() {
    let node = Node::start();
    let output = Command::new("redis-benchmark")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &node.port.to_string(),
            "-t",
            "set,get,incr,mset",
            "-n",
            "2000",
            "-q",
            "-P",
            "8",
        ])
        .output()
        .expect("redis-benchmark (package redis-tools) must be installed");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for test in ["SET:", "GET:", "INCR:", "MSET"] {
        assert!(text.contains(test), "missing {test} in {text}");
    }
}

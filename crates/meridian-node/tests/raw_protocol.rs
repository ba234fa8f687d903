//! Wire-level edge cases over a raw TcpStream.

mod common;

use common::{Node, Raw, Reply, encode};

#[test]
fn frames_split_byte_by_byte() {
    let node = Node::start();
    let mut raw = node.raw();
    let frame = encode(&[b"SET", b"split", b"value"]);
    for byte in &frame {
        raw.send(std::slice::from_ref(byte));
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(raw.read(), Reply::ok());
    assert_eq!(raw.cmd(&["GET", "split"]), Reply::bulk("value"));
}

#[test]
fn pipeline_of_1000_commands() {
    let node = Node::start();
    let mut raw = node.raw();
    let mut batch = Vec::new();
    for index in 0..1000 {
        batch.extend(encode(&[b"INCR", b"counter"]));
        batch.extend(encode(&[b"SET", format!("key:{index}").as_bytes(), b"v"]));
    }
    raw.send(&batch);
    for index in 0..1000 {
        assert_eq!(raw.read(), Reply::Int(index + 1));
        assert_eq!(raw.read(), Reply::ok());
    }
    assert_eq!(raw.cmd(&["DBSIZE"]), Reply::Int(1001));
}

#[test]
fn inline_commands_with_quotes() {
    let node = Node::start();
    let mut raw = node.raw();
    raw.send(b"PING\r\nSET \"a key\" \"line\\nbreak\"\r\nGET \"a key\"\nEXISTS 'a key'\r\n\r\n");
    assert_eq!(raw.read(), Reply::Simple("PONG".into()));
    assert_eq!(raw.read(), Reply::ok());
    assert_eq!(raw.read(), Reply::bulk("line\nbreak"));
    assert_eq!(raw.read(), Reply::Int(1));
    raw.send(b"SET k \"unterminated\r\n");
    assert_eq!(
        raw.read(),
        Reply::err("ERR Protocol error: unbalanced quotes in request")
    );
    assert!(raw.closed());
}

fn expect_protocol_error(node: &Node, payload: &[u8], message: &str) {
    let mut raw = node.raw();
    raw.send(payload);
    assert_eq!(
        raw.read(),
        Reply::Error(format!("ERR Protocol error: {message}")),
        "payload {payload:?}"
    );
    assert!(raw.closed(), "connection must close after a protocol error");
}

#[test]
fn malformed_input_is_refused_like_redis() {
    let node = Node::start();
    expect_protocol_error(&node, b"*1\r\n$-5\r\n", "invalid bulk length");
    expect_protocol_error(&node, b"*1\r\n$99999999999999\r\n", "invalid bulk length");
    expect_protocol_error(&node, b"*1\r\n$abc\r\n", "invalid bulk length");
    expect_protocol_error(&node, b"*abc\r\n", "invalid multibulk length");
    expect_protocol_error(&node, b"*3000000000\r\n", "invalid multibulk length");
    expect_protocol_error(&node, b"*1\r\n:1\r\n", "expected '$', got ':'");
    let mut long_inline = vec![b'a'; 70 * 1024];
    long_inline.push(b' ');
    expect_protocol_error(&node, &long_inline, "too big inline request");
    // the server survives all of that
    assert_eq!(node.raw().cmd(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn oversized_value_beyond_proto_max_bulk_len() {
    let node = Node::start_with(&["--proto-max-bulk-len", "1000"]);
    let mut raw = node.raw();
    let big = vec![b'x'; 1001];
    assert_eq!(raw.cmd(&["SET", "small", &"y".repeat(1000)]), Reply::ok());
    raw.send(&encode(&[b"SET", b"big", &big]));
    assert_eq!(
        raw.read(),
        Reply::err("ERR Protocol error: invalid bulk length")
    );
    assert!(raw.closed());
}

#[test]
fn arity_type_and_unknown_command_errors() {
    let node = Node::start();
    let mut raw = node.raw();
    assert_eq!(
        raw.cmd(&["GET"]),
        Reply::err("ERR wrong number of arguments for 'get' command")
    );
    assert_eq!(
        raw.cmd(&["SET", "k"]),
        Reply::err("ERR wrong number of arguments for 'set' command")
    );
    assert_eq!(
        raw.cmd(&["MSET", "a", "1", "b"]),
        Reply::err("ERR wrong number of arguments for 'mset' command")
    );
    assert_eq!(
        raw.cmd(&["HSET", "h", "f", "v", "g"]),
        Reply::err("ERR wrong number of arguments for 'hset' command")
    );
    assert_eq!(
        raw.cmd(&["NOPE", "a", "b"]),
        Reply::err("ERR unknown command 'NOPE', with args beginning with: 'a' 'b' ")
    );
    assert_eq!(raw.cmd(&["HSET", "h", "f", "v"]), Reply::Int(1));
    let wrongtype = Reply::err("WRONGTYPE Operation against a key holding the wrong kind of value");
    assert_eq!(raw.cmd(&["GET", "h"]), wrongtype);
    assert_eq!(raw.cmd(&["INCR", "h"]), wrongtype);
    assert_eq!(raw.cmd(&["SET", "s", "abc"]), Reply::ok());
    assert_eq!(raw.cmd(&["HGET", "s", "f"]), wrongtype);
    assert_eq!(
        raw.cmd(&["INCR", "s"]),
        Reply::err("ERR value is not an integer or out of range")
    );
    assert_eq!(
        raw.cmd(&["INCRBYFLOAT", "s", "1"]),
        Reply::err("ERR value is not a valid float")
    );
    assert_eq!(
        raw.cmd(&["SET", "k", "v", "EX", "0"]),
        Reply::err("ERR invalid expire time in 'set' command")
    );
    assert_eq!(
        raw.cmd(&["SET", "k", "v", "NX", "XX"]),
        Reply::err("ERR syntax error")
    );
    assert_eq!(raw.cmd(&["SET", "max", "9223372036854775807"]), Reply::ok());
    assert_eq!(
        raw.cmd(&["INCR", "max"]),
        Reply::err("ERR increment or decrement would overflow")
    );
    assert_eq!(
        raw.cmd(&["SELECT", "1"]),
        Reply::err("ERR DB index is out of range")
    );
    assert_eq!(raw.cmd(&["SELECT", "0"]), Reply::ok());
    assert_eq!(
        raw.cmd(&["RENAME", "missing", "x"]),
        Reply::err("ERR no such key")
    );
    // nothing above closed the connection
    assert_eq!(raw.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn hello_3_switches_to_maps_and_pushes() {
    let node = Node::start();
    let mut raw = node.raw();
    let Reply::Map(fields) = raw.cmd(&["HELLO", "3"]) else {
        panic!("HELLO 3 must answer a map")
    };
    assert!(fields.contains(&(Reply::bulk("proto"), Reply::Int(3))));
    assert!(fields.contains(&(Reply::bulk("server"), Reply::bulk("redis"))));
    assert_eq!(raw.cmd(&["GET", "missing"]), Reply::Nil);
    raw.cmd(&["HSET", "h", "a", "1"]);
    assert_eq!(
        raw.cmd(&["HGETALL", "h"]),
        Reply::Map(vec![(Reply::bulk("a"), Reply::bulk("1"))])
    );
    assert_eq!(
        raw.cmd(&["HINCRBYFLOAT", "h", "a", "0.5"]),
        Reply::bulk("1.5")
    );
    assert_eq!(
        raw.cmd(&["HELLO", "4"]),
        Reply::err("NOPROTO unsupported protocol version")
    );
    let Reply::Array(flat) = raw.cmd(&["HELLO", "2"]) else {
        panic!("HELLO 2 answers a flat array")
    };
    assert_eq!(flat.len(), 14);
}

#[test]
fn raw_connection_helper_handles_nil_arrays() {
    let node = Node::start();
    let mut first = node.raw();
    let mut second = Raw::connect(node.port);
    assert_eq!(first.cmd(&["WATCH", "w"]), Reply::ok());
    assert_eq!(first.cmd(&["MULTI"]), Reply::ok());
    assert_eq!(
        first.cmd(&["SET", "w", "1"]),
        Reply::Simple("QUEUED".into())
    );
    assert_eq!(second.cmd(&["SET", "w", "2"]), Reply::ok());
    assert_eq!(first.cmd(&["EXEC"]), Reply::Nil);
    assert_eq!(first.cmd(&["GET", "w"]), Reply::bulk("2"));
}

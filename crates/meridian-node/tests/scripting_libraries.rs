//! The libraries Redis gives scripts beyond `redis` and `cjson` (`cmsgpack`, `struct`),
//! `redis.setresp(3)` with the RESP3 types in both directions, and the error values a
//! script's `pcall` sees: against redis-server itself, replies compared byte for byte
//! in RESP2 and RESP3, fixed cases and random ones (MessagePack of random Lua values,
//! random bytes decoded).

mod common;

use common::redis_server::{Pair, compare_random_sequences};
use proptest::prelude::*;

/// Returns every value `cmsgpack.unpack` (or another function) gave, each packed
/// again, or the error it raised: `{'ok', count, packed...}` / `{'error', message}`.
const ALL: &str = "local function all(ok, ...) \
    if not ok then return {'error', (...)} end \
    local out = {'ok', tostring(select('#', ...))} \
    for i = 1, select('#', ...) do out[#out + 1] = cmsgpack.pack((select(i, ...))) end \
    return out end ";

fn with_all(body: &str) -> String {
    format!("{ALL}{body}")
}

const CASES: &[&[&str]] = &[
    // cmsgpack: every encoding choice
    &[
        "EVAL",
        "return cmsgpack.pack(0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296, 2^53)",
        "0",
    ],
    &[
        "EVAL",
        "return cmsgpack.pack(-1, -32, -33, -128, -129, -32768, -32769, -2147483648, -2147483649, -2^63)",
        "0",
    ],
    &[
        "EVAL",
        "return cmsgpack.pack(1.5, -0.25, 0.1, 1e300, -1e-300, 2^63, 2^64, 0/0, 1/0, -1/0, -0.0)",
        "0",
    ],
    &[
        "EVAL",
        "return cmsgpack.pack('', 'a', string.rep('x', 31), string.rep('x', 32), string.rep('x', 255), string.rep('x', 256))",
        "0",
    ],
    &[
        "EVAL",
        "return #cmsgpack.pack(string.rep('x', 65535)) .. ' ' .. #cmsgpack.pack(string.rep('x', 65536))",
        "0",
    ],
    &[
        "EVAL",
        "return cmsgpack.pack(true, false, nil, {}, {1, 2, 3}, {a = 1}, {1, nil, 3}, {[1] = 'a', [3] = 'c'})",
        "0",
    ],
    &[
        "EVAL",
        "return cmsgpack.pack({[1.5] = 1, [-1] = 2, [0] = 3, x = {y = {z = {}}}})",
        "0",
    ],
    &[
        "EVAL",
        "local t = {} for i = 1, 20 do t[i] = i end return cmsgpack.pack(t)",
        "0",
    ],
    &[
        "EVAL",
        "local t = {} for i = 1, 70000 do t[i] = i % 3 end return #cmsgpack.pack(t)",
        "0",
    ],
    &[
        "EVAL",
        "local t = {} for i = 1, 20 do t['k' .. i] = i end return cmsgpack.pack(t)",
        "0",
    ],
    &[
        "EVAL",
        "local t = {} t.self = t t[1] = t return cmsgpack.pack(t)",
        "0",
    ],
    &[
        "EVAL",
        "local t = {} local c = t for i = 1, 20 do c[1] = {} c = c[1] end return cmsgpack.pack(t)",
        "0",
    ],
    &[
        "EVAL",
        "return cmsgpack.pack(print, coroutine and 1 or 2)",
        "0",
    ],
    &["EVAL", "return cmsgpack.pack()", "0"],
    &["EVAL", "return cmsgpack.pack(nil)", "0"],
    &[
        "EVAL",
        "return cmsgpack._NAME .. ' ' .. cmsgpack._VERSION",
        "0",
    ],
    // cmsgpack: decoding, multiple values, offsets and limits, bad input
    &[
        "EVAL",
        "return {cmsgpack.unpack(cmsgpack.pack(1, 'two', {3}))}",
        "0",
    ],
    &[
        "EVAL",
        "local t = cmsgpack.unpack(cmsgpack.pack({a = 1, b = {1, 2}})) return {t.a, t.b[2]}",
        "0",
    ],
    &[
        "EVAL",
        "return {cmsgpack.unpack_one(cmsgpack.pack(1, 2, 3))}",
        "0",
    ],
    &[
        "EVAL",
        "return {cmsgpack.unpack_one(cmsgpack.pack(1, 2, 3), 1)}",
        "0",
    ],
    &[
        "EVAL",
        "return {cmsgpack.unpack_one(cmsgpack.pack(1, 2, 3), 2)}",
        "0",
    ],
    &[
        "EVAL",
        "return {cmsgpack.unpack_one(cmsgpack.pack(1, 2, 3), 3)}",
        "0",
    ],
    &[
        "EVAL",
        "return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 2)}",
        "0",
    ],
    &[
        "EVAL",
        "return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 2, 1)}",
        "0",
    ],
    &[
        "EVAL",
        "return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 0)}",
        "0",
    ],
    &[
        "EVAL",
        "return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 0, 1)}",
        "0",
    ],
    &[
        "EVAL",
        "return {cmsgpack.unpack_limit(cmsgpack.pack(1, 2, 3), 9, 3)}",
        "0",
    ],
    &["EVAL", "return cmsgpack.unpack_limit('x', -1)", "0"],
    &["EVAL", "return cmsgpack.unpack_one('x', 5)", "0"],
    &["EVAL", "return cmsgpack.unpack_limit('x')", "0"],
    &["EVAL", "return cmsgpack.unpack()", "0"],
    &["EVAL", "return cmsgpack.unpack({})", "0"],
    &["EVAL", "return cmsgpack.unpack('')", "0"],
    &["EVAL", "return cmsgpack.unpack(string.char(0xc1))", "0"],
    &[
        "EVAL",
        "return cmsgpack.unpack(string.char(0xc4, 1, 65))",
        "0",
    ],
    &[
        "EVAL",
        "return cmsgpack.unpack(string.char(0xdb, 0xff, 0xff, 0xff, 0xff, 65))",
        "0",
    ],
    &[
        "EVAL",
        "return cmsgpack.unpack(string.char(0xdd, 0xff, 0xff, 0xff, 0xff, 1))",
        "0",
    ],
    &[
        "EVAL",
        "return cmsgpack.unpack(string.char(0x81, 0xc0, 1))",
        "0",
    ],
    &[
        "EVAL",
        "return cmsgpack.unpack(string.char(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))",
        "0",
    ],
    &[
        "EVAL",
        "return tostring(cmsgpack.unpack(string.char(0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0)))",
        "0",
    ],
    &[
        "EVAL",
        "return tostring(cmsgpack.unpack(string.char(0xca, 0x3f, 0xc0, 0, 0)))",
        "0",
    ],
    &[
        "EVAL",
        "return {pcall(cmsgpack.unpack, string.char(0x92, 1))}",
        "0",
    ],
    &[
        "EVAL",
        "return {pcall(cmsgpack.unpack, string.char(0xc1))}",
        "0",
    ],
    // a job queue's pattern: data kept as MessagePack in a hash, read in a script
    &[
        "EVAL",
        "redis.call('HSET', KEYS[1], 'data', cmsgpack.pack({id = 7, attempts = {1, 2}})) local job = cmsgpack.unpack(redis.call('HGET', KEYS[1], 'data')) return {job.id, #job.attempts}",
        "1",
        "job:1",
    ],
    // cjson: encoding choices and errors
    &["EVAL", "return cjson.encode({})", "0"],
    &[
        "EVAL",
        "return cjson.encode({1, 2, 3, {a = {b = {}}}})",
        "0",
    ],
    &[
        "EVAL",
        "return cjson.encode('a/b \\\\ \\\" \\1\\8\\9\\10\\12\\13\\31\\127 \\200')",
        "0",
    ],
    &[
        "EVAL",
        "return cjson.encode({1.5, 0.1, 1/3, 1e300, -1e-300, 2^53, 123456789012345, 99999999999999, -0.0, 3})",
        "0",
    ],
    &["EVAL", "return cjson.encode({1, nil, 3})", "0"],
    &["EVAL", "return cjson.encode({[1] = 1, [5] = 5})", "0"],
    &["EVAL", "return cjson.encode({[1] = 1, [20] = 5})", "0"],
    &[
        "EVAL",
        "local t = {} for i = 1, 30 do t[i] = i end t[25] = nil return cjson.encode(t)",
        "0",
    ],
    &["EVAL", "return cjson.encode({[0] = 1})", "0"],
    &["EVAL", "return cjson.encode({[1.5] = 1, [-2] = 2})", "0"],
    &[
        "EVAL",
        "return cjson.encode({a = 1, [3] = 'x', b = {true, false}})",
        "0",
    ],
    &["EVAL", "return cjson.encode({[true] = 1})", "0"],
    &["EVAL", "return cjson.encode(0/0)", "0"],
    &["EVAL", "return cjson.encode({x = 1/0})", "0"],
    &["EVAL", "return cjson.encode({[1/0] = 1})", "0"],
    &["EVAL", "return cjson.encode(type)", "0"],
    &["EVAL", "return cjson.encode(nil)", "0"],
    &["EVAL", "return cjson.encode()", "0"],
    &["EVAL", "return cjson.encode(1, 2)", "0"],
    &["EVAL", "local t = {} t[1] = t return cjson.encode(t)", "0"],
    &[
        "EVAL",
        "local t = {} local c = t for i = 1, 999 do c[1] = {} c = c[1] end return #cjson.encode(t)",
        "0",
    ],
    &[
        "EVAL",
        "local t = {} local c = t for i = 1, 1000 do c.x = {} c = c.x end return cjson.encode(t)",
        "0",
    ],
    &["EVAL", "return cjson.encode(cjson.null)", "0"],
    &["EVAL", "return cjson.encode({cjson.null, 1})", "0"],
    // cjson: decoding
    &[
        "EVAL",
        "return cjson.encode(cjson.decode('{\"a\":[1,2.5,\"x\",true,false,null],\"b\":{}}'))",
        "0",
    ],
    &[
        "EVAL",
        "return cjson.decode('[1,2,null]')[3] == cjson.null and 'null' or 'other'",
        "0",
    ],
    &["EVAL", "return #cjson.decode('[1,2,null]')", "0"],
    &[
        "EVAL",
        "return cjson.decode('\"\\\\u00e9\\\\ud83d\\\\ude00\\\\/\\\\b\\\\n\"')",
        "0",
    ],
    &["EVAL", "return {cjson.decode('\"\\\\u0000x\"')}", "0"],
    &["EVAL", "return tostring(cjson.decode(' -0.5e-3 '))", "0"],
    &[
        "EVAL",
        "return {tostring(cjson.decode('01')), tostring(cjson.decode('0x1F')), tostring(cjson.decode('+7')), tostring(cjson.decode('1e999')), tostring(cjson.decode('-inf')), tostring(cjson.decode('Infinity')), tostring(cjson.decode('1.')), tostring(cjson.decode('0x1.8p1'))}",
        "0",
    ],
    &["EVAL", "return cjson.decode('[1,2')", "0"],
    &["EVAL", "return cjson.decode(' ')", "0"],
    &["EVAL", "return cjson.decode('')", "0"],
    &["EVAL", "return cjson.decode('[1,]')", "0"],
    &["EVAL", "return cjson.decode('{\"a\" 1}')", "0"],
    &["EVAL", "return cjson.decode('{\"a\":1,}')", "0"],
    &["EVAL", "return cjson.decode('{\"a\":1 \"b\":2}')", "0"],
    &["EVAL", "return cjson.decode('{1:2}')", "0"],
    &["EVAL", "return cjson.decode('1 2')", "0"],
    &["EVAL", "return cjson.decode('\"abc')", "0"],
    &["EVAL", "return cjson.decode('\"\\\\q\"')", "0"],
    &["EVAL", "return cjson.decode('\"\\\\u12\"')", "0"],
    &["EVAL", "return cjson.decode('\"\\\\udc00\"')", "0"],
    &["EVAL", "return cjson.decode('\"\\\\ud800x\"')", "0"],
    &["EVAL", "return cjson.decode('nil')", "0"],
    &["EVAL", "return cjson.decode('tru')", "0"],
    &["EVAL", "return cjson.decode('-')", "0"],
    &["EVAL", "return cjson.decode('.5')", "0"],
    &["EVAL", "return cjson.decode('[1 2]')", "0"],
    &[
        "EVAL",
        "return cjson.decode('1' .. string.char(0) .. 'garbage')",
        "0",
    ],
    &["EVAL", "return cjson.decode(string.char(0, 65))", "0"],
    &[
        "EVAL",
        "return type(cjson.decode(string.rep('[', 1000) .. string.rep(']', 1000)))",
        "0",
    ],
    &[
        "EVAL",
        "return cjson.decode(string.rep('[', 1001) .. string.rep(']', 1001))",
        "0",
    ],
    &[
        "EVAL",
        "return cjson.decode(string.rep('{\"a\":', 1001))",
        "0",
    ],
    &["EVAL", "return cjson.decode()", "0"],
    &["EVAL", "return cjson.decode({})", "0"],
    &["EVAL", "return cjson.decode(12)", "0"],
    &["EVAL", "return {pcall(cjson.decode, '[')}", "0"],
    // numbers reach commands as Redis 7.0 passes them (%.17g)
    &[
        "EVAL",
        "local out = {} for i, n in ipairs({0.1, 1/3, 1e20, 2^63, 1e15, 123456789012345678, -1.5e-7, 3, -0.0}) do redis.call('SET', 'n', n) out[i] = redis.call('GET', 'n') end return out",
        "0",
    ],
    &[
        "EVAL",
        "redis.call('SET', 'n', 0/0) return redis.call('GET', 'n')",
        "0",
    ],
    // struct
    &[
        "EVAL",
        "return struct.pack('>i2<I4!4bd', -2, 7, 1, 2.5)",
        "0",
    ],
    &[
        "EVAL",
        "return struct.pack('bBhHlLTiIi1I2i8I8', -1, 255, -2, 65535, -3, 4, 5, -6, 7, -8, 9, -10, 11)",
        "0",
    ],
    &["EVAL", "return struct.pack('>i3<i3', -70000, 70000)", "0"],
    &["EVAL", "return struct.pack('i16I12', -1, 1)", "0"],
    &[
        "EVAL",
        "return struct.pack('fd>f>d', 1.5, -2.25, 3.5, 1e300)",
        "0",
    ],
    &[
        "EVAL",
        "return struct.pack('xc3sc0 x', 'abcdef', 'zero', 'whole')",
        "0",
    ],
    &[
        "EVAL",
        "return struct.pack('!b!8d!2bh!bi', 1, 2, 3, 4, 5, 6)",
        "0",
    ],
    &["EVAL", "return struct.pack('c5', 'ab')", "0"],
    &["EVAL", "return struct.pack('q', 1)", "0"],
    &["EVAL", "return struct.pack('!3b', 1)", "0"],
    &["EVAL", "return struct.pack('i33', 1)", "0"],
    &["EVAL", "return struct.pack('i', 'x')", "0"],
    &["EVAL", "return struct.pack('i', '12')", "0"],
    &["EVAL", "return struct.pack('i')", "0"],
    &["EVAL", "return struct.pack()", "0"],
    &[
        "EVAL",
        "return {struct.unpack('>i2', struct.pack('>i2', -300))}",
        "0",
    ],
    &[
        "EVAL",
        "return {struct.unpack('<bBhHiIlL', struct.pack('<bBhHiIlL', -1, 200, -300, 60000, -70000, 4000000000, -5, 6))}",
        "0",
    ],
    &[
        "EVAL",
        "return {struct.unpack('i3I3>i3', struct.pack('i3I3>i3', -2, 16777215, -8388608))}",
        "0",
    ],
    &[
        "EVAL",
        "local a, b, c = struct.unpack('fd', struct.pack('fd', 0.5, 0.1)) return {tostring(a), tostring(b), c}",
        "0",
    ],
    &[
        "EVAL",
        "return {struct.unpack('sc2', 'hello' .. string.char(0) .. 'xyz')}",
        "0",
    ],
    &[
        "EVAL",
        "return {struct.unpack('bc0', string.char(3) .. 'abcdef')}",
        "0",
    ],
    &["EVAL", "return {struct.unpack('c0', 'abc')}", "0"],
    &["EVAL", "return {struct.unpack('s', 'no zero')}", "0"],
    &["EVAL", "return {struct.unpack('i', 'ab')}", "0"],
    &["EVAL", "return {struct.unpack('b', 'abc', 3)}", "0"],
    &["EVAL", "return {struct.unpack('b', 'abc', 4)}", "0"],
    &["EVAL", "return {struct.unpack('b', 'abc', 5)}", "0"],
    &["EVAL", "return {struct.unpack('b', 'abc', 0)}", "0"],
    &["EVAL", "return {struct.unpack('b', 'abc', -1)}", "0"],
    &[
        "EVAL",
        "return {struct.unpack('!4bi', struct.pack('!4bi', 1, 2))}",
        "0",
    ],
    &[
        "EVAL",
        "return {struct.unpack('i16', struct.pack('i16', -5))}",
        "0",
    ],
    &[
        "EVAL",
        "return struct.size('bhilTfdx') .. ' ' .. struct.size('!bhilTfdx') .. ' ' .. struct.size('c7i3')",
        "0",
    ],
    &["EVAL", "return struct.size('s')", "0"],
    &["EVAL", "return struct.size('c0')", "0"],
    &["EVAL", "return struct.size('q')", "0"],
    &["EVAL", "return struct.size('!3')", "0"],
    &["EVAL", "return {pcall(struct.pack, 'q', 1)}", "0"],
    &["EVAL", "return {pcall(struct.unpack, 'i', 'x')}", "0"],
    // what pcall sees of errors: redis.call's error reply as a string, Lua's own
    // errors as they are
    &["SET", "text", "abc"],
    &[
        "EVAL",
        "return {pcall(redis.call, 'INCR', KEYS[1])}",
        "1",
        "text",
    ],
    &[
        "EVAL",
        "local ok, e = pcall(redis.call, 'INCR', KEYS[1]) return type(e)",
        "1",
        "text",
    ],
    &["EVAL", "return {pcall(redis.call, 'NOSUCHCOMMAND')}", "0"],
    &["EVAL", "return {pcall(error, 'boom')}", "0"],
    &[
        "EVAL",
        "local ok, e = pcall(error, {code = 7}) return e.code",
        "0",
    ],
    &["EVAL", "return {pcall(error, {err = 'as text'})}", "0"],
    &["EVAL", "return {pcall(error, {err = 5})}", "0"],
    &["EVAL", "return {pcall(redis.error_reply, 'x')}", "0"],
    &["EVAL", "return redis.error_reply('x')", "0"],
    &[
        "EVAL",
        "return redis.error_reply('-CODE the message\\r\\n')",
        "0",
    ],
    &["EVAL", "return redis.error_reply('-ALONE')", "0"],
    &["EVAL", "return redis.error_reply(5)", "0"],
    &["EVAL", "return redis.error_reply()", "0"],
    &["EVAL", "return redis.status_reply({})", "0"],
    &["EVAL", "return redis.status_reply('a', 'b')", "0"],
    &[
        "EVAL",
        "return {xpcall(function() return redis.call('INCR', 'text') end, function(e) return e.err end)}",
        "0",
    ],
    &["EVAL", "return {pcall(function() return 1, 2 end)}", "0"],
    &[
        "EVAL",
        "return {xpcall(function() return redis.call('INCR', 'text') end, function(e) return 'handled: ' .. e end)}",
        "0",
    ],
    &[
        "EVAL",
        "return {xpcall(function() error('x') end, function(e) return 'handled: ' .. e end)}",
        "0",
    ],
    &["EVAL", "return {pcall(cmsgpack.pack)}", "0"],
    // the library tables read as Redis's: their functions listed, loadstring's code
    // under the same protection, the debugger's calls inert, the version
    &[
        "EVAL",
        "local t = {} for k in pairs(redis) do t[#t + 1] = k end table.sort(t) return t",
        "0",
    ],
    &[
        "EVAL",
        "local t = {} for k in pairs(string) do t[#t + 1] = k end table.sort(t) return t",
        "0",
    ],
    &[
        "EVAL",
        "local t = {} for k, v in pairs(cjson) do t[#t + 1] = k end table.sort(t) return #t > 3",
        "0",
    ],
    &[
        "EVAL",
        "local t = {} for _, lib in ipairs({table, math, bit, cmsgpack, struct, coroutine}) do for k in pairs(lib) do t[#t + 1] = k end end table.sort(t) return t",
        "0",
    ],
    &[
        "EVAL",
        "return {type(rawget(string, 'len')), type(next(struct)), select('#', ipairs(math))}",
        "0",
    ],
    &[
        "EVAL",
        "return {type(getmetatable('').__index.len), ('x'):rep(3)}",
        "0",
    ],
    &["EVAL", "return loadstring('return 1 + 1')()", "0"],
    &["EVAL", "return {pcall(loadstring('x = 1'))}", "0"],
    &["EVAL", "return {loadstring('return +')}", "0"],
    &[
        "EVAL",
        "return {tostring(redis.breakpoint()), select('#', redis.debug('x', 1))}",
        "0",
    ],
    &["EVAL", "return redis.acl_check_cmd('GET', 'key')", "0"],
    &["EVAL", "return redis.acl_check_cmd('get')", "0"],
    &["EVAL", "return redis.acl_check_cmd('nosuch')", "0"],
    &["EVAL", "return redis.acl_check_cmd()", "0"],
    &[
        "EVAL",
        "return type(redis.REDIS_VERSION) .. ' ' .. type(redis.REDIS_VERSION_NUM)",
        "0",
    ],
    // redis.setresp(3): RESP3 replies reach Lua as Redis hands them over
    &["HSET", "h", "a", "1", "b", "2"],
    &["SADD", "set", "m"],
    &["ZADD", "z", "1.5", "one"],
    &[
        "EVAL",
        "redis.setresp(3) local m = redis.call('HGETALL', 'h') return {m.map.a, m.map.b}",
        "0",
    ],
    &[
        "EVAL",
        "redis.setresp(3) return redis.call('HGETALL', 'h')",
        "0",
    ],
    &[
        "EVAL",
        "redis.setresp(3) return redis.call('HGETALL', 'nokey')",
        "0",
    ],
    &[
        "EVAL",
        "redis.setresp(3) local s = redis.call('SMEMBERS', 'set') return tostring(s.set.m)",
        "0",
    ],
    &[
        "EVAL",
        "redis.setresp(3) return redis.call('SMEMBERS', 'set')",
        "0",
    ],
    &[
        "EVAL",
        "redis.setresp(3) local d = redis.call('ZSCORE', 'z', 'one') return tostring(d.double)",
        "0",
    ],
    &[
        "EVAL",
        "redis.setresp(3) return redis.call('ZSCORE', 'z', 'one')",
        "0",
    ],
    &[
        "EVAL",
        "redis.setresp(3) return redis.call('ZRANGE', 'z', 0, -1, 'WITHSCORES')",
        "0",
    ],
    &[
        "EVAL",
        "redis.setresp(3) return type(redis.call('GET', 'nosuch'))",
        "0",
    ],
    &[
        "EVAL",
        "redis.setresp(3) return redis.call('GET', 'nosuch')",
        "0",
    ],
    &[
        "EVAL",
        "redis.setresp(2) return type(redis.call('GET', 'nosuch'))",
        "0",
    ],
    &[
        "EVAL",
        "redis.setresp(3) redis.setresp(2) return redis.call('HGETALL', 'h')",
        "0",
    ],
    &["EVAL", "return type(redis.call('GET', 'nosuch'))", "0"],
    &["EVAL", "redis.setresp(4)", "0"],
    &["EVAL", "redis.setresp()", "0"],
    &["EVAL", "redis.setresp('x')", "0"],
    &["EVAL", "return {pcall(redis.setresp, 1)}", "0"],
    // the RESP3 return types, whatever the script's protocol
    &["EVAL", "return {double = 3.14}", "0"],
    &["EVAL", "return {double = 1/0}", "0"],
    &["EVAL", "return {double = 'x'}", "0"],
    &[
        "EVAL",
        "return {big_number = '123456789012345678901234567890'}",
        "0",
    ],
    &["EVAL", "return {big_number = '12\\r\\n34'}", "0"],
    &[
        "EVAL",
        "return {verbatim_string = {format = 'txt', string = 'hello'}}",
        "0",
    ],
    &[
        "EVAL",
        "return {verbatim_string = {format = 'markdown', string = 'x'}}",
        "0",
    ],
    &[
        "EVAL",
        "return {verbatim_string = {format = 'm', string = 'x'}}",
        "0",
    ],
    &["EVAL", "return {verbatim_string = {string = 'x'}}", "0"],
    &["EVAL", "return {map = {a = 1, b = {double = 0.5}}}", "0"],
    &["EVAL", "return {map = {}}", "0"],
    &["EVAL", "return {set = {a = true, b = true}}", "0"],
    &["EVAL", "return {set = {}}", "0"],
    &[
        "EVAL",
        "return {{map = {x = {set = {y = true}}}}, {double = 2}}",
        "0",
    ],
    &["EVAL", "redis.setresp(3) return true", "0"],
    &["EVAL", "redis.setresp(3) return false", "0"],
    &["EVAL", "redis.setresp(3) return {true, false, nil}", "0"],
    &["EVAL", "return {true, false}", "0"],
    // a status's line breaks are not the client's protocol
    &["EVAL", "return {ok = 'a\\r\\n+b'}", "0"],
    &["EVAL", "return redis.status_reply('x\\ny')", "0"],
];

#[test]
fn libraries_answer_like_redis_server_in_resp2_and_resp3() {
    for protocol in [2, 3] {
        let mut pair = Pair::start(protocol);
        for args in CASES {
            pair.same(args);
        }
        for body in [
            "return all(pcall(cmsgpack.unpack, cmsgpack.pack(1, nil, 'x', {a = {}})))",
            "return all(pcall(cmsgpack.unpack_one, cmsgpack.pack(1, nil, 'x'), 1))",
            "return all(pcall(struct.unpack, 'i', 'x'))",
        ] {
            pair.same(&["EVAL", &with_all(body), "0"]);
        }
    }
}

/// A Lua expression of a value `cmsgpack.pack` takes: numbers at and around every
/// encoding's bounds, strings of each header size, booleans, nil, and tables that
/// are arrays, maps or neither, nested.
fn lua_value() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        any::<i64>().prop_map(|n| format!("{n}")),
        (-40i64..300).prop_map(|n| format!("{n}")),
        prop::sample::select(vec![
            "127",
            "128",
            "255",
            "256",
            "65535",
            "65536",
            "4294967295",
            "4294967296",
            "-32",
            "-33",
            "-128",
            "-129",
            "-32768",
            "-32769",
            "-2147483648",
            "-2147483649",
            "2^53",
            "2^63",
            "-2^63",
            "2^64",
            "0/0",
            "1/0",
            "-1/0",
            "-0.0",
        ])
        .prop_map(str::to_string),
        any::<f64>().prop_map(|f| if f.is_finite() {
            format!("{f:e}")
        } else {
            "0.5".into()
        }),
        (any::<i32>(), 1u32..5).prop_map(|(n, d)| format!("{n}/{}", 10u32.pow(d))),
    ];
    let string = prop_oneof![
        "[a-z ]{0,40}".prop_map(|s| format!("'{s}'")),
        prop::sample::select(vec![0usize, 31, 32, 255, 256, 65535, 65536])
            .prop_map(|n| format!("string.rep('s', {n})")),
    ];
    let leaf = prop_oneof![
        4 => number,
        3 => string,
        1 => Just("true".to_string()),
        1 => Just("false".to_string()),
        1 => Just("nil".to_string()),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8)
                .prop_map(|items| format!("{{{}}}", items.join(", "))),
            prop::collection::vec(("[a-e]{1,3}", inner.clone()), 0..6).prop_map(|pairs| {
                let fields: Vec<String> = pairs
                    .iter()
                    .map(|(key, value)| format!("{key} = {value}"))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            }),
            prop::collection::vec((-3i32..20, inner), 0..6).prop_map(|pairs| {
                let fields: Vec<String> = pairs
                    .iter()
                    .map(|(key, value)| format!("[{key}] = {value}"))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            }),
        ]
    })
}

/// Encoding random values gives Redis's JSON (or its error), and decoding that JSON
/// gives values that encode the same again.
#[test]
fn random_values_encode_as_json_like_redis_server() {
    let command = lua_value().prop_map(|value| {
        vec![
            "EVAL".to_string(),
            format!(
                "local ok, json = pcall(cjson.encode, {value}) \
                 if not ok then return {{'error', json}} end \
                 local ok2, again = pcall(function() return cjson.encode(cjson.decode(json)) end) \
                 return {{json, tostring(ok2), again}}"
            ),
            "0".to_string(),
        ]
    });
    compare_random_sequences(prop::collection::vec(command, 1..8), 2, false);
}

/// Random JSON-like text (valid, cut short, or broken) decodes to the same values or
/// fails with the same error as in Redis.
#[test]
fn random_text_decodes_as_json_like_redis_server() {
    let piece = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        " ",
        "\"k\"",
        "\"a b\"",
        "\"\\u00e9\"",
        "\"\\n\"",
        "\"\\x\"",
        "1",
        "-2.5",
        "1e3",
        "0x10",
        "01",
        "+1",
        "inf",
        "nan",
        "true",
        "false",
        "null",
        "tru",
        "\"",
        "\\",
        "-",
        ".",
        "e",
        "5",
    ]);
    let command = prop::collection::vec(piece, 0..16).prop_map(|pieces| {
        let text = pieces.concat().replace('\\', "\\\\").replace('\'', "\\'");
        vec![
            "EVAL".to_string(),
            format!(
                "local ok, value = pcall(cjson.decode, '{text}') \
                 if not ok then return {{'error', value}} end \
                 local ok2, json = pcall(cjson.encode, value) \
                 return {{'ok', tostring(ok2), json}}"
            ),
            "0".to_string(),
        ]
    });
    compare_random_sequences(prop::collection::vec(command, 1..8), 2, false);
}

/// Packing random values gives Redis's bytes, and unpacking them gives values that
/// pack to the same bytes again.
#[test]
fn random_values_pack_like_redis_server() {
    let command = prop::collection::vec(lua_value(), 1..4).prop_map(|values| {
        let values = values.join(", ");
        vec![
            "EVAL".to_string(),
            with_all(&format!(
                "local packed = cmsgpack.pack({values}) \
                 local again = all(pcall(cmsgpack.unpack, packed)) \
                 table.insert(again, 1, packed) return again"
            )),
            "0".to_string(),
        ]
    });
    compare_random_sequences(prop::collection::vec(command, 1..8), 2, false);
}

/// Random bytes (valid MessagePack, cut short, or garbage) decode to the same values
/// or fail with the same error as in Redis.
#[test]
fn random_bytes_unpack_like_redis_server() {
    let kind = prop_oneof![
        any::<u8>(),
        prop::sample::select(vec![
            0x80u8, 0x81, 0x90, 0x92, 0xa3, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xca, 0xcb, 0xcc, 0xcd,
            0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3, 0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf,
        ]),
    ];
    let bytes = prop::collection::vec(kind, 0..24);
    let command = (bytes, 0i64..4, 0i64..6).prop_map(|(bytes, limit, offset)| {
        let chars: Vec<String> = bytes.iter().map(u8::to_string).collect();
        let data = format!("string.char({})", chars.join(", "));
        vec![
            "EVAL".to_string(),
            with_all(&format!(
                "local data = {data} return {{all(pcall(cmsgpack.unpack, data)), \
                 all(pcall(cmsgpack.unpack_limit, data, {limit}, {offset}))}}"
            )),
            "0".to_string(),
        ]
    });
    compare_random_sequences(prop::collection::vec(command, 1..8), 2, false);
}

/// Scripts share one interpreter: whatever a script tries against the globals and the
/// libraries (assignment, rawset, metatables, the string metatable, a library's load
/// code), the next script (another user's, say) runs the real functions, as in Redis.
#[test]
fn a_script_cannot_change_what_later_scripts_run() {
    const HOSTILE: &[&str] = &[
        "string.len = nil",
        "rawset(string, 'len', nil)",
        "setmetatable(string, nil) string.len = nil",
        "tostring = nil",
        "_G.tostring = nil",
        "rawset(_G, 'tostring', nil)",
        "setmetatable(_G, nil) tostring = nil",
        "getmetatable('').__index.upper = function() return 'hijacked' end",
        "rawset(getmetatable(''), '__index', {})",
        "setmetatable(getmetatable(''), nil)",
        "redis.call = function() return 'hijacked' end",
        "rawset(redis, 'call', function() return 'hijacked' end)",
        "setmetatable(redis, nil) redis.call = nil",
        "cjson.encode = function() redis.call('SET', 'stolen', 'yes') return 'x' end",
        "rawset(cjson, 'encode', nil)",
        "table.insert = nil",
        "math.floor = function() return 42 end",
        "rawset(struct, 'pack', nil) rawset(cmsgpack, 'pack', nil) rawset(bit, 'band', nil)",
        "pcall = nil",
        "local g = _G g.redis = nil",
        "getfenv(0).tostring = nil",
        "setfenv(1, {})",
        "loadstring('tostring = nil')()",
        "load(function() return nil end) string.len = nil",
        "local _, real = pairs(string) real.len = nil",
        "rawset(select(2, pairs(redis)), 'call', nil)",
        "local iter, real = ipairs(table) rawset(real, 'insert', nil)",
        "next(cjson) cjson.encode = nil",
    ];
    const VICTIM: &str = "return {string.len('abc'), tostring(12), ('abc'):upper(), \
        redis.call('PING'), cjson.encode({1}), math.floor(1.5), type(table.insert), \
        struct.pack('b', 1), cmsgpack.pack(1), bit.band(6, 3), tostring(pcall(type, 1)), \
        redis.call('EXISTS', 'stolen')}";
    let mut pair = Pair::start(2);
    let victim = pair.both(&["EVAL", VICTIM, "0"]);
    assert_eq!(victim.1, victim.0, "before");
    for hostile in HOSTILE {
        let (theirs, ours) = pair.both(&["EVAL", &format!("{hostile} return 'done'"), "0"]);
        assert!(
            theirs.starts_with('-'),
            "redis-server refuses {hostile}: {theirs}"
        );
        assert!(ours.starts_with('-'), "{hostile} must fail: {ours}");
        let (theirs, ours) = pair.both(&["EVAL", VICTIM, "0"]);
        assert_eq!(ours, theirs, "after {hostile}");
    }
    // a library's code runs with the same tables
    let library = "#!lua name=hostile\nstring.len = nil\n\
        redis.register_function('f', function() return 1 end)";
    let (theirs, ours) = pair.both(&["FUNCTION", "LOAD", library]);
    assert!(
        theirs.starts_with('-') && ours.starts_with('-'),
        "{theirs} / {ours}"
    );
    let (theirs, ours) = pair.both(&["EVAL", VICTIM, "0"]);
    assert_eq!(ours, theirs, "after FUNCTION LOAD");
}

/// A long library: Redis compresses its code (LZF) in FUNCTION DUMP's payload.
fn long_library(name: &str) -> String {
    let mut code = format!("#!lua name={name}\n");
    for index in 0..40 {
        code.push_str(&format!(
            "redis.register_function('{name}_{index}', function(keys, args) return '{name} says ' .. {index} end)\n"
        ));
    }
    code
}

/// FUNCTION LIST WITHCODE with libraries and functions in a fixed order (each server
/// lists them in its own).
fn listing(raw: &mut common::Raw) -> String {
    fn canonical(reply: common::Reply) -> String {
        match reply {
            common::Reply::Array(items) => {
                let mut items: Vec<String> = items.into_iter().map(canonical).collect();
                items.sort();
                format!("[{}]", items.join(","))
            }
            other => format!("{other:?}"),
        }
    }
    // (RESP2: each library and function is a flat array of names and values, which
    // sorting keeps apart since every name and value is distinct)
    canonical(raw.cmd(&["FUNCTION", "LIST", "WITHCODE"]))
}

fn payload(raw: &mut common::Raw) -> Vec<u8> {
    match raw.cmd(&["FUNCTION", "DUMP"]) {
        common::Reply::Bulk(payload) => payload,
        other => panic!("FUNCTION DUMP: {other:?}"),
    }
}

fn restore(raw: &mut common::Raw, payload: &[u8], policy: &[u8]) -> String {
    let mut args: Vec<&[u8]> = vec![b"FUNCTION", b"RESTORE", payload];
    if !policy.is_empty() {
        args.push(policy);
    }
    String::from_utf8_lossy(&raw.cmd_bytes(&args)).into_owned()
}

/// FUNCTION DUMP / RESTORE use Redis's payload format: libraries move from
/// redis-server to the node and back (Redis's LZF-compressed code included), with
/// Redis's policies and errors, all or nothing.
#[test]
fn function_payloads_move_between_redis_server_and_the_node() {
    let redis = common::redis_server::RedisServer::start();
    let node = common::Node::start();
    let mut theirs = common::Raw::connect(redis.port);
    let mut ours = node.raw();
    let short = "#!lua name=short\nredis.register_function('hello', function() return 'hi' end)";
    for raw in [&mut theirs, &mut ours] {
        raw.cmd(&["FUNCTION", "LOAD", short]);
    }
    // the same short library gives the same bytes
    assert_eq!(payload(&mut ours), payload(&mut theirs));
    theirs.cmd(&["FUNCTION", "LOAD", &long_library("long")]);
    let from_redis = payload(&mut theirs);
    // APPEND (the default) refuses a library that exists, and changes nothing
    assert_eq!(
        restore(&mut ours, &from_redis, b""),
        "-ERR Library short already exists\r\n"
    );
    let redis_answer = restore(&mut theirs, &from_redis, b"APPEND");
    assert!(redis_answer.starts_with("-ERR Library "), "{redis_answer}");
    assert_eq!(
        ours.cmd(&["FCALL", "long_3", "0"]),
        common::Reply::err("ERR Function not found")
    );
    // REPLACE brings the long library in, readable as Redis wrote it
    assert_eq!(restore(&mut ours, &from_redis, b"REPLACE"), "+OK\r\n");
    assert_eq!(
        ours.cmd(&["FCALL", "long_3", "0"]),
        common::Reply::bulk("long says 3")
    );
    assert!(listing(&mut ours) == listing(&mut theirs), "after REPLACE");
    // back the other way: FLUSH first, then the node's payload into redis-server
    ours.cmd(&["FUNCTION", "DELETE", "short"]);
    let from_node = payload(&mut ours);
    assert_eq!(restore(&mut theirs, &from_node, b"FLUSH"), "+OK\r\n");
    assert!(listing(&mut theirs) == listing(&mut ours), "after FLUSH");
    // damaged payloads and bad policies answer as Redis does
    let mut damaged = from_node.clone();
    damaged[3] ^= 1;
    for (payload, policy) in [
        (&damaged[..], &b""[..]),
        (&b"junk"[..], &b""[..]),
        (&from_node[..], &b"BOGUS"[..]),
    ] {
        assert_eq!(
            restore(&mut ours, payload, policy),
            restore(&mut theirs, payload, policy),
            "{policy:?}"
        );
    }
    let too_many: [&[u8]; 5] = [b"FUNCTION", b"RESTORE", &from_node, b"FLUSH", b"x"];
    assert_eq!(ours.cmd_bytes(&too_many), theirs.cmd_bytes(&too_many));
    // a payload whose library collides by function name is refused whole
    let clash = "#!lua name=clash\nredis.register_function('long_1', function() return 1 end)";
    let scratch = common::Node::start();
    let mut scratch = scratch.raw();
    scratch.cmd(&["FUNCTION", "LOAD", clash]);
    let clashing = payload(&mut scratch);
    let answer = restore(&mut ours, &clashing, b"REPLACE");
    assert!(
        answer.starts_with("-ERR Function long_1 already exists"),
        "{answer}"
    );
    assert!(listing(&mut ours) == listing(&mut theirs), "unchanged");
}

/// `redis.acl_check_cmd` answers for the user running the script, as in Redis.
#[test]
fn acl_check_cmd_answers_for_the_calling_user() {
    let redis = common::redis_server::RedisServer::start();
    let node = common::Node::start();
    let mut connections = [common::Raw::connect(redis.port), node.raw()];
    let script = "return {redis.acl_check_cmd('get', 'app:1') and 1 or 0, \
        redis.acl_check_cmd('get', 'other') and 1 or 0, \
        redis.acl_check_cmd('set', 'app:1', 'x') and 1 or 0, \
        redis.acl_check_cmd('eval', 'return 1', '0') and 1 or 0}";
    let mut answers = Vec::new();
    for raw in &mut connections {
        let setup = [
            "ACL", "SETUSER", "reader", "on", ">secret", "+eval", "+get", "~app:*",
        ];
        assert_eq!(raw.cmd(&setup), common::Reply::ok());
        assert_eq!(raw.cmd(&["AUTH", "reader", "secret"]), common::Reply::ok());
        answers.push(raw.cmd(&["EVAL", script, "0"]));
    }
    assert_eq!(answers[1], answers[0]);
    let ints = |values: &[i64]| {
        common::Reply::Array(values.iter().map(|&v| common::Reply::Int(v)).collect())
    };
    assert_eq!(answers[1], ints(&[1, 0, 0, 1]));
}

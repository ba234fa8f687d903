//! The `cjson` library Redis gives scripts (lua-cjson 1.0.3 with Redis 7.0's patches):
//! `encode`, `decode` and `null`, with its output and its errors byte for byte, since
//! applications store what scripts encode and compare it.
//!
//! Encoding: numbers as `%.14g` (NaN and infinities refused), strings with `/` and
//! control characters escaped, a table whose keys are all positive integers as an
//! array up to its largest key (holes as `null`; "excessively sparse" ones refused),
//! any other table as an object (number keys quoted), nesting up to 1000 levels.
//! Decoding: what C's `strtod` reads as a number (hex, `inf`, leading zeros, `+`),
//! `null` as the `cjson.null` light userdata, a NUL byte as the end of the text,
//! errors as "Expected ... but found ... at character N", nesting up to 1000 levels.
//! Unlike the C library the parser keeps its own stack (no recursion), and the
//! encoded text is bounded by the interpreter's memory limit.

use mlua::{LightUserData, Lua, MultiValue, Table, Value};

use super::args::{BoundedOutput, string_argument, type_name};
use super::{library_function, lua_number_text};

/// Arrays and objects nested deeper than this are refused both ways (Redis's limit).
const MAX_DEPTH: usize = 1000;

/// Arrays whose largest index is over twice their element count (and over this)
/// are refused as "excessively sparse".
const SPARSE_SAFE: i32 = 10;

pub fn library(lua: &Lua, max_encoded: usize) -> mlua::Result<Table> {
    let cjson = lua.create_table()?;
    // Lua's own `next` walks objects in the order the C library's lua_next does
    let next: mlua::Function = lua.globals().raw_get("next")?;
    cjson.raw_set(
        "encode",
        library_function(lua, move |lua, args: MultiValue| {
            if args.len() != 1 {
                return Err(mlua::Error::runtime(
                    "bad argument #1 to 'encode' (expected 1 argument)",
                ));
            }
            let mut encoder = Encoder {
                out: BoundedOutput::new(max_encoded, "JSON text"),
                next: next.clone(),
            };
            encoder.encode(&args[0])?;
            lua.create_string(encoder.out.bytes())
        })?,
    )?;
    cjson.raw_set(
        "decode",
        library_function(lua, |lua, args: MultiValue| {
            if args.len() != 1 {
                return Err(mlua::Error::runtime(
                    "bad argument #1 to 'decode' (expected 1 argument)",
                ));
            }
            let text = string_argument(lua, &args, 0, "decode")?;
            let text = text.as_bytes();
            if text.len() >= 2 && (text[0] == 0 || text[1] == 0) {
                return Err(mlua::Error::runtime(
                    "JSON parser does not support UTF-16 or UTF-32",
                ));
            }
            Parser {
                data: &text,
                pos: 0,
            }
            .document(lua)
        })?,
    )?;
    cjson.raw_set("null", null())?;
    cjson.raw_set("_NAME", "cjson")?;
    cjson.raw_set("_VERSION", "2.1.0")?;
    Ok(cjson)
}

/// `cjson.null`: JSON's null in Lua (a nil cannot be a table's value).
fn null() -> Value {
    Value::LightUserData(LightUserData(std::ptr::null_mut()))
}

fn cannot_serialise(value: &Value, reason: &str) -> mlua::Error {
    mlua::Error::runtime(format!(
        "Cannot serialise {}: {reason}",
        type_name(Some(value))
    ))
}

struct Encoder {
    out: BoundedOutput,
    next: mlua::Function,
}

/// A table being written: an array and the next index, or an object and the last
/// key written (Nil before the first).
enum Writing {
    Array {
        table: Table,
        len: usize,
        next: usize,
    },
    Object {
        table: Table,
        key: Value,
    },
}

impl Encoder {
    fn put(&mut self, bytes: &[u8]) -> mlua::Result<()> {
        self.out.put(bytes)
    }

    /// Writes `value`, tables included (an explicit stack: no recursion).
    fn encode(&mut self, value: &Value) -> mlua::Result<()> {
        let mut open: Vec<Writing> = Vec::new();
        self.value(value, &mut open)?;
        while let Some(top) = open.last_mut() {
            match top {
                Writing::Array { table, len, next } => {
                    if *next > *len {
                        open.pop();
                        self.put(b"]")?;
                        continue;
                    }
                    if *next > 1 {
                        self.put(b",")?;
                    }
                    let item: Value = table.raw_get(*next)?;
                    *next += 1;
                    self.value(&item, &mut open)?;
                }
                Writing::Object { table, key } => {
                    let (after, value): (Value, Value) =
                        self.next.call((table.clone(), key.clone()))?;
                    if after.is_nil() {
                        open.pop();
                        self.put(b"}")?;
                        continue;
                    }
                    if !key.is_nil() {
                        self.put(b",")?;
                    }
                    *key = after.clone();
                    self.key(&after)?;
                    self.value(&value, &mut open)?;
                }
            }
        }
        Ok(())
    }

    /// Writes a scalar, or opens a table on `open`.
    fn value(&mut self, value: &Value, open: &mut Vec<Writing>) -> mlua::Result<()> {
        match value {
            Value::String(text) => self.string(&text.as_bytes()),
            Value::Integer(number) => self.number(value, *number as f64),
            Value::Number(number) => self.number(value, *number),
            Value::Boolean(true) => self.put(b"true"),
            Value::Boolean(false) => self.put(b"false"),
            Value::Nil => self.put(b"null"),
            Value::LightUserData(pointer) if pointer.0.is_null() => self.put(b"null"),
            Value::Table(table) => {
                let len = array_length(value, table)?;
                if open.len() + 1 > MAX_DEPTH {
                    return Err(mlua::Error::runtime(format!(
                        "Cannot serialise, excessive nesting ({})",
                        open.len() + 1
                    )));
                }
                match len {
                    Some(len) if len > 0 => {
                        self.put(b"[")?;
                        open.push(Writing::Array {
                            table: table.clone(),
                            len,
                            next: 1,
                        });
                    }
                    _ => {
                        self.put(b"{")?;
                        open.push(Writing::Object {
                            table: table.clone(),
                            key: Value::Nil,
                        });
                    }
                }
                Ok(())
            }
            other => Err(cannot_serialise(other, "type not supported")),
        }
    }

    /// An object's key: a number (quoted) or a string, then the colon.
    fn key(&mut self, key: &Value) -> mlua::Result<()> {
        match key {
            Value::Integer(number) => {
                self.put(b"\"")?;
                self.number(key, *number as f64)?;
                self.put(b"\":")
            }
            Value::Number(number) => {
                self.put(b"\"")?;
                self.number(key, *number)?;
                self.put(b"\":")
            }
            Value::String(text) => {
                self.string(&text.as_bytes())?;
                self.put(b":")
            }
            other => Err(cannot_serialise(
                other,
                "table key must be a number or string",
            )),
        }
    }

    fn number(&mut self, value: &Value, number: f64) -> mlua::Result<()> {
        if !number.is_finite() {
            return Err(cannot_serialise(value, "must not be NaN or Inf"));
        }
        self.put(lua_number_text(number).as_bytes())
    }

    fn string(&mut self, text: &[u8]) -> mlua::Result<()> {
        let mut escaped = Vec::with_capacity(text.len() + 2);
        escaped.push(b'"');
        for &byte in text {
            match byte {
                b'"' => escaped.extend_from_slice(b"\\\""),
                b'\\' => escaped.extend_from_slice(b"\\\\"),
                b'/' => escaped.extend_from_slice(b"\\/"),
                0x08 => escaped.extend_from_slice(b"\\b"),
                b'\t' => escaped.extend_from_slice(b"\\t"),
                b'\n' => escaped.extend_from_slice(b"\\n"),
                0x0c => escaped.extend_from_slice(b"\\f"),
                b'\r' => escaped.extend_from_slice(b"\\r"),
                0x00..=0x1f | 0x7f => {
                    escaped.extend_from_slice(format!("\\u{byte:04x}").as_bytes())
                }
                other => escaped.push(other),
            }
        }
        escaped.push(b'"');
        self.put(&escaped)
    }
}

/// The C library's `lua_array_length`: the largest key when every key is an integral
/// number >= 1 (None: an object), refusing excessively sparse arrays.
fn array_length(value: &Value, table: &Table) -> mlua::Result<Option<usize>> {
    let (mut max, mut items) = (0i32, 0i32);
    for pair in table.pairs::<Value, Value>() {
        let (key, _) = pair?;
        let index = match key {
            Value::Integer(n) => n as f64,
            Value::Number(n) => n,
            _ => return Ok(None),
        };
        if index == 0.0 || index.is_nan() || index.floor() != index || index < 1.0 {
            return Ok(None);
        }
        // C's (int) of a double out of range is INT_MIN on x86 (a huge key: an object)
        let index = if (-2_147_483_648.0..2_147_483_648.0).contains(&index) {
            index as i32
        } else {
            i32::MIN
        };
        max = max.max(index);
        items = items.saturating_add(1);
    }
    if max > items.saturating_mul(2) && max > SPARSE_SAFE {
        return Err(cannot_serialise(value, "excessively sparse array"));
    }
    Ok(usize::try_from(max).ok())
}

#[derive(Debug)]
enum Kind {
    ObjBegin,
    ObjEnd,
    ArrBegin,
    ArrEnd,
    Str(Vec<u8>),
    Number(f64),
    Bool(bool),
    Null,
    Colon,
    Comma,
    End,
    Error(&'static str),
}

struct Token {
    kind: Kind,
    /// Where it starts (0-based; messages count from 1).
    index: usize,
}

impl Token {
    fn found(&self) -> &'static str {
        match self.kind {
            Kind::ObjBegin => "T_OBJ_BEGIN",
            Kind::ObjEnd => "T_OBJ_END",
            Kind::ArrBegin => "T_ARR_BEGIN",
            Kind::ArrEnd => "T_ARR_END",
            Kind::Str(_) => "T_STRING",
            Kind::Number(_) => "T_NUMBER",
            Kind::Bool(_) => "T_BOOLEAN",
            Kind::Null => "T_NULL",
            Kind::Colon => "T_COLON",
            Kind::Comma => "T_COMMA",
            Kind::End => "T_END",
            Kind::Error(message) => message,
        }
    }
}

/// A container being filled: an array and its next index, or an object and the key
/// its next value goes under.
enum Open {
    Array(Table, usize),
    Object(Table, Value),
}

struct Parser<'d> {
    data: &'d [u8],
    pos: usize,
}

impl Parser<'_> {
    /// The byte at `at`; past the end it is the NUL the C library's text ends with.
    fn byte(&self, at: usize) -> u8 {
        self.data.get(at).copied().unwrap_or(0)
    }

    fn expected(&self, what: &str, token: &Token) -> mlua::Error {
        mlua::Error::runtime(format!(
            "Expected {what} but found {} at character {}",
            token.found(),
            token.index + 1
        ))
    }

    /// Refuses a container opened inside `open` others past the library's limit.
    fn descend(&self, open: usize) -> mlua::Result<()> {
        let depth = open + 1;
        if depth > MAX_DEPTH {
            return Err(mlua::Error::runtime(format!(
                "Found too many nested data structures ({depth}) at character {}",
                self.pos
            )));
        }
        Ok(())
    }

    /// A whole JSON text: one value, then nothing.
    fn document(&mut self, lua: &Lua) -> mlua::Result<Value> {
        let first = self.next_token();
        let value = self.value(lua, first)?;
        let end = self.next_token();
        if !matches!(end.kind, Kind::End) {
            return Err(self.expected("the end", &end));
        }
        Ok(value)
    }

    /// The value `token` starts, containers included (with an explicit stack).
    fn value(&mut self, lua: &Lua, mut token: Token) -> mlua::Result<Value> {
        let mut open: Vec<Open> = Vec::new();
        loop {
            let mut value = match token.kind {
                Kind::Str(bytes) => Value::String(lua.create_string(&bytes)?),
                Kind::Number(number) => Value::Number(number),
                Kind::Bool(value) => Value::Boolean(value),
                Kind::Null => null(),
                Kind::ObjBegin => {
                    self.descend(open.len())?;
                    let table = lua.create_table()?;
                    let next = self.next_token();
                    if matches!(next.kind, Kind::ObjEnd) {
                        Value::Table(table)
                    } else {
                        let key = self.key(lua, next)?;
                        open.push(Open::Object(table, key));
                        token = self.next_token();
                        continue;
                    }
                }
                Kind::ArrBegin => {
                    self.descend(open.len())?;
                    let table = lua.create_table()?;
                    let next = self.next_token();
                    if matches!(next.kind, Kind::ArrEnd) {
                        Value::Table(table)
                    } else {
                        open.push(Open::Array(table, 1));
                        token = next;
                        continue;
                    }
                }
                _ => return Err(self.expected("value", &token)),
            };
            // hand the value to the containers it completes
            loop {
                let Some(container) = open.last_mut() else {
                    return Ok(value);
                };
                let (closing, what) = match container {
                    Open::Array(table, next) => {
                        table.raw_set(*next, value)?;
                        *next += 1;
                        (true, "comma or array end")
                    }
                    Open::Object(table, key) => {
                        table.raw_set(key.clone(), value)?;
                        (false, "comma or object end")
                    }
                };
                let after = self.next_token();
                match (after.kind, closing) {
                    (Kind::ArrEnd, true) | (Kind::ObjEnd, false) => {
                        value = match open.pop() {
                            Some(Open::Array(table, _) | Open::Object(table, _)) => {
                                Value::Table(table)
                            }
                            None => unreachable!("a container was open"),
                        };
                    }
                    (Kind::Comma, true) => {
                        token = self.next_token();
                        break;
                    }
                    (Kind::Comma, false) => {
                        let next = self.next_token();
                        let key = self.key(lua, next)?;
                        if let Some(Open::Object(_, slot)) = open.last_mut() {
                            *slot = key;
                        }
                        token = self.next_token();
                        break;
                    }
                    (kind, _) => {
                        let after = Token {
                            kind,
                            index: after.index,
                        };
                        return Err(self.expected(what, &after));
                    }
                }
            }
        }
    }

    /// An object's key and the colon after it.
    fn key(&mut self, lua: &Lua, token: Token) -> mlua::Result<Value> {
        let Kind::Str(bytes) = token.kind else {
            return Err(self.expected("object key string", &token));
        };
        let colon = self.next_token();
        if !matches!(colon.kind, Kind::Colon) {
            return Err(self.expected("colon", &colon));
        }
        Ok(Value::String(lua.create_string(&bytes)?))
    }

    fn next_token(&mut self) -> Token {
        while matches!(self.byte(self.pos), b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
        let index = self.pos;
        let single = |kind| Some(kind);
        let kind = match self.byte(index) {
            b'{' => single(Kind::ObjBegin),
            b'}' => single(Kind::ObjEnd),
            b'[' => single(Kind::ArrBegin),
            b']' => single(Kind::ArrEnd),
            b',' => single(Kind::Comma),
            b':' => single(Kind::Colon),
            _ => None,
        };
        if let Some(kind) = kind {
            self.pos += 1;
            return Token { kind, index };
        }
        let error = |message| Token {
            kind: Kind::Error(message),
            index,
        };
        let rest = &self.data[index.min(self.data.len())..];
        match self.byte(index) {
            0 => Token {
                kind: Kind::End,
                index,
            },
            b'"' => self.string_token(index),
            b'-' | b'0'..=b'9' => self.number_token(),
            b't' if rest.starts_with(b"true") => {
                self.pos += 4;
                Token {
                    kind: Kind::Bool(true),
                    index,
                }
            }
            b'f' if rest.starts_with(b"false") => {
                self.pos += 5;
                Token {
                    kind: Kind::Bool(false),
                    index,
                }
            }
            b'n' if rest.starts_with(b"null") => {
                self.pos += 4;
                Token {
                    kind: Kind::Null,
                    index,
                }
            }
            // what strict JSON refuses but the library hands to strtod
            b'+' | b'i' | b'I' | b'n' | b'N' if invalid_number(rest) => self.number_token(),
            _ => error("invalid token"),
        }
    }

    fn number_token(&mut self) -> Token {
        let index = self.pos;
        match strtod(&self.data[index..]) {
            Some((number, consumed)) => {
                self.pos += consumed;
                Token {
                    kind: Kind::Number(number),
                    index,
                }
            }
            None => Token {
                kind: Kind::Error("invalid number"),
                index,
            },
        }
    }

    fn string_token(&mut self, index: usize) -> Token {
        let mut out = Vec::new();
        self.pos += 1;
        loop {
            let at = self.pos;
            let error = |message| Token {
                kind: Kind::Error(message),
                index: at,
            };
            match self.byte(at) {
                b'"' => break,
                0 => return error("unexpected end of string"),
                b'\\' => {
                    let escaped = match self.byte(at + 1) {
                        b'"' => b'"',
                        b'\\' => b'\\',
                        b'/' => b'/',
                        b'b' => 0x08,
                        b't' => b'\t',
                        b'n' => b'\n',
                        b'f' => 0x0c,
                        b'r' => b'\r',
                        b'u' => match self.unicode_escape(&mut out) {
                            Some(()) => continue,
                            None => return error("invalid unicode escape code"),
                        },
                        _ => return error("invalid escape code"),
                    };
                    out.push(escaped);
                    self.pos += 2;
                }
                byte => {
                    out.push(byte);
                    self.pos += 1;
                }
            }
        }
        self.pos += 1;
        Token {
            kind: Kind::Str(out),
            index,
        }
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        (0..4).try_fold(0u32, |value, offset| {
            let digit = (self.byte(at + offset) as char).to_digit(16)?;
            Some(value << 4 | digit)
        })
    }

    /// `\uXXXX` (a surrogate pair: two of them) at `pos`, appended as UTF-8.
    fn unicode_escape(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let mut codepoint = self.hex4(self.pos + 2)?;
        let mut len = 6;
        if codepoint & 0xf800 == 0xd800 {
            if codepoint & 0x400 != 0 {
                return None;
            }
            if self.byte(self.pos + 6) != b'\\' || self.byte(self.pos + 7) != b'u' {
                return None;
            }
            let low = self.hex4(self.pos + 8)?;
            if low & 0xfc00 != 0xdc00 {
                return None;
            }
            codepoint = (((codepoint & 0x3ff) << 10) | (low & 0x3ff)) + 0x10000;
            len = 12;
        }
        // (the C library writes surrogate-free code points byte by byte, as here)
        let bytes: Vec<u8> = match codepoint {
            0..=0x7f => vec![codepoint as u8],
            0x80..=0x7ff => vec![
                (codepoint >> 6) as u8 | 0xc0,
                (codepoint & 0x3f) as u8 | 0x80,
            ],
            0x800..=0xffff => vec![
                (codepoint >> 12) as u8 | 0xe0,
                ((codepoint >> 6) & 0x3f) as u8 | 0x80,
                (codepoint & 0x3f) as u8 | 0x80,
            ],
            _ => vec![
                (codepoint >> 18) as u8 | 0xf0,
                ((codepoint >> 12) & 0x3f) as u8 | 0x80,
                ((codepoint >> 6) & 0x3f) as u8 | 0x80,
                (codepoint & 0x3f) as u8 | 0x80,
            ],
        };
        out.extend_from_slice(&bytes);
        self.pos += len;
        Some(())
    }
}

/// The library's `json_is_invalid_number`: text that is not a JSON number but that
/// strtod may read (`+`, hex, leading zeros, inf, nan).
fn invalid_number(text: &[u8]) -> bool {
    let at = |i: usize| text.get(i).copied().unwrap_or(0);
    if at(0) == b'+' {
        return true;
    }
    let i = usize::from(at(0) == b'-');
    if at(i) == b'0' {
        let next = at(i + 1);
        return next | 0x20 == b'x' || next.is_ascii_digit();
    }
    if at(i) <= b'9' {
        return false;
    }
    let word = |w: &[u8]| text.len() >= i + 3 && text[i..i + 3].eq_ignore_ascii_case(w);
    word(b"inf") || word(b"nan")
}

/// C's `strtod` in the C locale: the number at the start of `text` and the bytes it
/// takes (decimal, hex with an optional `p` exponent, `inf`, `infinity`, `nan`).
fn strtod(text: &[u8]) -> Option<(f64, usize)> {
    let at = |i: usize| text.get(i).copied().unwrap_or(0);
    let mut i = 0;
    let negative = match at(0) {
        b'-' => {
            i = 1;
            true
        }
        b'+' => {
            i = 1;
            false
        }
        _ => false,
    };
    let sign = if negative { -1.0 } else { 1.0 };
    let rest = &text[i.min(text.len())..];
    let starts =
        |word: &[u8]| rest.len() >= word.len() && rest[..word.len()].eq_ignore_ascii_case(word);
    if starts(b"infinity") {
        return Some((sign * f64::INFINITY, i + 8));
    }
    if starts(b"inf") {
        return Some((sign * f64::INFINITY, i + 3));
    }
    if starts(b"nan") {
        let mut end = i + 3;
        if at(end) == b'(' {
            let mut j = end + 1;
            while at(j).is_ascii_alphanumeric() || at(j) == b'_' {
                j += 1;
            }
            if at(j) == b')' {
                end = j + 1;
            }
        }
        let nan = if negative { -f64::NAN } else { f64::NAN };
        return Some((nan, end));
    }
    if at(i) == b'0' && at(i + 1) | 0x20 == b'x' {
        if let Some((value, len)) = hex_float(&text[i + 2..]) {
            return Some((sign * value, i + 2 + len));
        }
        // "0x" without hex digits: the 0 alone
        return Some((0.0 * sign, i + 1));
    }
    let start = i;
    let mut digits = 0;
    while at(i).is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if at(i) == b'.' {
        i += 1;
        while at(i).is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return None;
    }
    if at(i) | 0x20 == b'e' {
        let mut j = i + 1;
        if matches!(at(j), b'+' | b'-') {
            j += 1;
        }
        if at(j).is_ascii_digit() {
            while at(j).is_ascii_digit() {
                j += 1;
            }
            i = j;
        }
    }
    let literal = std::str::from_utf8(&text[start..i]).ok()?;
    // Rust reads "5." and ".5" too; both round correctly, as glibc does
    let value: f64 = literal.parse().ok()?;
    Some((sign * value, i))
}

/// Hex digits with an optional fraction and binary exponent; None without a digit.
fn hex_float(text: &[u8]) -> Option<(f64, usize)> {
    let at = |i: usize| text.get(i).copied().unwrap_or(0);
    let (mut value, mut scale, mut digits, mut i) = (0.0f64, 0i32, 0, 0);
    while let Some(digit) = (at(i) as char).to_digit(16) {
        value = value * 16.0 + f64::from(digit);
        i += 1;
        digits += 1;
    }
    if at(i) == b'.' {
        let mut j = i + 1;
        let mut fraction_digits = 0;
        while let Some(digit) = (at(j) as char).to_digit(16) {
            value = value * 16.0 + f64::from(digit);
            scale -= 4;
            j += 1;
            fraction_digits += 1;
        }
        if digits + fraction_digits > 0 {
            i = j;
            digits += fraction_digits;
        }
    }
    if digits == 0 {
        return None;
    }
    if at(i) | 0x20 == b'p' {
        let mut j = i + 1;
        let negative = at(j) == b'-';
        if matches!(at(j), b'+' | b'-') {
            j += 1;
        }
        if at(j).is_ascii_digit() {
            let mut exponent: i32 = 0;
            while at(j).is_ascii_digit() {
                exponent = exponent
                    .saturating_mul(10)
                    .saturating_add(i32::from(at(j) - b'0'));
                j += 1;
            }
            scale = scale.saturating_add(if negative { -exponent } else { exponent });
            i = j;
        }
    }
    Some((value * 2f64.powi(scale), i))
}

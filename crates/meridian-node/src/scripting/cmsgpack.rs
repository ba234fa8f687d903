//! The `cmsgpack` library Redis gives scripts (lua-cmsgpack 0.4.0): `pack(...)`,
//! `unpack(s)`, `unpack_one(s [, offset])`, `unpack_limit(s, limit [, offset])`, with
//! its encoding choices byte for byte (job-queue libraries such as BullMQ keep
//! MessagePack in keys and read it in their scripts).
//!
//! Encoding follows the C library: strings always as `str` (fixstr / str8 / str16 /
//! str32), a number as the smallest integer that holds it when it is integral and
//! within 64 bits, else a float32 when that is exact, else a float64; a table whose keys
//! are exactly 1..n as an array, any other as a map; tables nested deeper than 16
//! levels (cycles included) as nil. Unlike the C library, output is bounded (a table
//! that references one long string many times cannot grow it past the interpreter's
//! memory limit) and decoding is bounded in depth (no stack overflow).

use mlua::{Lua, MultiValue, Table, Value};

use super::args::{BoundedOutput, optional_integer, string_argument};
use super::library_function;

/// Tables nested deeper than this encode as nil (the C library's limit).
const MAX_NESTING: usize = 16;

/// Containers nested deeper than this are refused when decoding (where the C library
/// runs out of Lua stack).
const MAX_DECODE_DEPTH: usize = 4000;

/// Values one `unpack` may return at once (Lua's C stack holds about 8000).
const MAX_RESULTS: usize = 7900;

/// The `cmsgpack` table; `max_packed` bounds one `pack`'s output in bytes.
pub fn library(lua: &Lua, max_packed: usize) -> mlua::Result<Table> {
    let cmsgpack = lua.create_table()?;
    cmsgpack.raw_set(
        "pack",
        library_function(lua, move |lua, values: MultiValue| {
            if values.is_empty() {
                return Err(mlua::Error::runtime(
                    "bad argument #0 to 'pack' (MessagePack pack needs input.)",
                ));
            }
            let mut packer = Packer {
                out: BoundedOutput::new(max_packed, "MessagePack output"),
            };
            for value in values.iter() {
                packer.value(value, 0)?;
            }
            lua.create_string(packer.out.bytes())
        })?,
    )?;
    cmsgpack.raw_set(
        "unpack",
        library_function(lua, |lua, args: MultiValue| {
            let data = string_argument(lua, &args, 0, "unpack")?;
            unpack(lua, &data.as_bytes(), 0, 0)
        })?,
    )?;
    cmsgpack.raw_set(
        "unpack_one",
        library_function(lua, |lua, args: MultiValue| {
            let offset = optional_integer(lua, &args, 1, "unpack_one")?.unwrap_or(0);
            let data = string_argument(lua, &args, 0, "unpack_one")?;
            unpack(lua, &data.as_bytes(), 1, offset)
        })?,
    )?;
    cmsgpack.raw_set(
        "unpack_limit",
        library_function(lua, |lua, args: MultiValue| {
            let limit = optional_integer(lua, &args, 1, "unpack_limit")?.ok_or_else(|| {
                mlua::Error::runtime(
                    "bad argument #2 to 'unpack_limit' (number expected, got no value)",
                )
            })?;
            let offset = optional_integer(lua, &args, 2, "unpack_limit")?.unwrap_or(0);
            let data = string_argument(lua, &args, 0, "unpack_limit")?;
            unpack(lua, &data.as_bytes(), limit, offset)
        })?,
    )?;
    for (name, text) in [
        ("_NAME", "cmsgpack"),
        ("_VERSION", "lua-cmsgpack 0.4.0"),
        ("_COPYRIGHT", "Copyright (C) 2012, Salvatore Sanfilippo"),
        ("_DESCRIPTION", "MessagePack C implementation for Lua"),
    ] {
        cmsgpack.raw_set(name, text)?;
    }
    Ok(cmsgpack)
}

struct Packer {
    out: BoundedOutput,
}

impl Packer {
    fn put(&mut self, bytes: &[u8]) -> mlua::Result<()> {
        self.out.put(bytes)
    }

    fn value(&mut self, value: &Value, level: usize) -> mlua::Result<()> {
        match value {
            Value::String(text) => self.bytes(&text.as_bytes()),
            Value::Boolean(true) => self.put(&[0xc3]),
            Value::Boolean(false) => self.put(&[0xc2]),
            Value::Integer(number) => self.integer(*number),
            Value::Number(number) => self.number(*number),
            Value::Table(table) if level < MAX_NESTING => self.table(table, level),
            _ => self.put(&[0xc0]),
        }
    }

    fn bytes(&mut self, data: &[u8]) -> mlua::Result<()> {
        let len = data.len();
        if len < 32 {
            self.put(&[0xa0 | len as u8])?;
        } else if len <= 0xff {
            self.put(&[0xd9, len as u8])?;
        } else if len <= 0xffff {
            self.put(&[0xda])?;
            self.put(&(len as u16).to_be_bytes())?;
        } else {
            self.put(&[0xdb])?;
            self.put(&(len as u32).to_be_bytes())?;
        }
        self.put(data)
    }

    fn number(&mut self, number: f64) -> mlua::Result<()> {
        // integral and within int64: the C library's `(int64_t)n == n`
        const LIMIT: f64 = 9_223_372_036_854_775_808.0;
        if number.trunc() == number && (-LIMIT..LIMIT).contains(&number) {
            return self.integer(number as i64);
        }
        let single = number as f32;
        if f64::from(single) == number {
            self.put(&[0xca])?;
            self.put(&single.to_be_bytes())
        } else {
            self.put(&[0xcb])?;
            self.put(&number.to_be_bytes())
        }
    }

    fn integer(&mut self, n: i64) -> mlua::Result<()> {
        match n {
            0..=127 => self.put(&[n as u8]),
            128..=0xff => self.put(&[0xcc, n as u8]),
            0x100..=0xffff => {
                self.put(&[0xcd])?;
                self.put(&(n as u16).to_be_bytes())
            }
            0x1_0000..=0xffff_ffff => {
                self.put(&[0xce])?;
                self.put(&(n as u32).to_be_bytes())
            }
            0x1_0000_0000.. => {
                self.put(&[0xcf])?;
                self.put(&(n as u64).to_be_bytes())
            }
            -32..=-1 => self.put(&[n as u8]),
            -128..=-33 => self.put(&[0xd0, n as u8]),
            -32768..=-129 => {
                self.put(&[0xd1])?;
                self.put(&(n as i16).to_be_bytes())
            }
            -2_147_483_648..=-32769 => {
                self.put(&[0xd2])?;
                self.put(&(n as i32).to_be_bytes())
            }
            _ => {
                self.put(&[0xd3])?;
                self.put(&n.to_be_bytes())
            }
        }
    }

    fn table(&mut self, table: &Table, level: usize) -> mlua::Result<()> {
        if is_array(table)? {
            let len = table.raw_len();
            self.header(len, 0x90, 0xdc)?;
            for index in 1..=len {
                let item: Value = table.raw_get(index)?;
                self.value(&item, level + 1)?;
            }
            return Ok(());
        }
        let mut len = 0usize;
        table.for_each(|_: Value, _: Value| {
            len += 1;
            Ok(())
        })?;
        self.header(len, 0x80, 0xde)?;
        table.for_each(|key: Value, value: Value| {
            self.value(&key, level + 1)?;
            self.value(&value, level + 1)
        })
    }

    /// An array or map header: `fix` (count in the low nibble), or the 16- / 32-bit form
    /// starting with `sized` (`sized + 1` for 32 bits).
    fn header(&mut self, len: usize, fix: u8, sized: u8) -> mlua::Result<()> {
        if len <= 15 {
            self.put(&[fix | len as u8])
        } else if len <= 0xffff {
            self.put(&[sized])?;
            self.put(&(len as u16).to_be_bytes())
        } else {
            self.put(&[sized + 1])?;
            self.put(&(len as u32).to_be_bytes())
        }
    }
}

/// Whether every key is a positive integral number (in C int range) and the largest
/// equals the count: keys exactly 1..n (an empty table included).
fn is_array(table: &Table) -> mlua::Result<bool> {
    let (mut count, mut max) = (0i64, 0i64);
    let mut array = true;
    for pair in table.pairs::<Value, Value>() {
        let (key, _) = pair?;
        let index = match key {
            Value::Number(n) if n > 0.0 && n.trunc() == n && n <= f64::from(i32::MAX) => n as i64,
            Value::Integer(n) if n > 0 && n <= i64::from(i32::MAX) => n,
            _ => {
                array = false;
                break;
            }
        };
        max = max.max(index);
        count += 1;
    }
    Ok(array && max == count)
}

/// The C library's `mp_unpack_full`: decodes up to `limit` values from `offset` (both
/// zero: every value, and no offset returned); otherwise the next offset (-1 at the
/// end) comes first.
fn unpack(lua: &Lua, data: &[u8], limit: i64, offset: i64) -> mlua::Result<MultiValue> {
    let len = data.len() as i64;
    if offset < 0 || limit < 0 {
        // (the C library prints the input length where it means the limit)
        return Err(mlua::Error::runtime(format!(
            "Invalid request to unpack with offset of {} and limit of {}.",
            offset as i32, len as i32
        )));
    }
    if offset > len {
        return Err(mlua::Error::runtime(format!(
            "Start offset {} greater than input length {}.",
            offset as i32, len as i32
        )));
    }
    let decode_all = limit == 0 && offset == 0;
    let limit = if decode_all {
        i64::from(i32::MAX)
    } else {
        limit
    };
    let mut cursor = Cursor {
        data: &data[offset as usize..],
        pos: 0,
    };
    let mut values = Vec::new();
    while cursor.pos < cursor.data.len() && (values.len() as i64) < limit {
        if values.len() >= MAX_RESULTS {
            return Err(mlua::Error::runtime(
                "stack overflow (too many return values at once; use unpack_one or unpack_limit instead.)",
            ));
        }
        values.push(cursor.value(lua)?);
    }
    if !decode_all {
        let next = if cursor.pos == cursor.data.len() {
            -1
        } else {
            offset + cursor.pos as i64
        };
        values.insert(0, Value::Number(next as f64));
    }
    Ok(MultiValue::from_iter(values))
}

struct Cursor<'d> {
    data: &'d [u8],
    pos: usize,
}

/// An error Lua's own table code raises inside the C library: without a place.
#[derive(Debug)]
struct Unplaced(&'static str);

impl std::fmt::Display for Unplaced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Unplaced {}

fn unplaced(message: &'static str) -> mlua::Error {
    mlua::Error::external(Unplaced(message))
}

fn missing_bytes() -> mlua::Error {
    mlua::Error::runtime("Missing bytes in input.")
}

impl<'d> Cursor<'d> {
    fn take(&mut self, len: usize) -> mlua::Result<&'d [u8]> {
        let rest = &self.data[self.pos..];
        if rest.len() < len {
            return Err(missing_bytes());
        }
        self.pos += len;
        Ok(&rest[..len])
    }

    fn fixed<const N: usize>(&mut self) -> mlua::Result<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// One value, containers included (an explicit stack: no recursion).
    fn value(&mut self, lua: &Lua) -> mlua::Result<Value> {
        let mut open: Vec<Open> = Vec::new();
        loop {
            let mut value = match self.item(lua)? {
                Item::Value(value) => value,
                Item::Array(0) | Item::Map(0) => Value::Table(lua.create_table()?),
                Item::Array(len) => {
                    Self::nested(open.len())?;
                    // every element takes a byte at least: the table grows with the input
                    let capacity = len.min(self.data.len() - self.pos);
                    let table = lua.create_table_with_capacity(capacity, 0)?;
                    open.push(Open::Array {
                        table,
                        len,
                        next: 1,
                    });
                    continue;
                }
                Item::Map(len) => {
                    Self::nested(open.len())?;
                    let table = lua.create_table()?;
                    open.push(Open::Map {
                        table,
                        len,
                        key: None,
                    });
                    continue;
                }
            };
            // hand the value to the containers it completes
            loop {
                let Some(container) = open.last_mut() else {
                    return Ok(value);
                };
                let done = match container {
                    Open::Array { table, len, next } => {
                        table.raw_set(*next, value)?;
                        *next += 1;
                        *next > *len
                    }
                    Open::Map { table, len, key } => match key.take() {
                        None => {
                            *key = Some(value);
                            break;
                        }
                        Some(Value::Nil) => return Err(unplaced("table index is nil")),
                        Some(Value::Number(n)) if n.is_nan() => {
                            return Err(unplaced("table index is NaN"));
                        }
                        Some(key) => {
                            table.raw_set(key, value)?;
                            *len -= 1;
                            *len == 0
                        }
                    },
                };
                if !done {
                    break;
                }
                value = match open.pop() {
                    Some(Open::Array { table, .. } | Open::Map { table, .. }) => {
                        Value::Table(table)
                    }
                    None => unreachable!("a container was open"),
                };
            }
        }
    }

    /// The next item: a whole scalar, or the header of an array or map.
    fn item(&mut self, lua: &Lua) -> mlua::Result<Item> {
        let [kind] = self.fixed::<1>()?;
        let number = |n: f64| Ok(Item::Value(Value::Number(n)));
        match kind {
            0x00..=0x7f => number(f64::from(kind)),
            0xe0..=0xff => number(f64::from(kind as i8)),
            0xcc => number(f64::from(self.fixed::<1>()?[0])),
            0xd0 => number(f64::from(self.fixed::<1>()?[0] as i8)),
            0xcd => number(f64::from(u16::from_be_bytes(self.fixed()?))),
            0xd1 => number(f64::from(i16::from_be_bytes(self.fixed()?))),
            0xce => number(f64::from(u32::from_be_bytes(self.fixed()?))),
            0xd2 => number(f64::from(i32::from_be_bytes(self.fixed()?))),
            // pushed as a lua_Integer: above 2^63 - 1 it wraps to negative, as in Redis
            0xcf => number(u64::from_be_bytes(self.fixed()?) as i64 as f64),
            0xd3 => number(i64::from_be_bytes(self.fixed()?) as f64),
            0xc0 => Ok(Item::Value(Value::Nil)),
            0xc2 => Ok(Item::Value(Value::Boolean(false))),
            0xc3 => Ok(Item::Value(Value::Boolean(true))),
            0xca => number(f64::from(f32::from_be_bytes(self.fixed()?))),
            0xcb => number(f64::from_be_bytes(self.fixed()?)),
            0xa0..=0xbf => self.string(lua, usize::from(kind & 0x1f)),
            0xd9 => {
                let len = usize::from(self.fixed::<1>()?[0]);
                self.string(lua, len)
            }
            0xda => {
                let len = usize::from(u16::from_be_bytes(self.fixed()?));
                self.string(lua, len)
            }
            0xdb => {
                let len = u32::from_be_bytes(self.fixed()?) as usize;
                self.string(lua, len)
            }
            0x90..=0x9f => Ok(Item::Array(usize::from(kind & 0x0f))),
            0xdc => Ok(Item::Array(usize::from(u16::from_be_bytes(self.fixed()?)))),
            0xdd => Ok(Item::Array(u32::from_be_bytes(self.fixed()?) as usize)),
            0x80..=0x8f => Ok(Item::Map(usize::from(kind & 0x0f))),
            0xde => Ok(Item::Map(usize::from(u16::from_be_bytes(self.fixed()?)))),
            0xdf => Ok(Item::Map(u32::from_be_bytes(self.fixed()?) as usize)),
            // bin, ext and the reserved byte: the library predates them
            _ => Err(mlua::Error::runtime("Bad data format in input.")),
        }
    }

    fn string(&mut self, lua: &Lua, len: usize) -> mlua::Result<Item> {
        Ok(Item::Value(Value::String(
            lua.create_string(self.take(len)?)?,
        )))
    }

    /// Refuses a container opened inside `depth` others past the C library's reach.
    fn nested(depth: usize) -> mlua::Result<()> {
        if depth >= MAX_DECODE_DEPTH {
            return Err(mlua::Error::runtime(
                "stack overflow (in function mp_decode_to_lua_array)",
            ));
        }
        Ok(())
    }
}

enum Item {
    Value(Value),
    Array(usize),
    Map(usize),
}

/// A container being filled: an array and its next index, or a map, the pairs still
/// due and the key waiting for its value.
enum Open {
    Array {
        table: Table,
        len: usize,
        next: usize,
    },
    Map {
        table: Table,
        len: usize,
        key: Option<Value>,
    },
}

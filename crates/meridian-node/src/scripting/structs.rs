//! The `struct` library Redis gives scripts (Roberto Ierusalimschy's struct.c):
//! `pack(fmt, ...)`, `unpack(fmt, s [, pos])` and `size(fmt)`, binary records as C
//! lays them out on x86-64 (native little endian, `int` 4 bytes, `long` and `size_t` 8).
//!
//! Format characters: `<` `>` `=` endianness, `![n]` alignment, `x` a zero byte,
//! `b`/`B` `h`/`H` `l`/`L` `T` `i[n]`/`I[n]` integers, `f` `d` floats, `c[n]` `n` chars
//! (`c0`: the whole string when packing, the previous number as the length when
//! unpacking), `s` a zero-terminated string, spaces ignored.

use mlua::{Lua, MultiValue, Table, Value};

use super::args::{number_argument, optional_integer, string_argument};
use super::library_function;

/// Largest integral size (`i32`, `I16`, ...), as the C library allows.
const MAX_INT_SIZE: usize = 32;
/// `!` alone: the platform's largest alignment.
const MAX_ALIGN: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Endian {
    Big,
    Little,
}

struct Header {
    endian: Endian,
    align: usize,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            endian: Endian::Little,
            align: 1,
        }
    }
}

/// A format string being read, with the errors the C library raises.
struct Format<'f> {
    text: &'f [u8],
    pos: usize,
    function: &'static str,
}

fn error(message: String) -> mlua::Error {
    mlua::Error::runtime(message)
}

impl<'f> Format<'f> {
    fn new(text: &'f [u8], function: &'static str) -> Self {
        Format {
            text,
            pos: 0,
            function,
        }
    }

    fn next(&mut self) -> Option<u8> {
        let option = *self.text.get(self.pos)?;
        self.pos += 1;
        Some(option)
    }

    /// Digits after an option (`df` when there are none).
    fn number(&mut self, df: usize) -> mlua::Result<usize> {
        if !self.text.get(self.pos).is_some_and(u8::is_ascii_digit) {
            return Ok(df);
        }
        let mut value: usize = 0;
        while let Some(&digit) = self.text.get(self.pos).filter(|d| d.is_ascii_digit()) {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(usize::from(digit - b'0')))
                .filter(|&v| v <= i32::MAX as usize)
                .ok_or_else(|| error("integral size overflow".into()))?;
            self.pos += 1;
        }
        Ok(value)
    }

    /// The size of `option` in bytes (reading its digits).
    fn size(&mut self, option: u8) -> mlua::Result<usize> {
        Ok(match option {
            b'B' | b'b' => 1,
            b'H' | b'h' => 2,
            b'L' | b'l' | b'T' | b'd' => 8,
            b'f' => 4,
            b'x' => 1,
            b'c' => self.number(1)?,
            b'i' | b'I' => {
                let size = self.number(4)?;
                if size > MAX_INT_SIZE {
                    return Err(error(format!(
                        "integral size {size} is larger than limit of {MAX_INT_SIZE}"
                    )));
                }
                size
            }
            _ => 0,
        })
    }

    /// Endianness, alignment and spaces; anything else is an invalid option.
    fn control(&mut self, option: u8, header: &mut Header) -> mlua::Result<()> {
        match option {
            b' ' => {}
            b'>' => header.endian = Endian::Big,
            b'<' | b'=' => header.endian = Endian::Little,
            b'!' => {
                let align = self.number(MAX_ALIGN)?;
                if !align.is_power_of_two() {
                    return Err(error(format!("alignment {align} is not a power of 2")));
                }
                header.align = align;
            }
            other => {
                return Err(error(format!(
                    "bad argument #1 to '{}' (invalid format option '{}')",
                    self.function, other as char
                )));
            }
        }
        Ok(())
    }
}

/// Padding before an item of `size` bytes at `len` (none for chars and sizeless items).
fn padding(len: usize, header: &Header, option: u8, size: usize) -> usize {
    if size == 0 || option == b'c' {
        return 0;
    }
    let size = size.min(header.align);
    (size - (len & (size - 1))) & (size - 1)
}

pub fn library(lua: &Lua) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    table.raw_set("pack", library_function(lua, pack)?)?;
    table.raw_set("unpack", library_function(lua, unpack)?)?;
    table.raw_set("size", library_function(lua, size)?)?;
    Ok(table)
}

fn pack(lua: &Lua, mut args: MultiValue) -> mlua::Result<mlua::LuaString> {
    let format = string_argument(lua, &args, 0, "pack")?;
    // the C library pushes a nil after the arguments: a missing one is "nil"
    args.push_back(Value::Nil);
    let format = format.as_bytes();
    let mut format = Format::new(&format, "pack");
    let mut header = Header::default();
    let mut out = Vec::new();
    let mut arg = 1;
    while let Some(option) = format.next() {
        let mut size = format.size(option)?;
        out.resize(out.len() + padding(out.len(), &header, option, size), 0);
        match option {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let number = number_argument(lua, &args, arg, "pack")?;
                arg += 1;
                // (unsigned long)(long)n for negatives, (unsigned long)n otherwise
                let mut value = if number < 0.0 {
                    number as i64 as u64
                } else {
                    number as u64
                };
                let mut bytes = vec![0u8; size];
                for byte in bytes.iter_mut() {
                    *byte = value as u8;
                    value >>= 8;
                }
                if header.endian == Endian::Big {
                    bytes.reverse();
                }
                out.extend_from_slice(&bytes);
            }
            b'x' => out.push(0),
            b'f' | b'd' => {
                let number = number_argument(lua, &args, arg, "pack")?;
                arg += 1;
                let mut bytes = if option == b'f' {
                    (number as f32).to_le_bytes().to_vec()
                } else {
                    number.to_le_bytes().to_vec()
                };
                if header.endian == Endian::Big {
                    bytes.reverse();
                }
                out.extend_from_slice(&bytes);
            }
            b'c' | b's' => {
                let text = string_argument(lua, &args, arg, "pack")?;
                arg += 1;
                let text = text.as_bytes();
                if size == 0 {
                    size = text.len();
                }
                if text.len() < size {
                    // (the C library names the argument after the string)
                    return Err(error(format!(
                        "bad argument #{} to 'pack' (string too short)",
                        arg + 1
                    )));
                }
                out.extend_from_slice(&text[..size]);
                if option == b's' {
                    out.push(0);
                }
            }
            other => format.control(other, &mut header)?,
        }
    }
    lua.create_string(&out)
}

fn unpack(lua: &Lua, args: MultiValue) -> mlua::Result<MultiValue> {
    let format_text = string_argument(lua, &args, 0, "unpack")?;
    let format_text = format_text.as_bytes();
    let data = string_argument(lua, &args, 1, "unpack")?;
    let data = data.as_bytes();
    let start = optional_integer(lua, &args, 2, "unpack")?.unwrap_or(1);
    // (a negative start is a huge size_t in C: "too short" at the first item)
    if start == 0 {
        return Err(error(
            "bad argument #3 to 'unpack' (offset must be 1 or greater)".into(),
        ));
    }
    let mut pos = (start as usize).wrapping_sub(1);
    let mut format = Format::new(&format_text, "unpack");
    let too_short = || error("bad argument #2 to 'unpack' (data string too short)".into());
    let mut header = Header::default();
    let mut values: Vec<Value> = Vec::new();
    while let Some(option) = format.next() {
        let mut size = format.size(option)?;
        pos = pos.saturating_add(padding(pos, &header, option, size));
        if pos > data.len() || size > data.len() - pos {
            return Err(too_short());
        }
        if values.len() > 7900 {
            return Err(error("stack overflow (too many results)".into()));
        }
        match option {
            b'b' | b'B' | b'h' | b'H' | b'l' | b'L' | b'T' | b'i' | b'I' => {
                let bytes = data[pos..pos + size].iter();
                let shift_in = |value: u64, &byte: &u8| (value << 8) | u64::from(byte);
                let mut value = match header.endian {
                    Endian::Big => bytes.fold(0, shift_in),
                    Endian::Little => bytes.rev().fold(0, shift_in),
                };
                let number = if option.is_ascii_lowercase() {
                    // sign-extend from the item's top bit (x86 masks the shift to 6 bits)
                    let mask = (!0u64).wrapping_shl((size * 8).wrapping_sub(1) as u32);
                    if size > 0 && value & mask != 0 {
                        value |= mask;
                    }
                    value as i64 as f64
                } else {
                    value as f64
                };
                values.push(Value::Number(number));
            }
            b'x' => {}
            b'f' => {
                let mut bytes: [u8; 4] = data[pos..pos + 4].try_into().expect("4 bytes");
                if header.endian == Endian::Big {
                    bytes.reverse();
                }
                values.push(Value::Number(f64::from(f32::from_le_bytes(bytes))));
            }
            b'd' => {
                let mut bytes: [u8; 8] = data[pos..pos + 8].try_into().expect("8 bytes");
                if header.endian == Endian::Big {
                    bytes.reverse();
                }
                values.push(Value::Number(f64::from_le_bytes(bytes)));
            }
            b'c' => {
                if size == 0 {
                    let previous = match values.pop() {
                        Some(value) => lua.coerce_number(value)?,
                        None => None,
                    };
                    let Some(previous) = previous else {
                        return Err(error("format 'c0' needs a previous size".into()));
                    };
                    if previous < 0.0 {
                        return Err(too_short());
                    }
                    size = previous as usize;
                    if size > data.len() - pos {
                        return Err(too_short());
                    }
                }
                values.push(Value::String(lua.create_string(&data[pos..pos + size])?));
            }
            b's' => {
                let Some(end) = data[pos..].iter().position(|&byte| byte == 0) else {
                    return Err(error("unfinished string in data".into()));
                };
                values.push(Value::String(lua.create_string(&data[pos..pos + end])?));
                size = end + 1;
            }
            other => format.control(other, &mut header)?,
        }
        pos += size;
    }
    values.push(Value::Number(pos.wrapping_add(1) as f64));
    Ok(MultiValue::from_iter(values))
}

fn size(lua: &Lua, args: MultiValue) -> mlua::Result<usize> {
    let format_text = string_argument(lua, &args, 0, "size")?;
    let format_text = format_text.as_bytes();
    let mut format = Format::new(&format_text, "size");
    let mut header = Header::default();
    let mut pos = 0usize;
    while let Some(option) = format.next() {
        let size = format.size(option)?;
        pos += padding(pos, &header, option, size);
        if option == b's' {
            return Err(error(
                "bad argument #1 to 'size' (option 's' has no fixed size)".into(),
            ));
        }
        if option == b'c' && size == 0 {
            return Err(error(
                "bad argument #1 to 'size' (option 'c0' has no fixed size)".into(),
            ));
        }
        if !option.is_ascii_alphanumeric() {
            format.control(option, &mut header)?;
        }
        pos += size;
    }
    Ok(pos)
}

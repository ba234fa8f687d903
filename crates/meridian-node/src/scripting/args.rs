//! Arguments of the libraries Redis gives scripts, read as Lua's C API reads them
//! (`luaL_checklstring`, `luaL_checknumber`, `luaL_optinteger`), with its messages.

use mlua::{Lua, MultiValue, Value};

/// The Lua type name the C API's argument errors report (`no value` when absent).
pub fn type_name(value: Option<&Value>) -> &'static str {
    match value {
        None => "no value",
        Some(Value::Nil) => "nil",
        Some(Value::Boolean(_)) => "boolean",
        Some(Value::Integer(_) | Value::Number(_)) => "number",
        Some(Value::String(_)) => "string",
        Some(Value::Table(_)) => "table",
        Some(Value::Function(_)) => "function",
        Some(Value::Thread(_)) => "thread",
        Some(_) => "userdata",
    }
}

/// `luaL_typerror`'s message for argument `index` (0-based) of `function`.
fn wrong_type(index: usize, function: &str, expected: &str, value: Option<&Value>) -> mlua::Error {
    mlua::Error::runtime(format!(
        "bad argument #{} to '{function}' ({expected} expected, got {})",
        index + 1,
        type_name(value)
    ))
}

/// Argument `index` as a string (numbers converted), as `luaL_checklstring` takes it.
pub fn string_argument(
    lua: &Lua,
    args: &MultiValue,
    index: usize,
    function: &str,
) -> mlua::Result<mlua::LuaString> {
    let value = args.get(index);
    let coerced = match value {
        Some(value @ (Value::String(_) | Value::Number(_) | Value::Integer(_))) => {
            lua.coerce_string(value.clone())?
        }
        _ => None,
    };
    coerced.ok_or_else(|| wrong_type(index, function, "string", value))
}

/// Argument `index` as a number (numeric strings converted), as `luaL_checknumber`.
pub fn number_argument(
    lua: &Lua,
    args: &MultiValue,
    index: usize,
    function: &str,
) -> mlua::Result<f64> {
    let value = args.get(index);
    match value {
        Some(value) => lua.coerce_number(value.clone())?,
        None => None,
    }
    .ok_or_else(|| wrong_type(index, function, "number", value))
}

/// Argument `index` as `luaL_optinteger` reads it (truncated; absent or nil: None).
pub fn optional_integer(
    lua: &Lua,
    args: &MultiValue,
    index: usize,
    function: &str,
) -> mlua::Result<Option<i64>> {
    match args.get(index) {
        None | Some(Value::Nil) => Ok(None),
        Some(_) => Ok(Some(number_argument(lua, args, index, function)? as i64)),
    }
}

/// What the libraries' encoders write, bounded by the interpreter's memory limit: a
/// table that holds one long string many times cannot make an encoding outgrow it.
pub struct BoundedOutput {
    bytes: Vec<u8>,
    max: usize,
    /// What is written, for the error (`JSON text`, `MessagePack output`).
    what: &'static str,
}

impl BoundedOutput {
    pub fn new(max: usize, what: &'static str) -> BoundedOutput {
        BoundedOutput {
            bytes: Vec::new(),
            max,
            what,
        }
    }

    pub fn put(&mut self, bytes: &[u8]) -> mlua::Result<()> {
        if self.bytes.len() + bytes.len() > self.max {
            return Err(mlua::Error::runtime(format!(
                "not enough memory: {} over the scripts' memory limit",
                self.what
            )));
        }
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

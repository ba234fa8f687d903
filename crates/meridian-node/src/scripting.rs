//! Lua scripting (EVAL, EVALSHA, SCRIPT): one Lua 5.1 interpreter per node, as Redis
//! embeds it, with Redis's `redis` library (`call`, `pcall`, `error_reply`,
//! `status_reply`, `sha1hex`, `log`), `cjson`, `KEYS` / `ARGV`, and read-only globals.
//!
//! The interpreter knows nothing of the keyspace: a script's `redis.call` runs through
//! the callback the command layer passes to [`Scripts::run`] (the dispatcher, under
//! the locks the command holds), so this module imports none of its callers.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mlua::{HookTriggers, Lua, LuaOptions, StdLib, Table, Value, VmState};
use parking_lot::Mutex;

use crate::protocol::{Protocol, Reply};

mod args;
mod cjson;
mod cmsgpack;
mod dump;
mod structs;

/// The environment of a library's code: its own `redis`, everything else read from the
/// globals, nothing written (as Redis runs libraries).
const ENV_SOURCE: &str = r#"
local env = ...
return setmetatable(env, {
    __index = _G,
    __newindex = function()
        error("Attempt to modify a readonly table", 2)
    end,
})
"#;

/// Stops the running script: SCRIPT KILL sets `kill`; a script armed for longer than
/// `limit` is stopped too. The interpreter's hook asks every [`HOOK_EVERY`] instructions
/// (installed once: setting a hook per run costs more than a small script).
struct Watchdog {
    base: Instant,
    kill: AtomicBool,
    /// Milliseconds after `base` when the running script must stop; 0: none runs.
    deadline_ms: std::sync::atomic::AtomicU64,
    /// How long a script may run, in milliseconds (CONFIG SET busy-reply-threshold):
    /// Redis only offers SCRIPT KILL and SHUTDOWN NOSAVE, but a cache node must not
    /// hang on one client's loop.
    limit_ms: std::sync::atomic::AtomicU64,
}

impl Watchdog {
    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn arm(&self) {
        self.kill.store(false, Ordering::Release);
        let deadline = self.now_ms() + self.limit_ms.load(Ordering::Relaxed);
        self.deadline_ms.store(deadline.max(1), Ordering::Release);
    }

    fn disarm(&self) {
        self.deadline_ms.store(0, Ordering::Release);
    }

    fn check(&self) -> mlua::Result<VmState> {
        let deadline = self.deadline_ms.load(Ordering::Acquire);
        if deadline == 0 {
            return Ok(VmState::Continue);
        }
        if self.kill.load(Ordering::Acquire) {
            return Err(mlua::Error::runtime(
                "ERR Script killed by user with SCRIPT KILL...",
            ));
        }
        if self.now_ms() > deadline {
            return Err(mlua::Error::runtime(format!(
                "ERR Script killed: it ran longer than the {} ms limit",
                self.limit_ms.load(Ordering::Relaxed)
            )));
        }
        Ok(VmState::Continue)
    }
}

/// The chunk name scripts run as, so Lua's messages read `user_script:LINE:` as Redis's.
const CHUNK_NAME: &str = "@user_script";

/// Registry names of the scripts' environment (the read-only view of the globals)
/// and of the function that guards a library's `redis` table.
const SCRIPT_GLOBALS: &str = "meridian.script_globals";
const LIBRARY_GUARD: &str = "meridian.library_guard";

/// Lua instructions between two looks at the clock and the kill flag.
const HOOK_EVERY: u32 = 10_000;

/// Most memory the interpreter may hold: a script building a huge string or table gets
/// Lua's "not enough memory" error instead of taking the node's memory.
const LUA_MEMORY_LIMIT: usize = 128 * 1024 * 1024;

/// Most scripts EVAL adds to the cache (a client sending endless distinct scripts
/// would otherwise grow it forever); past it EVAL compiles without caching.
const MAX_CACHED_SCRIPTS: usize = 10_000;

/// Most nested tables converted between Lua and replies (a self-referencing table
/// would otherwise recurse forever).
const MAX_DEPTH: usize = 100;

/// Why a script did not return a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptError {
    /// EVALSHA of a script the cache does not hold.
    NoScript,
    /// FCALL of a function no library registered.
    NoFunction,
    /// The source does not compile: Lua's message.
    Compile(String),
    /// The script failed while running: the error reply's text.
    Run(String),
    /// The `#!` first line of an EVAL or SCRIPT LOAD source is not one Redis accepts.
    Shebang(String),
}

impl std::fmt::Display for ScriptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScriptError::NoScript => f.write_str("NOSCRIPT No matching script. Please use EVAL."),
            ScriptError::NoFunction => f.write_str("ERR Function not found"),
            ScriptError::Compile(message) => {
                write!(f, "ERR Error compiling script (new function): {message}")
            }
            ScriptError::Run(message) => f.write_str(message),
            ScriptError::Shebang(message) => write!(f, "ERR {message}"),
        }
    }
}

/// The script EVAL, EVALSHA or FCALL names.
#[derive(Debug, Clone, Copy)]
pub enum Script<'a> {
    Source(&'a [u8]),
    Sha(&'a [u8]),
    /// A function of a loaded library (FCALL), by name.
    Function(&'a [u8]),
}

/// The flags a script runs with, as Redis 7 defines them: an EVAL script declares them
/// on a `#!lua flags=...` first line, a library function when it registers. A script
/// without a shebang runs in Redis's compatibility mode (`declared` false): each of its
/// commands is checked as it runs, and it may touch keys of several slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScriptFlags {
    pub declared: bool,
    pub no_writes: bool,
    pub allow_oom: bool,
    pub allow_stale: bool,
    pub no_cluster: bool,
    pub allow_cross_slot_keys: bool,
}

impl ScriptFlags {
    /// The flags `names` declare; the first name that is not a flag when there is one.
    fn declared<'n>(names: impl IntoIterator<Item = &'n str>) -> Result<ScriptFlags, &'n str> {
        let mut flags = ScriptFlags {
            declared: true,
            ..ScriptFlags::default()
        };
        for name in names {
            let flag = match name {
                "no-writes" => &mut flags.no_writes,
                "allow-oom" => &mut flags.allow_oom,
                "allow-stale" => &mut flags.allow_stale,
                "no-cluster" => &mut flags.no_cluster,
                "allow-cross-slot-keys" => &mut flags.allow_cross_slot_keys,
                unknown => return Err(unknown),
            };
            *flag = true;
        }
        Ok(flags)
    }
}

/// The flags a source's `#!` first line declares and that line's length (the chunk
/// compiled starts at its line feed, so error lines keep their numbers), with Redis's
/// errors (`evalExtractShebangFlags`); no shebang: compatibility mode, length 0.
pub fn parse_shebang(source: &[u8]) -> Result<(ScriptFlags, usize), ScriptError> {
    if !source.starts_with(b"#!") {
        return Ok((ScriptFlags::default(), 0));
    }
    let refuse = |message: String| Err(ScriptError::Shebang(message));
    let Some(length) = source.iter().position(|&byte| byte == b'\n') else {
        return refuse("Invalid script shebang".into());
    };
    let line = String::from_utf8_lossy(&source[..length]);
    let mut parts = line.split_ascii_whitespace();
    match parts.next() {
        Some("#!lua") => {}
        Some(engine) => return refuse(format!("Unexpected engine in script shebang: {engine}")),
        None => return refuse("Invalid engine in script shebang".into()),
    }
    let mut names = Vec::new();
    for option in parts {
        let Some(list) = option.strip_prefix("flags=") else {
            return refuse(format!("Unknown lua shebang option: {option}"));
        };
        // (an empty list declares none; an empty name within one is unknown)
        if !list.is_empty() {
            names.extend(list.split(','));
        }
    }
    match ScriptFlags::declared(names) {
        Ok(flags) => Ok((flags, length)),
        Err(unknown) => refuse(format!("Unexpected flag in script shebang: {unknown}")),
    }
}

/// A function a library registered.
#[derive(Clone)]
struct Registered {
    name: String,
    callback: mlua::Function,
    description: Option<String>,
    flags: Vec<String>,
}

/// A library FUNCTION LOAD loaded: its code and the functions it registered.
#[derive(Clone)]
struct Library {
    code: Vec<u8>,
    functions: Vec<Registered>,
}

/// What FUNCTION RESTORE does with the libraries already loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestorePolicy {
    /// Refuse the payload if one of its libraries exists (the default).
    Append,
    /// Replace the libraries of the same names.
    Replace,
    /// Delete every library first.
    Flush,
}

/// A function as FUNCTION LIST describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionInfo {
    pub name: String,
    pub description: Option<String>,
    pub flags: Vec<String>,
}

/// A library as FUNCTION LIST describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LibraryInfo {
    pub name: String,
    pub code: Vec<u8>,
    pub functions: Vec<FunctionInfo>,
}

/// The library name of FUNCTION LOAD's code (`#!lua name=<name>` on its first line).
fn library_name(code: &[u8]) -> Result<String, String> {
    let Some(first) = code
        .split(|&byte| byte == b'\n')
        .next()
        .filter(|line| line.starts_with(b"#!"))
    else {
        return Err("ERR Missing library metadata".into());
    };
    let invalid = || "ERR Invalid library metadata".to_string();
    let first = std::str::from_utf8(&first[2..]).map_err(|_| invalid())?;
    let mut parts = first.split(' ').filter(|part| !part.is_empty());
    if !parts
        .next()
        .is_some_and(|engine| engine.eq_ignore_ascii_case("lua"))
    {
        return Err(invalid());
    }
    let mut name = None;
    for part in parts {
        match part.strip_prefix("name=") {
            Some(value) if name.is_none() => name = Some(value.to_string()),
            _ => return Err(invalid()),
        }
    }
    let name = name.ok_or_else(invalid)?;
    if !valid_name(&name) {
        return Err(format!("ERR {NAME_RULE}"));
    }
    Ok(name)
}

/// Redis's rule for library and function names (its message says "Library" for both).
const NAME_RULE: &str = "Library names can only contain letters, numbers, or underscores(_) and must be at least one character long";

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

/// One `redis.register_function` call's arguments: `(name, callback)` or a table with
/// `function_name`, `callback`, `flags` and `description`.
fn registration(args: mlua::MultiValue) -> mlua::Result<Registered> {
    let refuse = |text: &str| mlua::Error::runtime(text.to_string());
    let args: Vec<Value> = args.into_iter().collect();
    let (name, callback, description, flags) = match args.as_slice() {
        [Value::String(name), Value::Function(callback)] => {
            (name.to_string_lossy(), callback.clone(), None, Vec::new())
        }
        [Value::Table(table)] => {
            let (mut name, mut callback, mut description, mut flags) =
                (None, None, None, Vec::new());
            for pair in table.clone().pairs::<Value, Value>() {
                let (key, value) = pair?;
                let key = match &key {
                    Value::String(key) => key.to_string_lossy(),
                    _ => {
                        return Err(refuse(
                            "named argument key given to register_function is not a string",
                        ));
                    }
                };
                match (key.as_str(), value) {
                    ("function_name", Value::String(text)) => name = Some(text.to_string_lossy()),
                    ("callback", Value::Function(function)) => callback = Some(function),
                    ("description", Value::String(text)) => {
                        description = Some(text.to_string_lossy())
                    }
                    ("flags", Value::Table(list)) => {
                        for flag in list.sequence_values::<Value>() {
                            let Value::String(flag) = flag? else {
                                return Err(refuse("unknown flag given"));
                            };
                            let flag = flag.to_string_lossy();
                            if ScriptFlags::declared([flag.as_str()]).is_err() {
                                return Err(refuse("unknown flag given"));
                            }
                            flags.push(flag);
                        }
                    }
                    ("function_name" | "callback" | "description" | "flags", _) => {
                        return Err(refuse("wrong type given to register_function"));
                    }
                    _ => return Err(refuse("unknown argument given to register_function")),
                }
            }
            let name = name.ok_or_else(|| {
                refuse("redis.register_function must get a function name argument")
            })?;
            let callback = callback
                .ok_or_else(|| refuse("redis.register_function must get a callback argument"))?;
            (name, callback, description, flags)
        }
        _ => {
            return Err(refuse(
                "wrong number of arguments to redis.register_function",
            ));
        }
    };
    if !valid_name(&name) {
        return Err(refuse(NAME_RULE));
    }
    Ok(Registered {
        name,
        callback,
        description,
        flags,
    })
}

/// What SCRIPT KILL did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    Killed,
    NotBusy,
    Unkillable,
}

/// A `redis.call` that failed: its error reply, and where in the script it was called.
#[derive(Debug)]
struct CallFailed {
    message: String,
}

impl std::fmt::Display for CallFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallFailed {}

/// The SHA1 of a script's source, as 40 lowercase hex digits (its EVALSHA name).
pub fn sha1_hex(source: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, source);
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// What a script asks of the command layer.
#[derive(Clone, Copy, Debug)]
pub enum ScriptRequest<'a> {
    /// Run a command (`redis.call` / `pcall`); its reply in the shapes of `proto`.
    Call {
        args: &'a [&'a [u8]],
        proto: Protocol,
    },
    /// `redis.acl_check_cmd`: may the caller run this command: `Int(1)` / `Int(0)`,
    /// or an error for an unknown command.
    AclCheck { args: &'a [&'a [u8]] },
}

/// Serves a script's requests: a command's arguments in, its reply out.
pub type CallFn<'c> = dyn FnMut(ScriptRequest<'_>) -> Reply + 'c;

/// The interpreter and the scripts compiled in it, by SHA1.
struct Interpreter {
    lua: Lua,
    compiled: HashMap<String, mlua::Function>,
    /// FUNCTION LOAD's libraries by name.
    libraries: std::collections::BTreeMap<String, Library>,
}

impl Interpreter {
    fn find_function(&self, name: &str) -> Option<&Registered> {
        self.libraries
            .values()
            .flat_map(|library| &library.functions)
            .find(|function| function.name == name)
    }
}

/// The node's scripts: the interpreter, the cache of sources by SHA1, and the kill switch.
pub struct Scripts {
    interpreter: Mutex<Interpreter>,
    sources: Mutex<HashMap<String, Vec<u8>>>,
    /// A source with a `#!` line was cached (EVALSHA then looks its flags up).
    shebangs_cached: AtomicBool,
    /// Stops a script on SCRIPT KILL or at its time limit (the interpreter's hook).
    watchdog: Arc<Watchdog>,
    /// A script is running.
    running: AtomicBool,
    /// Told when a script ends: connections hold their commands back meanwhile.
    finished: tokio::sync::Notify,
    /// The running script has written (SCRIPT KILL then refuses: the script is not
    /// rolled back).
    wrote: AtomicBool,
}

impl std::fmt::Debug for Scripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scripts")
            .field("time_limit_ms", &self.time_limit_ms())
            .finish_non_exhaustive()
    }
}

impl Scripts {
    pub fn new(time_limit: Duration) -> Scripts {
        let watchdog = Arc::new(Watchdog {
            base: Instant::now(),
            kill: AtomicBool::new(false),
            deadline_ms: std::sync::atomic::AtomicU64::new(0),
            limit_ms: std::sync::atomic::AtomicU64::new(time_limit.as_millis() as u64),
        });
        let lua = new_interpreter(watchdog.clone()).expect("the Lua interpreter starts");
        Scripts {
            interpreter: Mutex::new(Interpreter {
                lua,
                compiled: HashMap::new(),
                libraries: std::collections::BTreeMap::new(),
            }),
            sources: Mutex::new(HashMap::new()),
            shebangs_cached: AtomicBool::new(false),
            watchdog,
            running: AtomicBool::new(false),
            wrote: AtomicBool::new(false),
            finished: tokio::sync::Notify::new(),
        }
    }

    /// Compiles `source` and caches it under its SHA1 (SCRIPT LOAD).
    pub fn load(&self, source: &[u8]) -> Result<String, ScriptError> {
        let sha = sha1_hex(source);
        let mut interpreter = self.interpreter.lock();
        let function = compile(&interpreter.lua, source)?;
        interpreter.compiled.insert(sha.clone(), function);
        self.cache_source(self.sources.lock(), &sha, source.to_vec());
        Ok(sha)
    }

    pub fn exists(&self, sha: &[u8]) -> bool {
        let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
        self.sources.lock().contains_key(&sha)
    }

    /// FUNCTION LOAD: runs the library's code, which registers its functions; `commit`
    /// runs under the interpreter's lock once the library is in (the replication log
    /// gets the command in the order the libraries changed).
    pub fn load_library(
        &self,
        code: &[u8],
        replace: bool,
        commit: impl FnOnce(),
    ) -> Result<String, String> {
        let name = library_name(code)?;
        let mut interpreter = self.interpreter.lock();
        if !replace && interpreter.libraries.contains_key(&name) {
            return Err(format!("ERR Library '{name}' already exists"));
        }
        self.load_locked(&mut interpreter, name.clone(), code)?;
        commit();
        Ok(name)
    }

    /// FUNCTION DUMP: every library's code in Redis's payload format.
    pub fn dump_libraries(&self) -> Vec<u8> {
        let interpreter = self.interpreter.lock();
        dump::dump(
            interpreter
                .libraries
                .values()
                .map(|library| library.code.as_slice()),
        )
    }

    /// FUNCTION RESTORE: the payload's libraries, all or none (`policy`: refuse a
    /// library that exists, replace it, or drop every library first); `commit` runs
    /// under the lock once they are in.
    pub fn restore_libraries(
        &self,
        payload: &[u8],
        policy: RestorePolicy,
        commit: impl FnOnce(),
    ) -> Result<(), String> {
        let codes = dump::restore(payload)
            .map_err(|_| "ERR DUMP payload version or checksum are wrong".to_string())?;
        let mut interpreter = self.interpreter.lock();
        let before = interpreter.libraries.clone();
        if policy == RestorePolicy::Flush {
            interpreter.libraries.clear();
        }
        for code in &codes {
            let loaded = library_name(code).and_then(|name| {
                if policy == RestorePolicy::Append && interpreter.libraries.contains_key(&name) {
                    return Err(format!("ERR Library {name} already exists"));
                }
                self.load_locked(&mut interpreter, name, code)
            });
            if let Err(error) = loaded {
                interpreter.libraries = before;
                return Err(error);
            }
        }
        commit();
        Ok(())
    }

    /// Runs a library's code and puts it in under `name` (replacing one of that name).
    fn load_locked(
        &self,
        interpreter: &mut Interpreter,
        name: String,
        code: &[u8],
    ) -> Result<(), String> {
        // the metadata line stays as an empty line, so Lua's line numbers are the code's
        let body_start = code
            .iter()
            .position(|&byte| byte == b'\n')
            .unwrap_or(code.len());
        let body = &code[body_start..];
        let lua = &interpreter.lua;
        let chunk = lua
            .load(body)
            .set_name("@user_function")
            .into_function()
            .map_err(|error| match error {
                mlua::Error::SyntaxError { message, .. } => {
                    format!("ERR Error compiling function: {message}")
                }
                other => format!("ERR Error compiling function: {other}"),
            })?;
        let registered = std::cell::RefCell::new(Vec::<Registered>::new());
        let ran = lua.scope(|scope| {
            let register = scope.create_function(|_, args: mlua::MultiValue| {
                let function = registration(args)?;
                let mut registered = registered.borrow_mut();
                if registered.iter().any(|other| other.name == function.name) {
                    return Err(mlua::Error::runtime(
                        "Function already exists in the library",
                    ));
                }
                registered.push(function);
                Ok(())
            })?;
            // during the load, `redis` offers only register_function (and log)
            let load_redis = lua.create_table()?;
            load_redis.raw_set("register_function", register)?;
            // (the global `redis` is a read-only view: read through it)
            let global_redis: Table = lua.globals().raw_get("redis")?;
            for name in [
                "log",
                "LOG_DEBUG",
                "LOG_VERBOSE",
                "LOG_NOTICE",
                "LOG_WARNING",
            ] {
                load_redis.raw_set(name, global_redis.get::<Value>(name)?)?;
            }
            let guard: mlua::Function = lua.named_registry_value(LIBRARY_GUARD)?;
            let load_redis: Table = guard.call(load_redis)?;
            let env = lua.create_table()?;
            env.raw_set("redis", load_redis)?;
            let env: Table = lua.load(ENV_SOURCE).set_name("=env").call(env)?;
            chunk.set_environment(env.clone())?;
            self.watchdog.arm();
            let ran = chunk.call::<()>(());
            self.watchdog.disarm();
            ran?;
            // at run time, `redis` is the global one (with call and pcall)
            env.raw_set("redis", Value::Nil)?;
            Ok(())
        });
        if let Err(error) = ran {
            let (message, _) = lua_error_message(&error);
            let message = message.strip_prefix("ERR ").unwrap_or(&message).to_string();
            return Err(format!("ERR Error registering functions: ERR {message}"));
        }
        let functions = registered.into_inner();
        if functions.is_empty() {
            return Err("ERR No functions registered".into());
        }
        for function in &functions {
            let taken = interpreter
                .libraries
                .iter()
                .filter(|(library, _)| **library != name)
                .any(|(_, library)| {
                    library
                        .functions
                        .iter()
                        .any(|other| other.name == function.name)
                });
            if taken {
                return Err(format!("ERR Function {} already exists", function.name));
            }
        }
        interpreter.libraries.insert(
            name,
            Library {
                code: code.to_vec(),
                functions,
            },
        );
        Ok(())
    }

    /// FUNCTION DELETE; `commit` runs under the lock once it is gone.
    pub fn delete_library(&self, name: &[u8], commit: impl FnOnce()) -> bool {
        let name = String::from_utf8_lossy(name);
        let mut interpreter = self.interpreter.lock();
        let deleted = interpreter.libraries.remove(name.as_ref()).is_some();
        if deleted {
            commit();
        }
        deleted
    }

    /// FUNCTION FLUSH; `commit` runs under the lock.
    pub fn flush_libraries(&self, commit: impl FnOnce()) {
        let mut interpreter = self.interpreter.lock();
        interpreter.libraries.clear();
        commit();
        interpreter.lua.gc_collect().ok();
    }

    /// The libraries, by name (FUNCTION LIST).
    pub fn libraries(&self) -> Vec<LibraryInfo> {
        let interpreter = self.interpreter.lock();
        interpreter
            .libraries
            .iter()
            .map(|(name, library)| LibraryInfo {
                name: name.clone(),
                code: library.code.clone(),
                functions: library
                    .functions
                    .iter()
                    .map(|function| FunctionInfo {
                        name: function.name.clone(),
                        description: function.description.clone(),
                        flags: function.flags.clone(),
                    })
                    .collect(),
            })
            .collect()
    }

    /// The flags `script` runs with: a source's shebang, the shebang of the cached
    /// script a SHA1 names (compatibility mode when none is cached: the run answers
    /// NOSCRIPT), a library function's declared flags (none registered: the run
    /// answers that it is not found).
    pub fn flags(&self, script: Script<'_>) -> Result<ScriptFlags, ScriptError> {
        match script {
            Script::Source(source) => parse_shebang(source).map(|(flags, _)| flags),
            Script::Sha(sha) => {
                // (most nodes never cache a script with a shebang: no lookup for them)
                if !self.shebangs_cached.load(Ordering::Acquire) {
                    return Ok(ScriptFlags::default());
                }
                let sha = String::from_utf8_lossy(sha).to_ascii_lowercase();
                let sources = self.sources.lock();
                Ok(sources
                    .get(&sha)
                    .and_then(|source| parse_shebang(source).ok())
                    .map_or_else(ScriptFlags::default, |(flags, _)| flags))
            }
            Script::Function(name) => {
                let name = String::from_utf8_lossy(name);
                let interpreter = self.interpreter.lock();
                let Some(function) = interpreter.find_function(&name) else {
                    return Ok(ScriptFlags::default());
                };
                // (registration accepted only known flags)
                Ok(
                    ScriptFlags::declared(function.flags.iter().map(String::as_str))
                        .unwrap_or_default(),
                )
            }
        }
    }

    /// Runs `send` with every library's code under the interpreter's lock (a full sync
    /// sends them after its snapshot, in order with later FUNCTION commands).
    pub fn with_library_codes(&self, send: impl FnOnce(Vec<&[u8]>)) {
        let interpreter = self.interpreter.lock();
        send(
            interpreter
                .libraries
                .values()
                .map(|library| library.code.as_slice())
                .collect(),
        );
    }

    /// SCRIPT FLUSH: forgets every cached script.
    pub fn flush(&self) {
        let mut interpreter = self.interpreter.lock();
        interpreter.compiled.clear();
        self.sources.lock().clear();
        interpreter.lua.gc_collect().ok();
    }

    /// SCRIPT KILL: stops the running script unless it has written.
    pub fn kill(&self) -> Kill {
        if !self.running.load(Ordering::Acquire) {
            return Kill::NotBusy;
        }
        if self.wrote.load(Ordering::Acquire) {
            return Kill::Unkillable;
        }
        self.watchdog.kill.store(true, Ordering::Release);
        Kill::Killed
    }

    /// The time limit of a script, in milliseconds (CONFIG GET busy-reply-threshold).
    pub fn time_limit_ms(&self) -> u64 {
        self.watchdog.limit_ms.load(Ordering::Relaxed)
    }

    /// Sets the time limit of the scripts that start from now on (at least 1 ms).
    pub fn set_time_limit_ms(&self, limit_ms: u64) {
        self.watchdog
            .limit_ms
            .store(limit_ms.max(1), Ordering::Relaxed);
    }

    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Waits until no script runs (at once when none does).
    pub async fn wait_idle(&self) {
        loop {
            // registered before the flag is read, so an end in between is not missed
            let finished = self.finished.notified();
            tokio::pin!(finished);
            finished.as_mut().enable();
            if !self.is_running() {
                return;
            }
            finished.await;
        }
    }

    /// The running script changed the dataset.
    pub fn note_write(&self) {
        self.wrote.store(true, Ordering::Release);
    }

    /// Keeps `source` under `sha` in the script cache, noting a shebang (see
    /// [`Scripts::flags`]).
    fn cache_source(
        &self,
        mut sources: parking_lot::MutexGuard<'_, HashMap<String, Vec<u8>>>,
        sha: &str,
        source: Vec<u8>,
    ) {
        if source.starts_with(b"#!") {
            self.shebangs_cached.store(true, Ordering::Release);
        }
        sources.insert(sha.to_string(), source);
    }

    /// The compiled script named `sha`, compiled from `source` (EVAL, cached when the
    /// cache has room) or from the cache (EVALSHA).
    fn function(
        &self,
        interpreter: &mut Interpreter,
        sha: &str,
        source: Option<&[u8]>,
    ) -> Result<mlua::Function, ScriptError> {
        if let Some(function) = interpreter.compiled.get(sha) {
            return Ok(function.clone());
        }
        let cached = self.sources.lock().get(sha).cloned();
        let Some(text) = source.map(<[u8]>::to_vec).or(cached) else {
            return Err(ScriptError::NoScript);
        };
        let function = compile(&interpreter.lua, &text)?;
        let sources = self.sources.lock();
        if sources.contains_key(sha) || sources.len() < MAX_CACHED_SCRIPTS {
            self.cache_source(sources, sha, text);
            interpreter
                .compiled
                .insert(sha.to_string(), function.clone());
        }
        Ok(function)
    }

    /// Runs a script with `keys` and `argv`: `source` (EVAL; cached under its SHA1 as
    /// Redis does) or the cached script named `sha` (EVALSHA); `call` runs its commands.
    pub fn run(
        &self,
        script: Script<'_>,
        keys: &[&[u8]],
        argv: &[&[u8]],
        call: &mut CallFn<'_>,
    ) -> Result<Reply, ScriptError> {
        let mut interpreter = self.interpreter.lock();
        // (a SHA1 the client sent is lowercased here: no allocation per EVALSHA)
        let mut lowered = [0u8; 40];
        // the chunk to call, whether it takes (KEYS, ARGV) as arguments (a library
        // function) or as globals, and the name errors give it
        let (function, as_arguments, name, chunk) = match script {
            Script::Source(source) => {
                let sha = sha1_hex(source);
                let function = self.function(&mut interpreter, &sha, Some(source))?;
                (function, false, Cow::Owned(sha), "user_script")
            }
            Script::Sha(sha) => {
                let sha = match std::str::from_utf8(sha) {
                    Ok(text) if text.len() == lowered.len() => {
                        lowered.copy_from_slice(sha);
                        lowered.make_ascii_lowercase();
                        // (ASCII lowercasing keeps the text UTF-8)
                        Cow::Borrowed(std::str::from_utf8(&lowered).unwrap_or_default())
                    }
                    _ => Cow::Owned(String::from_utf8_lossy(sha).to_ascii_lowercase()),
                };
                let function = self.function(&mut interpreter, &sha, None)?;
                (function, false, sha, "user_script")
            }
            Script::Function(name) => {
                let name = String::from_utf8_lossy(name).into_owned();
                let function = interpreter
                    .find_function(&name)
                    .ok_or(ScriptError::NoFunction)?
                    .callback
                    .clone();
                (function, true, Cow::Owned(name), "user_function")
            }
        };
        let lua = &interpreter.lua;
        let suffix =
            |line: Option<usize>| format!(" script: {name}, on @{chunk}:{}.", line.unwrap_or(0));
        self.wrote.store(false, Ordering::Release);
        self.running.store(true, Ordering::Release);
        self.watchdog.arm();
        let result = {
            // `redis.call` finds `call` through the interpreter's app data for as long as
            // `_running` lives (it clears the slot on drop, panics included)
            let _running = RunningCall::set(lua, call);
            // SAFETY: the closure only calls Lua's C API on the stack `exec_raw` protects,
            // and holds nothing to drop: a Lua error (out of memory) longjmps past it.
            let tables: mlua::Result<mlua::MultiValue> = unsafe {
                lua.exec_raw((), |state| push_arguments(state, keys, argv, as_arguments))
            };
            tables
                .and_then(|tables| function.call::<Value>(tables))
                .and_then(|value| lua_to_reply(&value, RunningCall::protocol(lua), 0))
        };
        self.watchdog.disarm();
        self.running.store(false, Ordering::Release);
        self.finished.notify_waiters();
        result.map_err(|error| ScriptError::Run(run_error_text(&error, &suffix)))
    }
}

/// The running script's command runner, in the interpreter's app data: the permanent
/// `redis.call` and `redis.pcall` callbacks reach it there ([`Scripts::run`] sets it
/// for the run's duration; outside a run it is empty).
struct RunningCall {
    call: Option<std::ptr::NonNull<CallFn<'static>>>,
    /// The protocol the script's commands answer in (RESP2 unless `redis.setresp(3)`).
    proto: Protocol,
}

impl Default for RunningCall {
    fn default() -> Self {
        RunningCall {
            call: None,
            proto: Protocol::Resp2,
        }
    }
}

// SAFETY: the pointer is only set by `Scripts::run`, on its own thread, while it holds
// the interpreter's lock, and cleared before that run returns; the callbacks that read
// it run inside that run, on that thread.
unsafe impl Send for RunningCall {}

impl RunningCall {
    /// Puts `call` where the callbacks find it until the returned guard drops.
    fn set<'l, 'c>(lua: &'l Lua, call: &'c mut CallFn<'_>) -> RunningCallGuard<'l, 'c> {
        // SAFETY: only the lifetime is erased; the guard clears the pointer before the
        // borrow of `call` ends, so no callback can reach it afterwards
        let call: std::ptr::NonNull<CallFn<'static>> =
            unsafe { std::mem::transmute(std::ptr::NonNull::from(call)) };
        if let Ok(Some(mut slot)) = lua.try_app_data_mut::<RunningCall>() {
            *slot = RunningCall {
                call: Some(call),
                proto: Protocol::Resp2,
            };
        }
        RunningCallGuard {
            lua,
            _call: std::marker::PhantomData,
        }
    }

    /// The protocol the running script asked for.
    fn protocol(lua: &Lua) -> Protocol {
        lua.try_app_data_ref::<RunningCall>()
            .ok()
            .flatten()
            .map_or(Protocol::Resp2, |slot| slot.proto)
    }
}

/// Clears [`RunningCall`] when the run ends; holds the runner's borrow until then.
struct RunningCallGuard<'l, 'c> {
    lua: &'l Lua,
    _call: std::marker::PhantomData<&'c mut ()>,
}

impl Drop for RunningCallGuard<'_, '_> {
    fn drop(&mut self) {
        if let Ok(Some(mut slot)) = self.lua.try_app_data_mut::<RunningCall>() {
            *slot = RunningCall::default();
        }
    }
}

/// Hands the request `make` builds (for the script's protocol) to the running script's
/// [`CallFn`]; its answer and that protocol.
fn ask<'a>(
    lua: &Lua,
    make: impl FnOnce(Protocol) -> ScriptRequest<'a>,
) -> mlua::Result<(Reply, Protocol)> {
    let slot = running(lua).ok_or_else(outside_a_run)?;
    let mut call = slot.call.ok_or_else(outside_a_run)?;
    let proto = slot.proto;
    // SAFETY: set by `Scripts::run` for this run (see `RunningCall`); the slot stays
    // borrowed meanwhile, so no other callback can reach the same closure
    let call = unsafe { call.as_mut() };
    Ok((call(make(proto)), proto))
}

/// `redis.call` (`raise`: a command's error reply raises it) and `redis.pcall` (returns it
/// as `{err = ...}`): the command runs through the running script's [`CallFn`].
fn redis_call(lua: &Lua, args: &CommandArgs, raise: bool) -> mlua::Result<Value> {
    let args = args.slices();
    match ask(lua, |proto| ScriptRequest::Call { args: &args, proto })? {
        (Reply::Error(message), _) if raise => Err(mlua::Error::external(CallFailed { message })),
        (reply, proto) => reply_to_lua(lua, &reply, proto, 0),
    }
}

/// `redis.acl_check_cmd(command, ...)`: whether the caller's ACL user may run it.
fn acl_check_cmd(lua: &Lua, args: &CommandArgs) -> mlua::Result<bool> {
    let args = args.slices();
    match ask(lua, |_| ScriptRequest::AclCheck { args: &args })?.0 {
        Reply::Int(allowed) => Ok(allowed != 0),
        Reply::Error(message) => Err(mlua::Error::external(CallFailed { message })),
        other => Err(mlua::Error::runtime(format!(
            "unexpected ACL check answer {other:?}"
        ))),
    }
}

/// `redis.setresp(2 | 3)`: the protocol the script's later commands answer in.
fn set_resp(lua: &Lua, args: mlua::MultiValue) -> mlua::Result<()> {
    let raise = |message: &str| {
        Err(mlua::Error::external(CallFailed {
            message: message.to_string(),
        }))
    };
    if args.len() != 1 {
        return raise("ERR redis.setresp() requires one argument.");
    }
    let proto = match lua.coerce_number(args[0].clone())? {
        Some(version) if version as i32 == 2 => Protocol::Resp2,
        Some(version) if version as i32 == 3 => Protocol::Resp3,
        _ => return raise("ERR RESP version must be 2 or 3."),
    };
    let mut slot = running(lua).ok_or_else(|| {
        mlua::Error::runtime("redis.setresp can only be called inside a script invocation")
    })?;
    slot.proto = proto;
    Ok(())
}

/// The running script's slot; None outside a run.
fn running(lua: &Lua) -> Option<mlua::AppDataRefMut<'_, RunningCall>> {
    lua.try_app_data_mut::<RunningCall>()
        .ok()
        .flatten()
        .filter(|slot| slot.call.is_some())
}

fn outside_a_run() -> mlua::Error {
    mlua::Error::runtime("redis.call/pcall can only be called inside a script invocation")
}

/// Pushes the KEYS and ARGV tables: as globals (`as_globals`: EVAL's scripts read them
/// so) or left on the stack (a library function's two arguments).
///
/// # Safety
///
/// `state` is the stack of a protected call (`Lua::exec_raw`) with room for four values.
unsafe fn push_arguments(
    state: *mut mlua::lua_State,
    keys: &[&[u8]],
    argv: &[&[u8]],
    as_arguments: bool,
) {
    use mlua::ffi;
    for (name, items) in [(c"KEYS", keys), (c"ARGV", argv)] {
        // SAFETY: per the function's contract; each call pushes what the next expects
        unsafe {
            if !as_arguments {
                ffi::lua_pushstring(state, name.as_ptr());
            }
            ffi::lua_createtable(state, items.len() as std::ffi::c_int, 0);
            for (index, item) in items.iter().enumerate() {
                ffi::lua_pushlstring(state, item.as_ptr().cast(), item.len());
                ffi::lua_rawseti(state, -2, (index + 1) as _);
            }
            if !as_arguments {
                ffi::lua_rawset(state, ffi::LUA_GLOBALSINDEX);
            }
        }
    }
}

/// An error raised by a running script as its EVAL error reply: a failed
/// `redis.call`'s own reply, or `ERR ` and Lua's message, then Redis's suffix naming
/// the script and the line.
fn run_error_text(error: &mlua::Error, suffix: &dyn Fn(Option<usize>) -> String) -> String {
    let (message, line) = lua_error_message(error);
    if message.starts_with("ERR Script killed") {
        return message;
    }
    format!("{message}{}", suffix(line))
}

/// The message of a Lua error and the script line it names, if any.
fn lua_error_message(error: &mlua::Error) -> (String, Option<usize>) {
    match error {
        mlua::Error::CallbackError { cause, traceback } => {
            let line = traceback_line(traceback);
            let (message, inner_line) = lua_error_message(cause);
            (message, inner_line.or(line))
        }
        mlua::Error::ExternalError(cause) => match cause.downcast_ref::<CallFailed>() {
            Some(failed) => (failed.message.clone(), None),
            None => (format!("ERR {cause}"), None),
        },
        mlua::Error::RuntimeError(message) => {
            if message.starts_with("ERR Script killed") {
                return (message.clone(), None);
            }
            let first = message.lines().next().unwrap_or_default();
            // a message without a place (raised at level 0): where the script was
            let line = script_line(first).or_else(|| traceback_line(message));
            (format!("ERR {first}"), line)
        }
        other => (format!("ERR {other}"), None),
    }
}

/// `user_script:LINE:` (or `user_function:LINE:`) at the start of a Lua message.
fn script_line(message: &str) -> Option<usize> {
    let rest = message
        .strip_prefix("user_script:")
        .or_else(|| message.strip_prefix("user_function:"))?;
    rest.split(':').next()?.parse().ok()
}

/// The innermost `user_script:LINE:` of a traceback (where the script called out).
fn traceback_line(traceback: &str) -> Option<usize> {
    traceback
        .lines()
        .find_map(|line| script_line(line.trim_start()))
}

fn compile(lua: &Lua, source: &[u8]) -> Result<mlua::Function, ScriptError> {
    let (_, shebang) = parse_shebang(source)?;
    let globals: Table = lua
        .named_registry_value(SCRIPT_GLOBALS)
        .map_err(|error| ScriptError::Compile(error.to_string()))?;
    lua.load(&source[shebang..])
        .set_name(CHUNK_NAME)
        .set_environment(globals)
        .into_function()
        .map_err(|error| match error {
            mlua::Error::SyntaxError { message, .. } => ScriptError::Compile(message),
            other => ScriptError::Compile(other.to_string()),
        })
}

/// A fresh interpreter: the libraries Redis gives scripts (base, table, string, math;
/// no io, os or module loading), the `redis` and `cjson` tables, read-only globals.
fn new_interpreter(watchdog: Arc<Watchdog>) -> mlua::Result<Lua> {
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH,
        LuaOptions::default(),
    )?;
    lua.set_memory_limit(LUA_MEMORY_LIMIT)?;
    lua.set_hook(
        HookTriggers::new().every_nth_instruction(HOOK_EVERY),
        move |_, _| watchdog.check(),
    )?;
    let globals = lua.globals();
    // (`load` and `loadstring` stay: the guard below makes what they compile run with
    // the scripts' read-only view of the globals)
    for unsafe_global in ["loadfile", "dofile", "require", "module"] {
        globals.raw_set(unsafe_global, Value::Nil)?;
    }
    let redis = lua.create_table()?;
    // `{err = message}` and `{ok = message}`: the tables replies convert from
    for (name, field) in [("error_reply", "err"), ("status_reply", "ok")] {
        redis.raw_set(
            name,
            lua.create_function(move |lua, args: mlua::MultiValue| {
                let table = lua.create_table()?;
                match (args.len(), args.front()) {
                    (1, Some(Value::String(text))) if field == "err" => {
                        table.raw_set(field, error_text(&text.as_bytes()))?;
                    }
                    (1, Some(Value::String(text))) => table.raw_set(field, text)?,
                    _ => table.raw_set("err", "ERR wrong number or type of arguments")?,
                }
                Ok(table)
            })?,
        )?;
    }
    redis.raw_set(
        "sha1hex",
        lua.create_function(|_, text: mlua::LuaString| Ok(sha1_hex(&text.as_bytes())))?,
    )?;
    redis.raw_set("log", lua.create_function(|_, _: mlua::MultiValue| Ok(()))?)?;
    for (name, level) in [
        ("LOG_DEBUG", 0),
        ("LOG_VERBOSE", 1),
        ("LOG_NOTICE", 2),
        ("LOG_WARNING", 3),
    ] {
        redis.raw_set(name, level)?;
    }
    // effects are always what replicates: these are accepted for old scripts
    redis.raw_set("replicate_commands", lua.create_function(|_, ()| Ok(true))?)?;
    redis.raw_set(
        "set_repl",
        lua.create_function(|_, _: mlua::MultiValue| Ok(()))?,
    )?;
    for (name, value) in [
        ("REPL_NONE", 0),
        ("REPL_AOF", 1),
        ("REPL_SLAVE", 2),
        ("REPL_REPLICA", 2),
        ("REPL_ALL", 3),
    ] {
        redis.raw_set(name, value)?;
    }
    // created once: they reach the running script's commands through `RunningCall`
    lua.set_app_data(RunningCall::default());
    redis.raw_set("setresp", lua.create_function(set_resp)?)?;
    redis.raw_set(
        "acl_check_cmd",
        lua.create_function(|lua, args: CommandArgs| acl_check_cmd(lua, &args))?,
    )?;
    // the debugger's calls do nothing outside a debugging session (there is none here)
    redis.raw_set("breakpoint", lua.create_function(|_, ()| Ok(false))?)?;
    redis.raw_set(
        "debug",
        lua.create_function(|_, _: mlua::MultiValue| Ok(()))?,
    )?;
    redis.raw_set("REDIS_VERSION", crate::protocol::REDIS_COMPAT_VERSION)?;
    redis.raw_set(
        "REDIS_VERSION_NUM",
        version_number(crate::protocol::REDIS_COMPAT_VERSION),
    )?;
    for (name, raise) in [("call", true), ("pcall", false)] {
        redis.raw_set(
            name,
            lua.create_function(move |lua, args: CommandArgs| redis_call(lua, &args, raise))?,
        )?;
    }
    globals.raw_set("redis", redis)?;
    globals.raw_set("cjson", cjson::library(&lua, LUA_MEMORY_LIMIT)?)?;
    globals.raw_set("bit", bit_library(&lua)?)?;
    globals.raw_set("cmsgpack", cmsgpack::library(&lua, LUA_MEMORY_LIMIT)?)?;
    globals.raw_set("struct", structs::library(&lua)?)?;
    // errors raised by the node's functions reach a script's pcall / xpcall as the
    // strings Redis raises (a failed redis.call: its error reply), not as mlua's objects
    globals.raw_set(
        "__meridian_error_value",
        lua.create_function(|lua, value: Value| error_value(lua, value))?,
    )?;
    // Redis 7's protection: reading an unknown global or writing any global or library
    // table is an error (raised in Lua, so the message names the script's line as
    // Redis's does); the chunk returns the scripts' environment and the guard that
    // FUNCTION LOAD's `redis` table gets
    let (environment, guard): (Table, mlua::Function) = lua.load(
        r#"
        -- (the node's own functions hold what they use: a script cannot swap it)
        local error, tostring, setmetatable, rawget, rawset, type = error, tostring, setmetatable, rawget, rawset, type
        local raw_pcall, raw_xpcall, error_value = pcall, xpcall, __meridian_error_value
        rawset(_G, "__meridian_error_value", nil)
        local function missing(_, name)
            error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
        end
        local function readonly_error()
            error("Attempt to modify a readonly table", 2)
        end
        local function guard(t)
            return setmetatable(t, { __index = missing, __newindex = readonly_error })
        end
        -- Redis 7 makes every global and library table read-only, so one script cannot
        -- change what the next one (another user's, say) runs: here scripts see each
        -- table through an empty proxy that refuses writes and hides its metatable,
        -- and rawset refuses the proxies
        local protected = setmetatable({}, { __mode = "k" })
        local function readonly(t)
            local proxy = setmetatable({}, {
                __index = t,
                __newindex = readonly_error,
                __metatable = false,
            })
            protected[proxy] = t
            return proxy
        end
        -- reading through a proxy sees the table (never handing the table itself out)
        local raw_next, raw_pairs, raw_ipairs = next, pairs, ipairs
        rawset(_G, "next", function(t, key)
            return raw_next(protected[t] or t, key)
        end)
        local function walk(raw, step, first)
            return function(t)
                local real = protected[t]
                if not real then
                    return raw(t)
                end
                return function(_, at)
                    return step(real, at)
                end, t, first
            end
        end
        rawset(_G, "pairs", walk(raw_pairs, raw_next, nil))
        rawset(_G, "ipairs", walk(raw_ipairs, function(real, index)
            index = index + 1
            local value = rawget(real, index)
            if value ~= nil then
                return index, value
            end
        end, 0))
        rawset(_G, "rawget", function(t, key)
            return rawget(protected[t] or t, key)
        end)
        rawset(_G, "rawset", function(t, key, value)
            if protected[t] then
                error("Attempt to modify a readonly table", 0)
            end
            return rawset(t, key, value)
        end)
        -- Redis 7's pcall: an error table's `err` becomes the error (so a failed
        -- redis.call is its error reply's text); xpcall's handler gets the table
        local function caught(ok, ...)
            if ok then
                return ok, ...
            end
            local e = error_value((...))
            if type(e) == "table" then
                local text = e.err
                if type(text) == "string" or type(text) == "number" then
                    e = text
                end
            end
            return ok, e
        end
        rawset(_G, "pcall", function(f, ...)
            return caught(raw_pcall(f, ...))
        end)
        rawset(_G, "xpcall", function(f, handler)
            return raw_xpcall(f, function(e)
                return handler(error_value(e))
            end)
        end)
        -- what Redis 7.0 does not give scripts either
        local setfenv = setfenv
        for _, name in ipairs({ "print", "getfenv", "setfenv", "newproxy" }) do
            rawset(_G, name, nil)
        end
        for _, name in ipairs({ "string", "table", "math", "coroutine", "redis", "cjson", "bit", "cmsgpack", "struct" }) do
            rawset(_G, name, readonly(rawget(_G, name)))
        end
        -- strings' methods: their metatable's __index is the real string table
        local string_meta = getmetatable("")
        rawset(string_meta, "__metatable", readonly({ __index = rawget(_G, "string") }))
        -- scripts run with the proxy of the globals as their environment
        local real = _G
        local globals = readonly(real)
        rawset(real, "_G", globals)
        -- code a script compiles runs with the same view (not the real globals, which
        -- a new chunk would otherwise get)
        local raw_load, raw_loadstring = load, loadstring
        local function viewed(f, ...)
            if f then
                setfenv(f, globals)
            end
            return f, ...
        end
        rawset(real, "load", function(...)
            return viewed(raw_load(...))
        end)
        rawset(real, "loadstring", function(...)
            return viewed(raw_loadstring(...))
        end)
        setmetatable(real, { __index = missing, __newindex = readonly_error })
        return globals, guard
        "#,
    )
    .set_name("=guard")
    .call(())?;
    lua.set_named_registry_value(SCRIPT_GLOBALS, environment)?;
    lua.set_named_registry_value(LIBRARY_GUARD, guard)?;
    drop(globals);
    Ok(lua)
}

/// A library function's error as `luaL_error` raises it: prefixed with where its caller
/// is (`user_script:3: `) when the caller is Lua code, bare when it is a C function
/// such as `pcall`.
fn located(lua: &Lua, error: mlua::Error) -> mlua::Error {
    let mlua::Error::RuntimeError(mut message) = error else {
        return error;
    };
    // `luaL_argerror` names the function as its caller called it ('?' from pcall)
    if let Some(rest) = message.strip_prefix("bad argument #")
        && let Some((number, rest)) = rest.split_once(" to '")
        && let Some((_, rest)) = rest.split_once("' (")
    {
        let called = lua
            .inspect_stack(0, |debug| debug.names().name.map(|name| name.into_owned()))
            .flatten()
            .unwrap_or_else(|| "?".to_string());
        message = format!("bad argument #{number} to '{called}' ({rest}");
    }
    let place = lua
        .inspect_stack(1, |debug| {
            let line = debug.current_line()?;
            let source = debug.source().short_src?.into_owned();
            Some(format!("{source}:{line}: "))
        })
        .flatten()
        .unwrap_or_default();
    mlua::Error::RuntimeError(format!("{place}{message}"))
}

/// A library function (`args` in, values out) whose errors are [`located`].
fn library_function<R: mlua::IntoLuaMulti>(
    lua: &Lua,
    function: impl Fn(&Lua, mlua::MultiValue) -> mlua::Result<R> + Send + 'static,
) -> mlua::Result<mlua::Function> {
    lua.create_function(move |lua, args| function(lua, args).map_err(|error| located(lua, error)))
}

/// What a script's pcall / xpcall sees of an error the node raised, as Redis 7.0
/// raises it: a failed `redis.call` as `{err = reply}`, any other as its message;
/// other values unchanged.
fn error_value(lua: &Lua, value: Value) -> mlua::Result<Value> {
    let Value::Error(error) = value else {
        return Ok(value);
    };
    // the error a callback raised, without the wrappers mlua adds on the way out
    let mut cause = &*error;
    while let mlua::Error::CallbackError { cause: inner, .. } = cause {
        cause = inner;
    }
    match cause {
        mlua::Error::ExternalError(external) => match external.downcast_ref::<CallFailed>() {
            Some(failed) => {
                let table = lua.create_table()?;
                table.raw_set("err", failed.message.as_str())?;
                Ok(Value::Table(table))
            }
            None => Ok(Value::String(lua.create_string(external.to_string())?)),
        },
        mlua::Error::RuntimeError(text) => Ok(Value::String(lua.create_string(text)?)),
        other => Ok(Value::String(lua.create_string(other.to_string())?)),
    }
}

/// `7.2.4` as Redis's `REDIS_VERSION_NUM` writes it: `0x00070204`.
fn version_number(version: &str) -> u32 {
    version
        .split('.')
        .take(3)
        .map(|part| part.parse::<u32>().unwrap_or(0))
        .fold(0, |number, part| number << 8 | part)
}

/// An error reply's text as Redis 7.0's `redis.error_reply` makes it: the first word
/// is the code (a leading `-` dropped), a single word gets `ERR`; no line break at
/// the end.
fn error_text(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let coded = text.strip_prefix('-').unwrap_or(&text);
    let (code, message) = coded.split_once(' ').unwrap_or(("ERR", coded));
    format!("{code} {}", message.trim_matches(['\r', '\n']))
}

/// A Lua number as LuaBitOp's `tobit` reads it: rounded, then its low 32 bits as a
/// signed integer (the 2^52 + 2^51 trick LuaBitOp uses, bit for bit).
fn tobit(number: f64) -> i32 {
    (number + 6_755_399_441_055_744.0).to_bits() as u32 as i32
}

/// LuaBitOp's `bit` library, which Redis gives scripts: 32-bit operations on numbers.
fn bit_library(lua: &Lua) -> mlua::Result<Table> {
    let bit = lua.create_table()?;
    let fold = |lua: &Lua, op: fn(i32, i32) -> i32| {
        lua.create_function(move |_, (first, rest): (f64, mlua::Variadic<f64>)| {
            Ok(f64::from(
                rest.iter().fold(tobit(first), |acc, &n| op(acc, tobit(n))),
            ))
        })
    };
    bit.raw_set("band", fold(lua, |a, b| a & b)?)?;
    bit.raw_set("bor", fold(lua, |a, b| a | b)?)?;
    bit.raw_set("bxor", fold(lua, |a, b| a ^ b)?)?;
    let shift = |lua: &Lua, op: fn(i32, u32) -> i32| {
        lua.create_function(move |_, (x, n): (f64, f64)| {
            Ok(f64::from(op(tobit(x), (tobit(n) & 31) as u32)))
        })
    };
    bit.raw_set("lshift", shift(lua, |x, n| ((x as u32) << n) as i32)?)?;
    bit.raw_set("rshift", shift(lua, |x, n| ((x as u32) >> n) as i32)?)?;
    bit.raw_set("arshift", shift(lua, |x, n| x >> n)?)?;
    bit.raw_set("rol", shift(lua, |x, n| (x as u32).rotate_left(n) as i32)?)?;
    bit.raw_set("ror", shift(lua, |x, n| (x as u32).rotate_right(n) as i32)?)?;
    bit.raw_set(
        "tobit",
        lua.create_function(|_, x: f64| Ok(f64::from(tobit(x))))?,
    )?;
    bit.raw_set(
        "bnot",
        lua.create_function(|_, x: f64| Ok(f64::from(!tobit(x))))?,
    )?;
    bit.raw_set(
        "bswap",
        lua.create_function(|_, x: f64| Ok(f64::from(tobit(x).swap_bytes())))?,
    )?;
    bit.raw_set(
        "tohex",
        lua.create_function(|_, (x, n): (f64, Option<f64>)| {
            let n = n.map_or(8, tobit);
            let (digits, upper) = (n.unsigned_abs().min(8) as usize, n < 0);
            let text = if upper {
                format!("{:08X}", tobit(x) as u32)
            } else {
                format!("{:08x}", tobit(x) as u32)
            };
            Ok(text[8 - digits..].to_string())
        })?,
    )?;
    Ok(bit)
}

/// A script's `redis.call` arguments as a command's (strings and numbers only), copied
/// into one buffer: read straight off the Lua stack when mlua converts a callback's
/// arguments, so no argument becomes a Lua reference.
#[derive(Default)]
struct CommandArgs {
    bytes: Vec<u8>,
    /// Where each argument ends in `bytes`.
    ends: Vec<usize>,
}

impl CommandArgs {
    fn with_capacity(count: usize) -> CommandArgs {
        CommandArgs {
            bytes: Vec::with_capacity(count * 16),
            ends: Vec::with_capacity(count),
        }
    }

    fn push(&mut self, arg: &[u8]) {
        self.bytes.extend_from_slice(arg);
        self.ends.push(self.bytes.len());
    }

    /// A number argument as Redis 7.0 passes it (`%.17g`: no precision lost).
    fn push_number(&mut self, number: f64) {
        self.push(crate::protocol::encode::format_g17(number).as_bytes());
    }

    fn slices(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let arg = &self.bytes[start..end];
                start = end;
                arg
            })
            .collect()
    }
}

fn no_arguments() -> mlua::Error {
    mlua::Error::runtime("Please specify at least one argument for this redis lib call")
}

fn wrong_argument() -> mlua::Error {
    mlua::Error::runtime("Lua redis lib command arguments must be strings or integers")
}

impl mlua::FromLuaMulti for CommandArgs {
    fn from_lua_multi(values: mlua::MultiValue, _: &Lua) -> mlua::Result<CommandArgs> {
        if values.is_empty() {
            return Err(no_arguments());
        }
        let mut args = CommandArgs::with_capacity(values.len());
        for value in values {
            match value {
                Value::String(text) => args.push(&text.as_bytes()),
                Value::Integer(number) => args.push(number.to_string().as_bytes()),
                Value::Number(number) => args.push_number(number),
                _ => return Err(wrong_argument()),
            }
        }
        Ok(args)
    }

    unsafe fn from_stack_args(
        nargs: std::ffi::c_int,
        _: usize,
        _: Option<&str>,
        lua: &mlua::state::RawLua,
    ) -> mlua::Result<CommandArgs> {
        use mlua::ffi;
        if nargs <= 0 {
            return Err(no_arguments());
        }
        let state = lua.state();
        let mut args = CommandArgs::with_capacity(nargs as usize);
        for index in -nargs..0 {
            // SAFETY: mlua calls this with the callback's `nargs` arguments on top of
            // `state`; strings are only read (a number is never converted in place)
            unsafe {
                match ffi::lua_type(state, index) {
                    ffi::LUA_TSTRING => {
                        let mut len = 0;
                        let text = ffi::lua_tolstring(state, index, &mut len);
                        args.push(std::slice::from_raw_parts(text.cast(), len));
                    }
                    ffi::LUA_TNUMBER => args.push_number(ffi::lua_tonumber(state, index)),
                    _ => return Err(wrong_argument()),
                }
            }
        }
        Ok(args)
    }
}

/// A number as Lua 5.1's `tostring` prints it (`%.14g`), as cjson encodes numbers.
fn lua_number_text(number: f64) -> String {
    if number == 0.0 && number.is_sign_negative() {
        return "-0".into();
    }
    if number.fract() == 0.0 && number.abs() < 1e14 {
        return format!("{}", number as i64);
    }
    let text = format!("{number:.13e}");
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    if (-4..14).contains(&exponent) {
        let fixed = format!("{:.*}", (13 - exponent).max(0) as usize, number);
        let fixed = fixed.trim_end_matches('0').trim_end_matches('.');
        return fixed.to_string();
    }
    let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exponent.abs())
}

/// A command's reply as Redis hands it to Lua: integers as numbers, bulks as strings,
/// arrays as tables, a status as `{ok = ...}`, an error as `{err = ...}`; nil as
/// false in RESP2 and as nil in RESP3, where maps become `{map = {k = v}}`, sets
/// `{set = {member = true}}`, doubles `{double = n}`, booleans booleans, big numbers
/// `{big_number = digits}` and verbatim strings `{verbatim_string = {format, string}}`.
fn reply_to_lua(lua: &Lua, reply: &Reply, proto: Protocol, depth: usize) -> mlua::Result<Value> {
    let wrapped = |field: &str, value: Value| -> mlua::Result<Value> {
        let table = lua.create_table()?;
        table.raw_set(field, value)?;
        Ok(Value::Table(table))
    };
    let nested = |depth: usize| {
        if depth >= MAX_DEPTH {
            return Err(mlua::Error::runtime("reached lua stack limit"));
        }
        Ok(depth + 1)
    };
    Ok(match reply {
        Reply::Int(number) => Value::Number(*number as f64),
        Reply::Bulk(bytes) => Value::String(lua.create_string(bytes)?),
        Reply::Nil => match proto {
            Protocol::Resp2 => Value::Boolean(false),
            Protocol::Resp3 => Value::Nil,
        },
        Reply::Simple(text) => wrapped("ok", Value::String(lua.create_string(text)?))?,
        Reply::Error(text) => wrapped("err", Value::String(lua.create_string(text)?))?,
        Reply::Array(items) => {
            let depth = nested(depth)?;
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (index, item) in items.iter().enumerate() {
                table.raw_set(index + 1, reply_to_lua(lua, item, proto, depth)?)?;
            }
            Value::Table(table)
        }
        Reply::Map(items) => {
            let depth = nested(depth)?;
            let table = lua.create_table()?;
            for pair in items.chunks(2) {
                if let [key, value] = pair {
                    table.raw_set(
                        reply_to_lua(lua, key, proto, depth)?,
                        reply_to_lua(lua, value, proto, depth)?,
                    )?;
                }
            }
            wrapped("map", Value::Table(table))?
        }
        Reply::Set(items) => {
            let depth = nested(depth)?;
            let table = lua.create_table()?;
            for item in items {
                table.raw_set(reply_to_lua(lua, item, proto, depth)?, true)?;
            }
            wrapped("set", Value::Table(table))?
        }
        Reply::Double(text) => wrapped("double", Value::Number(parse_double(text)))?,
        Reply::Bool(value) => Value::Boolean(*value),
        Reply::BigNumber(digits) => {
            wrapped("big_number", Value::String(lua.create_string(digits)?))?
        }
        Reply::Verbatim { format, text } => {
            let inner = lua.create_table()?;
            inner.raw_set("format", format.as_str())?;
            inner.raw_set("string", lua.create_string(text)?)?;
            wrapped("verbatim_string", Value::Table(inner))?
        }
    })
}

/// A double's reply text as a number (`inf`, `-inf` and `nan` included).
fn parse_double(text: &str) -> f64 {
    text.parse().unwrap_or(f64::NAN)
}

/// Text Redis puts in a status-like reply line: CR and LF become spaces.
fn one_line(text: &[u8]) -> String {
    String::from_utf8_lossy(text).replace(['\r', '\n'], " ")
}

/// A script's return value as Redis replies with it: numbers truncated to integers,
/// strings as bulks, `true` as 1 and `false` as nil (RESP2 scripts) or booleans
/// (`redis.setresp(3)`), nil as nil, `{err = ...}` an error, `{ok = ...}` a status,
/// `{double = n}`, `{big_number = s}`, `{verbatim_string = {format = f, string = s}}`,
/// `{map = t}` and `{set = t}` those RESP3 types (in their RESP2 form for RESP2
/// clients), other tables an array of their elements up to the first nil.
fn lua_to_reply(value: &Value, proto: Protocol, depth: usize) -> mlua::Result<Reply> {
    Ok(match value {
        Value::Nil => Reply::Nil,
        Value::Boolean(value) => match proto {
            Protocol::Resp2 if *value => Reply::Int(1),
            Protocol::Resp2 => Reply::Nil,
            Protocol::Resp3 => Reply::Bool(*value),
        },
        Value::Integer(number) => Reply::Int(*number),
        Value::Number(number) => Reply::Int(*number as i64),
        Value::String(text) => Reply::Bulk(bytes::Bytes::copy_from_slice(&text.as_bytes())),
        Value::Table(table) => {
            let field = |name: &str| table.raw_get::<Value>(name).unwrap_or(Value::Nil);
            if let Value::String(error) = field("err") {
                return Ok(Reply::Error(error.to_string_lossy()));
            }
            if let Value::String(status) = field("ok") {
                return Ok(Reply::Simple(one_line(&status.as_bytes())));
            }
            match field("double") {
                Value::Number(number) => {
                    return Ok(Reply::Double(crate::protocol::encode::format_g17(number)));
                }
                Value::Integer(number) => {
                    let number = number as f64;
                    return Ok(Reply::Double(crate::protocol::encode::format_g17(number)));
                }
                _ => {}
            }
            if let Value::String(digits) = field("big_number") {
                return Ok(Reply::BigNumber(one_line(&digits.as_bytes())));
            }
            if let Value::Table(verbatim) = field("verbatim_string") {
                let format = verbatim.raw_get::<Value>("format")?;
                let text = verbatim.raw_get::<Value>("string")?;
                if let (Value::String(format), Value::String(text)) = (format, text) {
                    // Redis writes exactly three format characters, padded with spaces
                    let format: String = format
                        .as_bytes()
                        .iter()
                        .map(|&byte| byte as char)
                        .chain(std::iter::repeat(' '))
                        .take(3)
                        .collect();
                    return Ok(Reply::Verbatim {
                        format,
                        text: bytes::Bytes::copy_from_slice(&text.as_bytes()),
                    });
                }
            }
            if depth >= MAX_DEPTH {
                return Err(mlua::Error::runtime("reached lua stack limit"));
            }
            if let Value::Table(map) = field("map") {
                let mut items = Vec::new();
                for pair in map.pairs::<Value, Value>() {
                    let (key, value) = pair?;
                    items.push(lua_to_reply(&key, proto, depth + 1)?);
                    items.push(lua_to_reply(&value, proto, depth + 1)?);
                }
                return Ok(Reply::Map(items));
            }
            if let Value::Table(set) = field("set") {
                let mut items = Vec::new();
                for pair in set.pairs::<Value, Value>() {
                    let (member, _) = pair?;
                    items.push(lua_to_reply(&member, proto, depth + 1)?);
                }
                return Ok(Reply::Set(items));
            }
            let mut items = Vec::new();
            for index in 1.. {
                let item: Value = table.raw_get(index)?;
                if item.is_nil() {
                    break;
                }
                items.push(lua_to_reply(&item, proto, depth + 1)?);
            }
            Reply::Array(items)
        }
        _ => Reply::Nil,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_names_scripts_as_redis_does() {
        // redis-cli SCRIPT LOAD "return 1"
        assert_eq!(
            sha1_hex(b"return 1"),
            "e0e1f9fabfc9d4800c877a703b823ac0578ff8db"
        );
    }

    #[test]
    fn versions_number_as_redis_numbers_them() {
        assert_eq!(version_number("7.0.15"), 458_767);
        assert_eq!(version_number("7.2.4"), 0x0007_0204);
    }

    #[test]
    fn numbers_print_as_lua_prints_them() {
        for (number, text) in [
            (1.0, "1"),
            (-3.0, "-3"),
            (0.5, "0.5"),
            (1.0 / 3.0, "0.33333333333333"),
            (-0.0, "-0"),
            (99_999_999_999_999.0, "99999999999999"),
            (1e14, "1e+14"),
            (123_456_789_012_345.0, "1.2345678901234e+14"),
            (1.5e-7, "1.5e-07"),
        ] {
            assert_eq!(lua_number_text(number), text);
        }
    }
}

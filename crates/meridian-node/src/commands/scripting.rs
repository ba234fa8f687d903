//! EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT, with Redis 7.0's replies and errors.
//!
//! A script is atomic as in Redis: it runs with every shard locked (or, inside EXEC,
//! with the transaction's locks), its commands go through the dispatcher one by one
//! (ACLs, routing, tracking and region events apply as to a client's commands), and
//! its effects replicate as one MULTI/EXEC block, never the script itself.

use super::transactions::propagate_block;
use super::{
    COMMANDS, ClientState, Cmd, Ctx, WRITE, dispatch_at, help, keys_after_numkeys, lookup,
};
use crate::error::{CmdResult, CommandError};
use crate::exec::ExecContext;
use crate::protocol::{Out, Protocol, Reply};
use crate::scripting::{Kill, RestorePolicy, Script, ScriptFlags, ScriptRequest};
use crate::state::Shared;
use crate::store::Access;

/// Commands a script may not run (Redis's `noscript` flag).
fn not_in_scripts(id: Cmd) -> bool {
    matches!(
        id,
        Cmd::Eval
            | Cmd::Evalsha
            | Cmd::EvalRo
            | Cmd::EvalshaRo
            | Cmd::Script
            | Cmd::Fcall
            | Cmd::FcallRo
            | Cmd::Function
            | Cmd::Multi
            | Cmd::Exec
            | Cmd::Discard
            | Cmd::Watch
            | Cmd::Unwatch
            | Cmd::Subscribe
            | Cmd::Unsubscribe
            | Cmd::Psubscribe
            | Cmd::Punsubscribe
            | Cmd::Auth
            | Cmd::Hello
            | Cmd::Quit
            | Cmd::Reset
            | Cmd::Client
            | Cmd::Replicaof
            | Cmd::Slaveof
            | Cmd::Replconf
            | Cmd::Psync
            | Cmd::Sync
            | Cmd::Wait
            | Cmd::Migrate
            | Cmd::MeridianMigrate
            | Cmd::MeridianWriteBehind
            | Cmd::Acl
            | Cmd::Blpop
            | Cmd::Brpop
            | Cmd::Blmove
            | Cmd::Brpoplpush
            | Cmd::Blmpop
            | Cmd::Bzpopmin
            | Cmd::Bzpopmax
            | Cmd::Bzmpop
    )
}

/// EVAL's keys: `numkeys` of them after the script.
pub fn eval_keys<'x>(args: &[&'x [u8]]) -> Vec<&'x [u8]> {
    keys_after_numkeys(args, 2, 0)
}

pub fn eval(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    run_script(ctx, Script::Source(ctx.args[1]), false)
}

pub fn evalsha(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    run_script(ctx, Script::Sha(ctx.args[1]), false)
}

pub fn eval_ro(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    run_script(ctx, Script::Source(ctx.args[1]), true)
}

pub fn evalsha_ro(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    run_script(ctx, Script::Sha(ctx.args[1]), true)
}

pub fn fcall(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    run_script(ctx, Script::Function(ctx.args[1]), false)
}

pub fn fcall_ro(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    run_script(ctx, Script::Function(ctx.args[1]), true)
}

/// Whether a script with `flags` may start, as Redis 7 decides for a script that
/// declared its flags (`scriptPrepareForRun`, and the command flags `EVAL` takes from
/// them: a script without `no-writes` is a write, refused on a replica; without
/// `allow-oom` either, refused past maxmemory); whether it runs read-only. A script
/// in compatibility mode is checked command by command instead.
fn admit(
    ctx: &Ctx<'_, '_>,
    script: Script<'_>,
    flags: ScriptFlags,
    read_only_call: bool,
) -> Result<bool, CommandError> {
    if !flags.declared {
        return Ok(read_only_call);
    }
    let shared = ctx.shared;
    if flags.no_cluster && shared.topology.load().is_some() {
        return Err(CommandError::other(
            "ERR Can not run script on cluster, 'no-cluster' flag is set.",
        ));
    }
    if !flags.no_writes {
        let obeyed = ctx.client.primary_link;
        if !obeyed {
            super::replication::check_write(shared)?;
        }
        // (inside EXEC eviction ran before the transaction's locks were taken)
        if !obeyed && !flags.allow_oom && ctx.keys.is_direct() && shared.db.make_room().is_err() {
            return Err(CommandError::OutOfMemory);
        }
        if read_only_call {
            // (Redis compiles, and caches, an EVAL_RO source before it looks at the flags)
            if let Script::Source(source) = script {
                shared
                    .scripts
                    .load(source)
                    .map_err(|error| CommandError::other(error.to_string()))?;
            }
            return Err(CommandError::other(
                "ERR Can not execute a script with write flag using *_ro command.",
            ));
        }
    }
    Ok(read_only_call || flags.no_writes)
}

/// The one slot a script that declared its flags may touch in cluster mode.
struct SlotRule {
    enforced: bool,
    /// The slot of the script's declared keys, else of the first key it reached.
    slot: Option<u16>,
}

impl SlotRule {
    /// Whether a command on `keys` keeps to the script's slot (and takes the slot
    /// of its first key when the script has none yet).
    fn admits(&mut self, keys: &[&[u8]]) -> bool {
        if !self.enforced {
            return true;
        }
        let Some(first) = keys.first() else {
            return true;
        };
        let reached = meridian_topology::key_slot(first);
        *self.slot.get_or_insert(reached) == reached
    }
}

/// One of a script's `redis.call`s: checked as Redis checks script commands, then
/// dispatched under the locks the script holds; its reply captured.
#[allow(clippy::too_many_arguments)]
fn script_call<'a>(
    shared: &'a Shared,
    exec: ExecContext,
    client: &mut ClientState,
    access: Access<'a, '_>,
    read_only: bool,
    slot: &mut SlotRule,
    args: &[&[u8]],
    proto: Protocol,
) -> Reply {
    let refuse = |text: &str| Reply::Error(text.to_string());
    let Some(position) = lookup(args[0]) else {
        return refuse("ERR Unknown Redis command called from script");
    };
    let spec = &COMMANDS[position];
    if (spec.arity > 0 && args.len() as i32 != spec.arity)
        || (spec.arity < 0 && (args.len() as i32) < -spec.arity)
    {
        return refuse("ERR Wrong number of args calling Redis command from script");
    }
    if not_in_scripts(spec.id) {
        return refuse("ERR This Redis command is not allowed from script");
    }
    if read_only && spec.has(WRITE) {
        return refuse("ERR Write commands are not allowed from read-only scripts.");
    }
    // the script holds this node's locks only: a key of a slot another node serves
    // (or one this node cannot serve yet) must not be read or written here
    // after ASKING, the importing node serves the script's keys of the slot
    let asking = client.script_asking;
    if !client.primary_link
        && super::cluster::check_command(shared, client.readonly, asking, spec, args).is_err()
    {
        return refuse("ERR Script attempted to access a non local key in a cluster node");
    }
    if slot.enforced && !slot.admits(&spec.keys(args)) {
        return refuse("ERR Script attempted to access keys that do not hash to the same slot");
    }
    let mut out = match proto {
        Protocol::Resp2 => Out::capture(),
        Protocol::Resp3 => Out::capture_resp3(),
    };
    dispatch_at(shared, exec, client, &mut out, args, access, position);
    // (the nested dispatch reset it for its own command)
    client.script_asking = asking;
    let reply = out.take_replies().into_iter().next().unwrap_or(Reply::Nil);
    if spec.has(WRITE) && !matches!(reply, Reply::Error(_)) {
        shared.scripts.note_write();
    }
    reply
}

/// `redis.acl_check_cmd`: 1 when the caller's user may run `args`, 0 when not.
fn acl_check_reply(shared: &Shared, client: &ClientState, args: &[&[u8]]) -> Reply {
    let Some(position) = lookup(args[0]) else {
        return Reply::Error("ERR Invalid command passed to redis.acl_check_cmd()".into());
    };
    let catalog = shared.acl.catalog();
    let allowed = super::acl_check(
        catalog,
        &client.login.user,
        position,
        &COMMANDS[position],
        args,
    )
    .is_ok();
    Reply::Int(i64::from(allowed))
}

fn run_script(ctx: &mut Ctx<'_, '_>, script: Script<'_>, read_only_call: bool) -> CmdResult {
    let flags = ctx
        .shared
        .scripts
        .flags(script)
        .map_err(|error| CommandError::other(error.to_string()))?;
    let numkeys = ctx.int_arg(2)?;
    if numkeys < 0 {
        return Err(CommandError::other("ERR Number of keys can't be negative"));
    }
    if numkeys as u64 > (ctx.args.len() - 3) as u64 {
        return Err(CommandError::other(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    let read_only = admit(ctx, script, flags, read_only_call)?;
    let split = 3 + numkeys as usize;
    let (keys, argv) = (&ctx.args[3..split], &ctx.args[split..]);
    let shared = ctx.shared;
    // in cluster mode a script that declared its flags keeps to one slot (the slot of
    // its declared keys, or of the first key it reaches) unless it allows more
    let mut slot = SlotRule {
        enforced: flags.declared
            && !flags.allow_cross_slot_keys
            && !ctx.client.primary_link
            && shared.topology.load().is_some(),
        slot: keys.first().map(|key| meridian_topology::key_slot(key)),
    };
    let log = &shared.repl.log;
    // effects collect into one MULTI/EXEC block unless an EXEC already collects them
    let own_block = log.is_active() && !ctx.client.primary_link && ctx.client.txn_repl.is_none();
    if own_block {
        ctx.client.txn_repl = Some(Vec::new());
    }
    // (blocking commands are refused in scripts; this keeps anything else from waiting)
    let was_running_exec = std::mem::replace(&mut ctx.client.running_exec, true);
    let (exec, client, access) = (ctx.exec, &mut *ctx.client, &mut ctx.keys);
    let mut run = || {
        if access.is_direct() {
            let db = access.db();
            // each shard is locked when the script first reaches it, and kept
            let mut held = db.lock_growing(&[]);
            let mut call = |request: ScriptRequest<'_>| match request {
                ScriptRequest::Call { args, proto } => {
                    let access = Access::held(db, &mut held, exec.holder());
                    script_call(
                        shared, exec, client, access, read_only, &mut slot, args, proto,
                    )
                }
                ScriptRequest::AclCheck { args } => acl_check_reply(shared, client, args),
            };
            let result = shared.scripts.run(script, keys, argv, &mut call);
            // into the stream while the shards are held, so no write to the
            // script's keys by another client lands in it before the script's
            if own_block {
                propagate_block(client, log);
            }
            drop(held);
            result
        } else {
            let mut call = |request: ScriptRequest<'_>| match request {
                ScriptRequest::Call { args, proto } => script_call(
                    shared,
                    exec,
                    client,
                    access.reborrow(),
                    read_only,
                    &mut slot,
                    args,
                    proto,
                ),
                ScriptRequest::AclCheck { args } => acl_check_reply(shared, client, args),
            };
            shared.scripts.run(script, keys, argv, &mut call)
        }
    };
    // a script may run for seconds: its worker hands its other work (and the I/O
    // driver) to another thread meanwhile, so SCRIPT KILL and other clients get served
    let multi_thread = tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
        runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
    });
    let result = if multi_thread {
        tokio::task::block_in_place(run)
    } else {
        run()
    };
    ctx.client.running_exec = was_running_exec;
    // (inside EXEC or a command on a slot in transit, the caller still holds the locks)
    if own_block && !ctx.keys.is_direct() {
        propagate_block(ctx.client, log);
    }
    match result {
        Ok(reply) => {
            ctx.out.reply(&reply);
            Ok(())
        }
        Err(error) => Err(CommandError::other(error.to_string())),
    }
}

/// A container command's subcommand checked against Redis's arity for it (negative:
/// at least), from `arities`; Redis's errors for an unknown one or a wrong count.
fn checked_subcommand(
    ctx: &Ctx<'_, '_>,
    command: &str,
    arities: &[(&[u8], i32)],
) -> Result<Vec<u8>, CommandError> {
    let sub = ctx.arg(1).to_ascii_lowercase();
    let Some(&(_, arity)) = arities.iter().find(|(name, _)| *name == sub.as_slice()) else {
        return Err(CommandError::other(format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            String::from_utf8_lossy(ctx.arg(1)),
            command.to_ascii_uppercase()
        )));
    };
    let argc = ctx.args.len() as i32;
    if (arity > 0 && argc != arity) || (arity < 0 && argc < -arity) {
        return Err(CommandError::WrongArity(format!(
            "{command}|{}",
            String::from_utf8_lossy(&sub)
        )));
    }
    Ok(sub)
}

/// SCRIPT KILL and FUNCTION KILL.
fn kill_running(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    match ctx.shared.scripts.kill() {
        Kill::Killed => {
            ctx.out.ok();
            Ok(())
        }
        Kill::NotBusy => Err(CommandError::other(
            "NOTBUSY No scripts in execution right now.",
        )),
        Kill::Unkillable => Err(CommandError::other(
            "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.",
        )),
    }
}

/// SCRIPT FLUSH's and FUNCTION FLUSH's optional ASYNC|SYNC (both flush at once).
fn check_flush_mode(ctx: &Ctx<'_, '_>, message: &'static str) -> CmdResult {
    if let Some(mode) = ctx.args.get(2) {
        let mode = mode.to_ascii_lowercase();
        if ctx.args.len() > 3 || (mode != b"async" && mode != b"sync") {
            return Err(CommandError::other(message));
        }
    }
    Ok(())
}

pub fn script(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let arities: &[(&[u8], i32)] = &[
        (b"load", 3),
        (b"exists", -3),
        (b"flush", -2),
        (b"kill", 2),
        (b"help", 2),
    ];
    let sub = checked_subcommand(ctx, "script", arities)?;
    let scripts = &ctx.shared.scripts;
    match sub.as_slice() {
        b"load" => {
            let sha = scripts
                .load(ctx.args[2])
                .map_err(|error| CommandError::other(error.to_string()))?;
            ctx.out.bulk(sha.as_bytes());
        }
        b"exists" => {
            ctx.out.array(ctx.args.len() - 2);
            for sha in &ctx.args[2..] {
                ctx.out.integer(i64::from(scripts.exists(sha)));
            }
        }
        b"flush" => {
            check_flush_mode(ctx, "ERR SCRIPT FLUSH only support SYNC|ASYNC option")?;
            scripts.flush();
            ctx.out.ok();
        }
        b"kill" => return kill_running(ctx),
        _ => help(
            ctx.out,
            &[
                "SCRIPT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "EXISTS <sha1> [<sha1> ...]",
                "    Return information about the existence of the scripts in the script cache.",
                "FLUSH [ASYNC|SYNC]",
                "    Flush the Lua scripts cache. Very dangerous on replicas.",
                "KILL",
                "    Kill the currently executing Lua script.",
                "LOAD <script>",
                "    Load a script into the scripts cache without executing it.",
                "HELP",
                "    Print this help.",
            ],
        ),
    }
    Ok(())
}

/// Appends `args` to the replication log (FUNCTION LOAD / DELETE / FLUSH change what
/// replicas must hold, and are not keyed writes the dispatcher propagates).
fn propagate(shared: &Shared, args: &[&[u8]]) {
    let log = &shared.repl.log;
    if log.is_active() {
        let mut command = Vec::new();
        crate::replication::backlog::encode_command(&mut command, args);
        log.append(&command);
    }
}

pub fn function(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let arities: &[(&[u8], i32)] = &[
        (b"load", -3),
        (b"delete", 3),
        (b"flush", -2),
        (b"dump", 2),
        (b"restore", -3),
        (b"list", -2),
        (b"kill", 2),
        (b"stats", 2),
        (b"help", 2),
    ];
    let sub = checked_subcommand(ctx, "function", arities)?;
    let shared = ctx.shared;
    let scripts = &shared.scripts;
    // libraries are data replicas get from their primary: a client may not change them
    // on a replica (what Redis's write flag on these subcommands does)
    let changes = matches!(sub.as_slice(), b"load" | b"delete" | b"flush" | b"restore");
    if changes && !matches!(ctx.exec.caller, crate::exec::Caller::PrimaryStream) {
        super::replication::check_write(shared)?;
    }
    match sub.as_slice() {
        b"load" => {
            let (replace, code) = match &ctx.args[2..] {
                [code] => (false, *code),
                [option, code] if option.eq_ignore_ascii_case(b"REPLACE") => (true, *code),
                [option, ..] => {
                    return Err(CommandError::other(format!(
                        "ERR Unknown option given: {}",
                        String::from_utf8_lossy(option)
                    )));
                }
                [] => return Err(CommandError::Syntax),
            };
            let name = scripts
                .load_library(code, replace, || {
                    propagate(shared, &[b"FUNCTION", b"LOAD", b"REPLACE", code]);
                })
                .map_err(CommandError::other)?;
            ctx.out.bulk(name.as_bytes());
        }
        b"delete" => {
            let name = ctx.args[2];
            if !scripts.delete_library(name, || propagate(shared, &[b"FUNCTION", b"DELETE", name]))
            {
                return Err(CommandError::other("ERR Library not found"));
            }
            ctx.out.ok();
        }
        b"flush" => {
            check_flush_mode(ctx, "ERR FUNCTION FLUSH only supports SYNC|ASYNC option")?;
            scripts.flush_libraries(|| propagate(shared, &[b"FUNCTION", b"FLUSH"]));
            ctx.out.ok();
        }
        b"dump" => {
            let payload = scripts.dump_libraries();
            ctx.out.bulk(&payload);
        }
        b"restore" => {
            let payload = ctx.args[2];
            let policy = match &ctx.args[3..] {
                [] => RestorePolicy::Append,
                [policy] if policy.eq_ignore_ascii_case(b"APPEND") => RestorePolicy::Append,
                [policy] if policy.eq_ignore_ascii_case(b"REPLACE") => RestorePolicy::Replace,
                [policy] if policy.eq_ignore_ascii_case(b"FLUSH") => RestorePolicy::Flush,
                [_] => {
                    return Err(CommandError::other(
                        "ERR Wrong restore policy given, value should be either FLUSH, APPEND or REPLACE.",
                    ));
                }
                _ => {
                    return Err(CommandError::other(
                        "ERR unknown subcommand or wrong number of arguments for 'RESTORE'. Try FUNCTION HELP.",
                    ));
                }
            };
            let policy_name: &[u8] = match policy {
                RestorePolicy::Append => b"APPEND",
                RestorePolicy::Replace => b"REPLACE",
                RestorePolicy::Flush => b"FLUSH",
            };
            scripts
                .restore_libraries(payload, policy, || {
                    propagate(shared, &[b"FUNCTION", b"RESTORE", payload, policy_name]);
                })
                .map_err(CommandError::other)?;
            ctx.out.ok();
        }
        b"list" => function_list(ctx)?,
        b"kill" => return kill_running(ctx),
        b"stats" => {
            let libraries = scripts.libraries();
            let functions: usize = libraries
                .iter()
                .map(|library| library.functions.len())
                .sum();
            let out = &mut *ctx.out;
            out.map(2);
            out.bulk(b"running_script");
            out.null();
            out.bulk(b"engines");
            out.map(1);
            out.bulk(b"LUA");
            out.map(2);
            out.bulk(b"libraries_count");
            out.integer(libraries.len() as i64);
            out.bulk(b"functions_count");
            out.integer(functions as i64);
        }
        _ => help(
            ctx.out,
            &[
                "FUNCTION <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "LOAD [REPLACE] <FUNCTION CODE>",
                "    Create a new library with the given library name and code.",
                "DELETE <LIBRARY NAME>",
                "    Delete the given library.",
                "LIST [LIBRARYNAME PATTERN] [WITHCODE]",
                "    Return general information on all the libraries:",
                "    * Library name",
                "    * The engine used to run the Library",
                "    * Library description",
                "    * Functions list",
                "    * Library code (if WITHCODE is given)",
                "    It also possible to get only function that matches a pattern using LIBRARYNAME argument.",
                "STATS",
                "    Return information about the current function running:",
                "    * Function name",
                "    * Command used to run the function",
                "    * Duration in MS that the function is running",
                "    If no function is running, return nil",
                "    In addition, returns a list of available engines.",
                "KILL",
                "    Kill the current running function.",
                "FLUSH [ASYNC|SYNC]",
                "    Delete all the libraries.",
                "    When called without the optional mode argument, the behavior is determined by the",
                "    lazyfree-lazy-user-flush configuration directive. Valid modes are:",
                "    * ASYNC: Asynchronously flush the libraries.",
                "    * SYNC: Synchronously flush the libraries.",
                "DUMP",
                "    Return a serialized payload representing the current libraries, can be restored using FUNCTION RESTORE command",
                "RESTORE <PAYLOAD> [FLUSH|APPEND|REPLACE]",
                "    Restore the libraries represented by the given payload, it is possible to give a restore policy to",
                "    control how to handle existing libraries (default APPEND):",
                "    * FLUSH: delete all existing libraries.",
                "    * APPEND: appends the restored libraries to the existing libraries. On collision, abort.",
                "    * REPLACE: appends the restored libraries to the existing libraries, On collision, replace the old",
                "      libraries with the new libraries (notice that even on this option there is a chance of failure",
                "      in case of functions name collision with another library).",
                "HELP",
                "    Prints this help.",
            ],
        ),
    }
    Ok(())
}

/// FUNCTION LIST [LIBRARYNAME pattern] [WITHCODE]: each library as a map (a flat array
/// in RESP2), its functions' flags as a set.
fn function_list(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let (mut pattern, mut with_code) = (None, false);
    let mut at = 2;
    while at < ctx.args.len() {
        let option = ctx.args[at].to_ascii_lowercase();
        if option == b"withcode" && !with_code {
            with_code = true;
            at += 1;
        } else if option == b"libraryname" && pattern.is_none() {
            pattern =
                Some(*ctx.args.get(at + 1).ok_or_else(|| {
                    CommandError::other("ERR library name argument was not given")
                })?);
            at += 2;
        } else {
            return Err(CommandError::other(format!(
                "ERR Unknown argument {}",
                String::from_utf8_lossy(ctx.args[at])
            )));
        }
    }
    let libraries: Vec<_> = ctx
        .shared
        .scripts
        .libraries()
        .into_iter()
        .filter(|library| {
            pattern.is_none_or(|pattern| crate::glob::matches(pattern, library.name.as_bytes()))
        })
        .collect();
    let out = &mut *ctx.out;
    out.array(libraries.len());
    for library in libraries {
        out.map(if with_code { 4 } else { 3 });
        out.bulk(b"library_name");
        out.bulk(library.name.as_bytes());
        out.bulk(b"engine");
        out.bulk(b"LUA");
        out.bulk(b"functions");
        out.array(library.functions.len());
        for function in &library.functions {
            out.map(3);
            out.bulk(b"name");
            out.bulk(function.name.as_bytes());
            out.bulk(b"description");
            match &function.description {
                Some(text) => out.bulk(text.as_bytes()),
                None => out.null(),
            }
            out.bulk(b"flags");
            out.set(function.flags.len());
            for flag in &function.flags {
                out.bulk(flag.as_bytes());
            }
        }
        if with_code {
            out.bulk(b"library_code");
            out.bulk(&library.code);
        }
    }
    Ok(())
}

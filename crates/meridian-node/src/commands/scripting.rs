//! EVAL, EVALSHA, EVAL_RO, EVALSHA_RO and SCRIPT, with Redis 7.0's replies and errors.
//!
//! A script is atomic as in Redis: it runs with every shard locked (or, inside EXEC,
//! with the transaction's locks), its commands go through the dispatcher one by one
//! (ACLs, routing, tracking and region events apply as to a client's commands), and
//! its effects replicate as one MULTI/EXEC block, never the script itself.

use super::transactions::propagate_block;
use super::{COMMANDS, ClientState, Cmd, Ctx, WRITE, dispatch, help, keys_after_numkeys, lookup};
use crate::error::{CmdResult, CommandError};
use crate::exec::ExecContext;
use crate::protocol::{Out, Reply};
use crate::scripting::{Kill, Script};
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
    run_script(ctx, false, false)
}

pub fn evalsha(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    run_script(ctx, true, false)
}

pub fn eval_ro(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    run_script(ctx, false, true)
}

pub fn evalsha_ro(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    run_script(ctx, true, true)
}

/// One of a script's `redis.call`s: checked as Redis checks script commands, then
/// dispatched under the locks the script holds; its reply captured.
fn script_call<'a>(
    shared: &'a Shared,
    exec: ExecContext,
    client: &mut ClientState,
    access: Access<'a, '_>,
    read_only: bool,
    args: &[Vec<u8>],
) -> Reply {
    let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
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
    let mut out = Out::capture();
    dispatch(shared, exec, client, &mut out, &args, access);
    let reply = out.take_replies().into_iter().next().unwrap_or(Reply::Nil);
    if spec.has(WRITE) && !matches!(reply, Reply::Error(_)) {
        shared.scripts.note_write();
    }
    reply
}

fn run_script(ctx: &mut Ctx<'_, '_>, by_sha: bool, read_only: bool) -> CmdResult {
    let numkeys = ctx.int_arg(2)?;
    if numkeys < 0 {
        return Err(CommandError::other("ERR Number of keys can't be negative"));
    }
    if numkeys as u64 > (ctx.args.len() - 3) as u64 {
        return Err(CommandError::other(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    let split = 3 + numkeys as usize;
    let (keys, argv) = (&ctx.args[3..split], &ctx.args[split..]);
    let script = if by_sha {
        Script::Sha(ctx.args[1])
    } else {
        Script::Source(ctx.args[1])
    };
    let shared = ctx.shared;
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
            let mut held = db.lock_all();
            let mut call = |args: &[Vec<u8>]| {
                let access = Access::held(db, &mut held, exec.holder());
                script_call(shared, exec, client, access, read_only, args)
            };
            shared.scripts.run(script, keys, argv, &mut call)
        } else {
            let mut call = |args: &[Vec<u8>]| {
                script_call(shared, exec, client, access.reborrow(), read_only, args)
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
    if own_block {
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

pub fn script(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let sub = ctx.arg(1).to_ascii_lowercase();
    // Redis's subcommand arities (negative: at least)
    let arity: i32 = match sub.as_slice() {
        b"load" => 3,
        b"exists" => -3,
        b"flush" => -2,
        b"kill" | b"help" => 2,
        _ => {
            return Err(CommandError::other(format!(
                "ERR unknown subcommand '{}'. Try SCRIPT HELP.",
                String::from_utf8_lossy(ctx.arg(1))
            )));
        }
    };
    let argc = ctx.args.len() as i32;
    if (arity > 0 && argc != arity) || (arity < 0 && argc < -arity) {
        return Err(CommandError::WrongArity(format!(
            "script|{}",
            String::from_utf8_lossy(&sub)
        )));
    }
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
            if let Some(mode) = ctx.args.get(2) {
                let mode = mode.to_ascii_lowercase();
                if ctx.args.len() > 3 || (mode != b"async" && mode != b"sync") {
                    return Err(CommandError::other(
                        "ERR SCRIPT FLUSH only support SYNC|ASYNC option",
                    ));
                }
            }
            scripts.flush();
            ctx.out.ok();
        }
        b"kill" => match scripts.kill() {
            Kill::Killed => ctx.out.ok(),
            Kill::NotBusy => {
                return Err(CommandError::other(
                    "NOTBUSY No scripts in execution right now.",
                ));
            }
            Kill::Unkillable => {
                return Err(CommandError::other(
                    "UNKILLABLE Sorry the script already executed write commands against the dataset. You can either wait the script termination or kill the server in a hard way using the SHUTDOWN NOSAVE command.",
                ));
            }
        },
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

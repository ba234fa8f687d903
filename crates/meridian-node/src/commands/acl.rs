//! ACL: WHOAMI, USERS, LIST, GETUSER, CAT, SETUSER, DELUSER, LOAD, DRYRUN, LOG,
//! GENPASS, SAVE, HELP, answered like Redis 7.0 (see `crate::acl` for the model).

use super::{COMMANDS, Ctx, Pending, lookup};
use crate::acl::{self, Category, Denied};
use crate::error::{CmdResult, CommandError};

const NO_FILE: &str = "ERR This Redis instance is not configured to use an ACL file. You may want to specify users via the ACL SETUSER command and then issue a CONFIG REWRITE (assuming you have a Redis configuration file set) in order to store users in the Redis configuration.";

pub fn acl(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let subcommand = ctx.args[1].to_ascii_lowercase();
    let argc = ctx.args.len();
    let arity_ok = match subcommand.as_slice() {
        b"whoami" | b"users" | b"list" | b"load" | b"save" | b"help" => argc == 2,
        b"getuser" => argc == 3,
        b"setuser" | b"deluser" => argc >= 3,
        b"dryrun" => argc >= 4,
        b"log" | b"genpass" => argc <= 3,
        b"cat" => {
            if argc > 3 {
                return Err(CommandError::other(
                    "ERR unknown subcommand or wrong number of arguments for 'CAT'. Try ACL HELP.",
                ));
            }
            true
        }
        _ => {
            return Err(CommandError::other(format!(
                "ERR unknown subcommand '{}'. Try ACL HELP.",
                String::from_utf8_lossy(ctx.args[1])
            )));
        }
    };
    if !arity_ok {
        return Err(CommandError::other(format!(
            "ERR wrong number of arguments for 'acl|{}' command",
            String::from_utf8_lossy(&subcommand)
        )));
    }
    let shared = ctx.shared;
    let catalog = shared.acl.catalog();
    match subcommand.as_slice() {
        b"whoami" => {
            let name = ctx.client.login.user.name().to_string();
            ctx.out.bulk(name.as_bytes());
        }
        b"users" => {
            let users = shared.acl.users();
            ctx.out.array(users.len());
            for user in users {
                ctx.out.bulk(user.name().as_bytes());
            }
        }
        b"list" => {
            let users = shared.acl.users();
            ctx.out.array(users.len());
            for user in users {
                ctx.out.bulk(user.describe(catalog).as_bytes());
            }
        }
        b"getuser" => {
            let Some(user) = std::str::from_utf8(ctx.args[2])
                .ok()
                .and_then(|name| shared.acl.user(name))
            else {
                ctx.out.null();
                return Ok(());
            };
            let out = &mut *ctx.out;
            out.map(6);
            out.bulk(b"flags");
            let flags = user.flags();
            out.set(flags.len());
            for flag in flags {
                out.bulk(flag.as_bytes());
            }
            out.bulk(b"passwords");
            let passwords = user.password_hexes();
            out.array(passwords.len());
            for hex in passwords {
                out.bulk(hex.as_bytes());
            }
            out.bulk(b"commands");
            out.bulk(user.describe_commands(catalog).as_bytes());
            out.bulk(b"keys");
            out.bulk(user.describe_keys().as_bytes());
            out.bulk(b"channels");
            out.bulk(user.describe_channels().as_bytes());
            out.bulk(b"selectors");
            out.array(0);
        }
        b"cat" => match ctx.args.get(2) {
            None => {
                ctx.out.array(Category::ALL.len());
                for category in Category::ALL {
                    ctx.out.bulk(category.name().as_bytes());
                }
            }
            Some(name) => {
                let category = Category::parse(name).ok_or_else(|| {
                    CommandError::other(format!(
                        "ERR Unknown category '{}'",
                        String::from_utf8_lossy(name)
                    ))
                })?;
                let units: Vec<acl::Unit> = catalog.of_category(category).collect();
                ctx.out.array(units.len());
                for unit in units {
                    ctx.out.bulk(catalog.name(unit).as_bytes());
                }
            }
        },
        b"setuser" => {
            let name = ctx.args[2];
            if !acl::file::valid_username(name) {
                return Err(CommandError::other(
                    "ERR Usernames can't contain spaces or null characters",
                ));
            }
            let name = String::from_utf8_lossy(name).into_owned();
            shared
                .acl
                .set_user(&name, &ctx.args[3..])
                .map_err(|failed| {
                    CommandError::other(format!(
                        "ERR Error in ACL SETUSER modifier '{}': {}",
                        failed.rule, failed.error
                    ))
                })?;
            ctx.out.ok();
        }
        b"deluser" => {
            let names: Vec<String> = ctx.args[2..]
                .iter()
                .map(|name| String::from_utf8_lossy(name).into_owned())
                .collect();
            if names.iter().any(|name| name == acl::DEFAULT_USER) {
                return Err(CommandError::other(
                    "ERR The 'default' user cannot be removed",
                ));
            }
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let deleted = shared.acl.delete_users(&names);
            // like Redis: the deleted users' connections are closed (this one after its reply)
            if deleted
                .iter()
                .any(|name| name == ctx.client.login.user.name())
            {
                ctx.client.close_after_reply = true;
            }
            shared.disconnect_users(&deleted, ctx.client.handle.id);
            ctx.out.integer(deleted.len() as i64);
        }
        b"load" => {
            if shared.acl_file.is_none() {
                return Err(CommandError::other(NO_FILE));
            }
            if !ctx.keys.is_direct() {
                // reading the file cannot wait inside EXEC's locks
                return Err(CommandError::other(
                    "ERR ACL LOAD cannot run inside MULTI / EXEC",
                ));
            }
            ctx.client.pending = Some(Pending::AclLoad);
        }
        b"save" => {
            return Err(CommandError::other(if shared.acl_file.is_none() {
                NO_FILE
            } else {
                "ERR ACL SAVE is not supported: the ACL file is managed outside the node (edit it; the node reloads it)"
            }));
        }
        b"log" => match ctx.args.get(2) {
            Some(arg) if arg.eq_ignore_ascii_case(b"reset") => ctx.out.ok(),
            Some(arg) => {
                super::parse_int(arg).map_err(|_| {
                    CommandError::other("ERR value is out of range, must be positive")
                })?;
                ctx.out.array(0);
            }
            None => ctx.out.array(0),
        },
        b"genpass" => {
            let bits = match ctx.args.get(2) {
                Some(bits) => super::parse_int(bits)
                    .ok()
                    .filter(|bits| (1..=4096).contains(bits))
                    .ok_or_else(|| {
                        CommandError::other(
                            "ERR ACL GENPASS argument must be the number of bits for the output password, a positive number up to 4096",
                        )
                    })?,
                None => 256,
            };
            let chars = (bits as usize).div_ceil(4);
            let mut bytes = vec![0u8; chars.div_ceil(2)];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                .map_err(|_| CommandError::other("ERR no random source"))?;
            let mut hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
            hex.truncate(chars);
            ctx.out.bulk(hex.as_bytes());
        }
        b"dryrun" => dryrun(ctx)?,
        _ => {
            let lines = [
                "ACL <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "CAT [<category>]",
                "DELUSER <username> [<username> ...]",
                "DRYRUN <username> <command> [<arg> ...]",
                "GETUSER <username>",
                "LIST",
                "USERS",
                "SETUSER <username> <attribs> ...",
                "LOAD",
                "SAVE",
                "LOG [<count> | RESET]",
                "GENPASS [<bits>]",
                "WHOAMI",
                "HELP",
            ];
            super::help(ctx.out, &lines);
        }
    }
    Ok(())
}

/// ACL DRYRUN user command args...: what the dispatcher's check would answer.
fn dryrun(ctx: &mut Ctx<'_, '_>) -> CmdResult {
    let shared = ctx.shared;
    let name = String::from_utf8_lossy(ctx.args[2]).into_owned();
    let user = shared
        .acl
        .user(&name)
        .ok_or_else(|| CommandError::other(format!("ERR User '{name}' not found")))?;
    let args = &ctx.args[3..];
    let position = lookup(args[0]).ok_or_else(|| {
        CommandError::other(format!(
            "ERR Command '{}' not found",
            String::from_utf8_lossy(args[0])
        ))
    })?;
    let spec = &COMMANDS[position];
    let catalog = shared.acl.catalog();
    match super::acl_check(catalog, &user, position, spec, args) {
        Ok(()) => ctx.out.ok(),
        Err(denied) => {
            let text = match denied {
                Denied::Command => {
                    let unit = super::acl_unit(catalog, position, args);
                    format!(
                        "This user has no permissions to run the '{}' command",
                        unit.map_or(spec.name, |unit| catalog.name(unit))
                    )
                }
                Denied::Key(index) => format!(
                    "This user has no permissions to access the '{}' key",
                    String::from_utf8_lossy(
                        spec.keys(args).get(index).copied().unwrap_or_default()
                    )
                ),
                Denied::Channel(index) => format!(
                    "This user has no permissions to access the '{}' channel",
                    String::from_utf8_lossy(args.get(index + 1).copied().unwrap_or_default())
                ),
            };
            ctx.out.bulk(text.as_bytes());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{COMMANDS, acl_catalog, acl_check, lookup};
    use crate::acl::catalog::MAX_UNITS;
    use crate::acl::{Category, Denied, User, rules};

    fn user(rules_text: &str) -> User {
        let catalog = acl_catalog();
        let mut user = User::new("app");
        for rule in rules_text.split_whitespace() {
            let parsed = rules::parse(rule.as_bytes(), catalog).expect(rule);
            user.apply(parsed, catalog).expect(rule);
        }
        user
    }

    fn check(user: &User, args: &[&str]) -> Result<(), Denied> {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        let position = lookup(args[0]).expect("a command");
        acl_check(acl_catalog(), user, position, &COMMANDS[position], &args)
    }

    #[test]
    fn an_application_user_is_refused_the_admin_surface() {
        let app = user("on >secret ~session:* +@all -@admin -@dangerous");
        for args in [
            &["MERIDIAN.TOPOLOGY", "SET", "{}"][..],
            &["meridian.topology", "GET"],
            &["MERIDIAN.PEERS", "SET", "[]"],
            &["MERIDIAN.MIGRATE", "SLOT", "1", "h", "1"],
            &["CLUSTER", "SETSLOT", "1", "STABLE"],
            &["cluster", "addslots", "1"],
            &["REPLICAOF", "NO", "ONE"],
            &["SLAVEOF", "NO", "ONE"],
            &["FLUSHALL"],
            &["FLUSHDB"],
            &["CONFIG", "SET", "maxmemory", "1"],
            &["CONFIG", "GET", "*"],
            &["CLIENT", "PAUSE", "10"],
            &["CLIENT", "KILL", "ID", "1"],
            &["PSYNC", "?", "-1"],
            &["SYNC"],
            &["REPLCONF", "ACK", "0"],
            &["MIGRATE", "h", "1", "session:1", "0", "1"],
            &["ACL", "SETUSER", "x"],
            &["ACL", "DELUSER", "x"],
            &["ACL", "LOAD"],
            &["DEBUG", "OBJECT", "x"],
        ] {
            assert_eq!(check(&app, args), Err(Denied::Command), "{args:?}");
        }
        for args in [
            &["SET", "session:1", "v"][..],
            &["GET", "session:1"],
            &["HSET", "session:h", "f", "v"],
            &["DEL", "session:1", "session:2"],
            &["EXPIRE", "session:1", "10"],
            &["CLIENT", "ID"],
            &["CLUSTER", "SLOTS"],
            &["ACL", "WHOAMI"],
            &["PING"],
            &["MULTI"],
        ] {
            assert_eq!(check(&app, args), Ok(()), "{args:?}");
        }
        assert_eq!(check(&app, &["GET", "other"]), Err(Denied::Key(0)));
        assert_eq!(
            check(&app, &["MGET", "session:1", "other"]),
            Err(Denied::Key(1))
        );
        assert_eq!(
            check(&app, &["PUBLISH", "news", "m"]),
            Err(Denied::Channel(0))
        );
        let reader = user("on nopass %R~* &news:* +@all");
        assert_eq!(check(&reader, &["GET", "k"]), Ok(()));
        assert_eq!(check(&reader, &["SET", "k", "v"]), Err(Denied::Key(0)));
        assert_eq!(check(&reader, &["INVALIDATE", "k*"]), Err(Denied::Key(0)));
        assert_eq!(check(&reader, &["SUBSCRIBE", "news:eu"]), Ok(()));
        assert_eq!(check(&reader, &["PSUBSCRIBE", "news:*"]), Ok(()));
        assert_eq!(
            check(&reader, &["SUBSCRIBE", "news:eu", "sport"]),
            Err(Denied::Channel(1))
        );
        let replication = user("on >pw -@all +psync +replconf +ping");
        assert_eq!(check(&replication, &["PSYNC", "?", "-1"]), Ok(()));
        assert_eq!(check(&replication, &["GET", "k"]), Err(Denied::Command));
    }

    #[test]
    fn the_admin_surface_is_admin_and_dangerous() {
        let catalog = acl_catalog();
        // the catalog drops units past MAX_UNITS: every command and subcommand must fit
        let units = COMMANDS.len() + super::super::id::SUBCOMMANDS.len();
        assert!(units <= MAX_UNITS, "{units} units");
        assert_eq!(catalog.len(), units);
        for unit in catalog.of_category(Category::Admin) {
            assert!(
                catalog.categories(unit).contains(Category::Dangerous),
                "{}",
                catalog.name(unit)
            );
        }
        let admin: Vec<&str> = catalog
            .of_category(Category::Admin)
            .map(|unit| catalog.name(unit))
            .collect();
        for name in [
            "meridian.topology",
            "meridian.peers",
            "meridian.migrate",
            "replicaof",
            "slaveof",
            "psync",
            "sync",
            "replconf",
            "debug",
            "cluster|setslot",
            "client|pause",
            "client|kill",
            "config|set",
            "acl|setuser",
            "acl|deluser",
            "acl|load",
            "acl|save",
        ] {
            assert!(admin.contains(&name), "{name} is not @admin");
        }
        for sub in super::super::id::SUBCOMMANDS {
            assert!(COMMANDS.iter().any(|spec| spec.id == sub.parent));
        }
    }

    /// Random byte strings as rules (and as whole ACL files) never panic.
    #[test]
    fn random_rules_never_panic() {
        let catalog = acl_catalog();
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let prefixes: [&[u8]; 12] = [
            b"", b">", b"<", b"#", b"!", b"~", b"%", b"&", b"+", b"-", b"+@", b"-@",
        ];
        let mut user = User::new("fuzz");
        for _ in 0..20_000 {
            let mut rule = prefixes[(next() % 12) as usize].to_vec();
            let len = (next() % 70) as usize;
            for _ in 0..len {
                // mostly the rule language's own characters, some arbitrary bytes
                let byte = next() as u8;
                rule.push(match byte % 4 {
                    0 => b"RW~*|@&%#abcdef0123456789"[(byte as usize / 4) % 25],
                    _ => byte,
                });
            }
            if let Ok(parsed) = rules::parse(&rule, catalog) {
                let _ = user.apply(parsed, catalog);
            }
            let _ = user.accepts(&rule);
            let _ = user.denied_key(
                [rule.as_slice()],
                crate::acl::KeyAccess {
                    read: true,
                    write: true,
                },
            );
            let _ = user.denied_channel([rule.as_slice()], false);
            let text = String::from_utf8_lossy(&rule).into_owned();
            let _ = crate::acl::file::parse("fuzz", &format!("user x {text}\n{text}"), catalog);
        }
        let _ = user.describe(catalog);
    }
}

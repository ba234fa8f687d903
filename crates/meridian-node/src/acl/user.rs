//! An ACL user: flags, password digests, allowed commands (a bitset over the
//! catalog), key and channel patterns; the checks a command runs through and the
//! descriptions ACL LIST / GETUSER print, both like Redis 7.0.

use super::catalog::{Bitset, Catalog, Unit};
use super::category::Category;
use super::password::Hash;
use super::rules::Rule;
use crate::error::AclError;
use crate::glob;

/// A key pattern and the access it grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPattern {
    pub pattern: Vec<u8>,
    pub read: bool,
    pub write: bool,
}

/// What a command does with its keys (Redis's key-spec access flags, simplified).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAccess {
    pub read: bool,
    pub write: bool,
}

/// Why a command was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    Command,
    /// The key argument at this index (of the keys given) is not covered.
    Key(usize),
    Channel(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    name: String,
    enabled: bool,
    nopass: bool,
    passwords: Vec<Hash>,
    commands: Bitset,
    /// Redis's reserved "future commands" bit: set by `+@all`, cleared by `-@all`;
    /// decides whether GETUSER describes the commands from `+@all` or `-@all`.
    all_commands: bool,
    keys: Vec<KeyPattern>,
    all_keys: bool,
    channels: Vec<Vec<u8>>,
    all_channels: bool,
    /// Every command, key and channel: the check costs nothing.
    unrestricted: bool,
}

impl User {
    /// A user as ACL SETUSER creates it: `off`, no password, no commands, no keys,
    /// no channels (Redis 7.0's acl-pubsub-default is resetchannels).
    pub fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            passwords: Vec::new(),
            commands: Bitset::default(),
            all_commands: false,
            keys: Vec::new(),
            all_keys: false,
            channels: Vec::new(),
            all_channels: false,
            unrestricted: false,
        }
    }

    /// `on nopass ~* &* +@all`: Redis's default user, and the one of a node
    /// without ACL file (then with `--requirepass` as its password, if any).
    pub fn superuser(name: &str, catalog: &Catalog, password: Option<Hash>) -> User {
        let mut user = User::new(name);
        for rule in [
            Rule::On,
            Rule::NoPass,
            Rule::AllKeys,
            Rule::AllChannels,
            Rule::AllCommands,
        ] {
            // none of these rules can fail
            let _ = user.apply(rule, catalog);
        }
        if let Some(hash) = password {
            let _ = user.apply(Rule::ResetPass, catalog);
            let _ = user.apply(Rule::AddPassword(hash), catalog);
        }
        user
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn nopass(&self) -> bool {
        self.nopass
    }

    /// Applies one parsed rule (Redis's ACLSetUser).
    pub fn apply(&mut self, rule: Rule, catalog: &Catalog) -> Result<(), AclError> {
        match rule {
            Rule::On => self.enabled = true,
            Rule::Off => self.enabled = false,
            Rule::AddPassword(hash) => {
                if !self.passwords.contains(&hash) {
                    self.passwords.push(hash);
                }
                self.nopass = false;
            }
            Rule::RemovePassword(hash) => {
                let before = self.passwords.len();
                self.passwords.retain(|kept| *kept != hash);
                if self.passwords.len() == before {
                    return Err(AclError::NoSuchPassword);
                }
            }
            Rule::NoPass => {
                self.nopass = true;
                self.passwords.clear();
            }
            Rule::ResetPass => {
                self.nopass = false;
                self.passwords.clear();
            }
            Rule::Keys {
                pattern,
                read,
                write,
            } => {
                if self.all_keys {
                    return Err(AclError::KeyAfterAllKeys);
                }
                match self.keys.iter_mut().find(|kept| kept.pattern == pattern) {
                    Some(kept) => {
                        kept.read |= read;
                        kept.write |= write;
                    }
                    None => self.keys.push(KeyPattern {
                        pattern,
                        read,
                        write,
                    }),
                }
            }
            Rule::AllKeys => {
                self.all_keys = true;
                self.keys.clear();
            }
            Rule::ResetKeys => {
                self.all_keys = false;
                self.keys.clear();
            }
            Rule::Channels(pattern) => {
                if self.all_channels {
                    return Err(AclError::ChannelAfterAllChannels);
                }
                if !self.channels.contains(&pattern) {
                    self.channels.push(pattern);
                }
            }
            Rule::AllChannels => {
                self.all_channels = true;
                self.channels.clear();
            }
            Rule::ResetChannels => {
                self.all_channels = false;
                self.channels.clear();
            }
            Rule::Command { unit, allow } => {
                for unit in catalog.with_children(unit) {
                    self.commands.set(unit, allow);
                }
            }
            Rule::Category { category, allow } => {
                for unit in catalog.of_category(category) {
                    self.commands.set(unit, allow);
                }
            }
            Rule::AllCommands => {
                self.commands = catalog.all();
                self.all_commands = true;
            }
            Rule::NoCommands => {
                self.commands = Bitset::default();
                self.all_commands = false;
            }
            Rule::Reset => {
                for rule in [
                    Rule::ResetPass,
                    Rule::ResetKeys,
                    Rule::ResetChannels,
                    Rule::Off,
                    Rule::NoCommands,
                ] {
                    self.apply(rule, catalog)?;
                }
            }
            Rule::ClearSelectors => {}
        }
        self.unrestricted = self.all_keys && self.all_channels && self.commands == catalog.all();
        Ok(())
    }

    /// Whether `password` logs this user in (an enabled user only).
    pub fn accepts(&self, password: &[u8]) -> bool {
        if !self.enabled {
            return false;
        }
        if self.nopass {
            return true;
        }
        let given = super::password::hash_password(password);
        // every digest is compared: no early exit on the first match
        self.passwords
            .iter()
            .fold(false, |found, hash| hash.matches(&given) | found)
    }

    /// True when every command, key and channel is allowed (the default user):
    /// callers skip the checks.
    pub fn unrestricted(&self) -> bool {
        self.unrestricted
    }

    pub fn all_keys(&self) -> bool {
        self.all_keys
    }

    pub fn may_run(&self, unit: Unit) -> bool {
        self.commands.contains(unit)
    }

    /// The first of `keys` this user may not access as `access` wants.
    pub fn denied_key<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        access: KeyAccess,
    ) -> Option<usize> {
        if self.all_keys {
            return None;
        }
        keys.into_iter().position(|key| {
            !self.keys.iter().any(|pattern| {
                (pattern.read || !access.read)
                    && (pattern.write || !access.write)
                    && glob::matches(&pattern.pattern, key)
            })
        })
    }

    /// The first of `channels` this user may not use; `patterns` for PSUBSCRIBE,
    /// whose patterns must equal one of the user's (Redis 7.0).
    pub fn denied_channel<'c>(
        &self,
        channels: impl IntoIterator<Item = &'c [u8]>,
        patterns: bool,
    ) -> Option<usize> {
        if self.all_channels {
            return None;
        }
        channels.into_iter().position(|channel| {
            !self.channels.iter().any(|allowed| {
                if patterns {
                    allowed.as_slice() == channel
                } else {
                    glob::matches(allowed, channel)
                }
            })
        })
    }

    /// `on`/`off` and `nopass`, as GETUSER lists them.
    pub fn flags(&self) -> Vec<&'static str> {
        let mut flags = vec![if self.enabled { "on" } else { "off" }];
        if self.nopass {
            flags.push("nopass");
        }
        flags
    }

    pub fn password_hexes(&self) -> Vec<String> {
        self.passwords.iter().map(Hash::hex).collect()
    }

    /// GETUSER `keys`: `~*`, or the patterns (`~p`, `%R~p`, `%W~p`) space-separated.
    pub fn describe_keys(&self) -> String {
        if self.all_keys {
            return "~*".to_string();
        }
        let patterns: Vec<String> = self
            .keys
            .iter()
            .map(|pattern| {
                let prefix = match (pattern.read, pattern.write) {
                    (true, true) => "~",
                    (true, false) => "%R~",
                    _ => "%W~",
                };
                format!("{prefix}{}", String::from_utf8_lossy(&pattern.pattern))
            })
            .collect();
        patterns.join(" ")
    }

    /// GETUSER `channels`: `&*`, or the patterns (`&p`) space-separated.
    pub fn describe_channels(&self) -> String {
        if self.all_channels {
            return "&*".to_string();
        }
        let patterns: Vec<String> = self
            .channels
            .iter()
            .map(|pattern| format!("&{}", String::from_utf8_lossy(pattern)))
            .collect();
        patterns.join(" ")
    }

    /// GETUSER `commands`: Redis 7.0's ACLDescribeSelectorCommandRules. Starts from
    /// `+@all` or `-@all`, applies the category that best fits the difference
    /// while one fits better than not, then names the single commands left over.
    pub fn describe_commands(&self, catalog: &Catalog) -> String {
        let mut rules = Vec::new();
        let additive = !self.all_commands;
        // what the rules emitted so far grant
        let mut fake = if additive {
            rules.push("-@all".to_string());
            Bitset::default()
        } else {
            rules.push("+@all".to_string());
            catalog.all()
        };
        // the user's bits with the applied categories inverted: what is left to fix
        let mut temp = self.commands;
        let mut applied = [false; Category::ALL.len()];
        loop {
            let mut best: Option<(usize, usize, usize)> = None;
            for (index, category) in Category::ALL.into_iter().enumerate() {
                if applied[index] {
                    continue;
                }
                let (mut on, mut off) = (0, 0);
                for unit in catalog.of_category(category) {
                    if temp.contains(unit) {
                        on += 1;
                    } else {
                        off += 1;
                    }
                }
                let (diff, same) = if additive { (off, on) } else { (on, off) };
                let better = match best {
                    None => true,
                    Some((_, min_diff, max_same)) => {
                        diff < min_diff || (diff == min_diff && same > max_same)
                    }
                };
                if same > diff && better {
                    best = Some((index, diff, same));
                }
            }
            let Some((index, _, _)) = best else { break };
            let category = Category::ALL[index];
            rules.push(format!(
                "{}@{}",
                if additive { '+' } else { '-' },
                category.name()
            ));
            for unit in catalog.of_category(category) {
                fake.set(unit, additive);
                temp.set(unit, !additive);
            }
            applied[index] = true;
        }
        for unit in catalog.in_order() {
            let allowed = self.commands.contains(unit);
            if allowed != fake.contains(unit) {
                rules.push(format!(
                    "{}{}",
                    if allowed { '+' } else { '-' },
                    catalog.name(unit)
                ));
                fake.set(unit, allowed);
            }
        }
        rules.join(" ")
    }

    /// The ACL LIST / ACL file line: `user <name> <flags> <passwords> <keys>
    /// <channels> <commands>`, like Redis 7.0's ACLDescribeUser.
    pub fn describe(&self, catalog: &Catalog) -> String {
        let mut parts = vec![format!("user {}", self.name)];
        parts.extend(self.flags().into_iter().map(str::to_string));
        parts.extend(self.passwords.iter().map(|hash| format!("#{}", hash.hex())));
        if !self.all_keys && !self.keys.is_empty() {
            parts.push(self.describe_keys());
        } else if self.all_keys {
            parts.push("~*".to_string());
        }
        if self.all_channels {
            parts.push("&*".to_string());
        } else {
            parts.push("resetchannels".to_string());
            if !self.channels.is_empty() {
                parts.push(self.describe_channels());
            }
        }
        parts.push(self.describe_commands(catalog));
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::category::Categories;
    use crate::acl::rules::parse;

    fn catalog() -> Catalog {
        let of = Categories::of;
        Catalog::new(
            &[
                (
                    "get",
                    of(&[Category::Read, Category::String, Category::Fast]),
                ),
                (
                    "set",
                    of(&[Category::Write, Category::String, Category::Slow]),
                ),
                (
                    "flushall",
                    of(&[Category::Keyspace, Category::Write, Category::Dangerous]),
                ),
                ("client", of(&[Category::Slow])),
                ("ping", of(&[Category::Fast, Category::Connection])),
            ],
            &[
                (
                    3,
                    "kill",
                    of(&[Category::Admin, Category::Dangerous, Category::Slow]),
                ),
                (3, "id", of(&[Category::Slow, Category::Connection])),
            ],
        )
    }

    fn user(rules: &str) -> (User, Catalog) {
        let catalog = catalog();
        let mut user = User::new("u");
        for rule in rules.split_whitespace() {
            let parsed = parse(rule.as_bytes(), &catalog).expect(rule);
            user.apply(parsed, &catalog).expect(rule);
        }
        (user, catalog)
    }

    #[test]
    fn commands_follow_categories_and_subcommands() {
        let (app, catalog) = user("on >secret ~session:* +@all -@admin -@dangerous");
        let unit = |name: &str| catalog.lookup(name.as_bytes()).expect(name);
        assert!(app.may_run(unit("get")));
        assert!(app.may_run(unit("client|id")));
        assert!(app.may_run(unit("client")));
        assert!(!app.may_run(unit("client|kill")));
        assert!(!app.may_run(unit("flushall")));
        assert!(!app.unrestricted());
        assert_eq!(app.describe_commands(&catalog), "+@all -@dangerous");
        let (repl, catalog) = user("on >pw -@all +ping +client|kill");
        assert!(repl.may_run(catalog.lookup(b"ping").expect("ping")));
        // like Redis 7.0: a category that fits (client|kill is all of @admin here) is named
        assert_eq!(repl.describe_commands(&catalog), "-@all +@admin +ping");
        let (repl, catalog) = user("on >pw -@all +ping +set");
        assert_eq!(repl.describe_commands(&catalog), "-@all +set +ping");
        let (all, catalog) = user("on nopass ~* &* +@all");
        assert!(all.unrestricted());
        assert_eq!(all.describe(&catalog), "user u on nopass ~* &* +@all");
    }

    #[test]
    fn keys_and_channels() {
        let (app, _) = user("~session:* %R~ro:* &news.*");
        let rw = KeyAccess {
            read: true,
            write: true,
        };
        let read = KeyAccess {
            read: true,
            write: false,
        };
        assert_eq!(app.denied_key([&b"session:1"[..]], rw), None);
        assert_eq!(app.denied_key([&b"session:1"[..], b"other"], rw), Some(1));
        assert_eq!(app.denied_key([&b"ro:1"[..]], read), None);
        assert_eq!(app.denied_key([&b"ro:1"[..]], rw), Some(0));
        assert_eq!(app.denied_channel([&b"news.eu"[..]], false), None);
        assert_eq!(app.denied_channel([&b"sports"[..]], false), Some(0));
        assert_eq!(app.denied_channel([&b"news.*"[..]], true), None);
        assert_eq!(app.denied_channel([&b"news.e*"[..]], true), Some(0));
        assert_eq!(app.describe_keys(), "~session:* %R~ro:*");
        assert_eq!(app.describe_channels(), "&news.*");
    }

    #[test]
    fn passwords() {
        let (mut app, catalog) = user("on >a >b");
        assert!(app.accepts(b"a") && app.accepts(b"b") && !app.accepts(b"c"));
        let remove = parse(b"<a", &catalog).expect("rule");
        app.apply(remove.clone(), &catalog).expect("removed");
        assert_eq!(app.apply(remove, &catalog), Err(AclError::NoSuchPassword));
        assert!(!app.accepts(b"a"));
        app.apply(Rule::Off, &catalog).expect("off");
        assert!(!app.accepts(b"b"), "a disabled user logs in with nothing");
        let (mut open, catalog) = user("on nopass");
        assert!(open.accepts(b"anything"));
        open.apply(Rule::ResetPass, &catalog).expect("resetpass");
        assert!(!open.accepts(b""));
    }

    #[test]
    fn patterns_after_all_are_refused() {
        let (mut all, catalog) = user("allkeys allchannels");
        let key = parse(b"~a", &catalog).expect("rule");
        assert_eq!(all.apply(key, &catalog), Err(AclError::KeyAfterAllKeys));
        let channel = parse(b"&a", &catalog).expect("rule");
        assert_eq!(
            all.apply(channel, &catalog),
            Err(AclError::ChannelAfterAllChannels)
        );
    }
}

//! ACL users, compatible with Redis 7.0's: the rule language ([`rules`]), users and
//! their checks ([`user`]), the ACL file ([`file`]) and the registry of users a node
//! serves ([`Acl`]). Sans-IO: the command table hands in its [`Catalog`], callers
//! read files and sockets.
//!
//! Without an ACL file the only user is `default`, `on nopass ~* &* +@all` with
//! `--requirepass` as its password: exactly the node's behaviour before ACLs.

pub mod catalog;
pub mod category;
pub mod file;
pub mod password;
pub mod rules;
pub mod user;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

pub use self::catalog::{Catalog, Unit};
pub use self::category::{Categories, Category};
pub use self::user::{Denied, KeyAccess, User};
use crate::error::{AclError, AclFileError};

pub const DEFAULT_USER: &str = "default";

/// Who a connection is logged in as. `generation` is the registry's when `user`
/// was looked up: a changed registry makes the connection look its user up again,
/// so ACL SETUSER applies to connections already logged in, as in Redis.
#[derive(Clone, Debug)]
pub struct Login {
    pub user: Arc<User>,
    pub generation: u64,
    /// AUTH / HELLO AUTH succeeded, or the default user needs no password.
    pub authenticated: bool,
}

impl Login {
    /// The login of the node's internal callers (replication stream, HTTP, region
    /// events): they are not clients, the dispatcher checks no ACL for them.
    pub fn internal() -> Login {
        static INTERNAL: std::sync::OnceLock<Arc<User>> = std::sync::OnceLock::new();
        Login {
            user: INTERNAL
                .get_or_init(|| Arc::new(User::new("(internal)")))
                .clone(),
            generation: 0,
            authenticated: true,
        }
    }
}

/// The users of a node.
pub struct Acl {
    catalog: &'static Catalog,
    users: RwLock<BTreeMap<String, Arc<User>>>,
    /// Bumped by every change: connections compare it with their [`Login`]'s.
    generation: AtomicU64,
}

/// What ACL SETUSER could not apply: the rule and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetUserError {
    pub rule: String,
    pub error: AclError,
}

impl Acl {
    /// The registry of a node without ACL file: `default` alone, with `password`.
    pub fn new(catalog: &'static Catalog, password: Option<&[u8]>) -> Acl {
        let default = User::superuser(DEFAULT_USER, catalog, password.map(password::hash_password));
        Acl {
            catalog,
            users: RwLock::new(BTreeMap::from([(
                DEFAULT_USER.to_string(),
                Arc::new(default),
            )])),
            generation: AtomicU64::new(1),
        }
    }

    pub fn catalog(&self) -> &'static Catalog {
        self.catalog
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn user(&self, name: &str) -> Option<Arc<User>> {
        self.users.read().get(name).cloned()
    }

    /// How a new connection starts: as `default`, logged in when it needs no password.
    pub fn login_default(&self) -> Login {
        let generation = self.generation();
        let user = self.user(DEFAULT_USER).unwrap_or_else(|| {
            // the registry never drops `default`; a disabled stand-in if it did
            Arc::new(User::new(DEFAULT_USER))
        });
        Login {
            authenticated: user.enabled() && user.nopass(),
            user,
            generation,
        }
    }

    /// The user `name` logs in as with `password`; None for an unknown or
    /// disabled user or a wrong password (Redis answers all three alike).
    pub fn authenticate(&self, name: &[u8], password: &[u8]) -> Option<Login> {
        let generation = self.generation();
        let name = std::str::from_utf8(name).ok()?;
        let user = self.user(name)?;
        user.accepts(password).then_some(Login {
            user,
            generation,
            authenticated: true,
        })
    }

    /// Takes the current definition of a login's user when the registry changed
    /// since; false when the user no longer exists.
    #[must_use]
    pub fn refresh(&self, login: &mut Login) -> bool {
        let generation = self.generation();
        if login.generation == generation {
            return true;
        }
        let Some(user) = self.user(login.user.name()) else {
            return false;
        };
        login.user = user;
        login.generation = generation;
        true
    }

    /// ACL SETUSER: applies `rules` to `name` (created if new) all or nothing.
    pub fn set_user(&self, name: &str, rules: &[&[u8]]) -> Result<(), SetUserError> {
        let mut users = self.users.write();
        let mut user = users
            .get(name)
            .map_or_else(|| User::new(name), |user| User::clone(user));
        for rule in rules {
            rules::parse(rule, self.catalog)
                .and_then(|parsed| user.apply(parsed, self.catalog))
                .map_err(|error| SetUserError {
                    rule: String::from_utf8_lossy(rule).into_owned(),
                    error,
                })?;
        }
        users.insert(name.to_string(), Arc::new(user));
        drop(users);
        self.changed();
        Ok(())
    }

    /// ACL DELUSER: the names deleted (`default` cannot be: the caller refuses it).
    pub fn delete_users(&self, names: &[&str]) -> Vec<String> {
        let mut users = self.users.write();
        let deleted: Vec<String> = names
            .iter()
            .filter(|name| **name != DEFAULT_USER)
            .filter_map(|name| users.remove(*name).map(|_| name.to_string()))
            .collect();
        drop(users);
        if !deleted.is_empty() {
            self.changed();
        }
        deleted
    }

    /// Replaces every user with those of an ACL file's `text`; `default_password`
    /// (`--requirepass`) applies to a `default` the file does not define. Returns
    /// the names of users that no longer exist (their connections are closed).
    pub fn load(
        &self,
        origin: &str,
        text: &str,
        default_password: Option<&[u8]>,
    ) -> Result<Vec<String>, AclFileError> {
        let mut loaded = file::parse(origin, text, self.catalog)?;
        loaded.entry(DEFAULT_USER.to_string()).or_insert_with(|| {
            User::superuser(
                DEFAULT_USER,
                self.catalog,
                default_password.map(password::hash_password),
            )
        });
        let loaded: BTreeMap<String, Arc<User>> = loaded
            .into_iter()
            .map(|(name, user)| (name, Arc::new(user)))
            .collect();
        let mut users = self.users.write();
        let removed = users
            .keys()
            .filter(|name| !loaded.contains_key(*name))
            .cloned()
            .collect();
        *users = loaded;
        drop(users);
        self.changed();
        Ok(removed)
    }

    /// `requirepass` (CONFIG SET): the default user's only password, or nopass.
    pub fn set_default_password(&self, password: Option<&[u8]>) {
        let rules: Vec<Vec<u8>> = match password {
            Some(password) => {
                let mut rule = b">".to_vec();
                rule.extend_from_slice(password);
                vec![b"resetpass".to_vec(), rule]
            }
            None => vec![b"nopass".to_vec()],
        };
        let rules: Vec<&[u8]> = rules.iter().map(Vec::as_slice).collect();
        // these rules always parse and apply
        let _ = self.set_user(DEFAULT_USER, &rules);
    }

    /// Every user, sorted by name.
    pub fn users(&self) -> Vec<Arc<User>> {
        self.users.read().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> &'static Catalog {
        static CATALOG: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
        CATALOG.get_or_init(|| {
            Catalog::new(
                &[
                    ("get", Categories::of(&[Category::Read])),
                    ("flushall", Categories::of(&[Category::Dangerous])),
                ],
                &[],
            )
        })
    }

    #[test]
    fn default_user_follows_requirepass() {
        let acl = Acl::new(catalog(), None);
        assert!(acl.login_default().authenticated);
        assert!(acl.authenticate(b"default", b"anything").is_some());
        acl.set_default_password(Some(b"pw"));
        assert!(!acl.login_default().authenticated);
        assert!(acl.authenticate(b"default", b"pw").is_some());
        assert!(acl.authenticate(b"default", b"nope").is_none());
        assert!(acl.authenticate(b"nosuch", b"pw").is_none());
        let with_password = Acl::new(catalog(), Some(b"pw"));
        assert!(!with_password.login_default().authenticated);
    }

    #[test]
    fn logins_follow_changes_and_deletions() {
        let acl = Acl::new(catalog(), None);
        acl.set_user("app", &[b"on", b">pw", b"+get"]).expect("set");
        let mut login = acl.authenticate(b"app", b"pw").expect("login");
        let get = catalog().lookup(b"get").expect("get");
        assert!(login.user.may_run(get));
        acl.set_user("app", &[b"-get"]).expect("set");
        assert!(acl.refresh(&mut login), "still there");
        assert!(!login.user.may_run(get));
        assert_eq!(
            acl.set_user("app", &[b"+flushall", b"+nosuch"]),
            Err(SetUserError {
                rule: "+nosuch".into(),
                error: AclError::UnknownCommand
            })
        );
        let flushall = catalog().lookup(b"flushall").expect("flushall");
        assert!(
            !acl.user("app").expect("app").may_run(flushall),
            "all or nothing"
        );
        assert_eq!(acl.delete_users(&["app", "default", "x"]), ["app"]);
        assert!(!acl.refresh(&mut login));
    }

    #[test]
    fn load_replaces_users_and_keeps_a_default() {
        let acl = Acl::new(catalog(), None);
        acl.set_user("old", &[b"on"]).expect("set");
        let removed = acl
            .load("f", "user app on >pw ~* +get\n", Some(b"rp"))
            .expect("load");
        assert_eq!(removed, ["old"]);
        assert!(acl.authenticate(b"default", b"rp").is_some());
        assert!(acl.authenticate(b"app", b"pw").is_some());
        assert!(acl.load("f", "user broken +nosuch\n", None).is_err());
        assert!(acl.user("app").is_some(), "a bad file changes nothing");
    }
}

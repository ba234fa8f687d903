//! The ACL rule language of Redis (ACL SETUSER arguments, ACL file lines), parsed
//! into [`Rule`]s without touching any user. Cleartext passwords are hashed here,
//! so nothing past the parser holds them.

use super::catalog::{Catalog, Unit};
use super::category::Category;
use super::password::{Hash, hash_password, parse_hash};
use crate::error::AclError;

/// One parsed rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    On,
    Off,
    /// `>password` or `#hash`.
    AddPassword(Hash),
    /// `<password` or `!hash`.
    RemovePassword(Hash),
    NoPass,
    ResetPass,
    /// `~pattern` (read and write) or `%R~` / `%W~` / `%RW~pattern`.
    Keys {
        pattern: Vec<u8>,
        read: bool,
        write: bool,
    },
    /// `allkeys`, `~*`, `%RW~*`.
    AllKeys,
    ResetKeys,
    /// `&pattern`.
    Channels(Vec<u8>),
    /// `allchannels`, `&*`.
    AllChannels,
    ResetChannels,
    /// `+command` / `-command` (`+client|kill`).
    Command {
        unit: Unit,
        allow: bool,
    },
    /// `+@category` / `-@category`.
    Category {
        category: Category,
        allow: bool,
    },
    /// `allcommands`, `+@all`.
    AllCommands,
    /// `nocommands`, `-@all`.
    NoCommands,
    /// `reset`: `resetpass resetkeys resetchannels off -@all`.
    Reset,
    /// `clearselectors`: selectors are not supported, so there are none to clear.
    ClearSelectors,
}

/// Parses one rule like Redis's ACLSetUser (keywords are case-insensitive).
pub fn parse(rule: &[u8], catalog: &Catalog) -> Result<Rule, AclError> {
    let keyword = |word: &str| rule.eq_ignore_ascii_case(word.as_bytes());
    let simple = [
        ("on", Rule::On),
        ("off", Rule::Off),
        ("nopass", Rule::NoPass),
        ("resetpass", Rule::ResetPass),
        ("allkeys", Rule::AllKeys),
        ("resetkeys", Rule::ResetKeys),
        ("allchannels", Rule::AllChannels),
        ("resetchannels", Rule::ResetChannels),
        ("allcommands", Rule::AllCommands),
        ("nocommands", Rule::NoCommands),
        ("reset", Rule::Reset),
        ("clearselectors", Rule::ClearSelectors),
    ];
    if let Some((_, parsed)) = simple.into_iter().find(|(word, _)| keyword(word)) {
        return Ok(parsed);
    }
    let Some((&first, rest)) = rule.split_first() else {
        return Err(AclError::Syntax);
    };
    match first {
        b'>' => Ok(Rule::AddPassword(hash_password(rest))),
        b'<' => Ok(Rule::RemovePassword(hash_password(rest))),
        b'#' => Ok(Rule::AddPassword(parse_hash(rest)?)),
        b'!' => Ok(Rule::RemovePassword(parse_hash(rest)?)),
        b'~' => Ok(keys(rest, true, true)),
        b'%' => {
            let (mut read, mut write) = (false, false);
            let mut offset = 0;
            // like Redis: `%R` without `~` is an (empty) pattern too
            while offset < rest.len() {
                match rest[offset] {
                    b'R' | b'r' if !read => read = true,
                    b'W' | b'w' if !write => write = true,
                    b'~' => {
                        offset += 1;
                        break;
                    }
                    _ => return Err(AclError::Syntax),
                }
                offset += 1;
            }
            if !read && !write {
                return Err(AclError::Syntax);
            }
            Ok(keys(&rest[offset..], read, write))
        }
        b'&' if rest == b"*" => Ok(Rule::AllChannels),
        b'&' => Ok(Rule::Channels(rest.to_vec())),
        b'+' | b'-' => {
            let allow = first == b'+';
            if let Some(category) = rest.strip_prefix(b"@") {
                if category.eq_ignore_ascii_case(b"all") {
                    return Ok(if allow {
                        Rule::AllCommands
                    } else {
                        Rule::NoCommands
                    });
                }
                let category = Category::parse(category).ok_or(AclError::UnknownCommand)?;
                return Ok(Rule::Category { category, allow });
            }
            let unit = catalog.lookup(rest).ok_or(AclError::UnknownCommand)?;
            Ok(Rule::Command { unit, allow })
        }
        _ => Err(AclError::Syntax),
    }
}

fn keys(pattern: &[u8], read: bool, write: bool) -> Rule {
    if pattern == b"*" && read && write {
        Rule::AllKeys
    } else {
        Rule::Keys {
            pattern: pattern.to_vec(),
            read,
            write,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::category::Categories;

    fn catalog() -> Catalog {
        Catalog::new(
            &[
                ("get", Categories::of(&[Category::Read])),
                ("client", Categories::default()),
            ],
            &[(1, "kill", Categories::of(&[Category::Admin]))],
        )
    }

    #[test]
    fn keywords_and_prefixes() {
        let catalog = catalog();
        let parse = |rule: &str| parse(rule.as_bytes(), &catalog);
        assert_eq!(parse("ON"), Ok(Rule::On));
        assert_eq!(parse("allKeys"), Ok(Rule::AllKeys));
        assert_eq!(parse("~*"), Ok(Rule::AllKeys));
        assert_eq!(parse("%RW~*"), Ok(Rule::AllKeys));
        assert_eq!(
            parse("%R~*"),
            Ok(Rule::Keys {
                pattern: b"*".to_vec(),
                read: true,
                write: false
            })
        );
        assert_eq!(
            parse("%R"),
            Ok(Rule::Keys {
                pattern: Vec::new(),
                read: true,
                write: false
            })
        );
        assert_eq!(parse("&*"), Ok(Rule::AllChannels));
        assert_eq!(parse("&news:*"), Ok(Rule::Channels(b"news:*".to_vec())));
        assert_eq!(parse("+@ALL"), Ok(Rule::AllCommands));
        assert_eq!(parse("-@all"), Ok(Rule::NoCommands));
        assert_eq!(
            parse("-@admin"),
            Ok(Rule::Category {
                category: Category::Admin,
                allow: false
            })
        );
        assert!(matches!(
            parse("+CLIENT|KILL"),
            Ok(Rule::Command { allow: true, .. })
        ));
        assert_eq!(
            parse(">secret"),
            Ok(Rule::AddPassword(hash_password(b"secret")))
        );
    }

    #[test]
    fn malformed_rules_get_redis_errors() {
        let catalog = catalog();
        let parse = |rule: &str| parse(rule.as_bytes(), &catalog);
        assert_eq!(parse("foo"), Err(AclError::Syntax));
        assert_eq!(parse(""), Err(AclError::Syntax));
        assert_eq!(parse("+nosuch"), Err(AclError::UnknownCommand));
        assert_eq!(parse("+@nosuch"), Err(AclError::UnknownCommand));
        assert_eq!(parse("-client|nosuch"), Err(AclError::UnknownCommand));
        assert_eq!(parse("#abc"), Err(AclError::BadHash));
        assert_eq!(parse("!abc"), Err(AclError::BadHash));
        assert_eq!(parse("%X~a"), Err(AclError::Syntax));
        assert_eq!(parse("%~a"), Err(AclError::Syntax));
        assert_eq!(parse("%RR~a"), Err(AclError::Syntax));
        assert_eq!(parse("(+get ~*)"), Err(AclError::Syntax));
    }
}

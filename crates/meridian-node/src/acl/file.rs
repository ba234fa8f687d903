//! The ACL file (Redis aclfile format): one `user <name> <rules...>` per line.
//! Parsed from its text; reading the file is the caller's business.
//!
//! Unlike Redis 7.0, blank lines and lines starting with `#` are skipped, so a
//! mounted file can explain itself.

use std::collections::BTreeMap;

use super::catalog::Catalog;
use super::rules;
use super::user::User;
use crate::error::AclFileError;

/// Whether `name` can be a user name (Redis refuses spaces and NUL).
pub fn valid_username(name: &[u8]) -> bool {
    !name.is_empty()
        && !name
            .iter()
            .any(|&byte| byte.is_ascii_whitespace() || byte == 0)
}

/// The users `text` defines; `origin` names the file in errors, which list every
/// bad line as Redis's ACL LOAD does (`<file>:<line>: <error>. `).
pub fn parse(
    origin: &str,
    text: &str,
    catalog: &Catalog,
) -> Result<BTreeMap<String, User>, AclFileError> {
    let mut users = BTreeMap::new();
    let mut errors = String::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let (Some(&"user"), Some(name)) = (words.first(), words.get(1)) else {
            errors.push_str(&format!(
                "{origin}:{number} should start with user keyword followed by the username. "
            ));
            continue;
        };
        if !valid_username(name.as_bytes()) {
            errors.push_str(&format!(
                "{origin}:{number}: username '{name}' contains invalid characters. "
            ));
            continue;
        }
        if users.contains_key(*name) {
            errors.push_str(&format!(
                "WARNING: Duplicate user '{name}' found on line {number}. "
            ));
            continue;
        }
        let mut user = User::new(name);
        let mut failed = false;
        for rule in &words[2..] {
            let applied = rules::parse(rule.as_bytes(), catalog)
                .and_then(|parsed| user.apply(parsed, catalog));
            if let Err(error) = applied {
                errors.push_str(&format!(
                    "{origin}:{number}: Error in applying operation '{rule}': {error}. "
                ));
                failed = true;
                break;
            }
        }
        if !failed {
            users.insert(name.to_string(), user);
        }
    }
    if errors.is_empty() {
        Ok(users)
    } else {
        errors.push_str(
            "WARNING: ACL errors detected, no change to the previously active ACL rules was performed",
        );
        Err(AclFileError(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::category::{Categories, Category};

    fn catalog() -> Catalog {
        Catalog::new(&[("get", Categories::of(&[Category::Read]))], &[])
    }

    #[test]
    fn users_and_errors_with_line_numbers() {
        let catalog = catalog();
        let users = parse(
            "users.acl",
            "# app users\n\nuser app on >secret ~session:* +get\n  user  ro on nopass  \n",
            &catalog,
        )
        .expect("valid file");
        assert_eq!(users.keys().collect::<Vec<_>>(), ["app", "ro"]);
        assert!(users["app"].accepts(b"secret"));
        let error = parse(
            "/etc/users.acl",
            "user a on\nfoo bar\nuser b +nosuch\nuser a off\nuser\n",
            &catalog,
        )
        .expect_err("bad lines");
        assert_eq!(
            error.0,
            "/etc/users.acl:2 should start with user keyword followed by the username. \
             /etc/users.acl:3: Error in applying operation '+nosuch': Unknown command or category name in ACL. \
             WARNING: Duplicate user 'a' found on line 4. \
             /etc/users.acl:5 should start with user keyword followed by the username. \
             WARNING: ACL errors detected, no change to the previously active ACL rules was performed"
        );
    }
}

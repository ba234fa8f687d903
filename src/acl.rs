//! The ACL users every node of a cluster loads (`--acl-file`, from a Secret the operator
//! keeps): `default` for applications with the cluster password, the operator's own
//! user (the only one allowed the admin surface), the users replication and region
//! links log in as, and the application users of `spec.auth.users`. Pure: the
//! passwords come in, the file text goes out (passwords only as SHA-256 digests).

use meridian_api::AclUserSpec;

/// The operator's admin connections log in as this user (every command, every key).
pub const OPERATOR_USER: &str = "meridian-operator";
/// Replicas log in to their primary as this user (PSYNC and REPLCONF only).
pub const REPLICATION_USER: &str = "meridian-replication";
/// Region links and region fan-out log in as this user, with the cluster password.
pub const LINK_USER: &str = "meridian-link";
/// The file's name in the mounted Secret, and where the Secret is mounted.
pub const FILE_NAME: &str = "users.acl";
pub const MOUNT_PATH: &str = "/etc/meridian/acl";

/// What no application user may run, whatever its rules say: every `@admin` command
/// (topology, replication, configuration, users, other clients), and the `@dangerous`
/// commands that empty or move data.
const ADMIN_SURFACE: &str = "-@admin -flushall -flushdb -migrate";

/// The passwords the file is made of.
pub struct Credentials<'a> {
    /// The cluster password: `default`'s, and the region links'.
    pub cluster: &'a str,
    pub operator: &'a str,
    pub replication: &'a str,
    /// `spec.auth.users` with each user's password.
    pub users: Vec<(&'a AclUserSpec, String)>,
}

/// The ACL file (Redis aclfile format).
pub fn render(credentials: &Credentials<'_>) -> String {
    let mut file = String::from(
        "# Written by the Meridian operator from the CacheCluster's spec.auth; edits are replaced.\n",
    );
    let mut user = |name: &str, password: &str, rules: &str| {
        file.push_str(&format!(
            "user {name} on #{} {rules}\n",
            sha256_hex(password)
        ));
    };
    user(
        "default",
        credentials.cluster,
        &format!("~* &* +@all {ADMIN_SURFACE}"),
    );
    user(OPERATOR_USER, credentials.operator, "~* &* +@all");
    user(
        REPLICATION_USER,
        credentials.replication,
        "-@all +psync +replconf +ping +sync",
    );
    user(LINK_USER, credentials.cluster, "~* -@all +invalidate +ping");
    for (spec, password) in &credentials.users {
        let keys = patterns('~', &spec.keys);
        let channels = patterns('&', &spec.channels);
        let commands = if spec.commands.is_empty() {
            "+@all".to_string()
        } else {
            spec.commands.join(" ")
        };
        user(
            &spec.name,
            password,
            &format!("resetkeys {keys} resetchannels {channels} -@all {commands} {ADMIN_SURFACE}"),
        );
    }
    file
}

/// `~k1 ~k2` (or `&...`) for `patterns`, every key or channel when there are none.
fn patterns(sigil: char, patterns: &[String]) -> String {
    if patterns.is_empty() {
        return format!("{sigil}*");
    }
    patterns
        .iter()
        .map(|pattern| format!("{sigil}{pattern}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn sha256_hex(password: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, password.as_bytes());
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_api::SecretKeyRef;

    fn app(commands: &[&str], keys: &[&str]) -> AclUserSpec {
        AclUserSpec {
            name: "checkout".into(),
            password_secret_ref: SecretKeyRef::default(),
            commands: commands.iter().map(|rule| rule.to_string()).collect(),
            keys: keys.iter().map(|pattern| pattern.to_string()).collect(),
            channels: Vec::new(),
        }
    }

    #[test]
    fn the_file_keeps_applications_off_the_admin_surface() {
        let reader = app(&["+@read"], &["cart:*", "price:*"]);
        let file = render(&Credentials {
            cluster: "cluster-pw",
            operator: "operator-pw",
            replication: "replication-pw",
            users: vec![(&reader, "app-pw".to_string())],
        });
        let lines: Vec<&str> = file
            .lines()
            .filter(|line| line.starts_with("user "))
            .collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].starts_with("user default on #"));
        assert!(lines[0].ends_with("~* &* +@all -@admin -flushall -flushdb -migrate"));
        assert!(lines[1].ends_with("~* &* +@all"), "{}", lines[1]);
        assert!(lines[1].starts_with("user meridian-operator on #"));
        assert!(lines[2].ends_with("-@all +psync +replconf +ping +sync"));
        assert!(lines[4].ends_with(
            "resetkeys ~cart:* ~price:* resetchannels &* -@all +@read -@admin -flushall -flushdb -migrate"
        ));
        assert!(!file.contains("-pw"), "no password in clear: {file}");
        // SHA-256 of "cluster-pw", as the node compares it
        assert!(lines[0].contains(&format!("#{}", sha256_hex("cluster-pw"))));
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // the link user shares the cluster password (peers send it in LINK.HELLO)
        assert!(lines[3].contains(&sha256_hex("cluster-pw")));
    }

    #[test]
    fn an_application_user_without_rules_gets_everything_but_the_admin_surface() {
        let user = app(&[], &[]);
        let file = render(&Credentials {
            cluster: "a",
            operator: "b",
            replication: "c",
            users: vec![(&user, "d".to_string())],
        });
        assert!(file.lines().last().unwrap().ends_with(
            "resetkeys ~* resetchannels &* -@all +@all -@admin -flushall -flushdb -migrate"
        ));
    }
}

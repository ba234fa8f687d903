//! Redis's ACL command categories (`@read`, `@admin`, ...) and sets of them.

/// One ACL category, in the order Redis lists them (ACL CAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Category {
    Keyspace,
    Read,
    Write,
    Set,
    Sortedset,
    List,
    Hash,
    String,
    Bitmap,
    Hyperloglog,
    Geo,
    Stream,
    Pubsub,
    Admin,
    Fast,
    Slow,
    Blocking,
    Dangerous,
    Connection,
    Transaction,
    Scripting,
}

impl Category {
    /// Every category, in ACL CAT order (also the order GETUSER's compaction tries them).
    pub const ALL: [Category; 21] = [
        Category::Keyspace,
        Category::Read,
        Category::Write,
        Category::Set,
        Category::Sortedset,
        Category::List,
        Category::Hash,
        Category::String,
        Category::Bitmap,
        Category::Hyperloglog,
        Category::Geo,
        Category::Stream,
        Category::Pubsub,
        Category::Admin,
        Category::Fast,
        Category::Slow,
        Category::Blocking,
        Category::Dangerous,
        Category::Connection,
        Category::Transaction,
        Category::Scripting,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Category::Keyspace => "keyspace",
            Category::Read => "read",
            Category::Write => "write",
            Category::Set => "set",
            Category::Sortedset => "sortedset",
            Category::List => "list",
            Category::Hash => "hash",
            Category::String => "string",
            Category::Bitmap => "bitmap",
            Category::Hyperloglog => "hyperloglog",
            Category::Geo => "geo",
            Category::Stream => "stream",
            Category::Pubsub => "pubsub",
            Category::Admin => "admin",
            Category::Fast => "fast",
            Category::Slow => "slow",
            Category::Blocking => "blocking",
            Category::Dangerous => "dangerous",
            Category::Connection => "connection",
            Category::Transaction => "transaction",
            Category::Scripting => "scripting",
        }
    }

    /// The category of a name, case-insensitively like Redis (`@all` is not one).
    pub fn parse(name: &[u8]) -> Option<Category> {
        Category::ALL
            .into_iter()
            .find(|category| category.name().as_bytes().eq_ignore_ascii_case(name))
    }
}

/// A set of categories: the ones a command belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Categories(u32);

impl Categories {
    pub const fn of(list: &[Category]) -> Categories {
        let mut bits = 0u32;
        let mut index = 0;
        while index < list.len() {
            bits |= 1 << list[index] as u32;
            index += 1;
        }
        Categories(bits)
    }

    pub const fn contains(self, category: Category) -> bool {
        self.0 & (1 << category as u32) != 0
    }

    pub const fn with(self, other: Categories) -> Categories {
        Categories(self.0 | other.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Category> {
        Category::ALL
            .into_iter()
            .filter(move |category| self.contains(*category))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_case_insensitively() {
        for category in Category::ALL {
            assert_eq!(Category::parse(category.name().as_bytes()), Some(category));
            let upper = category.name().to_ascii_uppercase();
            assert_eq!(Category::parse(upper.as_bytes()), Some(category));
        }
        assert_eq!(Category::parse(b"all"), None);
        assert_eq!(Category::parse(b""), None);
    }

    #[test]
    fn sets_hold_their_members() {
        let set = Categories::of(&[Category::Admin, Category::Dangerous]);
        assert!(set.contains(Category::Admin) && set.contains(Category::Dangerous));
        assert!(!set.contains(Category::Read));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            vec![Category::Admin, Category::Dangerous]
        );
    }
}

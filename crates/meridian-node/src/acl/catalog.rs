//! What ACL permissions are about: every command of the node and every subcommand
//! of a container command (`client|kill`), each a [`Unit`] with its categories.
//! The catalog is handed in by the command table, so this module knows no command.

use std::collections::HashMap;

use super::category::{Categories, Category};

/// Most units a [`Bitset`] holds: commands plus container subcommands.
pub const MAX_UNITS: usize = 512;

/// A command or container subcommand, by its position in the [`Catalog`]. Top-level
/// commands come first, in the order they were added (the command table's order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Unit(u16);

impl Unit {
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A set of units: the commands a user may run. One bit test per command.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bitset([u64; MAX_UNITS / 64]);

impl Bitset {
    pub fn contains(&self, unit: Unit) -> bool {
        let index = unit.index();
        self.0[index / 64] & (1 << (index % 64)) != 0
    }

    pub fn insert(&mut self, unit: Unit) {
        let index = unit.index();
        self.0[index / 64] |= 1 << (index % 64);
    }

    pub fn remove(&mut self, unit: Unit) {
        let index = unit.index();
        self.0[index / 64] &= !(1 << (index % 64));
    }

    pub fn set(&mut self, unit: Unit, allowed: bool) {
        if allowed {
            self.insert(unit);
        } else {
            self.remove(unit);
        }
    }
}

struct UnitInfo {
    /// `get`, or `client|kill` for a subcommand.
    name: String,
    categories: Categories,
    /// Subcommands of a container command (positions in the catalog).
    children: std::ops::Range<u16>,
    is_subcommand: bool,
}

/// Every unit the ACL knows, built once from the command table.
pub struct Catalog {
    units: Vec<UnitInfo>,
    by_name: HashMap<String, Unit>,
    /// Every unit: what `+@all` grants.
    all: Bitset,
}

impl Catalog {
    /// `commands` in table order (their positions become their units), then the
    /// subcommands as (position of their container in `commands`, name, categories).
    /// Units past [`MAX_UNITS`] are left out (a unit test keeps the table below it).
    pub fn new(
        commands: &[(&str, Categories)],
        subcommands: &[(usize, &str, Categories)],
    ) -> Catalog {
        let mut units: Vec<UnitInfo> = commands
            .iter()
            .map(|(name, categories)| UnitInfo {
                name: name.to_ascii_lowercase(),
                categories: *categories,
                children: 0..0,
                is_subcommand: false,
            })
            .collect();
        for (parent, _) in commands.iter().enumerate() {
            let start = units.len();
            for (_, name, categories) in subcommands.iter().filter(|sub| sub.0 == parent) {
                units.push(UnitInfo {
                    name: format!("{}|{}", units[parent].name, name.to_ascii_lowercase()),
                    categories: *categories,
                    children: 0..0,
                    is_subcommand: true,
                });
            }
            let end = units.len().min(MAX_UNITS);
            units[parent].children = start.min(end) as u16..end as u16;
        }
        units.truncate(MAX_UNITS);
        let by_name = units
            .iter()
            .enumerate()
            .map(|(index, unit)| (unit.name.clone(), Unit(index as u16)))
            .collect();
        let mut all = Bitset::default();
        for index in 0..units.len() {
            all.insert(Unit(index as u16));
        }
        Catalog {
            units,
            by_name,
            all,
        }
    }

    pub fn len(&self) -> usize {
        self.units.len()
    }

    pub fn is_empty(&self) -> bool {
        self.units.is_empty()
    }

    pub fn all(&self) -> Bitset {
        self.all
    }

    /// The unit of top-level command number `position` (its table position).
    pub fn command(&self, position: usize) -> Option<Unit> {
        (position < self.units.len() && !self.units[position].is_subcommand)
            .then_some(Unit(position as u16))
    }

    /// The unit a concrete call runs as: the named subcommand of a container
    /// (case-insensitively), else the command itself.
    pub fn resolve(&self, command: Unit, first_arg: Option<&[u8]>) -> Unit {
        let children = &self.units[command.index()].children;
        if children.is_empty() {
            return command;
        }
        let Some(sub) = first_arg else {
            return command;
        };
        let prefix = self.units[command.index()].name.len() + 1;
        children
            .clone()
            .find(|&child| {
                self.units[child as usize].name.as_bytes()[prefix..].eq_ignore_ascii_case(sub)
            })
            .map_or(command, Unit)
    }

    /// A unit by its full name (`get`, `client|kill`), case-insensitively.
    pub fn lookup(&self, name: &[u8]) -> Option<Unit> {
        let name = std::str::from_utf8(name).ok()?.to_ascii_lowercase();
        self.by_name.get(&name).copied()
    }

    pub fn name(&self, unit: Unit) -> &str {
        &self.units[unit.index()].name
    }

    pub fn categories(&self, unit: Unit) -> Categories {
        self.units[unit.index()].categories
    }

    /// The unit and, for a container, its subcommands (what `+client` grants).
    pub fn with_children(&self, unit: Unit) -> impl Iterator<Item = Unit> + '_ {
        std::iter::once(unit).chain(self.units[unit.index()].children.clone().map(Unit))
    }

    /// Every unit, each top-level command followed by its subcommands: the order
    /// GETUSER names single commands in.
    pub fn in_order(&self) -> impl Iterator<Item = Unit> + '_ {
        (0..self.units.len())
            .filter(|&index| !self.units[index].is_subcommand)
            .flat_map(|index| self.with_children(Unit(index as u16)))
    }

    /// The units of `category`.
    pub fn of_category(&self, category: Category) -> impl Iterator<Item = Unit> + '_ {
        (0..self.units.len())
            .filter(move |&index| self.units[index].categories.contains(category))
            .map(|index| Unit(index as u16))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let read = Categories::of(&[Category::Read]);
        let admin = Categories::of(&[Category::Admin, Category::Dangerous]);
        Catalog::new(
            &[("get", read), ("CLIENT", Categories::default())],
            &[(1, "kill", admin), (1, "id", Categories::default())],
        )
    }

    #[test]
    fn subcommands_resolve_by_name() {
        let catalog = catalog();
        let client = catalog.command(1).expect("client");
        let kill = catalog.resolve(client, Some(b"KiLL"));
        assert_eq!(catalog.name(kill), "client|kill");
        assert_eq!(catalog.resolve(client, Some(b"nosuch")), client);
        assert_eq!(catalog.resolve(client, None), client);
        let get = catalog.command(0).expect("get");
        assert_eq!(catalog.resolve(get, Some(b"kill")), get);
        assert_eq!(catalog.lookup(b"CLIENT|Kill"), Some(kill));
        assert_eq!(catalog.command(2), None, "a subcommand is no command");
        let order: Vec<&str> = catalog.in_order().map(|unit| catalog.name(unit)).collect();
        assert_eq!(order, ["get", "client", "client|kill", "client|id"]);
        assert_eq!(
            catalog
                .of_category(Category::Admin)
                .map(|unit| catalog.name(unit))
                .collect::<Vec<_>>(),
            ["client|kill"]
        );
    }

    #[test]
    fn bitsets_hold_their_units() {
        let catalog = catalog();
        let mut set = Bitset::default();
        let unit = catalog.lookup(b"client|id").expect("unit");
        assert!(!set.contains(unit));
        set.insert(unit);
        assert!(set.contains(unit));
        set.set(unit, false);
        assert_eq!(set, Bitset::default());
        assert_eq!(catalog.len(), 4);
    }
}

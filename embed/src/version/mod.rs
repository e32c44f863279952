//! Which versions of the `surfaces:bot` contract a guest was built for, and
//! whether this host runs them. A guest built for another is refused with a
//! message that says so ("built for X; this host supports A to B"), before
//! the linker's own ("missing import ...") would.

/// `From` for a record whose fields did not change between the versions
/// (each field converted with `Into`).
macro_rules! same_record {
    ($fm:ident::$ft:ident => $tm:ident::$tt:ident { $($f:ident),* $(,)? }) => {
        impl From<$fm::$ft> for $tm::$tt {
            fn from(v: $fm::$ft) -> Self {
                $tm::$tt { $($f: v.$f.into()),* }
            }
        }
    };
}

/// `From` for an enum whose cases did not change.
macro_rules! same_enum {
    ($fm:ident::$ft:ident => $tm:ident::$tt:ident { $($c:ident),* $(,)? }) => {
        impl From<$fm::$ft> for $tm::$tt {
            fn from(v: $fm::$ft) -> Self {
                match v {
                    $($fm::$ft::$c => $tm::$tt::$c),*
                }
            }
        }
    };
}

/// `From` for the agent error kinds of a contract before 0.4.0: its
/// `attachment` error was theirs `bad-request`.
macro_rules! error_kind_before_0_4 {
    ($fm:ident::$ft:ident => $tm:ident::$tt:ident) => {
        impl From<$fm::$ft> for $tm::$tt {
            fn from(k: $fm::$ft) -> Self {
                match k {
                    $fm::$ft::Busy => $tm::$tt::Busy,
                    $fm::$ft::Disconnected => $tm::$tt::Disconnected,
                    $fm::$ft::Protocol => $tm::$tt::Protocol,
                    $fm::$ft::ContextOverflow => $tm::$tt::ContextOverflow,
                    $fm::$ft::BadRequest | $fm::$ft::Attachment => $tm::$tt::BadRequest,
                    $fm::$ft::Internal => $tm::$tt::Internal,
                    $fm::$ft::TooLong => $tm::$tt::TooLong,
                }
            }
        }
    };
}

mod bots;
mod v0_1_0;
mod v0_2_0;
mod v0_3_0;

pub use bots::Contract;
pub(crate) use bots::{Instance, Pre, add_to_linker};

use std::collections::BTreeSet;

use semver::{Version, VersionReq};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The contract's WIT package.
pub const PACKAGE: &str = "surfaces:bot";

/// The contract versions this host links, oldest first (see
/// [`Contract::ALL`]). A guest built for a later patch release of one
/// (0.1.3 for 0.1.0) links too, as long as it imports nothing the host
/// lacks.
pub const SUPPORTED: &[&str] = &["0.1.0", "0.2.0", "0.3.0", "0.4.0"];

/// The contract versions a compiled guest imports (`surfaces:bot/…@X`).
pub fn imported(component: &Component, engine: &Engine) -> BTreeSet<String> {
    let prefix = format!("{PACKAGE}/");
    component
        .component_type()
        .imports(engine)
        .filter_map(|(name, _)| {
            let (_, version) = name.strip_prefix(&prefix)?.split_once('@')?;
            Some(version.to_string())
        })
        .collect()
}

/// Which contract a guest that imports `versions` runs as (a guest that
/// imports none of it runs as the newest), or why this host cannot run it,
/// in words an operator can act on.
pub fn check(versions: &BTreeSet<String>) -> Result<Contract, String> {
    let built_for = || {
        versions
            .iter()
            .map(|v| format!("{PACKAGE}@{v}"))
            .collect::<Vec<_>>()
            .join(" and ")
    };
    if versions.len() > 1 {
        return Err(format!(
            "built for more than one version of the contract ({}); {}",
            built_for(),
            supported()
        ));
    }
    let Some(v) = versions.first() else {
        return Ok(Contract::newest());
    };
    let Ok(v) = Version::parse(v) else {
        return Err(format!("built for {}; {}", built_for(), supported()));
    };
    Contract::ALL
        .iter()
        .copied()
        .find(|c| VersionReq::parse(&format!("^{}", c.version())).is_ok_and(|req| req.matches(&v)))
        .ok_or_else(|| format!("built for {}; {}", built_for(), supported()))
}

/// "this host supports surfaces:bot 0.1.0 to 0.4.0" (or the one version).
fn supported() -> String {
    match (SUPPORTED.first(), SUPPORTED.last()) {
        (Some(first), Some(last)) if first != last => {
            format!("this host supports {PACKAGE} {first} to {last}")
        }
        (Some(only), _) => format!("this host supports {PACKAGE} {only}"),
        _ => format!("this host supports no version of {PACKAGE}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(vs: &[&str]) -> BTreeSet<String> {
        vs.iter().map(|v| v.to_string()).collect()
    }

    #[test]
    fn the_supported_versions_and_their_patch_releases_run() {
        assert_eq!(check(&set(&["0.1.0"])), Ok(Contract::V0_1_0));
        assert_eq!(check(&set(&["0.1.4"])), Ok(Contract::V0_1_0));
        assert_eq!(check(&set(&["0.2.0"])), Ok(Contract::V0_2_0));
        assert_eq!(check(&set(&["0.2.7"])), Ok(Contract::V0_2_0));
        assert_eq!(check(&set(&["0.3.0"])), Ok(Contract::V0_3_0));
        assert_eq!(check(&set(&["0.4.0"])), Ok(Contract::V0_4_0));
        assert_eq!(check(&set(&[])), Ok(Contract::newest()));
    }

    #[test]
    fn supported_names_every_contract_in_order() {
        let all: Vec<_> = Contract::ALL.iter().map(|c| c.version()).collect();
        assert_eq!(all, SUPPORTED);
        assert_eq!(Contract::ALL.last(), Some(&Contract::newest()));
    }

    #[test]
    fn another_minor_or_major_is_refused_in_words() {
        assert_eq!(
            check(&set(&["0.5.0"])),
            Err(
                "built for surfaces:bot@0.5.0; this host supports surfaces:bot 0.1.0 to 0.4.0"
                    .into()
            )
        );
        assert!(check(&set(&["0.0.9"])).is_err());
        assert!(check(&set(&["1.0.0"])).is_err());
        assert!(check(&set(&["not-a-version"])).is_err());
        assert!(check(&set(&["0.1.0", "0.2.0"])).is_err());
    }
}

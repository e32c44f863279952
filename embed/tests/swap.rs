//! Swapping guest generations: validated before the switch, refused
//! without harm, cached compiles.

mod common;
use common::{dm, info};

use surfaces_embed::{
    BoxedKv, Budget, CacheUse, Effect, Embedding, Entropy, Guest, GuestError, MatrixEffect,
    MemoryKv, Sandbox,
};

fn embedding() -> Embedding {
    Embedding::new(Sandbox {
        budget: Budget::Fuel { units: 500_000_000 },
        memory_bytes: 64 << 20,
        entropy: Entropy::Os,
    })
    .expect("engine")
}

fn sends(out: &surfaces_embed::Output) -> usize {
    out.effects
        .iter()
        .filter(|e| matches!(e, Effect::Matrix(MatrixEffect::Send { .. })))
        .count()
}

#[test]
fn a_swap_keeps_the_store_and_the_new_generation_serves() {
    let e = embedding();
    let shipped = e.compile(surfaces_artifacts::GUEST_WASM).expect("compiles");
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&shipped, info(&[]), &mut kv, 0).expect("starts");
    g.handle(&dm("!help"), &mut kv, 0).expect("handled");
    let users = kv.keys("user/").expect("kv");
    assert_eq!(users, vec!["user/@alice:test"]);
    g.swap(&shipped, &mut kv, 1).expect("swapped");
    // Alice is known to the new generation: no second greeting.
    let out = g.handle(&dm("!usage"), &mut kv, 2).expect("handled");
    assert_eq!(sends(&out), 1, "one answer, no greeting");
}

#[test]
fn a_guest_that_refuses_to_start_is_not_swapped_in() {
    let e = embedding();
    let chaos = e.compile(surfaces_artifacts::CHAOS_WASM).expect("compiles");
    let shipped = e.compile(surfaces_artifacts::GUEST_WASM).expect("compiles");
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    // The shipped guest rejects this value; the chaos guest ignores it.
    let (mut g, _) =
        Guest::start(&chaos, info(&[("edit_interval_ms", "soon")]), &mut kv, 0).expect("starts");
    let err = g.swap(&shipped, &mut kv, 1).unwrap_err();
    assert!(
        matches!(err, GuestError::Rejected(ref r) if r.contains("edit_interval_ms")),
        "{err}"
    );
    assert_eq!(g.info().name, "chaos", "the old generation keeps serving");
    g.handle(&dm("count"), &mut kv, 2).expect("still serving");
    assert!(
        kv.keys("").expect("kv").is_empty(),
        "the refused init wrote nothing"
    );
}

#[test]
fn a_component_without_handle_is_refused_at_compile() {
    let err = embedding()
        .compile(surfaces_artifacts::BROKEN_WASM)
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("not a valid surfaces guest"), "{msg}");
}

#[test]
fn compiled_guests_are_cached_by_content_and_engine() {
    let e = embedding();
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, first) = e
        .compile_cached(surfaces_artifacts::GUEST_WASM, dir.path())
        .expect("compiles");
    assert_eq!(first, CacheUse::Stored);
    let (cached, second) = e
        .compile_cached(surfaces_artifacts::GUEST_WASM, dir.path())
        .expect("loads");
    assert_eq!(second, CacheUse::Hit);
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    Guest::start(&cached, info(&[]), &mut kv, 0).expect("the cached guest runs");
    // Another guest is another entry.
    let (_, other) = e
        .compile_cached(surfaces_artifacts::CHAOS_WASM, dir.path())
        .expect("compiles");
    assert_eq!(other, CacheUse::Stored);
    // A damaged entry costs a compile, not a failure.
    for entry in std::fs::read_dir(dir.path()).expect("dir") {
        std::fs::write(entry.expect("entry").path(), b"garbage").expect("damage");
    }
    let (_, again) = e
        .compile_cached(surfaces_artifacts::GUEST_WASM, dir.path())
        .expect("recompiles");
    assert_eq!(again, CacheUse::Stored);
}

/// The shipped guest as if built for contract `version`: every
/// `surfaces:bot/…@0.4.0` name in its bytes (imports and their type
/// section) rewritten in place, the same length, so the component stays
/// well formed.
fn built_for(version: &str) -> Vec<u8> {
    assert_eq!(version.len(), "0.4.0".len());
    let mut wasm = surfaces_artifacts::GUEST_WASM.to_vec();
    let prefix = b"surfaces:bot/";
    let mut i = 0;
    let mut rewritten = 0;
    while let Some(at) = wasm[i..].windows(prefix.len()).position(|w| w == prefix) {
        let start = i + at + prefix.len();
        // The interface name, then `@0.4.0`.
        let name_end = start
            + wasm[start..]
                .iter()
                .take_while(|b| b.is_ascii_lowercase())
                .count();
        if wasm[name_end..].starts_with(b"@0.4.0") {
            wasm[name_end + 1..name_end + 6].copy_from_slice(version.as_bytes());
            rewritten += 1;
        }
        i = name_end;
    }
    assert!(rewritten > 0, "no versioned import names found");
    wasm
}

#[test]
fn a_guest_built_for_another_contract_version_is_refused_in_words() {
    let e = embedding();
    let Err(err) = e.compile(&built_for("0.5.0")) else {
        panic!("a guest built for 0.5.0 was taken");
    };
    assert_eq!(
        err.to_string(),
        "not a valid surfaces guest: built for surfaces:bot@0.5.0; this host supports surfaces:bot 0.1.0 to 0.4.0"
    );
}

#[test]
fn a_guest_built_for_a_later_patch_release_links_and_runs() {
    let e = embedding();
    let guest = e
        .compile(&built_for("0.4.9"))
        .expect("a patch release links");
    let mut kv: BoxedKv = Box::<MemoryKv>::default();
    let (mut g, _) = Guest::start(&guest, info(&[]), &mut kv, 0).expect("starts");
    let out = g.handle(&dm("!help"), &mut kv, 0).expect("handled");
    assert!(sends(&out) >= 1);
}

//! What a behaviour-checked swap costs (`swapcheck::check`, run off the
//! event loop): the candidate (the shipped guest) started on a copy of the
//! store, the running guest started back on it, the scenario corpus and
//! `seeds` swarm worlds on one core (the check leaves the other to the
//! bot). The loop's own stall, the switch, is `cargo bench -p
//! surfaces-embed -- swap_stall`.
//!
//! `cargo bench -p surfaces-host --bench swap`

use std::path::Path;

use surfaces_embed::{HostInfo, MemoryKv};
use surfaces_host::swapcheck;

fn main() {
    divan::main();
}

fn info() -> HostInfo {
    HostInfo {
        bot_user_id: "@bot:bench".into(),
        bot_display_name: "bot".into(),
        host_version: "bench".into(),
        settings: Vec::new(),
        max_event_bytes: 65_536,
        resumed: false,
        guest_hash: String::new(),
        max_attachment_bytes: 8 << 20,
    }
}

/// 0 seeds: the store and the scenario corpus only; 20: the default
/// (`guest.swap_check_seeds`).
#[divan::bench(args = [0, 20], sample_count = 5, sample_size = 1)]
fn behaviour_check(bencher: divan::Bencher, seeds: u64) {
    let cache = tempfile::tempdir().expect("temp dir");
    let embedding = surfaces_sim::embedding().expect("engine");
    let (running, _) = embedding
        .compile_cached(surfaces_artifacts::GUEST_WASM, cache.path())
        .expect("compiles");
    let file = Path::new(surfaces_artifacts::GUEST_WASM_PATH);
    bencher.bench_local(|| {
        swapcheck::check(
            surfaces_artifacts::GUEST_WASM,
            file,
            MemoryKv::default(),
            &info(),
            seeds,
            cache.path(),
            Some(&running),
        )
        .expect("the shipped guest passes")
    });
}

//! Giving the heap's free memory back to the system after a burst.
//!
//! Compiling a guest (Cranelift, on rayon's threads) and a swap's
//! behaviour check (simulated worlds) allocate tens of MB that are freed
//! at once; glibc keeps freed memory in its per-thread arenas, so without
//! this the bot's RSS stays that much higher until it stops
//! (`docs/research/footprint.md`).

/// Return what the allocator holds free to the system (glibc; elsewhere
/// nothing to do). Cheap when there is nothing to return.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes each arena's lock and only gives free
    // pages back; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Let every thread allocate from one arena. glibc gives each thread that
/// contends for the heap an arena of its own (up to eight per core) and
/// keeps what is freed in it; the bot's threads (the event loop, a tokio
/// worker, the blocking pool's SQLite calls) allocate little and seldom
/// at once, and each thread keeps its small-allocation cache regardless.
/// One arena: 0.5-1 MB less RSS after three replies on the benchmark
/// (`scripts/bench-matrix`), CPU unchanged within its 10 ms resolution.
/// `MALLOC_ARENA_MAX` in the environment still overrides it. Call before
/// the threads start.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before
        // any thread of ours exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

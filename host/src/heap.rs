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

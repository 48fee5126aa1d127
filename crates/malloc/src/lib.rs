//! Hands freed heap memory back to the operating system.
//!
//! glibc keeps what a process frees: after a burst of large messages (issue #18) cloudcore's
//! arenas stayed at 130–150 MB with nothing live in them (docs/performance.md, "Edge message
//! limits"). glibc trims only the top of a heap on `free`, and its mmap threshold rises after a
//! large block is freed, so later large blocks land in the arenas too. [`trim`] asks glibc to
//! release every free page of every arena (`malloc_trim(0)`), which it does with
//! `madvise(MADV_DONTNEED)`; live memory is untouched.
//!
//! This is the workspace's one `unsafe` block, so it lives alone here: the rest of the
//! workspace keeps `unsafe_code = "forbid"`. Other C libraries (musl) have no such call;
//! there [`trim`] does nothing.

/// mimalloc, for a binary's `#[global_allocator]` (feature `mimalloc`).
#[cfg(feature = "mimalloc")]
pub use mimalloc::MiMalloc;

/// Releases the free pages of every malloc arena to the OS. Returns whether any memory was
/// released. Takes the arenas' locks while it runs (milliseconds for a few hundred MB): call
/// it off the async runtime's threads (`spawn_blocking`) and not often.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own arenas under their
    // locks; it is safe to call from any thread at any time.
    #[allow(unsafe_code)]
    let released = unsafe { libc::malloc_trim(0) };
    released == 1
}

/// Releases free heap memory to the OS; nothing to do with this C library.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn trimming_after_a_large_free_is_harmless() {
        let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 64 * 1024]).collect();
        let keep = blocks[7].clone();
        drop(blocks);
        let _ = super::trim();
        assert!(keep.iter().all(|b| *b == 7), "live memory is untouched");
    }
}

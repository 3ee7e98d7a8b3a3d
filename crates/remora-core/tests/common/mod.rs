//! Plumbing shared by the integration tests: seeds that can be replayed, and stores holding
//! known objects.
#![allow(dead_code)] // each test file uses its own part

use remora_core::store::Put;
use remora_core::{Store, StoreConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The seed in environment variable `var`, else one from the clock and the process id;
/// printed with how to replay it.
pub fn seed(var: &str, what: &str) -> u64 {
    let seed = std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            t ^ (u64::from(std::process::id()) << 32)
        });
    println!("{what} seed {seed} (set {var} to replay)");
    seed
}

/// A store in `dir` (256 KiB regions) holding `ids[i] = values[i]` at version 1.
pub fn filled_store(dir: &Path, ids: &[Vec<u8>], values: &[Vec<u8>]) -> Arc<Store> {
    let mut cfg = StoreConfig::new(dir, "owner");
    cfg.region_bytes = 256 * 1024;
    let store = Arc::new(Store::create(&cfg).unwrap());
    let puts: Vec<Put> = ids
        .iter()
        .zip(values)
        .map(|(i, v)| (i.as_slice(), Some(v.as_slice()), 1))
        .collect();
    store.set_many(&puts).unwrap();
    store
}

/// Removes a directory when dropped, however the test ends.
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

//! A store to answer control requests from, for the unit tests of this module.

use crate::store::{Store, StoreConfig};
use std::path::PathBuf;
use std::sync::Arc;

/// A store of 40 objects `obj/0` … `obj/39`, removed with its directory.
pub(super) struct Fixture {
    pub(super) store: Arc<Store>,
    dir: PathBuf,
}

impl Fixture {
    pub(super) fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("remora-control-unit-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::create(&StoreConfig::new(&dir, "unit")).unwrap();
        for i in 0..40 {
            store
                .set(format!("obj/{i}").as_bytes(), &[i as u8; 10], 1)
                .unwrap();
        }
        Fixture {
            store: Arc::new(store),
            dir,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

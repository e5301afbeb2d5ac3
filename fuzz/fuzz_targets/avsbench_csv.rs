//! The AVSBench dataset readers: CSV bytes as the S4, MS3 or AVSS metadata file (chosen by the
//! first byte) in a fresh folder, opened for every split. Oracle: no panic; every failure is an
//! error naming the CSV or the folder.
#![no_main]

use avseg_eval::dataset::{Dataset, Split, Subset};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, csv)) = data.split_first() else { return };
    let subset = [Subset::S4, Subset::Ms3, Subset::Avss][first as usize % 3];
    let Ok(dir) = tempfile::tempdir() else { return };
    let (name, folder) = subset.csv_and_folder();
    let root = if first & 0x80 != 0 { dir.path().join(folder) } else { dir.path().to_path_buf() };
    if std::fs::create_dir_all(&root).is_err() || std::fs::write(root.join(name), csv).is_err() {
        return;
    }
    for split in [Split::Train, Split::Val, Split::Test] {
        if let Err(e) = Dataset::open(dir.path(), subset, split) {
            let msg = e.to_string();
            assert!(msg.contains(name) || msg.contains(&*dir.path().to_string_lossy()), "error names no file: {msg}");
        }
    }
});

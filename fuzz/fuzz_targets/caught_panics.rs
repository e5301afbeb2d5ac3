//! For targets whose inputs reach tract or symphonia: those crates panic on some malformed inputs
//! (tract's ONNX importer unwraps, for one), and avseg catches those panics at its boundary and
//! returns an error naming the file. libfuzzer-sys aborts on every panic, caught or not, which
//! would stop the run at the first dependency bug that avseg already handles. This hook lets caught
//! panics pass and prints each distinct panic location once, so that they are still recorded; a
//! panic that avseg does not catch still unwinds into libfuzzer-sys, which aborts: a crash.

use std::collections::HashSet;
use std::sync::Mutex;

pub fn tolerate_caught_panics() {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let show_all = std::env::var_os("AVSEG_FUZZ_SHOW_PANICS").is_some();
    std::panic::set_hook(Box::new(move |info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
        let seen = seen.get_or_insert_with(HashSet::new);
        if show_all || (seen.len() < 100 && seen.insert(location)) {
            eprintln!("avseg-fuzz: panic (caught by avseg unless a crash follows): {info}");
        }
    }));
}

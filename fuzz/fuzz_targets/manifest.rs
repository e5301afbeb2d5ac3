//! `avseg.json` text through the manifest parser and validator. Oracle: no panic; a manifest that
//! passes serialises and parses back to itself (nothing is accepted that the writer cannot state).
#![no_main]

use std::path::Path;

use avseg_runtime::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("pkg/avseg.json");
    let Ok(manifest) = Manifest::from_json(path, text) else { return };
    let again = serde_json::to_string(&manifest).expect("a parsed manifest serialises");
    let back = Manifest::from_json(path, &again).expect("a serialised manifest parses back");
    assert_eq!(back, manifest);
});

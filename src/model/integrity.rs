//! Graph file integrity: the manifest records each graph file's size and checksum, and loading
//! checks them, so that a file damaged on its way to a device (a bit flipped on an SD card, a copy
//! cut short) is an error naming the file instead of wrong masks.
//!
//! The checksum guards against corruption, not tampering: whoever can replace a graph file can
//! rewrite `avseg.json` too. So it is XXH3-128, not a cryptographic hash: a few GB/s per core, and
//! the same bytes whichever machine computes them. It is written `"xxh3-128:<32 hex digits>"`,
//! the 128-bit value in its canonical big-endian order (as Python's `xxhash.xxh3_128_hexdigest()`
//! prints it), and the algorithm name leaves room for another one later without a schema change.
//!
//! Both fields are optional (schema 1 packages written before them still load, with a notice).

use std::io::Read;
use std::path::Path;

use twox_hash::XxHash3_128;

/// The one checksum algorithm avseg writes and reads.
pub const ALGORITHM: &str = "xxh3-128";

/// The checksum of `bytes`, as the manifest writes it.
pub fn checksum_bytes(bytes: &[u8]) -> String {
    format_checksum(XxHash3_128::oneshot(bytes))
}

/// A checksum computed piece by piece, as bytes stream past.
#[derive(Default)]
pub struct Checksum {
    hasher: XxHash3_128,
    bytes: u64,
}

impl Checksum {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.write(bytes);
        self.bytes += bytes.len() as u64;
    }

    /// How many bytes went in so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The checksum of everything so far, as the manifest writes it.
    pub fn finish(&self) -> String {
        format_checksum(self.hasher.finish_128())
    }
}

/// A reader that checksums what it reads, for checking a file in the same pass that parses it
/// (the CPU graph cache's entries): the bytes are hashed while they are still in cache after the
/// copy out of the page cache, instead of being read a second time.
pub struct ChecksumReader<R> {
    inner: R,
    sum: Checksum,
}

/// Bytes per read at most: a larger request is served in part (every `Read` caller handles short
/// reads), so that what is hashed is still in the L2 cache it was just copied to.
const PIECE: usize = 256 << 10;

impl<R: Read> ChecksumReader<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, sum: Checksum::new() }
    }

    /// Reads whatever the parser left (a tar's end blocks) and returns the checksum of the whole
    /// stream.
    pub fn finish(mut self) -> std::io::Result<Checksum> {
        let mut buf = vec![0u8; PIECE];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return Ok(self.sum),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<R: Read> Read for ChecksumReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let cap = buf.len().min(PIECE);
        let n = self.inner.read(&mut buf[..cap])?;
        self.sum.update(&buf[..n]);
        Ok(n)
    }
}

/// The size and checksum of the file at `path`: hashed through a memory map (no copy out of the
/// page cache: 517 MB in 94 ms instead of 112 ms read in pieces), or read in pieces where the file
/// cannot be mapped. Memory stays bounded either way: mapped pages are the page cache's.
pub fn checksum_file(path: &Path) -> std::io::Result<(u64, String)> {
    let file = std::fs::File::open(path)?;
    // SAFETY: a read-only map of a file that nobody should be writing while it is checked (the
    // package loader and tract map graph files the same way).
    if let Ok(map) = unsafe { memmap2::MmapOptions::new().populate().map(&file) } {
        return Ok((map.len() as u64, checksum_bytes(&map)));
    }
    let sum = ChecksumReader::new(file).finish()?;
    Ok((sum.bytes(), sum.finish()))
}

fn format_checksum(value: u128) -> String {
    format!("{ALGORITHM}:{value:032x}")
}

/// Checks the spelling of a manifest checksum: `xxh3-128:` and 32 lower-case hex digits.
pub fn parse_checksum(text: &str) -> Result<u128, String> {
    let Some((algorithm, digits)) = text.split_once(':') else {
        return Err(format!("{text:?} is not ALGORITHM:DIGITS (e.g. \"{ALGORITHM}:<32 hex digits>\")"));
    };
    if algorithm != ALGORITHM {
        return Err(format!("algorithm {algorithm:?} is not supported; this avseg reads {ALGORITHM:?}"));
    }
    let well_formed = digits.len() == 32 && digits.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return Err(format!("{digits:?} is not 32 lower-case hex digits"));
    }
    u128::from_str_radix(digits, 16).map_err(|e| e.to_string())
}

/// What checking one graph file found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileCheck {
    /// Size and checksum match the manifest.
    Verified,
    /// The manifest records no checksum (a package written before checksums), so nothing beyond
    /// the recorded size, if any, could be checked.
    NotRecorded,
    /// A checksum is recorded, but checking it was turned off; the size was compared.
    NotVerified,
    /// A checksum is recorded, and the backend checks it on the bytes it loads (see
    /// [`crate::Engine::load`]); the size was compared.
    Deferred,
    /// The file differs from what the manifest records; the message says how.
    Mismatch(String),
}

/// Compares the file at `path` with the size and checksum recorded for it. `actual_size` is the
/// file's size from its metadata, so a size mismatch is found without reading the file.
pub fn check_file(path: &Path, actual_size: u64, size: Option<u64>, checksum: Option<&str>) -> std::io::Result<FileCheck> {
    if let Some(size) = size {
        if size != actual_size {
            return Ok(FileCheck::Mismatch(size_mismatch(actual_size, size)));
        }
    }
    let Some(recorded) = checksum else { return Ok(FileCheck::NotRecorded) };
    let (read, actual) = checksum_file(path)?;
    if read != actual_size {
        return Ok(FileCheck::Mismatch(format!("changed while it was read ({actual_size} bytes, then {read})")));
    }
    if actual != recorded {
        return Ok(FileCheck::Mismatch(checksum_mismatch(&actual, recorded)));
    }
    Ok(FileCheck::Verified)
}

/// What a file whose size differs from the manifest's is told.
pub fn size_mismatch(actual: u64, recorded: u64) -> String {
    format!(
        "is {actual} bytes but the manifest records {recorded}: the file is damaged, cut short, or was replaced \
         without updating avseg.json"
    )
}

/// What a file whose checksum differs from the manifest's is told.
pub fn checksum_mismatch(actual: &str, recorded: &str) -> String {
    format!(
        "checksum {actual} differs from the manifest's {recorded}: the file is damaged (e.g. bits flipped on the \
         storage), or was replaced without updating avseg.json"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published XXH3-128 value of the empty input, in the canonical order Python prints.
    #[test]
    fn known_values() {
        assert_eq!(checksum_bytes(b""), "xxh3-128:99aa06d3014798d86001c324468d497f");
        // Chunked hashing of a file equals hashing the bytes at once, across chunk boundaries.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.onnx");
        let bytes: Vec<u8> = (0..(PIECE * 5 + 12345)).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(checksum_file(&path).unwrap(), (bytes.len() as u64, checksum_bytes(&bytes)));
        // A parser that stops early: `finish` hashes the rest, so the sum is still the file's.
        let mut reader = ChecksumReader::new(std::fs::File::open(&path).unwrap());
        let mut head = vec![0u8; PIECE + 77];
        reader.read_exact(&mut head).unwrap();
        let sum = reader.finish().unwrap();
        assert_eq!((sum.bytes(), sum.finish()), (bytes.len() as u64, checksum_bytes(&bytes)));
    }

    #[test]
    fn parsing() {
        let good = checksum_bytes(b"avseg");
        assert!(parse_checksum(&good).is_ok());
        for bad in ["", "xxh3-128", "sha256:00", "xxh3-128:XYZ", &good.to_uppercase(), &good[..good.len() - 1]] {
            assert!(parse_checksum(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_flipped_bit_and_a_short_file_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.onnx");
        let mut bytes = vec![7u8; 100_000];
        std::fs::write(&path, &bytes).unwrap();
        let sum = checksum_bytes(&bytes);
        let n = bytes.len() as u64;
        assert_eq!(check_file(&path, n, Some(n), Some(&sum)).unwrap(), FileCheck::Verified);
        assert_eq!(check_file(&path, n, Some(n), None).unwrap(), FileCheck::NotRecorded);
        assert!(matches!(check_file(&path, n, Some(n + 1), Some(&sum)).unwrap(), FileCheck::Mismatch(m) if m.contains("records")));
        bytes[54_321] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(check_file(&path, n, Some(n), Some(&sum)).unwrap(), FileCheck::Mismatch(m) if m.contains("checksum")));
    }
}

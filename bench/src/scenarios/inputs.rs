//! The payload files fed to `fleet submit` on its standard input.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A file of `count` lines `line(i)` (no newline in them), written in
/// chunks so a million lines never sit in memory; reused when present.
pub fn lines_file(
    dir: &Path,
    name: &str,
    count: usize,
    line: impl Fn(usize) -> Vec<u8>,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}-{count}.txt"));
    if path.exists() {
        return Ok(path);
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for i in 0..count {
        file.write_all(&line(i))?;
        file.write_all(b"\n")?;
    }
    file.flush()?;
    Ok(path)
}

/// 100 bytes of ASCII.
pub fn echo_line(i: usize) -> Vec<u8> {
    let mut line = format!("{i:08}").into_bytes();
    line.resize(100, b'x');
    line
}

/// 64 KiB of hex text, different for every line.
pub fn hex_64k_line(i: usize) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(64 * 1024);
    let mut block = Sha256::digest(i.to_le_bytes()).to_vec();
    while out.len() < 64 * 1024 {
        out.extend_from_slice(hex::encode(&block).as_bytes());
        block = Sha256::digest(&block).to_vec();
    }
    out.truncate(64 * 1024);
    out
}

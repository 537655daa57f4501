//! Each embedded file's strong validator, computed on first use, and its compressed forms,
//! computed once per process by a background thread (`precompress`): until they are ready the
//! file goes out uncompressed, so no request ever waits for a compressor.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use axum::body::Bytes;
use axum::http::{HeaderMap, header};

/// A file's compressed forms.
pub(super) struct Encodings {
    brotli: Bytes,
    gzip: Bytes,
}

/// Files are keyed by address: they live in statics (`assets::ASSETS`), each at one address. (A
/// `const` would not do: each use of a const may get its own copy of the bytes.)
fn key(body: &'static [u8]) -> usize {
    body.as_ptr() as usize
}

fn etags() -> &'static Mutex<HashMap<usize, &'static str>> {
    static ETAGS: OnceLock<Mutex<HashMap<usize, &'static str>>> = OnceLock::new();
    ETAGS.get_or_init(Default::default)
}

fn encodings() -> &'static Mutex<HashMap<usize, &'static Encodings>> {
    static ENCODINGS: OnceLock<Mutex<HashMap<usize, &'static Encodings>>> = OnceLock::new();
    ENCODINGS.get_or_init(Default::default)
}

/// A strong validator for `body`: a hash of its bytes and its length, quoted.
pub(super) fn etag(body: &'static [u8]) -> &'static str {
    if let Some(found) = etags()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key(body))
    {
        return found;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    let made: &'static str =
        Box::leak(format!("\"{:016x}-{:x}\"", hasher.finish(), body.len()).into_boxed_str());
    etags()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(key(body))
        .or_insert(made)
}

/// Compresses `body` (brotli and gzip) for later requests; run off the request path.
pub(super) fn compress(body: &'static [u8]) {
    let mut brotli = Vec::new();
    {
        let mut writer = brotli::CompressorWriter::new(&mut brotli, 64 * 1024, 9, 22);
        let _ = writer.write_all(body);
    }
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = gzip.write_all(body);
    let made = Encodings {
        brotli: Bytes::from(brotli),
        gzip: Bytes::from(gzip.finish().unwrap_or_default()),
    };
    encodings()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key(body), Box::leak(Box::new(made)));
}

/// The encoding to send `body` in, from `Accept-Encoding`: brotli, then gzip; none when neither
/// is accepted or the compressed forms are not ready yet.
pub(super) fn choose(
    request: &HeaderMap,
    body: &'static [u8],
) -> Option<(&'static str, &'static Bytes)> {
    let ready: &'static Encodings = *encodings()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key(body))?;
    let accepted = request
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let accepts = |name: &str| {
        accepted.split(',').any(|coding| {
            let mut parts = coding.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let weight = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            coding.eq_ignore_ascii_case(name) && weight > 0.0
        })
    };
    if accepts("br") && !ready.brotli.is_empty() {
        return Some(("br", &ready.brotli));
    }
    if accepts("gzip") && !ready.gzip.is_empty() {
        return Some(("gzip", &ready.gzip));
    }
    None
}

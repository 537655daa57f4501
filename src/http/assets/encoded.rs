//! Each embedded file's strong validator, computed on first use, and its compressed forms,
//! computed once per process by a background thread that the file's first request starts:
//! until they are ready the file goes out uncompressed, so no request waits for a compressor and
//! a process that serves no page never compresses anything.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::sync::{Mutex, OnceLock};

use axum::body::Bytes;
use axum::http::{HeaderMap, header};

use crate::http::lists;

/// A file's compressed forms.
struct Encodings {
    brotli: Bytes,
    gzip: Bytes,
}

/// What is known of one file.
#[derive(Default)]
struct Known {
    etag: Option<&'static str>,
    /// `None` until compression starts; then `Some(None)` until it is done.
    encodings: Option<Option<&'static Encodings>>,
}

/// Files are keyed by address: they live in statics (`assets::ASSETS`), each at one address. (A
/// `const` would not do: each use of a const may get its own copy of the bytes.)
fn known() -> std::sync::MutexGuard<'static, HashMap<usize, Known>> {
    static KNOWN: OnceLock<Mutex<HashMap<usize, Known>>> = OnceLock::new();
    KNOWN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// A strong validator for `body`: a hash of its bytes and its length, quoted.
pub(super) fn etag(body: &'static [u8]) -> &'static str {
    if let Some(etag) = known().entry(body.as_ptr() as usize).or_default().etag {
        return etag;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    let made = format!("\"{:016x}-{:x}\"", hasher.finish(), body.len());
    let made: &'static str = Box::leak(made.into_boxed_str());
    let mut known = known();
    let etag: &'static str = known
        .entry(body.as_ptr() as usize)
        .or_default()
        .etag
        .get_or_insert(made);
    etag
}

/// The encoding to send `body` in, from `Accept-Encoding`: brotli, then gzip; none when neither
/// is accepted or the compressed forms are not ready yet (the first such request starts them).
pub(super) fn choose(
    request: &HeaderMap,
    body: &'static [u8],
) -> Option<(&'static str, &'static Bytes)> {
    let accepted = request
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (brotli, gzip) = (lists(accepted, "br"), lists(accepted, "gzip"));
    if !brotli && !gzip {
        return None;
    }
    let ready = {
        let mut known = known();
        let file = known.entry(body.as_ptr() as usize).or_default();
        match file.encodings {
            Some(ready) => ready,
            None => {
                file.encodings = Some(None);
                std::thread::spawn(move || compress(body));
                None
            }
        }
    }?;
    match (brotli, gzip) {
        (true, _) => Some(("br", &ready.brotli)),
        _ => Some(("gzip", &ready.gzip)),
    }
}

/// Compresses `body` (brotli 9 and gzip at its best) for the requests after this one.
fn compress(body: &'static [u8]) {
    let mut brotli = Vec::new();
    {
        let mut writer = brotli::CompressorWriter::new(&mut brotli, 64 * 1024, 9, 22);
        let _ = writer.write_all(body);
    }
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let _ = gzip.write_all(body);
    let made: &'static Encodings = Box::leak(Box::new(Encodings {
        brotli: Bytes::from(brotli),
        gzip: Bytes::from(gzip.finish().unwrap_or_default()),
    }));
    known().entry(body.as_ptr() as usize).or_default().encodings = Some(Some(made));
}

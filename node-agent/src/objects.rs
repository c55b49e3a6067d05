//! Moving files to and from the coordinator's object store over gRPC, in chunks:
//! task inputs before a task starts, outputs after it ends. The CLI uses the same
//! functions for `corral file put/get` and `corral job output`.

use std::path::{Component, Path};

use corral_proto::credentials::Bearer;
use corral_proto::leader::Follow;
use corral_proto::v1 as pb;
use corral_proto::v1::objects_client::ObjectsClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::service::interceptor::InterceptedService;

/// Bytes per message when uploading.
const CHUNK: usize = 1 << 20;

pub type Client = ObjectsClient<InterceptedService<Follow, Bearer>>;

/// A client for the objects service on `channel` (whichever coordinator it is
/// pointed at), presenting `bearer`, with room for our chunks.
pub fn client(channel: Follow, bearer: Bearer) -> Client {
    ObjectsClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20)
}

/// Why a transfer failed, said plainly.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{0}")]
    Refused(String),
    /// The coordinator could not be reached (restarting, say): worth trying again.
    #[error("{0}")]
    Unreachable(String),
    /// There is no such object.
    #[error("{0}")]
    Missing(String),
    #[error("{path}: {source}")]
    Local { path: String, source: std::io::Error },
}

fn status(s: tonic::Status) -> TransferError {
    match s.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => {
            TransferError::Unreachable(s.message().to_string())
        }
        tonic::Code::NotFound => TransferError::Missing(s.message().to_string()),
        _ => TransferError::Refused(s.message().to_string()),
    }
}

/// Whether `path` stays inside the directory it is relative to.
pub fn is_inside(path: &Path) -> bool {
    !path.as_os_str().is_empty() && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Whether `dir/relative` is a regular file whose every directory below `dir` is a
/// directory, not a symbolic link to one.
pub fn is_real_file_under(dir: &Path, relative: &Path) -> bool {
    let mut at = dir.to_path_buf();
    let mut parts = relative.components().peekable();
    while let Some(part) = parts.next() {
        let Component::Normal(name) = part else { return false };
        at.push(name);
        let Ok(meta) = std::fs::symlink_metadata(&at) else { return false };
        let last = parts.peek().is_none();
        if (last && !meta.file_type().is_file()) || (!last && !meta.file_type().is_dir()) {
            return false;
        }
    }
    true
}

/// Streams object `object` into the file `dest` (created, parents too).
pub async fn download(client: &mut Client, object: &str, dest: &Path) -> Result<u64, TransferError> {
    let local = |source| TransferError::Local { path: dest.display().to_string(), source };
    let mut stream = client
        .get(pb::GetObjectRequest { path: object.to_string(), offset: 0, length: 0 })
        .await
        .map_err(status)?
        .into_inner();
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(local)?;
    }
    let mut file = tokio::fs::File::create(dest).await.map_err(local)?;
    let mut size = 0;
    while let Some(msg) = stream.message().await.map_err(status)? {
        file.write_all(&msg.data).await.map_err(local)?;
        size += msg.data.len() as u64;
    }
    file.flush().await.map_err(local)?;
    Ok(size)
}

/// Streams the file `src` into object `object`.
pub async fn upload(client: &mut Client, src: &Path, object: &str) -> Result<u64, TransferError> {
    upload_once(client, src, object, "").await
}

/// [`upload`] under an idempotency key (see `PutObjectRequest`): tried again with
/// the same key, the put is recorded, and fires its triggers, once.
pub async fn upload_once(client: &mut Client, src: &Path, object: &str, key: &str) -> Result<u64, TransferError> {
    let local = |source| TransferError::Local { path: src.display().to_string(), source };
    let mut file = tokio::fs::File::open(src).await.map_err(local)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::PutObjectRequest>(4);
    let (path, key) = (object.to_string(), key.to_string());
    let reader = tokio::spawn(async move {
        let mut first = true;
        loop {
            let mut data = vec![0; CHUNK];
            // On a read error the stream ends without `last`: the server stores nothing.
            let n = read_full(&mut file, &mut data).await?;
            data.truncate(n);
            let last = n < CHUNK;
            let (path, idempotency_key) =
                if std::mem::take(&mut first) { (path.clone(), key.clone()) } else { Default::default() };
            if tx.send(pb::PutObjectRequest { path, data, last, idempotency_key }).await.is_err() || last {
                return Ok::<(), std::io::Error>(());
            }
        }
    });
    let result = client.put(tokio_stream::wrappers::ReceiverStream::new(rx)).await;
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(local(e)),
        Err(e) => return Err(TransferError::Refused(format!("reading {}: {e}", src.display()))),
    }
    Ok(result.map_err(status)?.into_inner().size)
}

/// Reads until `buf` is full or the file ends; returns how much was read.
async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Uploads the files of `dir` matching `patterns` under `prefix`, keeping their paths
/// relative to `dir`. Returns how many were uploaded.
pub async fn upload_matching(
    client: &mut Client,
    dir: &Path,
    patterns: &[String],
    prefix: &str,
) -> Result<usize, TransferError> {
    let mut count = 0;
    for pattern in patterns {
        if !is_inside(Path::new(pattern)) {
            return Err(TransferError::Refused(format!("output pattern '{pattern}' leaves the task's directory")));
        }
        // The directory is taken literally, only the pattern is a pattern.
        let full = format!("{}/{pattern}", glob::Pattern::escape(&dir.to_string_lossy()));
        let matches =
            glob::glob(&full).map_err(|e| TransferError::Refused(format!("output pattern '{pattern}': {e}")))?;
        for entry in matches {
            let path = entry.map_err(|e| TransferError::Refused(format!("output pattern '{pattern}': {e}")))?;
            let Ok(relative) = path.strip_prefix(dir) else { continue };
            // Regular files in real directories only: a symbolic link, to the file
            // or to a directory on its way, could point anywhere on the node.
            if !is_real_file_under(dir, relative) {
                tracing::debug!(path = %relative.display(), "not uploading an output reached through a symbolic link");
                continue;
            }
            let object = format!("{prefix}/{}", relative.to_string_lossy());
            upload(client, &path, &object).await.map_err(|e| {
                TransferError::Refused(format!("uploading output '{}' failed: {e}", relative.display()))
            })?;
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_in_real_directories_are_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "no").unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        std::fs::write(dir.path().join("out/result.txt"), "yes").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("linked")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("out/file-link")).unwrap();
        assert!(is_real_file_under(dir.path(), Path::new("out/result.txt")));
        assert!(!is_real_file_under(dir.path(), Path::new("linked/secret")), "through a linked directory");
        assert!(!is_real_file_under(dir.path(), Path::new("out/file-link")), "a linked file");
        assert!(!is_real_file_under(dir.path(), Path::new("out")), "a directory");
        assert!(!is_real_file_under(dir.path(), Path::new("../x")));
    }
}

//! The data plane: an object store (the `object_store` crate; the coordinator's data
//! dir by default) and the `corral.v1.Objects` gRPC service through which agents on
//! other hosts and the CLI put and get objects. Both directions stream in chunks:
//! nothing holds a whole object in memory.

use std::pin::Pin;
use std::sync::Arc;

use corral_proto::v1 as pb;
use corral_proto::v1::objects_server::{Objects, ObjectsServer};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, Invalid};

/// Bytes per message when streaming an object out.
const CHUNK: usize = 1 << 20;

/// The longest object path, in bytes: S3 keys stop at 1,024, and so does every store.
pub const MAX_PATH: usize = 1024;
/// The longest part of a path between two slashes, in bytes (a file name on most
/// file systems, the data dir's store included).
pub const MAX_PATH_PART: usize = 255;

/// An object's path in the store: `a/b/c.txt`, relative, no `.` or `..` parts, at
/// most [`MAX_PATH`] bytes and [`MAX_PATH_PART`] a part.
pub fn object_path(field: &'static str, path: &str) -> Result<Path, Invalid> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Err(Invalid::new(field, "an object path must not be empty"));
    }
    if trimmed.len() > MAX_PATH {
        return Err(Invalid::new(
            field,
            format!("an object path is at most {MAX_PATH} bytes; this one has {}", trimmed.len()),
        ));
    }
    if let Some(part) = trimmed.split('/').find(|part| part.len() > MAX_PATH_PART) {
        return Err(Invalid::new(
            field,
            format!(
                "each part of an object path is at most {MAX_PATH_PART} bytes; '{}...' has {}",
                crate::error::shown(&part[..part.floor_char_boundary(32)]),
                part.len()
            ),
        ));
    }
    if trimmed.split('/').any(|part| part.is_empty() || part == "." || part == "..") {
        return Err(Invalid::new(
            field,
            format!("'{}' is not a valid object path: no empty, '.' or '..' parts", crate::error::shown(path)),
        ));
    }
    Path::parse(trimmed)
        .map_err(|e| Invalid::new(field, format!("'{}' is not a valid object path: {e}", crate::error::shown(path))))
}

/// A store error as clients see it: it names the object as they do, never where
/// the store keeps it (a local store's errors hold paths inside the data dir).
fn store_error(object: &Path) -> impl Fn(object_store::Error) -> Status + '_ {
    move |e| match e {
        object_store::Error::NotFound { .. } => {
            Status::not_found(format!("object '{}' does not exist", crate::error::shown(object)))
        }
        other => {
            tracing::error!(%object, error = %other, "the object store failed");
            Status::internal(format!(
                "the object store failed on '{}'; the coordinator's log says why",
                crate::error::shown(object)
            ))
        }
    }
}

pub fn server(store: Arc<dyn ObjectStore>, shared: Arc<crate::shared::Shared>) -> ObjectsServer<ObjectsApi> {
    ObjectsServer::new(ObjectsApi { store, shared })
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20)
}

pub struct ObjectsApi {
    store: Arc<dyn ObjectStore>,
    /// Asks the core what a node's tasks may touch.
    shared: Arc<crate::shared::Shared>,
}

impl ObjectsApi {
    /// A node may touch only the objects of the tasks assigned to it; tokens are
    /// held to their role by the gate (auth::rules).
    async fn allow(&self, who: Option<&crate::auth::Principal>, path: &str, write: bool) -> Result<(), Status> {
        let Some(crate::auth::Principal::Node { node, .. }) = who.cloned() else {
            return Ok(());
        };
        let object = path.to_string();
        let asked = node.clone();
        let allowed =
            self.shared.runtime.call(move |core, _, _| core.node_object_access(&asked, &object, write)).await?;
        if allowed {
            return Ok(());
        }
        let what = if write { "writes" } else { "reads" };
        Err(Status::permission_denied(format!(
            "node {node} runs no task that {what} object '{}'",
            crate::error::shown(path)
        )))
    }

    /// Records in the event feed an object a client (not a node, whose uploads are
    /// its tasks' outputs) put or deleted, with the token that did it; a put fires
    /// the triggers on its prefix in the same batch, so that once the put is
    /// acknowledged their jobs are stored too.
    /// A put under an idempotency key that was recorded already (a retry) records
    /// and fires nothing more.
    async fn record(
        &self,
        who: Option<crate::auth::Principal>,
        path: String,
        size: Option<u64>,
        key: Option<crate::core::keys::IdempotencyKey>,
    ) -> Result<(), Status> {
        let Some(who @ crate::auth::Principal::Token { .. }) = who else { return Ok(()) };
        // The object is stored whatever became of the token since: the feed must
        // say so (this is when an audit matters most).
        let actor = who.name();
        let recorded = self
            .shared
            .runtime
            .call(move |core, now, out| {
                if !core.first_put(now, key, out) {
                    return Vec::new();
                }
                out.store.push(crate::core::StoreOp::Actor(Some(actor)));
                out.store.push(crate::core::StoreOp::ObjectChanged { path: path.clone(), size });
                out.store.push(crate::core::StoreOp::Actor(None));
                match size {
                    Some(_) => core.on_object_put(now, &path, out),
                    None => Vec::new(),
                }
            })
            .await;
        match recorded {
            Ok(failed) if failed.is_empty() => Ok(()),
            Ok(failed) => Err(Status::failed_precondition(crate::error::bounded(format!(
                "the object was stored, but {}",
                failed.join("; ")
            )))),
            // A delete fires nothing: it is done, only its line in the feed is missing.
            Err(refused) if size.is_none() => {
                tracing::warn!(error = %refused, "an object's deletion could not be recorded in the event feed");
                Ok(())
            }
            Err(crate::runtime::RuntimeError::StoreCannotWrite { in_flight: true, cause }) => {
                Err(Status::unavailable(format!(
                    "the object was stored; its put (and the jobs of its triggers) may still be recorded once the store can write ({cause}): see `corral trigger show` before putting it again"
                )))
            }
            Err(refused) => {
                tracing::warn!(error = %refused, "an object change could not be recorded");
                Err(Status::unavailable(format!(
                    "the object was stored, but its put was not recorded (its triggers did not fire): {refused}; put it again"
                )))
            }
        }
    }
}

/// A put's idempotency key, for a client (a node's puts are its tasks' outputs,
/// which record nothing): the key is the caller's, and names the object.
fn put_key(
    who: Option<&crate::auth::Principal>,
    key: &str,
    path: &Path,
) -> Result<Option<crate::core::keys::IdempotencyKey>, Status> {
    let Some(who @ crate::auth::Principal::Token { .. }) = who else { return Ok(None) };
    let Some(key) = crate::convert::idempotency_key(key)? else { return Ok(None) };
    let digest = format!("{}{path}", crate::core::keys::PUT);
    Ok(Some(crate::core::keys::IdempotencyKey { owner: who.name(), key, digest }))
}

/// The folders Corral writes itself (a job's outputs and checkpoints, its shuffle,
/// dispatches' payloads) are written by the node running the attempt they belong
/// to, never by a client token, an admin's included: a planted checkpoint or output
/// would be taken for the job's own. They go with `corral job delete`.
fn reserved_for_corral(who: Option<&crate::auth::Principal>, path: &Path, what: &str) -> Result<(), Status> {
    let Some(crate::auth::Principal::Token { .. }) = who else { return Ok(()) };
    let Some(folder) =
        corral_types::paths::RESERVED.iter().find(|r| corral_types::paths::is_reserved_by(path.as_ref(), r))
    else {
        return Ok(());
    };
    Err(Status::permission_denied(format!(
        "path: {folder} is Corral's own folder (task outputs, checkpoints, shuffle data, payloads): only the node running a task {what} there; a job's objects go with `corral job delete`"
    )))
}

type GetStream = Pin<Box<dyn Stream<Item = Result<pb::GetObjectResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Objects for ObjectsApi {
    async fn put(&self, req: Request<Streaming<pb::PutObjectRequest>>) -> Result<Response<pb::ObjectInfo>, Status> {
        let principal = req.extensions().get::<crate::auth::Principal>().cloned();
        let mut stream = req.into_inner();
        let first = stream.message().await?.ok_or_else(|| Status::invalid_argument("path: the stream was empty"))?;
        let path = object_path("path", &first.path)?;
        if path.as_ref().starts_with(corral_types::paths::PAYLOADS) {
            return Err(Status::invalid_argument(
                "path: payloads/ holds dispatches' payloads, which only `corral dispatch` writes",
            ));
        }
        reserved_for_corral(principal.as_ref(), &path, "writes")?;
        self.allow(principal.as_ref(), path.as_ref(), true).await?;
        // A key another request used is refused before anything is stored.
        let key = put_key(principal.as_ref(), &first.idempotency_key, &path)?;
        if let Some(key) = key.clone() {
            self.shared.runtime.call(move |core, _, _| Ok::<_, Error>(core.put_seen(&key)?)).await??;
        }
        let upload = self.store.put_multipart(&path).await.map_err(store_error(&path))?;
        let mut writer = WriteMultipart::new(upload);
        let mut size = first.data.len() as u64;
        let mut last = first.last;
        writer.write(&first.data);
        while !last {
            match stream.message().await {
                Ok(Some(msg)) => {
                    size += msg.data.len() as u64;
                    last = msg.last;
                    // Backpressure: do not read faster than the store writes.
                    writer.wait_for_capacity(4).await.map_err(store_error(&path))?;
                    writer.write(&msg.data);
                }
                // The sender went away mid-object: leave nothing half-written.
                Ok(None) => {
                    let _ = writer.abort().await;
                    return Err(Status::aborted(format!(
                        "the upload of '{path}' ended before its last part; nothing was stored"
                    )));
                }
                Err(status) => {
                    let _ = writer.abort().await;
                    return Err(status);
                }
            }
        }
        writer.finish().await.map_err(store_error(&path))?;
        self.record(principal, path.to_string(), Some(size), key).await?;
        Ok(Response::new(pb::ObjectInfo { path: path.to_string(), size, modified_at_ms: 0 }))
    }

    type GetStream = GetStream;

    async fn get(&self, req: Request<pb::GetObjectRequest>) -> Result<Response<GetStream>, Status> {
        let path = object_path("path", &req.get_ref().path)?;
        self.allow(req.extensions().get::<crate::auth::Principal>(), path.as_ref(), false).await?;
        let req = req.into_inner();
        let meta = self.store.head(&path).await.map_err(store_error(&path))?;
        let end = if req.length == 0 { meta.size } else { req.offset.saturating_add(req.length).min(meta.size) };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let size = meta.size;
        if req.offset >= end {
            let _ = tx.send(Ok(pb::GetObjectResponse { data: Vec::new(), size })).await;
        } else {
            let options = GetOptions::default().with_range(Some(GetRange::Bounded(req.offset..end)));
            let result = self.store.get_opts(&path, options).await.map_err(store_error(&path))?;
            tokio::spawn(async move {
                let failed = store_error(&path);
                let mut chunks = result.into_stream();
                let mut first = true;
                let mut pending: Vec<u8> = Vec::with_capacity(CHUNK);
                while let Some(chunk) = chunks.next().await {
                    let chunk = match chunk {
                        Ok(chunk) => chunk,
                        Err(e) => {
                            let _ = tx.send(Err(failed(e))).await;
                            return;
                        }
                    };
                    pending.extend_from_slice(&chunk);
                    if pending.len() >= CHUNK {
                        let data = std::mem::replace(&mut pending, Vec::with_capacity(CHUNK));
                        let size = if std::mem::take(&mut first) { size } else { 0 };
                        if tx.send(Ok(pb::GetObjectResponse { data, size })).await.is_err() {
                            return;
                        }
                    }
                }
                if !pending.is_empty() || first {
                    let _ =
                        tx.send(Ok(pb::GetObjectResponse { data: pending, size: if first { size } else { 0 } })).await;
                }
            });
        }
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn list(&self, req: Request<pb::ListObjectsRequest>) -> Result<Response<pb::ListObjectsResponse>, Status> {
        let prefix = req.into_inner().prefix;
        let prefix = if prefix.trim_matches('/').is_empty() { None } else { Some(object_path("prefix", &prefix)?) };
        let mut listing = self.store.list(prefix.as_ref());
        let mut objects = Vec::new();
        while let Some(meta) = listing.next().await {
            let listed = prefix.clone().unwrap_or_default();
            let meta = meta.map_err(store_error(&listed))?;
            objects.push(pb::ObjectInfo {
                path: meta.location.to_string(),
                size: meta.size,
                modified_at_ms: meta.last_modified.timestamp_millis().max(0) as u64,
            });
        }
        objects.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Response::new(pb::ListObjectsResponse { objects }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteObjectRequest>,
    ) -> Result<Response<pb::DeleteObjectResponse>, Status> {
        let principal = req.extensions().get::<crate::auth::Principal>().cloned();
        let path = object_path("path", &req.into_inner().path)?;
        reserved_for_corral(principal.as_ref(), &path, "deletes")?;
        self.store.head(&path).await.map_err(store_error(&path))?;
        self.store.delete(&path).await.map_err(store_error(&path))?;
        self.record(principal, path.to_string(), None, None).await?;
        Ok(Response::new(pb::DeleteObjectResponse {}))
    }
}

/// The store a URL names: `s3://bucket[/prefix]`, `az://container[/prefix]` (or
/// `abfs://`, `https://account.blob.core.windows.net/...`), `file:///path`. Settings
/// and credentials come from the `AWS_*` and `AZURE_*` environment variables, as
/// the `object_store` builders read them (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`, `AZURE_STORAGE_ACCOUNT_NAME`,
/// ...). Checked by listing it, so a wrong bucket or key fails at startup.
pub async fn store_from_url(url: &str) -> crate::error::Result<Arc<dyn ObjectStore>> {
    let refused = |why: String| crate::error::Error::refused(format!("invalid --store-url '{url}': {why}"));
    let parsed = url::Url::parse(url).map_err(|e| refused(e.to_string()))?;
    let options: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("AZURE_"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let (store, prefix) = object_store::parse_url_opts(&parsed, options).map_err(|e| refused(e.to_string()))?;
    let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
        Arc::from(store)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
    };
    if let Some(Err(e)) = store.list(None).next().await {
        return Err(refused(format!("cannot list it: {e}")));
    }
    Ok(store)
}

/// The store in `dir` (created if needed).
pub fn local_store(dir: &std::path::Path) -> crate::error::Result<Arc<dyn ObjectStore>> {
    std::fs::create_dir_all(dir)?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| crate::error::Error::refused(format!("cannot open the object store in {}: {e}", dir.display())))?;
    Ok(Arc::new(store))
}

/// Deletes every object under `prefix` (a deleted job's outputs and shuffle data).
pub async fn delete_prefix(store: Arc<dyn ObjectStore>, prefix: String) {
    let Ok(path) = Path::parse(&prefix) else { return };
    let listed: Vec<_> = store.list(Some(&path)).collect().await;
    let mut deleted = 0;
    for meta in listed.into_iter().flatten() {
        match store.delete(&meta.location).await {
            Ok(()) => deleted += 1,
            Err(e) => tracing::warn!(object = %meta.location, error = %e, "could not delete a deleted job's object"),
        }
    }
    tracing::debug!(%prefix, deleted, "deleted a job's objects");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_paths_are_checked() {
        assert_eq!(object_path("path", "/a/b.txt").unwrap().to_string(), "a/b.txt");
        for bad in ["", "/", "a/../b", "a//b", "./a"] {
            assert_eq!(object_path("path", bad).unwrap_err().field, "path", "{bad}");
        }
        let part = "x".repeat(MAX_PATH_PART);
        assert!(object_path("path", &format!("a/{part}")).is_ok());
        let err = object_path("path", &format!("a/{part}y/b")).unwrap_err();
        assert!(err.reason.contains("at most 255 bytes") && err.reason.contains("256"), "{}", err.reason);
        let long = vec!["abc"; 300].join("/");
        let err = object_path("path", &long).unwrap_err();
        assert!(err.reason.contains("at most 1024 bytes") && err.reason.contains("1199"), "{}", err.reason);
        let many = "é".repeat(200);
        assert!(object_path("path", &many).unwrap_err().reason.contains("'éééé"));
    }
}

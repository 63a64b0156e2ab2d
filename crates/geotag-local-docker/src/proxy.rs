//! A Docker API proxy that puts `sam local`'s Lambda containers on the host
//! network.
//!
//! Why it exists: SAM runs each function in a container whose runtime
//! interface emulator listens on the container's port 8080, published on a
//! loopback port of the host that SAM picks and then calls. The functions
//! must reach the local stack, which binds 127.0.0.1 only, so the container
//! has to share the host's network. SAM 1.170's `--docker-network host` does
//! not do that: it creates the container on the default network and skips
//! connecting it ("host" is not a network it can join), and on a daemon
//! without a bridge (`--bridge=none`, the only kind that runs here) the
//! published port never exists. SAM waits 20 s and exits 0.
//!
//! The proxy changes one request: a `POST /containers/create` whose
//! entrypoint is the runtime interface emulator and which publishes 8080.
//! That container gets `NetworkMode: host`, no published ports, and the
//! emulator is told to listen where SAM will call it (the published loopback
//! port) and to serve the Runtime API on a free loopback port of its own, so
//! that several warm containers do not collide on 9001. Every other request,
//! and every response, passes through as bytes: the proxy reads only each
//! request's head.

use std::net::{Ipv4Addr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// The port the runtime interface emulator listens on inside SAM's containers.
const EMULATOR_PORT: &str = "8080/tcp";
/// A request head longer than this is not the Docker client's.
const MAX_HEAD: usize = 64 * 1024;
/// A create request's JSON body is a few kilobytes; this bounds a bad one.
const MAX_CREATE_BODY: usize = 4 * 1024 * 1024;

/// A running proxy: a Unix socket that forwards to `upstream`.
pub struct HostNetworkProxy {
    socket: PathBuf,
    task: JoinHandle<()>,
}

impl HostNetworkProxy {
    /// Listens on `socket` (replacing a stale one) and forwards to the Docker
    /// daemon listening on `upstream`.
    pub fn start(socket: &Path, upstream: &Path) -> Result<HostNetworkProxy> {
        if socket.exists() {
            std::fs::remove_file(socket)
                .with_context(|| format!("removing the stale socket {}", socket.display()))?;
        }
        if let Some(folder) = socket.parent() {
            std::fs::create_dir_all(folder)?;
        }
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("listening on {}", socket.display()))?;
        let upstream = upstream.to_path_buf();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    break;
                };
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Err(error) = forward(client, &upstream).await {
                        tracing::warn!("docker proxy: {error:#}");
                    }
                });
            }
        });
        Ok(HostNetworkProxy {
            socket: socket.to_path_buf(),
            task,
        })
    }

    /// The value of `DOCKER_HOST` that reaches the proxy.
    pub fn docker_host(&self) -> String {
        crate::daemon::docker_host_of(&self.socket)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for HostNetworkProxy {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// One client connection: its first request's head is read (and the body too,
/// for a container create), then both directions are copied as bytes.
async fn forward(mut client: UnixStream, upstream: &Path) -> Result<()> {
    let mut buffer = Vec::with_capacity(8 * 1024);
    let head_len = loop {
        if let Some(end) = find_head_end(&buffer) {
            break end;
        }
        if buffer.len() > MAX_HEAD {
            bail!("a request head over {MAX_HEAD} bytes");
        }
        let mut chunk = [0u8; 8 * 1024];
        let read = client.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = RequestHead::parse(&buffer[..head_len])?;
    let mut rest = buffer.split_off(head_len);
    let mut server = UnixStream::connect(upstream)
        .await
        .with_context(|| format!("connecting to the Docker daemon at {}", upstream.display()))?;

    let outgoing = if head.is_container_create() {
        let length = head
            .content_length()
            .context("a container create without Content-Length")?;
        if length > MAX_CREATE_BODY {
            bail!("a container create of {length} bytes");
        }
        while rest.len() < length {
            let mut chunk = vec![0u8; length - rest.len()];
            let read = client.read(&mut chunk).await?;
            if read == 0 {
                bail!("the client closed within a container create's body");
            }
            rest.extend_from_slice(&chunk[..read]);
        }
        let trailing = rest.split_off(length);
        let mut create: Value =
            serde_json::from_slice(&rest).context("a container create whose body is not JSON")?;
        if let Some(port) = put_on_host_network(&mut create, free_loopback_port()?)? {
            tracing::info!(
                "docker proxy: a Lambda container on the host network, at 127.0.0.1:{port}"
            );
        }
        let body = serde_json::to_vec(&create)?;
        let mut bytes = head.rewritten(Some(body.len()));
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&trailing);
        bytes
    } else {
        let mut bytes = if head.is_upgrade() {
            // attach and exec hijack the connection: it is a raw stream from here.
            buffer[..head_len].to_vec()
        } else {
            head.rewritten(None)
        };
        bytes.extend_from_slice(&rest);
        bytes
    };
    server.write_all(&outgoing).await?;
    // A connection carries one request (`Connection: close` was asked for), so
    // the next request, perhaps a create, arrives on a connection of its own.
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// The parts of a request head the proxy decides by.
#[derive(Debug)]
struct RequestHead {
    method: String,
    path: String,
    version: u8,
    headers: Vec<(String, Vec<u8>)>,
}

impl RequestHead {
    fn parse(bytes: &[u8]) -> Result<RequestHead> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request
            .parse(bytes)
            .context("a request head that is not HTTP")?
        {
            httparse::Status::Complete(_) => {}
            httparse::Status::Partial => bail!("an incomplete request head"),
        }
        Ok(RequestHead {
            method: request.method.unwrap_or_default().to_owned(),
            path: request.path.unwrap_or_default().to_owned(),
            version: request.version.unwrap_or(1),
            headers: request
                .headers
                .iter()
                .map(|header| (header.name.to_owned(), header.value.to_vec()))
                .collect(),
        })
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_slice())
    }

    /// `POST /containers/create` or `POST /v1.45/containers/create`, with a query or not.
    fn is_container_create(&self) -> bool {
        let path = self.path.split('?').next().unwrap_or_default();
        let unversioned = match path.strip_prefix("/v") {
            Some(rest) => rest.split_once('/').map_or("", |(_, tail)| tail),
            None => path.trim_start_matches('/'),
        };
        self.method == "POST" && unversioned == "containers/create"
    }

    fn is_upgrade(&self) -> bool {
        self.header("upgrade").is_some()
    }

    fn content_length(&self) -> Option<usize> {
        std::str::from_utf8(self.header("content-length")?)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The head again, asking the daemon to close after its answer, with
    /// `content_length` in place of the client's if given.
    fn rewritten(&self, content_length: Option<usize>) -> Vec<u8> {
        let mut bytes =
            format!("{} {} HTTP/1.{}\r\n", self.method, self.path, self.version).into_bytes();
        for (name, value) in &self.headers {
            let replaced = name.eq_ignore_ascii_case("connection")
                || (content_length.is_some() && name.eq_ignore_ascii_case("content-length"));
            if replaced {
                continue;
            }
            bytes.extend_from_slice(name.as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value);
            bytes.extend_from_slice(b"\r\n");
        }
        if let Some(length) = content_length {
            bytes.extend_from_slice(format!("Content-Length: {length}\r\n").as_bytes());
        }
        bytes.extend_from_slice(b"Connection: close\r\n\r\n");
        bytes
    }
}

/// Rewrites a container create that is one of SAM's Lambda containers so that
/// it runs on the host network, its emulator on the loopback port SAM
/// published and its Runtime API on `runtime_api_port`. Returns the
/// emulator's port, or `None` (the request unchanged) for any other container.
pub fn put_on_host_network(create: &mut Value, runtime_api_port: u16) -> Result<Option<u16>> {
    let runs_the_emulator = create
        .get("Entrypoint")
        .and_then(Value::as_array)
        .and_then(|entrypoint| entrypoint.first())
        .and_then(Value::as_str)
        .is_some_and(|program| program.ends_with("/aws-lambda-rie"));
    let binding = create
        .get("HostConfig")
        .and_then(|host_config| host_config.get("PortBindings"))
        .and_then(|bindings| bindings.get(EMULATOR_PORT))
        .and_then(|bindings| bindings.get(0))
        .cloned();
    let (true, Some(binding)) = (runs_the_emulator, binding) else {
        return Ok(None);
    };
    let port: u16 = binding
        .get("HostPort")
        .and_then(Value::as_str)
        .context("SAM's port binding names no HostPort")?
        .parse()
        .context("SAM's HostPort is not a port")?;
    let host_ip = binding
        .get("HostIp")
        .and_then(Value::as_str)
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
        .filter(Ipv4Addr::is_loopback)
        .unwrap_or(Ipv4Addr::LOCALHOST);

    let host_config = create
        .get_mut("HostConfig")
        .and_then(Value::as_object_mut)
        .context("a create without HostConfig")?;
    host_config.insert("NetworkMode".into(), "host".into());
    host_config.remove("PortBindings");
    let object = create
        .as_object_mut()
        .context("a create that is not an object")?;
    object.remove("ExposedPorts");
    let entrypoint = object
        .get_mut("Entrypoint")
        .and_then(Value::as_array_mut)
        .context("the emulator's entrypoint")?;
    let flags = [
        "--runtime-interface-emulator-address".to_owned(),
        format!("{host_ip}:{port}"),
        "--runtime-api-address".to_owned(),
        format!("127.0.0.1:{runtime_api_port}"),
    ];
    for (offset, flag) in flags.into_iter().enumerate() {
        entrypoint.insert(1 + offset, flag.into());
    }
    Ok(Some(port))
}

/// A loopback port free now. The container binds it a second later: a race
/// only with another process that binds an unasked-for port in between.
fn free_loopback_port() -> Result<u16> {
    Ok(StdTcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The create SAM 1.170 sends for a function (trimmed to what matters).
    fn sams_create() -> Value {
        json!({
            "Image": "public.ecr.aws/lambda/provided:al2023-rapid-arm64",
            "Cmd": ["bootstrap"],
            "Entrypoint": ["/var/rapid/aws-lambda-rie", "--log-level", "error"],
            "Env": ["AWS_REGION=us-east-1"],
            "ExposedPorts": {"8080/tcp": {}},
            "HostConfig": {
                "Binds": ["/work/.aws-sam/build/IngestFunction:/var/task:ro,delegated"],
                "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5432"}]},
                "Memory": 268435456
            }
        })
    }

    #[test]
    fn a_lambda_container_runs_on_the_host_network_where_sam_will_call_it() {
        let mut create = sams_create();
        assert_eq!(put_on_host_network(&mut create, 40123).unwrap(), Some(5432));
        assert_eq!(create["HostConfig"]["NetworkMode"], "host");
        assert!(create["HostConfig"].get("PortBindings").is_none());
        assert!(create.get("ExposedPorts").is_none());
        assert_eq!(
            create["Entrypoint"],
            json!([
                "/var/rapid/aws-lambda-rie",
                "--runtime-interface-emulator-address",
                "127.0.0.1:5432",
                "--runtime-api-address",
                "127.0.0.1:40123",
                "--log-level",
                "error"
            ])
        );
        assert_eq!(create["Cmd"], json!(["bootstrap"]));
        assert_eq!(create["HostConfig"]["Memory"], 268435456);
    }

    #[test]
    fn other_containers_pass_unchanged() {
        let mut no_emulator = sams_create();
        no_emulator["Entrypoint"] = json!(["/bin/sh", "-c", "true"]);
        let before = no_emulator.clone();
        assert_eq!(put_on_host_network(&mut no_emulator, 1).unwrap(), None);
        assert_eq!(no_emulator, before);

        let mut unpublished = sams_create();
        unpublished["HostConfig"]
            .as_object_mut()
            .unwrap()
            .remove("PortBindings");
        let before = unpublished.clone();
        assert_eq!(put_on_host_network(&mut unpublished, 1).unwrap(), None);
        assert_eq!(unpublished, before);
    }

    #[test]
    fn an_address_off_loopback_is_never_bound() {
        let mut create = sams_create();
        create["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostIp"] = json!("0.0.0.0");
        put_on_host_network(&mut create, 1).unwrap();
        assert_eq!(create["Entrypoint"][2], "127.0.0.1:5432");
    }

    #[test]
    fn recognises_creates_of_any_api_version() {
        let head = |path: &str| RequestHead {
            method: "POST".into(),
            path: path.into(),
            version: 1,
            headers: vec![],
        };
        assert!(head("/v1.45/containers/create").is_container_create());
        assert!(head("/v1.45/containers/create?name=x").is_container_create());
        assert!(head("/containers/create").is_container_create());
        assert!(!head("/v1.45/containers/abc/start").is_container_create());
        assert!(!head("/v1.45/images/create").is_container_create());
    }

    /// A fake daemon on a socket of the test's own: it records the request it
    /// was sent and answers it.
    async fn one_request_daemon(socket: &Path) -> JoinHandle<Vec<u8>> {
        let listener = UnixListener::bind(socket).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let read = stream.read(&mut chunk).await.unwrap();
                received.extend_from_slice(&chunk[..read]);
                let Some(end) = find_head_end(&received) else {
                    continue;
                };
                let head = RequestHead::parse(&received[..end]).unwrap();
                if received.len() >= end + head.content_length().unwrap_or(0) {
                    break;
                }
            }
            stream
                .write_all(
                    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                )
                .await
                .unwrap();
            received
        })
    }

    #[tokio::test]
    async fn a_create_through_the_proxy_reaches_the_daemon_rewritten_and_its_answer_returns() {
        let folder = std::env::temp_dir().join(format!("geotag-proxy-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let daemon_socket = folder.join("daemon.sock");
        let _ = std::fs::remove_file(&daemon_socket);
        let daemon = one_request_daemon(&daemon_socket).await;
        let proxy = HostNetworkProxy::start(&folder.join("proxy.sock"), &daemon_socket).unwrap();

        let body = serde_json::to_vec(&sams_create()).unwrap();
        let mut client = UnixStream::connect(proxy.socket()).await.unwrap();
        let mut request = format!(
            "POST /v1.45/containers/create HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        // Sent in two writes: the body may arrive after the head.
        let (head, tail) = request.split_at(request.len() - 10);
        client.write_all(head).await.unwrap();
        client.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        client.write_all(tail).await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 201 Created"), "{answer:?}");

        let received = daemon.await.unwrap();
        let end = find_head_end(&received).unwrap();
        let head = RequestHead::parse(&received[..end]).unwrap();
        assert_eq!(head.header("connection"), Some(&b"close"[..]));
        let sent: Value = serde_json::from_slice(&received[end..]).unwrap();
        assert_eq!(head.content_length(), Some(received.len() - end));
        assert_eq!(sent["HostConfig"]["NetworkMode"], "host");
        assert_eq!(sent["Entrypoint"][2], "127.0.0.1:5432");
        drop(proxy);
        std::fs::remove_dir_all(&folder).unwrap();
    }
}

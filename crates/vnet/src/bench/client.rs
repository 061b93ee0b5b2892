//! One keep-alive HTTP/1.1 connection to the server under test. Times each
//! round trip (request sent to body fully read) and turns any status other
//! than the expected one into an error: the bench never measures failures.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::BoxError;

/// Longest a single request may take before the bench gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    /// The project whose member (not an admin) every request is from, as
    /// the server's noauth headers say; `None`: the default admin.
    member_of: Option<String>,
}

/// A successful answer and how long it took.
pub struct Reply {
    pub elapsed: Duration,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Result<Value, BoxError> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// `body[key]["id"]`, the id of a created resource.
    pub fn id(&self, key: &str) -> Result<String, BoxError> {
        self.json()?
            .get(key)
            .and_then(|r| r.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("the reply has no {key}.id").into())
    }

    /// Length of the array `body[key]`, the items of a list.
    pub fn count(&self, key: &str) -> Result<usize, BoxError> {
        self.json()?
            .get(key)
            .and_then(Value::as_array)
            .map(Vec::len)
            .ok_or_else(|| format!("the reply has no {key} array").into())
    }
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn, BoxError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // A broken connection shows up as an error of the next request.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
            member_of: None,
        })
    }

    /// A connection whose requests come from a member of `project`.
    pub async fn member(addr: SocketAddr, project: &str) -> Result<Conn, BoxError> {
        let mut conn = Conn::connect(addr).await?;
        conn.member_of = Some(project.to_owned());
        Ok(conn)
    }

    /// GET `path`, expecting 200.
    pub async fn get(&mut self, path: &str) -> Result<Reply, BoxError> {
        self.call(Method::GET, path, Bytes::new(), StatusCode::OK)
            .await
    }

    /// POST `body` to `path`, expecting 201. Serialized before the clock starts.
    pub async fn create(&mut self, path: &str, body: &Value) -> Result<Reply, BoxError> {
        let body = Bytes::from(serde_json::to_vec(body)?);
        self.call(Method::POST, path, body, StatusCode::CREATED)
            .await
    }

    /// PUT `body` to `path`, expecting 200 (a router action).
    pub async fn put(&mut self, path: &str, body: &Value) -> Result<Reply, BoxError> {
        let body = Bytes::from(serde_json::to_vec(body)?);
        self.call(Method::PUT, path, body, StatusCode::OK).await
    }

    /// DELETE `path`, expecting 204.
    pub async fn delete(&mut self, path: &str) -> Result<Reply, BoxError> {
        self.call(Method::DELETE, path, Bytes::new(), StatusCode::NO_CONTENT)
            .await
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        expect: StatusCode,
    ) -> Result<Reply, BoxError> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, &self.host)
            .header(CONTENT_TYPE, "application/json");
        if let Some(project) = &self.member_of {
            request = request
                .header("x-project-id", project)
                .header("x-roles", "member");
        }
        let request = request.body(Full::new(body))?;
        let start = Instant::now();
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, self.round_trip(request))
            .await
            .map_err(|_| format!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let elapsed = start.elapsed();
        if status != expect {
            let text = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
            return Err(
                format!("{method} {path} answered {status}, expected {expect}: {text}").into(),
            );
        }
        Ok(Reply { elapsed, body })
    }

    async fn round_trip(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), BoxError> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// A server (on a thread) answering one request with `status` and `body`.
    fn answering(status: &str, body: &str) -> SocketAddr {
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(response.as_bytes());
        });
        addr
    }

    #[tokio::test]
    async fn an_unexpected_status_is_an_error() {
        let body = r#"{"NeutronError": {"type": "IpAddressGenerationFailure"}}"#;
        let mut conn = Conn::connect(answering("409 Conflict", body))
            .await
            .expect("connect");
        let err = conn
            .create("/v2.0/ports", &serde_json::json!({"port": {}}))
            .await
            .err()
            .expect("a 409 must fail");
        let text = err.to_string();
        assert!(text.contains("409"), "{text}");
        assert!(text.contains("IpAddressGenerationFailure"), "{text}");
    }

    #[tokio::test]
    async fn the_expected_status_is_a_reply() {
        let body = r#"{"port": {"id": "p1"}}"#;
        let mut conn = Conn::connect(answering("201 Created", body))
            .await
            .expect("connect");
        let reply = conn
            .create("/v2.0/ports", &serde_json::json!({"port": {}}))
            .await
            .expect("201");
        assert_eq!(reply.id("port").expect("id"), "p1");
    }
}

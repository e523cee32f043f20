//! A Lambda Runtime API stub on loopback: enough of the
//! [Runtime API](https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html) to cold-start a
//! function once and time it.
//!
//! Per run ("generation", started by [`Stub::arm`]): the first `GET
//! /2018-06-01/runtime/invocation/next` receives the armed event; its arrival is time-stamped
//! (end of init). The first `POST .../invocation/{id}/response` (or `.../error`) is recorded and
//! time-stamped (first response). Any later `/next` is parked until the next generation, so the
//! process sits idle (as Lambda freezes it) while the runner reads its peak RSS and kills it.
//! `POST /2018-06-01/runtime/init/error` is recorded too: a function whose init fails says why.
//!
//! Plain `std::net` threads, no async runtime: the stub must cost the measured process nothing
//! and keep the harness lean. Connections are HTTP/1.1 with keep-alive (the runtime's hyper
//! client reuses them); request bodies with `Content-Length` or chunked encoding are accepted.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

const NEXT_PATH: &str = "/2018-06-01/runtime/invocation/next";
const INVOCATION_PREFIX: &str = "/2018-06-01/runtime/invocation/";
const INIT_ERROR_PATH: &str = "/2018-06-01/runtime/init/error";
/// Largest request body the stub accepts (Lambda's synchronous payload limit).
const MAX_BODY: usize = 6 * 1024 * 1024;

/// What a function posted for its invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `POST .../response`: the handler's result.
    Response(Vec<u8>),
    /// `POST .../error`: the handler failed (the body is the runtime's error JSON).
    Error(Vec<u8>),
    /// `POST /runtime/init/error`: the function failed before its first `/next`.
    InitError(Vec<u8>),
}

impl Outcome {
    /// The posted body, lossily as text (for logs and the report).
    pub fn body_text(&self) -> String {
        let (Outcome::Response(b) | Outcome::Error(b) | Outcome::InitError(b)) = self;
        String::from_utf8_lossy(b).into_owned()
    }

    /// `response`, `error` or `init-error`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Response(_) => "response",
            Outcome::Error(_) => "error",
            Outcome::InitError(_) => "init-error",
        }
    }
}

/// What the stub saw during the current generation.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Arrival of the first `/next` (the function finished its init).
    pub first_next: Option<Instant>,
    /// Arrival of the first response, error or init error, and what it was.
    pub first_outcome: Option<(Instant, Outcome)>,
    /// How many `/next` calls arrived (the second one means "idle again").
    pub next_calls: u32,
}

#[derive(Debug, Default)]
struct State {
    generation: u64,
    event: Vec<u8>,
    request_id: String,
    handed_out: bool,
    seen: Observation,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking connection thread must not take the harness down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running stub. Dropping it leaves the listener thread running until the process ends
/// (the runner is short-lived).
#[derive(Debug, Clone)]
pub struct Stub {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Stub {
    /// Binds `127.0.0.1:0` and serves on background threads.
    pub fn start() -> io::Result<Stub> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept_shared = Arc::clone(&shared);
        thread::Builder::new()
            .name("runtime-api-stub".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let conn_shared = Arc::clone(&accept_shared);
                    // Best effort: a failed spawn only drops that connection.
                    let _ = thread::Builder::new()
                        .name("runtime-api-conn".into())
                        .spawn(move || serve(stream, &conn_shared));
                }
            })?;
        Ok(Stub { addr, shared })
    }

    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub fn runtime_api(&self) -> String {
        self.addr.to_string()
    }

    /// Starts a new generation that will hand `event` to the first `/next`; releases any
    /// `/next` parked by the previous one and forgets its observations.
    pub fn arm(&self, event: Vec<u8>, request_id: &str) {
        let mut state = self.shared.lock();
        state.generation += 1;
        state.event = event;
        state.request_id = request_id.to_owned();
        state.handed_out = false;
        state.seen = Observation::default();
        self.shared.changed.notify_all();
    }

    /// What the current generation has seen so far.
    pub fn observation(&self) -> Observation {
        self.shared.lock().seen.clone()
    }

    /// Waits until `done` holds for the current observation or `timeout` passes; returns the
    /// observation either way.
    pub fn wait_until(
        &self,
        timeout: Duration,
        done: impl Fn(&Observation) -> bool,
    ) -> Observation {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !done(&state.seen) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            state = match self.shared.changed.wait_timeout(state, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        state.seen.clone()
    }
}

/// A parsed request: method, path, body.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn serve(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nodelay(true);
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    // One request at a time; EOF or a malformed request ends the connection.
    while let Ok(Some(request)) = read_request(&mut reader) {
        let now = Instant::now();
        let keep_going = if request.method == "GET" && request.path == NEXT_PATH {
            handle_next(&mut writer, shared, now)
        } else if request.method == "POST" && request.path == INIT_ERROR_PATH {
            record(shared, now, Outcome::InitError(request.body));
            respond(&mut writer, 202, &[], br#"{"status":"OK"}"#)
        } else if request.method == "POST" && request.path.starts_with(INVOCATION_PREFIX) {
            let rest = &request.path[INVOCATION_PREFIX.len()..];
            match rest.rsplit_once('/') {
                Some((id, kind @ ("response" | "error"))) => {
                    let current = shared.lock().request_id == id;
                    if current {
                        let outcome = if kind == "response" {
                            Outcome::Response(request.body)
                        } else {
                            Outcome::Error(request.body)
                        };
                        record(shared, now, outcome);
                    }
                    respond(&mut writer, 202, &[], br#"{"status":"OK"}"#)
                }
                _ => respond(&mut writer, 404, &[], b"{}"),
            }
        } else {
            respond(&mut writer, 404, &[], b"{}")
        };
        if !keep_going {
            break;
        }
    }
}

/// Hands the armed event to the first `/next` of a generation; parks later ones until the
/// generation changes, then closes the connection (the process is gone by then).
fn handle_next(writer: &mut TcpStream, shared: &Shared, now: Instant) -> bool {
    let mut state = shared.lock();
    state.seen.next_calls += 1;
    state.seen.first_next.get_or_insert(now);
    shared.changed.notify_all();
    if !state.handed_out {
        state.handed_out = true;
        let event = state.event.clone();
        let request_id = state.request_id.clone();
        drop(state);
        let deadline_ms = chrono::Utc::now().timestamp_millis() + 30_000;
        let headers = [
            ("Lambda-Runtime-Aws-Request-Id", request_id),
            ("Lambda-Runtime-Deadline-Ms", deadline_ms.to_string()),
            (
                "Lambda-Runtime-Invoked-Function-Arn",
                "arn:aws:lambda:us-east-1:000000000000:function:bench".to_owned(),
            ),
            (
                "Lambda-Runtime-Trace-Id",
                "Root=1-00000000-000000000000000000000000;Sampled=0".to_owned(),
            ),
        ];
        return respond(writer, 200, &headers, &event);
    }
    let generation = state.generation;
    while state.generation == generation {
        state = match shared.changed.wait(state) {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
    }
    false
}

fn record(shared: &Shared, now: Instant, outcome: Outcome) {
    let mut state = shared.lock();
    if state.seen.first_outcome.is_none() {
        state.seen.first_outcome = Some((now, outcome));
    }
    shared.changed.notify_all();
}

fn respond(writer: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) -> bool {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        _ => "Not Found",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    writer
        .write_all(head.as_bytes())
        .and_then(|()| writer.write_all(body))
        .and_then(|()| writer.flush())
        .is_ok()
}

/// Reads one HTTP/1.1 request; `Ok(None)` on a clean EOF between requests.
fn read_request(reader: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        return Err(invalid("malformed request line"));
    };
    let (method, path) = (method.to_owned(), path.to_owned());
    let mut content_length = 0usize;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Err(invalid("EOF in headers"));
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().map_err(|_| invalid("bad content-length"))?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    let body = if chunked {
        read_chunked(reader)?
    } else {
        read_exact_body(reader, content_length)?
    };
    Ok(Some(Request { method, path, body }))
}

fn read_exact_body(reader: &mut impl BufRead, len: usize) -> io::Result<Vec<u8>> {
    if len > MAX_BODY {
        return Err(invalid("body too large"));
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(body)
}

fn read_chunked(reader: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_hex = size_line.trim().split(';').next().unwrap_or_default();
        let size = usize::from_str_radix(size_hex, 16).map_err(|_| invalid("bad chunk size"))?;
        if size == 0 {
            // Trailers until the empty line.
            loop {
                let mut trailer = String::new();
                if reader.read_line(&mut trailer)? == 0 || trailer.trim_end().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(invalid("body too large"));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn call(
        stream: &mut TcpStream,
        reader: &mut BufReader<TcpStream>,
        raw: &str,
    ) -> (u16, Vec<u8>) {
        stream.write_all(raw.as_bytes()).unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let code: u16 = status.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut len = 0;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            if h.trim().is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        (code, body)
    }

    fn connect(stub: &Stub) -> (TcpStream, BufReader<TcpStream>) {
        let stream = TcpStream::connect(stub.runtime_api()).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        (stream, reader)
    }

    #[test]
    fn hands_the_event_once_and_records_the_first_response() {
        let stub = Stub::start().unwrap();
        stub.arm(br#"{"hello":1}"#.to_vec(), "req-1");
        let (mut s, mut r) = connect(&stub);
        let (code, body) = call(
            &mut s,
            &mut r,
            "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nhost: x\r\n\r\n",
        );
        assert_eq!(code, 200);
        assert_eq!(body, br#"{"hello":1}"#);
        assert!(stub.observation().first_next.is_some());
        assert!(stub.observation().first_outcome.is_none());

        let post = "POST /2018-06-01/runtime/invocation/req-1/response HTTP/1.1\r\ncontent-length: 2\r\n\r\nok";
        let (code, _) = call(&mut s, &mut r, post);
        assert_eq!(code, 202);
        let seen = stub.wait_until(Duration::from_secs(5), |o| o.first_outcome.is_some());
        let (at, outcome) = seen.first_outcome.unwrap();
        assert_eq!(outcome, Outcome::Response(b"ok".to_vec()));
        assert!(at >= seen.first_next.unwrap());
        assert_eq!(seen.next_calls, 1);
    }

    #[test]
    fn a_second_next_is_parked_until_the_next_generation() {
        let stub = Stub::start().unwrap();
        stub.arm(b"{}".to_vec(), "req-a");
        let (mut s, mut r) = connect(&stub);
        call(
            &mut s,
            &mut r,
            "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n\r\n",
        );
        s.write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n\r\n")
            .unwrap();
        let seen = stub.wait_until(Duration::from_secs(5), |o| o.next_calls == 2);
        assert_eq!(seen.next_calls, 2);
        stub.arm(b"{}".to_vec(), "req-b");
        // The parked request is released by closing the connection, without an answer.
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert_eq!(stub.observation().next_calls, 0);
    }

    #[test]
    fn chunked_error_posts_and_init_errors_are_recorded() {
        let stub = Stub::start().unwrap();
        stub.arm(b"{}".to_vec(), "req-2");
        let (mut s, mut r) = connect(&stub);
        let post = "POST /2018-06-01/runtime/invocation/req-2/error HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(call(&mut s, &mut r, post).0, 202);
        let seen = stub.wait_until(Duration::from_secs(5), |o| o.first_outcome.is_some());
        assert_eq!(
            seen.first_outcome.unwrap().1,
            Outcome::Error(b"abcde".to_vec())
        );

        stub.arm(b"{}".to_vec(), "req-3");
        let post = "POST /2018-06-01/runtime/init/error HTTP/1.1\r\ncontent-length: 4\r\n\r\nboom";
        assert_eq!(call(&mut s, &mut r, post).0, 202);
        let seen = stub.wait_until(Duration::from_secs(5), |o| o.first_outcome.is_some());
        let outcome = seen.first_outcome.unwrap().1;
        assert_eq!(outcome.kind(), "init-error");
        assert_eq!(outcome.body_text(), "boom");
    }

    #[test]
    fn responses_for_another_request_id_are_ignored() {
        let stub = Stub::start().unwrap();
        stub.arm(b"{}".to_vec(), "req-current");
        let (mut s, mut r) = connect(&stub);
        let post = "POST /2018-06-01/runtime/invocation/req-stale/response HTTP/1.1\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(call(&mut s, &mut r, post).0, 202);
        assert!(stub.observation().first_outcome.is_none());
        assert_eq!(call(&mut s, &mut r, "GET /nope HTTP/1.1\r\n\r\n").0, 404);
    }
}

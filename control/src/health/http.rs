//! The `http` and `https` checks: one HTTP/1.1 request per probe with ureq (rustls, no
//! OpenSSL), HEAD or GET, passing on the expected status and, if asked, a body that contains
//! a given text.
//!
//! The request's URL names the check's `host` (its Host header, and for `https` the name sent
//! as SNI and verified in the certificate), but the connection goes to the backend's check
//! address: a resolver of our own answers every name with that address, so no DNS is asked.
//! The probe's timeout is the request's overall deadline (connect, TLS, headers and body);
//! redirects are not followed (a 301 is a 301), no proxy from the environment is used, no
//! connection is kept for the next probe, and at most [`MAX_BODY_BYTES`] of a body are read.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ureq::config::Config;
use ureq::http::uri::{Authority, PathAndQuery, Scheme};
use ureq::http::Uri;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::Agent;

/// The most of a body read when looking for `body` (64 KiB): a backend that sends more, or
/// sends forever, is judged on its first 64 KiB.
pub const MAX_BODY_BYTES: u64 = 64 << 10;

/// An `http` or `https` check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// GET (else HEAD).
    pub get: bool,
    pub path: String,
    /// The Host header (and for `https` the certificate's name).
    pub host: String,
    /// The status that passes.
    pub status: u16,
    /// Text the body must contain (GET only).
    pub body: Option<String>,
    /// `https`: how the server's certificate is checked (`None`: plain `http`).
    pub tls: Option<Tls>,
}

/// How an `https` check treats the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// Verify the certificate's chain and name (else accept any certificate).
    pub verify: bool,
    /// The CA certificates (DER) to verify against; `None`: the Mozilla roots built in.
    pub ca: Option<Vec<Vec<u8>>>,
}

/// `host` as a URL's authority, or why it is not one.
pub fn authority(host: &str) -> Result<Authority, String> {
    let a: Authority = host.parse().map_err(|e| format!("{host:?} is not a host name or address: {e}"))?;
    if a.as_str().contains('@') {
        return Err(format!("{host:?}: no user name"));
    }
    Ok(a)
}

/// `path` as a URL's path and query, or why it is not one.
pub fn path(path: &str) -> Result<PathAndQuery, String> {
    path.parse().map_err(|e| format!("{path:?} is not a URL path: {e}"))
}

/// `host` as the name an `https` check verifies (and sends as SNI), or why it cannot be one.
pub fn server_name(host: &str) -> Result<(), String> {
    let a = authority(host)?;
    let bare = a.host().trim_start_matches('[').trim_end_matches(']');
    rustls_pki_types::ServerName::try_from(bare)
        .map(drop)
        .map_err(|_| format!("{bare:?} is not a DNS name or an IP address (for TLS)"))
}

/// The CA certificates in PEM text `pem`, as DER; an error unless there is at least one and
/// each is an X.509 certificate that can be a trust anchor.
pub fn ca_certs(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem.as_bytes()) {
        let PemItem::Certificate(c) = item.map_err(|e| format!("not PEM: {e:?}"))? else {
            return Err("holds something other than certificates (a key?)".into());
        };
        let der = rustls_pki_types::CertificateDer::from(c.der());
        webpki::anchor_from_trusted_cert(&der)
            .map_err(|e| format!("certificate {} is not a usable CA certificate: {e}", certs.len() + 1))?;
        certs.push(c.der().to_vec());
    }
    if certs.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(certs)
}

/// Answers every name with the backend's check address.
#[derive(Debug)]
struct Backend(SocketAddr);

impl Resolver for Backend {
    fn resolve(&self, _: &Uri, _: &Config, _: NextTimeout) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut addrs = self.empty();
        addrs.push(self.0);
        Ok(addrs)
    }
}

/// A prober of one backend: the agent (its TLS settings built once) and the URL.
pub struct Prober {
    agent: Agent,
    uri: Result<Uri, String>,
    check: HttpCheck,
    timeout: Duration,
}

impl Prober {
    pub fn new(addr: SocketAddr, check: &HttpCheck, timeout: Duration) -> Prober {
        let config = Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .user_agent("sluice-health")
            .tls_config(tls_config(check.tls.as_ref()))
            .build();
        let agent = Agent::with_parts(config, DefaultConnector::new(), Backend(addr));
        Prober { agent, uri: uri(check), check: check.clone(), timeout }
    }

    /// One probe: `Ok` or why it failed.
    pub fn probe(&self) -> Result<(), String> {
        let uri = self.uri.clone()?;
        let call = if self.check.get { self.agent.get(uri).call() } else { self.agent.head(uri).call() };
        let mut answer = call.map_err(|e| self.reason(e))?;
        let got = answer.status().as_u16();
        if got != self.check.status {
            return Err(format!("status {got}, want {}", self.check.status));
        }
        let Some(want) = &self.check.body else { return Ok(()) };
        let mut body = Vec::new();
        answer
            .body_mut()
            .as_reader()
            .take(MAX_BODY_BYTES)
            .read_to_end(&mut body)
            .map_err(|e| format!("body: {}", self.reason(e.into())))?;
        if contains(&body, want.as_bytes()) {
            Ok(())
        } else {
            Err(format!("body ({} bytes read) lacks {want:?}", body.len()))
        }
    }

    /// A short reason for a failed request or body read.
    fn reason(&self, e: ureq::Error) -> String {
        match e {
            ureq::Error::Timeout(_) => format!("timed out after {:?}", self.timeout),
            ureq::Error::Io(e) => e.to_string(),
            e => e.to_string(),
        }
    }
}

/// The check's URL: `http[s]://HOST/PATH`.
fn uri(check: &HttpCheck) -> Result<Uri, String> {
    let scheme = if check.tls.is_some() { Scheme::HTTPS } else { Scheme::HTTP };
    Uri::builder()
        .scheme(scheme)
        .authority(authority(&check.host)?)
        .path_and_query(path(&check.path)?)
        .build()
        .map_err(|e| e.to_string())
}

/// ureq's TLS settings for `tls` (plain `http`: the defaults, unused).
fn tls_config(tls: Option<&Tls>) -> TlsConfig {
    let Some(tls) = tls else { return TlsConfig::default() };
    let roots = match &tls.ca {
        Some(ca) => {
            RootCerts::Specific(Arc::new(ca.iter().map(|d| Certificate::from_der(d).to_owned()).collect()))
        }
        None => RootCerts::WebPki,
    };
    TlsConfig::builder().root_certs(roots).disable_verification(!tls.verify).build()
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::thread::{self, JoinHandle};
    use std::time::Instant;

    const T: Duration = Duration::from_secs(5);

    fn check(get: bool, path: &str, host: &str) -> HttpCheck {
        HttpCheck { get, path: path.into(), host: host.into(), status: 200, body: None, tls: None }
    }

    /// Reads a request's head from `c`.
    fn read_head(c: &mut TcpStream) -> String {
        let mut req = Vec::new();
        let mut buf = [0u8; 512];
        while !req.ends_with(b"\r\n\r\n") {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => req.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&req).into_owned()
    }

    /// A one-shot server on loopback: reads a request, then `answer` writes to the client.
    /// Returns its address and, when joined, the request it read.
    fn server(answer: impl FnOnce(&mut TcpStream) + Send + 'static) -> (SocketAddr, JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let h = thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let req = read_head(&mut c);
            answer(&mut c);
            req
        });
        (addr, h)
    }

    fn answering(text: &'static str) -> impl FnOnce(&mut TcpStream) + Send + 'static {
        move |c| drop(c.write_all(text.as_bytes()))
    }

    #[test]
    fn head_with_host_and_path_passes_on_the_status() {
        let (addr, h) = server(answering("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        // The host is a name nobody resolves: the probe connects to `addr` all the same.
        assert_eq!(Prober::new(addr, &check(false, "/healthz?x=1", "web.example"), T).probe(), Ok(()));
        let req = h.join().unwrap();
        assert!(req.starts_with("HEAD /healthz?x=1 HTTP/1.1\r\n"), "{req}");
        assert!(req.to_ascii_lowercase().contains("\r\nhost: web.example\r\n"), "{req}");
    }

    #[test]
    fn another_status_fails_and_redirects_are_not_followed() {
        let (addr, h) = server(answering("HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n"));
        assert_eq!(Prober::new(addr, &check(true, "/", "h"), T).probe(), Err("status 503, want 200".into()));
        assert!(h.join().unwrap().starts_with("GET / HTTP/1.1\r\n"));
        let (addr, _) =
            server(answering("HTTP/1.1 301 Moved\r\nLocation: http://h/x\r\nContent-Length: 0\r\n\r\n"));
        assert_eq!(Prober::new(addr, &check(true, "/", "h"), T).probe(), Err("status 301, want 200".into()));
    }

    #[test]
    fn body_must_contain_the_text() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nstatus: good";
        let want = |text: &str| HttpCheck { body: Some(text.into()), ..check(true, "/", "h") };
        let (addr, _) = server(answering(ok));
        assert_eq!(Prober::new(addr, &want("good"), T).probe(), Ok(()));
        let (addr, _) = server(answering(ok));
        assert_eq!(
            Prober::new(addr, &want("ready"), T).probe(),
            Err("body (12 bytes read) lacks \"ready\"".into())
        );
    }

    #[test]
    fn an_endless_body_is_read_only_so_far() {
        // Announces 1 GB and sends it for as long as the client reads.
        let (addr, _) = server(|c| {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n");
            while c.write_all(&[b'x'; 4096]).is_ok() {}
        });
        let c = HttpCheck { body: Some("ready".into()), ..check(true, "/", "h") };
        let e = Prober::new(addr, &c, T).probe().unwrap_err();
        assert_eq!(e, format!("body ({MAX_BODY_BYTES} bytes read) lacks \"ready\""));
    }

    #[test]
    fn a_trickling_server_times_out() {
        // A header line every 50 ms, never an end: the overall deadline ends the probe.
        let (addr, _) = server(|c| {
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\n");
            while c.write_all(b"X-Slow: yes\r\n").is_ok() {
                thread::sleep(Duration::from_millis(50));
            }
        });
        let started = Instant::now();
        let timeout = Duration::from_millis(500);
        assert_eq!(
            Prober::new(addr, &check(false, "/", "h"), timeout).probe(),
            Err("timed out after 500ms".into())
        );
        assert!(started.elapsed() < T, "bounded by the timeout, not the server");
    }

    #[test]
    fn not_http_and_refused_connections_fail_with_a_reason() {
        let (addr, _) = server(answering("SSH-2.0-OpenSSH_9.2\r\n"));
        let e = Prober::new(addr, &check(false, "/", "h"), T).probe().unwrap_err();
        assert!(e.starts_with("protocol: "), "{e}");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = l.local_addr().unwrap();
        drop(l);
        let e = Prober::new(closed, &check(false, "/", "h"), T).probe().unwrap_err();
        assert!(e.contains("Connection refused"), "{e}");
    }

    #[test]
    fn hosts_and_paths_are_checked() {
        assert!(authority("web.example:8080").is_ok());
        assert!(authority("[2001:db8::1]").is_ok());
        assert!(authority("a b").is_err());
        assert!(authority("user@web").is_err());
        assert!(path("/x?y=1").is_ok());
        assert!(path("/a b").is_err());
        assert!(server_name("web.test:8443").is_ok());
        assert!(server_name("[2001:db8::1]").is_ok());
        assert!(server_name("web..test").is_err());
    }

    #[test]
    fn ca_files_hold_certificates_only() {
        assert!(ca_certs("hello").unwrap_err().contains("no PEM certificate"));
        let key = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        assert!(ca_certs(key).is_err());
        let junk = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(ca_certs(junk).unwrap_err().contains("certificate 1 is not a usable CA certificate"));
    }
}

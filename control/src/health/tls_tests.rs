//! The `https` check against a real TLS server: `openssl s_server -www` on loopback, with a
//! certificate for `web.test` signed by a CA made here (scripts/setup.sh installs openssl).

use super::http::{ca_certs, HttpCheck, Prober, Tls};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(5);

/// A CA, a server certificate for `web.test` it signed, and `openssl s_server -www` serving
/// it on loopback; the server is killed and the files removed when dropped.
struct Server {
    dir: PathBuf,
    child: Child,
    addr: SocketAddr,
}

fn openssl(dir: &PathBuf, args: &[&str]) {
    let out =
        Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (scripts/setup.sh)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Server {
    fn start(name: &str) -> Server {
        let dir = std::env::temp_dir().join(format!("sluice-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let ca = ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=sluice test CA"];
        openssl(&dir, &[&["req", "-x509"], &ec[..], &ca[..]].concat());
        std::fs::write(dir.join("ext"), "subjectAltName=DNS:web.test\n").unwrap();
        openssl(
            &dir,
            &[&["req"], &ec[..], &["-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=web.test"]]
                .concat(),
        );
        openssl(
            &dir,
            &["x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]
                .into_iter()
                .chain(["-out", "srv.pem", "-days", "2", "-extfile", "ext"])
                .collect::<Vec<_>>(),
        );
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new("openssl")
            .args(["s_server", "-accept", &addr.to_string(), "-cert", "srv.pem", "-key", "srv.key", "-www"])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let server = Server { dir, child, addr };
        let started = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(started.elapsed() < T, "s_server never listened on {addr}");
            thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn ca(&self) -> Vec<Vec<u8>> {
        ca_certs(&std::fs::read_to_string(self.dir.join("ca.pem")).unwrap()).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn https(host: &str, verify: bool, ca: Option<Vec<Vec<u8>>>) -> HttpCheck {
    HttpCheck {
        get: true,
        path: "/".into(),
        host: host.into(),
        status: 200,
        body: Some("s_server".into()),
        tls: Some(Tls { verify, ca }),
    }
}

#[test]
fn verify_off_takes_any_certificate() {
    let s = Server::start("off");
    assert_eq!(Prober::new(s.addr, &https("web.test", false, None), T).probe(), Ok(()));
}

#[test]
fn verify_on_needs_the_ca_and_the_name() {
    let s = Server::start("on");
    let e = Prober::new(s.addr, &https("web.test", true, None), T).probe().unwrap_err();
    assert_eq!(e, "invalid peer certificate: UnknownIssuer");
    assert_eq!(Prober::new(s.addr, &https("web.test", true, Some(s.ca())), T).probe(), Ok(()));
    let e = Prober::new(s.addr, &https("other.test", true, Some(s.ca())), T).probe().unwrap_err();
    assert!(e.contains("not valid for name \"other.test\""), "{e}");
}

#[test]
fn a_stopped_tls_server_fails_the_check() {
    let s = Server::start("stop");
    let (addr, check) = (s.addr, https("web.test", true, Some(s.ca())));
    let prober = Prober::new(addr, &check, T);
    assert_eq!(prober.probe(), Ok(()));
    drop(s);
    assert!(prober.probe().unwrap_err().contains("refused"));
}

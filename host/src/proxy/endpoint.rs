//! Where the proxy listens and where the app is: `unix://PATH` or
//! `tcp://HOST:PORT`, CometBFT's own address forms.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::str::FromStr;

/// A socket address in CometBFT's form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("{s:?}: a unix:// address needs a socket path"));
            }
            Ok(Endpoint::Unix(PathBuf::from(path)))
        } else if let Some(addr) = s.strip_prefix("tcp://") {
            if !addr.contains(':') {
                return Err(format!("{s:?}: a tcp:// address needs HOST:PORT"));
            }
            Ok(Endpoint::Tcp(addr.to_string()))
        } else {
            Err(format!(
                "{s:?} is not an ABCI address: give unix://PATH or tcp://HOST:PORT"
            ))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// A connected stream of either kind.
#[derive(Debug)]
pub enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
        })
    }

    /// Closes both directions (wakes a thread blocked reading it).
    pub fn shutdown(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

impl Endpoint {
    pub fn connect(&self) -> io::Result<Stream> {
        match self {
            Endpoint::Unix(p) => UnixStream::connect(p).map(Stream::Unix),
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                // ABCI is request/response: small frames must not wait.
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
        }
    }

    /// Binds a listener. A unix socket file left by an earlier run is
    /// replaced, but only if nothing answers on it.
    pub fn listen(&self) -> io::Result<Listener> {
        match self {
            Endpoint::Unix(p) => {
                if p.exists() {
                    if UnixStream::connect(p).is_ok() {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            format!("{} is in use by another process", p.display()),
                        ));
                    }
                    std::fs::remove_file(p)?;
                }
                UnixListener::bind(p).map(Listener::Unix)
            }
            Endpoint::Tcp(a) => TcpListener::bind(a).map(Listener::Tcp),
        }
    }
}

/// A bound listener of either kind.
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                s.set_nodelay(true)?;
                Ok(Stream::Tcp(s))
            }
        }
    }

    /// The bound address (a `tcp://…:0` listener's real port).
    pub fn endpoint(&self) -> io::Result<Endpoint> {
        Ok(match self {
            Listener::Unix(l) => Endpoint::Unix(l.local_addr()?.as_pathname().map(PathBuf::from).unwrap_or_default()),
            Listener::Tcp(l) => Endpoint::Tcp(l.local_addr()?.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_in_cometbft_form() {
        assert_eq!("unix:///tmp/a.sock".parse(), Ok(Endpoint::Unix("/tmp/a.sock".into())));
        assert_eq!(
            "tcp://127.0.0.1:26658".parse(),
            Ok(Endpoint::Tcp("127.0.0.1:26658".into()))
        );
        for bad in ["/tmp/a.sock", "unix://", "tcp://localhost", "http://x:1"] {
            let e = bad.parse::<Endpoint>().unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert_eq!(Endpoint::Unix("/x".into()).to_string(), "unix:///x");
    }
}

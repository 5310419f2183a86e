//! `statesnap proxy`: statesnap in front of another ABCI app (Xian's
//! `xian-abci`). CometBFT connects to the proxy; for each of its connections
//! the proxy opens one to the app and forwards every request unchanged, as
//! raw frames, so fields statesnap does not know pass through. The calls a
//! [`Handler`] claims (statesnap's own snapshot formats) are answered by the
//! proxy instead, and the app's ListSnapshots answer is merged with
//! statesnap's list, so the app's own state sync keeps working beside it.

pub mod app_process;
pub mod endpoint;
pub mod link;
pub mod marker;
pub mod wire;
pub mod xian_calls;
pub mod xian_snapshots;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

pub use endpoint::{Endpoint, Listener, Stream};
pub use link::AppSocket;

/// What the proxy does itself; everything it leaves alone is forwarded.
pub trait Handler: Send + Sync + 'static {
    /// A request frame of call `kind` (a `Request.value` field number, see
    /// [`wire::kind`]): `Some(answer)` answers it here (the frame of a
    /// `Response`), `None` forwards it to the app.
    fn answer(&self, kind: u32, request: &[u8]) -> Option<Vec<u8>>;

    /// The app's answer to a forwarded request of call `kind`, before
    /// CometBFT sees it: returned unchanged, or rewritten.
    fn app_answered(&self, kind: u32, answer: Vec<u8>) -> Vec<u8>;
}

/// Forwards everything.
pub struct Passthrough;

impl Handler for Passthrough {
    fn answer(&self, _: u32, _: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn app_answered(&self, _: u32, answer: Vec<u8>) -> Vec<u8> {
        answer
    }
}

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Where CometBFT connects (its `proxy_app`).
    pub listen: Endpoint,
    /// The app's own socket.
    pub app: Endpoint,
    /// The largest ABCI message read from either side.
    pub max_frame_bytes: usize,
    /// How long a connection to the app is retried while it starts.
    pub app_patience: Duration,
}

/// A bound proxy, ready to serve.
pub struct Proxy {
    listener: Listener,
    app: Arc<AppSocket>,
    handler: Arc<dyn Handler>,
    max_frame: usize,
}

impl Proxy {
    /// Binds the listening socket.
    pub fn bind(settings: &ProxySettings, handler: Arc<dyn Handler>) -> anyhow::Result<Self> {
        let app = Arc::new(AppSocket::new(settings.app.clone(), settings.app_patience));
        Self::with_socket(settings, app, handler)
    }

    /// Binds the listening socket, reaching the app through `app` (shared
    /// with the app's supervisor, which marks it replaced on a restart).
    pub fn with_socket(
        settings: &ProxySettings,
        app: Arc<AppSocket>,
        handler: Arc<dyn Handler>,
    ) -> anyhow::Result<Self> {
        let listener = settings
            .listen
            .listen()
            .with_context(|| format!("listening on {}", settings.listen))?;
        Ok(Proxy {
            listener,
            app,
            handler,
            max_frame: settings.max_frame_bytes,
        })
    }

    /// The app's socket (a supervisor marks it replaced after a restart).
    pub fn app(&self) -> &Arc<AppSocket> {
        &self.app
    }

    /// Where the proxy listens.
    pub fn endpoint(&self) -> anyhow::Result<Endpoint> {
        Ok(self.listener.endpoint()?)
    }

    /// Serves CometBFT's connections, each on its own threads, until the
    /// listener fails.
    pub fn serve(self) -> anyhow::Result<()> {
        tracing::info!("proxy: forwarding to the app at {}", self.app.endpoint());
        for n in 0.. {
            let stream = self.listener.accept().context("accepting a CometBFT connection")?;
            let (app, handler, max) = (self.app.clone(), self.handler.clone(), self.max_frame);
            let name = format!("abci-link-{n}");
            tracing::debug!("{name}: CometBFT connected");
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || link::serve(stream, app, handler, max, name))
                .context("starting a connection thread")?;
        }
        Ok(())
    }
}

//! One CometBFT connection and the app connection behind it.
//!
//! ABCI over a socket is pipelined: CometBFT may send several requests (and
//! a Flush) before it reads an answer, and answers come back in request
//! order. So each link runs two pumps. The request pump reads CometBFT's
//! frames and either forwards one to the app or lets the proxy answer it;
//! either way it queues, in order, where the answer will come from. The
//! answer pump takes that queue in order: the app's next frame, or the
//! proxy's own answer. Order is kept without the proxy ever waiting on an
//! app that buffers its answers until Flush.
//!
//! When the app is restarted (after a restore, or by its supervisor), the
//! next forwarded request opens a new app connection, and the answer pump
//! is handed its reading side through the same queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};

use super::endpoint::{Endpoint, Stream};
use super::wire::{read_frame, request_kind, write_frame};
use super::Handler;

/// The app's socket, and how many times the app has been replaced.
pub struct AppSocket {
    endpoint: Endpoint,
    generation: AtomicU64,
    /// How long a connection attempt waits for the app to come up.
    patience: Duration,
}

impl AppSocket {
    pub fn new(endpoint: Endpoint, patience: Duration) -> Self {
        AppSocket {
            endpoint,
            generation: AtomicU64::new(0),
            patience,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Marks every open app connection stale: the app was restarted.
    pub fn replaced(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Connects, retrying while the app starts, up to the patience.
    pub fn connect(&self) -> std::io::Result<(Stream, u64)> {
        let started = Instant::now();
        loop {
            let generation = self.generation();
            match self.endpoint.connect() {
                Ok(s) => return Ok((s, generation)),
                Err(e) if started.elapsed() < self.patience => {
                    tracing::debug!("app at {} not answering yet: {e}", self.endpoint);
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        e.kind(),
                        format!(
                            "the app at {} did not accept a connection within {:?}: {e}",
                            self.endpoint, self.patience
                        ),
                    ))
                }
            }
        }
    }
}

/// Where the answer to one request comes from, in request order.
enum Next {
    /// Read the answers from this app connection from now on.
    AppConnection(Stream),
    /// The app's next answer, to a request of this kind.
    App(u32),
    /// The proxy's own answer.
    Own(Vec<u8>),
}

/// Serves one CometBFT connection until either side closes it.
pub fn serve(cometbft: Stream, app: Arc<AppSocket>, handler: Arc<dyn Handler>, max_frame: usize, name: String) {
    if let Err(e) = run(cometbft, &app, handler, max_frame, &name) {
        tracing::warn!("{name}: {e}");
    }
}

fn run(
    mut cometbft: Stream,
    app: &AppSocket,
    handler: Arc<dyn Handler>,
    max_frame: usize,
    name: &str,
) -> anyhow::Result<()> {
    // The app connection is opened with the first request to forward, not
    // before: a connection that closes without a request (a readiness
    // probe) must not touch the app, which exits when a connection closes.
    let mut to_app: Option<(Stream, u64)> = None;
    let (queue, answers) = unbounded();
    let back = cometbft.try_clone()?;
    let pump_handler = handler.clone();
    let pump_name = name.to_string();
    let pump = std::thread::Builder::new()
        .name(format!("{name}-answers"))
        .spawn(move || {
            let wake = back.try_clone().ok();
            if let Err(e) = pump_answers(back, answers, &*pump_handler, max_frame) {
                tracing::warn!("{pump_name}: {e}");
            }
            // Wakes the request pump, which is blocked reading CometBFT.
            if let Some(w) = wake {
                w.shutdown();
            }
        })?;

    let result = (|| -> anyhow::Result<()> {
        while let Some(frame) = read_frame(&mut cometbft, max_frame)? {
            let kind = request_kind(&frame);
            if let Some(own) = handler.answer(kind, &frame) {
                queue.send(Next::Own(own))?;
                continue;
            }
            let stale = to_app
                .as_ref()
                .is_none_or(|(_, generation)| *generation != app.generation());
            if stale {
                if let Some((old, _)) = to_app.take() {
                    old.shutdown();
                    tracing::info!("{name}: reconnecting to the restarted app");
                }
                let (stream, generation) = app.connect()?;
                queue.send(Next::AppConnection(stream.try_clone()?))?;
                to_app = Some((stream, generation));
            }
            let (stream, _) = to_app.as_mut().expect("connected above");
            write_frame(stream, &frame)
                .map_err(|e| anyhow::anyhow!("forwarding a request to the app at {}: {e}", app.endpoint()))?;
            queue.send(Next::App(kind))?;
        }
        tracing::debug!("{name}: CometBFT closed the connection");
        Ok(())
    })();
    drop(queue);
    if let Some((stream, _)) = to_app {
        stream.shutdown();
    }
    let _ = pump.join();
    result
}

fn pump_answers(
    mut cometbft: Stream,
    answers: Receiver<Next>,
    handler: &dyn Handler,
    max_frame: usize,
) -> anyhow::Result<()> {
    let mut from_app: Option<Stream> = None;
    for next in answers {
        let frame = match next {
            Next::AppConnection(s) => {
                from_app = Some(s);
                continue;
            }
            Next::Own(frame) => frame,
            Next::App(kind) => {
                let reader = from_app
                    .as_mut()
                    .expect("an app connection is queued before the first request to the app");
                let Some(frame) = read_frame(reader, max_frame)? else {
                    anyhow::bail!("the app closed its connection with a request unanswered");
                };
                handler.app_answered(kind, frame)
            }
        };
        write_frame(&mut cometbft, &frame)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;
    use std::path::Path;

    use prost::Message;
    use tendermint_proto::v0_38::abci::{request, response, Request, RequestEcho, RequestFlush, RequestInfo};
    use tendermint_proto::v0_38::abci::{ResponseEcho, ResponseFlush, ResponseInfo};

    use super::super::wire::{decode_response, encode_response, kind};
    use super::super::{Proxy, ProxySettings};
    use super::*;

    /// An app that, like CometBFT's Go server, holds its answers until a
    /// Flush; it answers Echo with its message tagged by `tag`, Info with
    /// its version `tag`.
    fn app(path: &Path, tag: &'static str) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    while let Ok(Some(frame)) = read_frame(&mut stream, 1 << 20) {
                        let answer = match Request::decode(frame.as_slice()).unwrap().value.unwrap() {
                            request::Value::Echo(e) => response::Value::Echo(ResponseEcho {
                                message: format!("{tag}:{}", e.message),
                            }),
                            request::Value::Info(_) => response::Value::Info(ResponseInfo {
                                version: tag.into(),
                                ..Default::default()
                            }),
                            request::Value::Flush(_) => response::Value::Flush(ResponseFlush {}),
                            other => panic!("unexpected {other:?}"),
                        };
                        let flush = matches!(answer, response::Value::Flush(_));
                        held.push(encode_response(answer));
                        if flush {
                            for f in held.drain(..) {
                                if write_frame(&mut stream, &f).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        })
    }

    /// Answers Info itself; marks every answer it passes on.
    struct AnswersInfo;

    impl Handler for AnswersInfo {
        fn answer(&self, kind: u32, _: &[u8]) -> Option<Vec<u8>> {
            (kind == kind::INFO).then(|| {
                encode_response(response::Value::Info(ResponseInfo {
                    version: "proxy".into(),
                    ..Default::default()
                }))
            })
        }

        fn app_answered(&self, _: u32, answer: Vec<u8>) -> Vec<u8> {
            match decode_response(&answer) {
                Ok(response::Value::Echo(e)) => encode_response(response::Value::Echo(ResponseEcho {
                    message: format!("{}!", e.message),
                })),
                _ => answer,
            }
        }
    }

    fn send(stream: &mut Stream, value: request::Value) {
        write_frame(stream, &Request { value: Some(value) }.encode_to_vec()).unwrap();
    }

    fn echo(m: &str) -> request::Value {
        request::Value::Echo(RequestEcho { message: m.into() })
    }

    fn next(stream: &mut Stream) -> response::Value {
        decode_response(&read_frame(stream, 1 << 20).unwrap().unwrap()).unwrap()
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_and_survive_an_app_restart() {
        let dir = tempfile::tempdir().unwrap();
        let app_path = dir.path().join("app.sock");
        let _first = app(&app_path, "a");
        let settings = ProxySettings {
            listen: Endpoint::Unix(dir.path().join("proxy.sock")),
            app: Endpoint::Unix(app_path.clone()),
            max_frame_bytes: 1 << 20,
            app_patience: Duration::from_secs(10),
        };
        let proxy = Proxy::bind(&settings, Arc::new(AnswersInfo)).unwrap();
        let socket = proxy.app().clone();
        std::thread::spawn(move || proxy.serve());
        let mut c = settings.listen.connect().unwrap();

        // Sent before any answer is read; the app answers only at Flush,
        // the proxy answers Info at once: the order is still the requests'.
        send(&mut c, echo("1"));
        send(&mut c, request::Value::Info(RequestInfo::default()));
        send(&mut c, echo("2"));
        send(&mut c, request::Value::Flush(RequestFlush {}));
        let answers: Vec<_> = (0..4).map(|_| next(&mut c)).collect();
        assert!(
            matches!(&answers[0], response::Value::Echo(e) if e.message == "a:1!"),
            "{answers:?}"
        );
        assert!(
            matches!(&answers[1], response::Value::Info(i) if i.version == "proxy"),
            "{answers:?}"
        );
        assert!(
            matches!(&answers[2], response::Value::Echo(e) if e.message == "a:2!"),
            "{answers:?}"
        );
        assert!(matches!(&answers[3], response::Value::Flush(_)), "{answers:?}");

        // The app is replaced (a restore): the link reconnects on its next
        // request and reaches the new app.
        std::fs::remove_file(&app_path).unwrap();
        let _second = app(&app_path, "b");
        socket.replaced();
        send(&mut c, echo("3"));
        send(&mut c, request::Value::Flush(RequestFlush {}));
        assert!(matches!(next(&mut c), response::Value::Echo(e) if e.message == "b:3!"));
        assert!(matches!(next(&mut c), response::Value::Flush(_)));
    }

    #[test]
    fn an_app_that_is_not_there_is_named_after_the_patience() {
        let dir = tempfile::tempdir().unwrap();
        let socket = AppSocket::new(Endpoint::Unix(dir.path().join("none.sock")), Duration::from_millis(300));
        let e = socket.connect().unwrap_err().to_string();
        assert!(
            e.contains("none.sock") && e.contains("did not accept a connection"),
            "{e}"
        );
    }
}
